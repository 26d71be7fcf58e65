"""Clips -> augmented 1 s windows -> MFCC features, in parallel, deterministic per seed, cached.

An embedding-family recipe gets speech-embedding frames instead (kws_edge/embedding.py): 16 of them need
2.02 s of audio, so its windows have background before the clip's second as a streaming model's context.

A streaming-family recipe with ``model.context_frames`` gets longer windows: that many frames of
background (the window's own noise, or digital silence for a clean window) before the second the clip is
placed in, so the model's running mean and pooling see what precedes a keyword in a stream. Sentences
(long speech) fill the whole longer window instead.

With ``model.context_speech`` (a share) that context carries no label: in that share of the windows of
every class, speech precedes the second — for a keyword, word or confusable the tail of another
non-keyword utterance of the same split ending a gap (:data:`CONTEXT_GAP_S`) before the clip's onset, no
louder than the clip; for a noise window an utterance ending just before the second; a sentence fills the
whole window. The other windows have background before the second, sentences included (speech after a
pause, labelled unknown). Those choices come from a second generator seeded by the task, so the clip, its
placement and its augmentation draw exactly what they draw without the option.

Every window is computed with ``kws_edge.features.mfcc`` on int16 samples, exactly what the runtime's
streaming MFCC produces for the same samples. Each task carries its own seed, so the result does not
depend on the number of workers or on the order they finish in.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kws_edge.embedding import EmbeddingParams, embeddings
from kws_edge.features import FeatureParams, mfcc
from training import augment as aug
from training.recipe import AugmentConfig, Recipe
from training.sources import Clip, parallel_map

DATA_VERSION = "data-v2"
CONTEXT_SPEECH_SEED = 0xC0E7  # mixed with each task's seed for the context-speech generator
CONTEXT_GAP_S = (0.05, 0.5)  # seconds between the context speech's end and a clip's onset
NOISE_GAP_S = (0.02, 0.3)  # seconds between the context speech's end and a noise window's second
CONTEXT_LEVEL_DB = (-15.0, 0.0)  # context speech peak re the clip's peak (never louder: same int16 scale)


@dataclass(frozen=True)
class Task:
    """One window to make: a clip (or None for a noise-only window) and how to augment it."""

    samples: npt.NDArray[np.int16] | None
    label: int
    role: str
    seed: int
    augment: bool


@dataclass
class FeatureSet:
    x: npt.NDArray[np.float32]  # (n, frames, numcep)
    y: npt.NDArray[np.int64]
    role: npt.NDArray[np.str_]

    def __len__(self) -> int:
        return len(self.y)


_W: dict[str, Any] = {}


def front_end_frames(x: npt.NDArray[np.int16], params: FeatureParams | EmbeddingParams) -> npt.NDArray[np.float32]:
    """A training window's frames: MFCC (the runtime's, padded last frame included) or speech embeddings."""
    if isinstance(params, EmbeddingParams):
        return embeddings(x, params).astype(np.float32)
    return mfcc(x, params).astype(np.float32)


def _init_worker(cfg: AugmentConfig, params: FeatureParams | EmbeddingParams, bank: aug.NoiseBank, max_cut: int,
                 context: int = 0, speech_share: float = 0.0,
                 speech: tuple[npt.NDArray[np.int16], ...] = ()) -> None:
    _W.update(cfg=cfg, params=params, bank=bank, max_cut=max_cut, context=context,
              speech_share=speech_share if context and speech else 0.0, speech=speech)


def _context_draw(task: Task) -> tuple[bool, np.random.Generator | None]:
    """(option on, generator if this window gets speech in its context) from the task's own seed."""
    share = _W.get("speech_share", 0.0)
    if not share:
        return False, None
    rng = np.random.default_rng([task.seed, CONTEXT_SPEECH_SEED])
    return True, rng if rng.random() < share else None


def _speech_tail(rng: np.random.Generator, end: int, peak: float) -> npt.NDArray[np.float64]:
    """``end`` samples ending with the end of a random utterance (trailing quiet trimmed), at ``peak``."""
    speech = _W["speech"]
    u = speech[int(rng.integers(len(speech)))].astype(np.float64)
    loud = np.flatnonzero(np.abs(u) > 0.05 * (np.max(np.abs(u)) or 1.0))
    tail = u[: loud[-1] + 1][-end:] if len(loud) else u[-end:]
    out = np.zeros(end)
    out[end - len(tail):] = tail
    return out * (peak / (np.max(np.abs(out)) or 1.0))


