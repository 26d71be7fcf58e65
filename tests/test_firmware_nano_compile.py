"""Every file of the Nano sketch compiles with the flags the Nano 33 BLE core adds, raised to C++17.

The arduino:mbed_nano core compiles with ``-std=gnu++14 -mfloat-abi=softfp -mcpu=cortex-m4``; the TFLM tree
the firmware is built against needs C++17. So each sketch file (``.cpp`` and the ``.ino`` as C++) must
compile with ``arm-none-eabi-g++ -std=gnu++17 -mfloat-abi=softfp -mcpu=cortex-m4 -Wall -Wextra -Werror``,
TFLM's headers included with ``-isystem`` (their own warnings are not ours). The core's ``Arduino.h`` and
``PDM.h`` are not here: the stand-in headers of ``mcu_firmware/host/nano`` declare what the sketch calls
(compile only; nothing is linked or run).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kws_edge import firmware
from tests.test_firmware_support import HOST_DIR, TFLM_DIR

NANO_FLAGS = ["-std=gnu++17", "-mfloat-abi=softfp", "-mcpu=cortex-m4", "-Wall", "-Wextra", "-Werror"]
SKETCH_SOURCES = sorted(p.name for p in firmware.SKETCH_DIR.iterdir() if p.suffix in (".cpp", ".ino"))


@pytest.mark.skipif(shutil.which("arm-none-eabi-g++") is None,
                    reason="arm-none-eabi-g++ is not installed (Debian package gcc-arm-none-eabi)")
@pytest.mark.skipif(not (TFLM_DIR / "tensorflow" / "lite" / "micro").is_dir(),
                    reason=f"no TensorFlow Lite Micro tree at {TFLM_DIR} (set TFLM_DIR)")
@pytest.mark.parametrize("name", SKETCH_SOURCES)
def test_sketch_file_compiles_with_nano_core_flags(name: str, tmp_path: Path) -> None:
    tflm = [f"-isystem{TFLM_DIR / sub}" for sub in ("", "third_party/flatbuffers/include",
                                                     "third_party/gemmlowp", "third_party/ruy")]
    cmd = ["arm-none-eabi-g++", *NANO_FLAGS, "-DTF_LITE_STATIC_MEMORY", f"-I{HOST_DIR / 'nano'}",
           f"-I{firmware.SKETCH_DIR}", *tflm, "-x", "c++", "-c", str(firmware.SKETCH_DIR / name),
           "-o", str(tmp_path / "out.o")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


def test_every_sketch_file_is_checked() -> None:
    assert {"audio_provider.cpp", "command_responder.cpp", "feature_provider.cpp", "kws_nano.ino",
            "kws_protocol.cpp", "main_functions.cpp", "model_data.cpp", "model_runner.cpp",
            "recognize_commands.cpp"} <= set(SKETCH_SOURCES)
