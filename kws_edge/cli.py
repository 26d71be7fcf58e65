"""The ``kws-edge`` command line: one entry point, a sub-command per job.

Each sub-command lives in the module that does the work and exposes two functions:
``add_arguments(parser)`` (must not import heavy dependencies such as TensorFlow) and
``main(args) -> int``. This file only wires them up, prints user errors without a traceback, and turns
them into a non-zero exit code.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import importlib.util
import json
import logging
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

from kws_edge import __version__
from kws_edge.errors import KwsError

# (command, module, one-line help). A module that is absent (not yet built) just leaves its command out.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("detect", "kws_edge.cli", "detect keywords in a WAV file (or raw PCM on stdin)"),
    ("listen", "kws_edge.listen", "listen to a microphone with a live score bar per keyword"),
    ("devices", "kws_edge.cli", "list audio input devices"),
    ("models", "kws_edge.cli", "list installed models with their manifests' key facts"),
    ("run", "kws_edge.daemon", "run the service: microphone/serial -> detections -> MQTT"),
    ("wyoming", "kws_edge.wyoming_service", "serve the models as a Wyoming wake-word service (Home Assistant Assist)"),
    ("bridge", "kws_edge.bridge", "read detections from a Nano 33 BLE Sense over serial and publish them"),
    ("flash", "kws_edge.flash", "export a model into the Nano sketch, build it and upload it"),
    ("train", "training.cli", "synthesize keyword speech, train, quantize, evaluate and export a model"),
    ("eval", "training.cli", "evaluate a model: accuracy, FRR per SNR, false accepts per hour, DET curve"),
    ("export", "training.cli", "export a trained model: .tflite, manifest and firmware C array"),
    ("bench", "benchmarks.cli", "benchmark kws_edge against open wake-word engines on the same audio"),
)


# Optional third-party packages a command needs, and the extra that installs them.
OPTIONAL_DEPS = {"wyoming": "pi", "zeroconf": "pi"}


def _parse_threshold(value: str) -> tuple[str, float]:
    kw, sep, num = value.partition("=")
    try:
        if not sep or not kw:
            raise ValueError
        return kw, float(num)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEYWORD=VALUE (e.g. hey_jarvis=0.8), got {value!r}") \
            from None


def add_detect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE.wav",
                   help="PCM WAV file (any rate and channel count; converted to the model's rate), "
                        "or '-' for raw signed 16-bit little-endian mono PCM at 16 kHz on stdin")
    p.add_argument("--model", "-m", action="append", metavar="NAME|PATH",
                   help="model name (see 'kws-edge models') or path to its .tflite/.json; repeat for "
                        "several models; default: every installed model")
    p.add_argument("--threshold", "-t", action="append", type=_parse_threshold, default=[],
                   metavar="KEYWORD=VALUE", help="override a keyword's detection threshold (0..1)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per line: {"keyword", "score", "t", "model"}; t is seconds '
                        "from the start of the file")
    p.add_argument("--chunk", type=int, default=None, metavar="SAMPLES",
                   help="samples fed per step; results do not depend on it (default: 16000, 1 s at "
                        "16 kHz, for a file: fewer steps cost less Python overhead; 3200, 200 ms, "
                        "for stdin, where a live stream should not wait for a second of audio)")


def cmd_detect(args: argparse.Namespace) -> int:
    from kws_edge import audio
    from kws_edge.model import load_models
    from kws_edge.pipeline import Detector

    step = args.chunk if args.chunk is not None else (3200 if args.file == "-" else 16000)
    if step <= 0:
        raise KwsError(f"--chunk: expected a positive number of samples, got {step}")
    runners = load_models(args.model)
    detector = Detector(runners, dict(args.threshold))
    _keep_freed_memory()
    if args.file == "-":
        source = audio.stdin_chunks(sys.stdin.buffer, step)
    else:
        source = audio.wav_chunks(args.file, detector.sample_rate, step)  # flat memory, any length
    count = 0
    for chunk in source:
        for det in detector.process(chunk):
            _print_detection(det, args.json)
            count += 1
    for det in detector.flush():
        _print_detection(det, args.json)
        count += 1
    if not args.json:
        print(f"{count} detection(s)", file=sys.stderr)
    return 0


def _keep_freed_memory() -> None:
    """Let glibc keep a step's freed temporaries for the next step.

    By default glibc maps every block over 128 KB afresh and hands freed memory at the heap's top back to
    the kernel, so the same ~1 MB of MFCC temporaries per 1 s step cost page faults every step (system
    CPU up by a sixth of detect's whole time). Fixed thresholds of a few MB keep them in the heap; the
    peak RSS stays flat. Without glibc (or its mallopt) nothing changes.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 4 << 20)
    mallopt(m_trim_threshold, 8 << 20)


