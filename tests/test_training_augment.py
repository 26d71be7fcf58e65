"""Training-side augmentation that stands in for real rooms, microphones and speakers, and the rule that
validation-only real recordings never reach training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kws_edge.errors import ConfigError
from training import augment as aug
from training.recipe import parse_recipe

BASE = {"name": "t", "kind": "wakeword", "keywords": ["computer"]}


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    return float(spec[(f >= lo) & (f < hi)].sum())


def test_microphone_is_seeded_and_changes_the_spectrum() -> None:
    x = np.random.default_rng(0).standard_normal(16000)
    a = aug.microphone(x, np.random.default_rng(5))
    b = aug.microphone(x, np.random.default_rng(5))
    assert np.array_equal(a, b)
    assert np.isfinite(a).all() and a.shape == x.shape
    # over many random microphones the lowest band is always cut (high-pass >= 60 Hz) and the response varies
    ratios = []
    for seed in range(20):
        y = aug.microphone(x, np.random.default_rng(seed))
        low = _band_energy(y, 0, 25) / _band_energy(y, 0, 8000)
        assert low < 0.5 * _band_energy(x, 0, 25) / _band_energy(x, 0, 8000)
        ratios.append(_band_energy(y, 4000, 8000) / _band_energy(y, 300, 3000))
    assert max(ratios) > 3 * min(ratios)


def test_validation_only_recordings_are_refused_for_training() -> None:
    for folder in ("computer", "view_glass"):
        with pytest.raises(ConfigError, match="validation only"):
            parse_recipe(BASE | {"dataset": {"real_negatives": ["snowboy", folder]}})
    r = parse_recipe(BASE | {"dataset": {"real_negatives": ["snowboy", "smart_mirror"]}})
    assert r.dataset.real_negatives == ("snowboy", "smart_mirror")


def test_missing_real_negatives_folder_is_a_clear_error(tmp_path: Path) -> None:
    from training.pipeline import check_inputs

    (tmp_path / "snowboy").mkdir()
    r = parse_recipe(BASE | {"synthesis": {"engines": ["espeak-ng"]},
                             "dataset": {"real_negatives": ["snowboy"], "realvoice_dir": str(tmp_path)}})
    with pytest.raises(ConfigError, match="snowboy"):
        check_inputs(r)


def test_spec_augment_masks_runs_of_frames_and_coefficients() -> None:
    pytest.importorskip("tensorflow")
    from training.train import spec_augmented

    r = parse_recipe(BASE | {"train": {"time_masks": 2, "time_mask_frames": 6, "freq_masks": 3,
                                       "batch_size": 64}})
    rng = np.random.default_rng(1)
    n = 256
    # window i sits around 100 * i, so a shuffled, masked window still tells which one it was
    x = (rng.standard_normal((n, 49, 10)) + 100.0 * np.arange(n)[:, None, None]).astype(np.float32)
    y = rng.integers(0, 3, n)
    batches = list(spec_augmented(x, y, {0: 1.0, 1: 2.0, 2: 0.5}, r))
    xb = np.concatenate([b[0].numpy() for b in batches])
    yb = np.concatenate([b[1].numpy() for b in batches])
    wb = np.concatenate([b[2].numpy() for b in batches])
    assert xb.shape == x.shape
    masked_windows = 0
    for k in range(n):
        i = round(float(np.median(xb[k])) / 100.0)
        assert yb[k] == y[i] and wb[k] == {0: 1.0, 1: 2.0, 2: 0.5}[int(y[i])]
        diff = xb[k] != x[i]
        if not diff.any():
            continue
        masked_windows += 1
        mean = np.broadcast_to(x[i].mean(axis=0), x[i].shape)
        # whole frames or whole coefficients (an entry may equal its mean already, so "mostly" changed)
        rows, cols = diff.mean(axis=1) > 0.5, diff.mean(axis=0) > 0.5
        pattern = rows[:, None] | cols[None, :]
        assert not (diff & ~pattern).any()
        assert np.allclose(xb[k][pattern], mean[pattern], atol=1e-2)
        assert rows.sum() <= 2 * 6 and cols.sum() <= 3
    assert masked_windows > 0.6 * n


def test_room_tone_keeps_only_the_quiet_stretches_of_real_clips() -> None:
    rng = np.random.default_rng(3)
    floor = rng.standard_normal(48000) * 20  # a device's noise floor
    clip = floor.copy()
    clip[16000:32000] += np.sin(np.arange(16000) * 0.2) * 8000  # one second of loud "speech" in the middle
    rooms = aug.room_tone([clip.astype(np.int16), np.zeros(100, np.int16)])
    assert len(rooms) == 1  # the 100-sample clip is too short to have a quiet stretch
    quiet = rooms[0]
    assert len(quiet) >= 0.25 * len(clip)
    assert float(np.max(np.abs(quiet))) < 200  # no speech in it
    bank = aug.NoiseBank([], [], rooms)
    seg = bank.segment("room", 16000, np.random.default_rng(1))
    assert seg.shape == (16000,) and abs(float(np.sqrt(np.mean(seg**2))) - 1.0) < 1e-6
