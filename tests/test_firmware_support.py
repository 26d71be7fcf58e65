"""Helpers shared by the firmware tests: building the C++ harness, golden vectors from the Python pipeline.

The golden vectors come from the Pi's own code on the same samples: ``kws_edge.features.StreamingMfcc``
for MFCC frames, ``kws_edge.model.quantize`` with the model's input quantization for the int8 model
inputs (the same window/stride rule as ``kws_edge.pipeline``), and ``kws_edge.decision.Decision`` for
event sequences.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kws_edge.decision import Decision, DecisionParams, Event
from kws_edge.features import FeatureParams, StreamingMfcc
from kws_edge.model import quantize

REPO = Path(__file__).resolve().parent.parent
HOST_DIR = REPO / "mcu_firmware" / "host"
# Stated tolerance of the C++ MFCC (float32 FFT) against python_speech_features: measured max 2.4e-3,
# on a clipped tone (the widest dynamic range); speech and noise stay below 7e-4.
MFCC_ATOL, MFCC_RTOL = 5e-3, 1e-5
QEMU_CMD = ["qemu-system-arm", "-M", "mps2-an386", "-cpu", "cortex-m4", "-nographic", "-icount", "shift=0",
            "-semihosting-config", "enable=on,target=native"]


def build(target: str, out: Path) -> Path:
    """``make -C mcu_firmware/host OUT=out target``; return the built program."""
    tools = {"host": "g++", "m4": "arm-none-eabi-g++"}
    if shutil.which(tools[target]) is None:
        pytest.skip(f"{tools[target]} is not installed (Debian: see Makefile APT_PACKAGES)")
    subprocess.run(["make", "-s", "-C", str(HOST_DIR), f"OUT={out}", target], check=True,
                   capture_output=True, text=True)
    return out / ("kws_host" if target == "host" else "kws_m4.elf")


def run_harness(program: Path, args: list[str], cwd: Path) -> None:
    """Run the harness natively or, for an ELF, under QEMU with semihosting (files relative to cwd)."""
    if program.suffix == ".elf":
        cmd = [*QEMU_CMD, "-kernel", str(program), "-append", " ".join(args)]
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    else:
        result = subprocess.run([str(program), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"{program.name} {' '.join(args)} exited {result.returncode}: {result.stderr}")


@dataclass(frozen=True)
class FeatureCase:
    params: FeatureParams
    scale: float
    zero_point: int
    window_frames: int = 49
    stride_frames: int = 3

    def config_text(self, chunk: int) -> str:
        p = self.params
        values = {
            "sample_rate": p.sample_rate, "frame_len": p.frame_len, "hop": p.hop, "nfft": p.nfft,
            "numcep": p.numcep, "nfilt": p.nfilt, "lowfreq": repr(p.lowfreq), "highfreq": repr(p.highfreq),
            "preemph": repr(p.preemph), "ceplifter": p.ceplifter, "append_energy": int(p.append_energy),
            "window": {"rectangular": 0, "hamming": 1, "hann": 2}[p.window],
            "window_frames": self.window_frames, "stride_frames": self.stride_frames,
            "input_scale": repr(self.scale), "input_zero_point": self.zero_point, "chunk": chunk,
        }
        return "".join(f"{k} {v}\n" for k, v in values.items())


def python_features(signal: np.ndarray, case: FeatureCase) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Golden MFCC frames and (now_ms, int8 window) model inputs, as the Pi pipeline computes them."""
    p = case.params
    frames = StreamingMfcc(p).process(signal)
    windows = []
    for n in range(case.window_frames, len(frames) + 1):
        if (n - case.window_frames) % case.stride_frames:
            continue
        now_ms = ((n - 1) * p.hop + p.frame_len) * 1000 // p.sample_rate
        q = quantize(frames[n - case.window_frames:n], case.scale, case.zero_point, "int8")
        windows.append((now_ms, q))
    return frames, windows


