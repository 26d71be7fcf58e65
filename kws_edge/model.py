"""Model runner: a ``.tflite`` file plus its manifest, checked against each other, run on MFCC windows.

The interpreter is LiteRT (``ai-edge-litert``) when installed, else ``tflite-runtime`` (2.14, which
needs ``numpy<2``). Input quantization comes from the tensor's own scale and zero point.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kws_edge import manifest as mf
from kws_edge.errors import ModelError

_DTYPES: dict[str, type[Any]] = {"int8": np.int8, "uint8": np.uint8, "float32": np.float32}
_INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255)}


def interpreter_backend() -> tuple[str, Callable[..., Any]]:
    """Return (name, factory) of the best available TFLite interpreter.

    ``KWS_EDGE_INTERPRETER=tflite-runtime`` forces the fallback (used by its test).
    """
    forced = os.environ.get("KWS_EDGE_INTERPRETER", "")
    if forced != "tflite-runtime":
        try:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

            def litert(*, reference: bool = False, delegates: bool = False, **kw: Any) -> Any:
                # The builtin kernels, without the XNNPACK delegate: their int8 outputs equal TFLite Micro's
                # (<= 1 LSB), so the Pi and the Nano score alike and eval's thresholds hold on both. XNNPACK
                # would be ~4x faster (27 vs 127 us for hey_jarvis) but its int8 softmax differs by up to 19 LSB.
                # A streaming model carries every difference forward in its state: it gets the reference
                # kernels, which TFLite Micro equals bit for bit (tests/test_firmware_tflm_qemu.py).
                # ``delegates``: the default kernels with XNNPACK, for the float speech-embedding front-end
                # (Pi only, so no Nano to agree with).
                resolver = (OpResolverType.BUILTIN_REF if reference else OpResolverType.BUILTIN if delegates
                            else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
                return Interpreter(experimental_op_resolver_type=resolver, num_threads=1, **kw)

            return "ai-edge-litert", litert
        except ImportError:
            if forced == "ai-edge-litert":
                raise ModelError("KWS_EDGE_INTERPRETER=ai-edge-litert but ai-edge-litert is not installed") \
                    from None
    try:
        from tflite_runtime.interpreter import Interpreter as TfliteInterpreter
    except ImportError:
        raise ModelError(
            "no TFLite interpreter: install ai-edge-litert (pip install ai-edge-litert), or "
            "tflite-runtime with numpy<2 on platforms without LiteRT wheels"
        ) from None

    def tflite(*, reference: bool = False, delegates: bool = False, **kw: Any) -> Any:
        from tflite_runtime.interpreter import OpResolverType as TfliteResolver

        if reference:
            kw["experimental_op_resolver_type"] = TfliteResolver.BUILTIN_REF
        return TfliteInterpreter(num_threads=1, **kw)

    return "tflite-runtime", tflite


def quantize(x: npt.NDArray[np.floating[Any]], scale: float, zero_point: int, dtype: str) -> npt.NDArray[Any]:
    """Float -> integer with the tensor's scale and zero point: round half to even (C: nearbyintf), then clip."""
    if dtype == "float32":
        return np.asarray(x, dtype=np.float32)
    lo, hi = _INT_RANGE[dtype]
    q = np.rint(np.asarray(x, dtype=np.float64) / scale) + zero_point
    return np.clip(q, lo, hi).astype(_DTYPES[dtype])


def dequantize(q: npt.NDArray[Any], scale: float, zero_point: int) -> npt.NDArray[np.float64]:
    if q.dtype == np.float32:
        return q.astype(np.float64)
    return (q.astype(np.float64) - zero_point) * scale


def model_ops(interpreter: Any) -> list[str]:
    """Sorted unique builtin op names used by a loaded interpreter."""
    try:
        details = interpreter._get_ops_details()
    except AttributeError:  # tflite-runtime < 2.5
        return []
    # With XNNPACK the delegated nodes stay listed, plus one DELEGATE node that is not a model op.
    return sorted({d["op_name"] for d in details} - {"DELEGATE"})


@dataclass(frozen=True)
class _Quant:
    scale: float
    zero_point: int
    dtype: str


