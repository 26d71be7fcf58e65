"""Export a trained Keras model: full-int8 ``.tflite``, float ``.tflite``, manifest and firmware C array.

Everything the manifest says about the model is read back from the converted model itself: the ops, the
input and output quantization (scale and zero point of the tensors), the size and sha256, and the
TensorFlow Lite Micro arena, measured by constructing the ``tflite-micro`` interpreter with shrinking
arenas (bisection) and invoking it once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kws_edge import manifest as mf
from kws_edge.embedding import EmbeddingParams
from kws_edge.errors import ModelError
from kws_edge.features import FeatureParams

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BASIC_OPS = frozenset({"RESHAPE", "CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED",
                       "SOFTMAX", "MEAN", "SUB"})
_ARENA_ALIGN = 16  # bytes; TFLM aligns its arena to 16


@dataclass(frozen=True)
class ExportSpec:
    """What the manifest needs besides the model itself."""

    name: str
    kind: str  # "wakeword" | "commands"
    labels: tuple[str, ...]
    keywords: tuple[str, ...]
    thresholds: Mapping[str, float]
    features: FeatureParams | EmbeddingParams = field(default_factory=FeatureParams)
    stride_frames: int = 3  # 60 ms at a 20 ms hop
    smoothing_ms: int = 200
    min_hits: int = 1
    refractory_ms: int = 1500
    description: str = ""


def batch1_copy(model: Any) -> Any:
    """The same network rebuilt with a fixed batch size of 1 and the trained weights.

    With a dynamic batch the converter adds SHAPE/STRIDED_SLICE/PACK around Flatten; with batch 1 the
    graph is only the basic ops.
    """
    import keras

    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            shape = layer["config"].get("batch_shape") or layer["config"].get("batch_input_shape")
            key = "batch_shape" if "batch_shape" in layer["config"] else "batch_input_shape"
            layer["config"][key] = [1, *list(shape)[1:]]
    copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """Send C-level stdout/stderr (TF converter chatter, TFLM allocation failures) to a temp file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _converter(model: Any) -> Any:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model)


def convert_float(model: Any) -> bytes:
    """Float32 ``.tflite`` of the batch-1 copy (for float-vs-int8 comparisons)."""
    with quiet_native_output():
        return bytes(_converter(batch1_copy(model)).convert())


