"""The evaluation corpus: long labelled streams built from held-out TTS voices, deterministic for a seed.

Per keyword, one positives stream per condition (clean, and each SNR x noise kind); in each, utterances
of the keyword start 3-6 s apart, a quarter of them reverberated, all with random speed and pitch. One
negatives stream (>= 1 hour in a full run) of non-keyword sentences, noise and quiet. Speech is
levelled on its active part, so the SNR of every keyword instance is exact.

Layout under ``<cache>/corpus/<config hash>/``: one 16 kHz int16 WAV per stream and ``labels.json``::

    {"schema": "kws_edge.bench.corpus/1", "config": {...}, "streams": [
      {"name": "hey_jarvis_snr10_pink", "file": "hey_jarvis_snr10_pink.wav", "kind": "positive",
       "keyword": "hey_jarvis", "snr_db": 10, "noise": "pink", "duration_s": 143.2,
       "instances": [{"start": 1.52, "end": 2.31, "voice": "flite:rms", "text": "hey jarvis",
                      "speed": 1.07, "pitch": 0.93, "rt60_s": null}, ...]}, ...]}

Clean streams carry a dither of 2 LSB RMS instead of digital silence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import noise as nz
from benchmarks.text import sentence
from benchmarks.tts import SAMPLE_RATE, Utterance, active_span, check_voices, synthesize

SCHEMA = "kws_edge.bench.corpus/1"
_VERSION = 1  # bump when the generator changes, so cached corpora are rebuilt
DITHER_RMS = 2.0  # LSB


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that determines the corpus; its hash names the cache directory."""

    keywords: tuple[str, ...]
    voices: tuple[str, ...]
    seed: int = 1234
    per_stream: int = 30  # keyword instances per positives stream
    conditions: tuple[tuple[int | None, str | None], ...] = (
        (None, None), *((snr, kind) for snr in (20, 10, 5) for kind in nz.NOISE_KINDS))
    negatives_s: float = 3600.0
    reverb_fraction: float = 0.25
    speech_dbfs: float = -24.0
    babble_s: float = 60.0
    babble_talkers: int = 6

    def key(self) -> str:
        raw = json.dumps([_VERSION, dataclasses.asdict(self)], sort_keys=True)
        return hashlib.sha1(raw.encode()).hexdigest()[:16]


def quick_config(keywords: tuple[str, ...], voices: tuple[str, ...], seed: int = 1234) -> CorpusConfig:
    """A ~2-minute corpus: 3 instances in 4 conditions per keyword and 60 s of negatives."""
    return CorpusConfig(keywords, voices, seed, per_stream=3,
                        conditions=((None, None), (20, "white"), (10, "pink"), (5, "babble")),
                        negatives_s=60.0, babble_s=15.0, babble_talkers=4)


@dataclass
class Stream:
    name: str
    file: str
    kind: str  # "positive" | "negative"
    keyword: str | None
    snr_db: int | None
    noise: str | None
    duration_s: float
    instances: list[dict[str, Any]] = field(default_factory=list)
    source: str = "tts"  # "tts" (synthetic) or "real" (recordings, benchmarks.realcorpus)
    excluded_for: list[str] = field(default_factory=list)  # negatives that hold these keywords
    clips: list[dict[str, Any]] = field(default_factory=list)  # real negatives: where each clip sits


@dataclass
class Corpus:
    root: Path
    streams: list[Stream]
    config: dict[str, Any]

    def path(self, stream: Stream) -> Path:
        return self.root / stream.file

    def for_keyword(self, keyword: str) -> list[Stream]:
        """The keyword's positives streams and the negatives stream(s) that do not hold the keyword."""
        return [s for s in self.streams if (s.kind == "negative" and keyword not in s.excluded_for)
                or s.keyword == keyword]


def keyword_text(keyword: str) -> str:
    return keyword.replace("_", " ")


def stream_name(keyword: str, snr: int | None, kind: str | None) -> str:
    return f"{keyword}_clean" if snr is None else f"{keyword}_snr{snr}_{kind}"


def load_corpus(root: Path) -> Corpus:
    data = json.loads((root / "labels.json").read_text())
    return Corpus(root, [Stream(**s) for s in data["streams"]], data["config"])


