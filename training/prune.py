"""Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune"), by hand as a Keras callback.

``[train] prune_sparsity = s_f`` (> 0) zeroes the smallest-magnitude weights of every convolution and
dense kernel (not biases, not normalization), each kernel to its own share, along the polynomial schedule

    s_t = s_f * (1 - (1 - (t - t_0) / (t_1 - t_0))^3)    for t_0 <= t <= t_1 (0 before, s_f after)

over training steps t, with t_0 / t_1 = ``prune_begin`` / ``prune_end`` times the first pass's steps.
Every ``update_every`` steps the masks are recomputed from the current magnitudes (weights already pruned
are zero, so they stay pruned as s_t grows); after t_1 they are fixed. Every train batch ends with the
masks applied, so a pruned weight stays zero through the mining rounds too, and the weights any callback
snapshots at an epoch's end are the pruned ones. :class:`KeepBest` (training/train.py) only keeps epochs
ending at or after t_1, when every kernel is at s_f.

TFLite int8 kernels are stored dense: pruning shrinks a model only once compressed (:func:`gzip_bytes`).
:func:`tflite_sparsity` counts the zeros in an exported model's int8 filters (window or streaming form;
folding a BatchNormalization into a kernel scales it, so its zeros survive the export).
"""

from __future__ import annotations

import gzip
from typing import Any

import numpy as np
import numpy.typing as npt

PRUNED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")  # TFLite ops whose input 1 is a filter


def schedule(step: int, final: float, begin: int, end: int, power: int = 3) -> float:
    """The target sparsity after ``step`` training steps (0 until ``begin``, ``final`` from ``end``)."""
    if step <= begin:
        return 0.0
    if step >= end:
        return final
    return final * (1.0 - (1.0 - (step - begin) / (end - begin)) ** power)


def prunable_kernels(model: Any) -> list[tuple[str, Any]]:
    """(layer name, kernel variable) of every Conv, DepthwiseConv and Dense layer of a Keras model."""
    from keras import layers

    kinds = (layers.Conv1D, layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)
    return [(lay.name, lay.kernel) for lay in model.layers if isinstance(lay, kinds)]


def magnitude_mask(w: npt.NDArray[Any], sparsity: float) -> npt.NDArray[np.float32]:
    """A 0/1 mask of ``w``'s shape that zeroes its round(sparsity * size) smallest magnitudes (ties: the
    earlier index)."""
    flat = np.abs(np.asarray(w)).ravel()
    mask = np.ones(flat.size, np.float32)
    mask[np.argsort(flat, kind="stable")[:round(sparsity * flat.size)]] = 0.0
    return mask.reshape(np.shape(w))


def kernel_sparsity(model: Any) -> dict[str, Any]:
    """{"layers": {name: share of exact zeros in its kernel}, "overall": zeros / weights over all of them}
    of a Keras model's prunable kernels."""
    per, zeros, total = {}, 0, 0
    for name, var in prunable_kernels(model):
        w = np.asarray(var.numpy())
        z = int(np.count_nonzero(w == 0))
        per[name] = round(z / w.size, 4)
        zeros, total = zeros + z, total + w.size
    return {"layers": per, "overall": round(zeros / max(total, 1), 4)}


def tflite_sparsity(data: bytes) -> dict[str, Any]:
    """:func:`kernel_sparsity` of a ``.tflite`` flatbuffer: the exact zeros in the int8 filters of its
    CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED ops, per filter tensor and overall."""
    from tensorflow.lite.python import schema_py_generated as schema

    from training.streaming import tflite_operators

    per, zeros, total = {}, 0, 0
    for model, sub, op, name in tflite_operators(data):
        if name not in PRUNED_OPS:
            continue
        tensor = sub.Tensors(op.Inputs(1))
        raw = model.Buffers(tensor.Buffer()).DataAsNumpy()
        if tensor.Type() != schema.TensorType.INT8 or isinstance(raw, int) or raw.size == 0:
            continue  # float, or not a constant
        z = int(np.count_nonzero(raw == 0))
        per[tensor.Name().decode()] = round(z / raw.size, 4)
        zeros, total = zeros + z, total + raw.size
    return {"layers": per, "overall": round(zeros / max(total, 1), 4)}


def gzip_bytes(data: bytes) -> int:
    """Size of ``data`` compressed as ``gzip -9`` would (no file name, mtime 0)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def pruning_callback(final: float, begin: int, end: int, update_every: int = 10) -> Any:
    """A Keras callback pruning its model along :func:`schedule` (``begin``/``end`` in train steps, counted
    over every ``fit`` it is passed to). ``at_target``: every kernel is at ``final``."""
    import keras

    if not 0.0 <= final < 1.0 or not 0 <= begin < end or update_every < 1:
        raise ValueError(f"pruning: need 0 <= final < 1, 0 <= begin < end, update_every >= 1; got {final}, "
                         f"{begin}, {end}, {update_every}")

    class Pruning(keras.callbacks.Callback):
        """Gradual magnitude pruning; the same object follows the first pass and the mining rounds."""

        def __init__(self) -> None:
            super().__init__()
            self.begin, self.end = begin, end
            self.step = 0
            self.kernels: list[tuple[str, Any]] = []
            self.masks: list[npt.NDArray[np.float32]] = []

        @property
        def at_target(self) -> bool:
            return self.step >= end

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            if not self.kernels:
                self.kernels = prunable_kernels(self.model)
                self.masks = [np.ones(var.shape, np.float32) for _, var in self.kernels]

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.step += 1
            if self.step <= begin:
                return
            if self.step <= end and ((self.step - begin) % update_every == 0 or self.step == end):
                s = schedule(self.step, final, begin, end)
                self.masks = [magnitude_mask(var.numpy(), s) for _, var in self.kernels]
            for (_, var), mask in zip(self.kernels, self.masks, strict=True):
                var.assign(var.numpy() * mask)

    return Pruning()