def cpp_features(program: Path, signal: np.ndarray, case: FeatureCase, work: Path, chunk: int,
                 tag: str) -> tuple[np.ndarray, list[tuple[int, np.ndarray]], dict[str, int]]:
    """Run the harness's mfcc command; return its frames, model inputs and stats."""
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{tag}.cfg").write_text(case.config_text(chunk))
    signal.astype("<i2").tofile(work / f"{tag}.s16")
    run_harness(program, ["mfcc", f"{tag}.cfg", f"{tag}.s16", f"{tag}.f64", f"{tag}.win", f"{tag}.stats"],
                work)
    frames = np.fromfile(work / f"{tag}.f64", dtype="<f8").reshape(-1, case.params.numcep)
    raw = (work / f"{tag}.win").read_bytes()
    values = case.window_frames * case.params.numcep
    record = 8 + values
    windows = []
    for off in range(0, len(raw), record):
        now_ms = int(np.frombuffer(raw, "<i8", 1, off)[0])
        q = np.frombuffer(raw, np.int8, values, off + 8).reshape(case.window_frames, case.params.numcep)
        windows.append((now_ms, q))
    stats = {}
    for line in (work / f"{tag}.stats").read_text().splitlines():
        key, value = line.split()
        stats[key] = int(value)
    return frames, windows, stats


@dataclass(frozen=True)
class DecisionCase:
    labels: tuple[str, ...]
    params: DecisionParams
    sequence: list[tuple[int, list[float]]]

    def config_text(self) -> str:
        p = self.params
        lines = [f"num_labels {len(self.labels)}", f"smoothing_ms {p.smoothing_ms}", f"min_hits {p.min_hits}",
                 f"refractory_ms {p.refractory_ms}"]
        lines += [f"keyword {self.labels.index(k)} {v!r}" for k, v in p.thresholds.items()]
        return "\n".join(lines) + "\n"

    def expected(self) -> list[Event]:
        return Decision(self.labels, self.params).run(self.sequence)


def random_decision_case(seed: int, steps: int = 400) -> DecisionCase:
    """Seeded posterior sequences with keyword bursts, random timing and random decision parameters."""
    rng = np.random.default_rng(seed)
    labels = ("_silence_", "_unknown_", "yes", "no", "stop")
    keywords = [k for k in labels[2:] if rng.random() < 0.8] or ["yes"]
    thresholds = {k: float(np.round(rng.uniform(0.3, 0.9), int(rng.integers(1, 6)))) for k in keywords}
    order = list(thresholds)
    rng.shuffle(order)
    params = DecisionParams({k: thresholds[k] for k in order}, int(rng.choice([0, 60, 100, 200, 500])),
                            int(rng.integers(1, 4)), int(rng.choice([0, 250, 1500])))
    t = int(rng.integers(0, 100_000))
    sequence = []
    burst = np.zeros(len(labels))
    for _ in range(steps):
        t += int(rng.choice([20, 60, 60, 60, 1, 137]))
        if rng.random() < 0.05:
            burst = np.zeros(len(labels))
            burst[int(rng.integers(0, len(labels)))] = rng.uniform(2.0, 6.0)
        logits = rng.normal(0.0, 1.0, len(labels)) + burst
        burst *= 0.85
        post = np.exp(logits) / np.exp(logits).sum()
        sequence.append((t, [float(x) for x in post]))
    return DecisionCase(labels, params, sequence)


def cpp_decisions(program: Path, case: DecisionCase, work: Path, tag: str) -> list[Event]:
    """Run the harness's decide command on a case; return its events."""
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{tag}.cfg").write_text(case.config_text())
    with open(work / f"{tag}.post", "wb") as f:
        for t, post in case.sequence:
            f.write(np.array([t], "<i8").tobytes() + np.array(post, "<f8").tobytes())
    run_harness(program, ["decide", f"{tag}.cfg", f"{tag}.post", f"{tag}.events"], work)
    raw = (work / f"{tag}.events").read_bytes()
    names = list(case.params.thresholds)
    events = []
    for off in range(0, len(raw), 20):
        kw = int(np.frombuffer(raw, "<i4", 1, off)[0])
        t = int(np.frombuffer(raw, "<i8", 1, off + 4)[0])
        score = float(np.frombuffer(raw, "<f8", 1, off + 12)[0])
        events.append(Event(names[kw], score, t))
    return events


