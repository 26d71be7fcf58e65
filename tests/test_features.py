"""Streaming MFCC equals python_speech_features over the whole signal, whatever the chunking."""

from __future__ import annotations

import numpy as np
import pytest
import python_speech_features as psf

from kws_edge.features import FeatureParams, StreamingMfcc, mfcc

PARAMS = [
    FeatureParams(),
    # A window that does not tile 1 s exactly: the library zero-pads a last partial frame.
    FeatureParams(winlen=0.03, winstep=0.01, numcep=13, nfilt=26, nfft=512, window="rectangular",
                  lowfreq=0.0, highfreq=8000.0, append_energy=False),
]


def _signal(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    x = 4000 * np.sin(2 * np.pi * 440 * t) + 1500 * rng.standard_normal(n)
    return np.clip(x, -32768, 32767).astype(np.int16)


def _stream(params: FeatureParams, x: np.ndarray, chunk: int) -> np.ndarray:
    s = StreamingMfcc(params)
    parts = [s.process(x[i:i + chunk]) for i in range(0, len(x), chunk)]
    parts.append(s.flush())
    return np.concatenate(parts)


@pytest.mark.parametrize("params", PARAMS, ids=["default", "padded"])
@pytest.mark.parametrize("n", [16000, 16123, 200, 32001])
@pytest.mark.parametrize("chunk", [1, 7, 160, 320, 1280, 4096, 100000])
def test_streaming_equals_library_batch(params: FeatureParams, n: int, chunk: int) -> None:
    x = _signal(n, seed=n)
    ref = psf.mfcc(x.astype(np.float64), **params.psf_kwargs())
    got = _stream(params, x, chunk)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_one_second_gives_49_frames_of_10() -> None:
    assert mfcc(_signal(16000, 1), FeatureParams()).shape == (49, 10)
    assert FeatureParams().frames_for(16000) == 49
    assert FeatureParams(winlen=0.03).frames_for(16000) == 50


def test_frames_are_emitted_as_soon_as_complete() -> None:
    p = FeatureParams()
    s = StreamingMfcc(p)
    assert len(s.process(np.zeros(p.frame_len - 1, dtype=np.int16))) == 0
    assert len(s.process(np.zeros(1, dtype=np.int16))) == 1
    assert len(s.process(np.zeros(p.hop - 1, dtype=np.int16))) == 0
    assert len(s.process(np.zeros(1, dtype=np.int16))) == 1


def test_digital_silence_is_finite() -> None:
    out = mfcc(np.zeros(16000, dtype=np.int16), FeatureParams())
    assert np.isfinite(out).all()


def test_reset_forgets_history() -> None:
    p = FeatureParams()
    x = _signal(5000, 3)
    s = StreamingMfcc(p)
    first = s.process(x)
    s.process(_signal(777, 4))
    s.reset()
    np.testing.assert_array_equal(s.process(x), first)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"winstep": 0.05}, "winstep"), ({"nfft": 256}, "nfft"), ({"numcep": 50}, "numcep"),
     ({"highfreq": 9000.0}, "highfreq"), ({"window": "kaiser"}, "window")],
)
def test_bad_parameters_are_named(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeatureParams(**change)


def test_from_dict_round_trip_and_errors() -> None:
    p = FeatureParams(numcep=13)
    assert FeatureParams.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="unknown key"):
        FeatureParams.from_dict({**p.to_dict(), "hop": 3})
    with pytest.raises(ValueError, match="missing"):
        FeatureParams.from_dict({k: v for k, v in p.to_dict().items() if k != "nfft"})
    with pytest.raises(ValueError, match="numcep: expected int"):
        FeatureParams.from_dict({**p.to_dict(), "numcep": "10"})


NARROWBAND = FeatureParams(nfilt=64, nfft=2048, lowfreq=60.0, highfreq=3800.0, sample_rate=8000, winlen=0.064,
                           winstep=0.032)


@pytest.mark.parametrize("params", [*PARAMS, NARROWBAND])
def test_filterbank_equals_library(params: FeatureParams) -> None:
    from python_speech_features.base import get_filterbanks

    from kws_edge.features import mel_filterbank

    ref = get_filterbanks(params.nfilt, params.nfft, params.sample_rate, params.lowfreq, params.highfreq)
    np.testing.assert_array_equal(mel_filterbank(params), ref)


def test_runtime_does_not_import_scipy() -> None:
    import subprocess
    import sys

    code = ("import sys, numpy as np; from kws_edge.features import FeatureParams, mfcc; "
            "mfcc(np.zeros(16000, np.int16), FeatureParams()); print('scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_runtime_commands_run_numpy_on_one_blas_thread() -> None:
    """A 1 s MFCC step is a small matrix product: spread over busy cores it cost 2.4x the CPU."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from kws_edge import cli

    with threadpool_limits(limits=None):  # restore whatever the suite had afterwards
        cli._one_blas_thread()
        blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
        assert blas and all(p["num_threads"] == 1 for p in blas)
    assert {"detect", "run", "listen", "wyoming", "bridge"} <= cli._RUNTIME_COMMANDS
