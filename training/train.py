"""Keras training of a DS-CNN on feature windows (seeded, best-validation-epoch weights kept)."""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
import numpy.typing as npt

from training import distill, prune
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


def _keep_best(selector: Any | None, pruner: Any | None = None) -> Any:
    import keras

    class KeepBest(keras.callbacks.Callback):
        """Remember the weights of the best epoch: the highest validation accuracy, or with a real-voice
        ``selector`` (training/select.py) the lowest real FRR at <= 1 FA/h (ties: the later epoch). With a
        ``pruner`` (training/prune.py) only epochs ending with every kernel at the target sparsity count."""

        def __init__(self) -> None:
            super().__init__()
            self.best = -np.inf
            self.best_epoch = -1
            self.phase = "first pass"
            self.best_phase = ""
            self.weights: list[Any] = []
            self.real: list[dict[str, Any]] = []  # each epoch's real-voice figures (with a selector)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if pruner is not None and not pruner.at_target:
                return
            if selector is None:
                value = float((logs or {}).get("val_accuracy", -1.0))
            else:
                r = selector.frr(self.model)
                self.real.append({"phase": self.phase, "epoch": epoch + 1} | r)
                conds = ", ".join(f"{k} {v['frr']:.1%}" for k, v in r["conditions"].items())
                print(f"real-voice selection, {self.phase} epoch {epoch + 1}: FRR at <= 1 FA/h {r['frr']:.1%} "
                      f"({conds})", flush=True)
                value = -r["frr"]
            if value >= self.best:
                self.best, self.best_epoch, self.best_phase = value, epoch, self.phase
                self.weights = self.model.get_weights()

    return KeepBest()


def train_model(recipe: Recipe, sets: dict[str, FeatureSet], verbose: bool = True,
                negatives: list[Any] | None = None, bank: Any = None) -> tuple[Any, dict[str, Any]]:
    """Train the recipe's DS-CNN; return (model with the best validation epoch's weights, history).

    With ``train.mining_rounds`` > 0, ``negatives`` (non-keyword training clips) and ``bank`` (noise)
    feed hard-negative mining rounds after the first pass. With ``train.teacher`` the model learns from
    the teacher's posteriors too (training/distill.py).
    """
    import keras

    keras.utils.set_random_seed(recipe.seed)
    tr, val = sets["train"], sets["val"]
    frames, coeffs = tr.x.shape[1:]
    m = recipe.model
    if m.family == "stream":
        from training.streaming import build_stream_classifier

        model = build_stream_classifier(m.stream_config(), frames, coeffs, len(recipe.labels))
    elif m.family == "embedding":
        from training.model import build_embedding_head

        model = build_embedding_head(m.filters, m.blocks, m.dropout, (frames, coeffs), len(recipe.labels))
    else:
        cfg = DsCnnConfig(filters=m.filters, blocks=m.blocks, dropout=m.dropout, normalize=m.normalize)
        model = build_dscnn(cfg, (frames, coeffs), len(recipe.labels))
    t = recipe.train
    steps = max(1, int(np.ceil(len(tr) / t.batch_size))) * t.epochs
    _compile(model, recipe, keras.optimizers.schedules.CosineDecay(t.learning_rate, steps, alpha=0.02))
    selector = None
    if t.select_on == "real":
        from training.select import RealSelector

        selector = RealSelector(recipe, frames, recipe.dataset.realvoice_dir or None)
    pruner = _pruner(recipe, _batches(len(tr), t.batch_size) * t.epochs)
    keep = _keep_best(selector, pruner)
    prune_cb = [] if pruner is None else [pruner]  # before KeepBest: the weights it keeps are the pruned ones
    weights = class_weights(tr.y, recipe.labels, t.unknown_weight)
    soft = _teacher(recipe, tr.x)
    val_data = (val.x, distill.targets(val.y, _teacher(recipe, val.x)))
    hist = _fit(model, tr.x, tr.y, soft, weights, recipe, t.epochs, val_data, [*prune_cb, keep], verbose, salt=0)
    sys.stdout.flush()
    if keep.weights:
        model.set_weights(keep.weights)
    history: dict[str, Any] = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    history["best_epoch"] = keep.best_epoch + 1
    if t.mining_rounds and negatives:  # real-voice selection goes on over the mining rounds' epochs
        history["mining"] = _mining_rounds(model, recipe, tr, soft, val_data, weights, negatives, bank, verbose,
                                           [*prune_cb, keep] if selector else prune_cb)
        if selector:
            model.set_weights(keep.weights)
    if selector:
        history["real_selection"] = {"clips": selector.clips, "epochs": keep.real,
                                     "kept": {"phase": keep.best_phase, "epoch": keep.best_epoch + 1,
                                              "frr": -keep.best}}
    if pruner is not None:
        history["pruning"] = {"target": t.prune_sparsity, "begin_step": pruner.begin, "end_step": pruner.end,
                              "steps": pruner.step} | prune.kernel_sparsity(model)
    return model, history


