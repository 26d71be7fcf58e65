"""``kws-edge train`` and ``kws-edge eval`` end to end: the functions the CLI calls."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from kws_edge.decision import DecisionParams
from kws_edge.errors import ConfigError, ModelError
from kws_edge.model import load_model
from training import evaluate as ev
from training import prune
from training.export import ExportSpec, export_model, update_manifest
from training.pipeline import Prepared, eval_streams, prepare, write_json
from training.recipe import Recipe

log = logging.getLogger("kws_edge.training")


def train_recipe(recipe: Recipe, out_dir: Path, cache_dir: Path, run_dir: Path, workers: int,
                 report_dir: Path | None = None, verbose: bool = True) -> dict[str, Any]:
    """Run the whole recipe; write the model to ``out_dir`` and its report to ``report_dir``."""
    from training.train import representative_windows, train_model

    t0 = time.monotonic()
    prep = prepare(recipe, cache_dir, workers)
    log.info("data ready in %.0f s", prep.seconds)
    t1 = time.monotonic()
    negatives = [c.samples for c in prep.clips.get("train", []) if c.label == "_unknown_"]
    model, history = train_model(recipe, prep.features, verbose=verbose, negatives=negatives, bank=prep.bank)
    train_s = time.monotonic() - t1
    d = recipe.decision
    spec = ExportSpec(
        name=recipe.name, kind=recipe.kind, labels=recipe.labels, keywords=recipe.keyword_labels,
        thresholds={k: 0.5 for k in recipe.keyword_labels}, stride_frames=d.stride_frames,
        smoothing_ms=d.smoothing_ms, min_hits=d.min_hits, refractory_ms=d.refractory_ms,
        description=recipe.description, features=recipe.model.front_end(),
    )
    rep = representative_windows(prep.features["train"], 500, recipe.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / f"{recipe.name}.keras")
    training = {"recipe": recipe.to_dict(), "recipe_file": recipe.path, "history": history}
    stream = recipe.model.stream_config() if recipe.model.family == "stream" else None
    manifest = export_model(model, spec, rep, out_dir, training=training,
                            c_array_dir=run_dir / "firmware" / recipe.name, stream=stream)
    log.info("exported %s", manifest)
    timings = {"data_s": round(prep.seconds, 1), "train_s": round(train_s, 1)}
    report = evaluate_recipe(manifest, recipe, prep, report_dir or out_dir / "reports" / recipe.name,
                             timings, t0)
    return report


def evaluate_recipe(manifest_path: Path, recipe: Recipe, prep: Prepared | None, report_dir: Path,
                    timings: dict[str, float] | None = None, t_start: float | None = None,
                    cache_dir: Path | None = None, workers: int = 1, update: bool = True,
                    realvoice_dir: Path | None = None) -> dict[str, Any]:
    """Evaluate an exported model on the recipe's held-out data and on real voices (``realvoice_dir``,
    default: :func:`training.realvoice.realvoice_dir`; skipped with a warning when missing); write
    report.json and plots."""
    from training import plots

    t0 = time.monotonic()
    t_start = t0 if t_start is None else t_start
    if prep is None:
        prep = prepare(recipe, cache_dir or Path("cache"), workers)
    runner = load_model(manifest_path)
    if list(runner.manifest.labels) != list(recipe.labels):
        raise ModelError(f"{manifest_path}: labels {list(runner.manifest.labels)} do not match the recipe's "
                         f"{list(recipe.labels)}")
    m = runner.manifest
    float_path = m.model_path.with_name(f"{m.name}.float.tflite")
    clip: dict[str, Any] = {}
    for split in ("test", "test_clean"):
        fs = prep.features[split]
        clip[split] = {"int8": ev.clip_metrics(m.labels, fs.y, ev.int8_predictions(runner, fs.x))}
        if float_path.exists():
            clip[split]["float"] = ev.clip_metrics(m.labels, fs.y, ev.float_predictions(float_path, fs.x))
    log.info("clip accuracy: %s", {s: {k: v["accuracy"] for k, v in c.items()} for s, c in clip.items()})
    sets = eval_streams(recipe, prep)
    d0 = DecisionParams({k: 0.5 for k in m.keywords}, recipe.decision.smoothing_ms, recipe.decision.min_hits,
                        recipe.decision.refractory_ms)
    det, tried = ev.choose_decision(runner, sets, d0, recipe.eval.target_fa_per_hour)
    thr = det["chosen"]["threshold"]
    dd = det["decision"]
    params = DecisionParams({k: thr for k in m.keywords}, dd["smoothing_ms"], dd["min_hits"], d0.refractory_ms)
    half = "report" if recipe.train.select_on == "real" else None  # the selection half chose the epoch
    real = real_voice_check(runner, params, realvoice_dir, half)
    raised = _real_thresholds(real, recipe.eval.real_target_fa_per_hour, list(m.keywords)) \
        if recipe.eval.real_threshold else None
    thresholds = {k: thr for k in m.keywords}
    per_keyword = len(m.keywords) > 1
    from_real = raised is not None and (any(v > thr for v in raised.values()) or per_keyword
                                        or recipe.eval.threshold_from == "real")
    if raised is not None and from_real:
        keep_synthetic = recipe.eval.threshold_from != "real"  # "both": the stricter of the two, per keyword
        synthetic = {k: thr for k in m.keywords}
        if keep_synthetic and per_keyword:  # each keyword its share of the synthetic budget too
            synthetic = ev.synthetic_thresholds(runner, sets, params, recipe.eval.target_fa_per_hour)
        thresholds = {k: max(synthetic[k], raised[k]) if keep_synthetic else raised[k] for k in m.keywords}
        log.info("thresholds %.3f -> %s: <= %.2f false accepts per hour on real speech", thr,
                 _fmt_thresholds(thresholds), recipe.eval.real_target_fa_per_hour)
        if per_keyword:  # real speech holds no keywords: keep each from firing on the others
            floors = ev.substitution_floors(runner, sets, params)
            raised_by = {k: round(floors[k], 3) for k in m.keywords if floors[k] > thresholds[k]}
            thresholds = {k: max(thresholds[k], floors[k]) for k in m.keywords}
            log.info("thresholds raised so that no keyword fires on any of the others' held-out utterances: %s",
                     raised_by or "none")
        params = DecisionParams(thresholds, params.smoothing_ms, params.min_hits, params.refractory_ms)
        real = real_voice_check(runner, params, realvoice_dir, half)
    evs = ev.positive_events(runner, sets, params)
    frr = ev.frr_at(runner, sets, params, evs)
    breakdown = {str(snr): ev.frr_breakdown(s.spans, s.voices, evs[snr])
                 for snr, s in sets.positives.items() if s.voices}
    check = ev.detector_check(runner, sets.negative, thresholds, params)
    conf = ev.confusable_accepts(runner, sets, params)
    summary = _summary(m, clip, det, frr, check, recipe)
    summary["confusable_accept_rate"] = None if conf is None else round(conf["rate"], 4)
    summary["threshold"] = min(thresholds.values())
    if len(set(thresholds.values())) > 1:
        summary["thresholds"] = thresholds
    if from_real:  # the synthetic stream's false accepts at the raised thresholds
        summary["fa_per_hour"] = round(check["per_hour"], 3)
    summary["threshold_from"] = ("synthetic streams" if not from_real else "real speech"
                                 if recipe.eval.threshold_from == "real" else "synthetic and real speech")
    summary |= real_summary(real, summary["frr"])
    if half:
        summary["real_positives"] = "report half (the selection half chose the epoch)"
    report = {
        "model": m.name, "manifest": str(manifest_path), "recipe": recipe.path, "summary": summary,
        "target_fa_per_hour": recipe.eval.target_fa_per_hour,
        "clip": clip, "frr_at_threshold": frr, "detector_check": check, "confusables": conf,
        "det": det, "decision_grid": tried, "real_voice": real,
        "frr_by_engine": {snr: b["engine"] for snr, b in breakdown.items()},
        "frr_by_voice": {snr: b["voice"] for snr, b in breakdown.items()},
        "streams": {"negative_hours": round(sets.negative.hours, 3),
                    "positive_utterances": len(next(iter(sets.positives.values())).spans),
                    "snr_db": list(sets.positives)},
        "timings": dict(timings or {}) | {"eval_s": round(time.monotonic() - t0, 1),
                                          "total_s": round(time.monotonic() - t_start, 1)},
    }
    write_json(report_dir / "report.json", report)
    plots.write_all(report, list(m.labels), report_dir)
    if "skipped" not in real:
        plots.real_det_plot(real, report_dir / "real_det.png")
    if update:
        update_manifest(manifest_path, thresholds=thresholds, metrics=summary,
                        smoothing_ms=params.smoothing_ms, min_hits=params.min_hits)
    log.info("summary: %s", summary)
    return report


def _real_thresholds(real: dict[str, Any], target_fa_h: float, keywords: list[str]) -> dict[str, float] | None:
    """:func:`training.evaluate.per_keyword_thresholds` on the real speech, pooled over every condition
    (clean, noisy); None without real data."""
    if "skipped" in real or not real.get("fa_by_keyword"):
        return None
    return ev.per_keyword_thresholds(real["fa_by_keyword"], real["negative_hours"], target_fa_h, keywords)


def _fmt_thresholds(thresholds: dict[str, float]) -> str:
    values = set(thresholds.values())
    return f"{values.pop():.3f}" if len(values) == 1 else ", ".join(f"{k}={v:.3f}" for k, v in thresholds.items())


def real_voice_check(runner: Any, params: DecisionParams, data_dir: Path | None = None,
                     positives_half: str | None = None) -> dict[str, Any]:
    """:func:`training.realvoice.evaluate_real` at ``params`` (on one half of the positives, see
    :func:`training.realvoice.half`), or ``{"skipped": reason}`` (with a warning) when the real-voice
    folder is missing."""
    from training import realvoice as rv

    try:
        root = rv.realvoice_dir(data_dir)
    except ConfigError as exc:
        log.warning("real-voice check skipped: %s", exc)
        return {"skipped": str(exc)}
    real = rv.evaluate_real(runner, root, decision=params, positives_half=positives_half)
    log.info("real voices: %s", real["summary"])
    return real


REAL_KEYS = ("real_frr_clean", "real_frr_10db", "real_fa_per_hour", "real_frr_at_0.5fa", "real_frr_at_1fa")


def real_summary(real: dict[str, Any], synthetic_frr: float | None, max_gap: float = 0.10) -> dict[str, Any]:
    """Real-voice key figures for the summary (None when skipped), and ``real_vs_synthetic`` when the
    synthetic headline FRR and the real clean FRR differ by more than ``max_gap``."""
    out: dict[str, Any] = {k: None for k in REAL_KEYS} | dict(real.get("summary", {}))
    rf = out["real_frr_clean"]
    if rf is not None and synthetic_frr is not None and abs(rf - synthetic_frr) > max_gap:
        out["real_vs_synthetic"] = f"disagree: synthetic {synthetic_frr * 100:.1f}% vs real {rf * 100:.1f}%"
        log.warning("real voices and synthetic voices disagree: FRR %.1f%% synthetic vs %.1f%% real (clean)",
                    synthetic_frr * 100, rf * 100)
    return out


def _summary(m: Any, clip: dict[str, Any], det: dict[str, Any], frr: dict[str, Any], check: dict[str, Any],
             recipe: Recipe) -> dict[str, Any]:
    chosen = det["chosen"]
    tflite = m.model_path.read_bytes()
    headline = [frr[str(s)]["frr"] for s in recipe.eval.headline_snr_db if str(s) in frr]
    return {
        "threshold": chosen["threshold"],
        "smoothing_ms": det["decision"]["smoothing_ms"], "min_hits": det["decision"]["min_hits"],
        "fa_per_hour": round(chosen["fa_per_hour"], 3),
        "fa_per_hour_detector": round(check["per_hour"], 3),
        "negative_hours": round(det["negative_hours"], 3),
        "frr": round(float(np.mean(headline)), 4) if headline else None,
        "frr_snr_db": list(recipe.eval.headline_snr_db),
        "frr_per_snr": {k: round(v["frr"], 4) for k, v in frr.items()},
        "accuracy_int8": clip["test"]["int8"]["accuracy"],
        "accuracy_float": clip["test"].get("float", {}).get("accuracy"),
        "accuracy_int8_clean": clip["test_clean"]["int8"]["accuracy"],
        "accuracy_float_clean": clip["test_clean"].get("float", {}).get("accuracy"),
        "test_windows": clip["test"]["int8"]["n"],
        "size_bytes": m.size_bytes, "arena_bytes": m.arena_bytes, "params": m.params, "macs": m.macs,
        # the int8 filters' share of exact zeros (training/prune.py); pruning pays only once compressed
        "sparsity": prune.tflite_sparsity(tflite)["overall"], "gzip_bytes": prune.gzip_bytes(tflite),
        "runtime_cpu_s_per_hour": round(check["cpu_s_per_hour"], 2),
        "held_out": "whole TTS voices (espeak-ng variants in every accent, flite voices) never used in training",
    }
