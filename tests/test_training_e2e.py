"""Tiny end-to-end runs of ``kws-edge train``: synthesize (or load), train one epoch, quantize, export,
evaluate; the runtime then loads and runs the int8 model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("tensorflow", reason="training extra (tensorflow-cpu) not installed")
pytest.importorskip("tflite_micro", reason="tflite-micro not installed")

from kws_edge import manifest as mf
from kws_edge.cli import main
from kws_edge.model import ModelRunner, load_model
from kws_edge.pipeline import Detector
from training.export import parse_c_array
from training.testing import make_speech_commands_dataset

SYNTH = """
[synthesis]
positives_per_keyword = 24
test_per_keyword = 6
confusables = 12
unknown_words = 12
sentences = 2
silence = 8
"""
TINY = """
[augment]
copies = 1
[model]
filters = 8
blocks = 1
[train]
epochs = 1
batch_size = 16
mining_rounds = 1
mining_hours = 0.005
mining_epochs = 1
mining_threshold = 0.0
mining_max = 20
[eval]
negative_hours = 0.01
positives = 6
snr_db = [100.0, 10.0]
headline_snr_db = [100.0]
"""


@pytest.fixture(autouse=True)
def _hermetic_real_voices(realvoice_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train and eval read real recordings from a small fixture folder, never from ../shared."""
    monkeypatch.setenv("KWS_EDGE_REALVOICE", str(realvoice_root))


def _train(tmp_path: Path, recipe_text: str) -> Path:
    recipe = tmp_path / "r.toml"
    recipe.write_text(recipe_text, encoding="utf-8")
    rc = main(["train", "--recipe", str(recipe), "--out", str(tmp_path / "models"), "--cache",
               str(tmp_path / "cache"), "--run-dir", str(tmp_path / "run"), "--workers", "1"])
    assert rc == 0
    return tmp_path / "models"


def _check_outputs(models: Path, name: str, tmp_path: Path) -> None:
    manifest = models / f"{name}.json"
    m = mf.load(manifest)
    thresholds = dict(m.decision.thresholds)
    assert m.metrics["threshold"] == min(thresholds.values())
    assert m.metrics.get("thresholds", dict.fromkeys(thresholds, m.metrics["threshold"])) == thresholds
    assert (models / f"{name}.float.tflite").exists()
    cc = (tmp_path / "run" / "firmware" / name / "model_data.cc").read_text()
    assert parse_c_array(cc) == (models / f"{name}.tflite").read_bytes()
    history = m.training["history"]
    assert history["mining"][0]["kept"] == 20  # hard negatives mined from training voices
    report = json.loads((models / "reports" / name / "report.json").read_text())
    assert report["summary"]["size_bytes"] == m.size_bytes
    assert report["streams"]["negative_hours"] >= 0.01
    for png in ("det.png", "frr_snr.png", "confusion.png"):
        assert (models / "reports" / name / png).read_bytes()[:4] == b"\x89PNG"
    runner = load_model(manifest)
    post = runner.run(np.zeros((m.window_frames, m.features.numcep)))
    assert post.shape == (len(m.labels),) and abs(post.sum() - 1) < 0.05
    det = Detector([runner])
    rng = np.random.default_rng(0)
    det.process((rng.standard_normal(32000) * 300).astype(np.int16))


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("flite") is None,
                    reason="espeak-ng and flite (Debian packages espeak-ng, flite) not installed")
def test_tiny_tts_run(tmp_path: Path) -> None:
    head = 'name = "tiny_jarvis"\nkind = "wakeword"\nkeywords = ["hey jarvis"]\nseed = 2\n'
    models = _train(tmp_path, head + SYNTH + TINY)
    _check_outputs(models, "tiny_jarvis", tmp_path)
    manifest = models / "tiny_jarvis.json"
    before = manifest.read_bytes()
    rc = main(["eval", "--model", str(manifest), "--recipe", str(tmp_path / "r.toml"), "--cache",
               str(tmp_path / "cache"), "--workers", "1", "--report-dir", str(tmp_path / "again"),
               "--no-update"])
    assert rc == 0
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    first = json.loads((models / "reports" / "tiny_jarvis" / "report.json").read_text())
    assert again["summary"]["threshold"] == first["summary"]["threshold"]  # same data, same verdict
    assert manifest.read_bytes() == before


