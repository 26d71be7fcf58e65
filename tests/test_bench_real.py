"""Bench real-voice streams and their scoring: a tiny FLAC fixture folder, hand-made detection traces."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import scoring
from benchmarks.bench import _score_real, _SweepDetections
from benchmarks.realcorpus import RealConfig, build_real_corpus
from kws_edge.audio import read_wav, write_wav

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng makes the fixture clips")
PHRASES = {"computer": "computer", "view_glass": "view glass", "smart_mirror": "smart mirror", "snowboy": "snowboy"}
VOICES = ("en-us+m3", "en-gb+f2", "en-029+m1")


def make_realvoice(root: Path, per_folder: int = 3) -> dict[str, list[int]]:
    """A real-voice folder of 16 kHz mono FLAC clips (espeak-ng, 0.3-0.5 s of silence around) for every
    phrase, plus ``extra/`` with one WAV of other speech; returns folder -> clip lengths (samples)."""
    import soundfile as sf

    from training import tts as ttts

    lengths: dict[str, list[int]] = {}
    rng = np.random.default_rng(0)
    for folder, text in PHRASES.items():
        (root / folder).mkdir(parents=True)
        for i in range(per_folder):
            v = ttts.Voice("espeak-ng", VOICES[i % len(VOICES)], "fixture")
            x = ttts.synthesize(v, text, 1.0 + 0.1 * i)
            pad = [np.zeros(int(rng.uniform(0.3, 0.5) * 16000), dtype=np.int16) for _ in range(2)]
            clip = np.concatenate([pad[0], x, pad[1]])
            sf.write(str(root / folder / f"{folder}_{i:02d}.flac"), clip, 16000, subtype="PCM_16")
            lengths.setdefault(folder, []).append(len(clip))
    (root / "extra").mkdir()
    write_wav(root / "extra" / "talk.wav", ttts.synthesize(ttts.Voice("espeak-ng", "en-us", "x"),
                                                           "the kettle is boiling in the kitchen"))
    return lengths


@pytest.fixture(scope="module")
def realvoice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[int]]]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng makes the fixture clips")
    root = tmp_path_factory.mktemp("realvoice")
    return root, make_realvoice(root)


def _cfg(root: Path, seed: int = 5) -> RealConfig:
    return RealConfig(str(root), str(root / "extra"), seed)


def _digest(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


@needs_espeak
def test_real_streams_are_deterministic_and_cached(realvoice: tuple, tmp_path: Path) -> None:
    root, _ = realvoice
    a = build_real_corpus(_cfg(root), tmp_path / "a")
    b = build_real_corpus(_cfg(root), tmp_path / "b")
    assert _digest(a.root) == _digest(b.root)
    assert {s.name for s in a.streams} == {"real_speech", "real_computer_speech", "real_computer_clean",
                                           "real_computer_snr10"}
    c = build_real_corpus(_cfg(root, seed=6), tmp_path / "a")
    assert _digest(c.root)["real_speech.wav"] != _digest(a.root)["real_speech.wav"]
    (a.root / "marker").write_text("kept")
    assert (build_real_corpus(_cfg(root), tmp_path / "a").root / "marker").exists()


@needs_espeak
def test_no_training_folder_is_bench_audio(realvoice: tuple, tmp_path: Path) -> None:
    root, lengths = realvoice
    corpus = build_real_corpus(_cfg(root), tmp_path)
    by_name = {s.name: s for s in corpus.streams}
    speech = by_name["real_speech"]
    assert {c["source"] for c in speech.clips} == {"view_glass", "pocketsphinx"}
    assert len(speech.clips) == len(lengths["view_glass"]) + 1 and speech.excluded_for == []
    assert {c["source"] for c in by_name["real_computer_speech"].clips} == {"computer"}
    assert by_name["real_computer_speech"].excluded_for == ["computer"]
    every = [c["file"] for s in corpus.streams for c in s.clips] + [i["voice"] for s in corpus.streams
                                                                   for i in s.instances]
    assert every and not any("smart_mirror" in f or "snowboy" in f for f in every)
    assert [s.name for s in corpus.for_keyword("computer")] == ["real_speech", "real_computer_clean",
                                                                "real_computer_snr10"]
    assert [s.name for s in corpus.for_keyword("hey_jarvis")] == ["real_speech", "real_computer_speech"]


@needs_espeak
def test_positive_spans_cover_whole_clips(realvoice: tuple, tmp_path: Path) -> None:
    root, lengths = realvoice
    corpus = build_real_corpus(_cfg(root), tmp_path)
    for s in (x for x in corpus.streams if x.kind == "positive"):
        assert len(s.instances) == len(lengths["computer"]) and all(i["text"] == "computer" for i in s.instances)
        spans = sorted(round((i["end"] - i["start"]) * 16000) for i in s.instances)
        assert np.allclose(spans, sorted(lengths["computer"]), atol=16)  # 1 ms rounding
    clean = next(s for s in corpus.streams if s.name == "real_computer_clean")
    x = read_wav(corpus.path(clean)).astype(np.float64)
    inside = np.zeros(len(x), dtype=bool)
    for i in clean.instances:
        inside[int(i["start"] * 16000):int(i["end"] * 16000) + 1] = True
    loud = np.abs(x) > 200  # the speech, never the 1-LSB floor between clips
    assert loud.sum() > 16000 * 0.3 and not (loud & ~inside).any()


def _neg(name: str, hours: float, clips: list[tuple[float, float, str]]) -> SimpleNamespace:
    return SimpleNamespace(name=name, kind="negative", instances=[], duration_s=hours * 3600, snr_db=None,
                           noise=None, clips=[{"start": a, "end": b, "source": s} for a, b, s in clips])


def _pos(name: str, snr: int | None, starts: list[float]) -> SimpleNamespace:
    return SimpleNamespace(name=name, kind="positive", duration_s=60.0, snr_db=snr, noise=None if snr is None
                           else "pink", clips=[], instances=[{"start": a, "end": a + 1.5, "voice": "real:computer/x",
                                                              "rt60_s": None} for a in starts])


def test_real_scoring_counts_fa_per_hour_and_frr_from_hand_made_traces() -> None:
    neg = _neg("real_speech", 2.0, [(10.0, 12.0, "view_glass"), (20.0, 23.0, "pocketsphinx")])
    clean, noisy = _pos("clean", None, [5.0, 10.0, 15.0, 20.0]), _pos("noisy", 10, [5.0, 10.0, 15.0, 20.0])
    dets = {  # threshold -> stream -> detection times (s)
        0.3: {"real_speech": [11.0, 12.9, 17.0, 21.0], "clean": [5.1, 11.0, 16.4, 21.5], "noisy": [6.0, 12.4]},
        0.6: {"real_speech": [11.0], "clean": [5.1, 11.0, 16.4], "noisy": [6.0]},
        0.9: {"real_speech": [], "clean": [7.6], "noisy": [40.0]},  # 7.6 is 0.1 s too late: a miss
    }
    job = SimpleNamespace(run=SimpleNamespace(result={"info": {"model": "computer"}}))
    r = _score_real(_SweepDetections(dets, 0.6, {}, job, {}), [neg, clean, noisy])  # type: ignore[arg-type]
    pts = {p["threshold"]: p for p in r["sweep"]}
    assert r["negative_hours"] == 2.0 and r["instances"] == 8 and r["negative_streams"] == ["real_speech"]
    assert pts[0.3]["fa_per_h"] == 2.0 and pts[0.3]["false_accepts"] == 4  # positives' streams are not negatives
    assert pts[0.3]["frr_by_snr"] == {"clean": 0.0, "10 dB": 0.5} and pts[0.3]["frr"] == 0.25
    assert pts[0.6]["frr_by_snr"] == {"clean": 0.25, "10 dB": 0.75} and pts[0.6]["fa_per_h"] == 0.5
    assert pts[0.9]["frr"] == 1.0 and pts[0.9]["fa_per_h"] == 0.0  # positives streams add no FA/h
    d = r["default"]
    assert d["threshold"] == 0.6 and d["misses"] == 4 and d["false_accepts_by_source"] == {"view_glass": 1}
    assert r["at_fa"]["0.5"]["threshold"] == 0.6 and r["at_fa"]["1"]["threshold"] == 0.6
    r0 = _score_real(_SweepDetections(dets, 0.3, {}, job, {}), [neg])  # type: ignore[arg-type]
    assert r0["default"]["false_accepts_by_source"] == {"gap": 1, "pocketsphinx": 1, "view_glass": 2}
    assert r0["at_fa"]["0.5"]["threshold"] == 0.6 and r0["default"]["frr"] is None


def test_lowest_threshold_needs_every_higher_one_under_the_target() -> None:
    pts = [{"threshold": 0.2, "fa_per_h": 0.4}, {"threshold": 0.5, "fa_per_h": 2.0},
           {"threshold": 0.7, "fa_per_h": 0.4}, {"threshold": 0.9, "fa_per_h": 0.0}]
    assert scoring.lowest_threshold_at(pts, 0.5)["threshold"] == 0.7
    assert scoring.lowest_threshold_at(pts, 2.0)["threshold"] == 0.2
    assert scoring.lowest_threshold_at(pts[:2], 0.1) is None


def test_frr_per_engine_and_voice() -> None:
    s = SimpleNamespace(name="s", snr_db=None, noise=None, duration_s=3600.0, instances=[
        {"start": 1.0, "end": 2.0, "voice": "espeak:de+m3"}, {"start": 5.0, "end": 6.0, "voice": "espeak:en-us+m1"},
        {"start": 9.0, "end": 10.0, "voice": "festival:kal_diphone"}, {"start": 13.0, "end": 14.0,
                                                                        "voice": "real:computer/a.flac"}])
    r = scoring.score_streams([s], {"s": [1.5, 9.5]})
    assert r["frr_by_engine"] == {"espeak-ng-accent": 0.0, "espeak-ng": 1.0, "festival": 0.0, "real": 1.0}
    assert "real:computer/a.flac" not in r["frr_by_voice"] and r["frr_by_voice"]["festival:kal_diphone"] == 0.0
