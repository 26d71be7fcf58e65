"""Model + manifest loading, validation against each other, quantization, and the detect CLI contract."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kws_edge import manifest as mf
from kws_edge.errors import ModelError
from kws_edge.features import mfcc
from kws_edge.model import dequantize, load_model, quantize, resolve_manifest
from kws_edge.pipeline import Detector
from tests.conftest import kws_cmd


def _copy(tiny_model: Path, dest: Path) -> Path:
    """A private copy of the tiny model's manifest and .tflite in ``dest``."""
    data = json.loads(tiny_model.read_text())
    shutil.copy(tiny_model.parent / data["model_file"], dest / data["model_file"])
    path = dest / tiny_model.name
    path.write_text(json.dumps(data))
    return path


def _edit(path: Path, **changes: object) -> Path:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        target = data
        parts = key.split("__")
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value
    path.write_text(json.dumps(data))
    return path


def test_loads_and_runs(tiny_model: Path) -> None:
    runner = load_model(tiny_model)
    post = runner.run(np.zeros((runner.manifest.window_frames, 10)))
    assert post.shape == (4,) and np.all(post >= 0) and abs(post.sum() - 1.0) < 0.05
    assert runner.backend in ("ai-edge-litert", "tflite-runtime")


def test_run_equals_run_quantized(tiny_model: Path) -> None:
    runner = load_model(tiny_model)
    rng = np.random.default_rng(0)
    window = mfcc((rng.standard_normal(16000) * 2000).astype(np.int16), runner.manifest.features)
    q = runner.quantize_input(window)
    raw = runner.run_quantized(q)
    out = runner.manifest.output
    np.testing.assert_allclose(runner.run(window), dequantize(raw, out.scale, out.zero_point))


def test_windows_of_a_chunk_quantized_once_equal_run(tiny_model: Path) -> None:
    """The pipeline quantizes a chunk's rows once and runs overlapping windows of them: same posteriors,
    bit for bit, as quantizing every window on its own."""
    runner = load_model(tiny_model)
    w = runner.manifest.window_frames
    rng = np.random.default_rng(3)
    rows = mfcc((rng.standard_normal(32000) * 3000).astype(np.int16), runner.manifest.features)
    q = runner.quantize_frames(rows)
    assert q.dtype == np.dtype(runner.manifest.input.dtype) and q.shape == rows.shape
    for start in range(0, len(rows) - w, 7):
        np.testing.assert_array_equal(runner.run_frames(q[start:start + w]), runner.run(rows[start:start + w]))
        out = runner.manifest.output
        np.testing.assert_array_equal(
            runner.run(rows[start:start + w]),
            dequantize(runner.run_quantized(runner.quantize_input(rows[start:start + w])), out.scale, out.zero_point))


def test_quantize_rounds_and_clips() -> None:
    q = quantize(np.array([-1000.0, -0.26, 0.24, 0.26, 1000.0]), 0.5, -3, "int8")
    assert q.tolist() == [-128, -4, -3, -2, 127]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "0" * 64}, "sha256 is .* but .* expects"),
        ({"size_bytes": 12}, "size is"),
        ({"input__scale": 123.0}, "input quantization"),
        ({"output__zero_point": 5}, "output quantization"),
        ({"ops": ["CONV_2D"]}, "model uses ops"),
    ],
)
def test_mismatched_manifest_is_refused(tiny_model: Path, tmp_path: Path, change: dict, message: str) -> None:
    path = _edit(_copy(tiny_model, tmp_path), **change)
    with pytest.raises(ModelError, match=message):
        load_model(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": "kws_edge.manifest/9"}, "key 'schema'"),
        ({"labels": ["yes", "no"]}, "output.shape"),
        ({"keywords": ["maybe"]}, "key 'keywords'"),
        ({"window_frames": 40}, "input.shape"),
        ({"features__numcep": 13}, "input.shape"),
        ({"features__hop": 3}, "unknown key"),
        ({"decision__thresholds": {"yes": 2.0, "no": 0.5}}, "thresholds.yes"),
        ({"name": "Bad Name"}, "key 'name'"),
        ({"ops": ["CONV_2D", 7]}, "key 'ops'"),
        # a streaming model consumes window_frames new frames per run: the stride must equal it
        ({"streaming": {"receptive_frames": 49, "state": "resource_variables", "state_bytes": 10}},
         "key 'stride_frames'"),
        ({"stride_frames": 49, "streaming": {"receptive_frames": 49, "state": "elsewhere", "state_bytes": 1}},
         "streaming.state"),
        ({"stride_frames": 49, "streaming": {"receptive_frames": 3, "state": "resource_variables",
                                              "state_bytes": 1}}, "streaming: key 'receptive_frames'"),
        ({"stride_frames": 49, "streaming": {"receptive_frames": 60, "state": "resource_variables",
                                              "state_bytes": 1, "extra": 1}}, "unknown key"),
    ],
)
def test_invalid_manifest_names_the_key(tiny_model: Path, tmp_path: Path, change: dict, message: str) -> None:
    path = _edit(_copy(tiny_model, tmp_path), **change)
    with pytest.raises(ModelError, match=message):
        mf.load(path)


