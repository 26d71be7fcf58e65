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
from kws_edge.embedding import EmbeddingParams, StreamingEmbedding
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
    params: FeatureParams | EmbeddingParams
    front_end: StreamingMfcc | StreamingEmbedding
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
        groups: dict[FeatureParams | EmbeddingParams, _Group] = {}
        for r in self.runners:
            m = r.manifest
            g = groups.setdefault(m.features, _Group(m.features, m.features.streamer(), []))
            slot = _Slot(r, Decision(m.labels, decision_params(r, overrides)), m.window_frames,
                         m.stride_frames, m.warmup_frames)
            g.slots.append(slot)
        self._groups = list(groups.values())
        self.timed = timed
        self.times = StageTimes()
        self.reset()

    def reset(self) -> None:
        for g in self._groups:
            g.front_end.reset()
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
            frames = g.front_end.flush() if flush else g.front_end.process(samples)  # type: ignore[arg-type]
            if clock:
                self.times.features += clock() - t0
            if len(frames):
                self._on_frames(g, frames, out)
        return out

    def _on_frames(self, g: _Group, frames: npt.NDArray[np.float64], out: list[Detection]) -> None:
        """Append the chunk's frames to the ring at once, then make only the model runs that fell due
        (in frame order, then model order: the same runs and detections as one frame at a time)."""
        clock = time.process_time if self.timed else None
        depth = max(s.window for s in g.slots)
        n = len(frames)
        if g.fill + n > len(g.ring):  # keep the newest depth-1 frames; grow for a chunk larger than the ring
            keep = min(depth - 1, g.fill)
            tail = g.ring[g.fill - keep:g.fill].copy()
            if keep + n > len(g.ring):
                g.ring = np.zeros((keep + n + depth + 64, g.ring.shape[1]))
            g.ring[:keep] = tail
            g.fill = keep
        g.ring[g.fill:g.fill + n] = frames
        first = g.frames + 1  # frame count after the chunk's first frame
        g.frames += n
        g.fill += n
        due = sorted((count, i) for i, s in enumerate(g.slots)
                     for count in range(_next_run(first, s.window, s.stride), g.frames + 1, s.stride))
        if not due:
            return
        hop, frame_len, rate = g.params.hop, g.params.frame_len, g.params.sample_rate
        # Each model quantizes the ring rows its runs in this chunk read, once (its windows overlap):
        # row r of the ring is row r - lo of quantized[i].
        t0 = clock() if clock else 0.0
        span: dict[int, tuple[int, int]] = {}
        for count, i in due:
            end = g.fill - (g.frames - count)
            span[i] = (span[i][0] if i in span else end - g.slots[i].window, end)
        quantized = {i: (lo, g.slots[i].runner.quantize_frames(g.ring[lo:hi])) for i, (lo, hi) in span.items()}
        if clock:
            self.times.inference += clock() - t0
        for count, i in due:
            s = g.slots[i]
            end = g.fill - (g.frames - count)  # ring row after frame `count`
            end_sample = (count - 1) * hop + frame_len
            t0 = clock() if clock else 0.0
            lo, q = quantized[i]
            post = s.runner.run_frames(q[end - s.window - lo:end - lo])
            s.last = post
            t1 = clock() if clock else 0.0
            events = s.decision.update(post, (end_sample * 1000) // rate) if count >= s.warmup else []
            if clock:
                t2 = clock()
                self.times.inference += t1 - t0
                self.times.decision += t2 - t1
                self.times.inferences += 1
            for e in events:
                out.append(Detection(e.keyword, e.score, end_sample / rate, s.runner.name,
                                     s.runner.manifest.sha256))


def _next_run(first: int, window: int, stride: int) -> int:
    """The smallest frame count >= first at which a model with this window and stride runs."""
    if first <= window:
        return window
    return window + -(-(first - window) // stride) * stride
