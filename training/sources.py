"""Where clips come from: a plan of TTS utterances per split, synthesized in parallel and cached.

Positives, generated confusables, common words and sentences are planned over whole voices: training
voices for ``train``, validation voices for ``val``, held-out voices for ``test`` and for the long
negative ``stream`` used to count false accepts. Each clip picks an engine first (equal shares, or
``engine_weights``), then one of that engine's voices in the split, so the ~800 espeak-ng voices do not
crowd out festival's 3 or piper's 1. A ``speaker_augment`` fraction of clips (in every split) is re-spoken
by a pseudo-speaker (:mod:`training.speakers`). The plan depends only on the recipe and its seed; each
synthesized clip is cached under ``<cache>/tts/`` keyed by engine, voice, text, rate, pitch and speaker.
A clip an engine fails on (festival's diphone voices on odd punctuation) is logged and dropped.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import functools
import hashlib
import logging
import multiprocessing as mp
import os
import random
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from training import speakers, text, tts
from training.recipe import Recipe, SynthesisConfig

T = TypeVar("T")
R = TypeVar("R")
ROLES = ("keyword", "confusable", "word", "sentence")
_LOG = logging.getLogger(__name__)
# One clip takes well under a second; the subprocess engines have their own 60 s limit, but piper (ONNX)
# and the pseudo-speakers (Praat) run inside the worker, where a stuck call would hang synthesis forever.
CLIP_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Job:
    """One utterance to synthesize."""

    text: str
    voice: tts.Voice
    rate: float
    pitch: float
    label: str  # "_unknown_" or a keyword label
    split: str  # train | val | test | stream
    role: str  # keyword | confusable | word | sentence
    formant: float | None = None  # pseudo-speaker (training.speakers): formant ratio; None = the TTS voice
    pitch_hz: float | None = None  # pseudo-speaker median pitch
    pitch_range: float | None = None  # pseudo-speaker pitch range factor

    @property
    def speaker(self) -> speakers.Speaker | None:
        if self.formant is None or self.pitch_hz is None or self.pitch_range is None:
            return None
        return speakers.Speaker(self.formant, self.pitch_hz, self.pitch_range)

    def cache_key(self) -> str:
        raw = f"{self.voice.id}|{self.text}|{self.rate:.4f}|{self.pitch:.4f}|v1"
        if self.speaker is not None:  # untransformed clips keep their old keys
            raw += f"|spk {self.formant:.4f} {self.pitch_hz:.2f} {self.pitch_range:.4f}"
        return hashlib.sha256(raw.encode()).hexdigest()[:24]


@dataclass
class Clip:
    """A synthesized (or loaded) utterance with its label."""

    samples: npt.NDArray[np.int16]
    label: str
    split: str
    role: str
    voice: str


def default_workers() -> int:
    """Worker processes: the cores this process may use (``KWS_EDGE_WORKERS`` overrides)."""
    env = os.environ.get("KWS_EDGE_WORKERS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, len(os.sched_getaffinity(0)))


class StuckWorker(RuntimeError):
    """A worker spent more than its per-item time limit on one item and was stopped."""


def _watched(fn: Callable[[T], R], timeout_s: float | None, item: T) -> R:
    """Run ``fn(item)`` with a watchdog: past ``timeout_s`` the worker prints every thread's stack to
    stderr and exits. faulthandler's watchdog is a C thread, so it fires even while the item is stuck
    inside C code that never returns to Python (an ONNX session, Praat)."""
    if timeout_s is None:
        return fn(item)
    faulthandler.dump_traceback_later(timeout_s, exit=True)
    try:
        return fn(item)
    finally:
        faulthandler.cancel_dump_traceback_later()


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int, desc: str,
                 initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = (),
                 chunksize: int = 16, item_timeout_s: float | None = None) -> list[R]:
    """Order-preserving map over ``items`` with a tqdm bar; spawned workers (safe after TF import).

    With ``item_timeout_s``, a worker stuck longer than that on one item is stopped (its stack goes to
    stderr) and :class:`StuckWorker` is raised instead of waiting forever; in-process runs
    (``workers`` <= 1) are not watched."""
    from tqdm import tqdm

    if workers <= 1 or len(items) < 2 * chunksize:
        if initializer:
            initializer(*initargs)
        return [fn(x) for x in tqdm(items, desc=desc, unit="clip", leave=False, mininterval=2.0)]
    work = functools.partial(_watched, fn, item_timeout_s)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=initializer,
                             initargs=initargs) as pool:
        out: list[R] = []
        try:
            for r in tqdm(pool.map(work, items, chunksize=chunksize), total=len(items), desc=desc,
                          unit="clip", leave=False, mininterval=2.0):
                out.append(r)
        except BrokenProcessPool as exc:
            raise StuckWorker(
                f"{desc}: a worker process died after {len(out)} of {len(items)} items; its error is above"
                + (f" (a worker stuck over {item_timeout_s:g} s on one item is stopped and prints its stack)"
                   if item_timeout_s is not None else "")) from exc
        return out


def engine_shares(s: SynthesisConfig, voices: Sequence[tts.Voice]) -> dict[str, float]:
    """Relative share of clips per engine among those with a voice in ``voices`` (recipe order)."""
    weights = s.engine_weights or (1.0,) * len(s.engines)
    present = {v.engine for v in voices}
    shares = {e: w for e, w in zip(s.engines, weights, strict=True) if e in present and w > 0}
    if not shares:  # only zero-weight engines have voices here: use them equally rather than nothing
        shares = {e: 1.0 for e in s.engines if e in present}
    return shares


def _pick(voices: Sequence[tts.Voice], texts: Sequence[str], n: int, label: str,
          split: str, role: str, recipe: Recipe) -> list[Job]:
    """``n`` jobs cycling over ``texts``: an engine by its share, then one of its voices. Each (split, role,
    label) group has its own seeded generators, so changing one group's size leaves every other group's
    clips (and their cache entries) unchanged; the speaker draws have their own, so changing
    ``speaker_augment`` keeps the voices, rates and pitches."""
    s = recipe.synthesis
    rng = random.Random(f"{recipe.seed}:{split}:{role}:{label}")
    spk_rng = random.Random(f"{recipe.seed}:{split}:{role}:{label}:speaker")
    shares = engine_shares(s, voices)
    engines, weights = list(shares), list(shares.values())
    by_engine = {e: [v for v in voices if v.engine == e] for e in engines}
    jobs = []
    for i in range(n):
        engine = rng.choices(engines, weights)[0]
        voice = rng.choice(by_engine[engine])
        rate, pitch = round(rng.uniform(*s.rate), 3), round(rng.uniform(*s.pitch), 3)
        augment = spk_rng.random() < s.speaker_augment
        spk = speakers.draw(spk_rng, s.formant_shift, s.pitch_median_hz, s.pitch_range_factor)
        job = Job(texts[i % len(texts)], voice, rate, pitch, label, split, role)
        if augment:
            job = dataclasses.replace(job, formant=spk.formant, pitch_hz=spk.pitch_hz, pitch_range=spk.pitch_range)
        jobs.append(job)
    return jobs


def plan_jobs(recipe: Recipe, voices: dict[str, list[tts.Voice]], stream_seconds: float = 0.0) -> list[Job]:
    """Every utterance the recipe needs, per split, deterministic for the recipe's seed."""
    s = recipe.synthesis
    rng = random.Random(recipe.seed)
    jobs: list[Job] = []
    words = text.common_words(recipe.keywords)
    random.Random(f"{recipe.seed}:words").shuffle(words)
    conf = [c for kw in recipe.keywords
            for c in text.confusables(kw, 400 if recipe.kind == "wakeword" else 25, recipe.seed,
                                      avoid=recipe.keywords)]
    rng.shuffle(conf)
    fractions = {"train": 1.0, "val": 0.12, "test": 0.25}
    for k, (split, frac) in enumerate(fractions.items()):
        vs = voices[split]
        for kw, label in zip(recipe.keywords, recipe.keyword_labels, strict=True):
            n = s.test_per_keyword if split == "test" else round(s.positives_per_keyword * frac)
            jobs += _pick(vs, [kw], n, label, split, "keyword", recipe)
        if conf:
            jobs += _pick(vs, conf, round(s.confusables * frac), "_unknown_", split, "confusable", recipe)
        jobs += _pick(vs, words, round(s.unknown_words * frac), "_unknown_", split, "word", recipe)
        n_sent = round(s.sentences * frac)
        jobs += _pick(vs, text.sentences(n_sent, recipe.seed + 1000 * (k + 1), recipe.keywords),
                      n_sent, "_unknown_", split, "sentence", recipe)
    if stream_seconds > 0:
        jobs += plan_stream_jobs(recipe, voices["test"], stream_seconds, conf, words)
    return jobs


