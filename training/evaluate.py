"""Honest evaluation of an exported model on held-out voices.

Clip level: float vs int8 top-1 accuracy, per-class accuracy and the confusion matrix on 1 s windows.
Stream level, through the runtime's own feature and decision code: false-reject rate per SNR on
streams of held-out keyword utterances, false accepts per hour on a >= 1 hour non-keyword stream, the
DET curve (FRR vs FA/h over thresholds) and the lowest threshold that keeps FA/h <= the target. The
chosen operating point is re-checked with ``kws_edge.pipeline.Detector`` itself.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kws_edge.decision import DecisionParams
from kws_edge.model import ModelRunner, interpreter_backend
from kws_edge.pipeline import Detector
from training import streams as st


@dataclass
class StreamSet:
    """The evaluation streams: one positive stream per SNR and the long negative stream."""

    positives: dict[float, st.Stream]
    negative: st.Stream
    headline_snr: tuple[float, ...]
    confusables: st.Stream | None = None  # held-out sound-alike phrases ("hey travis"), clean


def float_predictions(float_tflite: Path, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Posteriors of the float ``.tflite`` (batch 1) for every window."""
    _, factory = interpreter_backend()
    interp = factory(model_path=str(float_tflite))
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    out = []
    for w in x:
        interp.set_tensor(i, w[None].astype(np.float32))
        interp.invoke()
        out.append(np.array(interp.get_tensor(o))[0])
    return np.array(out, dtype=np.float64)


def int8_predictions(runner: ModelRunner, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Posteriors of the int8 model through the runtime's ModelRunner."""
    return np.array([runner.classify(w.astype(np.float64)) for w in x])


def clip_metrics(labels: Sequence[str], y: npt.NDArray[np.int64], post: npt.NDArray[np.float64]) -> dict[str, Any]:
    """Top-1 accuracy, per-class accuracy and confusion matrix (rows: truth, columns: prediction)."""
    pred = post.argmax(axis=1)
    k = len(labels)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (y, pred), 1)
    per_class = {lab: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None) for i, lab in enumerate(labels)}
    return {"accuracy": float(np.mean(pred == y)) if len(y) else None, "per_class": per_class,
            "confusion": cm.tolist(), "n": len(y)}


def _fa_per_hour(scores: st.Scores, labels: Sequence[str], keywords: Sequence[str], thr: float,
                 d: DecisionParams, hours: float, smooth: dict[str, Any]) -> float:
    n = sum(len(st.events(scores, labels, kw, thr, d.smoothing_ms, d.min_hits, d.refractory_ms, smooth[kw]))
            for kw in keywords)
    return n / hours


def _frr(pos: dict[float, st.Scores], sets: StreamSet, labels: Sequence[str], keywords: Sequence[str],
         thr: float, d: DecisionParams, smooth: dict[float, dict[str, Any]]) -> dict[float, float]:
    out = {}
    for snr, scores in pos.items():
        evs = {kw: st.events(scores, labels, kw, thr, d.smoothing_ms, d.min_hits, d.refractory_ms, smooth[snr][kw])
               for kw in keywords}
        det, miss, _ = st.hits_and_misses(sets.positives[snr].spans, evs)
        out[snr] = miss / max(1, det + miss)
    return out


@dataclass
class StreamScores:
    """Model scores over every evaluation stream (computed once, replayed for any decision setting)."""

    negative: st.Scores
    positives: dict[float, st.Scores]
    cpu_s_per_hour: float  # model + features CPU seconds per hour of audio (this machine)


def score_streams(runner: ModelRunner, sets: StreamSet) -> StreamScores:
    """Run the model over the negative stream and every positive stream the way the runtime does."""
    t0 = time.process_time()
    neg = st.stream_scores(runner, sets.negative.samples)
    cpu = (time.process_time() - t0) / sets.negative.hours
    return StreamScores(neg, {snr: st.stream_scores(runner, s.samples) for snr, s in sets.positives.items()}, cpu)


