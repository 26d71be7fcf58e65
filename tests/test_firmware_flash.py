"""``kws-edge flash``: export into the sketch, the exact install help without arduino-cli, the TFLM tree it needs,
the 1200-baud touch on a real pty (the Nano itself cannot exist here), and the arduino-cli command lines. The
library flash builds from the TFLM tree and the compile it runs with it: tests/test_firmware_arduino_lib.py."""

from __future__ import annotations

import os
import subprocess
import termios
import tty
from pathlib import Path

import pytest

from kws_edge import firmware
from kws_edge.flash import FQBN, TFLM_REVISION, commands, touch_1200
from tests.test_firmware_support import fake_arduino_cli, recorded_argv
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
    # the core only: no Arduino library to install (flash builds TFLM from the tree itself)
    assert "lib install" not in res.stderr and "tflite-micro-arduino-examples" not in res.stderr
    assert "--tflm-dir" in res.stderr and "gcc-arm-none-eabi" in res.stderr
    assert str(sketch) in res.stderr and "Traceback" not in res.stderr
    # nothing is exported before the tools are known to be there: the sketch is left as it was
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sketch.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("how", ["option", "env"])
def test_missing_tflm_tree_names_the_option_revision_and_generator(how: str, tiny_model: Path,
                                                                   tmp_path: Path) -> None:
    sketch = _sketch_copy(tmp_path)
    log = tmp_path / "argv.jsonl"
    cli = fake_arduino_cli(tmp_path / "arduino-cli", log)
    missing = tmp_path / "no-tflm"
    args = ["--tflm-dir", str(missing)] if how == "option" else []
    env = hermetic_env(tmp_path, **({"TFLM_DIR": str(missing)} if how == "env" else {}))
    res = subprocess.run([*KWS_EDGE, "flash", "--port", "/dev/ttyACM0", "--model", str(tiny_model), "--sketch",
                          str(sketch), "--arduino-cli", str(cli), *args], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{'--tflm-dir' if how == 'option' else 'TFLM_DIR'} {missing} does not exist" in res.stderr
    assert TFLM_REVISION in res.stderr and "create_tflm_tree.py" in res.stderr
    assert "OPTIMIZED_KERNEL_DIR=cmsis_nn TARGET_ARCH=cortex-m4+fp" in res.stderr
    assert [argv[:2] for argv in recorded_argv(log)] == [["core", "list"]]  # nothing compiled
    assert not (sketch / "model_data.cpp").exists()  # nor exported


def test_a_folder_that_is_not_a_tflm_tree_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "tree" / "tensorflow").mkdir(parents=True)
    cli = fake_arduino_cli(tmp_path / "arduino-cli", tmp_path / "argv.jsonl")
    res = subprocess.run([*KWS_EDGE, "flash", "--port", "/dev/ttyACM0", "--model", str(tiny_model), "--sketch",
                          str(_sketch_copy(tmp_path)), "--arduino-cli", str(cli), "--tflm-dir",
                          str(tmp_path / "tree")], env=hermetic_env(tmp_path), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2
    assert "is not a TFLM tree (no tensorflow/lite/micro/micro_interpreter.h" in res.stderr


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
    """compile: --library (wins over any other library with TensorFlowLite.h) and the build property that
    raises the core's gnu++14 to gnu++17 with the library's defines; upload: as before."""
    lib = tmp_path / "TensorFlowLite_kws_edge"
    build, upload = commands("arduino-cli", FQBN, tmp_path, "/dev/ttyACM1", lib)
    assert build == ["arduino-cli", "compile", "--fqbn", "arduino:mbed_nano:nano33ble", "--library", str(lib),
                     "--build-property", "compiler.cpp.extra_flags=-std=gnu++17 -DTF_LITE_STATIC_MEMORY -DCMSIS_NN",
                     str(tmp_path)]
    assert upload == ["arduino-cli", "upload", "--fqbn", "arduino:mbed_nano:nano33ble", "--port", "/dev/ttyACM1",
                      str(tmp_path)]
