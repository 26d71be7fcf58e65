"""MCU figures: model bytes, arena bytes, MACs and estimated inferences per second at 64 MHz.

Estimation rule: an int8 DS-CNN on a Cortex-M4F with CMSIS-NN kernels takes about 6 cycles per MAC
(MLPerf Tiny's DS-CNN: ~2.7 M MACs in ~100-180 ms at 120 MHz, i.e. 4.4-8 cycles per MAC), so
inferences/s at 64 MHz ~= 64e6 / (6 x MACs); the range uses 4.4 and 8 cycles per MAC. A model is
real-time on the Nano 33 BLE Sense when that exceeds the rate it must run at (one run per
``stride_frames`` feature hops). For models of a few ten thousand MACs, fixed per-op overheads make
the estimate optimistic. microWakeWord's model and arena sizes are its published figures, read from the
model JSON files inside the installed pymicro-wakeword package; its MACs are counted by this module
from the ``.tflite`` ops (the same count as for ours).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kws_edge import manifest as mf
from kws_edge.features import FeatureParams

CLOCK_HZ = 64_000_000
CYCLES_PER_MAC = (4.4, 6.0, 8.0)  # optimistic, rule, pessimistic
MWW_STRIDE = 3  # microWakeWord models take 3 new feature frames per invocation (their input is 1x3x40)


def estimate(macs: int) -> dict[str, float]:
    lo, mid, hi = (CLOCK_HZ / (c * macs) for c in reversed(CYCLES_PER_MAC))
    return {"inferences_per_s": mid, "range_low": lo, "range_high": hi}


def tflite_macs(path: Path) -> int | None:
    """MACs of one invocation, counted from the model's CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED ops.

    Loaded with LiteRT's reference kernels (no delegate, so no op is hidden inside a delegate node);
    None when LiteRT is not installed or cannot load the model.
    """
    try:
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        it = Interpreter(model_path=str(path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        it.allocate_tensors()
        shapes = {t["index"]: t["shape"] for t in it.get_tensor_details()}
        ops = it._get_ops_details()
    except (ImportError, ValueError, RuntimeError):
        return None
    macs = 0
    for op in ops:
        if len(op["outputs"]) == 0 or op["op_name"] not in _KERNEL_MACS:
            continue
        out = int(np.prod(shapes[op["outputs"][0]]))
        macs += out * _KERNEL_MACS[op["op_name"]](shapes[op["inputs"][1]])
    return macs


_KERNEL_MACS = {  # weights shape -> MACs per output element
    "CONV_2D": lambda w: int(w[1] * w[2] * w[3]),  # [out_c, kh, kw, in_c]
    "DEPTHWISE_CONV_2D": lambda w: int(w[1] * w[2]),  # [1, kh, kw, out_c]
    "FULLY_CONNECTED": lambda w: int(w[1]),  # [out, in]
}


MEASURED = Path(__file__).resolve().parent / "results" / "firmware_m4.json"
MEASURE_COMMAND = ".venv/bin/python mcu_firmware/host/measure.py --firmware --out benchmarks/results/firmware_m4.json"


def measured_figures(path: Path | None) -> dict[str, dict[str, Any]]:
    """Per-model figures of the sketch with TFLite Micro on the Cortex-M4 under QEMU, keyed by model sha256
    (a measurement of another export of the model does not count), from ``MEASURE_COMMAND``'s file."""
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {m["sha256"]: m for m in data.get("models", {}).values() if isinstance(m, dict) and "sha256" in m}
    except (ValueError, TypeError, KeyError):
        return {}


