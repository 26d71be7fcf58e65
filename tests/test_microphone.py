"""A real PortAudio input stream: a private PulseAudio null sink plays a WAV, its monitor is the microphone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kws_edge.audio import read_wav, write_wav
from tests.conftest import compose, kws_cmd, needs_tts, shipped, tts

RECORD = """
import sys, time, numpy as np
from kws_edge.audio import Microphone, write_wav
seconds, out, device = float(sys.argv[1]), sys.argv[2], (sys.argv[3] or None)
got = []
with Microphone(device, 16000, chunk=1280) as mic:
    print("RECORDING", mic.device_name, mic.native_rate, flush=True)
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        c = mic.read(timeout=2.0)
        if c is not None:
            got.append(c)
write_wav(out, np.concatenate(got))
print("DROPPED", mic.dropped_chunks, flush=True)
"""


def _wait_for(proc: subprocess.Popen, marker: str, timeout: float = 20.0) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if marker in line:
            return line
        if not line and proc.poll() is not None:
            break
    err = proc.stderr.read() if proc.stderr else ""
    pytest.fail(f"never saw {marker!r}; stderr: {err[-800:]}")


def _env(pulse: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **pulse, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def test_devices_lists_the_pulse_input(pulse: dict[str, str]) -> None:
    out = subprocess.run(kws_cmd("devices", "--json"), env=_env(pulse), capture_output=True, text=True,
                         check=True)
    names = [d["name"] for d in json.loads(out.stdout)]
    assert "pulse" in names


@pytest.mark.parametrize("device", ["pulse", ""])
def test_recording_carries_the_played_samples(pulse: dict[str, str], tmp_path: Path, device: str) -> None:
    rng = np.random.default_rng(7)
    t = np.arange(16000) / 16000
    burst = (6000 * np.sin(2 * np.pi * 500 * t) * rng.uniform(0.5, 1.0, 16000)).astype(np.int16)
    played = np.concatenate([np.zeros(16000, np.int16), burst, np.zeros(8000, np.int16)])
    write_wav(tmp_path / "play.wav", played)
    rec = subprocess.Popen([sys.executable, "-c", RECORD, "5", str(tmp_path / "rec.wav"), device],
                           env=_env(pulse), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(rec, "RECORDING")
    time.sleep(0.5)
    subprocess.run(["paplay", str(tmp_path / "play.wav")], env=_env(pulse), check=True)
    _, err = rec.communicate(timeout=30)
    assert rec.returncode == 0, err
    recorded = read_wav(tmp_path / "rec.wav").astype(np.float64)
    # Find the burst in the recording and compare the aligned samples.
    corr = np.correlate(recorded, burst.astype(np.float64), mode="valid")
    at = int(np.argmax(corr))
    aligned = recorded[at:at + len(burst)]
    rel_err = np.abs(aligned - burst).max() / np.abs(burst).max()
    assert rel_err < 0.02, f"recorded burst differs from the played one by {rel_err:.1%}"


def test_no_microphone_gives_a_clear_error(tmp_path: Path, tiny_model: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE")}
    env.update(HOME=str(tmp_path), XDG_RUNTIME_DIR=str(tmp_path), PULSE_SERVER=f"unix:{tmp_path}/absent")
    args = ("listen", "--model", str(tiny_model), "--device", "no-such-mic", "--seconds", "1")
    out = subprocess.run(kws_cmd(*args), env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert "no-such-mic" in out.stderr and "Traceback" not in out.stderr
    default = subprocess.run(kws_cmd("listen", "--model", str(tiny_model), "--seconds", "1"), env=env,
                             capture_output=True, text=True)
    assert default.returncode == 2 and "Traceback" not in default.stderr
    assert "microphone" in default.stderr, default.stderr


@needs_tts
def test_spoken_keyword_through_the_microphone_is_detected(pulse: dict[str, str], tmp_path: Path) -> None:
    model = shipped("hey_jarvis")
    speech = tts("hey jarvis", tmp_path / "kw.wav", voice="en-us", rate=150)
    compose([1.5, speech, 1.5], tmp_path / "play.wav")
    listen = subprocess.Popen(kws_cmd("listen", "--model", str(model), "--no-bars", "--seconds", "9"),
                              env=_env(pulse), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert listen.stderr is not None
    deadline = time.monotonic() + 20
    while "listening on" not in listen.stderr.readline():
        assert time.monotonic() < deadline and listen.poll() is None, "listen never started"
    time.sleep(0.5)
    subprocess.run(["paplay", str(tmp_path / "play.wav")], env=_env(pulse), check=True)
    out, err = listen.communicate(timeout=30)
    assert listen.returncode == 0, err
    assert "hey_jarvis" in out, f"no detection; stdout={out!r} stderr={err[-500:]!r}"
