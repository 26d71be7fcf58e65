"""Measure the firmware on the Cortex-M4 under QEMU and write a JSON results file.

    .venv/bin/python mcu_firmware/host/measure.py --out /tmp/fw_measure.json [--model hey_jarvis]
    .venv/bin/python mcu_firmware/host/measure.py --firmware --out /tmp/fw_tflm.json [--model NAME ...]

Without ``--firmware``: builds the host and M4 harnesses of the portable C++ (float32 MFCC as shipped, and
the double variant for comparison), feeds them the tests' golden signal (espeak-ng speech, exact silence,
noise, a clipped tone) and reports: MFCC error against python_speech_features, share of identical int8
model inputs, instructions per 20 ms hop, code size (arm-none-eabi-size) and static RAM of the stages, and
with ``--model`` the RAM/flash budget.

With ``--firmware``: builds the sketch itself with TensorFlow Lite Micro (CMSIS-NN, ``TFLM_DIR``) for every
shipped model (or each ``--model``), runs it under QEMU on ``models/demo/demo.wav`` and reports per model:
instructions per inference (the sketch's ModelRunner alone, on the demo's first windows), instructions per
second of audio (the sketch's whole loop(): MFCC, model, decision, serial), instructions for
ModelRunner::Begin, the arena TFLM uses on the M4 and text/data/bss of the linked program, split into TFLM,
the sketch, the model data, the QEMU stand-ins and the C library (linker map).

Instructions are counted with ``qemu -icount shift=0`` + SysTick, calibrated on a loop of known length:
instructions, not cycles (a Cortex-M4 takes ~1.2 cycles per instruction on this mix).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from kws_edge import firmware  # noqa: E402
from kws_edge import manifest as mf  # noqa: E402
from kws_edge.features import FeatureParams  # noqa: E402
from kws_edge.model import resolve_manifest  # noqa: E402
from tests.test_firmware_host import golden_signal  # noqa: E402
from tests.test_firmware_support import (  # noqa: E402
    HOST_DIR,
    TFLM_DIR,
    FeatureCase,
    build_firmware,
    build_tflm,
    cpp_features,
    firmware_bench,
    firmware_detect,
    firmware_tools_missing,
    instructions,
    python_features,
    run_harness,
)

M4 = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard", "-std=c++14", "-O2",
      "-fno-exceptions", "-fno-rtti"]


def _make(out: Path, extra: str = "") -> tuple[Path, Path]:
    subprocess.run(["make", "-s", "-C", str(HOST_DIR), f"OUT={out}", f"EXTRA={extra}", "host", "m4"], check=True)
    return out / "kws_host", out / "kws_m4.elf"


def _variant(name: str, build: Path, signal: np.ndarray, case: FeatureCase, work: Path) -> dict[str, Any]:
    host, elf = _make(build / name, "-DKWS_MFCC_DOUBLE" if name == "double" else "")
    ref_frames, ref_windows = python_features(signal, case)
    ref = np.stack([w for _, w in ref_windows])
    result: dict[str, Any] = {}
    for target, program in (("host", host), ("m4", elf)):
        frames, windows, stats = cpp_features(program, signal, case, work / f"{name}_{target}", 777, "m")
        got = np.stack([w for _, w in windows])
        result[target] = {"max_mfcc_error": float(np.max(np.abs(frames - ref_frames))),
                          "int8_identical_pct": 100.0 * float(np.mean(got == ref)), "frames": len(frames)}
        if target == "m4":
            per_hop = stats["ticks"] * 4_000_000 / stats["calibration_ticks_per_4M_instructions"] / stats["frames"]
            result[target]["instructions_per_hop"] = round(per_hop)
    return result


def _sizes(elf: Path, work: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in ("feature_provider", "recognize_commands", "kws_protocol"):
        obj = work / f"{name}.o"
        subprocess.run(["arm-none-eabi-g++", *M4, "-c", str(firmware.SKETCH_DIR / f"{name}.cpp"), "-o", str(obj)],
                       check=True)
        text = subprocess.run(["arm-none-eabi-size", str(obj)], check=True, capture_output=True, text=True)
        out[f"{name}_text_bytes"] = int(text.stdout.splitlines()[1].split()[0])
    run_harness(elf, ["sizes", "sizes.txt"], work)
    for line in (work / "sizes.txt").read_text().splitlines():
        key, value = line.split()
        out[f"sizeof_{key}"] = int(value)
    return out


_MAP_LINE = re.compile(r"^ (\S+)?\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")


def _part(source: str) -> str:
    """Which part of the program an input file of the link is."""
    if "libtflm.a" in source:
        return "tflm"
    name = Path(source.split("(")[0]).name
    if name == "model_data.o":
        return "model_data"
    if name in ("kws_fw_main.o", "nano_standins.o", "startup.o"):
        return "qemu_standins"
    if "/fw/" in source:
        return "sketch"
    return "c_library"


def link_sizes(map_file: Path) -> dict[str, dict[str, int]]:
    """text/data/bss per part of the program, from the linker map (after --gc-sections)."""
    sizes: dict[str, dict[str, int]] = {}
    region, pending, started = "", "", False
    for line in map_file.read_text().splitlines():
        if line.startswith("Linker script and memory map"):
            started = True
            continue
        if not started:
            continue
        if line and not line.startswith(" "):
            out = line.split()[0]
            region = "bss" if out == ".bss" else "data" if out == ".data" else "text"
            if out.startswith((".debug", ".comment", ".ARM.attributes")) or out.startswith("/DISCARD/"):
                region = ""
            continue
        m = _MAP_LINE.match(line)
        if m is None:
            stripped = line.strip()
            pending = stripped if stripped and " " not in stripped else ""
            continue
        size, source = int(m.group(3), 16), m.group(4).strip()
        if region and size and (m.group(1) or pending) and not source.startswith("*"):
            part = sizes.setdefault(_part(source), {"text": 0, "data": 0, "bss": 0})
            part[region] += size
        pending = ""
    return sizes


def firmware_figures(names: list[str], audio: Path, work: Path) -> dict[str, Any]:
    """The sketch with TFLM on the M4 for each model: instructions, arena and link sizes."""
    from kws_edge.audio import read_wav

    samples = read_wav(audio)
    tflm = build_tflm(work / "tflm")
    out: dict[str, Any] = {"audio": str(audio.relative_to(REPO)), "audio_seconds": len(samples) / 16000,
                           "tflm_dir": str(TFLM_DIR),
                           "build": "-mcpu=cortex-m4 -mfpu=fpv4-sp-d16 -mfloat-abi=softfp -std=gnu++17 (host/Makefile "
                                    "defaults: the Nano core's ABI, the objects kws-edge flash packs)",
                           "models": {}}
    for name in names:
        manifest = resolve_manifest(name)
        m = mf.load(manifest)
        here = work / m.name  # not ``name``: a path given with --model would escape ``work``
        elf = build_firmware(manifest, tflm, here)
        lines, stats = firmware_detect(elf, samples, here / "detect")
        case = FeatureCase(m.features, m.input.scale, m.input.zero_point, m.window_frames, m.stride_frames)
        _, windows = python_features(samples, case)
        q = np.stack([w for _, w in windows[:32]])
        _, bench = firmware_bench(elf, q, len(m.labels), here / "bench")
        size = subprocess.run(["arm-none-eabi-size", str(elf)], check=True, capture_output=True, text=True)
        text, data, bss = (int(v) for v in size.stdout.splitlines()[1].split()[:3])
        seconds = stats["samples"] / m.features.sample_rate
        per_inference = instructions(bench, "run_ticks") / bench["runs"]
        per_second = instructions(stats, "loop_ticks") / seconds
        out["models"][m.name] = {
            "sha256": m.sha256, "macs": m.macs, "streaming": m.streaming is not None,
            "instructions_per_inference": round(per_inference),
            "instructions_per_mac": round(per_inference / m.macs, 2) if m.macs else None,
            "instructions_per_audio_second": round(per_second),
            "model_runs_per_audio_second": round(m.features.sample_rate / (m.stride_frames * m.features.hop), 2),
            "begin_instructions": round(instructions(bench, "begin_ticks")),
            "arena_used_bytes": bench["arena_used_bytes"], "arena_bytes_manifest": m.arena_bytes,
            "detections": [line for line in lines if line.startswith("KWS1 DET ")],
            "elf_text_bytes": text, "elf_data_bytes": data, "elf_bss_bytes": bss,
            "link_sizes": link_sizes(elf.with_suffix(".map")),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="JSON results file (default: print only)")
    ap.add_argument("--model", action="append", help="also report the RAM/flash budget of this model "
                    "(with --firmware: measure this model; repeat for several; default every shipped one)")
    ap.add_argument("--firmware", action="store_true", help="measure the sketch with TFLM (see above)")
    ap.add_argument("--audio", type=Path, default=REPO / "models" / "demo" / "demo.wav",
                    help="with --firmware: the audio the sketch listens to (default: the demo)")
    args = ap.parse_args()
    if args.firmware:
        missing = firmware_tools_missing()
        if missing:
            print(f"measure.py --firmware: {missing}", file=sys.stderr)
            return 2
        names = args.model or sorted(p.stem for p in (REPO / "models").glob("*.json"))
        with tempfile.TemporaryDirectory() as tmp:
            results = firmware_figures(names, args.audio.resolve(), Path(tmp))
        return _write(results, args.out)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        signal = golden_signal(work)
        case = FeatureCase(FeatureParams(), 0.3509182631969452, 22)
        results: dict[str, Any] = {"signal_seconds": len(signal) / 16000}
        for name in ("float", "double"):
            results[f"mfcc_{name}"] = _variant(name, work / "build", signal, case, work)
        sizes = _sizes(work / "build" / "float" / "kws_m4.elf", work)
        results["m4_sizes"] = sizes
        if args.model:
            m = mf.load(resolve_manifest(args.model[0]))
            code = sum(v for k, v in sizes.items() if k.endswith("_text_bytes"))
            ram = sizes["sizeof_feature_provider"] + sizes["sizeof_recognize_commands"]
            per_hop = results["mfcc_float"]["m4"]["instructions_per_hop"]
            b = firmware.budget(m, code, ram + firmware.MAX_WINDOW_VALUES, per_hop)
            results["budget"] = {"model": m.name, "model_bytes": m.size_bytes, "arena_bytes": m.arena_bytes,
                                 "macs": m.macs, "flash_bytes": b.flash_bytes, "ram_bytes": b.ram_bytes,
                                 "flash_free_pct": round(100 * b.flash_headroom, 1),
                                 "ram_free_pct": round(100 * b.ram_headroom, 1),
                                 "inference_ms_at_64mhz": round(b.inference_ms, 2),
                                 "model_runs_per_s": round(b.runs_per_s, 2),
                                 "assumptions": {"cycles_per_mac": firmware.CYCLES_PER_MAC,
                                                 "core_flash": firmware.CORE_FLASH, "core_ram": firmware.CORE_RAM,
                                                 "tflm_flash": firmware.TFLM_FLASH, "audio_ram": firmware.AUDIO_RAM}}
    return _write(results, args.out)


def _write(results: dict[str, Any], out: Path | None) -> int:
    text = json.dumps(results, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
