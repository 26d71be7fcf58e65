"""Audio sources: WAV files, raw PCM on stdin and microphones, all delivered as int16 mono chunks.

Every source yields fixed-size chunks (the last may be shorter) at the requested sample rate. Nothing
downstream depends on the chunk size. The microphone's callback never blocks: it drops the oldest chunk
into a bounded queue and counts what it dropped.
"""

from __future__ import annotations

import functools
import math
import queue
import threading
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from kws_edge.errors import AudioError

Int16Array = npt.NDArray[np.int16]
DEFAULT_CHUNK = 1280  # samples: 80 ms at 16 kHz
_IN_SCALE = 2.0 ** 4  # resampler input: multiples of 1/16 of an int16 step
_TAP_SCALE = 2.0 ** 30  # resampler taps: multiples of 2**-30


def to_int16(x: npt.NDArray[np.float64]) -> Int16Array:
    """Float samples on the int16 scale -> int16: rounded to nearest, clipped to the int16 range."""
    y = np.rint(x)
    return np.maximum(np.minimum(y, 32767, out=y), -32768, out=y).astype(np.int16)


def resample(x: npt.ArrayLike, from_rate: int, to_rate: int) -> Int16Array:
    """Whole-signal polyphase resampling (for files): :class:`StreamingResampler` fed everything at once,
    then flushed, so it equals the streaming result sample for sample (and ``scipy.signal.resample_poly``)."""
    if from_rate == to_rate:
        return np.asarray(x, dtype=np.int16)
    r = StreamingResampler(from_rate, to_rate)
    return np.concatenate((r.process(x), r.flush()))


def _open_wav(path: Path) -> wave.Wave_read:
    """``wave.open`` with every way a file can fail to be a PCM WAV turned into one AudioError line."""
    try:
        return wave.open(str(path), "rb")  # the caller closes it
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


def read_wav(path: Path | str, sample_rate: int = 16000) -> Int16Array:
    """Read a PCM WAV (8/16/24/32-bit, any rate, any channel count) as int16 mono at ``sample_rate``."""
    path = Path(path)
    with _open_wav(path) as w:
        channels, width, rate, nframes = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        try:
            raw = w.readframes(nframes)
        except (EOFError, OSError) as exc:
            raise AudioError(f"{path}: truncated or unreadable WAV data ({exc or 'EOF'})") from None
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
    if width > 4:
        raise AudioError(f"{path}: {8 * width}-bit samples are not supported; expected 8, 16, 24 or 32-bit PCM")
    mono = pcm_to_mono(raw[:nframes * frame_bytes], width, channels)
    if rate == sample_rate:
        return to_int16(mono)
    return resample(mono, rate, sample_rate)


MAX_RATE = 384_000  # Hz: a header above this is not audio
MAX_RATIO_TERM = 2000  # largest up or down factor resampled (88.2 kHz -> 16 kHz is 80/441)
MAX_CHANNELS = 64


