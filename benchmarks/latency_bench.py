"""Detection latency through a real broker, plus the daemon's idle CPU and memory.

Latency: TTS utterances of the keyword (held-out voices) are placed in a low-noise stream, each with its
labelled end (last 10 ms frame above 5 % of the loudest). ``kws-edge run --input STREAM --realtime`` feeds
the stream at real-time speed (a chunk becomes available when its last sample would have been captured,
as from a microphone) and publishes to a mosquitto on 127.0.0.1; a paho subscriber timestamps every
detection on arrival. Latency = arrival - (feed start + labelled end). Idle: the same daemon listening to
low noise with no keyword, CPU % over 30 s from /proc and its RSS.

    .venv/bin/python benchmarks/latency_bench.py --model hey_jarvis --keywords 110
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kws_edge import manifest as mf  # noqa: E402
from kws_edge.audio import read_wav, write_wav  # noqa: E402
from kws_edge.model import load_model, resolve_manifest  # noqa: E402
from kws_edge.pipeline import Detector  # noqa: E402

RATE = 16000
KWS_EDGE = [sys.executable, "-m", "kws_edge"]
ACCENTS = ("en-us", "en-gb", "en-029", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-us-nyc")
VARIANTS = ("", "+f1", "+f2", "+f3", "+f4", "+f5", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7")
SPEEDS = (130, 150, 170, 190)  # words per minute
PITCHES = (40, 55, 70)  # espeak-ng 0..99


def candidates(seed: int) -> list[tuple[str, int, int]]:
    """Every (voice, speed, pitch) once, in a seeded order."""
    pool = [(a + v, s, p) for a in ACCENTS for v in VARIANTS for s in SPEEDS for p in PITCHES]
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in order]


def synthesize(voice: str, text: str, speed: int, pitch: int, cache: Path) -> np.ndarray:
    """espeak-ng -> sox (no dither) -> 16 kHz int16, cached by parameters."""
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"{re.sub(r'[^A-Za-z0-9]+', '_', f'{voice}_{text}_{speed}_{pitch}')}.wav"
    if not out.exists():
        raw = out.with_suffix(".raw.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text],
                       check=True, capture_output=True)
        subprocess.run(["sox", "-D", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)], check=True,
                       capture_output=True)
        raw.unlink()
    return read_wav(out, RATE)


def speech_end(x: np.ndarray, frame: int = 160) -> int:
    """Sample after the last 10 ms frame whose RMS exceeds 5 % of the loudest frame."""
    n = len(x) // frame
    rms = np.sqrt(np.mean(x[: n * frame].astype(np.float64).reshape(n, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > 0.05 * rms.max())
    return int((loud[-1] + 1) * frame) if len(loud) else len(x)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="hey_jarvis", help="model name or manifest path")
    p.add_argument("--text", help="what the voices say (default: the keyword with spaces)")
    p.add_argument("--keywords", type=int, default=110, help="keywords in the stream (>= 100 for p99)")
    p.add_argument("--threshold", action="append", default=[], metavar="KW=V", help="passed to kws-edge run")
    p.add_argument("--idle-seconds", type=float, default=30.0)
    p.add_argument("--cache", type=Path, default=REPO / "cache" / "latency_tts")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "latency.json")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def _noise(n: int, rng: np.random.Generator, level: float = 30.0) -> np.ndarray:
    return rng.normal(0.0, level, n)


def pick_utterances(args: argparse.Namespace, manifest_path: Path,
                    rng: np.random.Generator) -> tuple[list[np.ndarray], int]:
    """TTS clips the model detects when heard alone (latency needs detections; recall is reported apart)."""
    runner = load_model(manifest_path)
    m = runner.manifest
    text = args.text or " ".join(m.keywords[0].split("_"))
    overrides = {kw: float(v) for kw, _, v in (t.partition("=") for t in args.threshold)}
    clips: list[np.ndarray] = []
    tried = 0
    for voice, speed, pitch in candidates(args.seed):
        if len(clips) >= args.keywords:
            break
        x = synthesize(voice, text, speed, pitch, args.cache)
        tried += 1
        det = Detector([runner], overrides)
        padded = np.concatenate([_noise(RATE, rng), x, _noise(RATE * 3 // 2, rng)]).astype(np.int16)
        if det.process(padded) + det.flush():
            clips.append(x)
    print(f"{len(clips)} of {tried} TTS clips detected offline", file=sys.stderr)
    if len(clips) < args.keywords:
        print(f"warning: only {len(clips)} keywords (wanted {args.keywords})", file=sys.stderr)
    return clips, tried


def build_stream(clips: list[np.ndarray], gap_s: float, rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    parts, ends, pos = [], [], 0
    for x in clips:
        gap = _noise(int(gap_s * RATE), rng)
        parts += [gap, x.astype(np.float64)]
        ends.append((pos + len(gap) + speech_end(x)) / RATE)
        pos += len(gap) + len(x)
    parts.append(_noise(2 * RATE, rng))
    return np.clip(np.rint(np.concatenate(parts)), -32768, 32767).astype(np.int16), ends


class Broker:
    def __init__(self, d: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = d / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        f"user {pwd.getpwuid(os.geteuid()).pw_name}\n")  # as root: no switch to 'mosquitto'
        self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def subscribe(port: int) -> tuple[Any, list[tuple[float, dict[str, Any]]]]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[tuple[float, dict[str, Any]]] = []
    ready = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="latency-bench")
    c.on_connect = lambda cl, *a: cl.subscribe("kws_edge/+/detection", qos=1)
    c.on_subscribe = lambda *a: ready.set()
    c.on_message = lambda cl, ud, msg: got.append((time.time(), json.loads(msg.payload)))
    c.connect("127.0.0.1", port)
    c.loop_start()
    ready.wait(10)
    return c, got


def run_daemon(wav: Path, port: int, model: Path, state: Path, thresholds: list[str],
               sample: float | None = None) -> dict[str, Any]:
    """Run ``kws-edge run --realtime`` on ``wav``; return the feed start epoch and /proc samples."""
    empty = state.parent / "empty.toml"
    empty.write_text("")
    cmd = [*KWS_EDGE, "run", "--config", str(empty), "--input", str(wav), "--realtime", "--mqtt-url",
           f"mqtt://127.0.0.1:{port}", "--device-id", "bench", "--model", str(model), "--state-dir", str(state)]
    for t in thresholds:
        cmd += ["--threshold", t]
    cmd.append("--print")  # one line per detection: stream time of the window end that fired
    log = state.parent / f"{wav.stem}.log"
    printed = state.parent / f"{wav.stem}.out"
    with open(log, "w") as err, open(printed, "w") as stdout:
        proc = subprocess.Popen(cmd, stderr=err, stdout=stdout, cwd=REPO)
    start = None
    while start is None and proc.poll() is None:
        m = re.search(r"started at epoch (\d+\.\d+)", log.read_text())
        start = float(m.group(1)) if m else None
        time.sleep(0.01)
    out: dict[str, Any] = {"start": start}
    if sample:
        time.sleep(5.0)
        t0, c0 = time.monotonic(), _cpu_seconds(proc.pid)
        time.sleep(sample)
        out["cpu_percent"] = 100.0 * (_cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        for key in ("VmRSS", "VmHWM"):
            out[key] = int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]
    if proc.wait() != 0:
        raise SystemExit(f"kws-edge run failed: {log.read_text()[-2000:]}")
    out["fired_at"] = [float(m.group(1)) for m in re.finditer(r"^\s*(\d+\.\d+)s\s", printed.read_text(), re.M)]
    return out


def system_latency(run: dict[str, Any], arrivals: list[tuple[float, dict[str, Any]]],
                   chunk_s: float) -> list[float]:
    """Arrival minus the moment the audio chunk that completed the firing window was available: the
    service's own share (features, model, decision, queue, MQTT), whatever the model's timing."""
    by_seq = {payload["seq"]: t for t, payload in arrivals}
    out = []
    for seq, fired in enumerate(run["fired_at"], start=1):
        if seq in by_seq:
            available = np.ceil(fired / chunk_s - 1e-9) * chunk_s
            out.append(by_seq[seq] - (run["start"] + available))
    return out


def _stats(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ms = np.array(seconds) * 1000
    stats = {q: round(float(np.percentile(ms, p)), 1) for q, p in (("p50", 50), ("p95", 95), ("p99", 99))}
    return stats | {"mean": round(float(ms.mean()), 1), "min": round(float(ms.min()), 1),
                    "max": round(float(ms.max()), 1), "n": len(ms)}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def match(ends: list[float], arrivals: list[tuple[float, dict[str, Any]]], start: float,
          gap_s: float) -> tuple[list[float], int, int]:
    """Latency per keyword: the first arrival from 1 s before its labelled end to ``gap_s`` after."""
    rel = sorted(t - start for t, _ in arrivals)
    used: set[int] = set()
    lat = []
    for end in ends:
        hits = [i for i, r in enumerate(rel) if end - 1.0 <= r <= end + gap_s and i not in used]
        if hits:
            used.add(hits[0])
            lat.append(rel[hits[0]] - end)
    return lat, len(ends) - len(lat), len(rel) - len(used)


def main() -> int:
    args = parse_args()
    if shutil.which("mosquitto") is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    rng = np.random.default_rng(args.seed)
    manifest_path = resolve_manifest(args.model)
    m = mf.load(manifest_path)
    gap_s = m.decision.refractory_ms / 1000 + 0.7
    clips, screened = pick_utterances(args, manifest_path, rng)
    with tempfile.TemporaryDirectory(prefix="kws-latency-") as tmp_s:
        tmp = Path(tmp_s)
        stream, ends = build_stream(clips, gap_s, rng)
        write_wav(tmp / "stream.wav", stream)
        write_wav(tmp / "idle.wav", _noise(int((args.idle_seconds + 8) * RATE), rng))
        broker = Broker(tmp)
        client, arrivals = subscribe(broker.port)
        try:
            print(f"feeding {len(stream) / RATE:.0f} s in real time...", file=sys.stderr)
            run = run_daemon(tmp / "stream.wav", broker.port, manifest_path, tmp / "state", args.threshold)
            time.sleep(1.0)
            arrivals = list(arrivals)  # the stream's detections only (the idle run publishes too)
            idle = run_daemon(tmp / "idle.wav", broker.port, manifest_path, tmp / "state2", args.threshold,
                              sample=args.idle_seconds)
        finally:
            client.loop_stop()
            broker.stop()
    lat, missed, extra = match(ends, arrivals, run["start"], gap_s)
    result = {
        "model": m.name, "model_sha256": m.sha256, "keywords_in_stream": len(ends), "detected": len(lat),
        "missed_in_stream": missed, "extra_detections": extra,
        "tts_clips_screened": screened, "tts_clips_detected_alone": len(clips),
        "threshold_overrides": args.threshold,
        # labelled end of the spoken keyword -> subscriber (negative: the model fired before the end)
        "latency_ms": _stats(lat),
        # audio chunk available -> subscriber: the service's own latency, independent of the model
        "system_latency_ms": _stats(system_latency(run, arrivals, 0.08)),
        # the daemon's detection timestamp -> subscriber: on-disk queue + broker + subscriber
        "mqtt_latency_ms": _stats([t - datetime.fromisoformat(p["timestamp"]).timestamp() for t, p in arrivals]),
        "idle": {"seconds": args.idle_seconds, "cpu_percent_of_one_core": round(idle["cpu_percent"], 2),
                 "rss_mb": round(idle["VmRSS"], 1), "peak_rss_mb": round(idle["VmHWM"], 1)},
        "chunk_ms": 80, "machine": platform.machine(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "niceness": os.nice(0), "python": platform.python_version(),
        "command": " ".join(sys.argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
