"""Held-out text-to-speech voices for the evaluation corpus (espeak-ng and flite), with a file cache.

A voice is written ``engine:name``: ``espeak:en-029+m3`` (accent + variant) or ``flite:rms``. The
evaluation voices must never be used in training: :func:`default_voices` takes them from the training
package's own held-out split. Every synthesized utterance is cached as a 16 kHz int16 WAV
named by a hash of its parameters, so a second corpus build runs no TTS at all.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kws_edge.audio import read_wav, write_wav
from kws_edge.errors import ConfigError

SAMPLE_RATE = 16000

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


def default_voices(training: Mapping[str, Any] | None = None) -> tuple[tuple[str, ...], str]:
    """(voices, where they come from): training's held-out test voice groups, one accent per group.

    Training splits whole voice groups (an espeak-ng variant in every accent, or a flite voice) into
    train / val / test by a seeded hash; the bench recomputes that split with training's own code, the
    seed and synthesis settings recorded in the model's manifest (defaults when absent), and uses only
    test groups. Falls back to :data:`EVAL_VOICES` when the training package is not importable.
    """
    try:
        from training import tts as ttts
        from training.recipe import SynthesisConfig
    except ImportError:
        return EVAL_VOICES, "bench default (training package not importable)"
    seed, section = _recipe_section(training or {})
    defaults = SynthesisConfig()
    engines = tuple(section.get("engines", defaults.engines))
    holdout = tuple(section.get("holdout_voices", defaults.holdout_voices))
    split = ttts.split_voices(ttts.all_voices(engines), float(section.get("holdout_fraction",
                              defaults.holdout_fraction)), float(section.get("val_fraction",
                              defaults.val_fraction)), seed, holdout)
    groups = sorted({v.group for v in split["test"]})
    voices = []
    for i, group in enumerate(groups):
        members = sorted((v for v in split["test"] if v.group == group), key=lambda v: v.name)
        v = members[i % len(members)]
        voices.append(f"espeak:{v.name}" if v.engine == "espeak-ng" else f"flite:{v.name}")
    return tuple(voices), f"training's test voice groups (training.tts.split_voices, seed {seed})"


def check_voices(voices: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` naming the first voice that is malformed or whose engine is missing."""
    for v in voices:
        engine, _, name = v.partition(":")
        if engine not in ("espeak", "flite") or not name:
            raise ConfigError(f"voice {v!r}: expected 'espeak:<voice>[+variant]' or 'flite:<voice>'")
        exe = "espeak-ng" if engine == "espeak" else "flite"
        if shutil.which(exe) is None:
            raise ConfigError(f"voice {v!r} needs {exe}, which is not installed (apt-get install {exe})")


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