def det_curve(runner: ModelRunner, sets: StreamSet, d: DecisionParams, target_fa_h: float,
              scores: StreamScores | None = None) -> dict[str, Any]:
    """Sweep a common threshold over the scored streams; pick the lowest one with FA/h <= target above it."""
    m = runner.manifest
    labels, keywords = list(m.labels), list(m.keywords)
    sc = scores or score_streams(runner, sets)
    neg, pos = sc.negative, sc.positives
    sm_neg = {kw: st.smoothed(neg, labels.index(kw), d.smoothing_ms) for kw in keywords}
    sm_pos = {snr: {kw: st.smoothed(s, labels.index(kw), d.smoothing_ms) for kw in keywords}
              for snr, s in pos.items()}
    grid = np.arange(1, 256) / 256.0  # int8 outputs are multiples of 1/256
    curve: list[dict[str, Any]] = []
    for thr in grid:
        fa = _fa_per_hour(neg, labels, keywords, thr, d, sets.negative.hours, sm_neg)
        frr = _frr(pos, sets, labels, keywords, thr, d, sm_pos)
        pooled = float(np.mean([frr[s] for s in sets.headline_snr if s in frr]))
        curve.append({"threshold": float(thr), "fa_per_hour": fa, "frr": pooled,
                      "frr_per_snr": {str(k): v for k, v in frr.items()}})
    ok = [i for i in range(len(curve)) if all(c["fa_per_hour"] <= target_fa_h for c in curve[i:])]
    chosen = curve[ok[0]] if ok else curve[-1]
    return {"curve": curve, "chosen": chosen, "negative_hours": sets.negative.hours,
            "model_cpu_s_per_hour": sc.cpu_s_per_hour, "target_met": bool(ok),
            "decision": {"smoothing_ms": d.smoothing_ms, "min_hits": d.min_hits, "refractory_ms": d.refractory_ms}}


def _rank(det: dict[str, Any]) -> tuple[int, float, float]:
    """Target met: lowest FRR wins. Not met anywhere: fewest false accepts at the top threshold wins."""
    c = det["chosen"]
    return (0, c["frr"], 0.0) if det["target_met"] else (1, c["fa_per_hour"], c["frr"])


