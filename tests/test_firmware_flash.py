"""``kws-edge flash``: export into the sketch, the exact install help without arduino-cli, the 1200-baud touch
on a real pty (the Nano itself cannot exist here), and the arduino-cli command lines."""

from __future__ import annotations

import os
import subprocess
import termios
import tty
from pathlib import Path

import pytest

from kws_edge import firmware
from kws_edge.flash import FQBN, commands, touch_1200
from tests.test_service_support import KWS_EDGE, hermetic_env


def _sketch_copy(tmp_path: Path) -> Path:
    import shutil

    sketch = tmp_path / "kws_nano"
    shutil.copytree(firmware.SKETCH_DIR, sketch)
    for name in firmware.GENERATED:
        (sketch / name).unlink(missing_ok=True)
    return sketch


def test_export_only_writes_the_model_files(tiny_model: Path, tmp_path: Path) -> None:
    sketch = _sketch_copy(tmp_path)
    res = subprocess.run([*KWS_EDGE, "flash", "--export-only", "--model", str(tiny_model), "--sketch", str(sketch)],
                         env=hermetic_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for name in firmware.GENERATED:
        assert (sketch / name).exists()
    assert "% free" in res.stdout and "model runs/s" in res.stdout


def test_without_arduino_cli_it_says_what_to_install(tiny_model: Path, tmp_path: Path) -> None:
    sketch = _sketch_copy(tmp_path)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sketch.iterdir() if p.is_file()}
    res = subprocess.run([*KWS_EDGE, "flash", "--port", "/dev/ttyACM0", "--model", str(tiny_model), "--sketch",
                          str(sketch), "--arduino-cli", str(tmp_path / "no-such-arduino-cli")],
                         env=hermetic_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "arduino-cli core install arduino:mbed_nano" in res.stderr
    assert "tflite-micro-arduino-examples" in res.stderr
    assert str(sketch) in res.stderr and "Traceback" not in res.stderr
    # nothing is exported before the tools are known to be there: the sketch is left as it was
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sketch.iterdir() if p.is_file()} == before


def test_port_is_required_to_upload(tiny_model: Path, tmp_path: Path) -> None:
    res = subprocess.run([*KWS_EDGE, "flash", "--model", str(tiny_model), "--sketch", str(_sketch_copy(tmp_path))],
                         env=hermetic_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--port" in res.stderr


def test_1200_baud_touch_on_a_real_pty() -> None:
    """The pty stands in for the board's USB serial port: the touch must leave it set to 1200 baud."""
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        termios.tcsetattr(slave, termios.TCSANOW, _with_speed(termios.tcgetattr(slave), termios.B115200))
        touch_1200(os.ttyname(slave))
        attrs = termios.tcgetattr(slave)
        assert attrs[4] == termios.B1200 and attrs[5] == termios.B1200
    finally:
        os.close(master)
        os.close(slave)


def _with_speed(attrs: list, speed: int) -> list:  # type: ignore[type-arg]
    attrs = list(attrs)
    attrs[4] = attrs[5] = speed
    return attrs


def test_touch_on_a_missing_port_is_a_clear_error(tmp_path: Path) -> None:
    from kws_edge.flash import FlashError

    with pytest.raises(FlashError, match="1200-baud touch"):
        touch_1200(str(tmp_path / "ttyACM7"))


def test_arduino_cli_command_lines(tmp_path: Path) -> None:
    build, upload = commands("arduino-cli", FQBN, tmp_path, "/dev/ttyACM1")
    assert build == ["arduino-cli", "compile", "--fqbn", "arduino:mbed_nano:nano33ble", str(tmp_path)]
    assert upload == ["arduino-cli", "upload", "--fqbn", "arduino:mbed_nano:nano33ble", "--port", "/dev/ttyACM1",
                      str(tmp_path)]
