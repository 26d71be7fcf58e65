"""The Nano sketch itself, with TensorFlow Lite Micro, on a Cortex-M4F under QEMU, against the Pi.

The program is built from the sketch's own files (main_functions -> feature_provider -> model_runner ->
recognize_commands -> command_responder, kws_protocol, the generated model files) with the real TFLM tree
(CMSIS-NN kernels, ``TFLM_DIR``, default ``../shared/third_party/tflite-micro``) by the real
arm-none-eabi-g++, and runs in the real qemu-system-arm (mps2-an386, ``-icount shift=0``). Stand-ins
replace only the Nano's hardware (``mcu_firmware/host/nano/``): the PDM microphone is a file read over
semihosting and handed out as fast as the sketch reads it (so no run is ever skipped to catch up),
``millis()`` is the stream time of the samples read so far, ``Serial`` writes to stdout, LEDs do nothing.

For every shipped model and a streaming model (random weights, state in resource variables), the KWS1
DET lines the M4 sends equal, line for line and byte for byte, the detections ``kws_edge.pipeline.Detector``
makes on the same audio (a live stream: no end-of-stream flush), and the sketch's ModelRunner alone gives
the int8 outputs of LiteRT's builtin kernels on the same inputs. The audio is the demo recording (every
shipped hey_jarvis and command in it) followed by "computer" in three espeak-ng voices.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kws_edge import firmware
from kws_edge import manifest as mf
from kws_edge.audio import read_wav
from kws_edge.features import FeatureParams
from kws_edge.model import load_model
from tests.conftest import compose, tts
from tests.test_firmware_support import (
    REPO,
    FeatureCase,
    build_firmware,
    firmware_bench,
    firmware_detect,
    firmware_tools_missing,
    instructions,
    make_host,
    pi_detection_lines,
    python_features,
    reference_kernel_runner,
)
from training.streaming import StreamConfig, stream_metadata

pytestmark = pytest.mark.skipif(firmware_tools_missing() is not None, reason=str(firmware_tools_missing()))
# The Nano's models: the MFCC ones in models/ and models/nano/ (a speech-embedding model runs on the Pi only).
SHIPPED_PATHS = {p.stem: p for p in sorted([*(REPO / "models").glob("*.json"),
                                             *(REPO / "models" / "nano").glob("*.json")])
                 if isinstance(mf.load(p).features, FeatureParams)}
SHIPPED = sorted(SHIPPED_PATHS)
BENCH_RUNS = 32  # model runs timed and compared with LiteRT per window model
STREAM_CONFIG = StreamConfig(filters=8, blocks=1, kernel=5, norm_frames=16, pool_frames=14, dropout=0.0)


@pytest.fixture(scope="module")
def tflm(tflm_build: Path) -> Path:
    """TFLM + CMSIS-NN, the session's one build (the same objects as the Arduino library flash makes)."""
    return tflm_build


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("espeak-ng and sox are needed for the 'computer' part of the audio")
    work = tmp_path_factory.mktemp("fw_audio")
    parts: list[np.ndarray | float] = [1.0]
    for i, voice in enumerate(("en-us", "en+m3", "en-gb")):
        parts += [tts("computer", work / f"computer{i}.wav", voice=voice), 1.5]
    compose(parts, work / "computer.wav", seed=11)
    return np.concatenate([read_wav(REPO / "models" / "demo" / "demo.wav"), read_wav(work / "computer.wav")])


