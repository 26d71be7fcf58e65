"""Keras training of a DS-CNN on feature windows (seeded, best-validation-epoch weights kept)."""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
import numpy.typing as npt

from training.data import FeatureSet
from training.model import DsCnnConfig, build_dscnn
from training.recipe import Recipe

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def class_weights(y: npt.NDArray[np.int64], labels: tuple[str, ...], unknown_weight: float) -> dict[int, float]:
    """Balanced class weights (n / (k * n_c)), with ``_unknown_`` scaled by ``unknown_weight``."""
    counts = np.bincount(y, minlength=len(labels)).astype(np.float64)
    w = len(y) / (len(labels) * np.maximum(counts, 1.0))
    if "_unknown_" in labels:
        w[labels.index("_unknown_")] *= unknown_weight
    return {i: float(v) for i, v in enumerate(w)}


def _best_weights_callback(val: FeatureSet) -> Any:
    import keras

    class KeepBest(keras.callbacks.Callback):
        """Remember the weights of the epoch with the best validation accuracy."""

        def __init__(self) -> None:
            super().__init__()
            self.best = -1.0
            self.best_epoch = -1
            self.weights: list[Any] = []

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            acc = float((logs or {}).get("val_accuracy", -1.0))
            if acc >= self.best:
                self.best, self.best_epoch = acc, epoch
                self.weights = self.model.get_weights()

    return KeepBest()


def train_model(recipe: Recipe, sets: dict[str, FeatureSet], verbose: bool = True) -> tuple[Any, dict[str, Any]]:
    """Train the recipe's DS-CNN; return (model with the best validation epoch's weights, history)."""
    import keras

    keras.utils.set_random_seed(recipe.seed)
    tr, val = sets["train"], sets["val"]
    frames, coeffs = tr.x.shape[1:]
    m = recipe.model
    model = build_dscnn(DsCnnConfig(filters=m.filters, blocks=m.blocks, dropout=m.dropout), (frames, coeffs),
                        len(recipe.labels))
    t = recipe.train
    steps = max(1, int(np.ceil(len(tr) / t.batch_size))) * t.epochs
    lr = keras.optimizers.schedules.CosineDecay(t.learning_rate, steps, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    keep = _best_weights_callback(val)
    hist = model.fit(tr.x, tr.y, batch_size=t.batch_size, epochs=t.epochs, validation_data=(val.x, val.y),
                     class_weight=class_weights(tr.y, recipe.labels, t.unknown_weight), shuffle=True,
                     callbacks=[keep], verbose=2 if verbose else 0)
    sys.stdout.flush()
    if keep.weights:
        model.set_weights(keep.weights)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    history["best_epoch"] = keep.best_epoch + 1  # type: ignore[assignment]
    return model, history


def representative_windows(fs: FeatureSet, n: int, seed: int) -> npt.NDArray[np.float32]:
    """A class-mixed random sample of training windows for int8 calibration."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(fs), size=min(n, len(fs)), replace=False)
    return fs.x[np.sort(idx)]
