"""Decision logic on scripted posterior sequences."""

from __future__ import annotations

import pytest

from kws_edge.decision import Decision, DecisionParams, Event
from kws_edge.errors import ConfigError

LABELS = ["_silence_", "_unknown_", "yes", "no"]


def _post(yes: float = 0.0, no: float = 0.0) -> list[float]:
    return [1.0 - yes - no, 0.0, yes, no]


def _run(params: DecisionParams, seq: list[tuple[int, list[float]]]) -> list[Event]:
    return Decision(LABELS, params).run(seq)


def test_single_hit_fires_once_then_refractory() -> None:
    p = DecisionParams({"yes": 0.5}, smoothing_ms=0, min_hits=1, refractory_ms=1000)
    seq = [(t, _post(yes=0.9)) for t in range(0, 3000, 100)]
    events = _run(p, seq)
    assert [e.t_ms for e in events] == [0, 1000, 2000]
    assert all(e.keyword == "yes" and e.score == pytest.approx(0.9) for e in events)


def test_below_threshold_never_fires() -> None:
    p = DecisionParams({"yes": 0.5}, smoothing_ms=0)
    assert _run(p, [(t, _post(yes=0.49)) for t in range(0, 5000, 60)]) == []


def test_min_hits_needs_consecutive_runs() -> None:
    p = DecisionParams({"yes": 0.5}, smoothing_ms=0, min_hits=3, refractory_ms=0)
    high, low = _post(yes=0.9), _post(yes=0.1)
    seq = [(0, high), (60, high), (120, low), (180, high), (240, high), (300, high), (360, high)]
    assert [e.t_ms for e in _run(p, seq)] == [300]


def test_smoothing_averages_the_window() -> None:
    # Window 200 ms keeps samples with t > now - 200: at t=180 that is t=0,60,120,180.
    p = DecisionParams({"yes": 0.5}, smoothing_ms=200, min_hits=1, refractory_ms=0)
    seq = [(0, _post(yes=0.0)), (60, _post(yes=0.0)), (120, _post(yes=1.0)), (180, _post(yes=1.0))]
    events = _run(p, seq)
    assert [(e.t_ms, e.score) for e in events] == [(180, pytest.approx(0.5))]
    # One spike does not make it.
    spike = [(0, _post()), (60, _post()), (120, _post(yes=1.0)), (180, _post()), (240, _post())]
    assert _run(p, spike) == []


def test_two_keywords_are_independent() -> None:
    p = DecisionParams({"yes": 0.5, "no": 0.5}, smoothing_ms=0, refractory_ms=500)
    seq = [(0, _post(yes=0.6)), (100, _post(no=0.6)), (200, _post(yes=0.6)), (600, _post(yes=0.6))]
    assert [(e.keyword, e.t_ms) for e in _run(p, seq)] == [("yes", 0), ("no", 100), ("yes", 600)]


def test_only_configured_keywords_fire() -> None:
    p = DecisionParams({"no": 0.5}, smoothing_ms=0)
    assert _run(p, [(0, _post(yes=1.0))]) == []


def test_refractory_resets_hits() -> None:
    p = DecisionParams({"yes": 0.5}, smoothing_ms=0, min_hits=2, refractory_ms=300)
    seq = [(t, _post(yes=0.9)) for t in range(0, 1000, 100)]
    # fire at 100 (2nd hit); quiet until 400; hits restart at 400, fire at 500; quiet until 800; fire at 900.
    assert [e.t_ms for e in _run(p, seq)] == [100, 500, 900]


def test_run_resets_state() -> None:
    p = DecisionParams({"yes": 0.5}, smoothing_ms=0, refractory_ms=10000)
    d = Decision(LABELS, p)
    seq = [(0, _post(yes=0.9))]
    assert d.run(seq) == d.run(seq) != []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"thresholds": {"yes": 1.5}}, "threshold for 'yes'"), ({"thresholds": {}, "min_hits": 0}, "min_hits"),
     ({"thresholds": {}, "smoothing_ms": -1}, "smoothing_ms")],
)
def test_bad_params(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DecisionParams(**kwargs)


def test_unknown_keyword_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown keyword.*maybe"):
        Decision(LABELS, DecisionParams({"maybe": 0.5}))
