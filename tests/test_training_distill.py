"""[train] teacher: a window model's posteriors as soft targets for a (streaming) student.

A tiny seeded DS-CNN teacher is exported with the real export path (its last layer scaled up, so its
posteriors are far from uniform and differ between windows); the student is the real stream model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kws_edge.errors import ConfigError
from kws_edge.features import FeatureParams
from training.data import FeatureSet
from training.recipe import parse_recipe
from training.testing import random_label_sets, representative_noise_windows

LABELS = ("_silence_", "_unknown_", "yes", "no")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Manifest path of a tiny seeded DS-CNN with peaked, input-dependent posteriors."""
    import keras

    from training.export import ExportSpec, export_model
    from training.model import DsCnnConfig, build_dscnn

    keras.utils.set_random_seed(5)
    model = build_dscnn(DsCnnConfig(filters=8, blocks=1, dropout=0.0, normalize=True), (49, 10), len(LABELS))
    dense = [lay for lay in model.layers if lay.get_weights()][-1]
    features = keras.Model(model.inputs, dense.input).predict(representative_noise_windows(64, 7), verbose=0)
    w, _ = dense.get_weights()
    w = w / features.std(axis=0).mean() * 8.0  # logits that vary between windows by several units
    dense.set_weights([w, -features.mean(axis=0) @ w])  # centred: every class wins some windows
    spec = ExportSpec(name="teacher", kind="commands", labels=LABELS, keywords=("yes", "no"),
                      thresholds={"yes": 0.5, "no": 0.5}, features=FeatureParams(), description="test teacher")
    return export_model(model, spec, representative_noise_windows(16, 5), tmp_path_factory.mktemp("teacher"),
                        training={"recipe": "tests/test_training_distill.py"})


def recipe(time_masks: int = 0, keywords: tuple[str, ...] = ("yes", "no"), **train: Any) -> Any:
    return parse_recipe({
        "name": "distill_test", "kind": "commands", "keywords": list(keywords), "seed": 3,
        "model": {"family": "stream", "filters": 8, "blocks": 1, "kernel": 3, "norm_frames": 4, "pool_frames": 8,
                  "dropout": 0.0, "normalize": True},
        "train": {"epochs": 6, "batch_size": 32, "learning_rate": 0.01, "unknown_weight": 2.0,
                  "time_masks": time_masks, "time_mask_frames": 4, **train},
    })


@pytest.fixture(scope="module")
def sets() -> dict[str, FeatureSet]:
    return random_label_sets(240, 200, 11, [0.1, 0.5, 0.2, 0.2])


def mean_kl(p_teacher: np.ndarray, p_student: np.ndarray) -> float:
    p, q = np.clip(p_teacher, 1e-7, 1), np.clip(p_student, 1e-7, 1)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def untrained_student(r: Any, x: np.ndarray) -> np.ndarray:
    """The student as train_model builds it, before any step (same seed, same builder)."""
    import keras

    from training.streaming import build_stream_classifier

    keras.utils.set_random_seed(r.seed)
    model = build_stream_classifier(r.model.stream_config(), x.shape[1], x.shape[2], len(r.labels))
    return np.asarray(model.predict(x, verbose=0))


def test_the_student_moves_towards_the_teacher(teacher: Path, sets: dict[str, FeatureSet]) -> None:
    from training.distill import teacher_posteriors
    from training.train import train_model

    x = sets["train"].x
    p_teacher = teacher_posteriors(str(teacher), x)
    assert p_teacher.max(axis=1).mean() > 0.7  # a peaked teacher, else the test shows little
    assert len(set(p_teacher.argmax(axis=1))) > 1
    r = recipe(teacher=str(teacher), distill_weight=1.0, distill_temperature=2.0)
    before = mean_kl(p_teacher, untrained_student(r, x))
    student, history = train_model(r, sets, verbose=False)
    after = mean_kl(p_teacher, student.predict(x, verbose=0))
    plain, _ = train_model(recipe(), sets, verbose=False)  # the same student on the (random) labels alone
    assert after < 0.5 * before
    assert after < 0.7 * mean_kl(p_teacher, plain.predict(x, verbose=0))
    assert "val_accuracy" in history and history["best_epoch"] >= 1


@pytest.mark.parametrize("time_masks", [0, 1])
def test_weight_zero_trains_as_without_teacher(teacher: Path, sets: dict[str, FeatureSet], time_masks: int) -> None:
    """alpha = 0: bit for bit the same model as without a teacher, class weights and SpecAugment masks
    included (training is reproducible for a seed; dropping the class weights, unknown_weight 2 -> 1,
    moves these outputs by 0.03 to 0.12)."""
    from training.train import train_model

    x = sets["val"].x
    plain, h0 = train_model(recipe(time_masks, epochs=3), sets, verbose=False)
    zero, h1 = train_model(recipe(time_masks, epochs=3, teacher=str(teacher), distill_weight=0.0), sets,
                           verbose=False)
    np.testing.assert_array_equal(zero.predict(x, verbose=0), plain.predict(x, verbose=0))
    assert h1["val_accuracy"] == h0["val_accuracy"]


def test_without_teacher_the_recipe_reads_as_before() -> None:
    r = recipe()
    assert r.train.teacher == ""
    assert not {"teacher", "distill_weight", "distill_temperature"} & set(r.to_dict()["train"])


def test_a_teacher_that_does_not_fit_is_refused(teacher: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.teacher: the teacher's labels .*'no'.* differ from the "
                                          r"recipe's \['_silence_', '_unknown_', 'yes'\]"):
        recipe(keywords=("yes",), teacher=str(teacher))
    other = tmp_path / "other"
    shutil.copytree(teacher.parent, other)
    data = json.loads((other / teacher.name).read_text())
    data["features"]["lowfreq"] = 50.0
    (other / teacher.name).write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"train\.teacher: the teacher's feature parameters .*lowfreq=50\.0.* "
                                          r"differ from the recipe's .*lowfreq=20\.0"):
        recipe(teacher=str(other / teacher.name))
    with pytest.raises(ConfigError, match=r"train\.teacher: expected a model manifest.*not found"):
        recipe(teacher=str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match=r"train\.distill_weight: expected a fraction in \[0, 1\], got 1\.5"):
        recipe(teacher=str(teacher), distill_weight=1.5)
    with pytest.raises(ConfigError, match=r"train\.distill_temperature: expected a number > 0"):
        recipe(teacher=str(teacher), distill_temperature=0.0)
