"""Whole-process CPU of ``kws-edge detect`` against pymicro-wakeword, on the same file, in the same run.

    .venv/bin/python -m benchmarks.cpu_side_by_side [--model hey_jarvis --model PATH.json ...]
        [--set hey_jarvis,commands] [--minutes 60] [--rounds 3] [--out benchmarks/results/]

The streaming-model issue's Pi target: one ``kws-edge detect`` process with one wake-word model on an hour
of audio costs at most 0.5x the CPU of pymicro-wakeword running its hey_jarvis on the same file; with the
shipped set of models (``--set``) at most 1.0x. Each figure is a whole process, start-up and imports
included, measured with ``os.wait4`` (user + system CPU of that child alone), one thread by environment.
The runs alternate system by system for ``--rounds`` rounds and the median counts, so a busy moment on
this noisy machine hits every system alike. pymicro-wakeword runs from the venv ``kws-edge bench``
creates (``<cache>/venvs/pymicro_wakeword``, installed from PyPI on first use) through the bench's own
runner, which feeds it 80 ms chunks as a microphone would. Writes ``cpu_side_by_side.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.pipeline_bench import make_signal
from benchmarks.systems import ONE_THREAD_ENV, RUNNERS, SYSTEMS, ensure_python
from kws_edge.audio import write_wav

ROOT = Path(__file__).resolve().parent.parent
PEER_CHUNK = 1280  # 80 ms, as the bench feeds the peers


def child_cpu(cmd: list[str]) -> float:
    """User + system CPU seconds of one child process (and nothing else); raise if it fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | ONE_THREAD_ENV
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            raise SystemExit(f"{' '.join(cmd[:3])} ... failed: {' | '.join(tail)}")
    return usage.ru_utime + usage.ru_stime


def model_label(spec: str) -> str:
    return Path(spec).stem if spec.endswith((".json", ".tflite")) else spec


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", metavar="NAME|PATH",
                   help="a kws_edge model run alone (repeatable; default: hey_jarvis)")
    p.add_argument("--set", default="hey_jarvis,commands", metavar="A,B",
                   help="the shipped set run together in one process (default: hey_jarvis,commands; '' for none)")
    p.add_argument("--minutes", type=float, default=60.0, help="length of the audio (default 60)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median counts (default 3)")
    p.add_argument("--cache", type=Path, default=ROOT / "cache" / "bench",
                   help="where the peer venv lives (default: cache/bench, shared with kws-edge bench)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.rounds <= 0:
        p.error("--minutes and --rounds must be positive")
    models = args.model or ["hey_jarvis"]
    kws = str(Path(sys.executable).parent / "kws-edge")
    micro_python = ensure_python(SYSTEMS["pymicro_wakeword"], args.cache, lambda m: print(m, flush=True))

    systems: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "audio.wav"
        write_wav(wav, make_signal(args.minutes * 60.0, seed=0))
        job = Path(tmp) / "micro.job.json"
        job.write_text(json.dumps({"keyword": "hey_jarvis", "chunk": PEER_CHUNK, "options": {},
                                   "streams": [{"name": "audio", "path": str(wav)}]}))
        systems["pymicro_wakeword hey_jarvis"] = [micro_python, "-E", "-s", str(RUNNERS / "run_micro.py"),
                                                  str(job), str(Path(tmp) / "micro.out.json")]
        for m in models:
            systems[f"kws-edge detect {model_label(m)}"] = [kws, "detect", str(wav), "--model", m]
        shipped = [m for m in args.set.split(",") if m]
        if shipped:
            cmd = [kws, "detect", str(wav)]
            for m in shipped:
                cmd += ["--model", m]
            systems[f"kws-edge detect {'+'.join(shipped)}"] = cmd
        cpu: dict[str, list[float]] = {name: [] for name in systems}
        names = list(systems)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
            for name in order:
                cpu[name].append(child_cpu(systems[name]))
                print(f"round {r + 1}/{args.rounds}  {name:<40} {cpu[name][-1]:7.2f} CPU-s", flush=True)

    hours = args.minutes / 60.0
    peer = statistics.median(cpu["pymicro_wakeword hey_jarvis"]) / hours
    rows = []
    for name, values in cpu.items():
        per_hour = statistics.median(values) / hours
        row: dict[str, object] = {"system": name, "cpu_s_runs": [round(v, 3) for v in values],
                                  "cpu_s_per_audio_hour": round(per_hour, 2),
                                  "ratio_to_pymicro": round(per_hour / peer, 3)}
        if name.startswith("kws-edge") and "+" not in name:
            row["target"] = "<= 0.5x pymicro-wakeword"
            row["met"] = per_hour <= 0.5 * peer
        elif "+" in name:
            row["target"] = "<= 1.0x pymicro-wakeword"
            row["met"] = per_hour <= peer
        rows.append(row)
    model_files = {}
    for m in models + [m for m in args.set.split(",") if m]:
        manifest = Path(m) if m.endswith(".json") else ROOT / "models" / f"{m}.json"
        if manifest.exists():
            tflite = manifest.with_suffix(".tflite")
            model_files[model_label(m)] = {"tflite_sha256": sha256_of(tflite) if tflite.exists() else None,
                                          "streaming": "streaming" in json.loads(manifest.read_text())}
    result = {"what": "whole-process CPU seconds per audio hour, median of alternating rounds",
              "audio_minutes": args.minutes, "rounds": args.rounds, "rows": rows, "models": model_files,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": "python -m benchmarks.cpu_side_by_side " + " ".join(argv or sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_side_by_side.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'system':<44} {'CPU-s/audio h':>14} {'x pymicro':>10}  target")
    for row in rows:
        verdict = "" if "met" not in row else f"{row['target']}: {'met' if row['met'] else 'MISSED'}"
        print(f"{row['system']:<44} {row['cpu_s_per_audio_hour']:>14} {row['ratio_to_pymicro']:>10}  {verdict}")
    print(f"wrote {args.out / 'cpu_side_by_side.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
