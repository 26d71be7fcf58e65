"""Small real models for other parts' tests (MQTT, daemon, firmware): built and exported in seconds.

``make_tiny_model`` builds a DS-CNN of a few hundred parameters with seeded random weights and exports
it with the real export path (int8 ``.tflite``, float ``.tflite``, manifest, C array), so the files it
writes are exactly what ``kws-edge train`` would ship, only untrained. Its outputs are close to uniform:
tests that need detections should pass a low threshold override.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kws_edge.audio import write_wav
from kws_edge.features import FeatureParams, mfcc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def representative_noise_windows(n: int, seed: int, params: FeatureParams | None = None) -> np.ndarray:
    """``n`` MFCC windows of 1 s of seeded noise and tones at several levels (a calibration set)."""
    params = params or FeatureParams()
    rng = np.random.default_rng(seed)
    t = np.arange(params.sample_rate) / params.sample_rate
    out = []
    for i in range(n):
        level = 10.0 ** rng.uniform(0.5, 4.0)
        x = level * rng.standard_normal(params.sample_rate)
        if i % 2:
            x += level * 3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t)
        if i % 5 == 0:
            x *= 0.0
        out.append(mfcc(np.clip(x, -32768, 32767).astype(np.int16), params))
    return np.stack(out).astype(np.float32)


def random_label_sets(n: int, n_train: int, seed: int, p: Sequence[float]) -> dict[str, Any]:
    """``n`` noise windows (:func:`representative_noise_windows`) with seeded random labels drawn with class
    probabilities ``p``, split into ``train`` (the first ``n_train``) and ``val`` FeatureSets: data for tests of
    the training loop itself, where what is learned does not matter."""
    from training.data import FeatureSet

    x = representative_noise_windows(n, seed)
    y = np.random.default_rng(seed).choice(len(p), size=n, p=list(p)).astype(np.int64)
    role = np.array(["keyword"] * n)
    return {"train": FeatureSet(x[:n_train], y[:n_train], role[:n_train]),
            "val": FeatureSet(x[n_train:], y[n_train:], role[n_train:])}


def make_tiny_model(out_dir: Path, name: str = "tiny",
                    labels: Sequence[str] = ("_silence_", "_unknown_", "yes", "no"),
                    keywords: Sequence[str] = ("yes", "no"), seed: int = 0, normalize: bool = False) -> Path:
    """Build, quantize and export a tiny seeded DS-CNN into ``out_dir``; return its manifest path."""
    import keras

    from training.export import ExportSpec, export_model
    from training.model import DsCnnConfig, build_dscnn

    keras.utils.set_random_seed(seed)
    params = FeatureParams()
    window = params.frames_for(params.sample_rate)
    cfg = DsCnnConfig(filters=8, blocks=1, dropout=0.0, normalize=normalize)
    model = build_dscnn(cfg, (window, params.numcep), len(labels))
    spec = ExportSpec(
        name=name, kind="wakeword" if len(keywords) == 1 else "commands", labels=tuple(labels),
        keywords=tuple(keywords), thresholds={k: 0.5 for k in keywords}, features=params,
        description="tiny untrained test model (seeded random weights)",
    )
    return export_model(model, spec, representative_noise_windows(16, seed, params), Path(out_dir),
                        training={"recipe": "training.testing.make_tiny_model", "seed": seed})


def tone(freq: float, seed: int, n: int = 16000) -> np.ndarray:
    """A seeded tone in a little noise, int16."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (3000 * np.sin(2 * np.pi * freq * t) + 200 * rng.standard_normal(n)).astype(np.int16)


def make_speech_commands_dataset(root: Path, words: dict[str, float], per_word: int = 4, rate: int = 16000) -> Path:
    """<root>/<word>/<speaker>_nohash_<i>.wav, _background_noise_/, validation and testing lists."""
    val, test = [], []
    for w, f in words.items():
        (root / w).mkdir(parents=True)
        for i in range(per_word):
            name = f"{i:08x}_nohash_0.wav"
            write_wav(root / w / name, tone(f, i, rate), rate)
            if i == 1:
                val.append(f"{w}/{name}")
            if i == 2:
                test.append(f"{w}/{name}")
    (root / "_background_noise_").mkdir()
    write_wav(root / "_background_noise_" / "white.wav", tone(50.0, 99, 48000))
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    return root