def collect(manifests: list[Path], micro_models: Path | None, measured: Path | None = MEASURED) -> dict[str, Any]:
    """Figures for our shipped models (from their manifests, and measured on the M4 where a results file
    has them) and microWakeWord's (from its JSON files)."""
    m4 = measured_figures(measured)
    ours = []
    for path in manifests:
        try:
            m = mf.load(path)
        except Exception as exc:  # a broken manifest is reported, not fatal for the bench
            ours.append({"model": path.stem, "error": str(exc)})
            continue
        if not isinstance(m.features, FeatureParams):
            ours.append({"model": m.name, "pi_only": f"{m.features.kind} front-end: runs on the Pi only"})
            continue
        row: dict[str, Any] = {"model": m.name, "size_bytes": m.size_bytes, "arena_bytes": m.arena_bytes,
                               "macs": m.macs, "params": m.params,
                               "needed_per_s": m.features.sample_rate / (m.stride_frames * m.features.hop)}
        if m.macs:
            row.update(estimate(m.macs))
        if m.sha256 in m4:
            got = m4[m.sha256]
            row["m4"] = {k: got.get(k) for k in ("instructions_per_inference", "instructions_per_audio_second",
                                                  "arena_used_bytes")}
        ours.append(row)
    theirs = []
    for js in sorted(micro_models.glob("*.json")) if micro_models and micro_models.is_dir() else []:
        cfg = json.loads(js.read_text())
        tfl = js.parent / cfg.get("model", "")
        step_ms = cfg.get("micro", {}).get("feature_step_size") or 10
        row = {"model": js.stem, "size_bytes": tfl.stat().st_size if tfl.is_file() else None,
               "arena_bytes": cfg.get("micro", {}).get("tensor_arena_size"), "feature_step_ms": step_ms,
               "macs": tflite_macs(tfl) if tfl.is_file() else None,
               "needed_per_s": 1000 / (step_ms * MWW_STRIDE)}
        if row["macs"]:
            row.update(estimate(row["macs"]))
        theirs.append(row)
    return {"rule": __doc__.split("\n\n")[1].replace("\n", " "), "kws_edge": ours, "micro_wake_word": theirs,
            "measured_command": MEASURE_COMMAND}


def _row(title: str, r: dict[str, Any]) -> str:
    est = (f"{r['inferences_per_s']:.1f} ({r['range_low']:.1f}-{r['range_high']:.1f})"
           if r.get("inferences_per_s") else "n/a (no MACs)")
    macs = f"{r['macs']:,}" if r.get("macs") else "n/a"
    per_s = f"{r['macs'] * r['needed_per_s'] / 1e6:.2f}" if r.get("macs") else "n/a"
    size = f"{r['size_bytes']:,}" if r.get("size_bytes") else "n/a"
    arena = f"{r['arena_bytes']:,}" if r.get("arena_bytes") else "n/a"
    return f"| {title} | {size} | {arena} | {macs} | {r['needed_per_s']:.1f} | {per_s} | {est} |"


def table(fig: dict[str, Any]) -> list[str]:
    """The MCU table in markdown, our models first, then microWakeWord's."""
    if not fig:
        return ["(no MCU figures collected)"]
    rows = ["| model | model bytes | arena bytes | MACs / inference | inferences needed/s | M MACs per "
            "audio second | est. inferences/s at 64 MHz |", "|---|---|---|---|---|---|---|"]
    for r in fig.get("kws_edge", []):
        if "error" in r or "pi_only" in r:
            rows.append(f"| kws_edge {r['model']} | {r.get('pi_only') or 'error: ' + r['error']} | | | | | |")
        else:
            rows.append(_row(f"kws_edge {r['model']}", r))
    rows += [_row(f"microWakeWord {r['model']} (published sizes)", r) for r in fig.get("micro_wake_word", [])]
    rows += ["", fig.get("rule", "")]
    measured = [r for r in fig.get("kws_edge", []) if r.get("m4")]
    if measured:
        rows += ["", "Measured: the sketch with TensorFlow Lite Micro (CMSIS-NN) on a Cortex-M4 under QEMU "
                 f"(`{fig.get('measured_command', MEASURE_COMMAND)}`; instructions, about 1.2 cycles each):", "",
                 "| model | instructions / inference | M instructions per audio second (whole loop) | "
                 "x a 64 MHz M4 at 1.2 cycles/instruction | arena used on the M4 |", "|---|---|---|---|---|"]
        for r in measured:
            f = r["m4"]
            per_s = f["instructions_per_audio_second"] or 0
            rows.append(f"| kws_edge {r['model']} | {f['instructions_per_inference'] / 1e6:.2f} M | "
                        f"{per_s / 1e6:.1f} | {per_s * 1.2 / CLOCK_HZ:.2f} | {f['arena_used_bytes']:,} |")
    return rows
