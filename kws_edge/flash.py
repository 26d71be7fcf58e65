"""``kws-edge flash``: export a model into the Nano sketch, build it and upload it with arduino-cli.

1. Generates the sketch's model files (``kws_edge.firmware.generate``) from the model's manifest and
   ``.tflite`` and prints the RAM/flash budget.
2. With arduino-cli installed (and the ``arduino:mbed_nano`` core), turns a TensorFlow Lite Micro tree into
   an Arduino precompiled library for the Nano 33 BLE (``make -C mcu_firmware/host nano-lib``: CMSIS-NN
   kernels, softfp, C++17; cached per tree and toolchain), compiles the sketch against it with the flags
   the library was built with, performs the 1200-baud touch that restarts the board into its bootloader,
   waits for the bootloader's port and uploads. Without the tools it says exactly what to install.

Not the Arduino_TensorFlowLite library: its TFLM (February 2023) applies one multiplier to every output of
a CMSIS-NN FULLY_CONNECTED, so models with per-channel dense layers (TensorFlow's default) score wrongly.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from kws_edge.errors import KwsError

FQBN = "arduino:mbed_nano:nano33ble"
CORE = "arduino:mbed_nano"
REPO = Path(__file__).resolve().parent.parent
HOST_DIR = REPO / "mcu_firmware" / "host"  # its Makefile builds the library (target nano-lib)
DEFAULT_TFLM_DIR = REPO.parent / "shared" / "third_party" / "tflite-micro"
TFLM_REVISION = "90b983c2b3f1480642e040bbd2ddb37b998f3424"
TFLM_TREE_COMMAND = ("python3 tensorflow/lite/micro/tools/project_generation/create_tflm_tree.py \\\n"
                     "    --makefile_options=\"TARGET=cortex_m_generic OPTIMIZED_KERNEL_DIR=cmsis_nn "
                     "TARGET_ARCH=cortex-m4+fp\" OUT_DIR")
LIBRARY_NAME = "TensorFlowLite_kws_edge"  # folder and library.properties name (Makefile NANO_LIB)
# The core compiles C++ with -std=gnu++14 from its cxxflags.txt; compiler.cpp.extra_flags comes later on the
# command line (platform.txt recipe.cpp.o.pattern), so these win. They must match the library's build.
SKETCH_CXX_FLAGS = "-std=gnu++17 -DTF_LITE_STATIC_MEMORY -DCMSIS_NN"
BUILD_PROPERTY = f"compiler.cpp.extra_flags={SKETCH_CXX_FLAGS}"
BUILD_TOOLS = (("make", "make"), ("arm-none-eabi-g++", "gcc-arm-none-eabi"))  # (program, Debian package)
TFLM_HELP = f"""\
The firmware is built against TensorFlow Lite Micro {TFLM_REVISION}
with CMSIS-NN kernels, as TFLM's own tree generator makes it (it downloads the pinned flatbuffers, CMSIS-NN,
gemmlowp, ruy):

  git clone https://github.com/tensorflow/tflite-micro && cd tflite-micro && git checkout {TFLM_REVISION}
  {TFLM_TREE_COMMAND}

then pass --tflm-dir OUT_DIR (or set TFLM_DIR=OUT_DIR; the default is {DEFAULT_TFLM_DIR})."""
INSTALL_HELP = f"""\
arduino-cli is needed to build and upload the firmware. Install it and the board support once:

  curl -fsSL https://raw.githubusercontent.com/arduino/arduino-cli/master/install.sh | BINDIR=~/.local/bin sh
  arduino-cli core update-index
  arduino-cli core install {CORE}

