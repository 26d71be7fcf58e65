"""The DS-CNN family (depthwise-separable CNN, the MLPerf Tiny keyword-spotting reference).

Input: a (window_frames, numcep) MFCC window of raw ``kws_edge.features.mfcc`` values, the same floats
the runtime quantizes. The graph uses only RESHAPE, CONV_2D, DEPTHWISE_CONV_2D, AVERAGE_POOL_2D,
FULLY_CONNECTED and SOFTMAX once converted with batch size 1 (batch norm folds into the convolutions,
ReLU fuses into them), so TensorFlow Lite Micro needs only those kernels; with ``normalize`` the window's
mean over time is subtracted first (MEAN and SUB).

The MLPerf Tiny reference is ``DsCnnConfig(filters=64, blocks=4)``: ~24 K parameters, ~2.7 M MACs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from kws_edge.errors import ConfigError


@dataclass(frozen=True)
class DsCnnConfig:
    """Width, depth and the first convolution of a DS-CNN."""

    filters: int = 64  # channels in every layer (the "width")
    blocks: int = 4  # depthwise-separable blocks (the "depth")
    first_kernel: tuple[int, int] = (10, 4)  # (time frames, MFCC coefficients)
    first_stride: tuple[int, int] = (2, 2)
    dropout: float = 0.2
    normalize: bool = False  # subtract each window's mean over time from every MFCC coefficient (CMN)

    def __post_init__(self) -> None:
        if self.filters < 1 or self.blocks < 0:
            raise ConfigError(f"model: need filters >= 1 and blocks >= 0, got {self.filters}, {self.blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout: expected a number in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["first_kernel"] = list(self.first_kernel)
        data["first_stride"] = list(self.first_stride)
        return data


def build_dscnn(cfg: DsCnnConfig, input_shape: tuple[int, int], num_classes: int,
                batch_size: int | None = None) -> Any:
    """A Keras DS-CNN classifier: (batch, frames, coefficients) float -> (batch, num_classes) softmax."""
    import keras
    from keras import layers

    frames, coeffs = input_shape
    inp = keras.Input(shape=(frames, coeffs), batch_size=batch_size, name="mfcc")
    x = cepstral_mean_norm()(inp) if cfg.normalize else inp
    x = layers.Reshape((frames, coeffs, 1))(x)
    x = layers.Conv2D(cfg.filters, cfg.first_kernel, strides=cfg.first_stride, padding="same",
                      use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(cfg.dropout)(x)
    for _ in range(cfg.blocks):
        x = layers.DepthwiseConv2D((3, 3), padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(cfg.filters, (1, 1), use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.Dropout(cfg.dropout)(x)
    h, w = int(x.shape[1]), int(x.shape[2])
    x = layers.AveragePooling2D(pool_size=(h, w))(x)
    x = layers.Flatten()(x)
    out = layers.Dense(num_classes, activation="softmax", name="posteriors")(x)
    return keras.Model(inp, out, name="ds_cnn")


def build_embedding_head(units: int, layers_n: int, dropout: float, input_shape: tuple[int, int],
                         num_classes: int, batch_size: int | None = None) -> Any:
    """The ``embedding`` family's keyword head: (batch, 16, 96) speech embeddings -> posteriors.

    ``layers_n`` dense layers of ``units`` (batch norm, ReLU, dropout) on the flattened window, as
    openWakeWord's heads; converted, only FULLY_CONNECTED, RESHAPE and SOFTMAX (batch norm folds away).
    """
    import keras
    from keras import layers

    frames, dims = input_shape
    inp = keras.Input(shape=(frames, dims), batch_size=batch_size, name="embeddings")
    x = layers.Flatten()(inp)
    for _ in range(layers_n):
        x = layers.Dense(units, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Dropout(dropout)(x)
    out = layers.Dense(num_classes, activation="softmax", name="posteriors")(x)
    return keras.Model(inp, out, name="embedding_head")


_CMN: Any = None


def cepstral_mean_norm() -> Any:
    """A layer that subtracts each window's mean over time from every coefficient (MEAN and SUB in TFLite).

    A microphone or room is a filter: in the cepstrum it adds a constant to each coefficient, and the
    log-energy coefficient moves with the speaker's distance and the input gain. Removing the window's
    mean removes both, so a model trained on studio-flat TTS voices is not thrown by a real channel.
    """
    global _CMN
    if _CMN is None:
        import keras

        @keras.saving.register_keras_serializable(package="kws_edge")
        class CepstralMeanNorm(keras.layers.Layer):
            def call(self, x: Any) -> Any:
                return x - keras.ops.mean(x, axis=1, keepdims=True)

        _CMN = CepstralMeanNorm
    return _CMN(name="cmn")


def count_macs(model: Any) -> int:
    """Multiply-accumulates per inference of the convolution and dense layers (batch norm folded)."""
    from keras import layers

    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            total += int(h) * int(w) * int(c) * kh * kw
        elif isinstance(layer, layers.Conv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            cin = int(layer.input.shape[-1])
            total += int(h) * int(w) * int(c) * kh * kw * cin
        elif isinstance(layer, layers.Dense):
            total += int(layer.input.shape[-1]) * layer.units
    return total


def count_params(model: Any) -> int:
    """Parameters of the deployed graph: batch-norm statistics fold away, so count what remains."""
    from keras import layers

    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            total += int(layer.gamma.shape[0])  # becomes one bias per channel after folding
        elif isinstance(layer, layers.Conv2D | layers.DepthwiseConv2D | layers.Dense):
            total += sum(int(math.prod(w.shape)) for w in layer.weights)
    return total
