"""Text-to-speech voices for the synthetic part of the corpus (five offline engines), with a file cache.

A voice is written ``engine:name``: ``espeak:en-029+m3`` (an English accent + variant; engine label
``espeak-ng``), ``espeak:de+m3`` (English read with another language's rules: ``espeak-ng-accent``),
``flite:rms``, ``festival:kal_diphone`` or ``piper:en_US-joe-medium``. All five engines are engines kws_edge's
recipes train on (``training/tts.py``): no offline voice here is independent of our training, so the
synthetic numbers are reported per engine and the headline comparison is on real recordings
(:mod:`benchmarks.realcorpus`). :func:`default_voices` takes, per engine, voice groups the model's recipe
holds out; :func:`voice_roles` says for every voice whether a kws_edge model trained on it. Every
synthesized utterance is cached as a 16 kHz int16 WAV named by a hash of its parameters, so a second
corpus build runs no TTS at all.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kws_edge.audio import read_wav, write_wav
from kws_edge.errors import ConfigError

SAMPLE_RATE = 16000

ENGINES = ("espeak-ng", "espeak-ng-accent", "flite", "festival", "piper")  # all of them kws_edge training engines
PER_ENGINE = 4  # voice groups per many-voice engine, so that no engine dominates the synthetic streams
# Fallback when the training package cannot tell which voices it holds out: espeak-ng variants and
# the flite voice that training's default recipe (seed 0) puts in its test split.
EVAL_VOICES: tuple[str, ...] = (
    "espeak:en-us+Alex", "espeak:en-gb+caleb", "espeak:en-gb-scotland+edward", "espeak:en-029+john",
    "espeak:en-us-nyc+m6", "espeak:en-gb-x-rp+adam", "espeak:en-gb-x-gbclan+grandpa", "flite:rms",
)


@dataclass(frozen=True)
class Utterance:
    """One TTS rendering: who says what, how fast and how high."""

    voice: str
    text: str
    speed: float = 1.0  # 1.0 = the engine's default speaking rate; 1.2 = 20 % faster
    pitch: float = 1.0  # relative to the voice's default pitch

    def key(self) -> str:
        raw = f"{self.voice}|{self.text}|{self.speed:.3f}|{self.pitch:.3f}"
        return hashlib.sha1(raw.encode()).hexdigest()[:20]


def _recipe_section(training: Mapping[str, Any]) -> tuple[int, Mapping[str, Any]]:
    """(seed, synthesis section) from a manifest's free-form ``training`` block, wherever they sit."""
    inner = training.get("recipe")
    recipe: Mapping[str, Any] = inner if isinstance(inner, Mapping) else training
    seed = recipe.get("seed", training.get("seed", 0))
    synthesis = recipe.get("synthesis", {})
    return int(seed) if isinstance(seed, int) else 0, synthesis if isinstance(synthesis, Mapping) else {}


def engine_of(voice: str) -> str:
    """The training engine label of a bench voice (``espeak:de+m3`` -> ``espeak-ng-accent``)."""
    engine, _, name = voice.partition(":")
    if engine == "espeak":
        return "espeak-ng" if name.startswith("en") else "espeak-ng-accent"
    return engine


def _bench_name(engine: str, name: str) -> str:
    return f"espeak:{name}" if engine.startswith("espeak-ng") else f"{engine}:{name}"


def _split(training: Mapping[str, Any] | None, engines: tuple[str, ...]) -> dict[str, Any]:
    """training's own voice split of ``engines`` for the seed and settings recorded in a manifest."""
    from training import tts as ttts
    from training.recipe import SynthesisConfig

    seed, section = _recipe_section(training or {})
    d = SynthesisConfig()
    return ttts.split_voices(ttts.all_voices(engines), float(section.get("holdout_fraction", d.holdout_fraction)),
                             float(section.get("val_fraction", d.val_fraction)), seed,
                             tuple(section.get("holdout_voices", d.holdout_voices)))


def _installed(engines: tuple[str, ...]) -> tuple[str, ...]:
    from training import tts as ttts

    ok = []
    for e in engines:
        try:
            ttts.require_engines((e,))
        except Exception:  # TtsError or ConfigError: the engine is simply left out
            continue
        ok.append(e)
    return tuple(ok)


