"""Long test streams and the streaming runtime's view of them.

``negative_stream`` builds >= N hours of held-out-voice speech (sentences, words) and noise,
with no keyword in it; ``positive_stream`` places held-out keyword utterances in noise at a given SNR,
remembering where each one is. ``stream_scores`` runs a model over a stream exactly as
``kws_edge.pipeline.Detector`` does (streaming MFCC, a model run every ``stride_frames`` new frames,
the same window and timestamps), and ``events`` replays ``kws_edge.decision.Decision`` on the scores
for any threshold cheaply, so a DET curve costs one model pass per stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kws_edge.decision import Decision, DecisionParams
from kws_edge.model import ModelRunner
from training import augment as aug

Int16 = npt.NDArray[np.int16]
CLEAN_SNR = 100.0  # "SNR" used for the clean condition


@dataclass
class Stream:
    samples: Int16
    spans: list[tuple[float, float, str]]  # (start s, end s, keyword label) of each positive utterance
    voices: list[str] = field(default_factory=list)  # optional, parallel to spans: voice id of each one

    @property
    def hours(self) -> float:
        return len(self.samples) / 16000 / 3600


def _segment(clip: npt.NDArray[np.float64], rng: np.random.Generator, bank: aug.NoiseBank, snr_db: float,
             gap: tuple[float, float], kinds: Sequence[str],
             level_db: float) -> tuple[npt.NDArray[np.float64], int]:
    """clip with silence gaps on both sides, noise over the whole segment; returns (segment, clip offset)."""
    pre = int(rng.uniform(*gap) * 16000)
    post = int(rng.uniform(*gap) * 16000)
    seg = np.zeros(pre + len(clip) + post)
    seg[pre:pre + len(clip)] = clip * (10 ** (level_db / 20) * 32767 / (np.max(np.abs(clip)) or 1.0))
    if snr_db < CLEAN_SNR:
        noise = bank.segment(kinds[int(rng.integers(len(kinds)))], len(seg), rng)
        active = seg[pre:pre + len(clip)]
        loud = active[np.abs(active) > 0.05 * (np.max(np.abs(active)) or 1.0)]
        p = float(np.mean(loud**2)) if loud.size else 1.0  # an all-zero clip: noise at a nominal level
        seg = seg + noise * np.sqrt(p / 10 ** (snr_db / 10))
    return seg + rng.standard_normal(len(seg)), pre


def _to_int16(x: npt.NDArray[np.float64]) -> Int16:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def positive_stream(clips: Sequence[tuple[Int16, str]], snr_db: float, bank: aug.NoiseBank,
                    kinds: Sequence[str], seed: int) -> Stream:
    """Each (samples, label) utterance between 1-1.5 s gaps, noise at ``snr_db`` (>= 100: clean)."""
    rng = np.random.default_rng(seed)
    parts, spans, t = [], [], 0
    for samples, label in clips:
        level = rng.uniform(-20.0, -3.0)
        seg, off = _segment(samples.astype(np.float64), rng, bank, snr_db, (1.0, 1.5), kinds, level)
        spans.append(((t + off) / 16000, (t + off + len(samples)) / 16000, label))
        parts.append(seg)
        t += len(seg)
    lead = rng.standard_normal(16000)  # one second of near-silence first, as a microphone would start
    return Stream(_to_int16(np.concatenate([lead, *parts])), [(s + 1.0, e + 1.0, k) for s, e, k in spans])


def negative_stream(clips: Sequence[Int16], hours: float, bank: aug.NoiseBank, kinds: Sequence[str],
                    seed: int) -> Stream:
    """>= ``hours`` of non-keyword speech in noise (random SNR 0-30 dB or clean) and noise-only stretches."""
    rng = np.random.default_rng(seed)
    target = int(hours * 3600 * 16000)
    parts: list[npt.NDArray[np.float64]] = []
    total, i = 0, 0
    order = rng.permutation(len(clips)) if clips else np.zeros(0, dtype=int)
    while total < target:
        if rng.random() < 0.08 or not len(order):  # 3-10 s of noise alone, loud or quiet
            n = int(rng.uniform(3, 10) * 16000)
            kind = kinds[int(rng.integers(len(kinds)))]
            seg = bank.segment(kind, n, rng) * 10 ** (rng.uniform(-50, -12) / 20) * 32767
        else:
            clip = clips[int(order[i % len(order)])].astype(np.float64)
            if i >= len(order):  # second pass over the clips: perturb them so they are not copies
                clip = aug.speed(clip, rng.uniform(0.9, 1.1))
            i += 1
            snr = CLEAN_SNR if rng.random() < 0.25 else rng.uniform(0, 30)
            seg, _ = _segment(clip, rng, bank, snr, (0.1, 1.2), kinds, rng.uniform(-30, -3))
        parts.append(seg)
        total += len(seg)
    return Stream(_to_int16(np.concatenate(parts)), [])


@dataclass
class Scores:
    times_ms: npt.NDArray[np.int64]  # now_ms of each model run (end of its window)
    posteriors: npt.NDArray[np.float64]  # (runs, labels), dequantized int8 outputs


def stream_scores(runner: ModelRunner, samples: Int16, chunk: int = 16000 * 60) -> Scores:
    """Run the model over a stream the way the runtime's Detector does (same frames, windows, times).

    Features are computed ``chunk`` samples at a time and only the frames the next window needs are
    kept, so memory stays flat however long the stream is.
    """
    m = runner.manifest
    p = m.features
    w, s = m.window_frames, m.stride_frames
    runner.reset()  # a streaming model starts each stream from its initial state
    mf = p.streamer()
    buf = np.zeros((0, p.numcep))
    first = 0  # index (in the whole stream) of buf[0]
    end = w  # frames seen when the model next runs
    ends: list[int] = []
    post: list[npt.NDArray[np.float64]] = []
    for i in range(0, len(samples), chunk):
        buf = np.concatenate([buf, mf.process(samples[i:i + chunk])])
        while end <= first + len(buf):
            post.append(runner.run(buf[end - w - first:end - first]))
            ends.append(end)
            end += s
        drop = max(0, end - w - first)
        buf, first = buf[drop:], first + drop
    e = np.asarray(ends, dtype=np.int64)
    keep = e >= m.warmup_frames  # as the Detector: a streaming model's outputs count after its warm-up
    times = ((e[keep] - 1) * p.hop + p.frame_len) * 1000 // p.sample_rate
    return Scores(times.astype(np.int64),
                  np.asarray(post, dtype=np.float64).reshape(len(ends), len(m.labels))[keep])


def smoothed(scores: Scores, index: int, smoothing_ms: int) -> npt.NDArray[np.float64]:
    """Decision's smoothed score for one label at every run (mean over the last ``smoothing_ms``)."""
    t, x = scores.times_ms, scores.posteriors[:, index]
    cs = np.concatenate([[0.0], np.cumsum(x)])
    lo = np.searchsorted(t, t - smoothing_ms, side="right")
    i = np.arange(len(t))
    lo = np.minimum(lo, i)
    return (cs[i + 1] - cs[lo]) / (i + 1 - lo)


