"""The speech-embedding front-end (kws_edge/embedding.py), with the real models from the pyopen-wakeword wheel."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kws_edge import embedding as emb
from kws_edge import manifest as mf
from kws_edge.errors import ModelError


def _speechlike(n: int, seed: int) -> np.ndarray:
    """``n`` samples of seeded noise with a slow loudness envelope and a tone: varied mel frames, int16."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    env = 0.3 + 0.7 * np.abs(np.sin(2 * np.pi * 1.3 * t))
    x = rng.standard_normal(n) * 1500 * env + 3000 * np.sin(2 * np.pi * 440 * t) * (t % 1 < 0.4)
    return np.clip(x, -32768, 32767).astype(np.int16)


def test_frames_and_timing() -> None:
    p = emb.EmbeddingParams()
    assert (p.numcep, p.hop, p.frame_len) == (96, 1280, 13152)
    assert p.samples_for(16) == 13152 + 15 * 1280
    x = _speechlike(p.samples_for(16), 0)
    assert emb.embeddings(x).shape == (16, 96)
    assert emb.embeddings(x[:-1]).shape == (15, 96)  # one sample short of the 16th
    assert emb.embeddings(x[: p.frame_len - 1]).shape == (0, 96)


def test_any_chunking_gives_the_same_frames() -> None:
    x = _speechlike(64000, 1)
    whole = emb.embeddings(x)
    s = emb.StreamingEmbedding(emb.EmbeddingParams())
    rng = np.random.default_rng(2)
    parts, i = [], 0
    while i < len(x):
        k = int(rng.integers(1, 4000))
        parts.append(s.process(x[i:i + k]))
        i += k
    assert np.array_equal(np.concatenate(parts), whole)
    assert s.flush().shape == (0, 96) and s.samples_seen == 0  # flush resets
    assert np.array_equal(s.process(x), whole)


def test_blocks_equal_the_mel_model_over_the_whole_signal() -> None:
    """Our fixed 8-frame mel blocks give the frames the mel model computes over the whole signal at once
    (so the framing is openWakeWord's), and each embedding is the model's output on its 76 of them."""
    x = _speechlike(48000, 3)
    full = emb._interpreter(emb._model_bytes(emb.MEL_FILE, emb.MEL_SHA256), (1, len(x)))
    full.set_tensor(full.get_input_details()[0]["index"], x.astype(np.float32)[None])
    full.invoke()
    mel = full.get_tensor(full.get_output_details()[0]["index"])[0, 0] / 10.0 + 2.0
    net = emb._Net(emb._model_bytes(emb.EMBEDDING_FILE, emb.EMBEDDING_SHA256), (1, 76, 32, 1))
    got = emb.embeddings(x)
    assert len(got) == (len(x) - 13152) // 1280 + 1
    for i in range(len(got)):
        want = net(mel[8 * i:8 * i + 76].reshape(1, 76, 32, 1).astype(np.float32)).reshape(-1)
        np.testing.assert_allclose(got[i], want, rtol=0, atol=1e-5)
    assert np.std(got) > 0.01  # not a constant output


def test_a_changed_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = emb.model_dir()
    for name in (emb.MEL_FILE, emb.EMBEDDING_FILE):
        shutil.copy(src / name, tmp_path / name)
    data = bytearray((tmp_path / emb.EMBEDDING_FILE).read_bytes())
    data[-1] ^= 1
    (tmp_path / emb.EMBEDDING_FILE).write_bytes(bytes(data))
    monkeypatch.setenv(emb.DIR_ENV, str(tmp_path))
    monkeypatch.setattr(emb, "_FILES", {})
    with pytest.raises(ModelError, match=r"embedding_model\.tflite: sha256 is .* expects c0aea21eb84a"):
        emb.StreamingEmbedding(emb.EmbeddingParams())
    (tmp_path / emb.MEL_FILE).unlink()
    monkeypatch.setattr(emb, "_FILES", {})  # a file read once is kept for the process
    with pytest.raises(ModelError, match=rf"{tmp_path}/melspectrogram\.tflite: cannot read .*{emb.DIR_ENV}"):
        emb.StreamingEmbedding(emb.EmbeddingParams())


def _manifest(features: dict) -> dict:
    return {"schema": mf.SCHEMA, "name": "e", "kind": "wakeword", "model_file": "e.tflite", "sha256": "0" * 64,
            "size_bytes": 10, "labels": ["_silence_", "_unknown_", "computer"], "keywords": ["computer"],
            "features": features, "window_frames": 16, "stride_frames": 1,
            "input": {"shape": [1, 16, 96], "dtype": "int8", "scale": 0.1, "zero_point": 0},
            "output": {"shape": [1, 3], "dtype": "int8", "scale": 1 / 256, "zero_point": -128},
            "decision": {"thresholds": {"computer": 0.9}, "smoothing_ms": 200, "min_hits": 2, "refractory_ms": 1500},
            "arena_bytes": 0, "ops": ["FULLY_CONNECTED", "SOFTMAX"]}


def test_manifest_names_the_front_end() -> None:
    p = emb.EmbeddingParams()
    m = mf.parse(json.loads(json.dumps(_manifest(p.to_dict()))))
    assert m.features == p and m.features.numcep == 96
    assert mf.parse(m.to_dict()).features == p  # round trip
    with pytest.raises(ModelError, match=r"key 'features\.kind': expected 'speech_embedding'.*'whisper'"):
        mf.parse(_manifest(p.to_dict() | {"kind": "whisper"}))
    with pytest.raises(ModelError, match=r"features: unknown key\(s\) nfft"):
        mf.parse(_manifest(p.to_dict() | {"nfft": 512}))
    with pytest.raises(ModelError, match=r"features\.sample_rate: the speech-embedding models take 16000 Hz"):
        mf.parse(_manifest(p.to_dict() | {"sample_rate": 8000}))
    with pytest.raises(ModelError, match=r"'input\.shape': expected \[\.\.\., 16, 96\]"):
        mf.parse(_manifest(p.to_dict()) | {"input": {"shape": [1, 16, 10], "dtype": "int8", "scale": 0.1,
                                                      "zero_point": 0}})