def default_voices(training: Mapping[str, Any] | None = None) -> tuple[tuple[str, ...], str]:
    """(voices, where they come from): per installed engine, up to :data:`PER_ENGINE` voice groups the
    model's recipe holds out (recomputed with ``training.tts.split_voices`` from the manifest's seed),
    one voice per group; festival and piper, too few to hold out, with all their voices (kws_edge may have
    trained on them: :func:`voice_roles` says so). Falls back to :data:`EVAL_VOICES` without training."""
    try:
        engines = _installed(ENGINES)
        split = _split(training, engines)
    except ImportError:
        return EVAL_VOICES, "bench default (training package not importable)"
    from training import tts as ttts

    voices: list[str] = []
    for engine in engines:
        if engine in ttts.FEW_VOICE_ENGINES:
            voices += [_bench_name(v.engine, v.name) for v in ttts.all_voices((engine,))]
            continue
        test = [v for v in split["test"] if v.engine == engine]
        for i, group in enumerate(sorted({v.group for v in test})[:PER_ENGINE]):
            members = sorted((v for v in test if v.group == group), key=lambda v: v.name)
            voices.append(_bench_name(engine, members[i % len(members)].name))
    seed, _ = _recipe_section(training or {})
    return tuple(voices), (f"per engine, up to {PER_ENGINE} voice groups held out by training.tts.split_voices "
                           f"(seed {seed}), plus every festival and piper voice")


def voice_roles(voices: Sequence[str], models: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per voice: its engine and, per kws_edge model (name -> manifest ``training`` block), whether that
    model "trained on" it, "held out" it, or never used its engine ("engine not used")."""
    out: dict[str, dict[str, Any]] = {v: {"engine": engine_of(v), "kws_edge": {}} for v in voices}
    for model, training in models.items():
        _, section = _recipe_section(training)
        try:
            from training.recipe import SynthesisConfig

            used = tuple(section.get("engines", SynthesisConfig().engines))
            split = _split(training, used)
        except (ImportError, ConfigError):
            continue
        held = {v.id for v in split["test"]}
        for v in voices:
            engine = engine_of(v)
            vid = f"{engine}:{v.partition(':')[2]}"
            out[v]["kws_edge"][model] = ("engine not used" if engine not in used else
                                         "held out" if vid in held else "trained on")
    return out


def check_voices(voices: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` naming the first voice that is malformed or whose engine is missing."""
    exes = {"espeak": "espeak-ng", "flite": "flite", "festival": "text2wave"}
    for v in voices:
        engine, _, name = v.partition(":")
        if engine not in (*exes, "piper") or not name:
            raise ConfigError(f"voice {v!r}: expected 'espeak:<voice>[+variant]', 'flite:<voice>', "
                              "'festival:<voice>' or 'piper:<voice>'")
        exe = exes.get(engine)
        if exe is not None and shutil.which(exe) is None:
            raise ConfigError(f"voice {v!r} needs {exe}, which is not installed (see training/tts.py)")


def _command(u: Utterance, out: Path) -> list[str]:
    engine, _, name = u.voice.partition(":")
    if engine == "espeak":
        rate = round(175 * u.speed)  # espeak-ng's default is 175 words per minute
        pitch = int(np.clip(round(50 * u.pitch), 0, 99))  # default 50 on a 0..99 scale
        return ["espeak-ng", "-v", name, "-s", str(rate), "-p", str(pitch), "-w", str(out), u.text]
    return ["flite", "-voice", name, "--setf", f"duration_stretch={1.0 / u.speed:.3f}",
            "--setf", f"int_f0_target_mean={110 * u.pitch:.1f}", "-t", u.text, "-o", str(out)]


def synthesize(u: Utterance, cache_dir: Path) -> npt.NDArray[np.int16]:
    """Render ``u`` as 16 kHz int16 mono, from the cache when it is there."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = cache_dir / f"{u.key()}.wav"
    if cached.exists():
        return read_wav(cached, SAMPLE_RATE)
    engine, _, name = u.voice.partition(":")
    if engine in ("festival", "piper"):  # training's own synthesis (in-process for piper)
        from training import tts as ttts

        v = ttts.Voice(engine, name, f"{engine}:{name}")
        samples = ttts.synthesize(v, u.text, u.speed, float(np.clip(0.5 * u.pitch, 0.0, 1.0)))
        write_wav(cached, samples, SAMPLE_RATE)
        return samples
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        raw = Path(tmp) / "raw.wav"
        proc = subprocess.run(_command(u, raw), capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not raw.exists():
            raise ConfigError(f"TTS failed for voice {u.voice!r} text {u.text!r}: "
                              f"{proc.stderr.strip()[:200] or 'no output file'}")
        samples = read_wav(raw, SAMPLE_RATE)
    write_wav(cached, samples, SAMPLE_RATE)
    return samples


def active_span(x: npt.NDArray[np.int16], rel: float = 0.05, frame: int = 160) -> tuple[int, int]:
    """(first, last) sample of the part of ``x`` whose 10 ms frame RMS exceeds ``rel`` x the loudest frame."""
    n = len(x) // frame
    if n == 0:
        return 0, len(x)
    rms = np.sqrt(np.mean(x[: n * frame].astype(np.float64).reshape(n, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > rel * rms.max())
    if len(loud) == 0:
        return 0, len(x)
    return int(loud[0] * frame), int(min(len(x), (loud[-1] + 1) * frame))
