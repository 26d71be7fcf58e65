"""Model selection on real voices: which epoch's weights a recipe keeps with ``train.select_on = "real"``.

Synthetic validation accuracy says little about real speakers: two seeds of one recipe kept their 2nd and
their 12th epoch and differed by 28 points of real FRR. The real recordings of the keyword are validation
only, never trained on, but choosing among trained models with them is allowed; so the selection half of
them (:func:`training.realvoice.half`) and the real speech without the keyword become, once, the streams
of :func:`training.realvoice.evaluate_real` (clean and at 10 dB), cut into the windows the runtime would
run the model on (:func:`training.streams.stream_scores`, same frames and times). After every epoch the
float Keras model scores those windows in one batch, the decision is replayed over a threshold sweep, and
the epoch's figure is the FRR at <= 1 false accept per hour averaged over both conditions (1.0 where that
rate is not reachable). The report half of the recordings then gives the model's unbiased real figures.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from kws_edge.decision import DecisionParams
from kws_edge.embedding import EmbeddingParams
from kws_edge.errors import ConfigError
from kws_edge.features import FeatureParams
from kws_edge.model import ModelRunner
from training import augment as aug
from training import realvoice as rv
from training import streams as st
from training.recipe import Recipe

log = logging.getLogger("kws_edge.training")

TARGET_FA_H = 1.0
BATCH = 4096


class _Recorder:
    """A ModelRunner stand-in for :func:`training.streams.stream_scores` that keeps every window it is
    given (and answers zeros), so the windows and their times are exactly the runtime's."""

    def __init__(self, labels: tuple[str, ...], window_frames: int, stride_frames: int,
                 params: FeatureParams | EmbeddingParams) -> None:
        self.manifest = SimpleNamespace(features=params, window_frames=window_frames, stride_frames=stride_frames,
                                        warmup_frames=window_frames, labels=labels)
        self.windows: list[npt.NDArray[np.float32]] = []
        self._zeros = np.zeros(len(labels))

    def run(self, window: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        self.windows.append(window.astype(np.float32))
        return self._zeros

    def reset(self) -> None:
        pass


@dataclass
class _Cut:
    """One stream as model inputs: its windows, their times, the stream (spans, hours)."""

    windows: npt.NDArray[np.float32]
    times_ms: npt.NDArray[np.int64]
    stream: st.Stream


class RealSelector:
    """The selection-half streams of a recipe's keywords, cut into windows once; :meth:`frr` scores a model."""

    def __init__(self, recipe: Recipe, window_frames: int, root: Path | str | None = None,
                 params: FeatureParams | EmbeddingParams | None = None, seed: int = 0,
                 extra_speech: Path | None = rv.EXTRA_SPEECH_DIR) -> None:
        t0 = time.monotonic()
        self.labels = recipe.labels
        self.keywords = recipe.keyword_labels
        d = recipe.decision
        self.decision = DecisionParams({k: 0.5 for k in self.keywords}, d.smoothing_ms, d.min_hits, d.refractory_ms)
        base = rv.realvoice_dir(root)
        sel = rv.select_folders(self.keywords, rv.folders(base))
        missing = [k for k in self.keywords if k not in sel.positives]
        if missing:
            raise ConfigError(f"train.select_on = 'real': no real recordings of {', '.join(missing)} in {base} "
                              f"(a folder named like each keyword); use select_on = 'synthetic'")
        pos = rv.positive_clips(base, sel, "select")
        neg = [(c.samples, c.source) for c in rv.negative_clips(base, sel, extra_speech)]
        if not pos or not neg:
            raise ConfigError(f"train.select_on = 'real': {base} gives {len(pos)} selection-half positive and "
                              f"{len(neg)} negative clips; both are needed")
        streams = rv.build_streams(pos, neg, aug.NoiseBank([], []), rv.NOISE_KINDS, seed)
        p = params or recipe.model.front_end()
        self.cuts: dict[str, dict[str, _Cut]] = {}
        for name, ss in streams.items():
            self.cuts[name] = {}
            for kind, stream in ss.items():
                rec = _Recorder(self.labels, window_frames, d.stride_frames, p)
                scores = st.stream_scores(cast(ModelRunner, rec), stream.samples)
                self.cuts[name][kind] = _Cut(np.stack(rec.windows), scores.times_ms, stream)
        self.clips = {"positive": len(pos), "negative": len(neg)}
        n = sum(len(c.windows) for cs in self.cuts.values() for c in cs.values())
        log.info("real-voice selection: %d selection-half clips of %s, %d negative clips, %d windows (%.0f s)",
                 len(pos), ", ".join(sel.positives.values()), len(neg), n, time.monotonic() - t0)

    def frr(self, model: Any) -> dict[str, Any]:
        """{"frr": mean over conditions of the FRR at <= 1 FA/h (1.0 if not reachable), "conditions": {name:
        {"frr", "threshold"}}} of a Keras model (or anything with ``predict``)."""
        per: dict[str, dict[str, Any]] = {}
        for name, cut in self.cuts.items():
            sc = {kind: st.Scores(c.times_ms, np.asarray(model.predict(c.windows, batch_size=BATCH, verbose=0),
                                                          dtype=np.float64))
                  for kind, c in cut.items()}
            curve = rv.det_sweep((sc["positive"], cut["positive"].stream), (sc["negative"], cut["negative"].stream),
                                 self.labels, self.keywords, self.decision)
            point = rv.frr_at_fa(curve, TARGET_FA_H)
            per[name] = {"frr": point["frr"] if point["reachable"] else 1.0, "threshold": point["threshold"]}
        return {"frr": float(np.mean([v["frr"] for v in per.values()])), "conditions": per}
