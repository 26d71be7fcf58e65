"""Pipeline cost: CPU seconds per hour of audio for features, inference and decision, one thread.

    .venv/bin/python benchmarks/pipeline_bench.py [--model hey_jarvis] [--minutes 10] [--out benchmarks/results/]

Feeds a deterministic speech-and-noise signal through ``kws_edge.pipeline.Detector`` in 80 ms chunks (as the
microphone does) and reports process CPU time per stage, scaled to one hour of audio. In the same run it
measures a naive baseline (python_speech_features.mfcc recomputed over the whole 1 s window at every model
step), so the speed-up is a ratio on the same noisy machine. It also runs ``kws-edge detect`` on the file
in a child process and reports its peak RSS. Writes ``pipeline.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from kws_edge.audio import chunks, read_wav, write_wav  # noqa: E402
from kws_edge.model import load_models  # noqa: E402
from kws_edge.pipeline import Detector  # noqa: E402

SENTENCES = [
    "the weather today is cloudy with a chance of rain in the afternoon",
    "please remember to buy milk eggs and bread on the way home",
    "the train to the city leaves at half past seven every morning",
    "she read the whole book in one evening and loved the ending",
    "turn the music down a little, the baby is sleeping upstairs",
    "we should paint the kitchen a lighter colour next spring",
]


def make_signal(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech (espeak-ng, if installed) over low noise, repeated to ``seconds``; deterministic."""
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    if shutil.which("espeak-ng") and shutil.which("sox"):
        with tempfile.TemporaryDirectory() as tmp:
            for i, text in enumerate(SENTENCES):
                raw, wav = Path(tmp) / f"{i}.raw.wav", Path(tmp) / f"{i}.wav"
                subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), text], check=True)
                subprocess.run(["sox", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True)
                parts.append(read_wav(wav))
                parts.append(np.zeros(8000, dtype=np.int16))
    else:
        parts.append((rng.standard_normal(16000 * 10) * 3000).astype(np.int16))
    speech = np.concatenate(parts).astype(np.float64)
    n = int(seconds * 16000)
    reps = int(np.ceil(n / len(speech)))
    signal = np.tile(speech, reps)[:n] + rng.standard_normal(n) * 100.0
    return np.clip(signal, -32768, 32767).astype(np.int16)


def stage_costs(detector: Detector, signal: np.ndarray, chunk: int) -> dict[str, float]:
    """Process CPU seconds for the whole run and per stage."""
    detector.reset()
    detector.timed = True
    t0 = time.process_time()
    for c in chunks(signal, chunk):
        detector.process(c)
    total = time.process_time() - t0
    times = detector.times
    detector.timed = False
    # Untimed runs: the timers themselves cost a little; the headline figure comes without them, as the
    # best of three (other processes on the machine only ever add time).
    untimed = float("inf")
    for _ in range(3):
        detector.reset()
        t0 = time.process_time()
        for c in chunks(signal, chunk):
            detector.process(c)
        untimed = min(untimed, time.process_time() - t0)
    return {"total_timed": total, "total": untimed, "features": times.features, "inference": times.inference,
            "decision": times.decision, "inferences": times.inferences}


def naive_baseline(detector: Detector, signal: np.ndarray) -> float:
    """CPU seconds for the naive way: recompute library MFCC over the 1 s window at every model step."""
    import python_speech_features as psf

    runner = detector.runners[0]
    m = runner.manifest
    p = m.features
    kwargs = p.psf_kwargs()
    window_samples = (m.window_frames - 1) * p.hop + p.frame_len
    step = m.stride_frames * p.hop
    t0 = time.process_time()
    for end in range(window_samples, len(signal) + 1, step):
        feats = psf.mfcc(signal[end - window_samples:end].astype(np.float64), **kwargs)
        runner.run(feats)
    return time.process_time() - t0


def detect_rss(wav: Path, models: list[str]) -> float:
    """Peak RSS (MB) of ``kws-edge detect`` on the file, measured by GNU time around the command.

    Not os.wait4 on our own child: a child forked from this (large) process counts the parent's pages
    as its own until it execs, which inflates ru_maxrss several times over.
    """
    timer = shutil.which("time") or "/usr/bin/time"
    if not Path(timer).exists():
        raise SystemExit("GNU time is needed to measure peak RSS: apt-get install time")
    cmd = [timer, "-f", "MAXRSS_KB %M", sys.executable, "-m", "kws_edge", "detect", str(wav)]
    cmd += [a for m in models for a in ("--model", m)]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"kws-edge detect failed ({proc.returncode}): {proc.stderr[-300:]}")
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("MAXRSS_KB")][-1]
    return int(line.split()[1]) / 1024.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="model name or path (repeatable); default hey_jarvis")
    ap.add_argument("--minutes", type=float, default=10.0, help="minutes of audio to process")
    ap.add_argument("--baseline-minutes", type=float, default=1.0, help="minutes for the naive baseline")
    ap.add_argument("--chunk", type=int, default=1280, help="samples per chunk (80 ms)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    models = args.model or ["hey_jarvis"]
    detector = Detector(load_models(models))
    signal = make_signal(args.minutes * 60)
    hours = len(signal) / 16000 / 3600
    costs = stage_costs(detector, signal, args.chunk)
    base_signal = signal[: int(args.baseline_minutes * 60 * 16000)]
    base = naive_baseline(detector, base_signal) / (len(base_signal) / 16000 / 3600)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "bench.wav"
        write_wav(wav, signal[: 16000 * 60])
        rss = detect_rss(wav, models)
    per_hour = {k: round(v / hours, 3) for k, v in costs.items() if k != "inferences"}
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "interpreter": detector.runners[0].backend,
        "models": [r.name for r in detector.runners],
        "audio_minutes": args.minutes,
        "chunk_samples": args.chunk,
        "cpu_s_per_audio_hour": per_hour,
        "inferences_per_audio_hour": round(costs["inferences"] / hours),
        "us_per_inference": round(1e6 * costs["inference"] / max(1, costs["inferences"]), 1),
        "naive_baseline_cpu_s_per_audio_hour": round(base, 2),
        "speedup_vs_naive": round(base / per_hour["total"], 1),
        "detect_peak_rss_mb": round(rss, 1),
        "command": "python benchmarks/pipeline_bench.py " + " ".join(argv or sys.argv[1:]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