def _onset(x: npt.NDArray[np.float64]) -> int:
    """First sample above 5 % of the peak: where the placed clip becomes audible."""
    loud = np.flatnonzero(np.abs(x) > 0.05 * (np.max(np.abs(x)) or 1.0))
    return int(loud[0]) if len(loud) else len(x)


def _noise_window(rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
    cfg: AugmentConfig = _W["cfg"]
    r = rng.random()
    if r < 0.05:
        return np.zeros(n)  # digital silence
    kind = cfg.noise_kinds[int(rng.integers(len(cfg.noise_kinds)))]
    return _W["bank"].segment(kind, n, rng)


def _noise_only(rng: np.random.Generator, crng: np.random.Generator | None, pre: int,
                n: int) -> npt.NDArray[np.int16]:
    """A silence/noise window of ``pre + n`` samples; with ``crng``, speech in the first ``pre``."""
    cfg: AugmentConfig = _W["cfg"]
    noise = _noise_window(rng, pre + n)
    x = aug.to_int16(noise, rng, (cfg.gain_db[0] - 20, cfg.gain_db[1] - 6)) if noise.any() \
        else np.zeros(pre + n, np.int16)
    if crng is None:
        return x
    end = pre - int(crng.uniform(*NOISE_GAP_S) * n)  # speech, then the window's second untouched
    peak = 32767 * 10 ** (crng.uniform(*cfg.gain_db) / 20)
    if end <= 0:
        return x
    y = x.astype(np.float64)
    y[:end] += _speech_tail(crng, end, peak)
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def make_window(task: Task) -> npt.NDArray[np.float32]:
    """Worker: one task -> one (frames, numcep) float32 MFCC window."""
    cfg: AugmentConfig = _W["cfg"]
    params: FeatureParams | EmbeddingParams = _W["params"]
    n = params.sample_rate  # one second: where the clip goes
    pre = _W.get("context", 0)  # samples of background before that second (stream family's context)
    rng = np.random.default_rng(task.seed)
    option, crng = _context_draw(task)
    if task.samples is None:
        return front_end_frames(_noise_only(rng, crng, pre, n), params)
    s = task.samples.astype(np.float64)
    if task.augment:
        s = aug.speed(s, rng.uniform(*cfg.speed))
    cut = _W["max_cut"] if task.role == "keyword" else len(s)
    if task.role == "sentence" and (not option or crng is not None):  # long speech fills the whole window
        x = aug.place(s, pre + n, rng, max_cut_start=cut)
    else:  # keyword, word, confusable (and, with the option, sentences): in the last second
        placed = aug.place(s, n, rng, max_cut_start=cut)
        x = np.concatenate([np.zeros(pre), placed])  # background before it...
        if crng is not None:  # ...or the tail of another utterance
            end = pre + _onset(placed) - int(crng.uniform(*CONTEXT_GAP_S) * n)
            peak = np.max(np.abs(placed)) * 10 ** (crng.uniform(*CONTEXT_LEVEL_DB) / 20)
            if end > 0:
                x[:end] += _speech_tail(crng, end, peak)
    if task.augment and rng.random() >= cfg.clean_fraction:
        if rng.random() < cfg.reverb_prob:
            x = aug.reverb(x, aug.synthetic_rir(rng, rng.uniform(*cfg.rt60)))
        kind = cfg.noise_kinds[int(rng.integers(len(cfg.noise_kinds)))]
        x = aug.mix_at_snr(x, _W["bank"].segment(kind, len(x), rng), rng.uniform(*cfg.snr_db))
    if task.augment and cfg.mic_prob > 0 and rng.random() < cfg.mic_prob:
        x = aug.microphone(x, rng)
    return front_end_frames(aug.to_int16(x, rng, cfg.gain_db), params)


def tasks_for(clips: list[Clip], labels: tuple[str, ...], copies: int, silence: int, augment: bool,
              seed: int, window: int) -> list[Task]:
    """Tasks for one split: ``copies`` windows per clip (long sentences give one per second)."""
    index = {name: i for i, name in enumerate(labels)}
    rng = random.Random(seed)
    tasks = []
    for clip in clips:
        crops = max(1, math.ceil(len(clip.samples) / window)) if clip.role == "sentence" else 1
        for _ in range(copies * crops):
            tasks.append(Task(clip.samples, index[clip.label], clip.role, rng.getrandbits(63), augment))
    tasks += [Task(None, index["_silence_"], "silence", rng.getrandbits(63), True) for _ in range(silence)]
    return tasks


def noise_bank(recipe: Recipe, train_clips: list[Clip], seed: int) -> aug.NoiseBank:
    """Babble from training-voice sentences plus the user's noise folder."""
    rng = np.random.default_rng(seed)
    speech = [c.samples for c in train_clips if c.role in ("sentence", "word")] or \
        [c.samples for c in train_clips]
    babble = [aug.make_babble(speech, 30.0, rng).astype(np.float32) for _ in range(4)] if speech else []
    files = aug.load_noise_dir(recipe.augment.noise_dir) if recipe.augment.noise_dir else []
    return aug.NoiseBank(babble, files)  # type: ignore[arg-type]


def _cache_key(recipe: Recipe, clips: dict[str, list[Clip]]) -> str:
    h = hashlib.sha256()
    key = [DATA_VERSION, recipe.seed, recipe.labels, recipe.to_dict()["augment"], recipe.synthesis.silence]
    if recipe.model.context_frames:  # longer windows; 0 keeps the window family's keys
        key.append({"context_frames": recipe.model.context_frames})
    if recipe.model.family == "embedding":  # another front-end, other windows
        key.append({"front_end": "speech_embedding"})
    if recipe.model.context_speech:  # 0 keeps the keys of context_frames alone
        key.append({"context_speech": recipe.model.context_speech})
    h.update(json.dumps(key, sort_keys=True).encode())
    for split in sorted(clips):
        for c in clips[split]:
            h.update(f"{split}|{c.label}|{c.role}|{len(c.samples)}|".encode())
            h.update(c.samples[:64].tobytes())
    return h.hexdigest()[:20]


def build_features(recipe: Recipe, clips: dict[str, list[Clip]], bank: aug.NoiseBank, cache_dir: Path,
                   workers: int, params: FeatureParams | EmbeddingParams | None = None) -> dict[str, FeatureSet]:
    """Feature sets for train / val / test (augmented) and test_clean; cached under ``<cache>/features``."""
    params = params or recipe.model.front_end()
    path = Path(cache_dir) / "features" / f"{recipe.name}-{_cache_key(recipe, clips)}.npz"
    if path.exists():
        with np.load(path) as z:
            return {s: FeatureSet(z[f"{s}_x"], z[f"{s}_y"], z[f"{s}_role"])
                    for s in ("train", "val", "test", "test_clean")}
    a, sil = recipe.augment, recipe.synthesis.silence
    n = params.sample_rate
    plans = {
        "train": tasks_for(clips.get("train", []), recipe.labels, a.copies, sil, True, recipe.seed, n),
        "val": tasks_for(clips.get("val", []), recipe.labels, 1, max(1, sil // 8), True, recipe.seed + 1, n),
        "test": tasks_for(clips.get("test", []), recipe.labels, 1, max(1, sil // 4), True, recipe.seed + 2, n),
        "test_clean": tasks_for(clips.get("test", []), recipe.labels, 1, max(1, sil // 4), False,
                                recipe.seed + 3, n),
    }
    max_cut = int(a.max_cut_ms * params.sample_rate / 1000)
    context = params.samples_for(recipe.model.window_frames) - n  # background before the clip's second
    share = recipe.model.context_speech
    out: dict[str, FeatureSet] = {}
    for split, tasks in plans.items():
        speech = tuple(c.samples for c in clips.get(split.removesuffix("_clean"), []) if c.role != "keyword")
        init = (a, params, bank, max_cut, context, share, speech) if share else (a, params, bank, max_cut, context)
        xs = parallel_map(make_window, tasks, workers, f"features {split}", _init_worker, init, chunksize=64)
        out[split] = FeatureSet(np.stack(xs), np.array([t.label for t in tasks], dtype=np.int64),
                                np.array([t.role for t in tasks]))
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{s}_{k}": getattr(fs, k) for s, fs in out.items() for k in ("x", "y", "role")}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return out
