"""Audio sources: WAV files, raw PCM on stdin and microphones, all delivered as int16 mono chunks.

Every source yields fixed-size chunks (the last may be shorter) at the requested sample rate. Nothing
downstream depends on the chunk size. The microphone's callback never blocks: it drops the oldest chunk
into a bounded queue and counts what it dropped.
"""

from __future__ import annotations

import math
import queue
import threading
import wave
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from kws_edge.errors import AudioError

Int16Array = npt.NDArray[np.int16]
DEFAULT_CHUNK = 1280  # samples: 80 ms at 16 kHz


def _to_int16(x: npt.NDArray[np.float64]) -> Int16Array:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def resample(x: npt.NDArray[Any], from_rate: int, to_rate: int) -> Int16Array:
    """Whole-signal polyphase resampling (for files)."""
    if from_rate == to_rate:
        return np.asarray(x, dtype=np.int16)
    from scipy.signal import resample_poly

    ratio = Fraction(to_rate, from_rate)
    y = resample_poly(np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator)
    return _to_int16(y)


def read_wav(path: Path | str, sample_rate: int = 16000) -> Int16Array:
    """Read a PCM WAV (8/16/24/32-bit, any rate, any channel count) as int16 mono at ``sample_rate``."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, nframes = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(nframes)
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AudioError(f"{path}: is a directory, expected a WAV file") from None
    except wave.Error as exc:
        msg = str(exc)
        if "unknown format" in msg:
            raise AudioError(
                f"{path}: not PCM ({msg}); expected integer PCM WAV, convert with "
                f"'sox {path.name} -b 16 out.wav'"
            ) from None
        raise AudioError(f"{path}: not a readable WAV file ({msg}); expected a RIFF/WAVE PCM file") from None
    except EOFError:
        raise AudioError(f"{path}: truncated WAV header; expected a complete RIFF/WAVE PCM file") from None
    frame_bytes = channels * width
    if frame_bytes == 0 or rate <= 0:
        raise AudioError(f"{path}: bad WAV header ({channels} channels, {width} bytes/sample, {rate} Hz)")
    if len(raw) < nframes * frame_bytes:
        raise AudioError(
            f"{path}: truncated: the header announces {nframes} frames but the file holds "
            f"{len(raw) // frame_bytes}"
        )
    if width == 2 and channels == 1 and rate == sample_rate:  # the common case: no conversion at all
        return np.frombuffer(raw, dtype="<i2").astype(np.int16)
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128) << 8
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.int32)
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        data = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8) >> 16  # sign-extend, keep top 16 bits
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4") >> 16
    else:
        raise AudioError(f"{path}: {8 * width}-bit samples are not supported; expected 8, 16, 24 or 32-bit PCM")
    mono = data.reshape(-1, channels).mean(axis=1) if channels > 1 else data.astype(np.float64)
    if rate == sample_rate:
        return _to_int16(np.asarray(mono, dtype=np.float64))
    return resample(mono, rate, sample_rate)


MAX_RATE = 384_000  # Hz: a header above this is not audio
MAX_CHANNELS = 64


def _pcm_to_mono(raw: bytes, width: int, channels: int) -> npt.NDArray[np.float64]:
    """Little-endian PCM bytes (whole frames) -> mono float samples on the int16 scale."""
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128) << 8
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.int32)
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        data = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8) >> 16  # sign-extend, keep top 16 bits
    else:
        data = np.frombuffer(raw, dtype="<i4") >> 16
    if channels > 1:
        return np.asarray(data.reshape(-1, channels).mean(axis=1), dtype=np.float64)
    return data.astype(np.float64)


def wav_chunks(path: Path | str, sample_rate: int = 16000, chunk: int = DEFAULT_CHUNK) -> Iterator[Int16Array]:
    """Stream a PCM WAV as int16 mono chunks at ``sample_rate``, with flat memory (any file length).

    The header is checked before any audio is returned: an absurd rate or channel count, a declared length
    the file does not hold, or a rate below the model's (the model would hear nothing above half that
    rate, so it would silently detect nothing) raise :class:`AudioError`. Higher rates are resampled as
    the microphone path does (:class:`StreamingResampler`).
    """
    if chunk <= 0:
        raise AudioError(f"chunk size must be > 0 samples, got {chunk}")
    path = Path(path)
    try:
        w = wave.open(str(path), "rb")  # noqa: SIM115 (closed by the with block below)
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AudioError(f"{path}: is a directory, expected a WAV file") from None
    except wave.Error as exc:
        msg = str(exc)
        if "unknown format" in msg:
            raise AudioError(f"{path}: not PCM ({msg}); expected integer PCM WAV, convert with "
                             f"'sox {path.name} -b 16 out.wav'") from None
        raise AudioError(f"{path}: not a readable WAV file ({msg}); expected a RIFF/WAVE PCM file") from None
    except (EOFError, OSError) as exc:
        raise AudioError(f"{path}: truncated or unreadable WAV header ({exc or 'EOF'}); expected a complete "
                         "RIFF/WAVE PCM file") from None
    with w:
        channels, width, rate, nframes = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        _check_header(path, channels, width, rate, nframes, sample_rate)
        resampler = StreamingResampler(rate, sample_rate) if rate != sample_rate else None
        block = max(1, math.ceil(chunk * rate / sample_rate))
        pending = np.zeros(0, dtype=np.int16)
        left = nframes
        while left > 0:
            raw = w.readframes(min(block, left))
            got = len(raw) // (channels * width)
            if got == 0:
                raise AudioError(f"{path}: truncated: the header announces {nframes} frames but the file "
                                 f"holds {nframes - left}")
            left -= got
            raw = raw[:got * channels * width]
            if width == 2 and channels == 1 and resampler is None:
                out = np.frombuffer(raw, dtype="<i2").astype(np.int16)
            else:
                mono = _pcm_to_mono(raw, width, channels)
                out = resampler.process(mono) if resampler is not None else _to_int16(mono)
            pending = np.concatenate((pending, out)) if len(pending) else out
            while len(pending) >= chunk:
                yield pending[:chunk]
                pending = pending[chunk:]
        if len(pending):
            yield pending


def _check_header(path: Path, channels: int, width: int, rate: int, nframes: int, sample_rate: int) -> None:
    if not 1 <= channels <= MAX_CHANNELS or not 1 <= width <= 4 or not 0 < rate <= MAX_RATE:
        raise AudioError(f"{path}: implausible WAV header ({channels} channels, {width} bytes/sample, {rate} Hz); "
                         f"expected 1-{MAX_CHANNELS} channels of 8-32-bit PCM at up to {MAX_RATE} Hz")
    if rate < sample_rate:
        raise AudioError(f"{path}: recorded at {rate} Hz, below the model's {sample_rate} Hz: the model listens "
                         f"up to {sample_rate // 2} Hz and would hear almost nothing (no detections); record "
                         f"at {sample_rate} Hz or more")
    declared = nframes * channels * width
    try:
        size = path.stat().st_size
    except OSError:
        size = declared
    if declared > size:
        raise AudioError(f"{path}: truncated or corrupt: the header announces {nframes} frames "
                         f"({declared} bytes) but the file has {size} bytes")


def write_wav(path: Path | str, samples: npt.ArrayLike, sample_rate: int = 16000) -> None:
    """Write int16 mono PCM."""
    x = np.asarray(samples)
    if x.dtype != np.int16:
        x = _to_int16(np.asarray(x, dtype=np.float64))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(x.astype("<i2").tobytes())


def chunks(samples: Int16Array, chunk: int = DEFAULT_CHUNK) -> Iterator[Int16Array]:
    if chunk <= 0:
        raise AudioError(f"chunk size must be > 0 samples, got {chunk}")
    for start in range(0, len(samples), chunk):
        yield samples[start:start + chunk]


def stdin_chunks(stream: BinaryIO, chunk: int = DEFAULT_CHUNK) -> Iterator[Int16Array]:
    """Raw signed 16-bit little-endian mono PCM from a byte stream, at the models' sample rate."""
    want = 2 * chunk
    pending = b""
    while True:
        data = stream.read(want - len(pending))
        if not data:
            break
        pending += data
        if len(pending) >= want:
            yield np.frombuffer(pending, dtype="<i2").astype(np.int16)
            pending = b""
    if len(pending) // 2:
        yield np.frombuffer(pending[: len(pending) // 2 * 2], dtype="<i2").astype(np.int16)


class StreamingResampler:
    """Resample a stream chunk by chunk (anti-alias low-pass with kept state, then linear interpolation).

    Output sample k sits at input position k * from_rate / to_rate, computed with integers, so the
    result does not depend on how the input was chunked.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        from scipy.signal import butter, sosfilt_zi

        self.from_rate, self.to_rate = from_rate, to_rate
        cutoff = min(0.45 * to_rate, 0.45 * from_rate) / (from_rate / 2)
        self._sos = butter(8, cutoff, output="sos")
        self._zi0 = sosfilt_zi(self._sos) * 0.0
        self.reset()

    def reset(self) -> None:
        self._zi = self._zi0.copy()
        self._prev: float = 0.0  # last filtered input sample (index self._n_in - 1)
        self._n_in = 0
        self._n_out = 0

    def process(self, x: npt.ArrayLike) -> Int16Array:
        from scipy.signal import sosfilt

        if self.from_rate == self.to_rate:
            return np.asarray(x, dtype=np.int16)
        x = np.asarray(x, dtype=np.float64)
        if x.size == 0:
            return np.zeros(0, dtype=np.int16)
        y, self._zi = sosfilt(self._sos, x, zi=self._zi)
        ext = np.concatenate(([self._prev], y))  # ext[j] is input sample self._n_in - 1 + j
        base = self._n_in - 1
        end = self._n_in + x.size  # inputs available: indices < end
        # outputs k with position k*from/to <= end-1
        last_k = ((end - 1) * self.to_rate) // self.from_rate
        ks = np.arange(self._n_out, last_k + 1)
        num = ks * self.from_rate
        idx = num // self.to_rate
        frac = (num % self.to_rate) / self.to_rate
        j = idx - base
        nxt = np.minimum(j + 1, len(ext) - 1)
        out = ext[j] * (1 - frac) + ext[nxt] * frac
        self._prev = float(y[-1])
        self._n_in = end
        self._n_out = last_k + 1
        return _to_int16(out)


def list_input_devices() -> list[dict[str, Any]]:
    """Input devices PortAudio sees: index, name, channels, default rate, host API."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        apis = sd.query_hostapis()
    except Exception as exc:  # PortAudio errors have no common public base class
        raise AudioError(f"cannot query audio devices: {exc}") from None
    out = []
    for d in devices:
        if d["max_input_channels"] > 0:
            out.append({"index": d["index"], "name": d["name"], "channels": d["max_input_channels"],
                        "default_samplerate": d["default_samplerate"],
                        "hostapi": apis[d["hostapi"]]["name"]})
    return out


def _sounddevice() -> Any:
    try:
        import sounddevice as sd
    except OSError as exc:  # libportaudio2 missing
        raise AudioError(f"PortAudio is not available ({exc}); install it: apt-get install libportaudio2") \
            from None
    except ImportError:
        raise AudioError("sounddevice is not installed: pip install 'kws-edge[pi]'") from None
    return sd


def resolve_device(device: str | int | None) -> int | str | None:
    """Turn a ``--device`` value (index, name fragment, or None for the default) into a PortAudio device."""
    if device is None or device == "":
        return None
    if isinstance(device, int) or str(device).isdigit():
        return int(device)
    inputs = list_input_devices()
    matches = [d for d in inputs if str(device).lower() in d["name"].lower()]
    if not matches:
        names = ", ".join(f"{d['index']}: {d['name']}" for d in inputs) or "none"
        raise AudioError(f"no input device matches {device!r}; input devices: {names}")
    exact = [d for d in matches if d["name"] == device]
    return int((exact or matches)[0]["index"])


class Microphone:
    """A PortAudio input stream feeding int16 mono chunks at ``sample_rate`` into a bounded queue.

    Use as a context manager; :meth:`read` returns the next chunk (or None on timeout) and raises
    :class:`AudioError` when the device disappears.
    """

    def __init__(self, device: str | int | None = None, sample_rate: int = 16000, chunk: int = DEFAULT_CHUNK,
                 max_queue: int = 50) -> None:
        self.requested = device
        self.sample_rate = sample_rate
        self.chunk = chunk
        self.dropped_chunks = 0
        self.overflows = 0
        self._queue: queue.Queue[Int16Array] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._stream: Any = None
        self._resampler: StreamingResampler | None = None
        self.device_name = "default"
        self.native_rate = sample_rate

    def __enter__(self) -> Microphone:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        sd = _sounddevice()
        device = resolve_device(self.requested)
        try:
            info = sd.query_devices(device, "input")
        except Exception as exc:
            raise AudioError(_no_mic_message(self.requested, exc)) from None
        self.device_name = str(info["name"])
        rate = self.sample_rate
        try:
            sd.check_input_settings(device=device, samplerate=rate, channels=1, dtype="int16")
        except Exception:
            rate = int(info["default_samplerate"])  # the device cannot do 16 kHz: resample ourselves
        self.native_rate = rate
        self._resampler = StreamingResampler(rate, self.sample_rate) if rate != self.sample_rate else None
        blocksize = max(1, math.ceil(self.chunk * rate / self.sample_rate))
        try:
            self._stream = sd.InputStream(device=device, samplerate=rate, channels=1, dtype="int16",
                                          blocksize=blocksize, callback=self._callback)
            self._stream.start()
        except Exception as exc:
            self._stream = None
            raise AudioError(_no_mic_message(self.requested, exc)) from None

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        if status and status.input_overflow:
            self.overflows += 1
        block = indata[:, 0].copy()
        if self._resampler is not None:
            block = self._resampler.process(block)
        while True:
            try:
                self._queue.put_nowait(block)
                return
            except queue.Full:
                try:  # drop the oldest chunk, never block the audio thread
                    self._queue.get_nowait()
                    self.dropped_chunks += 1
                except queue.Empty:
                    pass

    def read(self, timeout: float = 1.0) -> Int16Array | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            stream = self._stream
            if stream is None or not stream.active:
                raise AudioError(f"microphone {self.device_name!r} stopped delivering audio "
                                 "(unplugged?)") from None
            return None

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception:  # closing a vanished device can fail; nothing left to do
                pass


def _no_mic_message(device: str | int | None, exc: Exception) -> str:
    which = "the default microphone" if device in (None, "") else f"input device {device!r}"
    return (f"cannot open {which}: {exc}. No usable microphone? Plug one in, check "
            "'kws-edge devices', or pass --device NAME|INDEX")
