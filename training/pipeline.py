"""The whole recipe: data (synthesized or Speech Commands) -> train -> int8 export -> evaluation.

All checks that can fail on user input (recipe keys, keywords, TTS engines, dataset folders, noise
folders) run in :func:`check_inputs` before any long work.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kws_edge.errors import ConfigError
from training import data, sources, tts
from training import speech_commands as sc
from training.recipe import Recipe

log = logging.getLogger("kws_edge.training")


@dataclass
class Prepared:
    clips: dict[str, list[sources.Clip]]
    features: dict[str, data.FeatureSet]
    bank: Any
    seconds: float


def check_inputs(recipe: Recipe) -> None:
    """Fail fast: engines, dataset and noise folders (the recipe itself was checked when parsed)."""
    from training import augment

    if recipe.dataset.speech_commands:
        sc.scan(Path(recipe.dataset.speech_commands), recipe.keyword_labels)
    else:
        tts.require_engines(recipe.synthesis.engines)
    if recipe.augment.noise_dir:
        augment.load_noise_dir(recipe.augment.noise_dir)
    if recipe.dataset.real_negatives:
        from training import realvoice

        root = realvoice.realvoice_dir(recipe.dataset.realvoice_dir or None)
        missing = [f for f in recipe.dataset.real_negatives if f not in realvoice.folders(root)]
        if missing:
            raise ConfigError(f"dataset.real_negatives: no recordings folder {missing} in {root}; "
                              f"expected some of {realvoice.folders(root)}")


def prepare(recipe: Recipe, cache_dir: Path, workers: int, with_stream: bool = True) -> Prepared:
    """Clips for every split and their feature windows (cached)."""
    t0 = time.monotonic()
    if recipe.dataset.speech_commands:
        clips = sc.load_clips(Path(recipe.dataset.speech_commands), recipe.keyword_labels, workers)
    else:
        voices = sources.voice_split(recipe)
        log.info("voices: %s", {k: len(v) for k, v in voices.items()})
        seconds = recipe.eval.negative_hours * 3600 * 0.85 if with_stream else 0.0
        jobs = sources.plan_jobs(recipe, voices, stream_seconds=seconds)
        log.info("synthesizing %d utterances with %d workers", len(jobs), workers)
        clips = sources.by_split(sources.synthesize_jobs(jobs, cache_dir, workers))
    clips = _drop_long_keywords(recipe, clips)
    if recipe.dataset.real_negatives:
        real = real_negative_clips(recipe)
        clips.setdefault("train", []).extend(real)
        log.info("real negative speech: %d clips from %s", len(real), ", ".join(recipe.dataset.real_negatives))
    log.info("clips per split: %s", {k: len(v) for k, v in clips.items()})
    bank = data.noise_bank(recipe, clips.get("train", []), recipe.seed)
    if recipe.dataset.real_negatives:
        from training import augment

        bank.room = augment.room_tone([c.samples for c in real[:len(real) // recipe.dataset.real_negative_weight]])
        log.info("room tone: %d stretches, %.0f s", len(bank.room), sum(map(len, bank.room)) / 16000)
    if recipe.dataset.speech_commands:
        bank.files += sc.background_noise(Path(recipe.dataset.speech_commands))
    feats = data.build_features(recipe, clips, bank, cache_dir, workers)
    log.info("windows per split: %s", {k: len(v) for k, v in feats.items()})
    return Prepared(clips, feats, bank, time.monotonic() - t0)


def real_negative_clips(recipe: Recipe) -> list[sources.Clip]:
    """The recipe's real-voice folders (never a validation-only one) as ``_unknown_`` training speech."""
    from training import realvoice

    root = realvoice.realvoice_dir(recipe.dataset.realvoice_dir or None)
    clips = [sources.Clip(c.samples, "_unknown_", "train", "sentence", f"real:{folder}/{c.path.stem[:8]}")
             for folder in recipe.dataset.real_negatives for c in realvoice.load_folder(root, folder)]
    return clips * recipe.dataset.real_negative_weight  # each copy gets its own augmentation seed


def _drop_long_keywords(recipe: Recipe, clips: dict[str, list[sources.Clip]]) -> dict[str, list[sources.Clip]]:
    limit = int(recipe.synthesis.max_keyword_seconds * 16000)
    out = {}
    for split, cs in clips.items():
        out[split] = [c for c in cs if c.role != "keyword" or len(c.samples) <= limit]
        dropped = len(cs) - len(out[split])
        if dropped:
            log.info("%s: dropped %d keyword clips longer than %.2f s", split, dropped,
                     recipe.synthesis.max_keyword_seconds)
    return out


def eval_streams(recipe: Recipe, prep: Prepared) -> Any:
    """Positive streams (one per SNR) of held-out keyword clips and the long negative stream."""
    from training import streams as st
    from training.evaluate import StreamSet

    test = prep.clips.get("test", [])
    rng = np.random.default_rng(recipe.seed + 17)
    pos: list[tuple[Any, str]] = []
    voices: list[str] = []
    for label in recipe.keyword_labels:
        mine = [c for c in test if c.label == label and c.role == "keyword"]
        for i in rng.permutation(len(mine))[: recipe.eval.positives]:
            pos.append((mine[int(i)].samples, label))
            voices.append(mine[int(i)].voice)
    order = rng.permutation(len(pos))
    pos = [pos[int(i)] for i in order]
    voices = [voices[int(i)] for i in order]
    kinds = [k for k in recipe.augment.noise_kinds if k != "file"] or ["pink"]
    positives = {snr: st.positive_stream(pos, snr, prep.bank, kinds, recipe.seed + int(snr))
                 for snr in recipe.eval.snr_db}
    for s in positives.values():
        s.voices = list(voices)  # parallel to s.spans: positive_stream keeps the clips' order
    stream = prep.clips.get("stream", [])
    # General speech (sentences, common words) and noise; sound-alike phrases are scored separately.
    neg_clips = [c.samples for c in stream if c.role != "confusable"]
    if not neg_clips:  # Speech Commands: the test split's non-keyword words
        neg_clips = [c.samples for c in test if c.label == "_unknown_"]
    negative = st.negative_stream(neg_clips, recipe.eval.negative_hours, prep.bank, kinds, recipe.seed + 5)
    conf = [(c.samples, "_confusable_") for c in stream if c.role == "confusable"][:400]
    confusables = st.positive_stream(conf, st.CLEAN_SNR, prep.bank, kinds, recipe.seed + 9) if conf else None
    return StreamSet(positives, negative, recipe.eval.headline_snr_db, confusables)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
