"""Helpers shared by the firmware tests: building the C++ harness, golden vectors from the Python pipeline.

The golden vectors come from the Pi's own code on the same samples: ``kws_edge.features.StreamingMfcc``
for MFCC frames, ``kws_edge.model.quantize`` with the model's input quantization for the int8 model
inputs (the same window/stride rule as ``kws_edge.pipeline``), and ``kws_edge.decision.Decision`` for
event sequences.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

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
