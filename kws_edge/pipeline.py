"""The streaming pipeline: samples -> MFCC -> models -> decisions -> detections.

Pure: no devices, sockets or threads. Models that share feature parameters share one MFCC stream.
A model runs whenever ``stride_frames`` new frames have arrived after its first full window, so the
frames it sees, and so every detection, depend only on the samples and never on the chunking. A
streaming model (window == stride) sees every frame once, and its decisions count after its warm-up.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kws_edge.decision import Decision, DecisionParams
from kws_edge.errors import ConfigError
from kws_edge.features import FeatureParams, StreamingMfcc
from kws_edge.model import ModelRunner


@dataclass(frozen=True)
class Detection:
    keyword: str
    score: float
    t: float  # seconds from the start of the stream to the end of the window that fired
    model: str
    model_sha256: str

    def to_json_dict(self) -> dict[str, object]:
        """The stable ``kws-edge detect --json`` line."""
        return {"keyword": self.keyword, "score": round(self.score, 4), "t": round(self.t, 3),
                "model": self.model}


@dataclass
class StageTimes:
    """Process CPU seconds spent per stage (for the benchmark and the live view)."""

    features: float = 0.0
    inference: float = 0.0
    decision: float = 0.0
    inferences: int = 0


@dataclass
class _Slot:
    runner: ModelRunner
    decision: Decision
    window: int
    stride: int
    warmup: int  # frames before the model's outputs count (a streaming model's receptive field)
    last: npt.NDArray[np.float64] | None = None  # latest posteriors, for live views


@dataclass
class _Group:
    params: FeatureParams
    mfcc: StreamingMfcc
    slots: list[_Slot]
    ring: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))
    frames: int = 0  # frames seen
    fill: int = 0  # rows of ring in use


def decision_params(runner: ModelRunner, overrides: Mapping[str, float] | None = None) -> DecisionParams:
    """The manifest's decision defaults with per-keyword threshold overrides applied."""
    d = runner.manifest.decision
    thresholds = dict(d.thresholds)
    for kw, value in (overrides or {}).items():
        if kw in thresholds:
            thresholds[kw] = value
    return DecisionParams(thresholds, d.smoothing_ms, d.min_hits, d.refractory_ms)


def check_threshold_keywords(runners: Sequence[ModelRunner], overrides: Mapping[str, float]) -> None:
    known = {kw for r in runners for kw in r.manifest.keywords}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"--threshold: unknown keyword(s) {', '.join(unknown)}; the loaded models detect "
            f"{', '.join(sorted(known))}"
        )
    for kw, value in overrides.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"--threshold {kw}={value}: expected a value between 0 and 1")


class Detector:
    """Feed int16 samples at the models' sample rate; get :class:`Detection` lists back."""

    def __init__(self, runners: Sequence[ModelRunner], thresholds: Mapping[str, float] | None = None,
                 *, timed: bool = False) -> None:
        if not runners:
            raise ConfigError("no models to run")
        overrides = dict(thresholds or {})
        check_threshold_keywords(runners, overrides)
        rates = {r.manifest.features.sample_rate for r in runners}
        if len(rates) != 1:
            raise ConfigError(f"models disagree on the sample rate ({sorted(rates)}); run them separately")
        self.sample_rate = rates.pop()
        self.runners = [r.fresh() for r in runners]  # a streaming model's state belongs to this stream
        groups: dict[FeatureParams, _Group] = {}
        for r in self.runners:
            m = r.manifest
            g = groups.setdefault(m.features, _Group(m.features, StreamingMfcc(m.features), []))
            slot = _Slot(r, Decision(m.labels, decision_params(r, overrides)), m.window_frames,
                         m.stride_frames, m.warmup_frames)
            g.slots.append(slot)
        self._groups = list(groups.values())
        self.timed = timed
        self.times = StageTimes()
        self.reset()

    def reset(self) -> None:
        for g in self._groups:
            g.mfcc.reset()
            depth = max(s.window for s in g.slots)
            g.ring = np.zeros((2 * depth + 64, g.params.numcep))
            g.frames = 0
            g.fill = 0
            for s in g.slots:
                s.runner.reset()
                s.decision.reset()
                s.last = None
        self.times = StageTimes()

    @property
    def thresholds(self) -> dict[str, float]:
        return {kw: thr for g in self._groups for s in g.slots
                for kw, thr in s.decision.params.thresholds.items()}

    def latest_scores(self) -> dict[str, float]:
        """Latest raw posterior per keyword (0 before the first model run); for live views."""
        scores: dict[str, float] = {}
        for g in self._groups:
            for s in g.slots:
                labels = s.runner.labels
                for kw in s.decision.params.thresholds:
                    scores[kw] = float(s.last[labels.index(kw)]) if s.last is not None else 0.0
        return scores

    def process(self, samples: npt.ArrayLike) -> list[Detection]:
        """Feed a chunk of any length; return detections fired inside it."""
        return self._run(samples, flush=False)

    def flush(self) -> list[Detection]:
        """End of stream: process the library's zero-padded last frame, then reset the features."""
        return self._run(None, flush=True)

    def _run(self, samples: npt.ArrayLike | None, flush: bool) -> list[Detection]:
        out: list[Detection] = []
        clock = time.process_time if self.timed else None
        for g in self._groups:
            t0 = clock() if clock else 0.0
            frames = g.mfcc.flush() if flush else g.mfcc.process(samples)  # type: ignore[arg-type]
            if clock:
                self.times.features += clock() - t0
            if len(frames):
                self._on_frames(g, frames, out)
        return out

    def _on_frames(self, g: _Group, frames: npt.NDArray[np.float64], out: list[Detection]) -> None:
        clock = time.process_time if self.timed else None
        depth = max(s.window for s in g.slots)
        p = g.params
        for frame in frames:
            if g.fill == len(g.ring):  # ring full: keep the newest depth-1 frames (amortised, ring >> depth)
                keep = depth - 1
                g.ring[:keep] = g.ring[g.fill - keep:g.fill]
                g.fill = keep
            g.ring[g.fill] = frame
            g.fill += 1
            g.frames += 1
            fill = g.fill
            for s in g.slots:
                if g.frames < s.window or (g.frames - s.window) % s.stride:
                    continue
                window = g.ring[fill - s.window:fill]
                end_sample = (g.frames - 1) * p.hop + p.frame_len
                now_ms = (end_sample * 1000) // p.sample_rate
                t0 = clock() if clock else 0.0
                post = s.runner.run(window)
                s.last = post
                t1 = clock() if clock else 0.0
                events = s.decision.update(post, now_ms) if g.frames >= s.warmup else []
                if clock:
                    t2 = clock()
                    self.times.inference += t1 - t0
                    self.times.decision += t2 - t1
                    self.times.inferences += 1
                for e in events:
                    out.append(Detection(e.keyword, e.score, end_sample / p.sample_rate, s.runner.name,
                                         s.runner.manifest.sha256))