def plan_stream_jobs(recipe: Recipe, voices: Sequence[tts.Voice], seconds: float, conf: Sequence[str],
                     words: Sequence[str]) -> list[Job]:
    """Held-out-voice speech for the long negative stream: ~2.6 s sentences, some words and confusables."""
    n_sent = int(seconds * 0.7 / 2.6) + 1
    sents = text.sentences(n_sent, recipe.seed + 99, recipe.keywords)
    jobs = _pick(voices, sents, n_sent, "_unknown_", "stream", "sentence", recipe)
    n_short = int(seconds * 0.1 / 0.7) + 1
    if conf:  # scored separately from the negative stream (confusable accept rate)
        jobs += _pick(voices, list(conf), min(400, n_short // 2), "_unknown_", "stream", "confusable", recipe)
    jobs += _pick(voices, list(words), n_short - n_short // 2, "_unknown_", "stream", "word", recipe)
    return jobs


_CACHE: Path | None = None


def _init_synth(cache: str) -> None:
    global _CACHE
    _CACHE = Path(cache)


def _synth_one(job: Job) -> npt.NDArray[np.int16]:
    """Worker: synthesize (or load from cache) one job, trimmed of leading/trailing silence and re-spoken
    by its pseudo-speaker; empty (dropped by the caller) if the engine fails on it."""
    if _CACHE is None:
        raise RuntimeError("_init_synth was not called in this worker")
    path = _CACHE / job.cache_key()[:2] / f"{job.cache_key()}.npy"
    if path.exists():
        return np.load(path)
    try:
        x = tts.trim_silence(tts.synthesize(job.voice, job.text, job.rate, job.pitch))
    except tts.TtsError as exc:
        _LOG.warning("skipping a clip: %s", exc)
        return np.zeros(0, dtype=np.int16)
    if job.speaker is not None:
        x = speakers.transform(x, job.speaker)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, x)
    os.replace(tmp, path)
    return x


def synthesize_jobs(jobs: Sequence[Job], cache_dir: Path, workers: int) -> list[Clip]:
    """Run the plan (parallel, cached); empty results (nothing audible, or the engine failed) are dropped."""
    cache = Path(cache_dir) / "tts"
    cache.mkdir(parents=True, exist_ok=True)
    try:
        arrays = parallel_map(_synth_one, list(jobs), workers, "synthesize", _init_synth, (str(cache),),
                              item_timeout_s=CLIP_TIMEOUT_S)
    except StuckWorker as exc:
        raise tts.TtsError(f"{exc}. Every clip finished so far is cached: run the same command again to "
                           "continue (KWS_EDGE_WORKERS=1 runs synthesis in this process, unwatched)") from exc
    failed = sum(1 for x in arrays if not len(x))
    if failed:
        _LOG.warning("%d of %d clips were empty or failed to synthesize and are dropped", failed, len(arrays))
    return [Clip(x, j.label, j.split, j.role, j.voice.id) for j, x in zip(jobs, arrays, strict=True) if len(x)]


def voice_split(recipe: Recipe) -> dict[str, list[tts.Voice]]:
    """The recipe's voices split into train / val / test voice groups."""
    s = recipe.synthesis
    tts.require_engines(s.engines)
    return tts.split_voices(tts.all_voices(s.engines), s.holdout_fraction, s.val_fraction, recipe.seed,
                            s.holdout_voices)


def by_split(clips: Iterable[Clip]) -> dict[str, list[Clip]]:
    out: dict[str, list[Clip]] = {}
    for c in clips:
        out.setdefault(c.split, []).append(c)
    return out
