"""Synthesis and augmentation are deterministic per seed and hold out whole voices (real espeak-ng/flite)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from training import data, sources, tts
from training.recipe import parse_recipe

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("flite") is None,
                                reason="espeak-ng and flite (Debian packages espeak-ng, flite) not installed")

SMALL = {"positives_per_keyword": 6, "test_per_keyword": 3, "confusables": 6, "unknown_words": 6,
         "sentences": 2, "silence": 4}


def _recipe(seed: int = 5) -> object:
    return parse_recipe({"name": "t", "kind": "wakeword", "keywords": ["hey jarvis"], "seed": seed,
                         "synthesis": SMALL, "augment": {"copies": 1}}, "test")


def test_voice_split_holds_out_whole_voices() -> None:
    r = _recipe()
    split = sources.voice_split(r)  # type: ignore[arg-type]
    groups = {k: {v.group for v in vs} for k, vs in split.items()}
    assert not groups["train"] & groups["test"]
    assert not groups["train"] & groups["val"]
    assert "flite:rms" in groups["test"]
    assert split == sources.voice_split(_recipe())  # type: ignore[arg-type]


def test_plan_is_deterministic_and_depends_on_seed() -> None:
    voices = sources.voice_split(_recipe())  # type: ignore[arg-type]
    a = sources.plan_jobs(_recipe(5), voices, stream_seconds=10)  # type: ignore[arg-type]
    b = sources.plan_jobs(_recipe(5), voices, stream_seconds=10)  # type: ignore[arg-type]
    c = sources.plan_jobs(_recipe(6), voices, stream_seconds=10)  # type: ignore[arg-type]
    assert a == b
    assert a != c
    test_voices = {v.id for v in voices["test"]}
    assert all(j.voice.id in test_voices for j in a if j.split in ("test", "stream"))
    assert all(j.voice.id not in test_voices for j in a if j.split == "train")


def test_synthesis_and_features_are_reproducible(tmp_path: Path) -> None:
    r = _recipe()
    voices = sources.voice_split(r)  # type: ignore[arg-type]
    jobs = sources.plan_jobs(r, voices)[:12]  # type: ignore[arg-type]
    one = sources.synthesize_jobs(jobs, tmp_path / "c1", workers=1)
    two = sources.synthesize_jobs(jobs, tmp_path / "c2", workers=1)
    assert len(one) == len(two) > 0
    for x, y in zip(one, two, strict=True):
        assert np.array_equal(x.samples, y.samples)
        assert x.samples.dtype == np.int16 and len(x.samples) > 1600
    clips = sources.by_split(one)
    bank = data.noise_bank(r, clips.get("train", []), 0)  # type: ignore[arg-type]
    f1 = data.build_features(r, clips, bank, tmp_path / "c1", workers=1)  # type: ignore[arg-type]
    f2 = data.build_features(r, clips, bank, tmp_path / "c2", workers=1)  # type: ignore[arg-type]
    for split in f1:
        assert np.array_equal(f1[split].x, f2[split].x)
        assert f1[split].x.shape[1:] == (49, 10)
    cached = data.build_features(r, clips, bank, tmp_path / "c1", workers=1)  # type: ignore[arg-type]
    assert np.array_equal(cached["train"].x, f1["train"].x)


def test_flite_and_espeak_voices_speak_at_16k() -> None:
    for voice in (tts.Voice("espeak-ng", "en-gb+f3", "espeak-ng:f3"), tts.Voice("flite", "kal", "flite:kal")):
        x = tts.synthesize(voice, "hello there", rate=1.1, pitch=0.4)
        assert x.dtype == np.int16
        assert 0.3 < len(x) / 16000 < 3.0
        assert np.abs(x).max() > 1000
        assert np.array_equal(x, tts.synthesize(voice, "hello there", rate=1.1, pitch=0.4))
