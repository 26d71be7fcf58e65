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


@pytest.mark.parametrize("rate", [44100, 48000, 22050])
def test_streaming_resampler_is_chunk_invariant(rate: int) -> None:
    x = np.rint(_tone(rate, 1.0, 300.0)).astype(np.int16)
    outputs = []
    for chunk in (1, 441, 1000, len(x)):
        r = audio.StreamingResampler(rate, 16000)
        outputs.append(np.concatenate([r.process(x[i:i + chunk]) for i in range(0, len(x), chunk)]))
    for other in outputs[1:]:
        np.testing.assert_array_equal(other, outputs[0])
    y = outputs[0]
    assert abs(len(y) - 16000) <= 1
    peak_hz = np.argmax(np.abs(np.fft.rfft(y[4000:16000].astype(float)))) * 16000 / 12000
    assert abs(peak_hz - 300) < 3


def test_zero_chunk_rejected() -> None:
    with pytest.raises(AudioError, match="chunk size"):
        list(audio.chunks(np.zeros(10, dtype=np.int16), 0))
