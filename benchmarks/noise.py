"""Noise, reverberation and level helpers for the evaluation corpus. All randomness comes from the caller's rng.

Levels are in dBFS of RMS relative to int16 full scale (32768). Speech levels are measured over the
active part of an utterance (see :func:`benchmarks.tts.active_span`), so an SNR is exact per utterance.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.signal import fftconvolve

FloatArray = npt.NDArray[np.float64]
FULL_SCALE = 32768.0
NOISE_KINDS = ("white", "pink", "babble")


def db_to_rms(dbfs: float) -> float:
    return FULL_SCALE * 10.0 ** (dbfs / 20.0)


def rms(x: npt.NDArray[np.floating] | npt.NDArray[np.integer]) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2))) if len(x) else 0.0


def white(n: int, rng: np.random.Generator) -> FloatArray:
    """Unit-RMS white Gaussian noise."""
    return rng.standard_normal(n)


def pink(n: int, rng: np.random.Generator) -> FloatArray:
    """Unit-RMS pink (1/f power) noise, shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spectrum / np.sqrt(f), n)
    x -= x.mean()
    return x / (rms(x) or 1.0)


def loop_slice(bank: FloatArray, n: int, rng: np.random.Generator) -> FloatArray:
    """``n`` samples of ``bank`` from a random offset, wrapping around (for babble)."""
    start = int(rng.integers(len(bank)))
    reps = (start + n) // len(bank) + 1
    return np.tile(bank, reps)[start:start + n]


def make_noise(kind: str, n: int, rng: np.random.Generator, babble_bank: FloatArray) -> FloatArray:
    """Unit-RMS noise of ``kind`` (white, pink or babble)."""
    if kind == "white":
        return white(n, rng)
    if kind == "pink":
        return pink(n, rng)
    if kind == "babble":
        x = loop_slice(babble_bank, n, rng)
        return x / (rms(x) or 1.0)
    raise ValueError(f"unknown noise kind {kind!r}; expected one of {', '.join(NOISE_KINDS)}")


def mix_babble(talkers: list[FloatArray]) -> FloatArray:
    """Sum several talkers' speech (each scaled to unit RMS, padded to the longest) into unit-RMS babble."""
    n = max(len(t) for t in talkers)
    out = np.zeros(n)
    for t in talkers:
        out[: len(t)] += t / (rms(t) or 1.0)
    return out / (rms(out) or 1.0)


def room_impulse(rng: np.random.Generator, rt60_s: float, sample_rate: int = 16000) -> FloatArray:
    """A synthetic room impulse response: a direct path then exponentially decaying noise (RT60 ``rt60_s``)."""
    n = int(rt60_s * sample_rate)
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60_s)  # 60 dB down at rt60
    delay = int(0.003 * sample_rate)  # first reflections after ~3 ms
    h = np.zeros(n + delay)
    h[0] = 1.0
    h[delay:] += 0.35 * tail / (np.sqrt(np.sum(tail**2)) or 1.0) * np.sqrt(rt60_s * 10)
    return h


def reverberate(x: FloatArray, h: FloatArray) -> FloatArray:
    """Convolve ``x`` with ``h``; keeps the length of ``x`` plus the tail of the impulse response."""
    return fftconvolve(x, h)


def to_int16(x: FloatArray) -> npt.NDArray[np.int16]:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)