def _check_on_m4(manifest: Path, samples: np.ndarray, tflm: Path, work: Path,
                 reference_kernels: bool = False) -> dict[str, float]:
    """Build the sketch for ``manifest``, run it on ``samples``; assert it equals the Pi; return figures.

    ``reference_kernels``: the Pi side runs the model on LiteRT's reference kernels (see
    tests.test_firmware_support.reference_kernel_runner), not on the runtime's default optimized ones.
    """
    m = mf.load(manifest)
    elf = build_firmware(manifest, tflm, work)
    lines, stats = firmware_detect(elf, samples, work / "detect")
    expected = pi_detection_lines(manifest, samples, reference_kernels)
    det = [line for line in lines if line.startswith("KWS1 DET ")]
    assert lines[0].startswith(f"KWS1 HELLO 0.1.0 {m.sha256[:8]} {m.name}*")
    assert not [line for line in lines if line.startswith("KWS1 ERR")]
    heartbeats = [line.split("*")[0].split()[3:] for line in lines if line.startswith("KWS1 HB ")]
    assert heartbeats and all(hb == ["0", "0"] for hb in heartbeats)  # no sample dropped, no run skipped
    assert det == expected
    assert expected, f"{m.name} detects nothing in the test audio: the comparison would prove nothing"

    # The ModelRunner alone on the Pi's int8 inputs (a streaming model: every step from the start).
    case = FeatureCase(m.features, m.input.scale, m.input.zero_point, m.window_frames, m.stride_frames)
    _, windows = python_features(samples, case)
    q = np.stack([w for _, w in (windows if m.streaming else windows[:BENCH_RUNS])])
    post, bench = firmware_bench(elf, q, len(m.labels), work / "bench")
    got = np.rint(post / m.output.scale + m.output.zero_point).astype(int)
    runner = (reference_kernel_runner(manifest) if reference_kernels else load_model(manifest)).fresh()
    ref = np.stack([runner.run_quantized(w) for w in q]).astype(int)
    if reference_kernels or m.streaming:  # the runtime loads streaming models with the reference kernels
        assert np.array_equal(got, ref), f"M4 vs LiteRT reference kernels: max {np.abs(got - ref).max()} LSB"
    else:
        # CMSIS-NN equals LiteRT's builtin kernels bit for bit except per-channel FULLY_CONNECTED, which
        # rounds differently now and then (1 LSB; training/streaming.py avoids it for that reason).
        assert np.abs(got - ref).max() <= 1, f"M4 vs LiteRT: max {np.abs(got - ref).max()} LSB"
    assert bench["arena_used_bytes"] <= bench["arena_bytes"]

    seconds = stats["samples"] / m.features.sample_rate
    figures = {"instructions_per_inference": instructions(bench, "run_ticks") / bench["runs"],
               "instructions_per_audio_second": instructions(stats, "loop_ticks") / seconds,
               "begin_instructions": instructions(bench, "begin_ticks"),
               "arena_used_bytes": bench["arena_used_bytes"], "arena_bytes": bench["arena_bytes"],
               "outputs_equal_pct": 100.0 * float(np.mean(got == ref))}
    print(f"\n{m.name} on the M4: {len(det)} DET lines equal to the Pi's; "
          f"{figures['instructions_per_inference'] / 1e6:.3f} M instructions per inference, "
          f"{figures['instructions_per_audio_second'] / 1e6:.1f} M per audio second (whole loop); "
          f"arena used {bench['arena_used_bytes']} of {bench['arena_bytes']} B; "
          f"{figures['outputs_equal_pct']:.2f} % of {got.size} outputs equal to LiteRT's, the rest 1 LSB")
    return figures


@pytest.mark.parametrize("name", SHIPPED)
def test_sketch_on_m4_sends_the_pi_detections(name: str, audio: np.ndarray, tflm: Path, tmp_path: Path) -> None:
    _check_on_m4(SHIPPED_PATHS[name], audio, tflm, tmp_path)


