"""``kws-edge flash``: export a model into the Nano sketch, build it and upload it with arduino-cli.

1. Generates the sketch's model files (``kws_edge.firmware.generate``) from the model's manifest and
   ``.tflite`` and prints the RAM/flash budget.
2. With arduino-cli installed (and the ``arduino:mbed_nano`` core and the Arduino_TensorFlowLite library),
   compiles the sketch, performs the 1200-baud touch that restarts the board into its bootloader, waits for
   the bootloader's port and uploads. Without them it says exactly what to install.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kws_edge.errors import KwsError

FQBN = "arduino:mbed_nano:nano33ble"
CORE = "arduino:mbed_nano"
LIBRARY = "Arduino_TensorFlowLite"
INSTALL_HELP = f"""\
arduino-cli is needed to build and upload the firmware. Install it and the board support once:

  curl -fsSL https://raw.githubusercontent.com/arduino/arduino-cli/master/install.sh | BINDIR=~/.local/bin sh
  arduino-cli core update-index
  arduino-cli core install {CORE}
  arduino-cli config set library.enable_unsafe_install true
  arduino-cli lib install --git-url https://github.com/tensorflow/tflite-micro-arduino-examples

(the last line installs the {LIBRARY} library). The sketch is in {{sketch}};
it can also be built in the Arduino IDE 2 (board "Arduino Nano 33 BLE") and uploaded from there."""


class FlashError(KwsError):
    """arduino-cli is missing, or building or uploading failed."""


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


def commands(cli: str, fqbn: str, sketch: Path, port: str) -> list[list[str]]:
    """The arduino-cli command lines for building and uploading (after the 1200-baud touch)."""
    return [[cli, "compile", "--fqbn", fqbn, str(sketch)],
            [cli, "upload", "--fqbn", fqbn, "--port", port, str(sketch)]]


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


def _run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
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
    cli = None
    if not args.export_only:  # check the tools before touching the sketch's files
        cli = shutil.which(args.arduino_cli)
        if cli is None:
            raise FlashError(INSTALL_HELP.format(sketch=sketch) + "\n(nothing was changed; "
                             f"'kws-edge flash --export-only --model {args.model}' only writes the model files)")
        if not _installed(cli, "core", CORE):
            raise FlashError(f"the {CORE} core is not installed: run 'arduino-cli core update-index && "
                             f"arduino-cli core install {CORE}'")
        if not _installed(cli, "lib", LIBRARY):
            raise FlashError(f"the {LIBRARY} library is not installed:\n" + INSTALL_HELP.format(sketch=sketch))
    for path in firmware.generate(manifest_path, sketch):
        print(f"wrote {path}")
    _print_budget(manifest_path)
    if cli is None:
        return 0
    compile_cmd, _ = commands(cli, args.fqbn, sketch, args.port)
    _run(compile_cmd)
    from serial.tools import list_ports

    before = {p.device for p in list_ports.comports()} - {args.port}
    touch_1200(args.port)
    port = wait_for_bootloader(before, args.port)
    _run(commands(cli, args.fqbn, sketch, port)[1])
    print(json.dumps({"flashed": str(manifest_path), "port": port}), file=sys.stderr)
    return 0
