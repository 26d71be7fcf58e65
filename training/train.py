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


def train_model(recipe: Recipe, sets: dict[str, FeatureSet], verbose: bool = True,
                negatives: list[Any] | None = None, bank: Any = None) -> tuple[Any, dict[str, Any]]:
    """Train the recipe's DS-CNN; return (model with the best validation epoch's weights, history).

    With ``train.mining_rounds`` > 0, ``negatives`` (non-keyword training clips) and ``bank`` (noise)
    feed hard-negative mining rounds after the first pass.
    """
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
    weights = class_weights(tr.y, recipe.labels, t.unknown_weight)
    hist = model.fit(tr.x, tr.y, batch_size=t.batch_size, epochs=t.epochs, validation_data=(val.x, val.y),
                     class_weight=weights, shuffle=True, callbacks=[keep], verbose=2 if verbose else 0)
    sys.stdout.flush()
    if keep.weights:
        model.set_weights(keep.weights)
    history: dict[str, Any] = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    history["best_epoch"] = keep.best_epoch + 1
    if t.mining_rounds and negatives:
        history["mining"] = _mining_rounds(model, recipe, tr, val, weights, negatives, bank, verbose)
    return model, history


def _mining_rounds(model: Any, recipe: Recipe, tr: FeatureSet, val: FeatureSet, weights: dict[int, float],
                   negatives: list[Any], bank: Any, verbose: bool) -> list[dict[str, Any]]:
    """Mine hard negatives from training voices and keep training on them, ``mining_rounds`` times."""
    import keras

    from training.mining import mine

    t = recipe.train
    unknown = recipe.labels.index("_unknown_")
    x, y = tr.x, tr.y
    rounds = []
    for r in range(t.mining_rounds):
        hard, stats = mine(model, recipe, negatives, bank, recipe.seed + 1000 + r)
        x = np.concatenate([x, hard])
        y = np.concatenate([y, np.full(len(hard), unknown, dtype=y.dtype)])
        steps = max(1, int(np.ceil(len(y) / t.batch_size))) * t.mining_epochs
        lr = keras.optimizers.schedules.CosineDecay(t.learning_rate * 0.3, steps, alpha=0.05)
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        hist = model.fit(x, y, batch_size=t.batch_size, epochs=t.mining_epochs, validation_data=(val.x, val.y),
                         class_weight=weights, shuffle=True, verbose=2 if verbose else 0)
        sys.stdout.flush()
        rounds.append(stats | {"val_accuracy": [float(v) for v in hist.history["val_accuracy"]]})
    return rounds


def representative_windows(fs: FeatureSet, n: int, seed: int) -> npt.NDArray[np.float32]:
    """A class-mixed random sample of training windows for int8 calibration."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(fs), size=min(n, len(fs)), replace=False)
    return fs.x[np.sort(idx)]
