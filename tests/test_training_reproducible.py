"""Training is bit-reproducible for a seed: SpecAugment masks come from stateless random ops keyed by the
recipe seed and the running batch number, so the parallel tf.data map cannot reorder the draws.

The model is the real stream model, tiny; the windows are seeded noise and tones (training.testing).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from training.data import FeatureSet
from training.recipe import parse_recipe
from training.testing import random_label_sets

LABELS = ("_silence_", "_unknown_", "yes", "no")
TIME_MASKS, TIME_MASK_FRAMES, FREQ_MASKS = 2, 5, 2


def recipe(seed: int, epochs: int = 3) -> Any:
    return parse_recipe({
        "name": "reproducible_test", "kind": "commands", "keywords": ["yes", "no"], "seed": seed,
        "model": {"family": "stream", "filters": 8, "blocks": 1, "kernel": 3, "norm_frames": 4, "pool_frames": 8,
                  "dropout": 0.1, "normalize": True},
        "train": {"epochs": epochs, "batch_size": 32, "learning_rate": 0.01, "unknown_weight": 2.0,
                  "time_masks": TIME_MASKS, "time_mask_frames": TIME_MASK_FRAMES, "freq_masks": FREQ_MASKS},
    })


@pytest.fixture(scope="module")
def sets() -> dict[str, FeatureSet]:
    return random_label_sets(240, 200, 21, [0.1, 0.5, 0.2, 0.2])


def weights_after_training(seed: int, sets: dict[str, FeatureSet]) -> list[np.ndarray]:
    from training.train import train_model

    model, _ = train_model(recipe(seed), sets, verbose=False)
    return [np.asarray(w) for w in model.get_weights()]


def test_the_same_seed_gives_the_same_weights(sets: dict[str, FeatureSet]) -> None:
    first = weights_after_training(3, sets)
    again = weights_after_training(3, sets)
    other = weights_after_training(4, sets)
    assert len(first) == len(again) > 0
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert max(float(np.abs(a - b).max()) for a, b in zip(first, other, strict=True)) > 1e-3


def masked(seed: int, x: np.ndarray, epochs: int, salt: int = 0) -> np.ndarray:
    """(masked windows, their row in ``x``) per epoch, in ``x``'s order: shape [epochs, n, frames, coeffs]."""
    from training.train import _batches, spec_augmented

    n = len(x)
    ids = np.arange(n, dtype=np.float32)[:, None]  # carried through the shuffle as a "teacher" column
    y = np.zeros(n, dtype=np.int64)
    ds = spec_augmented(x, y, {0: 1.0}, recipe(seed), soft=ids, epochs=epochs, salt=salt)
    out = np.zeros((epochs, *x.shape), dtype=np.float32)
    seen = np.zeros((epochs, n), dtype=bool)
    steps = _batches(n, recipe(seed).train.batch_size)
    for step, (xb, tb, _) in enumerate(ds.as_numpy_iterator()):
        rows = tb[:, 1].astype(np.int64)
        out[step // steps, rows] = xb
        seen[step // steps, rows] = True
    assert seen.all(), "every window once per epoch"
    return out


def windows(seed: int, n: int = 100) -> np.ndarray:
    """Seeded [n, 49, 10] noise windows with no value within 0.01 of its coefficient's mean over time, so a
    value equal to that mean was masked."""
    x = (10 * np.random.default_rng(seed).standard_normal((n, 49, 10))).astype(np.float32)
    return x[np.abs(x - x.mean(axis=1, keepdims=True)).min(axis=(1, 2)) > 1e-2]


def hidden(out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Which values were replaced by their window's mean over time."""
    mean = x.mean(axis=1, keepdims=True)
    return np.isclose(out, mean, rtol=0, atol=1e-3) & ~np.isclose(x, mean, rtol=0, atol=1e-3)


def test_masks_are_reproducible_and_new_each_epoch() -> None:
    x = windows(5)
    a = masked(7, x, epochs=2)
    b = masked(7, x, epochs=2)
    np.testing.assert_array_equal(a, b)
    ha = hidden(a, x)
    assert ha.any(axis=(2, 3)).mean() > 0.8  # most windows get some mask every epoch
    assert (ha[0] != ha[1]).any(axis=(1, 2)).mean() > 0.8  # and another one the next epoch
    other = masked(8, x, epochs=1)
    assert (hidden(other, x)[0] != ha[0]).any(axis=(1, 2)).mean() > 0.8
    mining = masked(7, x, epochs=1, salt=1)
    assert (hidden(mining, x)[0] != ha[0]).any(axis=(1, 2)).mean() > 0.8
    kept = ~hidden(a, x)
    np.testing.assert_array_equal(a[kept], np.broadcast_to(x, a.shape)[kept])  # the rest untouched


def reference_masks(n: int, frames: int, coeffs: int, rng: np.random.Generator) -> np.ndarray:
    """The documented distribution: 2 time runs of width U{0..5} from a start U{0..frames-1}, one band of
    width U{0..2} from a start U{0..coeffs-1}, cut at the window's end."""
    hide = np.zeros((n, frames, coeffs), dtype=bool)
    t, f = np.arange(frames), np.arange(coeffs)
    for _ in range(TIME_MASKS):
        w, s = rng.integers(0, TIME_MASK_FRAMES + 1, n)[:, None], rng.integers(0, frames, n)[:, None]
        hide |= ((t >= s) & (t < s + w))[:, :, None]
    w, s = rng.integers(0, FREQ_MASKS + 1, n)[:, None], rng.integers(0, coeffs, n)[:, None]
    hide |= ((f >= s) & (f < s + w))[:, None, :]
    return hide


def test_masks_follow_the_documented_distribution() -> None:
    x = windows(6)
    out = masked(11, x, epochs=20)
    got = hidden(out, x).reshape(-1, *x.shape[1:])
    ref = reference_masks(200_000, *x.shape[1:], np.random.default_rng(0))
    frames_hidden = got.all(axis=2)  # a whole frame hidden: a time mask
    coeffs_hidden = got.all(axis=1)  # a whole coefficient hidden: the band
    assert frames_hidden.sum(axis=1).mean() == pytest.approx(ref.all(axis=2).sum(axis=1).mean(), rel=0.1)
    assert coeffs_hidden.sum(axis=1).mean() == pytest.approx(ref.all(axis=1).sum(axis=1).mean(), rel=0.1)
    per_frame = frames_hidden.mean(axis=0)  # masks reach every frame, the ends less (runs are cut)
    assert per_frame.min() > 0.015 and per_frame[0] < per_frame[len(per_frame) // 2]
    assert coeffs_hidden.mean(axis=0).min() > 0.05
    assert got.mean() == pytest.approx(ref.mean(), rel=0.1)
