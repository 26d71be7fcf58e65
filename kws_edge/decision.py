"""Decision: from a stream of posteriors to keyword events.

Per keyword: the posterior is averaged over the last ``smoothing_ms`` (including the current one), the
smoothed score must reach ``threshold`` on ``min_hits`` consecutive model runs, and after an event the
keyword stays quiet for ``refractory_ms``. The current time is passed in (``now_ms``), so the same event
sequence can be replayed here and in the firmware's ``recognize_commands`` and compared.

The algorithm, step by step, for each keyword k at time now_ms with posterior p (the C++ port follows
these steps in this order):
  1. append (now_ms, p) to k's history; drop entries with time <= now_ms - smoothing_ms
     (always keep the newest one);
  2. score = mean of the history's posteriors;
  3. if now_ms < k's quiet_until_ms: hits = 0, no event;
  4. else if score >= threshold: hits += 1, and if hits >= min_hits: emit event(k, score, now_ms),
     hits = 0, quiet_until_ms = now_ms + refractory_ms;
  5. else: hits = 0.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kws_edge.errors import ConfigError


@dataclass(frozen=True)
class DecisionParams:
    thresholds: Mapping[str, float]  # keyword -> smoothed posterior needed, in [0, 1]
    smoothing_ms: int = 200
    min_hits: int = 1
    refractory_ms: int = 1500

    def __post_init__(self) -> None:
        for kw, value in self.thresholds.items():
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"threshold for '{kw}': expected a number in [0, 1], got {value}")
        if self.smoothing_ms < 0 or self.refractory_ms < 0:
            raise ConfigError("smoothing_ms and refractory_ms must be >= 0")
        if self.min_hits < 1:
            raise ConfigError(f"min_hits must be >= 1, got {self.min_hits}")


@dataclass(frozen=True)
class Event:
    keyword: str
    score: float
    t_ms: int


class _KeywordState:
    __slots__ = ("history", "hits", "quiet_until_ms")

    def __init__(self) -> None:
        self.history: deque[tuple[int, float]] = deque()
        self.hits = 0
        self.quiet_until_ms = -(2**62)


class Decision:
    """Smoothing + threshold + consecutive hits + refractory for several keywords of one model."""

    def __init__(self, labels: Sequence[str], params: DecisionParams) -> None:
        unknown = [k for k in params.thresholds if k not in labels]
        if unknown:
            raise ConfigError(f"unknown keyword(s) {', '.join(unknown)}; this model knows {', '.join(labels)}")
        self.params = params
        self._slots = [(labels.index(kw), kw, thr) for kw, thr in params.thresholds.items()]
        self.reset()

    def reset(self) -> None:
        self._state = {kw: _KeywordState() for _, kw, _ in self._slots}

    def update(self, posteriors: Sequence[float] | Any, now_ms: int) -> list[Event]:
        """Feed one model output (a posterior per label) observed at ``now_ms``; return events."""
        events: list[Event] = []
        horizon = now_ms - self.params.smoothing_ms
        for index, kw, threshold in self._slots:
            st = self._state[kw]
            p = float(posteriors[index])
            st.history.append((now_ms, p))
            while len(st.history) > 1 and st.history[0][0] <= horizon:
                st.history.popleft()
            total = 0.0
            for _, q in st.history:  # summed oldest first, as the C++ port does: no running-sum drift
                total += q
            score = total / len(st.history)
            if now_ms < st.quiet_until_ms:
                st.hits = 0
            elif score >= threshold:
                st.hits += 1
                if st.hits >= self.params.min_hits:
                    events.append(Event(kw, score, now_ms))
                    st.hits = 0
                    st.quiet_until_ms = now_ms + self.params.refractory_ms
            else:
                st.hits = 0
        return events

    def run(self, sequence: Iterable[tuple[int, Sequence[float]]]) -> list[Event]:
        """Replay a whole (now_ms, posteriors) sequence from a fresh state."""
        self.reset()
        return [e for now_ms, post in sequence for e in self.update(post, now_ms)]
