"""Knowledge distillation: a shipped window model (the teacher) gives soft targets for another model.

The teacher's float ``.tflite`` scores every training window once, before SpecAugment (so the student
learns to match the teacher on the clean window while it sees the masked one). Its input is the plain MFCC
window the training code builds (normalization, if any, is inside the model); a longer training window
(``model.context_frames``) is cut to its last ``window_frames`` frames, where the clip is.

The student is trained on ``y = [label, teacher posteriors...]`` with :func:`distill_loss`::

    (1 - alpha) * CE(label, student) + alpha * T^2 * KL(softmax(log p_teacher / T) || softmax(log p_student / T))

Both models end in a softmax, so ``log p`` stands for the logits (a softmax is blind to a constant shift).
Class weights still come in as sample weights and scale both terms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parent.parent
EPS = 1e-7  # the floor Keras' cross-entropy puts under probabilities


def teacher_path(teacher: str) -> Path:
    """``train.teacher`` as a path: absolute, or relative to the repository root."""
    path = Path(teacher)
    return path if path.is_absolute() else REPO / path


def float_model_path(manifest: Any) -> Path:
    """The float model export writes next to a manifest's int8 model."""
    return Path(manifest.model_path).with_name(f"{manifest.name}.float.tflite")


def teacher_posteriors(teacher: str, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The teacher's float posteriors (n, classes) for training windows ``x`` (n, frames, numcep)."""
    from kws_edge import manifest as mf
    from kws_edge.model import interpreter_backend

    m = mf.load(teacher_path(teacher))
    _, factory = interpreter_backend()
    interp = factory(model_path=str(float_model_path(m)))  # fixed batch 1: its RESHAPEs bake the shape in
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    out = np.empty((len(x), len(m.labels)), np.float32)
    for n, w in enumerate(x[:, -m.window_frames:].astype(np.float32)):
        interp.set_tensor(i, w[None])
        interp.invoke()
        out[n] = interp.get_tensor(o)[0]
    return out


def targets(y: npt.NDArray[np.int64], soft: npt.NDArray[np.float32] | None) -> npt.NDArray[Any]:
    """``y`` alone, or the columns [label, teacher posteriors...] :func:`distill_loss` expects."""
    if soft is None:
        return y
    return np.concatenate([y[:, None].astype(np.float32), soft.astype(np.float32)], axis=1)


def kl_divergence(p_teacher: Any, p_student: Any, temperature: float) -> Any:
    """Per-window KL(softmax(log p_teacher / T) || softmax(log p_student / T)), as a tensor."""
    from keras import ops

    t = ops.softmax(ops.log(ops.clip(p_teacher, EPS, 1.0)) / temperature, axis=-1)
    log_s = ops.log_softmax(ops.log(ops.clip(p_student, EPS, 1.0)) / temperature, axis=-1)
    return ops.sum(t * (ops.log(ops.clip(t, EPS, 1.0)) - log_s), axis=-1)


def distill_loss(alpha: float, temperature: float) -> Any:
    """The Keras loss of ``y_true = [label, teacher posteriors...]`` and the student's posteriors."""
    import keras
    from keras import ops

    def loss(y_true: Any, y_pred: Any) -> Any:
        label = ops.cast(y_true[:, 0], "int32")
        ce = keras.losses.sparse_categorical_crossentropy(label, y_pred)
        kl = kl_divergence(y_true[:, 1:], y_pred, temperature)
        return (1.0 - alpha) * ce + alpha * temperature ** 2 * kl

    return loss


def hard_accuracy() -> Any:
    """Top-1 accuracy on the label column of ``[label, teacher posteriors...]``, logged as ``accuracy``."""
    import keras
    from keras import ops

    def accuracy(y_true: Any, y_pred: Any) -> Any:
        label = ops.cast(y_true[:, 0], "int32")
        return ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), label), "float32")

    return keras.metrics.MeanMetricWrapper(accuracy, name="accuracy")
