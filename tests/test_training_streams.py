"""The evaluator sees exactly what the runtime sees: same scores, same decisions, same detections."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("tensorflow", reason="training extra (tensorflow-cpu) not installed")
pytest.importorskip("tflite_micro", reason="tflite-micro not installed")

from kws_edge.decision import DecisionParams
from kws_edge.model import load_model
from kws_edge.pipeline import Detector
from training import augment as aug
from training import streams as st
from training.testing import make_tiny_model


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory):
    return load_model(make_tiny_model(tmp_path_factory.mktemp("m"), seed=7))


def _bank() -> aug.NoiseBank:
    rng = np.random.default_rng(0)
    return aug.NoiseBank([rng.standard_normal(32000)], [])


def _utterances(n: int, seed: int) -> list[tuple[np.ndarray, str]]:
    rng = np.random.default_rng(seed)
    t = np.arange(9000) / 16000
    out = []
    for i in range(n):
        x = np.sin(2 * np.pi * rng.uniform(200, 2000) * t) * np.hanning(len(t)) * 8000
        out.append((x.astype(np.int16), "yes" if i % 2 else "no"))
    return out


def test_vectorised_events_equal_runtime_decision() -> None:
    rng = np.random.default_rng(3)
    times = np.arange(200, 200 + 60 * 3000, 60, dtype=np.int64)
    post = np.round(rng.dirichlet(np.ones(4) * 0.3, size=len(times)) * 256) / 256
    scores = st.Scores(times, post)
    labels = ["_silence_", "_unknown_", "yes", "no"]
    for thr, smooth, hits, refr in ((0.5, 200, 1, 1000), (0.3, 0, 2, 500), (0.7, 120, 1, 1500)):
        params = DecisionParams({"yes": thr, "no": thr}, smooth, hits, refr)
        ref = st.decision_events(scores, labels, params)
        for kw in ("yes", "no"):
            assert st.events(scores, labels, kw, thr, smooth, hits, refr) == ref[kw]
        assert sum(len(v) for v in ref.values()) > 0


def test_stream_scores_reproduce_detector(runner) -> None:
    stream = st.positive_stream(_utterances(12, 1), 10.0, _bank(), ["white"], seed=2)
    scores = st.stream_scores(runner, stream.samples)
    labels = list(runner.manifest.labels)
    thr = float(np.quantile(st.smoothed(scores, labels.index("yes"), 200), 0.97))
    d = runner.manifest.decision
    params = DecisionParams({"yes": thr, "no": 1.0}, d.smoothing_ms, d.min_hits, d.refractory_ms)
    ours = st.decision_events(scores, labels, params)
    det = Detector([runner], {"yes": thr, "no": 1.0})
    got: list[int] = []
    x = stream.samples
    for i in range(0, len(x), 1234):
        got += [round(e.t * 1000) for e in det.process(x[i:i + 1234]) if e.keyword == "yes"]
    assert got == ours["yes"]
    assert len(got) > 0


def test_streams_have_the_requested_length_and_spans() -> None:
    bank = _bank()
    neg = st.negative_stream([u for u, _ in _utterances(5, 4)], 0.01, bank, ["pink", "white"], seed=1)
    assert neg.hours >= 0.01 and neg.spans == []
    pos = st.positive_stream(_utterances(4, 5), 100.0, bank, ["pink"], seed=1)
    assert len(pos.spans) == 4
    for start, end, _ in pos.spans:
        seg = pos.samples[int(start * 16000):int(end * 16000)]
        assert np.abs(seg).max() > 1000  # the utterance is where the span says
    assert st.hits_and_misses(pos.spans, {"yes": [int(pos.spans[1][1] * 1000)]}) == (1, 3, 0)


def test_stream_scores_do_not_depend_on_the_feature_chunk(runner) -> None:
    stream = st.positive_stream(_utterances(6, 2), 20.0, _bank(), ["pink"], seed=4)
    whole = st.stream_scores(runner, stream.samples, chunk=len(stream.samples))
    for chunk in (1000, 16001):
        part = st.stream_scores(runner, stream.samples, chunk=chunk)
        assert np.array_equal(part.times_ms, whole.times_ms)
        assert np.array_equal(part.posteriors, whole.posteriors)
    assert len(whole.times_ms) > 100
