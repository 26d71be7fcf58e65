"""Bench scoring: hand-made detection lists against labels, and the decision replay against kws_edge's own."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import scoring
from kws_edge.decision import Decision, DecisionParams

INSTANCES = [(10.0, 11.0), (15.0, 15.8), (20.0, 20.5)]


def test_detection_on_window_edges_is_accepted() -> None:
    m = scoring.match([10.0, 15.8 + 1.0, 20.25], INSTANCES)
    assert m.hits == [True, True, True]
    assert m.false_accepts == 0


def test_detection_just_outside_the_window_is_a_false_accept_and_a_miss() -> None:
    m = scoring.match([9.999, 11.0 + 1.0 + 0.001], INSTANCES[:1])
    assert m.hits == [False]
    assert m.false_accepts == 2
    assert m.false_times == [9.999, 12.001]


def test_second_detection_for_one_instance_is_a_false_accept() -> None:
    m = scoring.match([10.5, 11.2], INSTANCES)
    assert m.hits == [True, False, False]
    assert m.false_accepts == 1
    assert m.false_times == [11.2]


def test_detection_before_the_first_label_is_a_false_accept() -> None:
    m = scoring.match([0.3, 10.1], INSTANCES)
    assert m.hits == [True, False, False]
    assert m.false_times == [0.3]


def test_unsorted_detections_match_like_sorted_ones() -> None:
    a = scoring.match([20.1, 10.2, 3.0, 15.1], INSTANCES)
    b = scoring.match([3.0, 10.2, 15.1, 20.1], INSTANCES)
    assert a == b
    assert a.hits == [True, True, True] and a.false_accepts == 1


def test_score_streams_frr_per_snr_and_false_accepts_per_hour() -> None:
    def stream(name: str, snr: int | None, starts: list[float]) -> SimpleNamespace:
        inst = [{"start": s, "end": s + 0.8, "rt60_s": 0.5 if i == 0 else None} for i, s in enumerate(starts)]
        return SimpleNamespace(name=name, snr_db=snr, noise=None if snr is None else "pink",
                               duration_s=1800.0, instances=inst)

    streams = [stream("clean", None, [5.0, 10.0]), stream("snr10", 10, [5.0, 10.0])]
    dets = {"clean": [5.5, 10.5, 100.0], "snr10": [5.2]}
    r = scoring.score_streams(streams, dets)
    assert r["instances"] == 4 and r["misses"] == 1
    assert r["frr"] == pytest.approx(0.25)
    assert r["frr_by_snr"] == {"clean": 0.0, "10 dB": 0.5}
    assert r["frr_by_noise"] == {"none": 0.0, "pink": 0.5}
    assert r["frr_by_reverb"] == {"reverb": 0.0, "dry": 0.5}
    assert r["false_accepts"] == 1
    assert r["fa_per_h"] == pytest.approx(1.0)


def test_operating_point_takes_lowest_frr_within_the_fa_budget() -> None:
    points = [{"threshold": 0.1, "frr": 0.0, "fa_per_h": 3.0},
              {"threshold": 0.5, "frr": 0.1, "fa_per_h": 0.5},
              {"threshold": 0.6, "frr": 0.1, "fa_per_h": 0.0},
              {"threshold": 0.9, "frr": 0.4, "fa_per_h": 0.0}]
    assert scoring.operating_point(points)["threshold"] == 0.6
    assert scoring.operating_point(points[:1]) is None


def test_events_refractory_and_strictness() -> None:
    t = np.arange(0, 3000, 100, dtype=np.int64)
    s = np.zeros(len(t))
    s[[5, 6, 7, 20, 25]] = 0.5
    assert scoring.events(t, s, 0.5, 1000) == [0.5, 2.0]  # 2.5 falls in the quiet after 2.0
    assert scoring.events(t, s, 0.5, 1600) == [0.5, 2.5]
    assert scoring.events(t, s, 0.5, 1000, strict=True) == []
    assert scoring.events(t, s, 0.5, 0, min_hits=2) == [0.6]
    assert scoring.events(t, s, 0.5, 0, min_hits=3) == [0.7]


@pytest.mark.parametrize("seed,smoothing_ms,min_hits,refractory_ms", [
    (0, 200, 1, 1500), (1, 0, 2, 1000), (2, 300, 3, 0), (3, 120, 2, 500)])
def test_replay_equals_kws_edge_decision(seed: int, smoothing_ms: int, min_hits: int, refractory_ms: int) -> None:
    """The bench's vectorised replay fires exactly when kws_edge.decision.Decision fires."""
    rng = np.random.default_rng(seed)
    n = 3000
    t_ms = np.cumsum(np.full(n, 60)).astype(np.int64)
    bursts = (rng.random(n) < 0.05).astype(float)
    post = np.clip(np.convolve(bursts, np.ones(8), mode="same") * rng.integers(0, 256, n) / 256.0, 0, 1)
    post = np.round(post * 256) / 256  # int8 outputs dequantize to multiples of 1/256
    for threshold in (0.25, 0.5, 0.75):
        d = Decision(["_silence_", "kw"], DecisionParams({"kw": threshold}, smoothing_ms, min_hits,
                                                         refractory_ms))
        want = [e.t_ms / 1000.0 for e in d.run((int(tm), [1 - p, p]) for tm, p in zip(t_ms, post, strict=True))]
        got = scoring.events(t_ms, scoring.smooth(t_ms, post, smoothing_ms), threshold, refractory_ms, min_hits)
        assert got == want
        assert len(want) > 3  # the case is not trivial


def test_sweep_grid_contains_the_default_and_is_sorted() -> None:
    grid = scoring.sweep_thresholds(0.97)
    assert 0.97 in grid and grid == sorted(grid)
    assert grid[0] > 0 and grid[-1] < 1