def test_tiny_speech_commands_run(tmp_path: Path) -> None:
    root = make_speech_commands_dataset(tmp_path / "sc", {"yes": 500.0, "no": 900.0, "cat": 1300.0, "dog": 300.0},
                        per_word=8)
    head = (f'name = "tiny_sc"\nkind = "commands"\nkeywords = ["yes", "no"]\n'
            f'[dataset]\nspeech_commands = "{root}"\n')
    models = _train(tmp_path, head + "[synthesis]\nsilence = 8\n" + TINY)
    _check_outputs(models, "tiny_sc", tmp_path)


REAL = """
[synthesis]
engines = ["espeak-ng", "espeak-ng-accent", "flite", "festival", "piper"]
speaker_augment = 0.5
positives_per_keyword = 30
test_per_keyword = 6
confusables = 12
unknown_words = 12
sentences = 2
silence = 8
[augment]
copies = 1
mic_prob = 0.5
noise_kinds = ["pink", "babble", "room"]
[model]
filters = 8
blocks = 1
normalize = true
[train]
epochs = 1
batch_size = 16
time_masks = 1
freq_masks = 2
[eval]
negative_hours = 0.01
positives = 6
snr_db = [100.0, 10.0]
headline_snr_db = [100.0]
[dataset]
real_negatives = ["snowboy", "smart_mirror"]
"""


@pytest.mark.skipif(shutil.which("text2wave") is None, reason="festival (Debian package festival) not installed")
def test_tiny_real_voice_recipe_run(tmp_path: Path) -> None:
    """Every engine, pseudo-speakers, microphones, room tone, SpecAugment, CMN and real negative speech in
    one tiny run; the report measures the model on the (fixture) real recordings of its keyword."""
    models = _train(tmp_path, 'name = "tiny_computer"\nkind = "wakeword"\nkeywords = ["computer"]\n' + REAL)
    m = mf.load(models / "tiny_computer.json")
    assert {"MEAN", "SUB"} <= set(m.ops)
    report = json.loads((models / "reports" / "tiny_computer" / "report.json").read_text())
    real = report["real_voice"]
    assert real["clips"]["positive"] == {"computer": 2}
    assert not {"snowboy", "smart_mirror"} & set(real["negative_sources"])
    assert 0.0 <= report["summary"]["real_frr_clean"] <= 1.0
    assert report["summary"]["threshold_from"] in ("real speech", "synthetic streams", "synthetic and real speech")
    assert m.decision.thresholds["computer"] == report["summary"]["threshold"]
    engines = set(report["frr_by_engine"]["100.0"])
    assert engines and engines <= {"espeak-ng", "espeak-ng-accent", "flite"}  # festival/piper: training only
    assert (models / "reports" / "tiny_computer" / "real_det.png").read_bytes()[:4] == b"\x89PNG"


def _same_for_any_chunking(runner: ModelRunner, audio: np.ndarray) -> tuple[Detector, list[tuple[float, float]]]:
    """A Detector at threshold 0 (every counted run can fire) gives the same detections in 10 ms and 1 s
    chunks; return it (after the last pass) and them."""
    det = Detector([runner], {"hey_jarvis": 0.0}, timed=True)
    found = {}
    for chunk in (160, 16000):
        det.reset()
        out = [d for i in range(0, len(audio), chunk) for d in det.process(audio[i:i + chunk])]
        found[chunk] = [(d.t, round(d.score, 6)) for d in out]
    assert found[160] == found[16000] and found[160]
    return det, found[16000]


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("flite") is None,
                    reason="espeak-ng and flite (Debian packages espeak-ng, flite) not installed")