def _pruner(recipe: Recipe, first_pass_steps: int) -> Any | None:
    """The recipe's pruning callback (None without ``train.prune_sparsity``): its schedule runs from
    ``prune_begin`` to ``prune_end`` of the first pass's ``first_pass_steps``."""
    t = recipe.train
    if not t.prune_sparsity:
        return None
    begin = min(first_pass_steps - 1, round(t.prune_begin * first_pass_steps))
    end = min(first_pass_steps, max(begin + 1, round(t.prune_end * first_pass_steps)))
    return prune.pruning_callback(t.prune_sparsity, begin, end)


def _teacher(recipe: Recipe, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32] | None:
    """The teacher's posteriors for ``x`` (None without ``train.teacher``)."""
    return distill.teacher_posteriors(recipe.train.teacher, x) if recipe.train.teacher else None


def _compile(model: Any, recipe: Recipe, lr: Any) -> None:
    """Adam at ``lr``; cross-entropy, or the distillation loss with a teacher; metric ``accuracy``."""
    import keras

    t = recipe.train
    if not t.teacher:
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=distill.distill_loss(t.distill_weight,
                  t.distill_temperature), metrics=[distill.hard_accuracy()])


def _mining_rounds(model: Any, recipe: Recipe, tr: FeatureSet, soft: npt.NDArray[np.float32] | None,
                   val_data: tuple[Any, Any], weights: dict[int, float], negatives: list[Any], bank: Any,
                   verbose: bool, callbacks: list[Any]) -> list[dict[str, Any]]:
    """Mine hard negatives from training voices and keep training on them, ``mining_rounds`` times
    (``callbacks``: a real-voice KeepBest that follows these epochs too)."""
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
        hard_soft = _teacher(recipe, hard)
        soft = None if soft is None or hard_soft is None else np.concatenate([soft, hard_soft])
        steps = max(1, int(np.ceil(len(y) / t.batch_size))) * t.mining_epochs
        _compile(model, recipe, keras.optimizers.schedules.CosineDecay(t.learning_rate * 0.3, steps, alpha=0.05))
        for cb in callbacks:
            cb.phase = f"mining round {r + 1}"
        hist = _fit(model, x, y, soft, weights, recipe, t.mining_epochs, val_data, callbacks, verbose, salt=r + 1)
        sys.stdout.flush()
        rounds.append(stats | {"val_accuracy": [float(v) for v in hist.history["val_accuracy"]]})
    return rounds