# --- The sketch itself with TensorFlow Lite Micro on the Cortex-M4 (make fw; see mcu_firmware/host/Makefile)

TFLM_DIR = Path(os.environ.get("TFLM_DIR", REPO.parent / "shared" / "third_party" / "tflite-micro"))
SKETCH_FILES = ("main_functions.cpp", "feature_provider.cpp", "model_runner.cpp", "recognize_commands.cpp",
                "command_responder.cpp", "kws_protocol.cpp", "audio_provider.cpp")


def firmware_tools_missing() -> str | None:
    """Why the sketch cannot be built and run on the M4 here, or None."""
    for tool, package in (("arm-none-eabi-g++", "gcc-arm-none-eabi"), ("qemu-system-arm", "qemu-system-arm")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package})"
    if not (TFLM_DIR / "tensorflow" / "lite" / "micro" / "micro_interpreter.h").exists():
        return f"no TensorFlow Lite Micro tree at {TFLM_DIR} (set TFLM_DIR; see mcu_firmware/README.md)"
    return None


def make_host(*args: str, jobs: int = 2) -> None:
    """``make -C mcu_firmware/host TFLM_DIR=... ARGS``; fail with make's output."""
    result = subprocess.run(["make", "-s", f"-j{jobs}", "-C", str(HOST_DIR), f"TFLM_DIR={TFLM_DIR}", *args],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"make {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def build_tflm(out: Path) -> Path:
    """TFLM + CMSIS-NN for the M4 as a static library (``make tflm``); return the build folder."""
    make_host(f"TFLM_OUT={out}", f"OUT={out}", "tflm")
    return out


def build_firmware(manifest: Path, tflm_out: Path, work: Path) -> Path:
    """The sketch with ``manifest``'s generated files (a copy of mcu_firmware/kws_nano), linked for the M4."""
    from kws_edge import firmware

    sketch = work / "kws_nano"
    shutil.copytree(firmware.SKETCH_DIR, sketch, dirs_exist_ok=True)
    firmware.generate(manifest, sketch)
    make_host(f"SKETCH={sketch}", f"OUT={work / 'build'}", f"TFLM_OUT={tflm_out}", "fw")
    return work / "build" / "kws_fw.elf"


def _stats(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines())}