def _print_detection(det: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(det.to_json_dict()), flush=True)
    else:
        print(f"{det.t:8.2f}s  {det.keyword:<16} score {det.score:.2f}  ({det.model})", flush=True)


def cmd_devices(args: argparse.Namespace) -> int:
    from kws_edge.audio import list_input_devices

    devices = list_input_devices()
    if not devices:
        print("no input devices found (no microphone, or PortAudio sees no sound server)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(devices, indent=2))
        return 0
    for d in devices:
        print(f"{d['index']:>3}  {d['name']}  ({d['channels']} ch, {d['default_samplerate']:.0f} Hz, "
              f"{d['hostapi']})")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from kws_edge import manifest as mf
    from kws_edge.features import FeatureParams
    from kws_edge.model import installed_manifests, model_dirs

    paths = installed_manifests()
    if not paths:
        print("no models installed; looked in: " + ", ".join(str(d) for d in model_dirs()), file=sys.stderr)
        return 1
    rows = []
    for path in paths:
        try:
            m = mf.load(path)
        except KwsError as exc:
            print(f"warning: {exc}", file=sys.stderr)
            continue
        rows.append(m)
        if args.json:
            continue
        metrics = m.metrics or {}
        facts = [f"{m.size_bytes / 1024:.1f} KB", f"arena {m.arena_bytes / 1024:.1f} KB",
                 f"{m.window_frames}x{m.features.numcep} "
                 + ("MFCC" if isinstance(m.features, FeatureParams) else "speech embedding")]
        if m.params:
            facts.append(f"{m.params / 1000:.1f} K params")
        for key in ("accuracy_int8", "frr_at_target_fa"):
            if key in metrics:
                facts.append(f"{key} {metrics[key]}")
        print(f"{m.name} ({m.kind}): {', '.join(m.keywords)}")
        print(f"    {', '.join(facts)}")
        print(f"    thresholds {m.decision.thresholds}  sha256 {m.sha256[:12]}  {path}")
    if args.json:
        print(json.dumps([m.to_dict() for m in rows], indent=2))
    return 0


def _own_arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name == "detect":
        add_detect_arguments(p)
    elif name in ("devices", "models"):
        p.add_argument("--json", action="store_true", help="machine-readable output")


_OWN = {"detect": cmd_detect, "devices": cmd_devices, "models": cmd_models}


def _missing_dependency(package: str, args: argparse.Namespace) -> int:
    raise KwsError(f"this command needs the {package!r} package: pip install 'kws-edge[{OPTIONAL_DEPS[package]}]'")


def _module_present(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:
        return False


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI. With ``command`` given, only that command's module is imported; the others are
    listed with their one-line help, so ``kws-edge detect`` does not pay at start-up for asyncio and
    wyoming (the Wyoming service) or the training code."""
    parser = argparse.ArgumentParser(
        prog="kws-edge",
        description="Private, on-device keyword spotting: audio never leaves the device, only detections "
                    "do (MQTT). Run 'kws-edge COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"kws-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        if module_name == __name__:
            p = sub.add_parser(name, help=help_text, description=help_text)
            _own_arguments(name, p)
            p.set_defaults(func=_OWN[name])
            continue
        if command is not None and name != command:
            if _module_present(module_name):
                sub.add_parser(name, help=help_text, description=help_text)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                continue  # that part of kws-edge is not installed
            top = (exc.name or "").split(".")[0]
            if top in OPTIONAL_DEPS:  # keep the command; running it says what to install
                p = sub.add_parser(name, help=help_text, description=help_text)
                p.set_defaults(func=partial(_missing_dependency, top))
                continue
            raise
        adder = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
        runner = getattr(module, f"{name}_main", None) or module.main
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        adder(p)
        p.set_defaults(func=runner)
    return parser


# Commands that stream audio through the pipeline: each MFCC step is a small matrix product, which
# OpenBLAS would spread over every core, spinning threads against the model and the rest of the
# machine (on 2 busy cores a 1 s step cost 2.4x the CPU of one thread). One thread is faster here.
_RUNTIME_COMMANDS = {"detect", "run", "listen", "wyoming", "bridge"}


def _one_blas_thread() -> None:
    import numpy  # noqa: F401  (threadpoolctl limits only the BLAS libraries already loaded)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The top-level options take no values, so the first other word names the command.
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.command in _RUNTIME_COMMANDS:
        _one_blas_thread()
    try:
        return int(args.func(args) or 0)
    except KwsError as exc:
        print(f"kws-edge {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