def build_corpus(cfg: CorpusConfig, cache: Path, log: Any = None) -> Corpus:
    """Build (or reuse from ``cache``) the corpus for ``cfg``; return it."""
    root = cache / "corpus" / cfg.key()
    if (root / "labels.json").exists():
        return load_corpus(root)
    check_voices(cfg.voices)
    tts_cache = cache / "tts"
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    forbidden = (*tuple(keyword_text(k) for k in cfg.keywords), "hey jarvis", "alexa")
    babble = _babble_bank(cfg, tts_cache, forbidden)
    streams: list[Stream] = []
    for ki, kw in enumerate(cfg.keywords):
        for ci, (snr, kind) in enumerate(cfg.conditions):
            rng = np.random.default_rng([cfg.seed, 1, ki, ci])
            streams.append(_positives(cfg, kw, snr, kind, rng, babble, tts_cache, tmp))
            if log:
                log(f"corpus: {streams[-1].name} ({streams[-1].duration_s:.0f} s)")
    streams.append(_negatives(cfg, np.random.default_rng([cfg.seed, 2]), babble, tts_cache, tmp, forbidden))
    if log:
        log(f"corpus: negatives ({streams[-1].duration_s:.0f} s)")
    return publish(cfg, streams, tmp, root)


def publish(cfg: Any, streams: list[Stream], tmp: Path, root: Path) -> Corpus:
    """Write ``labels.json`` into the finished ``tmp`` folder, move it to ``root`` (replacing an old
    one) and load it back."""
    labels = {"schema": SCHEMA, "config": dataclasses.asdict(cfg), "streams": [dataclasses.asdict(s)
                                                                               for s in streams]}
    (tmp / "labels.json").write_text(json.dumps(labels, indent=1))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return load_corpus(root)


def _babble_bank(cfg: CorpusConfig, tts_cache: Path, forbidden: tuple[str, ...]) -> nz.FloatArray:
    rng = np.random.default_rng([cfg.seed, 3])
    talkers = []
    for i in range(cfg.babble_talkers):
        voice = cfg.voices[i % len(cfg.voices)]
        parts: list[np.ndarray] = []
        while sum(len(p) for p in parts) < cfg.babble_s * SAMPLE_RATE:
            u = Utterance(voice, sentence(rng, forbidden), float(rng.uniform(0.9, 1.2)))
            parts.append(synthesize(u, tts_cache).astype(np.float64))
        talkers.append(np.concatenate(parts))
    return nz.mix_babble(talkers)


def _render(u: Utterance, rng: np.random.Generator, cfg: CorpusConfig, tts_cache: Path,
            level_dbfs: float) -> tuple[nz.FloatArray, float | None, int]:
    """Synthesize, trim to 50 ms around the speech, maybe reverberate, level; return (x, rt60, onset)."""
    x = synthesize(u, tts_cache).astype(np.float64)
    a, b = active_span(x.astype(np.int16))
    margin = SAMPLE_RATE // 20
    x = x[max(0, a - margin):b + margin]
    onset = min(a, margin)
    rt60 = None
    if rng.random() < cfg.reverb_fraction:
        rt60 = round(float(rng.uniform(0.3, 0.9)), 2)
        x = nz.reverberate(x, nz.room_impulse(rng, rt60))
    aa, bb = active_span(nz.to_int16(x / (np.abs(x).max() or 1.0) * 20000))
    x *= nz.db_to_rms(level_dbfs) / (nz.rms(x[aa:bb]) or 1.0)
    return x, rt60, onset


