"""The streaming keyword model family: causal 1-D (time) depthwise-separable convolutions.

One model has two forms with the same weights:

- the **trainable** form (:func:`build_stream_classifier`): (batch, window_frames, numcep) float MFCC
  windows -> (batch, num_classes) softmax, trained on the same 49-frame windows as the DS-CNN. Every layer
  is causal and "valid" in time with stride 1, so the output is a function of the last
  :func:`receptive_frames` frames of the window only;
- the **streaming** form (:func:`streaming_tflite`): a full-int8 ``.tflite`` whose one input is the
  ``step_frames`` newest MFCC frames ``[1, step_frames, numcep]`` and whose one output is the posteriors
  ``[1, num_classes]`` for the window ending at the newest frame. The past lives inside the model in TFLite
  resource variables (VAR_HANDLE / READ_VARIABLE / ASSIGN_VARIABLE, int8, zero-initialised by a CALL_ONCE
  init subgraph), as microWakeWord v2 models keep it. Once ``receptive_frames`` frames have been fed since
  the start (or a reset), each output equals the trainable form on the window ending at the newest frame.

The stages, in order (each keeps the last ``context`` frames of its *input* as one int8 state tensor)::

    cmn     x[t] - mean(x[t-M+1..t]) per coefficient (M = norm_frames)     context M-1,  numcep channels
    conv0   Conv (kernel x 1) numcep -> filters, BN, ReLU                   context K-1,  numcep channels
    blockI  depthwise (kernel x 1), BN, ReLU; pointwise 1x1, BN, ReLU       context K-1,  filters channels
    head    mean of the last P frames (P = pool_frames), dense, softmax     context P-1,  filters channels

The causal running-mean CMN replaces the DS-CNN's per-window mean (which cannot be streamed): it still
removes a constant cepstral offset (a microphone's or room's filter) and the log-energy level exactly.

Ops of the streaming ``.tflite`` (all subgraphs), the set the firmware's op resolver must register:
:data:`STREAM_OPS` = ASSIGN_VARIABLE, AVERAGE_POOL_2D, CALL_ONCE, CONCATENATION, CONV_2D,
DEPTHWISE_CONV_2D, READ_VARIABLE, RESHAPE, SOFTMAX, STRIDED_SLICE, SUB, VAR_HANDLE (without ``normalize``
no SUB; :func:`stream_ops` gives the set for a config). The head's dense layer is emitted as a 1x1 CONV_2D,
not FULLY_CONNECTED: the per-channel int8 FULLY_CONNECTED of LiteRT (even its reference kernels) and of
TFLM round differently now and then (1 LSB, measured), while LiteRT's reference kernels and TFLM agree bit
for bit on everything here. TFLite Micro needs a ``MicroResourceVariables`` with at least
``stream_metadata(...)["resource_variables"]`` slots (one per state tensor, named ``state_<stage>``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from kws_edge.errors import ConfigError

STREAM_OPS = (
    "ASSIGN_VARIABLE", "AVERAGE_POOL_2D", "CALL_ONCE", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D",
    "READ_VARIABLE", "RESHAPE", "SOFTMAX", "STRIDED_SLICE", "SUB", "VAR_HANDLE",
)
STAGE_KINDS = ("cmn", "conv", "block", "head")


@dataclass(frozen=True)
class StreamConfig:
    """A small streaming keyword model: temporal depthwise-separable convolutions over MFCC frames."""

    filters: int = 48  # channels of every convolution
    blocks: int = 4  # depthwise-separable blocks after the first convolution
    kernel: int = 5  # frames (time taps) of every convolution
    norm_frames: int = 16  # M: frames of the causal running mean the CMN subtracts (320 ms)
    pool_frames: int = 14  # P: frames the head averages before its dense layer
    dropout: float = 0.2
    normalize: bool = True  # subtract the running mean over the last norm_frames frames (causal CMN)

    def __post_init__(self) -> None:
        if self.filters < 1 or self.blocks < 0 or self.kernel < 1:
            raise ConfigError(f"stream model: need filters >= 1, blocks >= 0, kernel >= 1, got "
                              f"{self.filters}, {self.blocks}, {self.kernel}")
        if self.norm_frames < 1 or self.pool_frames < 1:
            raise ConfigError(f"stream model: need norm_frames >= 1 and pool_frames >= 1, got "
                              f"{self.norm_frames}, {self.pool_frames}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout: expected a number in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def receptive_frames(cfg: StreamConfig) -> int:
    """Frames the newest output depends on, the newest frame included (the exact receptive field)."""
    norm = cfg.norm_frames - 1 if cfg.normalize else 0
    return norm + (cfg.kernel - 1) * (cfg.blocks + 1) + cfg.pool_frames


# ---------------------------------------------------------------------------------------------------------
# Trainable (window) form

_CAUSAL_MEAN_NORM: Any = None


def causal_mean_norm(frames: int, name: str = "cmn") -> Any:
    """A layer: (batch, T, 1, C) -> (batch, T - frames + 1, 1, C), each frame minus the mean of itself and
    the ``frames - 1`` frames before it (AVERAGE_POOL_2D and SUB in TFLite)."""
    global _CAUSAL_MEAN_NORM
    if _CAUSAL_MEAN_NORM is None:
        import keras

        @keras.saving.register_keras_serializable(package="kws_edge")
        class CausalMeanNorm(keras.layers.Layer):
            def __init__(self, frames: int, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                self.frames = frames

            def call(self, x: Any) -> Any:
                mean = keras.ops.average_pool(x, (self.frames, 1), strides=1, padding="valid")
                return x[:, self.frames - 1:] - mean

            def get_config(self) -> dict[str, Any]:
                return {**super().get_config(), "frames": self.frames}

        _CAUSAL_MEAN_NORM = CausalMeanNorm
    return _CAUSAL_MEAN_NORM(frames, name=name)


def custom_objects() -> dict[str, Any]:
    """The custom layers, registered with Keras: call this (or pass it as ``custom_objects``) before
    ``keras.models.load_model`` of a saved streaming model in a fresh process."""
    layer = causal_mean_norm(1)
    return {"kws_edge>CausalMeanNorm": type(layer)}


def _add_stage(x: Any, kind: str, name: str, cfg: StreamConfig, num_classes: int) -> Any:
    """Append one stage's Keras layers (names ``name`` / ``name_*``) to the 4-D tensor ``x``."""
    from keras import layers

    k = (cfg.kernel, 1)
    if kind == "cmn":
        return causal_mean_norm(cfg.norm_frames, name)(x)
    if kind == "conv":
        x = layers.Conv2D(cfg.filters, k, padding="valid", use_bias=False, name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        return layers.Dropout(cfg.dropout, name=f"{name}_dropout")(x)
    if kind == "block":
        x = layers.DepthwiseConv2D(k, padding="valid", use_bias=False, name=f"{name}_dw")(x)
        x = layers.BatchNormalization(name=f"{name}_dw_bn")(x)
        x = layers.ReLU(name=f"{name}_dw_relu")(x)
        x = layers.Conv2D(cfg.filters, (1, 1), use_bias=False, name=f"{name}_pw")(x)
        x = layers.BatchNormalization(name=f"{name}_pw_bn")(x)
        return layers.ReLU(name=f"{name}_pw_relu")(x)
    if kind == "head":
        x = layers.Dropout(cfg.dropout, name=f"{name}_dropout")(x)
        x = layers.AveragePooling2D((cfg.pool_frames, 1), strides=1, name=f"{name}_pool")(x)
        x = layers.Reshape((int(x.shape[-1]),), name=f"{name}_flat")(x)
        return layers.Dense(num_classes, activation="softmax", name="posteriors")(x)
    raise AssertionError(kind)  # build_stage_model checked the kinds


def stage_kinds(cfg: StreamConfig) -> list[str]:
    """The stage kinds of the classifier, in order."""
    return [*(["cmn"] if cfg.normalize else []), "conv", *(["block"] * cfg.blocks), "head"]


def _named(kinds: Sequence[str]) -> list[tuple[str, str]]:
    """(kind, layer-name prefix) per stage: cmn, conv0, block1..blockN, head."""
    names, blocks = [], 0
    for kind in kinds:
        blocks += kind == "block"
        names.append((kind, {"conv": "conv0", "block": f"block{blocks}"}.get(kind, kind)))
    return names


def _stage_context(kind: str, cfg: StreamConfig) -> int:
    return {"cmn": cfg.norm_frames, "conv": cfg.kernel, "block": cfg.kernel, "head": cfg.pool_frames}[kind] - 1


def build_stage_model(cfg: StreamConfig, kinds: Sequence[str], window_frames: int, channels: int,
                      num_classes: int, batch_size: int | None = None) -> Any:
    """A trainable model of only the given stage kinds, in order: (batch, window_frames, channels) ->
    the last stage's output ((batch, frames, 1, C) or, with a head, (batch, num_classes)).

    :func:`build_stream_classifier` is this with every stage; single stages are what the streaming tests
    check one layer type at a time. The window is cropped to its last receptive frames of the stages.
    """
    import keras
    from keras import layers

    unknown = sorted(set(kinds) - set(STAGE_KINDS))
    if unknown:
        raise ConfigError(f"stream model: unknown stage kind(s) {unknown}; expected {STAGE_KINDS}")
    plan = _named(kinds)
    receptive = 1 + sum(_stage_context(kind, cfg) for kind, _ in plan)
    if receptive > window_frames:
        raise ConfigError(f"stream model: receptive field {receptive} frames exceeds the {window_frames}-frame "
                          "training window; use fewer blocks, a smaller kernel, norm_frames or pool_frames")
    inp = keras.Input(shape=(window_frames, channels), batch_size=batch_size, name="mfcc")
    x = inp
    if window_frames > receptive:
        x = layers.Cropping1D((window_frames - receptive, 0), name="crop")(x)
    x = layers.Reshape((receptive, 1, channels), name="frames")(x)
    for kind, name in plan:
        x = _add_stage(x, kind, name, cfg, num_classes)
    return keras.Model(inp, x, name="stream_dscnn")


def build_stream_classifier(cfg: StreamConfig, window_frames: int, numcep: int, num_classes: int,
                            batch_size: int | None = None) -> Any:
    """The trainable form: (batch, window_frames, numcep) float MFCC -> (batch, num_classes) softmax."""
    return build_stage_model(cfg, stage_kinds(cfg), window_frames, numcep, num_classes, batch_size)


# ---------------------------------------------------------------------------------------------------------
# Streaming form


@dataclass(frozen=True)
class StreamStage:
    """One stage of the streaming form, batch norm folded: it keeps its input's last ``context`` frames."""

    name: str
    kind: str  # one of STAGE_KINDS
    context: int  # frames of past input kept as state
    channels: int  # channels of the stage's input (and of its state)
    weights: tuple[npt.NDArray[np.float32], ...]  # conv (w, b); block (dw, b, pw, b); head (w, b); cmn ()

    @property
    def state_name(self) -> str:
        return f"state_{self.name}"


def _fold(kernel: npt.NDArray[Any], bn: Any, depthwise: bool = False) -> tuple[npt.NDArray[np.float32], ...]:
    """Fold an inference-mode BatchNormalization into the convolution before it: (kernel, bias)."""
    gamma, beta, mean, var = (np.asarray(w, np.float64) for w in bn.get_weights())
    scale = gamma / np.sqrt(var + bn.epsilon)
    k = np.asarray(kernel, np.float64) * (scale[:, None] if depthwise else scale)
    return k.astype(np.float32), (beta - mean * scale).astype(np.float32)


def stream_stages(model: Any) -> list[StreamStage]:
    """The streaming stages of a trainable model from :func:`build_stage_model`, weights copied and folded."""
    layer = {lay.name: lay for lay in model.layers}
    stages: list[StreamStage] = []
    for name, lay in layer.items():
        if name == "cmn":
            stages.append(StreamStage(name, "cmn", lay.frames - 1, int(lay.input.shape[-1]), ()))
        elif name == "conv0":
            w, b = _fold(lay.get_weights()[0], layer["conv0_bn"])
            stages.append(StreamStage(name, "conv", lay.kernel_size[0] - 1, int(lay.input.shape[-1]), (w, b)))
        elif name.startswith("block") and name.endswith("_dw"):
            block = name[:-3]
            dw, b1 = _fold(lay.get_weights()[0], layer[f"{block}_dw_bn"], depthwise=True)
            pw, b2 = _fold(layer[f"{block}_pw"].get_weights()[0], layer[f"{block}_pw_bn"])
            stages.append(StreamStage(block, "block", lay.kernel_size[0] - 1, int(lay.input.shape[-1]),
                                      (dw, b1, pw, b2)))
        elif name == "head_pool":
            w, b = (np.asarray(v, np.float32) for v in layer["posteriors"].get_weights())
            stages.append(StreamStage("head", "head", lay.pool_size[0] - 1, int(lay.input.shape[-1]), (w, b)))
    return stages


def _stage_step(stage: StreamStage, state: Any, x: Any) -> tuple[Any, Any]:
    """One streaming step of one stage in TensorFlow: (state, new frames (1, step, 1, C)) ->
    (output: (1, step, 1, C') or posteriors (1, classes) for the head, the new state or None)."""
    import tensorflow as tf

    buf = tf.concat([state, x], axis=1) if stage.context else x
    length = int(buf.shape[1])
    new_state = buf[:, length - stage.context:] if stage.context else None
    w = stage.weights
    if stage.kind == "cmn":
        y = x - tf.nn.avg_pool2d(buf, (stage.context + 1, 1), 1, "VALID")
    elif stage.kind == "conv":
        y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(buf, w[0], 1, "VALID"), w[1]))
    elif stage.kind == "block":
        y = tf.nn.relu(tf.nn.bias_add(tf.nn.depthwise_conv2d(buf, w[0], [1, 1, 1, 1], "VALID"), w[1]))
        y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(y, w[2], 1, "VALID"), w[3]))
    else:  # head: the mean of the newest pool_frames frames, dense, softmax
        pool = stage.context + 1
        tail = buf[:, length - pool:] if length > pool else buf
        pooled = tf.nn.avg_pool2d(tail, (pool, 1), 1, "VALID")  # (1, 1, 1, C)
        # The dense layer as a 1x1 CONV_2D: the per-channel int8 FULLY_CONNECTED of LiteRT and of TFLM
        # round differently now and then (see the module docstring); their CONV_2D agree bit for bit.
        logits = tf.nn.bias_add(tf.nn.conv2d(pooled, w[0][None, None], 1, "VALID"), w[1])
        y = tf.nn.softmax(tf.reshape(logits, (1, -1)))
    return y, new_state


