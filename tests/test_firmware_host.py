"""The firmware's portable C++ built with g++ on this machine, against golden vectors from the Pi pipeline.

- MFCC: espeak-ng speech, exact digital silence, noise and a clipped tone, fed in several chunk sizes;
  every frame within the stated tolerance of python_speech_features (via kws_edge.features), and the
  int8 model inputs identical for >= 99.9 % of values (in practice all of them).
- Decision: seeded random posterior sequences give the same events (keyword, time, and bit-identical
  score) as kws_edge.decision.Decision.
- Protocol: the lines the C++ writes parse in kws_edge.protocol with the values that were formatted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from kws_edge import protocol
from kws_edge.features import FeatureParams
from tests.conftest import tts
from tests.test_firmware_support import (
    MFCC_ATOL,
    MFCC_RTOL,
    FeatureCase,
    build,
    cpp_decisions,
    cpp_features,
    python_features,
    random_decision_case,
)


def golden_signal(work: Path) -> np.ndarray:
    """About 5 s: two spoken phrases, exact zeros, low noise, a loud clipped tone (seeded)."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed to make the test speech")
    rng = np.random.default_rng(7)
    a = tts("hey jarvis", work / "a.wav")
    b = tts("turn the lights on", work / "b.wav", voice="en+f3", rate=170)
    noise = (rng.standard_normal(6000) * 40).astype(np.int16)
    t = np.arange(8000) / 16000
    tone = np.clip(40000 * np.sin(2 * np.pi * 440 * t), -32768, 32767).astype(np.int16)
    zeros = np.zeros(9000, dtype=np.int16)
    return np.concatenate([zeros[:3000], a, zeros, b, noise, tone, zeros[:2000], a]).astype(np.int16)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("host", tmp_path_factory.mktemp("host_build"))


@pytest.fixture(scope="module")
def signal(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return golden_signal(tmp_path_factory.mktemp("speech"))


CASES = {
    "default": FeatureCase(FeatureParams(), 0.3509182631969452, 22),
    "fine_scale": FeatureCase(FeatureParams(), 0.0625, -10),
    "hann_30ms": FeatureCase(FeatureParams(winlen=0.03, winstep=0.01, nfft=512, numcep=13, nfilt=26,
                                           window="hann", append_energy=False, highfreq=8000.0),
                             0.25, 3, window_frames=98, stride_frames=2),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_mfcc_matches_python_within_tolerance(host: Path, signal: np.ndarray, tmp_path: Path, name: str) -> None:
    case = CASES[name]
    ref_frames, ref_windows = python_features(signal, case)
    frames, windows, stats = cpp_features(host, signal, case, tmp_path, chunk=777, tag=name)
    assert frames.shape == ref_frames.shape
    assert stats["frames"] == len(ref_frames)
    err = np.abs(frames - ref_frames)
    assert np.all(err <= MFCC_ATOL + MFCC_RTOL * np.abs(ref_frames)), f"max MFCC error {err.max():.3g}"
    print(f"\n{name}: {len(frames)} frames, max |C++ - Python| MFCC error {err.max():.3g}")
    assert [t for t, _ in windows] == [t for t, _ in ref_windows]
    got = np.stack([w for _, w in windows])
    ref = np.stack([w for _, w in ref_windows])
    equal = float(np.mean(got == ref))
    print(f"{name}: {got.size} int8 model input values, {100 * equal:.3f} % identical")
    assert equal >= 0.999
    assert np.all(np.abs(got.astype(int) - ref) <= 1)


def test_mfcc_is_independent_of_chunk_size(host: Path, signal: np.ndarray, tmp_path: Path) -> None:
    case = CASES["default"]
    first = cpp_features(host, signal, case, tmp_path, chunk=1, tag="c1")
    for chunk in (160, 4096):
        other = cpp_features(host, signal, case, tmp_path, chunk=chunk, tag=f"c{chunk}")
        assert np.array_equal(first[0], other[0])
        assert all(a[0] == b[0] and np.array_equal(a[1], b[1]) for a, b in zip(first[1], other[1], strict=True))


def test_bad_feature_config_is_refused(host: Path, tmp_path: Path) -> None:
    case = FeatureCase(FeatureParams(nfft=1024), 0.5, 0)
    text = case.config_text(320).replace("nfft 1024", "nfft 1000")  # not a power of two
    (tmp_path / "bad.cfg").write_text(text)
    np.zeros(100, "<i2").tofile(tmp_path / "x.s16")
    import subprocess

    result = subprocess.run([str(host), "mfcc", "bad.cfg", "x.s16", "f", "w"], cwd=tmp_path)
    assert result.returncode == 3


@pytest.mark.parametrize("seed", range(12))
def test_decision_events_identical_to_python(host: Path, tmp_path: Path, seed: int) -> None:
    case = random_decision_case(seed)
    expected = case.expected()
    got = cpp_decisions(host, case, tmp_path, tag=f"d{seed}")
    assert got == expected  # keyword, t_ms and the score's exact float value
    if seed == 0:
        print(f"\nseed 0: {len(expected)} events from {len(case.sequence)} posteriors")


def test_decision_cases_produce_events() -> None:
    """The random cases are not trivially empty: together they fire many events."""
    total = sum(len(random_decision_case(s).expected()) for s in range(12))
    assert total > 50


def test_cpp_protocol_lines_parse_in_python(host: Path, tmp_path: Path) -> None:
    import subprocess

    subprocess.run([str(host), "proto", "lines.txt"], cwd=tmp_path, check=True)
    raw = (tmp_path / "lines.txt").read_bytes()
    assert raw.count(b"\r\n") == 13 and b"two words" not in raw
    reader = protocol.LineReader()
    messages = reader.feed(raw)
    assert reader.stats.corrupt == 0 and reader.stats.unknown == 0
    assert messages[0] == protocol.Hello("0.1.0", "a994690c", "tiny")
    scores = [m.score for m in messages if isinstance(m, protocol.Detection)]
    assert scores == [0.0, 0.5, 0.7346, 1.0, 1.0, 1.0, 0.9062, 0.0312, 0.9688, 0.1562]
    assert [m.ms for m in messages if isinstance(m, protocol.Detection)] == [1000 * i + 7 for i in range(10)]
    assert messages[-2] == protocol.Heartbeat(4294967295, 12, 3)
    assert messages[-1] == protocol.Error("arena_too_small")
    # Same bytes as the Python formatter for the same values.
    assert raw.splitlines(keepends=True)[-2] == protocol.format_heartbeat(4294967295, 12, 3)
    values = (0.0, 0.5, 0.73456, 0.99995, 1.0, 1.7, 0.90625, 0.03125, 0.96875, 0.15625)  # kws_host_main.cpp
    assert raw.splitlines(keepends=True)[1:11] == [protocol.format_detection("hey_jarvis", v, 1000 * i + 7)
                                                   for i, v in enumerate(values)]
