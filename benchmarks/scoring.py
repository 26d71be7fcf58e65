"""Scoring: detections against labelled keyword instances, false-reject and false-accept rates, sweeps.

Rules (the same for every system):

- a detection at time ``t`` is a true accept of instance ``i`` if ``start_i <= t <= end_i + 1 s`` and
  ``i`` has not been matched yet; each instance takes at most one detection, so a second detection
  inside the same window is a false accept, as is every detection outside all windows (including one
  before the first label);
- FRR = unmatched instances / instances; FA/h = false accepts / hours of audio, over every stream
  scored for the keyword (the positives streams between instances and the negatives stream);
- score traces become detections by a threshold with a refractory period (and, for kws_edge, the
  manifest's smoothing and consecutive-hits rule, replayed exactly as ``kws_edge.decision`` does);
- the operating point is the lowest FRR among sweep thresholds whose FA/h <= 0.5 (the common wake-word
  target); ties go to the lower FA/h.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

TOLERANCE_S = 1.0  # a detection may come up to 1 s after the end of the keyword
TARGET_FA_PER_H = 0.5


@dataclass
class Match:
    """Outcome of matching one stream's detections against its instances."""

    hits: list[bool]  # per instance: matched by a detection
    false_accepts: int
    false_times: list[float] = field(default_factory=list)


def match(detections: Iterable[float], instances: Sequence[tuple[float, float]],
          tolerance_s: float = TOLERANCE_S) -> Match:
    """Match detection times to (start, end) instances; each instance takes the first detection in its window."""
    hits = [False] * len(instances)
    false_times: list[float] = []
    for t in sorted(detections):
        for i, (start, end) in enumerate(instances):
            if not hits[i] and start <= t <= end + tolerance_s:
                hits[i] = True
                break
        else:
            false_times.append(t)
    return Match(hits, len(false_times), false_times)


def smooth(t_ms: npt.NDArray[np.int64], score: npt.NDArray[np.float64], smoothing_ms: int) -> npt.NDArray[np.float64]:
    """kws_edge.decision steps 1-2: mean of the posteriors whose time is > now - smoothing_ms (newest kept)."""
    if len(score) == 0:
        return score
    start = np.searchsorted(t_ms, t_ms - smoothing_ms, side="right")
    idx = np.arange(len(score))
    start = np.minimum(start, idx)
    cs = np.concatenate(([0.0], np.cumsum(score)))
    return (cs[idx + 1] - cs[start]) / (idx + 1 - start)


def events(t_ms: npt.NDArray[np.int64], score: npt.NDArray[np.float64], threshold: float, refractory_ms: int,
           min_hits: int = 1, strict: bool = False) -> list[float]:
    """Detection times (s): ``min_hits`` consecutive scores >= threshold (> if ``strict``), then quiet.

    Equivalent to kws_edge.decision steps 3-5 over an already smoothed score: hits reset while quiet
    and after an event, and the keyword is quiet until ``t_event + refractory_ms``.
    """
    ok = score > threshold if strict else score >= threshold
    if min_hits > 1:
        run = np.convolve(ok.astype(np.int32), np.ones(min_hits, dtype=np.int32))[: len(ok)] == min_hits
    else:
        run = ok
    cand = np.flatnonzero(run)
    out: list[float] = []
    first = 0  # earliest index a run of hits may start at
    while True:
        k = int(np.searchsorted(cand, first + min_hits - 1, side="left"))
        if k >= len(cand):
            return out
        i = int(cand[k])
        out.append(float(t_ms[i]) / 1000.0)
        first = max(i + 1, int(np.searchsorted(t_ms, t_ms[i] + refractory_ms, side="left")))


def condition_key(stream: Any) -> str:
    return "clean" if stream.snr_db is None else f"{stream.snr_db} dB"


