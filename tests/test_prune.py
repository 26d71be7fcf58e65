"""[train] prune_sparsity: gradual magnitude pruning (training/prune.py) through the real training loop and
the real int8 exports (window and streaming); seeded random windows and labels, tiny models."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kws_edge.errors import ConfigError
from training import prune
from training.data import FeatureSet
from training.recipe import parse_recipe
from training.testing import random_label_sets, representative_noise_windows

LABELS = ("_silence_", "_unknown_", "computer")


def recipe(family: str = "stream", **train: Any) -> Any:
    model = {"family": family, "filters": 16, "blocks": 1, "dropout": 0.0, "normalize": True}
    if family == "stream":
        model |= {"kernel": 3, "norm_frames": 4, "pool_frames": 8}
    return parse_recipe({
        "name": "prune_test", "kind": "wakeword", "keywords": ["computer"], "seed": 2, "model": model,
        "train": {"epochs": 3, "batch_size": 32, "learning_rate": 0.01, **train},
    })


@pytest.fixture(scope="module")
def sets() -> dict[str, FeatureSet]:
    return random_label_sets(160, 128, 17, [0.2, 0.5, 0.3])


def zeros(model: Any) -> list[np.ndarray]:
    return [np.asarray(var.numpy()) == 0 for _, var in prune.prunable_kernels(model)]


def test_schedule_is_cubic_from_begin_to_end() -> None:
    assert prune.schedule(0, 0.5, 10, 110) == 0.0
    assert prune.schedule(10, 0.5, 10, 110) == 0.0
    assert prune.schedule(60, 0.5, 10, 110) == pytest.approx(0.5 * (1 - 0.5 ** 3))
    assert prune.schedule(35, 0.8, 10, 110) == pytest.approx(0.8 * (1 - 0.75 ** 3))
    assert prune.schedule(110, 0.5, 10, 110) == 0.5
    assert prune.schedule(500, 0.5, 10, 110) == 0.5
    steps = [prune.schedule(t, 0.5, 10, 110) for t in range(0, 120)]
    assert steps == sorted(steps)  # never un-prunes


def test_magnitude_mask_drops_the_smallest() -> None:
    w = np.array([[0.3, -0.1], [-2.0, 0.05]])
    assert prune.magnitude_mask(w, 0.5).tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert prune.magnitude_mask(w, 0.0).all()


def test_callback_reaches_the_target_and_pruned_weights_stay_zero(sets: dict[str, FeatureSet]) -> None:
    import keras

    from training.model import DsCnnConfig, build_dscnn

    keras.utils.set_random_seed(3)
    model = build_dscnn(DsCnnConfig(filters=8, blocks=1, dropout=0.0), (49, 10), len(LABELS))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    tr = sets["train"]
    cb = prune.pruning_callback(0.6, begin=1, end=6, update_every=2)
    model.fit(tr.x, tr.y, batch_size=32, epochs=2, callbacks=[cb], verbose=0)  # 8 steps
    assert cb.at_target and cb.step == 8
    kinds = {type(lay).__name__ for lay in model.layers if lay.name in prune.kernel_sparsity(model)["layers"]}
    assert kinds == {"Conv2D", "DepthwiseConv2D", "Dense"}
    for name, var in prune.prunable_kernels(model):
        w = var.numpy()
        assert np.count_nonzero(w == 0) == round(0.6 * w.size), name
    before = zeros(model)
    others = [w.copy() for w in model.get_weights()]
    model.fit(tr.x, tr.y, batch_size=32, epochs=2, callbacks=[cb], verbose=0)
    after = zeros(model)
    assert all((a == b).all() for a, b in zip(before, after, strict=True))  # the same weights, still zero
    assert any(not np.array_equal(a, b) for a, b in zip(others, model.get_weights(), strict=True))  # it trained
    assert prune.kernel_sparsity(model)["overall"] == pytest.approx(0.6, abs=0.01)


def test_stream_recipe_prunes_the_kept_weights_and_the_streaming_tflite(sets: dict[str, FeatureSet]) -> None:
    from training.streaming import streaming_tflite
    from training.train import train_model

    r = recipe(prune_sparsity=0.5, prune_begin=0.0, prune_end=0.5)
    model, history = train_model(r, sets, verbose=False)
    p = history["pruning"]
    assert p["end_step"] == 6 and p["overall"] == pytest.approx(0.5, abs=0.01)
    assert history["best_epoch"] >= 2  # epoch 1 ends before the target sparsity: never kept
    assert all(v == pytest.approx(0.5, abs=0.02) for v in p["layers"].values())
    data = streaming_tflite(model, r.model.stream_config(), 3, sets["train"].x[:8])
    got = prune.tflite_sparsity(data)
    assert len(got["layers"]) == 4  # conv0, block depthwise and pointwise, head
    assert got["overall"] >= 0.5


def test_pruned_int8_export_compresses_smaller() -> None:
    import keras

    from training.export import convert_int8
    from training.model import DsCnnConfig, build_dscnn

    keras.utils.set_random_seed(4)
    model = build_dscnn(DsCnnConfig(filters=32, blocks=2, dropout=0.0), (49, 10), len(LABELS))
    rep = representative_noise_windows(8, 4)
    dense = convert_int8(model, rep)
    for _, var in prune.prunable_kernels(model):
        var.assign(var.numpy() * prune.magnitude_mask(var.numpy(), 0.5))
    pruned = convert_int8(model, rep)
    assert prune.tflite_sparsity(dense)["overall"] < 0.05
    assert prune.tflite_sparsity(pruned)["overall"] >= 0.5
    assert abs(len(pruned) - len(dense)) < 64  # int8 kernels stay dense...
    assert prune.gzip_bytes(pruned) < 0.85 * prune.gzip_bytes(dense)  # ...and pay once compressed


@pytest.mark.parametrize(("train", "match"), [
    ({"prune_sparsity": 1.0}, r"train\.prune_sparsity: expected a fraction in \[0, 1\), got 1\.0"),
    ({"prune_sparsity": -0.1}, r"train\.prune_sparsity: expected a fraction in \[0, 1\), got -0\.1"),
    ({"prune_sparsity": 0.5, "prune_begin": 0.6, "prune_end": 0.6}, r"train\.prune_begin/prune_end"),
    ({"prune_sparsity": 0.5, "prune_end": 1.5}, r"train\.prune_begin/prune_end: .* got 0\.2, 1\.5"),
])
def test_bad_prune_keys(train: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        recipe(**train)


def test_recipe_without_pruning_reads_as_before() -> None:
    assert "prune_sparsity" not in recipe().to_dict()["train"]
    assert recipe(prune_sparsity=0.5).to_dict()["train"]["prune_end"] == 0.7
