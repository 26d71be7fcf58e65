"""Streaming MFCC that reproduces ``python_speech_features.mfcc`` exactly.

The feature parameters live in one frozen dataclass, :class:`FeatureParams`. Training writes it into
every model's manifest, the runtime reads it back from there, and the firmware header is generated
from it: nothing else in the project hard-codes a window length or a filter count.

:class:`StreamingMfcc` takes int16 (or float) samples in chunks of any size and returns the MFCC frames
that became complete. Fed a whole signal in any chunking and then :meth:`StreamingMfcc.flush`-ed, it
returns the same frames as ``python_speech_features.mfcc`` over the whole signal, including the
library's zero-padded last frame. Per hop it only computes the new frames, with the filterbank, window,
DCT and lifter cached.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

WINDOWS = ("rectangular", "hamming", "hann")


def _round_half_up(x: float) -> int:
    # python_speech_features rounds frame lengths this way; math.round would round half to even.
    return int(decimal.Decimal(x).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


@dataclass(frozen=True)
class FeatureParams:
    """MFCC parameters, in the units python_speech_features uses (seconds, Hz)."""

    sample_rate: int = 16000  # Hz
    winlen: float = 0.040  # s, 640 samples at 16 kHz
    winstep: float = 0.020  # s, 320 samples: one hop
    numcep: int = 10
    nfilt: int = 40
    nfft: int = 1024
    lowfreq: float = 20.0  # Hz
    highfreq: float = 7600.0  # Hz
    preemph: float = 0.97
    ceplifter: int = 22
    append_energy: bool = True
    window: str = "hamming"

    def __post_init__(self) -> None:
        problems = []
        for name in ("winlen", "winstep", "lowfreq", "highfreq", "preemph"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"invalid feature parameters: {name} must be a finite number, "
                                 f"got {getattr(self, name)}")
        if not 0 < self.sample_rate <= 384_000:
            problems.append(f"sample_rate must be 1 to 384000 Hz, got {self.sample_rate}")
        if not 0 < self.nfft <= 65536 or not 0 < self.nfilt <= 1024 or abs(self.ceplifter) > 10_000:
            problems.append(f"need 0 < nfft <= 65536, 0 < nfilt <= 1024, |ceplifter| <= 10000, got "
                            f"nfft={self.nfft} nfilt={self.nfilt} ceplifter={self.ceplifter}")
        if not 0 < self.winstep <= self.winlen <= 10.0:
            problems.append(f"need 0 < winstep <= winlen <= 10 s, got winstep={self.winstep} winlen={self.winlen}")
        elif self.hop < 1:
            problems.append(f"winstep={self.winstep} s is less than one sample at {self.sample_rate} Hz "
                            "(a 0-sample hop)")
        if problems:
            raise ValueError("invalid feature parameters: " + "; ".join(problems))
        if self.frame_len > self.nfft:
            problems.append(f"nfft={self.nfft} is shorter than the window ({self.frame_len} samples)")
        if not 0 < self.numcep <= self.nfilt:
            problems.append(f"need 0 < numcep <= nfilt, got numcep={self.numcep} nfilt={self.nfilt}")
        if not 0 <= self.lowfreq < self.highfreq <= self.sample_rate / 2:
            problems.append(
                f"need 0 <= lowfreq < highfreq <= sample_rate/2, got {self.lowfreq}, {self.highfreq}"
            )
        if self.window not in WINDOWS:
            problems.append(f"window must be one of {', '.join(WINDOWS)}, got {self.window!r}")
        if problems:
            raise ValueError("invalid feature parameters: " + "; ".join(problems))

    # Cached (the fields are frozen): the pipeline reads these for every chunk and Decimal is slow.
    @functools.cached_property
    def frame_len(self) -> int:
        """Window length in samples."""
        return _round_half_up(self.winlen * self.sample_rate)

    @functools.cached_property
    def hop(self) -> int:
        """Hop length in samples."""
        return _round_half_up(self.winstep * self.sample_rate)

    def frames_for(self, n_samples: int) -> int:
        """Number of frames python_speech_features makes from ``n_samples`` (including the padded one)."""
        if n_samples <= self.frame_len:
            return 1
        return 1 + math.ceil((n_samples - self.frame_len) / self.hop)

    def samples_for(self, frames: int) -> int:
        """Samples that make exactly ``frames`` frames (without the padded last one)."""
        return self.frame_len + (frames - 1) * self.hop

    def streamer(self) -> StreamingMfcc:
        return StreamingMfcc(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "features") -> FeatureParams:
        """Build from a manifest section; unknown or mistyped keys raise ValueError naming them."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(fields)}")
        missing = sorted(set(fields) - set(data))
        if missing:
            raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            expected = fields[name].type
            ok = {
                "int": isinstance(value, int) and not isinstance(value, bool),
                "float": isinstance(value, int | float) and not isinstance(value, bool),
                "bool": isinstance(value, bool),
                "str": isinstance(value, str),
            }[str(expected)]
            if not ok:
                raise ValueError(f"{where}.{name}: expected {expected}, got {value!r}")
            values[name] = float(value) if expected == "float" else value
        return cls(**values)

    def window_function(self) -> FloatArray:
        n = self.frame_len
        if self.window == "hamming":
            return np.hamming(n)
        if self.window == "hann":
            return np.hanning(n)
        return np.ones(n)

    def psf_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``python_speech_features.mfcc`` giving the same features."""
        window = self.window_function()
        return {
            "samplerate": self.sample_rate,
            "winlen": self.winlen,
            "winstep": self.winstep,
            "numcep": self.numcep,
            "nfilt": self.nfilt,
            "nfft": self.nfft,
            "lowfreq": self.lowfreq,
            "highfreq": self.highfreq,
            "preemph": self.preemph,
            "ceplifter": self.ceplifter,
            "appendEnergy": self.append_energy,
            "winfunc": lambda n: window if n == len(window) else np.ones(n),
        }


def mel_filterbank(params: FeatureParams) -> FloatArray:
    """The (nfilt, nfft//2+1) triangular mel filterbank of python_speech_features, value for value.

    Filter edges are equally spaced on the mel scale (2595 log10(1 + f/700)) and snapped down to FFT
    bins with floor((nfft+1) f / rate), as the library does; tests compare it with the library's. Built
    here so the runtime does not import scipy (30 MB of RSS) just for this table.
    """
    def to_mel(hz: float) -> float:
        return 2595.0 * math.log10(1.0 + hz / 700.0)

    mels = np.linspace(to_mel(params.lowfreq), to_mel(params.highfreq), params.nfilt + 2)
    hz = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    edges = np.floor((params.nfft + 1) * hz / params.sample_rate)
    bank = np.zeros((params.nfilt, params.nfft // 2 + 1))
    for j in range(params.nfilt):
        left, centre, right = edges[j], edges[j + 1], edges[j + 2]
        rising = np.arange(int(left), int(centre))
        bank[j, rising] = (rising - left) / (centre - left)
        falling = np.arange(int(centre), int(right))
        bank[j, falling] = (right - falling) / (right - centre)
    return bank


def dct_lifter_matrix(params: FeatureParams) -> FloatArray:
    """(nfilt, numcep) matrix doing the orthonormal DCT-II, truncation and cepstral liftering at once."""
    n, k = params.nfilt, np.arange(params.numcep)
    i = np.arange(n)
    basis = np.cos(np.pi * np.outer(2 * i + 1, k) / (2 * n))
    scale = np.full(params.numcep, math.sqrt(2.0 / n))
    scale[0] = math.sqrt(1.0 / n)
    lift = np.ones(params.numcep)
    if params.ceplifter > 0:
        lift = 1 + (params.ceplifter / 2.0) * np.sin(np.pi * k / params.ceplifter)
    result: FloatArray = basis * (scale * lift)
    return result


class MfccKernel:
    """Stateless part: turns pre-emphasised frames (n, frame_len) into MFCC rows (n, numcep)."""

    def __init__(self, params: FeatureParams) -> None:
        self.params = params
        self._window = params.window_function()
        self._fb_t = np.ascontiguousarray(mel_filterbank(params).T)
        self._dct = dct_lifter_matrix(params)
        self._eps = np.finfo(float).eps

    def __call__(self, frames: FloatArray) -> FloatArray:
        p = self.params
        spectrum = np.fft.rfft(frames * self._window, p.nfft)
        power = (spectrum.real**2 + spectrum.imag**2) * (1.0 / p.nfft)
        energies = power @ self._fb_t
        energies = np.where(energies == 0, self._eps, energies)  # as the library: only exact zeros
        ceps: FloatArray = np.log(energies) @ self._dct
        if p.append_energy:
            energy = power.sum(axis=1)
            ceps[:, 0] = np.log(np.where(energy == 0, self._eps, energy))
        return ceps


class StreamingMfcc:
    """MFCC over a stream of samples; owns its leftover samples; never touches a device."""

    def __init__(self, params: FeatureParams) -> None:
        self.params = params
        self._kernel = MfccKernel(params)
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(0, dtype=np.float64)  # pre-emphasised samples not yet fully consumed
        self._last = 0.0  # last raw sample, for pre-emphasis across chunks
        self._seen = 0  # raw samples seen so far
        self._frames_out = 0

    @property
    def frames_emitted(self) -> int:
        return self._frames_out

    @property
    def samples_seen(self) -> int:
        return self._seen

    def process(self, samples: npt.ArrayLike) -> FloatArray:
        """Feed samples; return the (n, numcep) MFCC frames completed by them (n may be 0)."""
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if x.size == 0:
            return np.zeros((0, self.params.numcep))
        emph = np.empty_like(x)
        if self._seen == 0:
            emph[0] = x[0]
        else:
            emph[0] = x[0] - self.params.preemph * self._last
        emph[1:] = x[1:] - self.params.preemph * x[:-1]
        self._last = float(x[-1])
        self._seen += x.size
        buf = np.concatenate((self._buf, emph)) if self._buf.size else emph
        return self._take_frames(buf)

    def _take_frames(self, buf: FloatArray) -> FloatArray:
        p = self.params
        flen, hop = p.frame_len, p.hop
        n = 0 if buf.size < flen else 1 + (buf.size - flen) // hop
        if n == 0:
            self._buf = buf
            return np.zeros((0, p.numcep))
        frames = np.lib.stride_tricks.as_strided(
            buf, shape=(n, flen), strides=(buf.strides[0] * hop, buf.strides[0]), writeable=False
        )
        out = self._kernel(frames)
        self._buf = buf[n * hop :].copy()
        self._frames_out += n
        return out

    def flush(self) -> FloatArray:
        """Emit the zero-padded last frame(s) the batch library would make, then reset."""
        if self._seen == 0:
            self.reset()
            return np.zeros((0, self.params.numcep))
        total = self.params.frames_for(self._seen)
        missing = total - self._frames_out
        out = np.zeros((0, self.params.numcep))
        if missing > 0:
            p = self.params
            need = (missing - 1) * p.hop + p.frame_len
            buf = np.concatenate((self._buf, np.zeros(max(0, need - self._buf.size))))
            frames = np.stack([buf[i * p.hop : i * p.hop + p.frame_len] for i in range(missing)])
            out = self._kernel(frames)
        self.reset()
        return out


def mfcc(signal: npt.ArrayLike, params: FeatureParams) -> FloatArray:
    """Batch MFCC over a whole signal (same result as python_speech_features.mfcc)."""
    stream = StreamingMfcc(params)
    head = stream.process(signal)
    return np.concatenate((head, stream.flush()))