def _positives(cfg: CorpusConfig, kw: str, snr: int | None, kind: str | None, rng: np.random.Generator,
               babble: nz.FloatArray, tts_cache: Path, out_dir: Path) -> Stream:
    name = stream_name(kw, snr, kind)
    text = keyword_text(kw)
    offset = int(rng.integers(len(cfg.voices)))
    pieces: list[tuple[int, nz.FloatArray]] = []
    instances: list[dict[str, Any]] = []
    start = float(rng.uniform(1.0, 2.0))
    for i in range(cfg.per_stream):
        u = Utterance(cfg.voices[(offset + i) % len(cfg.voices)], text,
                      round(float(rng.uniform(0.85, 1.2)), 3), round(float(rng.uniform(0.8, 1.25)), 3))
        x, rt60, _ = _render(u, rng, cfg, tts_cache, cfg.speech_dbfs)
        a, b = active_span(nz.to_int16(x / (np.abs(x).max() or 1.0) * 20000))
        if instances:
            start = max(start + float(rng.uniform(3.0, 6.0)), float(instances[-1]["end"]) + 0.5)
        at = int(start * SAMPLE_RATE) - a
        pieces.append((at, x))
        instances.append({"start": round(start, 3), "end": round((at + b) / SAMPLE_RATE, 3),
                          "voice": u.voice, "text": u.text, "speed": u.speed, "pitch": u.pitch,
                          "rt60_s": rt60})
    total = max(at + len(x) for at, x in pieces) + 2 * SAMPLE_RATE
    y = np.zeros(total)
    for at, x in pieces:
        y[at:at + len(x)] += x
    if snr is None or kind is None:
        y += nz.white(total, rng) * DITHER_RMS
    else:
        y += nz.make_noise(kind, total, rng, babble) * nz.db_to_rms(cfg.speech_dbfs - snr)
    _write(out_dir / f"{name}.wav", [nz.to_int16(y)])
    return Stream(name, f"{name}.wav", "positive", kw, snr, kind, round(total / SAMPLE_RATE, 3), instances)


def _negative_segment(cfg: CorpusConfig, rng: np.random.Generator, babble: nz.FloatArray, tts_cache: Path,
                      forbidden: tuple[str, ...]) -> tuple[nz.FloatArray, str]:
    r = rng.random()
    if r < 0.7:  # one to three sentences by one talker, maybe over background noise
        voice = str(rng.choice(cfg.voices))
        parts = []
        for _ in range(int(rng.integers(1, 4))):
            u = Utterance(voice, sentence(rng, forbidden), round(float(rng.uniform(0.85, 1.2)), 3),
                          round(float(rng.uniform(0.8, 1.25)), 3))
            x, _, _ = _render(u, rng, cfg, tts_cache, cfg.speech_dbfs + float(rng.uniform(-8, 4)))
            parts += [x, np.zeros(int(rng.uniform(0.2, 1.5) * SAMPLE_RATE))]
        y = np.concatenate(parts)
        kind = str(rng.choice(("none", "none", *nz.NOISE_KINDS)))
        if kind != "none":
            level = cfg.speech_dbfs - float(rng.uniform(0, 20))
            y += nz.make_noise(kind, len(y), rng, babble) * nz.db_to_rms(level)
        return y, f"speech+{kind}"
    n = int(rng.uniform(2.0, 10.0) * SAMPLE_RATE)
    if r < 0.85:
        kind = str(rng.choice(nz.NOISE_KINDS))
        return nz.make_noise(kind, n, rng, babble) * nz.db_to_rms(float(rng.uniform(-50, -25))), kind
    return np.zeros(n), "quiet"


def _negatives(cfg: CorpusConfig, rng: np.random.Generator, babble: nz.FloatArray, tts_cache: Path,
               out_dir: Path, forbidden: tuple[str, ...]) -> Stream:
    path = out_dir / "negatives.wav"
    total = 0
    counts: dict[str, int] = {}
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        while total < cfg.negatives_s * SAMPLE_RATE:
            y, kind = _negative_segment(cfg, rng, babble, tts_cache, forbidden)
            y += nz.white(len(y), rng) * DITHER_RMS
            w.writeframes(nz.to_int16(y).tobytes())
            total += len(y)
            counts[kind] = counts.get(kind, 0) + 1
    (out_dir / "negatives.segments.json").write_text(json.dumps(dict(sorted(counts.items()))))
    return Stream("negatives", "negatives.wav", "negative", None, None, None, round(total / SAMPLE_RATE, 3))


def _write(path: Path, parts: list[np.ndarray]) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        for p in parts:
            w.writeframes(p.astype("<i2").tobytes())
