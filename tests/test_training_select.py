"""[train] select_on = "real": the epoch kept is the one with the lowest FRR on the selection half of the
real recordings of the keyword; the report half gives the figures. Real Keras training, the real decision
replay, a real-voice folder written here from espeak-ng speech (nothing under /work/shared is read)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kws_edge.errors import ConfigError
from tests.conftest import kws_cmd, needs_tts, shipped
from training import realvoice as rv
from training.data import FeatureSet
from training.recipe import parse_recipe
from training.testing import random_label_sets

LABELS = ("_silence_", "_unknown_", "computer")


def recipe(realvoice_dir: Path | None = None, **train: Any) -> Any:
    return parse_recipe({
        "name": "select_test", "kind": "wakeword", "keywords": ["computer"], "seed": 4,
        "model": {"filters": 8, "blocks": 1, "dropout": 0.0, "normalize": True},
        "train": {"epochs": 3, "batch_size": 32, "learning_rate": 0.01, **train},
        "dataset": {"realvoice_dir": str(realvoice_dir or "")},
    })


@pytest.fixture(scope="module")
def sets() -> dict[str, FeatureSet]:
    return random_label_sets(160, 128, 13, [0.2, 0.5, 0.3])


@pytest.fixture(scope="module")
def root(realvoice_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture folder with its two "computer" clips copied under 12 names, so both halves hold some."""
    out = tmp_path_factory.mktemp("rv_select")
    for folder in ("view_glass", "smart_mirror"):
        shutil.copytree(realvoice_root / folder, out / folder)
    (out / "computer").mkdir()
    clips = sorted((realvoice_root / "computer").glob("*.flac"))
    for i in range(12):
        shutil.copy(clips[i % len(clips)], out / "computer" / f"take_{i:02d}.flac")
    return out


def test_halves_are_stable_even_and_by_file_name_only() -> None:
    names = [f"{i:08x}.flac" for i in range(2000)]
    halves = [rv.half(n) for n in names]
    assert set(halves) == {"select", "report"}
    assert 900 <= halves.count("select") <= 1100
    assert [rv.half(Path("/a/b") / n) for n in names[:50]] == halves[:50]  # the folder does not matter


def test_select_on_is_validated_and_absent_from_old_recipes() -> None:
    assert "select_on" not in recipe().to_dict()["train"]
    assert recipe(select_on="real").to_dict()["train"]["select_on"] == "real"
    with pytest.raises(ConfigError, match=r"train\.select_on: expected 'synthetic' or 'real', got 'best'"):
        recipe(select_on="best")


def test_keep_best_keeps_the_lowest_real_frr_later_on_ties(sets: dict[str, FeatureSet]) -> None:
    """KeepBest with a scripted selector (the real one is below): epoch 3 of 0.6, 0.4, 0.4, 0.7 is kept, and
    the model ends with exactly the weights it had after that epoch."""
    import keras

    from training.model import DsCnnConfig, build_dscnn
    from training.train import _keep_best

    class Scripted:
        def __init__(self) -> None:
            self.values = iter([0.6, 0.4, 0.4, 0.7])

        def frr(self, model: Any) -> dict[str, Any]:
            v = next(self.values)
            return {"frr": v, "conditions": {"clean": {"frr": v, "threshold": 0.5}}}

    class Snapshots(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.weights: list[list[np.ndarray]] = []

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.weights.append(self.model.get_weights())

    keras.utils.set_random_seed(1)
    model = build_dscnn(DsCnnConfig(filters=8, blocks=1, dropout=0.0), sets["train"].x.shape[1:], len(LABELS))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    keep, snaps = _keep_best(Scripted()), Snapshots()
    tr = sets["train"]
    model.fit(tr.x, tr.y, epochs=4, batch_size=32, callbacks=[keep, snaps], verbose=0)
    assert (keep.best_epoch, keep.best, [e["frr"] for e in keep.real]) == (2, -0.4, [0.6, 0.4, 0.4, 0.7])
    model.set_weights(keep.weights)
    for got, want in zip(model.get_weights(), snaps.weights[2], strict=True):
        np.testing.assert_array_equal(got, want)
    assert any(not np.array_equal(a, b) for a, b in zip(snaps.weights[2], snaps.weights[3], strict=True))


@needs_tts
def test_training_selects_on_the_selection_half(root: Path, sets: dict[str, FeatureSet],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from training.select import RealSelector
    from training.train import train_model

    r = recipe(root, select_on="real")
    model, history = train_model(r, sets, verbose=False)
    sel = history["real_selection"]
    select_half = sum(rv.half(p) == "select" for p in (root / "computer").glob("*.flac"))
    assert sel["clips"]["positive"] == select_half and 0 < select_half < 12
    frrs = [e["frr"] for e in sel["epochs"]]
    assert len(frrs) == 3 and all(0.0 <= f <= 1.0 for f in frrs)
    kept = max(i for i, f in enumerate(frrs) if f == min(frrs))  # the lowest; ties: the later epoch
    assert sel["kept"] == {"phase": "first pass", "epoch": kept + 1, "frr": min(frrs)}
    again = RealSelector(r, 49, root).frr(model)  # the model holds the kept epoch's weights
    assert again["frr"] == min(frrs)
    assert capsys.readouterr().out.count("real-voice selection, first pass epoch") == 3


@needs_tts
def test_without_recordings_of_the_keyword_selection_is_refused(realvoice_root: Path, tmp_path: Path,
                                                                 sets: dict[str, FeatureSet]) -> None:
    from training.train import train_model

    shutil.copytree(realvoice_root / "view_glass", tmp_path / "view_glass")
    r = recipe(tmp_path, select_on="real")
    with pytest.raises(ConfigError, match=r"no real recordings of computer in .*use select_on = 'synthetic'"):
        train_model(r, sets, verbose=False)


@needs_tts
def test_eval_reports_one_half(root: Path, tmp_path: Path) -> None:
    model = shipped("computer")
    halves = {h: sum(rv.half(p) == h for p in (root / "computer").glob("*.flac")) for h in rv.HALVES}
    for arg, n in (("report", halves["report"]), ("select", halves["select"]), ("all", 12)):
        out = tmp_path / arg
        r = subprocess.run(kws_cmd("eval", "--model", str(model), "--real-only", "--realvoice-dir", str(root),
                                   "--report-dir", str(out), "--real-positives", arg),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        real = json.loads((out / "real_voice.json").read_text())
        assert real["clips"]["positive"] == {"computer": n}
        assert real.get("positives_half") == (None if arg == "all" else arg)
        assert real["at_threshold"]["clean"]["rejects"]["clips"] == n
