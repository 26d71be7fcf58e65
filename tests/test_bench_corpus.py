"""Bench corpus: deterministic for a seed, labels where the speech is, SNR as asked, no keyword in negatives."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import noise as nz
from benchmarks.corpus import CorpusConfig, build_corpus
from benchmarks.text import sentence
from kws_edge.audio import read_wav

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("flite") is None,
                                reason="espeak-ng and flite are needed to synthesize the corpus")

VOICES = ("espeak:en-029+m3", "espeak:en-gb-scotland+f4", "flite:rms")


def _config(seed: int = 7) -> CorpusConfig:
    return CorpusConfig(("hey_jarvis",), VOICES, seed, per_stream=4, conditions=((None, None), (10, "babble"),
                        (5, "white")), negatives_s=20.0, babble_s=4.0, babble_talkers=2)


def _digest(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


@pytest.fixture(scope="module")
def corpus_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    a = build_corpus(_config(), tmp_path_factory.mktemp("a"))
    b = build_corpus(_config(), tmp_path_factory.mktemp("b"))
    return a, b


def test_same_seed_gives_identical_files(corpus_pair: tuple) -> None:
    a, b = corpus_pair
    assert _digest(a.root) == _digest(b.root)
    assert len(_digest(a.root)) == 6  # 3 positives streams, negatives, labels, segment counts


def test_other_seed_gives_other_audio(tmp_path: Path, corpus_pair: tuple) -> None:
    c = build_corpus(_config(seed=8), tmp_path)
    assert _digest(c.root)["hey_jarvis_clean.wav"] != _digest(corpus_pair[0].root)["hey_jarvis_clean.wav"]


def test_second_build_reuses_the_cache(tmp_path: Path) -> None:
    first = build_corpus(_config(), tmp_path)
    (first.root / "marker").write_text("kept")
    again = build_corpus(_config(), tmp_path)
    assert again.root == first.root and (again.root / "marker").exists()


def test_labels_are_spaced_and_on_the_speech(corpus_pair: tuple) -> None:
    corpus = corpus_pair[0]
    clean = next(s for s in corpus.streams if s.name == "hey_jarvis_clean")
    x = read_wav(corpus.path(clean)).astype(np.float64)
    assert len(x) / 16000 == pytest.approx(clean.duration_s, abs=1e-3)
    starts = [i["start"] for i in clean.instances]
    gaps = np.diff(starts)
    assert len(starts) == 4 and np.all(gaps >= 3.0) and np.all(gaps <= 6.5)
    for inst in clean.instances:
        a, b = int(inst["start"] * 16000), int(inst["end"] * 16000)
        speech = nz.rms(x[a:b])
        assert speech > 20 * nz.rms(x[a - 3200:a - 800])  # the label starts where speech starts
        assert 0.3 < inst["end"] - inst["start"] < 2.5
        assert inst["voice"] in VOICES and inst["text"] == "hey jarvis"


def test_noise_level_gives_the_requested_snr(corpus_pair: tuple) -> None:
    corpus = corpus_pair[0]
    s = next(s for s in corpus.streams if s.name == "hey_jarvis_snr5_white")
    x = read_wav(corpus.path(s)).astype(np.float64)
    first = s.instances[0]
    noise_only = x[: int((first["start"] - 0.3) * 16000)]
    snr = 20 * np.log10(nz.db_to_rms(corpus.config["speech_dbfs"]) / nz.rms(noise_only))
    assert snr == pytest.approx(5.0, abs=0.5)


def test_negatives_are_long_enough_and_unlabelled(corpus_pair: tuple) -> None:
    neg = [s for s in corpus_pair[0].streams if s.kind == "negative"]
    assert len(neg) == 1 and neg[0].instances == [] and neg[0].duration_s >= 20.0


def test_sentences_never_contain_a_keyword() -> None:
    rng = np.random.default_rng(0)
    said = [sentence(rng, ("hey jarvis", "alexa")) for _ in range(2000)]
    assert not any("hey jarvis" in s or " alexa " in f" {s} " for s in said)
    assert any("hey travis" in s for s in said)  # near misses are there


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_default_voices_are_never_training_voices(seed: int) -> None:
    pytest.importorskip("training.tts")
    from benchmarks.tts import default_voices
    from training import tts as ttts
    from training.recipe import SynthesisConfig

    s = SynthesisConfig()
    recipe = {"seed": seed, "synthesis": {"holdout_fraction": 0.15, "val_fraction": 0.05,
                                          "holdout_voices": ["flite:rms"], "engines": list(s.engines)}}
    voices, source = default_voices({"recipe": recipe})
    split = ttts.split_voices(ttts.all_voices(s.engines), 0.15, 0.05, seed, ("flite:rms",))
    used = {f"{'espeak' if v.engine == 'espeak-ng' else 'flite'}:{v.name}" for v in split["train"] + split["val"]}
    assert voices and not set(voices) & used
    assert "flite:rms" in voices and f"seed {seed}" in source


def test_voice_roles_say_which_voices_a_model_trained_on() -> None:
    pytest.importorskip("training.tts")
    from benchmarks.tts import default_voices, engine_of, voice_roles

    recipe = {"seed": 1, "synthesis": {"engines": ["espeak-ng", "flite", "festival"],
                                       "holdout_voices": ["flite:rms"]}}
    voices, _ = default_voices({"recipe": recipe})
    roles = voice_roles(voices, {"m": {"recipe": recipe}})
    by_engine: dict[str, set[str]] = {}
    for v in voices:
        by_engine.setdefault(engine_of(v), set()).add(roles[v]["kws_edge"]["m"])
    assert by_engine["espeak-ng"] == {"held out"} and by_engine["flite"] == {"held out"}
    if "festival" in by_engine:  # too few voices to hold out: trained on, and the report says so
        assert by_engine["festival"] == {"trained on"}
    if "espeak-ng-accent" in by_engine:
        assert by_engine["espeak-ng-accent"] == {"engine not used"}
    assert engine_of("espeak:de+m3") == "espeak-ng-accent" and engine_of("piper:en_US-joe-medium") == "piper"
