"""Shared fixtures: real TTS speech, a private PulseAudio server, the shipped models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kws_edge.audio import read_wav, write_wav

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"


def tts(text: str, out: Path, voice: str = "en-us", rate: int = 150, engine: str = "espeak-ng") -> np.ndarray:
    """Speak ``text`` with a local TTS engine: 16 kHz mono int16, silence trimmed (raw file in ``out``)."""
    raw = out.with_suffix(".raw.wav")
    if engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(raw), text]
    else:
        cmd = ["flite", "-voice", voice, "-t", text, "-o", str(raw)]
    subprocess.run(cmd, check=True, capture_output=True)
    subprocess.run(["sox", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True,
                   capture_output=True)
    x = read_wav(out)
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > 300)
    return x[loud[0]:loud[-1] + 1] if len(loud) else x  # trim the engines' leading/trailing silence


def compose(parts: list[np.ndarray | float], out: Path, noise: float = 30.0, seed: int = 0) -> list[float]:
    """Concatenate speech arrays and silences (floats, seconds) with a little noise; return the end times
    (seconds) of the speech parts, and write the result to ``out``."""
    rng = np.random.default_rng(seed)
    pieces, ends, t = [], [], 0
    for part in parts:
        if isinstance(part, float | int):
            piece = np.zeros(int(part * 16000), dtype=np.float64)
        else:
            piece = part.astype(np.float64)
            ends.append((t + len(piece)) / 16000)
        pieces.append(piece)
        t += len(piece)
    signal = np.concatenate(pieces)
    signal += rng.standard_normal(len(signal)) * noise
    write_wav(out, np.clip(signal, -32768, 32767).astype(np.int16))
    return ends


needs_tts = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")),
                               reason="espeak-ng and sox are needed (apt-get install espeak-ng sox)")


def shipped(name: str) -> Path:
    path = MODELS / f"{name}.json"
    if not path.exists():
        pytest.skip(f"shipped model {name} not in models/ yet")
    return path


@pytest.fixture
def pulse(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private PulseAudio daemon with a 16 kHz null sink whose monitor is the default source.

    Yields the environment a client needs (PULSE_SERVER, PULSE_SOURCE, PULSE_SINK, HOME,
    XDG_RUNTIME_DIR); whatever is played to the sink can be recorded from PortAudio's "pulse" device.
    """
    if not shutil.which("pulseaudio") or not shutil.which("paplay"):
        pytest.skip("pulseaudio and pulseaudio-utils are needed")
    home = tmp_path / "pulse-home"
    runtime = home / "run"
    runtime.mkdir(parents=True)
    runtime.chmod(0o700)
    socket = runtime / "native"
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime),
           "PULSE_SERVER": f"unix:{socket}", "PULSE_SOURCE": "kws_sink.monitor", "PULSE_SINK": "kws_sink"}
    daemon = subprocess.Popen(
        ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--disable-shm=yes",
         "-L", f"module-native-protocol-unix socket={socket} auth-anonymous=1",
         "-L", "module-null-sink sink_name=kws_sink rate=16000 channels=1 format=s16le"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                err = daemon.stderr.read().decode() if daemon.stderr else ""
                pytest.fail(f"private PulseAudio did not start: {err[-500:]}")
            time.sleep(0.1)
        yield {k: env[k] for k in ("HOME", "XDG_RUNTIME_DIR", "PULSE_SERVER", "PULSE_SOURCE", "PULSE_SINK")}
    finally:
        daemon.terminate()
        try:
            daemon.wait(5)
        except subprocess.TimeoutExpired:
            daemon.kill()


def kws_cmd(*args: str) -> list[str]:
    """The kws-edge CLI of this checkout, independent of the working directory."""
    return [sys.executable, "-m", "kws_edge", *args]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Manifest path of a tiny, untrained but real int8 model (labels _silence_, _unknown_, yes, no)."""
    from training.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny"), name="tiny", seed=0)


def write_flac(path: Path, x: np.ndarray, rate: int = 16000) -> Path:
    """A 16-bit FLAC file (soundfile), as the real-voice recordings are stored."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, rate, format="FLAC", subtype="PCM_16")
    return path


PHRASES = {"hey_jarvis": "hey jarvis", "computer": "computer", "view_glass": "view glass",
           "smart_mirror": "smart mirror", "snowboy": "snowboy"}


@pytest.fixture(scope="session")
def realvoice_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real-voice folder: espeak-ng clips with silence around, like the crowd-sourced ones."""
    root = tmp_path_factory.mktemp("realvoice")
    raw = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    for folder, text in PHRASES.items():
        for i, voice in enumerate(("en-us", "en", "en-us+f3")[: 3 if folder == "hey_jarvis" else 2]):
            x = tts(text, raw / f"{folder}_{i}.wav", voice=voice).astype(np.float64)
            pad = np.zeros(int(rng.uniform(0.3, 0.8) * 16000))
            clip = np.concatenate([pad, x, pad]) + rng.standard_normal(len(x) + 2 * len(pad)) * 20
            write_flac(root / folder / f"{folder}_{i}.flac", np.clip(clip, -32768, 32767).astype(np.int16))
    return root


@pytest.fixture(scope="session")
def tflm_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TFLM + CMSIS-NN for the M4 (softfp, gnu++17: the Nano core's), built once per session and shared by
    the QEMU firmware tests and the Arduino library kws-edge flash packs (make tflm; a few CPU-minutes)."""
    from tests.test_firmware_support import arduino_lib_tools_missing, build_tflm

    reason = arduino_lib_tools_missing()
    if reason:
        pytest.skip(reason)
    return build_tflm(tmp_path_factory.mktemp("tflm"))