No Arduino library is needed: kws-edge flash builds TensorFlow Lite Micro itself from a TFLM tree
(--tflm-dir DIR or TFLM_DIR) with make and arm-none-eabi-g++ (sudo apt-get install make gcc-arm-none-eabi),
once per tree (cached in ~/.cache/kws_edge/arduino), and compiles the sketch against it.
TFLM tree: {{tflm}}.
An Arduino_TensorFlowLite library installed earlier is not used: its 2023 TFLM scores per-channel dense
layers wrongly.
The sketch is in {{sketch}}."""
class FlashError(KwsError):
    """arduino-cli, the core, the TFLM tree or its build tools are missing, or building or uploading failed."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Export a model into the Nano 33 BLE Sense sketch (mcu_firmware/kws_nano), build it and\n"
                     "upload it with arduino-cli (1200-baud touch included); without arduino-cli, say what\n"
                     "to install.")
    p.add_argument("--port", "-p", metavar="DEVICE", help="the board's serial port, e.g. /dev/ttyACM0")
    p.add_argument("--model", "-m", default="hey_jarvis", metavar="NAME|PATH",
                   help="model to put on the board (default: hey_jarvis)")
    p.add_argument("--sketch", metavar="DIR", help="sketch folder (default: mcu_firmware/kws_nano of this checkout)")
    p.add_argument("--fqbn", default=FQBN, help=f"board (default: {FQBN})")
    p.add_argument("--export-only", action="store_true", help="generate the model files, do not build or upload")
    p.add_argument("--arduino-cli", default="arduino-cli", metavar="PATH", help="arduino-cli executable")
    p.add_argument("--tflm-dir", metavar="DIR",
                   help="TensorFlow Lite Micro tree made by its create_tflm_tree.py (default: $TFLM_DIR, else "
                        "../shared/third_party/tflite-micro next to this checkout)")


def commands(cli: str, fqbn: str, sketch: Path, port: str, library: Path) -> list[list[str]]:
    """The arduino-cli command lines for building and uploading (after the 1200-baud touch).

    ``--library`` makes the precompiled TFLM library win over any other providing TensorFlowLite.h; the
    build property raises the core's C++14 to C++17 and sets the defines the library was built with."""
    return [[cli, "compile", "--fqbn", fqbn, "--library", str(library), "--build-property", BUILD_PROPERTY,
             str(sketch)],
            [cli, "upload", "--fqbn", fqbn, "--port", port, str(sketch)]]


def find_tflm_dir(option: str | None) -> Path:
    """The TFLM tree: ``--tflm-dir``, else ``$TFLM_DIR``, else the shared tree next to the checkout."""
    if option:
        path, source = Path(option), "--tflm-dir"
    elif os.environ.get("TFLM_DIR"):
        path, source = Path(os.environ["TFLM_DIR"]), "TFLM_DIR"
    else:
        path, source = DEFAULT_TFLM_DIR, "default TFLM tree (no --tflm-dir, no TFLM_DIR)"
    expected = ("tensorflow/lite/micro/micro_interpreter.h", "third_party/cmsis_nn/Source",
                "third_party/flatbuffers/include")
    missing = [e for e in expected if not (path / e).exists()]
    if missing:
        what = "does not exist" if not path.exists() else f"is not a TFLM tree (no {', '.join(missing)})"
        raise FlashError(f"{source} {path} {what}.\n{TFLM_HELP}")
    return path.resolve()


def cache_dir() -> Path:
    """Where built libraries are kept: $XDG_CACHE_HOME/kws_edge/arduino (default ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kws_edge" / "arduino"


def library_key(tflm: Path) -> str:
    """What the built library depends on: every file of the tree, the Makefile and the umbrella header it
    ships, and the compiler's version."""
    h = hashlib.sha256()
    files = [(str(p.relative_to(tflm)), p) for p in sorted(tflm.rglob("*")) if p.is_file()]
    files += [(f"kws_edge:{p.name}", p) for p in (HOST_DIR / "Makefile", HOST_DIR / "nano" / "TensorFlowLite.h")]
    for name, path in files:
        data = path.read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode() + data)
    version = subprocess.run(["arm-none-eabi-g++", "--version"], capture_output=True, text=True).stdout
    h.update(version.encode())
    return h.hexdigest()[:16]