class ModelRunner:
    """One loaded model: ``run(window)`` maps a (window_frames, numcep) MFCC window to label posteriors.

    A streaming model (``manifest.streaming``) is fed its newest ``window_frames`` frames per run and
    keeps the past inside the interpreter, so every run must follow the previous one's frames;
    :meth:`reset` starts it afresh (a new stream).
    """

    def __init__(self, manifest: mf.Manifest, interpreter: Any, backend: str,
                 factory: Callable[[], Any] | None = None) -> None:
        self.manifest = manifest
        self.backend = backend
        self._interp = interpreter
        self._factory = factory
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        self._in_shape = tuple(inp["shape"])
        self._in = _Quant(manifest.input.scale, manifest.input.zero_point, manifest.input.dtype)
        self._out = _Quant(manifest.output.scale, manifest.output.zero_point, manifest.output.dtype)
        self._in_range = _INT_RANGE.get(self._in.dtype)
        self._in_dtype = _DTYPES[self._in.dtype]
        # An integer output dequantizes by table lookup: one numpy call per run instead of three.
        self._deq: npt.NDArray[np.float64] | None = None
        if self._out.dtype in _INT_RANGE:
            codes = np.arange(256, dtype=np.uint8).view(_DTYPES[self._out.dtype])
            self._deq = dequantize(codes, self._out.scale, self._out.zero_point)

    @property
    def name(self) -> str:
        return self.manifest.name

    def reset(self) -> None:
        """Forget a streaming model's state (nothing to do for a window model)."""
        if self.manifest.streaming is None:
            return
        if self._factory is None:
            raise ModelError(f"{self.name}: a streaming model needs its interpreter factory to reset")
        # LiteRT has no call that re-runs a model's CALL_ONCE initializer: a fresh interpreter does.
        self._interp = self._factory()

    def fresh(self) -> ModelRunner:
        """A runner that shares nothing mutable with this one: itself for a window model (stateless
        between runs), a new interpreter for a streaming model (each stream needs its own state)."""
        if self.manifest.streaming is None or self._factory is None:
            return self
        return ModelRunner(self.manifest, self._factory(), self.backend, self._factory)

    def with_manifest(self, manifest: mf.Manifest) -> ModelRunner:
        """The same model with other manifest fields (e.g. decision defaults under evaluation)."""
        return ModelRunner(manifest, self._interp, self.backend, self._factory)

    def classify(self, window: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Posteriors for one stand-alone window of ``warmup_frames`` or more frames (eval, tests).

        A window model runs on its last ``window_frames`` frames; a streaming model is reset and fed the
        window step by step, so its last output sees the same frames.
        """
        m = self.manifest
        if m.streaming is None:
            return self.run(window[len(window) - m.window_frames:])
        self.reset()
        step = m.window_frames
        start = len(window) % step
        post = np.zeros(len(m.labels))
        for i in range(start, len(window), step):
            post = self.run(window[i:i + step])
        return post

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    def quantize_input(self, window: npt.NDArray[np.float64]) -> npt.NDArray[Any]:
        return quantize(window, self._in.scale, self._in.zero_point, self._in.dtype).reshape(self._in_shape)

    def run_quantized(self, q: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Run on an already quantized input; return the raw output tensor (int8 for int8 models)."""
        self._interp.set_tensor(self._in_index, q.reshape(self._in_shape))
        self._interp.invoke()
        return np.array(self._interp.get_tensor(self._out_index)).reshape(-1)

    def quantize_frames(self, frames: npt.NDArray[np.float64]) -> npt.NDArray[Any]:
        """Quantize any number of (numcep,) MFCC rows at once, as :meth:`run` would: a pipeline quantizes
        a chunk's frames once and then feeds overlapping windows of them to :meth:`run_frames`."""
        if self._in_range is None:
            return np.asarray(frames, dtype=np.float32)
        # Same arithmetic as quantize(), with fewer temporaries: round, shift, clip, cast.
        scaled = np.rint(frames / self._in.scale)
        scaled += self._in.zero_point
        np.clip(scaled, self._in_range[0], self._in_range[1], out=scaled)
        return scaled.astype(self._in_dtype)

    def run_frames(self, q: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        """Posteriors for one window of rows from :meth:`quantize_frames`."""
        self._interp.set_tensor(self._in_index, q.reshape(self._in_shape))
        self._interp.invoke()
        raw = self._interp.get_tensor(self._out_index).reshape(-1)
        if self._deq is not None:
            return self._deq[raw.view(np.uint8)]
        return dequantize(raw, self._out.scale, self._out.zero_point)

    def run(self, window: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Posteriors (one per label, float) for one (window_frames, numcep) float MFCC window."""
        return self.run_frames(self.quantize_frames(window))


def _report_skip(exc: ModelError) -> None:
    print(f"kws-edge: error: skipping an installed model: {exc}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence C-level writes to fd 2 (not Python exceptions, which are raised after it is restored)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _check_against_model(m: mf.Manifest, interp: Any, path: Path) -> None:
    inp = interp.get_input_details()
    out = interp.get_output_details()
    if len(inp) != 1 or len(out) != 1:
        raise ModelError(f"{path}: expected 1 input and 1 output tensor, found {len(inp)} and {len(out)}")
    for role, spec, det in (("input", m.input, inp[0]), ("output", m.output, out[0])):
        shape = tuple(int(d) for d in det["shape"])
        dtype = np.dtype(det["dtype"]).name
        if shape != spec.shape:
            raise ModelError(f"{path}: {role} shape is {list(shape)} but the manifest says {list(spec.shape)}")
        if dtype != spec.dtype:
            raise ModelError(f"{path}: {role} dtype is {dtype} but the manifest says {spec.dtype}")
        if spec.dtype != "float32":
            scale, zp = det["quantization"]
            if not np.isclose(scale, spec.scale, rtol=1e-6) or int(zp) != spec.zero_point:
                raise ModelError(
                    f"{path}: {role} quantization is scale={scale:g} zero_point={zp} but the manifest says "
                    f"scale={spec.scale:g} zero_point={spec.zero_point}"
                )
    ops = model_ops(interp)
    if ops and m.ops and sorted(m.ops) != ops:
        raise ModelError(f"{path}: model uses ops {ops} but the manifest lists {sorted(m.ops)}")


def load_model(manifest_path: Path | str) -> ModelRunner:
    """Load a manifest and its model file, check them against each other, return a runner."""
    m = mf.load(manifest_path)
    path = m.model_path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{path}: model file named by {m.path} not found") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model file named by {m.path} ({exc.strerror or exc}); "
                         "expected a .tflite file") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != m.sha256:
        raise ModelError(
            f"{path}: sha256 is {digest[:12]}... but {m.path} expects {m.sha256[:12]}...; "
            "the model and its manifest do not belong together (re-export the model)"
        )
    if len(data) != m.size_bytes:
        raise ModelError(f"{path}: size is {len(data)} bytes but the manifest says {m.size_bytes}")
    backend, factory = interpreter_backend()

    def new_interpreter() -> Any:
        with _quiet_stderr():  # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" on fd 2
            interp = factory(model_content=data, reference=m.streaming is not None)
            interp.allocate_tensors()
        return interp

    try:
        interp = new_interpreter()
    except Exception as exc:  # the interpreters raise ValueError, RuntimeError and others on bad models
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a usable TFLite model ({first})") from None
    _check_against_model(m, interp, path)
    return ModelRunner(m, interp, backend, new_interpreter)


def model_dirs() -> list[Path]:
    """Where models are looked up by name, first match wins."""
    dirs = [Path(p) for p in os.environ.get("KWS_EDGE_MODELS", "").split(os.pathsep) if p]
    dirs += [Path(__file__).resolve().parent.parent / "models", Path("/var/lib/kws-edge/models"),
             Path("/usr/share/kws-edge/models")]
    return dirs


def installed_manifests() -> list[Path]:
    """Every ``*.json`` manifest in the model directories, one per model name (first directory wins)."""
    seen: dict[str, Path] = {}
    for d in model_dirs():
        for path in sorted(d.glob("*.json")) if d.is_dir() else []:
            if path.name.endswith(".report.json"):
                continue
            seen.setdefault(path.stem, path)
    return list(seen.values())


def resolve_manifest(spec: str) -> Path:
    """``--model`` value -> manifest path: a .json, a .tflite with its .json beside it, or a model name."""
    path = Path(spec)
    if path.suffix == ".tflite":
        manifest = path.with_suffix(".json")
        if not path.exists():
            raise ModelError(f"{path}: no such model file")
        if not manifest.exists():
            raise ModelError(f"{path}: its manifest {manifest.name} is missing; every model needs one")
        return manifest
    if path.suffix == ".json" or os.sep in spec:
        if not path.exists():
            raise ModelError(f"{path}: no such manifest")
        return path
    for d in model_dirs():
        candidate = d / f"{spec}.json"
        if candidate.exists():
            return candidate
    names = ", ".join(p.stem for p in installed_manifests()) or "none installed"
    raise ModelError(f"unknown model {spec!r}; installed models: {names}")


def load_models(specs: list[str] | None,
                on_skip: Callable[[ModelError], None] | None = None) -> list[ModelRunner]:
    """Load the named models, or every installed model when ``specs`` is empty.

    A named model that cannot be loaded is an error. Among the installed models, one that cannot be
    loaded is skipped and reported through ``on_skip`` (default: a line on stderr), so one bad manifest
    does not take the others down; it is an error only when none is left.
    """
    paths = [resolve_manifest(s) for s in specs] if specs else installed_manifests()
    if not paths:
        raise ModelError("no models installed; train one with 'kws-edge train' or pass --model PATH")
    if specs:
        runners = [load_model(p) for p in paths]
    else:
        runners, skipped = [], []
        for p in paths:
            try:
                runners.append(load_model(p))
            except ModelError as exc:
                skipped.append(exc)
                (on_skip or _report_skip)(exc)
        if not runners:
            raise ModelError(f"no installed model could be loaded ({len(skipped)} skipped; first: {skipped[0]})")
    names = [r.name for r in runners]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ModelError(f"model(s) {', '.join(dup)} given twice")
    return runners