def _fit(model: Any, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], soft: npt.NDArray[np.float32] | None,
         weights: dict[int, float], recipe: Recipe, epochs: int, val_data: tuple[Any, Any], callbacks: list[Any],
         verbose: bool, salt: int = 0) -> Any:
    """``model.fit`` with class weights (as sample weights with teacher posteriors ``soft``, which join the
    labels as targets); through SpecAugment masking when the recipe asks for it (masks keyed by ``salt``,
    one per fit: 0 for the first pass, 1 + r for mining round r)."""
    t = recipe.train
    if not (t.time_masks or t.freq_masks):
        cw = {"class_weight": weights} if soft is None else {"sample_weight": _sample_weights(y, weights)}
        return model.fit(x, distill.targets(y, soft), batch_size=t.batch_size, epochs=epochs,
                         validation_data=val_data, shuffle=True, callbacks=callbacks,
                         verbose=2 if verbose else 0, **cw)
    ds = spec_augmented(x, y, weights, recipe, soft, epochs=epochs, salt=salt)
    return model.fit(ds, epochs=epochs, steps_per_epoch=_batches(len(y), t.batch_size), validation_data=val_data,
                     shuffle=False, callbacks=callbacks, verbose=2 if verbose else 0)  # the dataset shuffles


def _batches(n: int, batch_size: int) -> int:
    """Batches in one epoch of ``n`` windows (the last one may be short)."""
    return max(1, -(-n // batch_size))


def _sample_weights(y: npt.NDArray[np.int64], weights: dict[int, float]) -> npt.NDArray[np.float32]:
    return np.array([weights[int(c)] for c in y], dtype=np.float32)


def spec_augmented(x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], weights: dict[int, float],
                   recipe: Recipe, soft: npt.NDArray[np.float32] | None = None, epochs: int = 1,
                   salt: int = 0) -> Any:
    """``epochs`` passes over a shuffled, batched tf.data pipeline of (window, target, class weight) with
    SpecAugment masks; the target is the label, or [label, teacher posteriors...] with ``soft``
    (training/distill.py). Fit it with ``steps_per_epoch`` = ``_batches(len(y), batch_size)``.

    Each epoch draws new masks: ``time_masks`` runs of up to ``time_mask_frames`` frames and one band of
    up to ``freq_masks`` MFCC coefficients per window are replaced by that window's mean over time (the
    cepstral "neutral" value), so the model cannot lean on any single moment or coefficient. Widths and
    starts are uniform integers (0..max width, 0..frames-1 / coeffs-1); they come from stateless random
    ops keyed by (recipe seed, ``salt``) and the running batch number across all epochs, so the same seed
    gives the same masks whatever order the parallel map finishes its batches in.
    """
    import tensorflow as tf

    t = recipe.train
    frames, coeffs = x.shape[1:]
    sw = _sample_weights(y, weights)
    key = tf.constant([recipe.seed, salt], dtype=tf.int64)
    draws = 2 * t.time_masks + (2 if t.freq_masks else 0)

    def mask(step: Any, batch: Any) -> Any:
        xb, yb, wb = batch
        b = tf.shape(xb)[0]
        seeds = iter(tf.unstack(tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(key, step), num=max(draws, 1))))

        def uniform(high: int) -> Any:  # [b, 1] integers in [0, high)
            return tf.random.stateless_uniform([b, 1], next(seeds), 0, high, dtype=tf.int32)

        mean = tf.reduce_mean(xb, axis=1, keepdims=True)
        hide = tf.zeros_like(xb, dtype=tf.bool)
        pos_t = tf.range(frames)[None, :]
        for _ in range(t.time_masks):
            width = uniform(t.time_mask_frames + 1)
            start = uniform(frames)
            hide |= ((pos_t >= start) & (pos_t < start + width))[:, :, None]
        if t.freq_masks:
            pos_f = tf.range(coeffs)[None, :]
            width = uniform(t.freq_masks + 1)
            start = uniform(coeffs)
            hide |= ((pos_f >= start) & (pos_f < start + width))[:, None, :]
        return tf.where(hide, mean, xb), yb, wb

    ds = tf.data.Dataset.from_tensor_slices((x, distill.targets(y, soft), sw))
    ds = ds.shuffle(len(y), seed=recipe.seed, reshuffle_each_iteration=True).batch(t.batch_size).repeat(epochs)
    return ds.enumerate().map(mask, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)


def representative_windows(fs: FeatureSet, n: int, seed: int) -> npt.NDArray[np.float32]:
    """A class-mixed random sample of training windows for int8 calibration."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(fs), size=min(n, len(fs)), replace=False)
    return fs.x[np.sort(idx)]
