"""WAV reading and conversion, stdin framing, streaming resampling, and bad-input messages."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from kws_edge import audio
from kws_edge.errors import AudioError


def _tone(rate: int, seconds: float = 0.5, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return 8000 * np.sin(2 * np.pi * freq * t)


def _write(path: Path, data: np.ndarray, rate: int, width: int, channels: int = 1) -> Path:
    frames = np.repeat(data[:, None], channels, axis=1).reshape(-1)
    if width == 1:
        raw = (np.clip(np.rint(frames / 256), -128, 127) + 128).astype(np.uint8).tobytes()
    elif width == 2:
        raw = np.rint(frames).astype("<i2").tobytes()
    elif width == 3:
        v = np.rint(frames * 256).astype(np.int32)
        raw = b"".join(struct.pack("<i", int(s))[:3] for s in v)
    else:
        raw = (np.rint(frames).astype(np.int64) << 16).astype("<i4").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return path


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2])
def test_reads_pcm_widths_and_channels(tmp_path: Path, width: int, channels: int) -> None:
    src = _tone(16000)
    got = audio.read_wav(_write(tmp_path / "a.wav", src, 16000, width, channels), 16000)
    assert got.dtype == np.int16 and len(got) == len(src)
    tolerance = 200 if width == 1 else 1
    assert np.abs(got.astype(float) - src).max() <= tolerance


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resamples_to_16k(tmp_path: Path, rate: int) -> None:
    got = audio.read_wav(_write(tmp_path / "a.wav", _tone(rate, 1.0), rate, 2), 16000)
    assert abs(len(got) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(got[2000:14000].astype(float)))
    peak_hz = np.argmax(spectrum) * 16000 / 12000
    assert abs(peak_hz - 440) < 3


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="nope.wav: no such file"):
        audio.read_wav(tmp_path / "nope.wav")


def test_not_a_wav(tmp_path: Path) -> None:
    p = tmp_path / "text.wav"
    p.write_text("hello, I am not audio")
    with pytest.raises(AudioError, match="text.wav: not a readable WAV"):
        audio.read_wav(p)


def test_truncated_data(tmp_path: Path) -> None:
    p = _write(tmp_path / "t.wav", _tone(16000), 16000, 2)
    p.write_bytes(p.read_bytes()[:-3000])
    with pytest.raises(AudioError, match="t.wav: truncated"):
        audio.read_wav(p)


def test_truncated_header(tmp_path: Path) -> None:
    p = _write(tmp_path / "h.wav", _tone(16000), 16000, 2)
    p.write_bytes(p.read_bytes()[:20])
    with pytest.raises(AudioError, match="h.wav"):
        audio.read_wav(p)


def test_float_wav_is_not_pcm(tmp_path: Path) -> None:
    data = np.zeros(100, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
    riff = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    p = tmp_path / "f.wav"
    p.write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)
    with pytest.raises(AudioError, match="f.wav: not PCM"):
        audio.read_wav(p)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="directory"):
        audio.read_wav(tmp_path)


def test_write_read_round_trip(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(-30000, 30000, 5000).astype(np.int16)
    audio.write_wav(tmp_path / "r.wav", x)
    np.testing.assert_array_equal(audio.read_wav(tmp_path / "r.wav"), x)


@pytest.mark.parametrize("chunk", [1, 100, 1280, 7000])
def test_stdin_chunks_reassemble(chunk: int) -> None:
    x = np.random.default_rng(1).integers(-30000, 30000, 5001).astype(np.int16)
    raw = x.astype("<i2").tobytes() + b"\x01"  # a trailing odd byte is ignored
    parts = list(audio.stdin_chunks(io.BytesIO(raw), chunk))
    assert all(len(p) == chunk for p in parts[:-1])
    np.testing.assert_array_equal(np.concatenate(parts), x)


RATES = [44100, 48000, 22050, 32000, 11025, 8000]


def _stream(r: audio.StreamingResampler, x: np.ndarray, chunk: int) -> np.ndarray:
    return np.concatenate([r.process(x[i:i + chunk]) for i in range(0, len(x), chunk)] + [r.flush()])


@pytest.mark.parametrize("rate", RATES)
def test_streaming_resampler_is_chunk_invariant_and_equals_batch(rate: int) -> None:
    x = np.random.default_rng(rate).integers(-30000, 30000, rate // 4 + 17).astype(np.int16)
    r = audio.StreamingResampler(rate, 16000)
    batch = audio.resample(x, rate, 16000)
    assert len(batch) == -(-len(x) * 16000 // rate)  # ceil(n * up / down), as resample_poly
    for chunk in (1, 2, 7, 160, 441, 1000, 4801, len(x)):  # flush() resets: the same object each time
        np.testing.assert_array_equal(_stream(r, x, chunk), batch, err_msg=f"chunk {chunk}")
    mono = x.astype(np.float64) + np.random.default_rng(1).choice([0.0, 0.5], len(x))  # a stereo mean
    r.process(x[:999])
    r.reset()
    np.testing.assert_array_equal(_stream(r, mono, 333), _stream(r, mono, len(x)))


@pytest.mark.parametrize("rate", RATES)
def test_streaming_resampler_matches_scipy_resample_poly(rate: int) -> None:
    from math import gcd

    from scipy.signal import resample_poly

    x = np.random.default_rng(rate).integers(-30000, 30000, rate // 2).astype(np.int16)
    ref = resample_poly(x.astype(np.float64), 16000 // gcd(rate, 16000), rate // gcd(rate, 16000))
    r = audio.StreamingResampler(rate, 16000)
    y = np.concatenate((r._process(x[:5000]), r._process(x[5000:]), r._flush()))  # before rounding
    assert len(y) == len(ref)
    # measured max |y - ref|: 1.1e-4 (44.1 kHz), 8.1e-5 (48 kHz), 6e-5 (22.05/32 kHz) int16 steps: the
    # taps are rounded to 2**-30 so that the sums are exact; the same filter otherwise
    assert np.abs(y - ref).max() < 5e-4
    rounded = np.clip(np.rint(ref), -32768, 32767)
    assert np.abs(audio.resample(x, rate, 16000) - rounded).max() <= 1  # a rounding tie at most


def test_streaming_resampler_keeps_time() -> None:
    """Linear phase and no delay: a click at 0.5 s of 48 / 44.1 kHz comes out at sample 8000 of 16 kHz."""
    for rate in (48000, 44100):
        x = np.zeros(rate, dtype=np.int16)
        x[rate // 2] = 30000
        y = audio.resample(x, rate, 16000).astype(float)
        assert np.argmax(y) == 8000
        assert y[7990:8000] == pytest.approx(y[8001:8011][::-1], abs=2)  # symmetric around the click


def test_streaming_resampler_tone_and_lookahead() -> None:
    x = np.rint(_tone(44100, 1.0, 300.0)).astype(np.int16)
    r = audio.StreamingResampler(44100, 16000)
    head = r.process(x[:4410])  # 100 ms in: all but the last 0.6 ms (half the filter) is out already
    assert 1590 <= len(head) < 1600
    y = np.concatenate((head, r.process(x[4410:]), r.flush()))
    assert len(y) == 16000
    peak_hz = np.argmax(np.abs(np.fft.rfft(y[4000:16000].astype(float)))) * 16000 / 12000
    assert abs(peak_hz - 300) < 3
    assert len(r.flush()) == 0  # flushed and reset: nothing more


def test_wav_chunks_emits_the_resampled_tail(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    data = rng.integers(-20000, 20000, 44100 + 77).astype(float)
    path = _write(tmp_path / "s.wav", data, 44100, 2, 2)
    whole = audio.read_wav(path)
    for chunk in (320, 1280, 100000):
        parts = list(audio.wav_chunks(path, 16000, chunk))
        assert all(len(p) == chunk for p in parts[:-1])
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_resampling_does_not_import_scipy(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = _write(tmp_path / "s.wav", _tone(48000), 48000, 2, 2)
    code = ("import sys; from kws_edge import audio; "
            f"list(audio.wav_chunks({str(path)!r})); audio.read_wav({str(path)!r}); "
            "print('scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_zero_chunk_rejected() -> None:
    with pytest.raises(AudioError, match="chunk size"):
        list(audio.chunks(np.zeros(10, dtype=np.int16), 0))