def build_library(tflm: Path, cache: Path, jobs: int | None = None, objects: Path | None = None) -> Path:
    """The Arduino precompiled library of ``tflm`` for the Nano 33 BLE (``make nano-lib``), cached under
    ``cache``; return its folder (what ``arduino-cli compile --library`` takes). ``objects``: a TFLM build
    folder to reuse (``make tflm`` with the same flags, e.g. the tests' QEMU build) instead of a fresh one."""
    key = library_key(tflm)
    final = cache / key / LIBRARY_NAME
    if (final / "library.properties").is_file():
        print(f"TFLM library: {final} (cached, built from {tflm})", flush=True)
        return final
    work = cache / f"{key}.building-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    make = ["make", "-C", str(HOST_DIR), f"TFLM_DIR={tflm}"]
    count = len(subprocess.run([*make, "-s", "tflm-sources"], capture_output=True, text=True).stdout.split())
    print(f"TFLM library: compiling {count} files of {tflm} for the Nano 33 BLE (Cortex-M4, softfp, gnu++17, "
          f"CMSIS-NN) into {final}; once per TFLM tree: minutes on a PC, longer on a Raspberry Pi", flush=True)
    log = work / "build.log"
    cmd = [*make, f"-j{jobs or os.cpu_count() or 1}", f"NANO_OBJ={objects or work / 'obj'}",
           f"NANO_LIB={work / LIBRARY_NAME}", "nano-lib"]
    try:
        with open(log, "w") as out:
            rc = _make_with_progress(cmd, out, count)
    except BaseException:  # interrupted: leave no half-built folder behind
        shutil.rmtree(work, ignore_errors=True)
        raise
    if rc != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise FlashError(f"building the TFLM library failed (make exit code {rc}):\n{tail}\nfull log: {log}")
    final.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # another flash may have finished the same library first
        (work / LIBRARY_NAME).rename(final)
        log.rename(final.parent / "build.log")
    shutil.rmtree(work, ignore_errors=True)
    if not (final / "library.properties").is_file():
        raise FlashError(f"{final}: could not move the built library there (is {cache} writable?)")
    print(f"TFLM library: built {final}", flush=True)
    return final


def _make_with_progress(cmd: list[str], out: TextIO, total: int) -> int:
    """Run make, its output to ``out``, printing the share of files compiled every 10 %."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        try:
            done, shown = 0, 0
            for line in proc.stdout or ():
                out.write(line)
                if line.startswith("arm-none-eabi-") and " -c " in line:
                    done += 1
                    if total and done * 10 // total > shown:
                        shown = done * 10 // total
                        print(f"  {100 * done // total:3d} % ({done}/{total} files)", flush=True)
        except BaseException:
            proc.kill()
            raise
    return proc.returncode


def touch_1200(port: str) -> None:
    """Open the port at 1200 baud and close it with DTR low: the Nano's signal to enter its bootloader."""
    import serial

    try:
        s = serial.Serial()
        s.port = port
        s.baudrate = 1200
        s.open()
        # Some ttys (a pty) have no modem lines; closing drops DTR anyway (HUPCL).
        with contextlib.suppress(serial.SerialException, OSError):
            s.dtr = False
        s.close()
    except (serial.SerialException, OSError) as exc:
        raise FlashError(f"{port}: cannot open the port for the 1200-baud touch ({exc}); is the board "
                         "plugged in, and are you in the 'dialout' group?") from None


def wait_for_bootloader(before: set[str], port: str, timeout_s: float = 10.0) -> str:
    """After the touch: the port that appeared (the bootloader re-enumerates), else the same port back."""
    from serial.tools import list_ports

    deadline = time.monotonic() + timeout_s
    gone = False
    now: set[str] = set()
    while time.monotonic() < deadline:
        now = {p.device for p in list_ports.comports()}
        new = sorted(now - before - {port})
        if new:
            return new[0]
        if port not in now:
            gone = True
        elif gone:
            return port  # re-enumerated under the same name
        time.sleep(0.1)
    if port in now:
        return port  # never went away: let arduino-cli try on it
    raise FlashError(f"no serial port came back within {timeout_s:.0f} s after the 1200-baud touch on {port}; "
                     "double-press the board's reset button to enter the bootloader and try again")


