"""Measure the firmware's portable C++ on the Cortex-M4 under QEMU and write a JSON results file.

    .venv/bin/python mcu_firmware/host/measure.py --out /tmp/fw_measure.json [--model hey_jarvis]

Builds the host and M4 harnesses (float32 MFCC as shipped, and the double variant for comparison), feeds
them the tests' golden signal (espeak-ng speech, exact silence, noise, a clipped tone) and reports: MFCC
error against python_speech_features, share of identical int8 model inputs, instructions per 20 ms hop
(``qemu -icount shift=0`` + SysTick, calibrated on a loop of known length: instructions, not cycles),
code size (arm-none-eabi-size) and static RAM of the stages, and with ``--model`` the RAM/flash budget.
"""

from __future__ import annotations

import argparse
import json
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
    FeatureCase,
    cpp_features,
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="JSON results file (default: print only)")
    ap.add_argument("--model", help="also report the RAM/flash budget of this model")
    args = ap.parse_args()
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
            m = mf.load(resolve_manifest(args.model))
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
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
