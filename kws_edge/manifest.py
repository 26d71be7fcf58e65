"""Model manifests: the versioned JSON that describes a ``.tflite`` model next to it.

Schema ``kws_edge.manifest/1`` (every key required unless marked optional)::

    {
      "schema": "kws_edge.manifest/1",
      "name": "hey_jarvis",                  # model name, [a-z0-9_]+
      "kind": "wakeword" | "commands",
      "model_file": "hey_jarvis.tflite",     # relative to the manifest
      "sha256": "<64 hex>",                  # of model_file
      "size_bytes": 41234,
      "labels": ["_silence_", "_unknown_", "hey_jarvis"],   # one per model output
      "keywords": ["hey_jarvis"],            # labels that produce detections (subset of labels)
      "features": {FeatureParams fields},    # see kws_edge.features.FeatureParams, or a speech-embedding
                                             # front-end: {"kind": "speech_embedding", ...} (kws_edge.embedding)
      "window_frames": 49,                   # MFCC frames per model input
      "stride_frames": 3,                    # run the model every this many new frames
      "input":  {"shape": [1, 49, 10], "dtype": "int8", "scale": 0.1, "zero_point": -5},
      "output": {"shape": [1, 3], "dtype": "int8", "scale": 0.0039, "zero_point": -128},
      "decision": {"thresholds": {"hey_jarvis": 0.7}, "smoothing_ms": 200,
                   "min_hits": 2, "refractory_ms": 1500},
      "arena_bytes": 23000,                  # TFLite Micro tensor arena, measured
      "ops": ["CONV_2D", "DEPTHWISE_CONV_2D", ...],
      "params": 24000, "macs": 2600000,      # optional
      "streaming": {"receptive_frames": 49,   # optional: a streaming model (see below)
                    "state": "resource_variables", "state_bytes": 1900},
      "training": {...}, "metrics": {...}    # optional, free-form
    }

A streaming model keeps the past as state inside the model: each run consumes only the newest
``stride_frames`` frames, so ``window_frames == stride_frames`` and the input is
``[1, stride_frames, numcep]``. Its outputs only count once ``receptive_frames`` frames have been seen
since the last reset (before that they depend on the zero initial state).

:func:`load` checks the manifest alone; :mod:`kws_edge.model` checks it against the model file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kws_edge.embedding import KIND as EMBEDDING_KIND
from kws_edge.embedding import EmbeddingParams
from kws_edge.errors import ModelError
from kws_edge.features import FeatureParams
from kws_edge.names import topic_name_problem

SCHEMA = "kws_edge.manifest/1"
KINDS = ("wakeword", "commands")
_NAME = re.compile(r"[a-z0-9_]{1,64}")
MAX_BYTES = 1_000_000  # a manifest is a few KB; refuse to parse anything much larger
MAX_DIM = 1_000_000  # bound on any tensor dimension, frame count or size field
_REQUIRED = (
    "schema", "name", "kind", "model_file", "sha256", "size_bytes", "labels", "keywords", "features",
    "window_frames", "stride_frames", "input", "output", "decision", "arena_bytes", "ops",
)
_OPTIONAL = ("params", "macs", "training", "metrics", "description", "streaming")
STATE_KINDS = ("resource_variables",)


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype, "scale": self.scale,
                "zero_point": self.zero_point}


@dataclass(frozen=True)
class StreamingSpec:
    receptive_frames: int  # frames an output depends on; outputs count from this many frames on
    state: str  # where the state lives: "resource_variables" (TFLite VAR_HANDLE / ASSIGN_VARIABLE)
    state_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"receptive_frames": self.receptive_frames, "state": self.state, "state_bytes": self.state_bytes}


@dataclass(frozen=True)
class DecisionDefaults:
    thresholds: dict[str, float]
    smoothing_ms: int = 200
    min_hits: int = 1
    refractory_ms: int = 1500

    def to_dict(self) -> dict[str, Any]:
        return {"thresholds": dict(self.thresholds), "smoothing_ms": self.smoothing_ms,
                "min_hits": self.min_hits, "refractory_ms": self.refractory_ms}


@dataclass(frozen=True)
class Manifest:
    name: str
    kind: str
    model_file: str
    sha256: str
    size_bytes: int
    labels: tuple[str, ...]
    keywords: tuple[str, ...]
    features: FeatureParams | EmbeddingParams
    window_frames: int
    stride_frames: int
    input: TensorSpec
    output: TensorSpec
    decision: DecisionDefaults
    arena_bytes: int
    ops: tuple[str, ...]
    params: int | None = None
    macs: int | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    streaming: StreamingSpec | None = None
    path: Path | None = None  # where it was loaded from; not serialised

    @property
    def warmup_frames(self) -> int:
        """Frames after a reset before the model's outputs count (the first full window)."""
        return self.streaming.receptive_frames if self.streaming else self.window_frames

    @property
    def model_path(self) -> Path:
        base = self.path.parent if self.path is not None else Path(".")
        return base / self.model_file

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": SCHEMA, "name": self.name, "kind": self.kind, "description": self.description,
            "model_file": self.model_file, "sha256": self.sha256, "size_bytes": self.size_bytes,
            "labels": list(self.labels), "keywords": list(self.keywords),
            "features": self.features.to_dict(), "window_frames": self.window_frames,
            "stride_frames": self.stride_frames, "input": self.input.to_dict(),
            "output": self.output.to_dict(), "decision": self.decision.to_dict(),
            "arena_bytes": self.arena_bytes, "ops": list(self.ops),
        }
        for key in ("params", "macs"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.streaming is not None:
            data["streaming"] = self.streaming.to_dict()
        data["training"] = self.training
        data["metrics"] = self.metrics
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class _Checker:
    """Collects type errors with the key path, so one message names every problem."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, key: str, expected: str, value: Any) -> ModelError:
        return ModelError(f"{self.where}: key '{key}': expected {expected}, got {value!r}")

    def int_(self, data: dict[str, Any], key: str, minimum: int = 0, maximum: int = 1 << 40) -> int:
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            raise self.fail(key, f"an integer from {minimum} to {maximum}", value)
        return value

    def num(self, data: dict[str, Any], key: str) -> float:
        value = data.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise self.fail(key, "a finite number", value)
        return float(value)

    def str_(self, data: dict[str, Any], key: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise self.fail(key, "a non-empty string", value)
        return value

    def strs(self, data: dict[str, Any], key: str) -> tuple[str, ...]:
        value = data.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "a non-empty list of strings", value)
        return tuple(value)

    def dict_(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key)
        if not isinstance(value, dict):
            raise self.fail(key, "an object", value)
        return value

    def tensor(self, data: dict[str, Any], key: str) -> TensorSpec:
        t = self.dict_(data, key)
        shape = t.get("shape")
        if not isinstance(shape, list) or not 1 <= len(shape) <= 8 or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_DIM for d in shape):
            raise self.fail(f"{key}.shape", f"a list of 1 to 8 integers from 1 to {MAX_DIM}", shape)
        dtype = t.get("dtype")
        if dtype not in ("int8", "uint8", "float32"):
            raise self.fail(f"{key}.dtype", "'int8', 'uint8' or 'float32'", dtype)
        scale = self.num(t, "scale")
        if dtype != "float32" and scale <= 0:
            raise self.fail(f"{key}.scale", "a number > 0", scale)
        zero_point = t.get("zero_point")
        if not isinstance(zero_point, int) or isinstance(zero_point, bool) or not -(1 << 31) <= zero_point < 1 << 31:
            raise self.fail(f"{key}.zero_point", "an integer", zero_point)
        return TensorSpec(tuple(shape), dtype, scale, zero_point)


def parse(data: Any, where: str = "manifest") -> Manifest:
    """Validate a manifest dict and build a :class:`Manifest`; raise ModelError naming the bad key."""
    c = _Checker(where)
    if not isinstance(data, dict):
        raise ModelError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise ModelError(
            f"{where}: key 'schema': expected {SCHEMA!r}, got {data.get('schema')!r} "
            "(a manifest from another version of kws-edge?)"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ModelError(f"{where}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ModelError(f"{where}: unknown key(s) {', '.join(unknown)}")
    name = c.str_(data, "name")
    if not _NAME.fullmatch(name):
        raise c.fail("name", "1 to 64 lower-case letters, digits and '_'", name)
    kind = c.str_(data, "kind")
    if kind not in KINDS:
        raise c.fail("kind", " or ".join(repr(k) for k in KINDS), kind)
    sha = c.str_(data, "sha256")
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise c.fail("sha256", "64 lower-case hex digits", sha)
    labels, keywords = c.strs(data, "labels"), c.strs(data, "keywords")
    if len(set(labels)) != len(labels):
        raise c.fail("labels", "unique labels", list(labels))
    stray = [k for k in keywords if k not in labels]
    if stray:
        raise c.fail("keywords", f"a subset of labels {list(labels)}", stray)
    for kw in keywords:  # keywords become MQTT topic levels and Home Assistant event types
        if problem := topic_name_problem(kw):
            raise c.fail("keywords", f"names usable as MQTT topic levels ({problem})", kw)
    if len(set(keywords)) != len(keywords):
        raise c.fail("keywords", "unique keywords", list(keywords))
    try:
        section = c.dict_(data, "features")
        front_end = EmbeddingParams if "kind" in section else FeatureParams
        if "kind" in section and section["kind"] != EMBEDDING_KIND:
            raise c.fail("features.kind", f"{EMBEDDING_KIND!r} (or no kind: MFCC)", section["kind"])
        features: FeatureParams | EmbeddingParams = front_end.from_dict(section, f"{where}: features")
    except (ValueError, TypeError, ArithmeticError) as exc:
        msg = str(exc)
        raise ModelError(msg if msg.startswith(where) else f"{where}: features: {msg}") from None
    window_frames = c.int_(data, "window_frames", 1, 100_000)
    inp, out = c.tensor(data, "input"), c.tensor(data, "output")
    if inp.shape[-2:] != (window_frames, features.numcep):
        raise c.fail("input.shape", f"[..., {window_frames}, {features.numcep}] (window_frames x numcep)",
                     list(inp.shape))
    if out.shape[-1] != len(labels):
        raise c.fail("output.shape", f"[..., {len(labels)}] (one output per label)", list(out.shape))
    dec = c.dict_(data, "decision")
    thresholds = c.dict_(dec, "thresholds")
    for kw in keywords:
        value = thresholds.get(kw)
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
            raise c.fail(f"decision.thresholds.{kw}", "a number in [0, 1]", value)
    decision = DecisionDefaults(
        thresholds={k: float(v) for k, v in thresholds.items() if k in keywords},
        smoothing_ms=c.int_(dec, "smoothing_ms", 0, 3_600_000),
        min_hits=c.int_(dec, "min_hits", 1, 100_000),
        refractory_ms=c.int_(dec, "refractory_ms", 0, 3_600_000),
    )
    model_file = c.str_(data, "model_file")
    if "\0" in model_file or "/" in model_file or "\\" in model_file or model_file in (".", ".."):
        raise c.fail("model_file", "a file name next to the manifest", model_file)
    optional: dict[str, Any] = {}
    for key in ("params", "macs"):
        optional[key] = c.int_(data, key, 0) if data.get(key) is not None else None
    for key in ("training", "metrics"):
        optional[key] = data.get(key) or {}
        if not isinstance(optional[key], dict):
            raise c.fail(key, "an object", optional[key])
    description = data.get("description", "")
    if not isinstance(description, str):
        raise c.fail("description", "a string", description)
    stride_frames = c.int_(data, "stride_frames", 1, 100_000)
    if data.get("streaming") is not None:
        optional["streaming"] = _streaming(c, c.dict_(data, "streaming"), window_frames, stride_frames)
    return Manifest(
        name=name, kind=kind, model_file=model_file, sha256=sha,
        size_bytes=c.int_(data, "size_bytes", 1, 1 << 31), labels=labels, keywords=keywords, features=features,
        window_frames=window_frames, stride_frames=stride_frames, input=inp,
        output=out, decision=decision, arena_bytes=c.int_(data, "arena_bytes", 0, 1 << 31),
        ops=c.strs(data, "ops"), description=description, **optional,
    )


def _streaming(c: _Checker, s: dict[str, Any], window_frames: int, stride_frames: int) -> StreamingSpec:
    unknown = sorted(set(s) - {"receptive_frames", "state", "state_bytes"})
    if unknown:
        raise c.fail("streaming", "keys receptive_frames, state, state_bytes", f"unknown key(s) {unknown}")
    if stride_frames != window_frames:
        raise c.fail("stride_frames", f"{window_frames} (a streaming model consumes window_frames new "
                     "frames per run)", stride_frames)
    state = s.get("state")
    if state not in STATE_KINDS:
        raise c.fail("streaming.state", " or ".join(repr(k) for k in STATE_KINDS), state)
    inner = _Checker(f"{c.where}: streaming")
    receptive = inner.int_(s, "receptive_frames", window_frames, 100_000)
    return StreamingSpec(receptive, state, inner.int_(s, "state_bytes", 0, 1 << 31))


def load(path: Path | str) -> Manifest:
    """Read and validate a manifest file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ModelError(f"{path}: manifest not found") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read manifest: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise ModelError(f"{path}: manifest larger than {MAX_BYTES} bytes; expected a small JSON file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(f"{path}: not UTF-8 text (byte {exc.start}); expected a JSON manifest") from None
    return dataclasses.replace(loads(text, str(path)), path=path)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(text: str, where: str = "manifest") -> Manifest:
    """Parse and validate manifest JSON text; every malformed input raises ModelError."""
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{where}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except ValueError as exc:
        raise ModelError(f"{where}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ModelError(f"{where}: JSON nested too deeply; expected a manifest object") from None
    return parse(data, where)