def pcm_to_mono(raw: bytes, width: int, channels: int) -> npt.NDArray[np.float64]:
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
    w = _open_wav(path)
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
                mono = pcm_to_mono(raw, width, channels)
                out = resampler.process(mono) if resampler is not None else to_int16(mono)
            pending = np.concatenate((pending, out)) if len(pending) else out
            while len(pending) >= chunk:
                yield pending[:chunk]
                pending = pending[chunk:]
        if resampler is not None:  # the last output samples wait for input after the end: zeros
            pending = np.concatenate((pending, resampler.flush()))
        while len(pending):
            yield pending[:chunk]
            pending = pending[chunk:]


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
        x = to_int16(np.asarray(x, dtype=np.float64))
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
    """Linear-phase polyphase FIR resampling of a stream, chunk by chunk, with numpy only.

    The result is ``scipy.signal.resample_poly(x, up, down)`` (Kaiser-windowed sinc, beta 5, 10 zero
    crossings of the slower rate on each side) without importing SciPy: output sample k is
    ``sum_i x[i] * h[k * down + half - i * up]`` with ``up/down = to_rate/from_rate`` in lowest terms and h
    centred on tap ``half``, so output k sits at exactly ``k / to_rate`` seconds (no delay to correct).
    Output k is emitted as soon as the input it needs has arrived (``half / up`` input samples of
    look-ahead: 0.6 ms at 48 or 44.1 kHz). Taps are fixed point (multiples of 2**-30) and inputs multiples
    of 2**-4 (exact for int16 and for the mean of 2, 4, 8 or 16 channels), so every product and partial sum is
    exact in float64: the result does not depend on the summation order, hence not on the chunking, the
    BLAS or the CPU. :meth:`flush` ends the stream: it zero-pads and emits the last samples,
    ``ceil(n * up / down)`` in all, as the batch version does.
    """

    _BLOCK = 4096  # outputs computed at once: bounds the temporary (block x taps) arrays

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise AudioError(f"sample rates must be > 0 Hz, got {from_rate} -> {to_rate}")
        self.from_rate, self.to_rate = from_rate, to_rate
        g = math.gcd(from_rate, to_rate)
        self.up, self.down = to_rate // g, from_rate // g
        if max(self.up, self.down) > MAX_RATIO_TERM:  # e.g. 383999 Hz: a 7.7 M-tap filter
            raise AudioError(f"cannot resample {from_rate} Hz to {to_rate} Hz: the ratio {self.up}/{self.down} "
                             "is too fine; use a standard rate (8, 11.025, 16, 22.05, 32, 44.1, 48, 96 kHz, ...)")
        self._half = 10 * max(self.up, self.down)  # taps each side of the centre
        self._phases = _polyphase_filter(self.up, self.down) if self.up != self.down else np.ones((1, 1))
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next sample is input sample 0 again."""
        taps = self._phases.shape[1]
        self._buf = np.zeros(taps - 1)  # input samples from index self._buf_start (zeros before sample 0)
        self._buf_start = 1 - taps
        self._n_in = 0
        self._n_out = 0

    def process(self, x: npt.ArrayLike) -> Int16Array:
        """Int16 (or float, on the int16 scale) samples at ``from_rate`` -> the int16 samples now complete."""
        return to_int16(self._process(x))

    def flush(self) -> Int16Array:
        """End of stream: the remaining output samples (the input zero-padded); then :meth:`reset`."""
        return to_int16(self._flush())

    def _process(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        if self.up == self.down:
            return np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.multiply(np.asarray(x).reshape(-1), _IN_SCALE, dtype=np.float64)  # exact sums: see above
        np.rint(y, out=y)
        np.minimum(y, 32767 * _IN_SCALE, out=y)
        np.maximum(y, -32768 * _IN_SCALE, out=y)
        y *= 1 / _IN_SCALE
        self._buf = np.concatenate((self._buf, y))
        self._n_in += y.size
        # output k is complete when its newest input (k * down + half) // up has arrived
        return self._emit((self._n_in * self.up - 1 - self._half) // self.down + 1)

    def _flush(self) -> npt.NDArray[np.float64]:
        if self.up == self.down:
            return np.zeros(0)
        total = -(-self._n_in * self.up // self.down)  # ceil(n_in * up / down)
        need = ((total - 1) * self.down + self._half) // self.up + 1 - self._n_in  # zeros after the last input
        self._buf = np.concatenate((self._buf, np.zeros(max(0, need))))
        out = self._emit(total)
        self.reset()
        return out

    def _emit(self, end: int) -> npt.NDArray[np.float64]:
        """Output samples self._n_out .. end-1 (all of whose inputs are in the buffer)."""
        if end <= self._n_out:
            return np.zeros(0)
        up, down, taps, buf = self.up, self.down, self._phases.shape[1], self._buf
        parts = []
        for first in range(self._n_out, end, self._BLOCK):
            n = min(end, first + self._BLOCK) - first
            if up == 1:  # one phase; output k reads `taps` inputs from k * down + half - (taps - 1) on
                offset = first * down + self._half - (taps - 1) - self._buf_start
                windows = np.ndarray((n, taps), np.float64, buf, 8 * offset, (8 * down, 8))  # a view, no copy
                parts.append(np.einsum("ij,j->i", windows, self._phases[0]))
            else:
                t = np.arange(first, first + n, dtype=np.int64) * down + self._half
                rows = np.ndarray((len(buf) - taps + 1, taps), np.float64, buf, 0, (8, 8))  # row i: from i on
                windows = rows[t // up - (taps - 1) - self._buf_start]
                parts.append(np.einsum("ij,ij->i", windows, self._phases[t % up]))
        self._n_out = end
        keep = (end * down + self._half) // up - (taps - 1)  # oldest input of the next output
        drop = min(keep - self._buf_start, len(buf))
        if drop > 0:
            self._buf = buf[drop:]
            self._buf_start += drop
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


@functools.lru_cache(maxsize=16)
def _polyphase_filter(up: int, down: int) -> npt.NDArray[np.float64]:
    """The anti-alias filter of ``resample_poly(x, up, down)`` (``firwin(2 * half + 1, 1 / max(up, down),
    window=('kaiser', 5.0)) * up``) split into ``up`` phases: row p holds taps p, p + up, p + 2 up, ...
    reversed, so that row ``t % up`` dotted with the inputs ending at ``t // up`` gives output ``t``.
    Designed once per rate pair; the array is read-only because it is shared."""
    half = 10 * max(up, down)
    cutoff = 1.0 / max(up, down)  # of the Nyquist frequency of the upsampled signal
    m = np.arange(2 * half + 1) - half
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(2 * half + 1, 5.0)
    h *= up / h.sum()
    taps = -(-len(h) // up)
    h = np.rint(np.concatenate((h, np.zeros(taps * up - len(h)))) * _TAP_SCALE) / _TAP_SCALE
    phases = np.ascontiguousarray(h.reshape(taps, up).T[:, ::-1])
    # |x| <= 2**15 in steps of 2**-4, taps in steps of 2**-30: a partial sum is an integer multiple of
    # 2**-34 below L1 * 2**49 (L1: the largest sum of |tap| of a phase, ~1.8), exact in float64 if L1 < 16
    if np.abs(phases).sum(axis=1).max() >= 16:
        raise AudioError(f"resampling filter for {down} -> {up} does not fit exact float64 sums")
    phases.flags.writeable = False
    return phases


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