def score_streams(streams: Sequence[Any], detections: Mapping[str, list[float]]) -> dict[str, Any]:
    """FRR overall, per SNR, per noise kind and for reverberated instances, plus false accepts per hour."""
    groups: dict[str, dict[str, list[bool]]] = {"snr": {}, "noise": {}, "reverb": {}, "engine": {}, "voice": {}}
    all_hits: list[bool] = []
    fa = 0
    hours = 0.0
    by_stream: dict[str, int] = {}
    for s in streams:
        m = match(detections.get(s.name, []), [(i["start"], i["end"]) for i in s.instances])
        fa += m.false_accepts
        by_stream[s.name] = m.false_accepts
        hours += s.duration_s / 3600.0
        all_hits += m.hits
        for inst, hit in zip(s.instances, m.hits, strict=True):
            groups["snr"].setdefault(condition_key(s), []).append(hit)
            groups["noise"].setdefault(s.noise or "none", []).append(hit)
            groups["reverb"].setdefault("reverb" if inst.get("rt60_s") else "dry", []).append(hit)
            voice = str(inst.get("voice", "unknown"))
            groups["engine"].setdefault(_engine(voice), []).append(hit)
            if not voice.startswith("real:"):  # one real clip per speaker recording: no per-voice rate
                groups["voice"].setdefault(voice, []).append(hit)
    return {"instances": len(all_hits), "misses": all_hits.count(False), "frr": frr(all_hits),
            "false_accepts": fa, "hours": round(hours, 4), "fa_per_h": fa / hours if hours else 0.0,
            "false_accepts_by_stream": by_stream,
            **{f"frr_by_{g}": {k: frr(v) for k, v in d.items()} for g, d in groups.items()}}


def _engine(voice: str) -> str:
    """The TTS engine of an instance's voice (``espeak:de+m3`` -> ``espeak-ng-accent``), ``real`` for recordings."""
    engine, _, name = voice.partition(":")
    if engine == "espeak":
        return "espeak-ng" if name.startswith("en") else "espeak-ng-accent"
    return engine


def false_accepts_by_source(streams: Sequence[Any], detections: Mapping[str, list[float]],
                            tolerance_s: float = TOLERANCE_S) -> dict[str, int]:
    """False accepts on negative streams per source of the clip they fall in (or up to ``tolerance_s``
    after); ``"gap"`` between clips, the stream's name when it records no clips."""
    out: dict[str, int] = {}
    for s in streams:
        clips = getattr(s, "clips", None) or []
        for t in detections.get(s.name, []):
            src = next((c["source"] for c in clips if c["start"] <= t <= c["end"] + tolerance_s),
                       "gap" if clips else s.name)
            out[src] = out.get(src, 0) + 1
    return dict(sorted(out.items()))


def lowest_threshold_at(points: Sequence[Mapping[str, Any]], target: float) -> dict[str, Any] | None:
    """The lowest-threshold sweep point whose FA/h, and that of every higher threshold, is <= ``target``
    (for negatives-only sweeps, where there is no FRR to trade); None if even the highest is above."""
    pts = sorted(points, key=lambda p: p["threshold"])
    ok = [i for i in range(len(pts)) if all(p["fa_per_h"] <= target for p in pts[i:])]
    return dict(pts[ok[0]]) if ok else None


def frr(hits: Sequence[bool]) -> float | None:
    return (hits.count(False) / len(hits)) if hits else None


def operating_point(points: Sequence[Mapping[str, Any]], target: float = TARGET_FA_PER_H) -> dict[str, Any] | None:
    """The sweep point with the lowest FRR among those with FA/h <= target (ties: lower FA/h); None if none."""
    ok = [p for p in points if p["fa_per_h"] <= target and p["frr"] is not None]
    if not ok:
        return None
    return dict(min(ok, key=lambda p: (p["frr"], p["fa_per_h"])))


def sweep_thresholds(default: float) -> list[float]:
    """A threshold grid for posterior-like scores in [0, 1], dense near 1, plus the system's default.

    Steps of 0.02 up to 0.9, then of 1/1024 up to 1 - 1/1024 (int8 outputs move in steps of 1/256 and
    their averages in fractions of that), then a few above for float-output models.
    """
    grid = set(np.round(np.linspace(0.02, 0.9, 45), 4)) | set(np.round(1 - np.arange(1, 103) / 1024, 6))
    grid |= set(np.round(1 - np.logspace(-3.1, -4, 4), 6))
    grid.add(round(float(default), 5))
    return sorted(float(g) for g in grid)