def _installed(cli: str, what: str, name: str) -> bool:
    res = subprocess.run([cli, what, "list", "--format", "json"], capture_output=True, text=True)
    return res.returncode == 0 and name in res.stdout


def _check_tools(args: argparse.Namespace, sketch: Path) -> tuple[str, Path]:
    """arduino-cli, the core, the TFLM tree and the tools that build it: raise with what to do if one is
    missing; return arduino-cli's path and the tree."""
    cli = shutil.which(args.arduino_cli)
    if cli is None:
        try:
            tflm = f"found: {find_tflm_dir(args.tflm_dir)}"
        except FlashError:
            tflm = "none found yet, see below"
        raise FlashError(INSTALL_HELP.format(sketch=sketch, tflm=tflm) + "\n(nothing was changed; "
                         f"'kws-edge flash --export-only --model {args.model}' only writes the model files)"
                         + ("" if tflm.startswith("found") else "\n\n" + TFLM_HELP))
    if not _installed(cli, "core", CORE):
        raise FlashError(f"the {CORE} core is not installed: run 'arduino-cli core update-index && "
                         f"arduino-cli core install {CORE}'")
    tflm_dir = find_tflm_dir(args.tflm_dir)
    for program, package in BUILD_TOOLS:
        if shutil.which(program) is None:
            raise FlashError(f"{program} is needed to build TensorFlow Lite Micro for the board: "
                             f"sudo apt-get install {package}")
    return cli, tflm_dir


def _run(cmd: list[str]) -> None:
    print("$ " + shlex.join(cmd), flush=True)
    res = subprocess.run(cmd)
    if res.returncode != 0:
        raise FlashError(f"'{' '.join(cmd[:2])}' failed with exit code {res.returncode} (output above)")


def _print_budget(manifest_path: Path) -> None:
    from kws_edge import firmware
    from kws_edge import manifest as mf

    m = mf.load(manifest_path)
    # Portable code and buffers measured on the Cortex-M4 build (tests/test_firmware_qemu.py):
    # ~7 KB code, ~43 KB static buffers; 175 k instructions per 20 ms hop for the MFCC.
    b = firmware.budget(m, portable_flash=7_000, portable_ram=43_000, feature_cycles_per_hop=175_000)
    print(f"model {m.name}: {m.size_bytes / 1024:.1f} KB, arena {m.arena_bytes / 1024:.1f} KB; estimated "
          f"flash {b.flash_bytes / 1024:.0f} KB ({100 * b.flash_headroom:.0f} % free), "
          f"RAM {b.ram_bytes / 1024:.0f} KB ({100 * b.ram_headroom:.0f} % free), "
          f"inference ~{b.inference_ms:.0f} ms, {b.runs_per_s:.1f} model runs/s")


def main(args: argparse.Namespace) -> int:
    """Export, then build and upload when arduino-cli is there."""
    from kws_edge import firmware
    from kws_edge.model import resolve_manifest

    sketch = Path(args.sketch) if args.sketch else firmware.SKETCH_DIR
    if not args.export_only and not args.port:
        raise FlashError("--port: needed to upload (e.g. --port /dev/ttyACM0), or use --export-only")
    manifest_path = resolve_manifest(args.model)
    cli, tflm = None, None
    if not args.export_only:  # check the tools before touching the sketch's files
        cli, tflm = _check_tools(args, sketch)
    for path in firmware.generate(manifest_path, sketch):
        print(f"wrote {path}")
    _print_budget(manifest_path)
    if cli is None or tflm is None:
        return 0
    library = build_library(tflm, cache_dir())
    compile_cmd, _ = commands(cli, args.fqbn, sketch, args.port, library)
    _run(compile_cmd)
    from serial.tools import list_ports

    before = {p.device for p in list_ports.comports()} - {args.port}
    touch_1200(args.port)
    port = wait_for_bootloader(before, args.port)
    _run(commands(cli, args.fqbn, sketch, port, library)[1])
    print(json.dumps({"flashed": str(manifest_path), "port": port}), file=sys.stderr)
    return 0
