"""The daemon's other inputs and modes: the Nano's serial line (real pty) and ``kws-edge run --demo``."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from kws_edge import manifest as mf
from tests.test_service_support import (
    KWS_EDGE,
    board_daemon,
    hermetic_env,
    needs_mosquitto,
    noise_wav,
    tiny_model,
    wait_until,
)


@needs_mosquitto
def test_serial_detections_are_published_with_source_mcu(tmp_path: Path) -> None:
    pytest.importorskip("serial")
    protocol = pytest.importorskip("kws_edge.protocol")
    model = tiny_model()
    sha = mf.load(model).sha256
    with board_daemon(tmp_path, "baudrate = 115200\n", "kws_edge/+/detection", model) as d:
        os.write(d.board, protocol.format_hello("1.0.0", sha[:8], "tiny"))
        os.write(d.board, protocol.format_detection("yes", 0.875, 12345))
        wait_until(lambda: d.sub.detections(), what="the Nano's detection")
        d.stop()
    [det] = d.sub.detections()
    assert (det["keyword"], det["score"], det["source"], det["model"], det["model_sha256"], det["seq"]) == \
        ("yes", 0.875, "mcu", "tiny", sha, 1)


def test_demo_prints_detections_and_exits_0(tmp_path: Path) -> None:
    wav = noise_wav(tmp_path / "demo.wav", 2.0, seed=12)
    cmd = [*KWS_EDGE, "run", "--demo", "--no-mqtt", "--input", str(wav), "--model", str(tiny_model()),
           "--threshold", "yes=0.0"]
    res = subprocess.run(cmd, env=hermetic_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) >= 1 and all(" yes " in line and "score" in line and "(tiny)" in line for line in lines)
    assert "printing detections only" in res.stderr
    assert f"demo: {len(lines)} detection(s)" in res.stderr


def test_demo_ctrl_c_exits_cleanly(tmp_path: Path) -> None:
    wav = noise_wav(tmp_path / "demo.wav", 60.0, seed=13)
    cmd = [*KWS_EDGE, "run", "--demo", "--no-mqtt", "--input", str(wav), "--model", str(tiny_model()),
           "--threshold", "yes=0.0"]
    proc = subprocess.Popen(cmd, env=hermetic_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first detection: the demo is running
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "yes" in first
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "detection(s)" in err


def _pulseaudio(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The same private PulseAudio as the ``pulse`` fixture (tests/conftest.py), started again."""
    socket_path = env["PULSE_SERVER"].removeprefix("unix:")
    proc = subprocess.Popen(
        ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--disable-shm=yes",
         "-L", f"module-native-protocol-unix socket={socket_path} auth-anonymous=1",
         "-L", "module-null-sink sink_name=kws_sink rate=16000 channels=1 format=s16le"],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: subprocess.run(["pactl", "info"], env={**os.environ, **env},
                                      capture_output=True).returncode == 0, what="PulseAudio again")
    return proc


def test_microphone_lost_and_back_is_survived(pulse: dict[str, str], tmp_path: Path) -> None:
    """A real PortAudio stream from a private PulseAudio; the sound server goes away and comes back."""
    env = {**hermetic_env(tmp_path), **pulse}
    out, log = tmp_path / "out.txt", tmp_path / "daemon.log"
    cmd = [*KWS_EDGE, "run", "--config", os.devnull, "--no-mqtt", "--print", "--device", "pulse",
           "--model", str(tiny_model()), "--threshold", "yes=0.0"]  # threshold 0: fires on silence too
    with open(out, "wb") as o, open(log, "wb") as e:
        proc = subprocess.Popen(cmd, env=env, stdout=o, stderr=e)
    again = None
    try:
        wait_until(lambda: out.read_text().count(" yes ") >= 1, what="a detection from the microphone")
        subprocess.run(["pactl", "exit"], env={**os.environ, **pulse}, check=True)
        wait_until(lambda: "waiting for microphone" in log.read_text(), what="the microphone retry")
        assert proc.poll() is None
        before = out.read_text().count(" yes ")
        again = _pulseaudio(pulse)
        wait_until(lambda: log.read_text().count("listening on 'pulse'") >= 2, what="the microphone back")
        wait_until(lambda: out.read_text().count(" yes ") > before, what="detections after the comeback")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        if again is not None:
            again.terminate()
            again.wait(10)
    assert "Traceback" not in log.read_text()