def _qemu(elf: Path, args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run([*QEMU_CMD, "-kernel", str(elf), "-append", " ".join(args)], cwd=cwd,
                            capture_output=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{elf.name} {' '.join(args)} exited {result.returncode}: "
                             f"{result.stderr.decode(errors='replace')[-2000:]}")
    return result


def firmware_detect(elf: Path, samples: np.ndarray, work: Path) -> tuple[list[str], dict[str, int]]:
    """The sketch's setup()/loop() on ``samples`` (int16): its serial lines and its tick counts."""
    work.mkdir(parents=True, exist_ok=True)
    samples.astype("<i2").tofile(work / "audio.s16")
    result = _qemu(elf, ["detect", "audio.s16", "detect.stats"], work)
    lines = [line for line in result.stdout.decode("ascii").split("\r\n") if line.startswith("KWS1 ")]
    return lines, _stats(work / "detect.stats")


def firmware_bench(elf: Path, windows: np.ndarray, num_labels: int,
                   work: Path) -> tuple[np.ndarray, dict[str, int]]:
    """The sketch's ModelRunner alone on int8 windows (runs, n, ...): its posteriors and tick counts."""
    work.mkdir(parents=True, exist_ok=True)
    windows.astype(np.int8).tofile(work / "windows.bin")
    _qemu(elf, ["bench", "windows.bin", "posteriors.f64", "bench.stats"], work)
    post = np.fromfile(work / "posteriors.f64", dtype="<f8").reshape(-1, num_labels)
    return post, _stats(work / "bench.stats")


def instructions(stats: dict[str, int], key: str) -> float:
    """Ticks -> instructions with the program's calibration loop (qemu -icount shift=0)."""
    return stats[key] * 4_000_000 / stats["calibration_ticks_per_4M_instructions"]


def reference_kernel_runner(manifest: Path) -> Any:
    """The model in LiteRT with TFLite's reference kernels (``OpResolverType.BUILTIN_REF``), which TFLite
    Micro's kernels equal bit for bit; the Pi's runtime uses the optimized builtin kernels instead."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from kws_edge.model import ModelRunner, load_model

    m = load_model(manifest).manifest  # checks the model against its manifest
    data = m.model_path.read_bytes()

    def factory() -> Any:
        interp = Interpreter(model_content=data, num_threads=1,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        interp.allocate_tensors()
        return interp

    return ModelRunner(m, factory(), "ai-edge-litert (reference kernels)", factory)


def pi_detection_lines(manifest: Path, samples: np.ndarray, reference_kernels: bool = False) -> list[str]:
    """What the Pi detects on ``samples`` (kws_edge.pipeline.Detector, a live stream: no end-of-stream
    flush), as the KWS1 DET lines the board would send for the same events. ``reference_kernels``: the
    model runs on LiteRT's reference kernels instead of the runtime's default (see reference_kernel_runner)."""
    from kws_edge.model import load_model
    from kws_edge.pipeline import Detector
    from kws_edge.protocol import format_detection

    runner = reference_kernel_runner(manifest) if reference_kernels else load_model(manifest)
    rate = runner.manifest.features.sample_rate
    found = Detector([runner]).process(samples)
    return [format_detection(d.keyword, d.score, round(d.t * rate) * 1000 // rate).decode("ascii").rstrip("\r\n")
            for d in found]


# --- The Arduino library kws-edge flash builds from the TFLM tree (make nano-lib), and a fake arduino-cli

def arduino_lib_tools_missing() -> str | None:
    """Why the Nano's TFLM library cannot be built here, or None."""
    for tool, package in (("arm-none-eabi-g++", "gcc-arm-none-eabi"), ("make", "make")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package})"
    if not (TFLM_DIR / "tensorflow" / "lite" / "micro" / "micro_interpreter.h").exists():
        return f"no TensorFlow Lite Micro tree at {TFLM_DIR} (set TFLM_DIR; see mcu_firmware/README.md)"
    return None


def build_arduino_lib(cache: Path, tflm_out: Path | None = None) -> Path:
    """The library exactly as ``kws-edge flash`` builds and caches it (kws_edge.flash.build_library), in
    ``cache`` (what $XDG_CACHE_HOME/kws_edge/arduino is for flash); built once per cache and TFLM tree.
    ``tflm_out``: the session's :func:`build_tflm` folder, whose objects (same flags) it reuses."""
    from kws_edge.flash import build_library

    return build_library(TFLM_DIR, cache, objects=tflm_out)


def fake_arduino_cli(path: Path, log: Path, compile_exit: int = 0) -> Path:
    """An executable standing in for arduino-cli (which cannot be installed here): appends its argv as one
    JSON line to ``log``; ``core list`` reports the arduino:mbed_nano core installed."""
    import sys

    path.write_text(f"#!{sys.executable}\n"
                    "import json, sys\n"
                    f"with open({str(log)!r}, 'a') as f:\n"
                    "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
                    "if sys.argv[1:3] == ['core', 'list']:\n"
                    "    print(json.dumps([{'id': 'arduino:mbed_nano', 'installed': '4.2.1'}]))\n"
                    f"sys.exit({compile_exit} if sys.argv[1:2] == ['compile'] else 0)\n")
    path.chmod(0o755)
    return path


def recorded_argv(log: Path) -> list[list[str]]:
    """The command lines a fake_arduino_cli was called with, in order."""
    import json

    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