def convert_int8(model: Any, representative: npt.NDArray[np.floating[Any]]) -> bytes:
    """Full-integer int8 ``.tflite`` (int8 input and output) calibrated on ``representative`` windows."""
    import tensorflow as tf

    if len(representative) == 0:
        raise ModelError("int8 export: the representative set is empty")
    rep = np.asarray(representative, dtype=np.float32)
    conv = _converter(batch1_copy(model))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rep[i:i + 1]] for i in range(len(rep)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with quiet_native_output(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return bytes(conv.convert())


def inspect_tflite(data: bytes) -> dict[str, Any]:
    """Ops, input and output tensor specs read from a converted model with LiteRT."""
    from kws_edge.model import interpreter_backend, model_ops

    _, factory = interpreter_backend()
    interp = factory(model_content=data)
    interp.allocate_tensors()
    specs = {}
    for role, det in (("input", interp.get_input_details()[0]), ("output", interp.get_output_details()[0])):
        scale, zp = det["quantization"]
        specs[role] = {"shape": [int(d) for d in det["shape"]], "dtype": np.dtype(det["dtype"]).name,
                       "scale": float(scale), "zero_point": int(zp)}
    return {"ops": model_ops(interp), **specs}


def _micro_ok(data: bytes, arena: int) -> bool:
    from tflite_micro import runtime

    try:
        interp = runtime.Interpreter.from_bytes(data, arena_size=arena)
        interp.invoke()
    except (RuntimeError, ValueError):
        return False
    return True


_PROBE = """
import sys
from tflite_micro import runtime
interp = runtime.Interpreter.from_bytes(open(sys.argv[1], "rb").read(), arena_size=int(sys.argv[2]))
interp.invoke()
"""


def _micro_ok_isolated(path: Path, arena: int) -> bool:
    """As :func:`_micro_ok`, in a child process: with resource variables, a too-small arena crashes the
    TFLM Python wheel (SIGSEGV) instead of raising."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(arena)], capture_output=True, check=False)
    return proc.returncode == 0


def measure_arena(data: bytes, upper: int = 1 << 20, stateful: bool | None = None) -> int:
    """Smallest TFLite Micro tensor arena (bytes, multiple of 16) that constructs and invokes the model.

    ``stateful``: the model has resource variables (probed in child processes); None: look at its ops.
    """
    if stateful is None:
        stateful = "VAR_HANDLE" in inspect_tflite(data)["ops"]
    with tempfile.TemporaryDirectory() as tmp, quiet_native_output():
        probe: Callable[[int], bool] = functools.partial(_micro_ok, data)
        if stateful:
            path = Path(tmp) / "model.tflite"
            path.write_bytes(data)
            probe = functools.partial(_micro_ok_isolated, path)
        if not probe(upper):
            raise ModelError(f"tflite-micro cannot run the model even with a {upper} byte arena")
        lo, hi = 0, upper // _ARENA_ALIGN  # in units of 16 bytes; lo fails, hi works
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if probe(mid * _ARENA_ALIGN):
                hi = mid
            else:
                lo = mid
    return hi * _ARENA_ALIGN


def write_c_array(tflite_bytes: bytes, sha256: str, out_dir: Path,
                  symbol: str = "g_model") -> tuple[Path, Path]:
    """Write ``model_data.cc`` / ``model_data.h``: the model as a 16-byte aligned C array.

    The header declares ``<symbol>`` and ``<symbol>_len`` and defines ``<SYMBOL>_SHA256`` so the firmware
    can report which model it carries. Returns (cc_path, h_path).
    """
    if not symbol.isidentifier():
        raise ModelError(f"C array symbol {symbol!r} is not a valid C identifier")
    if hashlib.sha256(tflite_bytes).hexdigest() != sha256:
        raise ModelError("write_c_array: sha256 does not match the model bytes")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    guard = f"KWS_EDGE_{symbol.upper()}_MODEL_DATA_H_"
    h_text = (
        "// Generated by kws-edge export (training/export.py). Do not edit.\n"
        f"#ifndef {guard}\n#define {guard}\n\n"
        f'#define {symbol.upper()}_SHA256 "{sha256}"\n'
        f"#define {symbol.upper()}_SIZE {len(tflite_bytes)}\n\n"
        f"extern const unsigned char {symbol}[];\n"
        f"extern const unsigned int {symbol}_len;\n\n"
        f"#endif  // {guard}\n"
    )
    rows = []
    for i in range(0, len(tflite_bytes), 12):
        rows.append("  " + ", ".join(f"0x{b:02x}" for b in tflite_bytes[i:i + 12]) + ",")
    cc_text = (
        "// Generated by kws-edge export (training/export.py). Do not edit.\n"
        f"// sha256 {sha256}\n"
        '#include "model_data.h"\n\n'
        f"alignas(16) const unsigned char {symbol}[] = {{\n" + "\n".join(rows) + "\n};\n"
        f"const unsigned int {symbol}_len = {len(tflite_bytes)};\n"
    )
    cc_path, h_path = out_dir / "model_data.cc", out_dir / "model_data.h"
    cc_path.write_text(cc_text, encoding="ascii")
    h_path.write_text(h_text, encoding="ascii")
    return cc_path, h_path


def parse_c_array(cc_text: str) -> bytes:
    """The bytes of a ``model_data.cc`` written by :func:`write_c_array` (for tests and checks)."""
    body = cc_text.split("{", 1)[1].split("}", 1)[0]
    return bytes(int(tok, 16) for tok in body.replace("\n", " ").split(",") if tok.strip())


def build_manifest(spec: ExportSpec, tflite: bytes, info: Mapping[str, Any], arena: int,
                   params: int | None, macs: int | None, training: Mapping[str, Any] | None = None,
                   metrics: Mapping[str, Any] | None = None,
                   streaming: Mapping[str, Any] | None = None) -> mf.Manifest:
    """Assemble and validate the manifest (``kws_edge.manifest.parse`` is the judge)."""
    window_frames = int(info["input"]["shape"][-2])
    data = {
        "schema": mf.SCHEMA, "name": spec.name, "kind": spec.kind, "description": spec.description,
        "model_file": f"{spec.name}.tflite", "sha256": hashlib.sha256(tflite).hexdigest(),
        "size_bytes": len(tflite), "labels": list(spec.labels), "keywords": list(spec.keywords),
        "features": spec.features.to_dict(), "window_frames": window_frames,
        "stride_frames": spec.stride_frames, "input": info["input"], "output": info["output"],
        "decision": {"thresholds": {k: float(spec.thresholds[k]) for k in spec.keywords},
                     "smoothing_ms": spec.smoothing_ms, "min_hits": spec.min_hits,
                     "refractory_ms": spec.refractory_ms},
        "arena_bytes": arena, "ops": list(info["ops"]),
        "training": dict(training or {}), "metrics": dict(metrics or {}),
    }
    if streaming is not None:
        data["streaming"] = {k: streaming[k] for k in ("receptive_frames", "state", "state_bytes")}
    if params is not None:
        data["params"] = int(params)
    if macs is not None:
        data["macs"] = int(macs)
    return mf.parse(json.loads(json.dumps(data)), f"manifest for {spec.name}")


def export_model(model: Any, spec: ExportSpec, representative: npt.NDArray[np.floating[Any]], out_dir: Path,
                 *, training: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
                 c_array_dir: Path | None = None, params: int | None = None,
                 macs: int | None = None, stream: Any = None) -> Path:
    """Quantize and write ``<name>.tflite``, ``<name>.float.tflite``, ``<name>.json`` and the C array.

    The C array goes to ``c_array_dir`` (default ``<out_dir>/firmware/<name>``). Returns the manifest path.
    With ``stream`` (a :class:`training.streaming.StreamConfig`) the ``.tflite`` is the streaming form
    (``stride_frames`` new frames per run, state inside); ``.float.tflite`` stays the window form.
    """
    from training.model import count_macs, count_params

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    streaming = None
    allowed = BASIC_OPS
    if stream is not None:
        from training import streaming as st

        int8 = st.streaming_tflite(model, stream, spec.stride_frames, representative)
        streaming = st.stream_metadata(stream, spec.stride_frames, int(model.input_shape[-1]), len(spec.labels))
        macs = streaming["macs_per_step"] if macs is None else macs
        allowed = frozenset(st.STREAM_OPS)
    else:
        int8 = convert_int8(model, representative)
    (out_dir / f"{spec.name}.float.tflite").write_bytes(convert_float(model))
    info = inspect_tflite(int8)
    extra = sorted(set(info["ops"]) - allowed)
    if extra:
        raise ModelError(f"{spec.name}: converted model uses ops beyond the basic set: {extra}")
    if info["input"]["dtype"] != "int8" or info["output"]["dtype"] != "int8":
        raise ModelError(
            f"{spec.name}: converted model is not int8 in/out: {info['input']}, {info['output']}")
    manifest = build_manifest(
        spec, int8, info, measure_arena(int8, stateful="VAR_HANDLE" in info["ops"]),
        count_params(model) if params is None else params, count_macs(model) if macs is None else macs,
        training, metrics, streaming)
    (out_dir / manifest.model_file).write_bytes(int8)
    write_c_array(int8, manifest.sha256, c_array_dir or out_dir / "firmware" / spec.name)
    path = out_dir / f"{spec.name}.json"
    path.write_text(manifest.dumps(), encoding="utf-8")
    return path


def update_manifest(path: Path, thresholds: Mapping[str, float] | None = None,
                    metrics: Mapping[str, Any] | None = None, **decision: int) -> Path:
    """Rewrite a manifest's decision defaults and metrics (after eval); the model file is unchanged."""
    m = mf.load(path)
    data = m.to_dict()
    if thresholds:
        data["decision"]["thresholds"].update({k: float(v) for k, v in thresholds.items()})
    data["decision"].update(decision)
    if metrics is not None:
        data["metrics"] = dict(metrics)
    checked = mf.parse(json.loads(json.dumps(data)), str(path))
    Path(path).write_text(checked.dumps(), encoding="utf-8")
    return Path(path)


def export_keras_file(keras_path: Path, spec: ExportSpec, representative: Sequence[Any] | npt.NDArray[Any],
                      out_dir: Path, stream: Any = None) -> Path:
    """Load a saved ``.keras`` model and export it (used by ``kws-edge export``); ``stream``: its
    :class:`training.streaming.StreamConfig` when it is a streaming-family model."""
    import keras

    from training.model import cepstral_mean_norm
    from training.streaming import custom_objects

    cepstral_mean_norm()  # register the custom layers a saved model may use
    custom_objects()
    try:
        model = keras.models.load_model(keras_path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{keras_path}: cannot load the Keras model ({exc})") from None
    return export_model(model, spec, np.asarray(representative), out_dir, stream=stream)