def _streaming_module(stages: list[StreamStage], step_frames: int) -> Any:
    """A tf.Module whose ``step`` consumes (1, step_frames, channels) new frames; the state is tf.Variables."""
    import tensorflow as tf

    channels = stages[0].channels

    class StreamingModule(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="kws_stream")
            self.states = {s.name: tf.Variable(tf.zeros((1, s.context, 1, s.channels)), trainable=False,
                                               name=s.state_name) for s in stages if s.context}

        @tf.function(input_signature=[tf.TensorSpec((1, step_frames, channels), tf.float32, name="mfcc")])
        def step(self, frames: Any) -> Any:
            x = tf.reshape(frames, (1, step_frames, 1, channels))
            for stage in stages:
                var = self.states.get(stage.name)
                x, new_state = _stage_step(stage, var, x)
                if var is not None:
                    var.assign(new_state)
            return x

        def reset(self) -> None:
            for var in self.states.values():
                var.assign(tf.zeros_like(var))

    return StreamingModule()


class FloatStream:
    """The streaming form in float TensorFlow: the reference the int8 ``.tflite`` is checked against.

    ``step(frames)`` takes the ``step_frames`` newest (step_frames, channels) frames and returns the
    model's output for them: the posteriors for a classifier, else the last stage's (step_frames, C) frames.
    """

    def __init__(self, model: Any, step_frames: int) -> None:
        self.stages = stream_stages(model)
        self.step_frames = step_frames
        self._module = _streaming_module(self.stages, step_frames)

    def reset(self) -> None:
        self._module.reset()

    def step(self, frames: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        out = np.asarray(self._module.step(np.asarray(frames, np.float32)[None]))
        return out[0] if self.stages[-1].kind == "head" else out.reshape(self.step_frames, -1)

    def run(self, stream: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Feed a (frames, channels) stream step by step (frames a multiple of step_frames); stack the outputs."""
        steps = len(stream) // self.step_frames
        return np.stack([self.step(stream[i * self.step_frames:(i + 1) * self.step_frames])
                         for i in range(steps)])


def _calibration_steps(representative: npt.NDArray[Any], step_frames: int,
                       ramp_frames: int) -> Iterator[list[Any]]:
    """The calibration windows joined into one stream, fed step by step, so the state variables see the
    values they will hold. A linear ramp of ``ramp_frames`` leads from 0 (the initial state) to the first
    window and from each window's last frame to the next one's first: a jump from the zero state to MFCC
    levels (the log energy alone is ~10-20), or from one clip's channel to another's, is a transient no
    real stream has after its warm-up, and the calibrator's min/max would size the tensors for it
    (measured without the ramps: the CMN's scale 2.6x, the logits' 2x coarser)."""
    pieces, last = [], np.zeros(representative.shape[2])
    t = np.linspace(0.0, 1.0, ramp_frames + 2)[1:-1, None]
    for window in representative.astype(np.float64):
        pieces += [last + t * (window[0] - last), window]
        last = window[-1]
    frames = np.concatenate(pieces)
    for i in range(len(frames) % step_frames, len(frames), step_frames):
        yield [frames[None, i:i + step_frames].astype(np.float32)]


def streaming_tflite(trained: Any, cfg: StreamConfig, step_frames: int,
                     representative: npt.NDArray[Any]) -> bytes:
    """The full-int8 streaming ``.tflite``: input (1, step_frames, numcep) int8 new frames, output
    (1, num_classes) int8 posteriors, state in int8 resource variables zeroed by CALL_ONCE.

    ``representative``: float windows (N, window_frames, numcep) for calibration, each fed step by step.
    """
    import tensorflow as tf

    from training.export import quiet_native_output

    stages = stream_stages(trained)
    receptive = 1 + sum(s.context for s in stages)
    if receptive != receptive_frames(cfg) or not stages or stages[-1].kind != "head":
        raise ConfigError(f"streaming_tflite: the model's stages (receptive field {receptive} frames) do not "
                          f"match the config (receptive field {receptive_frames(cfg)} frames) or have no head")
    if step_frames < 1:
        raise ConfigError(f"streaming_tflite: step_frames must be >= 1, got {step_frames}")
    module = _streaming_module(stages, step_frames)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.step.get_concrete_function()], module)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter.experimental_enable_resource_variables = True  # keep the state as VAR_HANDLE variables
    converter._experimental_variable_quantization = True  # int8 state (else float with QUANTIZE around it)
    converter.representative_dataset = lambda: _calibration_steps(np.asarray(representative), step_frames,
                                                                  receptive)
    with quiet_native_output(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return bytes(converter.convert())


def tflite_operators(data: bytes) -> Iterator[tuple[Any, Any, Any, str]]:
    """(model, subgraph, operator, builtin op name) for every operator of a ``.tflite`` flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(data, 0)
    for g in range(model.SubgraphsLength()):
        sub = model.Subgraphs(g)
        for i in range(sub.OperatorsLength()):
            op = sub.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            yield model, sub, op, names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]


def tflite_ops(data: bytes) -> list[str]:
    """Builtin operator names used by any subgraph of a ``.tflite`` flatbuffer, sorted."""
    return sorted({name for *_, name in tflite_operators(data)})


def _state_shapes(cfg: StreamConfig, numcep: int) -> list[tuple[str, tuple[int, int, int, int]]]:
    shapes = []
    for kind, name in _named(stage_kinds(cfg)):
        context = _stage_context(kind, cfg)
        channels = numcep if kind in ("cmn", "conv") else cfg.filters
        if context:
            shapes.append((f"state_{name}", (1, context, 1, channels)))
    return shapes


def stream_ops(cfg: StreamConfig) -> list[str]:
    """The ops :func:`streaming_tflite` emits for ``cfg`` (a subset of :data:`STREAM_OPS`)."""
    ops = {"AVERAGE_POOL_2D", "CONV_2D", "RESHAPE", "SOFTMAX"}
    ops |= {"DEPTHWISE_CONV_2D"} if cfg.blocks else set()
    ops |= {"SUB"} if cfg.normalize else set()
    if _state_shapes(cfg, 1):
        ops |= {"ASSIGN_VARIABLE", "CALL_ONCE", "CONCATENATION", "READ_VARIABLE", "STRIDED_SLICE", "VAR_HANDLE"}
    return sorted(ops)


def stream_metadata(cfg: StreamConfig, step_frames: int, numcep: int,
                    num_classes: int | None = None) -> dict[str, Any]:
    """What a manifest needs to know about the streaming form of ``cfg``.

    ``macs_per_step`` counts the convolutions' and dense layer's multiply-accumulates for one run of
    ``step_frames`` new frames (the dense layer only when ``num_classes`` is given), as
    ``training.model.count_macs`` counts a window model; the CMN and pooling add ~(M + P) * channels
    additions per frame on top. ``state_bytes`` is the int8 state kept between runs.
    """
    k, f = cfg.kernel, cfg.filters
    per_frame = k * numcep * f + cfg.blocks * (k * f + f * f)
    shapes = _state_shapes(cfg, numcep)
    return {
        "step_frames": step_frames,
        "receptive_frames": receptive_frames(cfg),
        "state": "resource_variables",
        "state_bytes": sum(math.prod(shape) for _, shape in shapes),
        "resource_variables": len(shapes),
        "state_tensors": [{"name": name, "shape": list(shape), "dtype": "int8"} for name, shape in shapes],
        "macs_per_step": step_frames * per_frame + (f * num_classes if num_classes else 0),
        "ops": stream_ops(cfg),
    }
