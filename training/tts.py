"""Local text-to-speech engines: espeak-ng (accents x voice variants) and flite (its voices).

A :class:`Voice` is one engine voice; synthesis returns 16 kHz int16 samples. Engines run as
subprocesses; ``-D``-free resampling with ``scipy.signal.resample_poly`` keeps output deterministic.
Voices are split into train / validation / test *as whole voices*: a test voice (an espeak-ng variant
in every accent, or a flite voice) never speaks a training clip.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kws_edge.errors import ConfigError, KwsError

SAMPLE_RATE = 16000
ENGINE_PACKAGES = {"espeak-ng": "espeak-ng", "flite": "flite"}
# espeak-ng's own English accents (the mbrola ones need extra packages and are skipped).
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp",
                  "en-029", "en-us-nyc")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")  # awb_time is limited-domain (times only): skipped


class TtsError(KwsError):
    """A TTS engine that is missing or failed."""


@dataclass(frozen=True, order=True)
class Voice:
    engine: str  # "espeak-ng" | "flite"
    name: str  # espeak-ng: "<accent>+<variant>"; flite: voice name
    group: str  # the unit held out together: espeak-ng variant or flite voice

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}"


def require_engines(engines: tuple[str, ...]) -> None:
    """Raise TtsError naming the Debian package if an engine is not installed."""
    for engine in engines:
        if engine not in ENGINE_PACKAGES:
            raise ConfigError(f"unknown TTS engine {engine!r}; expected one of {', '.join(ENGINE_PACKAGES)}")
        if shutil.which(engine) is None:
            raise TtsError(
                f"TTS engine {engine!r} not found on PATH: install the Debian package "
                f"'{ENGINE_PACKAGES[engine]}' (sudo apt-get install {ENGINE_PACKAGES[engine]})")


@lru_cache(maxsize=1)
def espeak_variants() -> tuple[str, ...]:
    """Voice variant names espeak-ng knows (``espeak-ng --voices=variant``)."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    names = [line.split()[4].split("/", 1)[1] for line in out.splitlines()[1:] if len(line.split()) >= 5]
    return tuple(sorted(set(names)))


def all_voices(engines: tuple[str, ...]) -> list[Voice]:
    """Every voice of the given engines."""
    voices: list[Voice] = []
    if "espeak-ng" in engines:
        voices += [Voice("espeak-ng", f"{a}+{v}", f"espeak-ng:{v}") for v in espeak_variants()
                   for a in ESPEAK_ACCENTS]
    if "flite" in engines:
        voices += [Voice("flite", v, f"flite:{v}") for v in FLITE_VOICES]
    return voices


def _fraction(group: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_voices(voices: list[Voice], test_fraction: float, val_fraction: float, seed: int,
                 test_groups: tuple[str, ...] = ()) -> dict[str, list[Voice]]:
    """Split whole voice groups into train / val / test, deterministically per seed."""
    split: dict[str, list[Voice]] = {"train": [], "val": [], "test": []}
    for v in voices:
        f = _fraction(v.group, seed)
        if v.group in test_groups or f < test_fraction:
            split["test"].append(v)
        elif f < test_fraction + val_fraction:
            split["val"].append(v)
        else:
            split["train"].append(v)
    for name, vs in split.items():
        if not vs:
            raise ConfigError(f"voice split leaves no {name} voices; adjust holdout_fraction/val_fraction")
    return split


def _read_wav_bytes(data: bytes, what: str) -> tuple[npt.NDArray[np.int16], int]:
    try:
        with wave.open(io.BytesIO(data)) as w:
            if w.getsampwidth() != 2:
                raise TtsError(f"{what}: expected 16-bit WAV, got {8 * w.getsampwidth()}-bit")
            x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
            if w.getnchannels() > 1:
                x = x.reshape(-1, w.getnchannels())[:, 0]
            return x.astype(np.int16), w.getframerate()
    except (wave.Error, EOFError) as exc:
        raise TtsError(f"{what}: produced no usable WAV ({exc})") from None


def resample(x: npt.NDArray[np.int16], rate: int, target: int = SAMPLE_RATE) -> npt.NDArray[np.int16]:
    """Polyphase resampling to ``target`` Hz, deterministic, clipped to int16."""
    if rate == target:
        return x
    from scipy.signal import resample_poly

    g = gcd(rate, target)
    y = resample_poly(x.astype(np.float64), target // g, rate // g)
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def synthesize(voice: Voice, text: str, rate: float = 1.0, pitch: float = 0.5) -> npt.NDArray[np.int16]:
    """Speak ``text``: ``rate`` is a speed factor (1.0 = engine default), ``pitch`` in [0, 1]."""
    what = f"{voice.id} saying {text!r}"
    if voice.engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", voice.name, "-s", str(round(175 * rate)), "-p", str(round(100 * pitch)),
               "--stdout", "--", text]
        proc = subprocess.run(cmd, capture_output=True, check=False, timeout=60)
        if proc.returncode != 0:
            raise TtsError(f"{what}: espeak-ng failed: {proc.stderr.decode(errors='replace').strip()}")
        x, sr = _read_wav_bytes(proc.stdout, what)
    elif voice.engine == "flite":
        with tempfile.TemporaryDirectory(prefix="kws_flite_") as tmp:
            out = Path(tmp) / "out.wav"
            f0 = 80 + 140 * pitch
            cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1.0 / rate:.3f}",
                   "--setf", f"int_f0_target_mean={f0:.1f}", "-t", text, "-o", str(out)]
            proc = subprocess.run(cmd, capture_output=True, check=False, timeout=60)
            if proc.returncode != 0 or not out.exists():
                raise TtsError(f"{what}: flite failed: {proc.stderr.decode(errors='replace').strip()}")
            x, sr = _read_wav_bytes(out.read_bytes(), what)
    else:
        raise ConfigError(f"unknown TTS engine {voice.engine!r}")
    return resample(x, sr)


def trim_silence(x: npt.NDArray[np.int16], threshold: float = 0.02, pad: int = 800) -> npt.NDArray[np.int16]:
    """Cut leading and trailing near-silence (below ``threshold`` of the peak), keep ``pad`` samples."""
    if len(x) == 0:
        return x
    a = np.abs(x.astype(np.int32))
    peak = int(a.max())
    if peak == 0:
        return x[:0]
    idx = np.flatnonzero(a > threshold * peak)
    return x[max(0, idx[0] - pad):min(len(x), idx[-1] + pad)]