def choose_decision(runner: ModelRunner, sets: StreamSet, default: DecisionParams, target_fa_h: float,
                    smoothing: tuple[int, ...] = (0, 120, 200, 300), hits: tuple[int, ...] = (1, 2, 3)
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """DET curves for a small grid of smoothing/min_hits; the lowest FRR at the target wins (ties: default)."""
    scores = score_streams(runner, sets)
    options = [(default.smoothing_ms, default.min_hits)]
    options += [(s, h) for s in smoothing for h in hits if (s, h) != options[0]]
    tried = []
    best: dict[str, Any] | None = None
    for s, h in options:
        d = DecisionParams(default.thresholds, s, h, default.refractory_ms)
        det = det_curve(runner, sets, d, target_fa_h, scores)
        c = det["chosen"]
        tried.append({"smoothing_ms": s, "min_hits": h, "threshold": c["threshold"], "frr": c["frr"],
                      "fa_per_hour": c["fa_per_hour"], "target_met": det["target_met"]})
        if best is None or _rank(det) < _rank(best):
            best = det
    return best, tried  # type: ignore[return-value]


def detector_check(runner: ModelRunner, stream: st.Stream, thresholds: Mapping[str, float], params: DecisionParams,
                   chunk: int = 1600) -> dict[str, Any]:
    """Count detections of the real runtime Detector on a stream at the chosen operating point."""
    import dataclasses

    m = runner.manifest
    decision = dataclasses.replace(m.decision, smoothing_ms=params.smoothing_ms, min_hits=params.min_hits)
    probe = runner.with_manifest(dataclasses.replace(m, decision=decision))
    det = Detector([probe], {kw: thresholds[kw] for kw in m.keywords}, timed=True)
    t0 = time.process_time()
    found = []
    x = stream.samples
    for i in range(0, len(x), chunk):
        found += det.process(x[i:i + chunk])
    cpu = time.process_time() - t0
    return {"detections": len(found), "per_hour": len(found) / stream.hours,
            "cpu_s_per_hour": cpu / stream.hours, "times_s": [round(f.t, 2) for f in found[:50]]}


def confusable_accepts(runner: ModelRunner, sets: StreamSet, params: DecisionParams) -> dict[str, Any] | None:
    """Fraction of held-out sound-alike utterances that trigger any keyword at the operating point."""
    if sets.confusables is None:
        return None
    s = sets.confusables
    evs = st.decision_events(st.stream_scores(runner, s.samples), list(runner.manifest.labels), params)
    times = np.sort(np.concatenate([np.asarray(v, dtype=np.float64) for v in evs.values()] or [np.zeros(0)]))
    accepted = sum(bool(np.any((times / 1000 >= a) & (times / 1000 <= b + 0.8))) for a, b, _ in s.spans)
    return {"utterances": len(s.spans), "accepted": int(accepted), "rate": accepted / max(1, len(s.spans))}


def positive_events(runner: ModelRunner, sets: StreamSet, params: DecisionParams) -> dict[float, dict[str, list[int]]]:
    """Event times (ms) per keyword on every positive stream, from the runtime's own Decision class."""
    labels = list(runner.manifest.labels)
    return {snr: st.decision_events(st.stream_scores(runner, s.samples), labels, params)
            for snr, s in sets.positives.items()}


def frr_at(runner: ModelRunner, sets: StreamSet, params: DecisionParams,
           evs: dict[float, dict[str, list[int]]] | None = None) -> dict[str, Any]:
    """FRR per SNR at the final decision parameters, using the runtime's own Decision class
    (``evs``: the :func:`positive_events` already computed, to avoid scoring the streams again)."""
    out: dict[str, Any] = {}
    evs = positive_events(runner, sets, params) if evs is None else evs
    for snr, s in sets.positives.items():
        det, miss, extra = st.hits_and_misses(s.spans, evs[snr])
        per_kw = {}
        for kw in params.thresholds:
            spans = [sp for sp in s.spans if sp[2] == kw]
            d_kw, m_kw, _ = st.hits_and_misses(spans, {kw: evs[snr].get(kw, [])})
            per_kw[kw] = m_kw / max(1, d_kw + m_kw)
        out[str(snr)] = {"frr": miss / max(1, det + miss), "utterances": det + miss, "extra_events": extra,
                         "frr_per_keyword": per_kw}
    return out


def frr_breakdown(spans: Sequence[tuple[float, float, str]], voices: Sequence[str],
                  evs: Mapping[str, Sequence[int]], tolerance_s: float = 0.8) -> dict[str, dict[str, Any]]:
    """FRR per TTS engine (``voice.split(':')[0]``) and per voice of a positive stream's utterances.

    ``voices`` is parallel to ``spans`` (``Stream.voices``); returns ``{"engine": {name: row}, "voice":
    {name: row}}`` with rows ``{"utterances", "missed", "frr"}``, sorted by name; empty without voices.
    """
    if len(voices) != len(spans):
        raise ValueError(f"{len(voices)} voices for {len(spans)} spans: expected one voice per span")
    out: dict[str, dict[str, Any]] = {"engine": {}, "voice": {}}
    for span, voice in zip(spans, voices, strict=True):
        det, _, _ = st.hits_and_misses([span], evs, tolerance_s)
        for kind, key in (("engine", voice.split(":")[0]), ("voice", voice)):
            row = out[kind].setdefault(key, {"utterances": 0, "missed": 0, "frr": 0.0})
            row["utterances"] += 1
            row["missed"] += 1 - det
    for rows in out.values():
        for row in rows.values():
            row["frr"] = row["missed"] / row["utterances"]
    return {kind: dict(sorted(rows.items())) for kind, rows in out.items()}


def per_keyword_thresholds(counts: Mapping[str, Mapping[str, Sequence[int]]], hours: Mapping[str, float],
                           target_fa_h: float, keywords: Sequence[str]) -> dict[str, float]:
    """Per keyword, the lowest threshold (1/256 grid) at and above which that keyword alone, pooled over the
    conditions in ``counts`` (condition -> keyword -> false accepts at each grid threshold), stays within its
    share of ``target_fa_h`` (split evenly over the keywords, so together they stay within it).

    One keyword gets the whole budget; with several, a keyword that speech rarely sounds like gets a lower
    threshold than one it often does, instead of every keyword taking the worst one's."""
    from training.realvoice import GRID

    total = sum(hours[name] for name in counts)
    share = target_fa_h / len(keywords)
    out = {}
    for kw in keywords:
        pooled = [sum(counts[name][kw][i] for name in counts) / total for i in range(len(GRID))]
        ok = [i for i in range(len(GRID)) if all(fa <= share for fa in pooled[i:])]
        out[kw] = float(GRID[ok[0]] if ok else GRID[-1])
    return out


def synthetic_thresholds(runner: ModelRunner, sets: StreamSet, d: DecisionParams, target_fa_h: float
                         ) -> dict[str, float]:
    """:func:`per_keyword_thresholds` on the held-out-voice negative stream."""
    from training.realvoice import fa_by_keyword

    m = runner.manifest
    scores = st.stream_scores(runner, sets.negative.samples)
    counts = fa_by_keyword((scores, sets.negative), list(m.labels), list(m.keywords), d)
    return per_keyword_thresholds({"synthetic": counts}, {"synthetic": sets.negative.hours}, target_fa_h,
                                  list(m.keywords))


def substitution_floors(runner: ModelRunner, sets: StreamSet, d: DecisionParams, max_rate: float = 0.0,
                        tolerance_s: float = 0.8) -> dict[str, float]:
    """Per keyword, the lowest threshold (1/256 grid) at and above which it fires on at most ``max_rate`` of
    the held-out utterances of *each* other keyword, over every positive stream: "up" must not fire on
    "stop". Real speech without keywords cannot show such substitutions. The default allows none: with
    1 % of ~200 utterances per pair, "up" at 0.707 still fired on one held-out voice's "stop"."""
    streams = [(st.stream_scores(runner, s.samples), s.spans) for s in sets.positives.values()]
    return floors_from_scores(streams, list(runner.manifest.labels), list(runner.manifest.keywords), d,
                              max_rate, tolerance_s)


def floors_from_scores(streams: Sequence[tuple[st.Scores, Sequence[tuple[float, float, str]]]],
                       labels: Sequence[str], keywords: Sequence[str], d: DecisionParams, max_rate: float = 0.01,
                       tolerance_s: float = 0.8) -> dict[str, float]:
    """:func:`substitution_floors` on scored streams. A keyword fires in an utterance when its smoothed score
    stays >= the threshold for ``min_hits`` runs in a row within it (or ``tolerance_s`` after it); the
    refractory time is ignored, which can only count more. The rate is per pair (keyword, other keyword):
    pooled over all the others, one confusable pair could hide among nine harmless ones."""
    from training.realvoice import GRID

    grid = GRID  # the 1/256 threshold grid of the DET sweeps
    peaks: dict[tuple[str, str], list[float]] = {}
    for scores, spans in streams:
        t = scores.times_ms / 1000
        for kw in keywords:
            sm = st.smoothed(scores, labels.index(kw), d.smoothing_ms)
            if len(sm) < d.min_hits:
                continue
            run = np.lib.stride_tricks.sliding_window_view(sm, d.min_hits).min(axis=1)
            t_run = t[d.min_hits - 1:]
            for a, b, other in spans:
                if other != kw:
                    inside = run[(t_run >= a) & (t_run <= b + tolerance_s)]
                    peaks.setdefault((kw, other), []).append(float(inside.max()) if len(inside) else 0.0)
    floors = {kw: float(grid[0]) for kw in keywords}
    for (kw, _), p in peaks.items():
        ranked = sorted(p, reverse=True)
        allowed = int(max_rate * len(ranked))
        above = grid[grid > ranked[allowed]] if allowed < len(ranked) else grid
        floors[kw] = max(floors[kw], float(above[0]) if len(above) else float(grid[-1]))
    return floors
