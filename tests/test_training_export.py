"""Export: int8 model, manifest, C array and measured arena, checked with the real interpreters."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest.importorskip("tensorflow", reason="training extra (tensorflow-cpu) not installed")
tflite_micro = pytest.importorskip("tflite_micro", reason="tflite-micro not installed")

from kws_edge import manifest as mf  # noqa: E402
from kws_edge.errors import ModelError  # noqa: E402
from kws_edge.model import load_model  # noqa: E402
from training.export import BASIC_OPS, _micro_ok, parse_c_array, write_c_array  # noqa: E402
from training.testing import make_tiny_model, representative_noise_windows  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), seed=3)


def test_runtime_loads_and_runs_tiny_model(tiny: Path) -> None:
    runner = load_model(tiny)
    window = representative_noise_windows(1, seed=5)[0].astype(np.float64)
    post = runner.run(window)
    assert post.shape == (4,)
    assert abs(post.sum() - 1.0) < 0.05
    assert set(runner.manifest.ops) <= BASIC_OPS
    assert runner.manifest.input.dtype == "int8" and runner.manifest.output.dtype == "int8"
    assert (tiny.parent / "tiny.float.tflite").stat().st_size > 0


def test_manifest_round_trip(tiny: Path) -> None:
    m = mf.load(tiny)
    again = mf.parse(json.loads(m.dumps()))
    assert again.to_dict() == m.to_dict()
    assert m.sha256 == mf.sha256_file(m.model_path)
    assert m.params is not None and 100 < m.params < 2000
    bad = m.to_dict() | {"surprise": 1}
    with pytest.raises(ModelError, match="surprise"):
        mf.parse(bad)


def test_c_array_bytes_equal_tflite(tiny: Path) -> None:
    m = mf.load(tiny)
    cc = tiny.parent / "firmware" / "tiny" / "model_data.cc"
    h = tiny.parent / "firmware" / "tiny" / "model_data.h"
    text = cc.read_text()
    assert "alignas(16)" in text
    assert parse_c_array(text) == m.model_path.read_bytes()
    assert m.sha256 in h.read_text()
    assert f"g_model_len = {m.size_bytes};" in text


def test_write_c_array_rejects_wrong_sha(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="sha256"):
        write_c_array(b"abc", "0" * 64, tmp_path)


def test_measured_arena_is_the_minimum(tiny: Path) -> None:
    m = mf.load(tiny)
    data = m.model_path.read_bytes()
    assert _micro_ok(data, m.arena_bytes)
    assert not _micro_ok(data, m.arena_bytes - 16)


def test_tflite_micro_matches_litert(tiny: Path) -> None:
    from tflite_micro import runtime

    runner = load_model(tiny)
    data = runner.manifest.model_path.read_bytes()
    micro = runtime.Interpreter.from_bytes(data, arena_size=runner.manifest.arena_bytes)
    rng = np.random.default_rng(11)
    windows = representative_noise_windows(6, seed=12)
    for w in windows:
        q = runner.quantize_input(w.astype(np.float64))
        # Also exercise the whole int8 range, not just calibrated inputs.
        for inp in (q, rng.integers(-128, 128, size=q.shape, dtype=np.int8)):
            lite = runner.run_quantized(inp).astype(int)
            micro.set_input(inp, 0)
            micro.invoke()
            got = np.asarray(micro.get_output(0)).reshape(-1).astype(int)
            assert np.max(np.abs(got - lite)) <= 1


def test_cepstral_mean_norm_model_is_channel_invariant_on_both_interpreters(tmp_path: Path) -> None:
    """With normalize=True the model subtracts each window's mean over time (MEAN, SUB): a fixed offset per
    coefficient (what a microphone's response or the input gain adds to MFCCs) leaves the scores unchanged,
    and TFLite Micro agrees with LiteRT."""
    from tflite_micro import runtime

    runner = load_model(make_tiny_model(tmp_path, name="cmn", seed=4, normalize=True))
    assert {"MEAN", "SUB"} <= set(runner.manifest.ops) <= BASIC_OPS
    scale = runner.manifest.input.scale
    micro = runtime.Interpreter.from_bytes(runner.manifest.model_path.read_bytes(),
                                           arena_size=runner.manifest.arena_bytes)
    rng = np.random.default_rng(2)
    moved = 0
    for w in representative_noise_windows(6, seed=13):
        q = runner.quantize_input(w.astype(np.float64))
        shift = rng.integers(-6, 7, size=q.shape[-1])  # whole quantization steps per coefficient
        q2 = np.clip(q.astype(int) + shift, -128, 127).astype(np.int8)
        if np.any(q2.astype(int) - q.astype(int) != shift):
            continue  # clipped: not a pure offset
        a, b = runner.run_quantized(q).astype(int), runner.run_quantized(q2).astype(int)
        assert np.max(np.abs(a - b)) <= 1, (a, b)
        micro.set_input(q2, 0)
        micro.invoke()
        assert np.max(np.abs(np.asarray(micro.get_output(0)).reshape(-1).astype(int) - b)) <= 1
        moved += 1
    assert moved >= 3 and scale > 0
