"""The same portable C++ built for the Cortex-M4F (arm-none-eabi-g++ -mcpu=cortex-m4 -mfpu=fpv4-sp-d16
-mfloat-abi=hard) and run under qemu-system-arm -M mps2-an386 with semihosting.

It must give the same golden outputs as the Python pipeline (MFCC within the stated tolerance, identical
int8 model inputs, identical decision events, identical protocol lines). The test also prints the code size
(arm-none-eabi-size) and the instructions per hop, counted with ``-icount shift=0`` (one instruction per
virtual nanosecond) and SysTick, calibrated against a loop of known length: instructions, not cycles.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.test_firmware_host import CASES, golden_signal
from tests.test_firmware_support import (
    MFCC_ATOL,
    MFCC_RTOL,
    build,
    cpp_decisions,
    cpp_features,
    python_features,
    random_decision_case,
    run_harness,
)

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-arm") is None,
                                reason="qemu-system-arm is not installed (Debian package qemu-system-arm)")


@pytest.fixture(scope="module")
def elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("m4", tmp_path_factory.mktemp("m4_build"))


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("host", tmp_path_factory.mktemp("host_build"))


def test_m4_mfcc_matches_python_and_host(elf: Path, host: Path, tmp_path: Path) -> None:
    case = CASES["default"]
    signal = golden_signal(tmp_path)
    ref_frames, ref_windows = python_features(signal, case)
    frames, windows, stats = cpp_features(elf, signal, case, tmp_path / "m4", chunk=777, tag="m4")
    err = np.abs(frames - ref_frames)
    assert frames.shape == ref_frames.shape
    assert np.all(err <= MFCC_ATOL + MFCC_RTOL * np.abs(ref_frames)), f"max MFCC error {err.max():.3g}"
    got = np.stack([w for _, w in windows])
    ref = np.stack([w for _, w in ref_windows])
    assert [t for t, _ in windows] == [t for t, _ in ref_windows]
    equal = float(np.mean(got == ref))
    assert equal >= 0.999
    host_frames, host_windows, _ = cpp_features(host, signal, case, tmp_path / "host", chunk=777, tag="h")
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(windows, host_windows, strict=True))
    per_hop = stats["ticks"] * (4_000_000 / stats["calibration_ticks_per_4M_instructions"]) / stats["frames"]
    print(f"\nCortex-M4 (QEMU): {len(frames)} frames, max MFCC error {err.max():.3g} "
          f"(host build {np.abs(host_frames - ref_frames).max():.3g}), {100 * equal:.3f} % of "
          f"{got.size} int8 inputs identical; MFCC {per_hop:,.0f} instructions per hop (qemu -icount)")


def test_m4_decisions_identical_to_python(elf: Path, tmp_path: Path) -> None:
    for seed in (0, 1, 2):
        case = random_decision_case(seed, steps=300)
        assert cpp_decisions(elf, case, tmp_path, tag=f"d{seed}") == case.expected()


def test_m4_protocol_lines_identical_to_host(elf: Path, host: Path, tmp_path: Path) -> None:
    (tmp_path / "m4").mkdir()
    run_harness(elf, ["proto", "lines.txt"], tmp_path / "m4")
    subprocess.run([str(host), "proto", "lines.txt"], cwd=tmp_path, check=True)
    assert (tmp_path / "m4" / "lines.txt").read_bytes() == (tmp_path / "lines.txt").read_bytes()


def test_m4_code_size(elf: Path) -> None:
    """Reports the portable code's size for the M4 (text of the three objects, -O2)."""
    objs = elf.parent / "objs"
    objs.mkdir(exist_ok=True)
    flags = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard", "-std=c++14", "-O2",
             "-fno-exceptions", "-fno-rtti", "-ffunction-sections", "-fdata-sections"]
    sketch = Path(__file__).resolve().parent.parent / "mcu_firmware" / "kws_nano"
    paths = []
    for name in ("feature_provider", "recognize_commands", "kws_protocol"):
        out = objs / f"{name}.o"
        subprocess.run(["arm-none-eabi-g++", *flags, "-c", str(sketch / f"{name}.cpp"), "-o", str(out)],
                       check=True)
        paths.append(out)
    size = subprocess.run(["arm-none-eabi-size", *map(str, paths), str(elf)], check=True,
                          capture_output=True, text=True).stdout
    print("\n" + size)
    rows = [line.split() for line in size.splitlines()[1:]]
    text = sum(int(r[0]) for r in rows[:3])
    bss = sum(int(r[2]) for r in rows[:3])
    assert 0 < text < 64 * 1024  # the portable part is small next to the model and TFLM
    assert bss == 0  # the classes own their buffers; no hidden globals
