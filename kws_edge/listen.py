"""``kws-edge listen``: the microphone pipeline in a terminal, with a live score bar per keyword."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from typing import TextIO

from kws_edge.cli import _parse_threshold

BAR = 30  # characters per score bar


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", "-d", metavar="NAME|INDEX",
                   help="input device (see 'kws-edge devices'); default: the system's default input")
    p.add_argument("--model", "-m", action="append", metavar="NAME|PATH",
                   help="model name or path; repeat for several; default: every installed model")
    p.add_argument("--threshold", "-t", action="append", type=_parse_threshold, default=[],
                   metavar="KEYWORD=VALUE", help="override a keyword's threshold (0..1) to tune it live")
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this many seconds (0: until Ctrl-C)")
    p.add_argument("--no-bars", action="store_true", help="print detections only (default when not a terminal)")


def render_bars(scores: dict[str, float], thresholds: dict[str, float], width: int = BAR) -> list[str]:
    """One line per keyword: a bar of the score with a '|' at the threshold."""
    name_w = max((len(k) for k in scores), default=0)
    lines = []
    for kw, score in scores.items():
        filled = round(max(0.0, min(1.0, score)) * width)
        mark = min(width - 1, round(thresholds.get(kw, 1.0) * width))
        cells = ["#" if i < filled else "." for i in range(width)]
        cells[mark] = "|"
        hot = score >= thresholds.get(kw, 1.0)
        lines.append(f"{kw:<{name_w}} [{''.join(cells)}] {score:4.2f} / {thresholds.get(kw, 1.0):.2f}"
                     f"{'  <' if hot else ''}")
    return lines


def main(args: argparse.Namespace) -> int:
    from kws_edge.audio import Microphone
    from kws_edge.model import load_models
    from kws_edge.pipeline import Detector

    detector = Detector(load_models(args.model), dict(args.threshold))
    out: TextIO = sys.stdout
    bars = not args.no_bars and out.isatty()
    thresholds = detector.thresholds
    drawn = 0
    with Microphone(args.device, detector.sample_rate) as mic:
        print(f"listening on {mic.device_name!r} ({mic.native_rate} Hz); Ctrl-C to stop", file=sys.stderr)
        start = last_draw = time.monotonic()
        while not args.seconds or time.monotonic() - start < args.seconds:
            chunk = mic.read(timeout=2.0)
            if chunk is None:
                continue
            detections = detector.process(chunk)
            redraw = bars and bool(detections or not drawn or time.monotonic() - last_draw > 0.1)
            if redraw and drawn:
                out.write(f"\x1b[{drawn}F\x1b[J")  # move up over the old bars and clear them
                drawn = 0
            for det in detections:
                out.write(f"{time.strftime('%H:%M:%S')}  {det.keyword:<16} score {det.score:.2f}  "
                          f"({det.model})\n")
            if redraw:
                width = max(10, min(BAR, shutil.get_terminal_size().columns - 40))
                lines = render_bars(detector.latest_scores(), thresholds, width)
                if mic.dropped_chunks:
                    lines.append(f"dropped {mic.dropped_chunks} audio chunk(s): processing fell behind")
                out.write("\n".join(lines) + "\n")
                drawn = len(lines)
                last_draw = time.monotonic()
            out.flush()
    return 0
