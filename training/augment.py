"""Augmentation: background noise at an SNR, synthetic reverberation, shift, gain, speed.

All functions take a ``numpy.random.Generator`` so a clip's augmentation depends only on its seed.
Noise kinds: white, pink (1/f), brown (1/f^2), babble (a noise bank of overlapped synthetic speech from
training voices), ``file`` (any noise folder the user gives, resampled to 16 kHz) and ``room`` (the quiet
stretches of real recordings: real microphones' noise floors and rooms, see :func:`room_tone`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kws_edge.audio import read_wav
from kws_edge.errors import ConfigError

Float = npt.NDArray[np.float64]
NOISE_KINDS = ("white", "pink", "brown", "babble", "file", "room")


def colored_noise(kind: str, n: int, rng: np.random.Generator) -> Float:
    """Unit-RMS white, pink or brown noise of ``n`` samples."""
    white = rng.standard_normal(n)
    if kind == "white":
        x = white
    else:
        spec = np.fft.rfft(white)
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = 1.0
        spec /= np.sqrt(f) if kind == "pink" else f
        spec[0] = 0.0
        x = np.fft.irfft(spec, n)
    rms = float(np.sqrt(np.mean(x**2))) or 1.0
    return x / rms


@dataclass
class NoiseBank:
    """Long noise recordings to cut segments from: babble and the user's noise folder."""

    babble: list[Float]
    files: list[Float]
    room: list[Float] = field(default_factory=list)

    def segment(self, kind: str, n: int, rng: np.random.Generator) -> Float:
        """A unit-RMS noise segment of ``n`` samples of the given kind."""
        if kind in ("white", "pink", "brown"):
            return colored_noise(kind, n, rng)
        source = {"babble": self.babble, "room": self.room}.get(kind, self.files)
        if not source:
            return colored_noise("pink", n, rng)
        x = source[int(rng.integers(len(source)))]
        if len(x) < n:
            x = np.tile(x, n // len(x) + 1)
        start = int(rng.integers(0, len(x) - n + 1))
        seg = x[start:start + n].astype(np.float64)
        rms = float(np.sqrt(np.mean(seg**2)))
        return seg / rms if rms > 1e-6 else colored_noise("pink", n, rng)


def load_noise_dir(folder: str | Path, rate: int = 16000) -> list[Float]:
    """Every ``*.wav`` under ``folder`` as float samples at ``rate``; ConfigError if there are none."""
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"noise folder {path} does not exist or is not a directory")
    wavs = sorted(path.rglob("*.wav"))
    if not wavs:
        raise ConfigError(f"noise folder {path} contains no .wav files")
    return [read_wav(p, rate).astype(np.float64) for p in wavs]


def make_babble(speech: list[npt.NDArray[np.int16]], seconds: float, rng: np.random.Generator,
                talkers: int = 5, rate: int = 16000) -> Float:
    """Overlap ``talkers`` streams of concatenated speech clips into one babble track."""
    n = int(seconds * rate)
    out = np.zeros(n)
    for _ in range(talkers):
        track: list[npt.NDArray[np.int16]] = []
        total = 0
        while total < n and speech:
            clip = speech[int(rng.integers(len(speech)))]
            track.append(clip)
            total += len(clip)
        if track:
            t = np.concatenate(track)[:n].astype(np.float64)
            rms = float(np.sqrt(np.mean(t**2))) or 1.0
            out[:len(t)] += t / rms
    return out


def synthetic_rir(rng: np.random.Generator, rt60: float, rate: int = 16000) -> Float:
    """A room impulse response: direct path, sparse early reflections and an exponential noise tail."""
    n = int(rate * min(rt60, 1.0))
    t = np.arange(n) / rate
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    tail[: int(0.003 * rate)] = 0.0
    h = 0.4 * tail / (np.sqrt(np.sum(tail**2)) or 1.0)
    for _ in range(6):
        k = int(rng.integers(int(0.002 * rate), int(0.03 * rate)))
        h[k] += rng.uniform(-0.5, 0.5)
    h[0] = 1.0
    return h


def reverb(x: Float, rir: Float) -> Float:
    """Convolve and keep the original length, with the same peak level as the dry signal."""
    from scipy.signal import fftconvolve

    y = fftconvolve(x, rir)[: len(x)]
    peak_x, peak_y = np.max(np.abs(x)), np.max(np.abs(y))
    return y * (peak_x / peak_y) if peak_y > 0 else y


def speed(x: Float, factor: float) -> Float:
    """Play ``factor`` times faster (changes tempo and pitch together, as tape speed does)."""
    if abs(factor - 1.0) < 1e-3:
        return x
    n = max(1, round(len(x) / factor))
    return np.interp(np.arange(n) * factor, np.arange(len(x)), x)