def test_tiny_streaming_run(tmp_path: Path) -> None:
    """`[model] family = "stream"`: the exported .tflite consumes stride_frames new frames per run and keeps
    the past in resource variables; the manifest says so and the runtime streams it like the window
    model: the same detections for any chunking, and eval's stream scores equal the Detector's runs."""
    from training.streams import stream_scores

    head = 'name = "tiny_stream"\nkind = "wakeword"\nkeywords = ["hey jarvis"]\nseed = 2\n'
    recipe = head + SYNTH + TINY.replace("[model]\n", '[model]\nfamily = "stream"\nnormalize = true\n')
    models = _train(tmp_path, recipe)
    _check_outputs(models, "tiny_stream", tmp_path)
    m = mf.load(models / "tiny_stream.json")
    assert m.streaming is not None and m.streaming.state == "resource_variables"
    assert m.window_frames == m.stride_frames == 3 and m.input.shape == (1, 3, m.features.numcep)
    assert m.streaming.receptive_frames == 15 + 4 * 2 + 14  # norm 16, kernel 5, 1 block, pool 14
    assert {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"} <= set(m.ops)
    runner = load_model(models / "tiny_stream.json")
    rng = np.random.default_rng(4)
    audio = (rng.standard_normal(16000 * 6) * 2000).astype(np.int16)
    det, found = _same_for_any_chunking(runner, audio)
    assert min(t for t, _ in found) * 50 >= m.streaming.receptive_frames - 1  # none before the warm-up
    scores = stream_scores(runner, audio)
    frames = 1 + (len(audio) - 640) // 320  # 40 ms frames every 20 ms, before the flush
    assert det.times.inferences == frames // 3  # one run per 3 new frames, from the first frame on
    assert scores.times_ms[0] >= (m.streaming.receptive_frames - 1) * 20
    again = stream_scores(runner, audio)  # reset between streams: the same scores again
    np.testing.assert_array_equal(scores.posteriors, again.posteriors)
    # A saved streaming .keras re-exports (in a process that never built the custom layers itself, the
    # .keras load needs them registered) into the same streaming .tflite.
    rc = main(["export", "--keras", str(tmp_path / "run" / "tiny_stream.keras"), "--recipe", str(tmp_path / "r.toml"),
               "--out", str(tmp_path / "again"), "--cache", str(tmp_path / "cache"), "--workers", "1"])
    assert rc == 0
    again = mf.load(tmp_path / "again" / "tiny_stream.json")
    assert again.streaming == m.streaming and again.sha256 == m.sha256


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("flite") is None,
                    reason="espeak-ng and flite (Debian packages espeak-ng, flite) not installed")
def test_tiny_embedding_run(tmp_path: Path) -> None:
    """`[model] family = "embedding"`: a dense head on the speech-embedding front-end (real models from the
    pyopen-wakeword wheel). The manifest names the front-end; the runtime streams it like any model (the
    same detections for any chunking, eval's stream scores equal the Detector's runs); no firmware for it."""
    from kws_edge import firmware
    from kws_edge.embedding import EmbeddingParams
    from kws_edge.errors import ModelError
    from training.streams import stream_scores

    head = 'name = "tiny_embed"\nkind = "wakeword"\nkeywords = ["hey jarvis"]\nseed = 2\n'
    recipe = head + SYNTH + TINY.replace("[model]\n", '[model]\nfamily = "embedding"\n') + \
        "[decision]\nstride_frames = 1\n"
    models = _train(tmp_path, recipe)
    _check_outputs(models, "tiny_embed", tmp_path)
    m = mf.load(models / "tiny_embed.json")
    assert m.features == EmbeddingParams() and m.streaming is None
    assert m.window_frames == 16 and m.stride_frames == 1 and m.input.shape == (1, 16, 96)
    assert set(m.ops) <= {"FULLY_CONNECTED", "RESHAPE", "SOFTMAX"}
    runner = load_model(models / "tiny_embed.json")
    rng = np.random.default_rng(5)
    audio = (rng.standard_normal(16000 * 5) * 2000).astype(np.int16)
    det, found = _same_for_any_chunking(runner, audio)
    assert min(t for t, _ in found) >= m.features.samples_for(16) / 16000  # none before 16 embeddings
    frames = 1 + (len(audio) - m.features.frame_len) // m.features.hop
    assert det.times.inferences == frames - 15  # one run per embedding once 16 are there
    scores = stream_scores(runner, audio)
    assert len(scores.times_ms) == frames - 15
    assert scores.times_ms[0] == (m.features.frame_len + 15 * m.features.hop) * 1000 // 16000
    with pytest.raises(ModelError, match="runs on the Pi only"):
        firmware.settings_header(m)