def _tiny_stream_model(out: Path, samples: np.ndarray) -> Path:
    """A seeded streaming model (random weights, state in resource variables) with its threshold set at
    the 98th percentile of its own counted keyword posteriors on ``samples``, so that it fires."""
    import keras

    from kws_edge.features import FeatureParams, StreamingMfcc
    from kws_edge.pipeline import Detector
    from training.export import ExportSpec, export_model
    from training.streaming import build_stream_classifier

    keras.utils.set_random_seed(3)
    params = FeatureParams()
    cfg = STREAM_CONFIG
    labels = ("_silence_", "_unknown_", "hey_jarvis")
    model = build_stream_classifier(cfg, 49, params.numcep, len(labels))
    frames = StreamingMfcc(params).process(samples[:16000 * 8])
    rep = np.stack([frames[i:i + 49] for i in range(0, len(frames) - 49, 25)]).astype(np.float32)
    spec = ExportSpec(name="tiny_stream", kind="wakeword", labels=labels, keywords=("hey_jarvis",),
                      thresholds={"hey_jarvis": 1.0}, features=params, smoothing_ms=120)
    path = export_model(model, spec, rep, out, stream=cfg)
    detector = Detector([load_model(path)], {"hey_jarvis": 0.0})
    scores = [d.score for d in detector.process(samples)]  # threshold 0: one event per refractory period
    data = json.loads(path.read_text())
    data["decision"]["thresholds"]["hey_jarvis"] = float(np.quantile(scores, 0.7))
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def test_streaming_model_on_m4_sends_the_pi_detections(audio: np.ndarray, tflm: Path, tmp_path: Path) -> None:
    """A stateful model (VAR_HANDLE / READ_VARIABLE / ASSIGN_VARIABLE / CALL_ONCE): the op resolver and the
    MicroResourceVariables come from the manifest and the .tflite, every step runs, decisions wait for the
    warm-up, and the M4 sends exactly the detections of the Pi's Detector.

    The Pi side is the runtime as it loads the model (kws_edge.model.load_model): a streaming model runs on
    LiteRT's reference kernels, which TFLite Micro equals bit for bit (every step here). LiteRT's optimized
    kernels, used for window models, differed on this model at a few steps (13 of 467, up to 5 LSB), and
    the state carries a difference forward."""
    path = _tiny_stream_model(tmp_path / "model", audio)
    m = mf.load(path)
    assert m.streaming is not None and m.window_frames == m.stride_frames == 3
    assert load_model(path).backend != "ai-edge-litert" or _uses_reference_kernels(path)
    figures = _check_on_m4(path, audio, tflm, tmp_path / "m4")
    settings = (tmp_path / "m4" / "kws_nano" / "model_settings.h").read_text()
    variables = stream_metadata(STREAM_CONFIG, m.stride_frames, m.features.numcep)["resource_variables"]
    assert "kStreaming = true" in settings and f"kNumResourceVariables = {variables};" in settings and variables
    assert f"kWarmupFrames = {m.streaming.receptive_frames};" in settings
    assert figures["instructions_per_inference"] > 0
    assert pi_detection_lines(path, audio) == pi_detection_lines(path, audio, reference_kernels=True)


def _uses_reference_kernels(path: Path) -> bool:
    """The loaded streaming model's outputs equal a reference-kernel interpreter's, step for step."""
    runner, ref = load_model(path).fresh(), reference_kernel_runner(path).fresh()
    rng = np.random.default_rng(5)
    steps = rng.integers(-128, 128, size=(200, *runner.manifest.input.shape), dtype=np.int8)
    return all(np.array_equal(runner.run_quantized(q), ref.run_quantized(q)) for q in steps)


def test_every_op_the_codegen_knows_links(tflm: Path, tmp_path: Path) -> None:
    """The TFLM library holds a kernel for every op kws_edge.firmware can register (OP_METHODS): a sketch
    whose resolver registers all of them links (it is not run)."""
    sketch = tmp_path / "kws_nano"
    shutil.copytree(firmware.SKETCH_DIR, sketch)
    calls = "".join(f"  if (resolver.{method}() != kTfLiteOk) return kTfLiteError;\n"
                    for method in sorted(set(firmware.OP_METHODS.values())))
    (sketch / "model_ops.h").write_text(
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\nnamespace kws_model {\n'
        f"constexpr int kNumOps = {len(set(firmware.OP_METHODS.values()))};\n"
        "using OpResolver = tflite::MicroMutableOpResolver<kNumOps>;\n"
        f"inline TfLiteStatus RegisterOps(OpResolver& resolver) {{\n{calls}  return kTfLiteOk;\n}}\n}}\n")
    make_host(f"SKETCH={sketch}", f"OUT={tmp_path / 'build'}", f"TFLM_OUT={tflm}", "fw")
    assert (tmp_path / "build" / "kws_fw.elf").stat().st_size > 0