def mix_at_snr(speech: Float, noise: Float, snr_db: float) -> Float:
    """``speech`` plus ``noise`` scaled so the speech-to-noise power ratio is ``snr_db`` (over active speech)."""
    active = np.abs(speech) > 0.05 * (np.max(np.abs(speech)) or 1.0)
    p_speech = float(np.mean(speech[active] ** 2)) if active.any() else 0.0
    p_noise = float(np.mean(noise**2)) or 1.0
    if p_speech == 0.0:
        return speech + noise
    return speech + noise * np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))


def place(clip: Float, length: int, rng: np.random.Generator, max_cut_start: int = 0) -> Float:
    """Put ``clip`` at a random offset in ``length`` zeros; only up to ``max_cut_start`` may be cut."""
    out = np.zeros(length)
    if len(clip) >= length:
        cut = min(len(clip) - length, max_cut_start)
        start = int(rng.integers(len(clip) - length - cut, len(clip) - length + 1)) if cut else len(clip) - length
        out[:] = clip[start:start + length]
        return out
    offset = int(rng.integers(0, length - len(clip) + 1))
    out[offset:offset + len(clip)] = clip
    return out


def to_int16(x: Float, rng: np.random.Generator, gain_db: tuple[float, float], floor: float = 1.0) -> Any:
    """Scale to a random peak level (dB re full scale) and round to int16; a little dither noise floor."""
    peak = float(np.max(np.abs(x))) or 1.0
    level = 10 ** (rng.uniform(*gain_db) / 20) * 32767
    y = x * (level / peak) + floor * rng.standard_normal(len(x))
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def microphone(x: Float, rng: np.random.Generator, rate: int = 16000) -> Float:
    """A random microphone and channel: band limits, a tilt and a few resonances, sometimes soft clipping.

    Real recordings come from phones, laptops and USB microphones: a high-pass between 60 and 400 Hz, a
    low-pass between 3.4 and 8 kHz, peaks and dips of up to +-8 dB, and input stages that saturate.
    TTS engines are all "studio-flat"; without this a model learns their channel.
    """
    from scipy.signal import butter, sosfilt

    y = x
    hp = float(np.exp(rng.uniform(np.log(60.0), np.log(400.0))))
    y = sosfilt(butter(int(rng.integers(1, 4)), hp, "highpass", fs=rate, output="sos"), y)
    if rng.random() < 0.7:
        lp = float(np.exp(rng.uniform(np.log(3400.0), np.log(7800.0))))
        y = sosfilt(butter(int(rng.integers(2, 6)), lp, "lowpass", fs=rate, output="sos"), y)
    for _ in range(int(rng.integers(0, 4))):
        y = _peaking(y, float(np.exp(rng.uniform(np.log(150.0), np.log(6000.0)))), rng.uniform(-8.0, 8.0),
                     rng.uniform(0.7, 3.0), rate)
    if rng.random() < 0.15:  # an overdriven input stage
        peak = float(np.max(np.abs(y))) or 1.0
        drive = rng.uniform(1.5, 6.0)
        y = np.tanh(drive * y / peak) * peak / np.tanh(drive)
    return np.asarray(y, dtype=np.float64)


def _peaking(x: Float, f0: float, gain_db: float, q: float, rate: int) -> Float:
    """RBJ audio-EQ-cookbook peaking filter."""
    from scipy.signal import lfilter

    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * min(f0, 0.45 * rate) / rate
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
    return np.asarray(lfilter(b / den[0], den / den[0], x), dtype=np.float64)


def room_tone(clips: list[npt.NDArray[np.int16]], frame: int = 320, quantile: float = 0.3,
              min_samples: int = 3200) -> list[Float]:
    """The quiet stretches of real recordings: each clip's 20 ms frames below its ``quantile`` of frame
    energy, joined. Real clips have silence around the speech; what is left there is the device's noise
    floor, hum and room. Mixed under TTS keywords it gives them the channels real positives have (TTS
    output is digitally clean), and since the same clips are negatives, the model cannot use it as a cue.
    """
    out: list[Float] = []
    for clip in clips:
        n = len(clip) // frame
        if n < 4:
            continue
        frames = clip[: n * frame].astype(np.float64).reshape(n, frame)
        energy = np.mean(frames**2, axis=1)
        quiet = frames[energy <= np.quantile(energy, quantile)].reshape(-1)
        if len(quiet) >= min_samples and float(np.max(np.abs(quiet))) > 0:
            out.append(quiet)
    return out