def events(scores: Scores, labels: Sequence[str], keyword: str, threshold: float, smoothing_ms: int,
           min_hits: int, refractory_ms: int, smooth: npt.NDArray[np.float64] | None = None) -> list[int]:
    """Times (ms) of the events Decision would emit for ``keyword`` at ``threshold``."""
    sc = smoothed(scores, labels.index(keyword), smoothing_ms) if smooth is None else smooth
    out: list[int] = []
    hits, last, quiet = 0, -2, -(2**62)
    for i in np.flatnonzero(sc >= threshold):
        if i != last + 1:
            hits = 0
        last = int(i)
        now = int(scores.times_ms[i])
        if now < quiet:
            hits = 0
            continue
        hits += 1
        if hits >= min_hits:
            out.append(now)
            hits = 0
            quiet = now + refractory_ms
    return out


def decision_events(scores: Scores, labels: Sequence[str], params: DecisionParams) -> dict[str, list[int]]:
    """The same events from the runtime's own Decision class (a cross-check of :func:`events`)."""
    d = Decision(labels, params)
    out: dict[str, list[int]] = {k: [] for k in params.thresholds}
    for t, post in zip(scores.times_ms, scores.posteriors, strict=True):
        for e in d.update(post, int(t)):
            out[e.keyword].append(e.t_ms)
    return out


def hits_and_misses(spans: Sequence[tuple[float, float, str]], evs: Mapping[str, Sequence[int]],
                    tolerance_s: float = 0.8) -> tuple[int, int, int]:
    """(detected utterances, missed utterances, events outside any utterance of their keyword)."""
    detected = missed = 0
    used: set[tuple[str, int]] = set()
    for start, end, kw in spans:
        times = np.asarray(evs.get(kw, []), dtype=np.float64) / 1000
        ok = np.flatnonzero((times >= start) & (times <= end + tolerance_s))
        if len(ok):
            detected += 1
            used |= {(kw, int(j)) for j in ok}
        else:
            missed += 1
    extra = sum(1 for kw, ts in evs.items() for j in range(len(ts)) if (kw, j) not in used)
    return detected, missed, extra