def test_manifest_round_trip(tiny_model: Path) -> None:
    m = mf.load(tiny_model)
    assert mf.parse(json.loads(m.dumps())) == mf.parse(json.loads(tiny_model.read_text()))


def test_not_a_model(tiny_model: Path, tmp_path: Path) -> None:
    path = _copy(tiny_model, tmp_path)
    junk = tmp_path / "tiny.tflite"
    junk.write_bytes(b"this is not a flatbuffer" * 10)
    _edit(path, sha256=mf.sha256_file(junk), size_bytes=junk.stat().st_size)
    with pytest.raises(ModelError, match="not a usable TFLite model"):
        load_model(path)


def test_missing_pieces(tiny_model: Path, tmp_path: Path) -> None:
    path = _copy(tiny_model, tmp_path)
    (tmp_path / "tiny.tflite").unlink()
    with pytest.raises(ModelError, match="not found"):
        load_model(path)
    with pytest.raises(ModelError, match="no such model file"):
        resolve_manifest(str(tmp_path / "tiny.tflite"))
    with pytest.raises(ModelError, match="unknown model 'nonesuch'"):
        resolve_manifest("nonesuch")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ModelError, match="broken.json: not valid JSON"):
        mf.load(tmp_path / "broken.json")


def _noise_file(path: Path, seconds: float, seed: int) -> np.ndarray:
    from kws_edge.audio import write_wav

    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(int(16000 * seconds)) * rng.uniform(200, 6000)).astype(np.int16)
    write_wav(path, x)
    return x


@pytest.mark.parametrize("chunk", [1, 333, 1280, 16000])
def test_detections_do_not_depend_on_chunk_size(tiny_model: Path, tmp_path: Path, chunk: int) -> None:
    x = _noise_file(tmp_path / "n.wav", 6.0, seed=3)
    runner = load_model(tiny_model)
    thresholds = {"yes": 0.2, "no": 0.2}

    def detect(step: int) -> list:
        d = Detector([runner], thresholds)
        out = [det for i in range(0, len(x), step) for det in d.process(x[i:i + step])]
        return out + d.flush()

    reference = detect(len(x))
    assert reference, "the low threshold should give detections to compare"
    assert detect(chunk) == reference


