"""Hard-negative mining: the windows of a long non-keyword stream that the model scores highest.

A stream gives ~60,000 windows an hour (one every 60 ms), far more than any clip set, and a wake word
needs a false-accept rate per window of ~1e-5. So after the first training pass the float model scores
every window of a long stream built from *training* voices only (sentences, words, confusables, noise);
the windows where a keyword scores above ``threshold`` are added to training as ``_unknown_`` and
training continues. The evaluation streams use held-out voices, so this does not touch the test data.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from kws_edge.embedding import EmbeddingParams
from kws_edge.features import FeatureParams
from training import streams as st
from training.recipe import Recipe

log = logging.getLogger("kws_edge.training")


def stream_windows(samples: npt.NDArray[np.int16], params: FeatureParams | EmbeddingParams, window: int,
                   stride: int) -> npt.NDArray[np.float32]:
    """Every window the runtime would score on ``samples`` (same frames, every ``stride`` frames)."""
    frames = params.streamer().process(samples).astype(np.float32)
    if len(frames) < window:
        return np.zeros((0, window, params.numcep), np.float32)
    view = np.lib.stride_tricks.sliding_window_view(frames, (window, params.numcep))[:, 0]
    return np.ascontiguousarray(view[::stride])


def mine(model: Any, recipe: Recipe, clips: list[npt.NDArray[np.int16]], bank: Any, seed: int,
         params: FeatureParams | EmbeddingParams | None = None) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
    """Hard negatives from ``recipe.train.mining_hours`` of non-keyword training speech."""
    params = params or recipe.model.front_end()
    t = recipe.train
    kinds = [k for k in recipe.augment.noise_kinds if k != "file"] or ["pink"]
    stream = st.negative_stream(clips, t.mining_hours, bank, kinds, seed)
    window = int(model.input_shape[1])  # the training windows' frames (longer for a stream model's context)
    xs = stream_windows(stream.samples, params, window, recipe.decision.stride_frames)
    post = model.predict(xs, batch_size=1024, verbose=0)
    kw = [recipe.labels.index(k) for k in recipe.keyword_labels]
    score = post[:, kw].max(axis=1)
    idx = np.flatnonzero(score >= t.mining_threshold)
    idx = idx[np.argsort(-score[idx])][: t.mining_max]
    stats = {"windows": len(xs), "above_threshold": int(np.sum(score >= t.mining_threshold)),
             "above_0.5": int(np.sum(score >= 0.5)), "kept": len(idx), "hours": round(stream.hours, 3)}
    log.info("mining: %s", stats)
    return xs[np.sort(idx)], stats
