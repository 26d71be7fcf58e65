"""parallel_map keeps order across real spawned workers, and a worker stuck on one item (here inside C code
that holds the GIL and never returns to Python, as a hung ONNX or Praat call would) is stopped and reported
instead of hanging the whole run."""

from __future__ import annotations

import re
import time

import pytest

from training import sources


def double(x: int) -> int:
    return 2 * x


def stuck_on_seven(x: int) -> int:
    if x == 7:  # catastrophic backtracking: ~2**40 steps inside the C regex engine, GIL held throughout
        re.fullmatch(r"(a+)+b", "a" * 40)
    return x


def test_parallel_map_keeps_order_in_spawned_workers() -> None:
    assert sources.parallel_map(double, list(range(50)), 2, "t", chunksize=4, item_timeout_s=60.0) \
        == [2 * x for x in range(50)]


def test_a_stuck_worker_is_stopped_and_reported(capfd: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    with pytest.raises(sources.StuckWorker, match=r"stuck: a worker process died after \d+ of 40 items; its "
                                                  r"error is above \(a worker stuck over 3 s on one item"):
        sources.parallel_map(stuck_on_seven, list(range(40)), 2, "stuck", chunksize=2, item_timeout_s=3.0)
    assert time.monotonic() - t0 < 60.0
    err = capfd.readouterr().err
    assert "Timeout (0:00:03)!" in err and "stuck_on_seven" in err  # the stuck worker's stack, for the user