def test_detect_json_contract(tiny_model: Path, tmp_path: Path) -> None:
    _noise_file(tmp_path / "n.wav", 4.0, seed=5)
    out = subprocess.run(kws_cmd("detect", str(tmp_path / "n.wav"), "--model", str(tiny_model), "--json",
                                 "--threshold", "yes=0.2", "--threshold", "no=0.2"),
                         capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines
    for line in lines:
        assert list(line) == ["keyword", "score", "t", "model"]
        assert line["keyword"] in ("yes", "no") and line["model"] == "tiny"
        assert 0.2 <= line["score"] <= 1.0 and 0.0 < line["t"] <= 4.0


def test_detect_stdin_equals_file(tiny_model: Path, tmp_path: Path) -> None:
    x = _noise_file(tmp_path / "n.wav", 3.0, seed=6)
    args = ("--model", str(tiny_model), "--json", "--threshold", "yes=0.2")
    from_file = subprocess.run(kws_cmd("detect", str(tmp_path / "n.wav"), *args), capture_output=True,
                               text=True, check=True).stdout
    from_stdin = subprocess.run(kws_cmd("detect", "-", *args), input=x.astype("<i2").tobytes(),
                                capture_output=True, check=True).stdout.decode()
    assert from_file == from_stdin and from_file


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "maybe=0.5"], "unknown keyword.*maybe"),
        (["--threshold", "yes=1.5"], "between 0 and 1"),
        (["--threshold", "yes"], "KEYWORD=VALUE"),
        (["--model", "nonesuch"], "unknown model 'nonesuch'"),
    ],
)
def test_detect_bad_arguments(tiny_model: Path, tmp_path: Path, args: list[str], message: str) -> None:
    _noise_file(tmp_path / "n.wav", 1.0, seed=1)
    model_args = [] if "--model" in args else ["--model", str(tiny_model)]
    out = subprocess.run(kws_cmd("detect", str(tmp_path / "n.wav"), *model_args, *args),
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    import re

    assert re.search(message, out.stderr), out.stderr


def test_detect_bad_wav(tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    out = subprocess.run(kws_cmd("detect", str(tmp_path / "bad.wav"), "--model", str(tiny_model)),
                         capture_output=True, text=True)
    assert out.returncode == 2 and "bad.wav" in out.stderr and "Traceback" not in out.stderr


def test_several_models_share_one_feature_stream(tiny_model: Path, tmp_path: Path) -> None:
    second = tmp_path / "tiny2.json"
    data = json.loads(tiny_model.read_text())
    shutil.copy(tiny_model.parent / data["model_file"], tmp_path / "tiny2.tflite")
    second.write_text(json.dumps({**data, "name": "tiny2", "model_file": "tiny2.tflite"}))
    x = _noise_file(tmp_path / "n.wav", 3.0, seed=9)
    one = Detector([load_model(tiny_model)], {"yes": 0.2})
    both = Detector([load_model(tiny_model), load_model(second)], {"yes": 0.2})
    a = one.process(x) + one.flush()
    b = both.process(x) + both.flush()
    assert len(both._groups) == 1
    assert [d.t for d in b if d.model == "tiny2"] == [d.t for d in a]
    assert [d.t for d in b if d.model == "tiny"] == [d.t for d in a]


def test_detect_imports_only_what_it_runs(tiny_model: Path, tmp_path: Path) -> None:
    """The CLI imports only the chosen command's module: detect's start-up is part of its CPU per file."""
    wav = tmp_path / "n.wav"
    _noise_file(wav, 1.0, seed=4)
    heavy = ("asyncio", "wyoming", "tensorflow", "paho", "kws_edge.daemon", "kws_edge.wyoming_server")
    code = ("import sys, threadpoolctl; from kws_edge.cli import main; "
            f"main(['detect', {str(wav)!r}, '--model', {str(tiny_model)!r}]); "
            "print(sorted({i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'})); "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    # No thread variables: the CLI itself must hold numpy's BLAS to one thread (loaded after the limit,
    # OpenBLAS would take every core for a large chunk: 4x the CPU on 2 busy cores).
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    proc = subprocess.run([*kws_cmd()[:1], "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    threads, imported = proc.stdout.splitlines()[-2:]
    assert threads == "[1]", proc.stdout
    assert imported == "", proc.stdout
    helptext = subprocess.run([*kws_cmd(), "--help"], capture_output=True, text=True, timeout=60).stdout
    for command in ("detect", "run", "wyoming", "bridge", "flash", "train", "bench"):
        assert f"    {command} " in helptext
