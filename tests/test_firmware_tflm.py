"""TensorFlow Lite Micro checks of the firmware's model, without a board.

- The model in the ``tflite-micro`` interpreter (the same kernels as the Arduino library, reference
  variants) gives outputs within 1 LSB of LiteRT's builtin kernels on golden inputs: the int8 windows the
  Pi pipeline (and, per test_firmware_host, the firmware's C++) computes from real speech. LiteRT runs
  without its default XNNPACK delegate here: with XNNPACK the outputs differ from TFLite's own kernels
  (measured: up to 19 LSB on mid-range outputs of hey_jarvis); the builtin kernels equal TFLM's.
- It runs in an arena of the manifest's ``arena_bytes`` (so its arena use is <= that).
- The sketch registers exactly the model's ops (``.Add*()`` calls parsed from its sources).
- RAM and flash fit the Nano 33 BLE Sense with >= 30 % headroom; the estimated inference rate is printed.
- The whole board chain (C++ features -> TFLM -> C++ decision) gives the Pi Detector's detections.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kws_edge import firmware
from kws_edge import manifest as mf
from kws_edge.model import ModelRunner, load_model, model_ops
from tests.test_firmware_host import golden_signal
from tests.test_firmware_support import REPO, FeatureCase, build, python_features, run_harness

SHIPPED = REPO / "models" / "hey_jarvis.json"


def _models(tiny: Path) -> list[Path]:
    return [tiny, *([SHIPPED] if SHIPPED.exists() else [])]


@pytest.fixture(scope="module")
def signal(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return golden_signal(tmp_path_factory.mktemp("tflm_speech"))


def reference_runner(path: Path) -> ModelRunner:
    """The model in LiteRT with TFLite's builtin kernels (no XNNPACK delegate), checked by load_model first."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    m = load_model(path).manifest
    interp = Interpreter(model_content=m.model_path.read_bytes(), num_threads=1,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    return ModelRunner(m, interp, "ai-edge-litert (builtin kernels)")


def _micro(data: bytes, arena: int) -> object:
    from tflite_micro import runtime

    from training.export import quiet_native_output

    with quiet_native_output():
        return runtime.Interpreter.from_bytes(data, arena_size=arena)


def test_tflm_equals_litert_on_golden_inputs(tiny_model: Path, signal: np.ndarray) -> None:
    for path in _models(tiny_model):
        runner = reference_runner(path)
        m = runner.manifest
        case = FeatureCase(m.features, m.input.scale, m.input.zero_point, m.window_frames, m.stride_frames)
        _, windows = python_features(signal, case)
        micro = _micro(m.model_path.read_bytes(), m.arena_bytes)  # constructing proves arena use <= arena_bytes
        worst, outputs = 0, set()
        for _, q in windows:
            ref = runner.run_quantized(q)
            micro.set_input(q.reshape(m.input.shape).astype(np.int8), 0)  # type: ignore[attr-defined]
            micro.invoke()  # type: ignore[attr-defined]
            got = np.asarray(micro.get_output(0)).reshape(-1)  # type: ignore[attr-defined]
            worst = max(worst, int(np.max(np.abs(got.astype(int) - ref.astype(int)))))
            outputs.add(tuple(got))
        print(f"\n{m.name}: {len(windows)} windows, TFLM vs LiteRT max difference {worst} LSB, "
              f"arena {m.arena_bytes} bytes")
        assert worst <= 1
        assert len(outputs) > 1  # the inputs really vary the output


def test_arena_below_manifest_fails_and_manifest_arena_works(tiny_model: Path) -> None:
    m = mf.load(tiny_model)
    data = m.model_path.read_bytes()
    _micro(data, m.arena_bytes)
    with pytest.raises((RuntimeError, ValueError)):
        _micro(data, m.arena_bytes // 4)


def test_generated_sketch_registers_exactly_the_model_ops(tiny_model: Path, tmp_path: Path) -> None:
    sketch = tmp_path / "kws_nano"
    shutil.copytree(firmware.SKETCH_DIR, sketch)
    firmware.generate(tiny_model, sketch)
    runner = load_model(tiny_model)
    assert firmware.registered_ops(sketch) == model_ops(runner._interp)
    # An op registered by hand anywhere in the sketch is caught.
    extra = sketch / "main_functions.cpp"
    extra.write_text(extra.read_text() + "\n// resolver.AddMul();\n")
    assert firmware.registered_ops(sketch) != model_ops(runner._interp)


def test_committed_sketch_registers_the_shipped_model_ops() -> None:
    if not SHIPPED.exists():
        pytest.skip("models/hey_jarvis is not shipped yet")
    runner = load_model(SHIPPED)
    assert firmware.registered_ops(firmware.SKETCH_DIR) == model_ops(runner._interp)


def _measured_portable(tmp: Path) -> tuple[int, int]:
    """(code bytes, static RAM bytes) of the portable stages on the Cortex-M4, from the M4 build."""
    if shutil.which("qemu-system-arm") is None:
        pytest.skip("qemu-system-arm is not installed")
    elf = build("m4", tmp / "m4")
    run_harness(elf, ["sizes", "sizes.txt"], tmp)
    ram = sum(int(line.split()[1]) for line in (tmp / "sizes.txt").read_text().splitlines())
    sketch = firmware.SKETCH_DIR
    code = 0
    for name in ("feature_provider", "recognize_commands", "kws_protocol"):
        obj = tmp / f"{name}.o"
        subprocess.run(["arm-none-eabi-g++", "-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16",
                        "-mfloat-abi=hard", "-std=c++14", "-O2", "-fno-exceptions", "-fno-rtti", "-c",
                        str(sketch / f"{name}.cpp"), "-o", str(obj)], check=True)
        size = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True, check=True)
        code += int(size.stdout.splitlines()[1].split()[0])
    return code, ram


def test_budget_fits_the_nano_with_30_percent_headroom(tiny_model: Path, tmp_path: Path) -> None:
    code, ram = _measured_portable(tmp_path)
    for path in _models(tiny_model):
        m = mf.load(path)
        b = firmware.budget(m, code, ram + firmware.MAX_WINDOW_VALUES, feature_cycles_per_hop=175_000)
        print(f"\n{m.name}: flash {b.flash_bytes / 1024:.0f} KB of 1024 ({100 * b.flash_headroom:.0f} % free), "
              f"RAM {b.ram_bytes / 1024:.0f} KB of 256 ({100 * b.ram_headroom:.0f} % free); "
              f"{m.macs} MACs -> ~{b.inference_ms:.1f} ms per inference at 64 MHz "
              f"({firmware.CYCLES_PER_MAC:g} cycles/MAC), {b.runs_per_s:.1f} model runs/s")
        assert b.flash_headroom >= 0.30
        assert b.ram_headroom >= 0.30
        assert b.runs_per_s > 0


def _board_chain(host: Path, path: Path, signal: np.ndarray, thresholds: dict[str, float],
                 work: Path) -> list[tuple[str, int, float]]:
    """C++ features -> TFLite Micro -> C++ decision, as the firmware runs them: (keyword, t_ms, score)."""
    from kws_edge.decision import DecisionParams
    from kws_edge.model import dequantize
    from tests.test_firmware_support import DecisionCase, cpp_decisions, cpp_features

    m = mf.load(path)
    case = FeatureCase(m.features, m.input.scale, m.input.zero_point, m.window_frames, m.stride_frames)
    _, windows, _ = cpp_features(host, signal, case, work, chunk=512, tag=m.name)
    micro = _micro(m.model_path.read_bytes(), m.arena_bytes)
    sequence = []
    for now_ms, q in windows:
        micro.set_input(q.reshape(m.input.shape).astype(np.int8), 0)  # type: ignore[attr-defined]
        micro.invoke()  # type: ignore[attr-defined]
        raw = np.asarray(micro.get_output(0)).reshape(-1)  # type: ignore[attr-defined]
        sequence.append((now_ms, [float(x) for x in dequantize(raw, m.output.scale, m.output.zero_point)]))
    d = m.decision
    params = DecisionParams({k: thresholds.get(k, v) for k, v in d.thresholds.items()}, d.smoothing_ms,
                            d.min_hits, d.refractory_ms)
    events = cpp_decisions(host, DecisionCase(m.labels, params, sequence), work, tag=m.name)
    return [(e.keyword, e.t_ms, e.score) for e in events]


def test_firmware_chain_equals_the_pi_detector(tiny_model: Path, signal: np.ndarray, tmp_path: Path) -> None:
    """C++ features -> TFLite Micro -> C++ decision gives the detections kws_edge.pipeline.Detector gives."""
    from kws_edge.pipeline import Detector

    host = build("host", tmp_path / "build")
    for path in _models(tiny_model):
        # The untrained tiny model's outputs hover around 0.25-0.35: low thresholds make it fire.
        thresholds = {"yes": 0.3, "no": 0.2} if path == tiny_model else {}
        board = _board_chain(host, path, signal, thresholds, tmp_path)
        pi = Detector([reference_runner(path)], thresholds).process(signal)
        print(f"\n{path.stem}: {len(pi)} detection(s) on the Pi, {len(board)} from the board chain")
        if path == tiny_model:
            assert len(pi) >= 3
        assert [(k, t) for k, t, _ in board] == [(p.keyword, round(p.t * 1000)) for p in pi]
        scale = mf.load(path).output.scale
        assert all(abs(s - p.score) <= scale for (_, _, s), p in zip(board, pi, strict=True))  # <= 1 LSB
