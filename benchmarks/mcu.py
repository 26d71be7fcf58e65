"""MCU figures: model bytes, arena bytes, MACs and estimated inferences per second at 64 MHz.

Estimation rule: an int8 DS-CNN on a Cortex-M4F with CMSIS-NN kernels takes about 6 cycles per MAC
(MLPerf Tiny's DS-CNN: ~2.7 M MACs in ~100-180 ms at 120 MHz, i.e. 4.4-8 cycles per MAC), so
inferences/s at 64 MHz ~= 64e6 / (6 x MACs); the range uses 4.4 and 8 cycles per MAC. A model is
real-time on the Nano 33 BLE Sense when that exceeds the rate it must run at (one run per
``stride_frames`` feature hops). microWakeWord's figures are its published model file sizes and
tensor arena sizes, read from the model JSON files inside the installed pymicro-wakeword package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kws_edge import manifest as mf

CLOCK_HZ = 64_000_000
CYCLES_PER_MAC = (4.4, 6.0, 8.0)  # optimistic, rule, pessimistic


def estimate(macs: int) -> dict[str, float]:
    lo, mid, hi = (CLOCK_HZ / (c * macs) for c in reversed(CYCLES_PER_MAC))
    return {"inferences_per_s": mid, "range_low": lo, "range_high": hi}


def collect(manifests: list[Path], micro_models: Path | None) -> dict[str, Any]:
    """Figures for our shipped models (from their manifests) and microWakeWord's (from its JSON files)."""
    ours = []
    for path in manifests:
        try:
            m = mf.load(path)
        except Exception as exc:  # a broken manifest is reported, not fatal for the bench
            ours.append({"model": path.stem, "error": str(exc)})
            continue
        row: dict[str, Any] = {"model": m.name, "size_bytes": m.size_bytes, "arena_bytes": m.arena_bytes,
                               "macs": m.macs, "params": m.params,
                               "needed_per_s": m.features.sample_rate / (m.stride_frames * m.features.hop)}
        if m.macs:
            row.update(estimate(m.macs))
        ours.append(row)
    theirs = []
    for js in sorted(micro_models.glob("*.json")) if micro_models and micro_models.is_dir() else []:
        cfg = json.loads(js.read_text())
        tfl = js.parent / cfg.get("model", "")
        theirs.append({"model": js.stem, "size_bytes": tfl.stat().st_size if tfl.is_file() else None,
                       "arena_bytes": cfg.get("micro", {}).get("tensor_arena_size"),
                       "feature_step_ms": cfg.get("micro", {}).get("feature_step_size")})
    return {"rule": __doc__.split("\n\n")[1].replace("\n", " "), "kws_edge": ours, "micro_wake_word": theirs}


def table(fig: dict[str, Any]) -> list[str]:
    if not fig:
        return ["(no MCU figures collected)"]
    rows = ["| model | model bytes | arena bytes | MACs / inference | est. inferences/s at 64 MHz | "
            "needed/s |", "|---|---|---|---|---|---|"]
    for r in fig.get("kws_edge", []):
        if "error" in r:
            rows.append(f"| kws_edge {r['model']} | error: {r['error']} | | | | |")
            continue
        est = (f"{r['inferences_per_s']:.1f} ({r['range_low']:.1f}-{r['range_high']:.1f})"
               if "inferences_per_s" in r else "n/a (no MACs in manifest)")
        macs = f"{r['macs']:,}" if r["macs"] else "n/a"
        rows.append(f"| kws_edge {r['model']} | {r['size_bytes']:,} | {r['arena_bytes']:,} | {macs} | {est} | "
                    f"{r['needed_per_s']:.1f} |")
    for r in fig.get("micro_wake_word", []):
        size = f"{r['size_bytes']:,}" if r["size_bytes"] else "n/a"
        arena = f"{r['arena_bytes']:,}" if r["arena_bytes"] else "n/a"
        rows.append(f"| microWakeWord {r['model']} (published) | {size} | {arena} | not published | "
                    f"n/a (streaming) | {1000 / (r['feature_step_ms'] or 10) / 3:.1f} |")
    return [*rows, "", fig.get("rule", "")]
