"""Real voices: crowd-sourced recordings, heard as a microphone would, scored by the runtime's own path.

The data folder (``$KWS_EDGE_REALVOICE``, else ``../shared/data/realvoice`` next to the repo) holds one
sub-folder per phrase of 16 kHz mono FLAC clips, 1-4 s each with silence around, one phrase per clip.
``computer/`` and ``view_glass/`` are validation only; ``smart_mirror/`` and ``snowboy/`` may be used in
training as negatives, so they are never evaluation negatives unless asked for explicitly.

A model keyword whose label names a folder makes that folder its real positives; the other
validation-safe folders plus the real speech of Debian's pocketsphinx-testdata (if installed) are the
real negative speech. Clips are concatenated with random gaps at varied levels, clean and with noise at
10 dB, and every stream is scored once (:func:`training.streams.stream_scores`); the decision is then
replayed cheaply for the model's own thresholds and for a threshold sweep (DET curve). Clips have no word
timing, so a positive span is the whole clip and a detection up to ``TOLERANCE_S`` after it counts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from kws_edge.decision import DecisionParams
from kws_edge.errors import AudioError, ConfigError
from kws_edge.model import ModelRunner
from training import augment as aug
from training import streams as st

log = logging.getLogger("kws_edge.training")

Int16 = npt.NDArray[np.int16]
ENV_DIR = "KWS_EDGE_REALVOICE"
DEFAULT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "realvoice"
VALIDATION_FOLDERS = ("computer", "view_glass")  # never trained on: the only fair real negatives
TRAINING_FOLDERS = ("smart_mirror", "snowboy")  # may be training negatives: not fair for evaluation
EXTRA_SPEECH_DIR = Path("/usr/share/pocketsphinx/test/data")  # pocketsphinx-testdata: real read speech
EXTRA_SOURCE = "pocketsphinx"
RATE = 16000  # Hz
TOLERANCE_S = 1.0  # a detection up to 1 s after the end of a clip still counts
NOISY_SNR_DB = 10.0
NOISE_KINDS = ("pink", "white", "brown")
NEG_GAP_S = (0.1, 0.5)  # silence added on each side of a negative clip (it already has its own)
TARGETS_FA_H = (0.5, 1.0)
GRID = np.arange(1, 256) / 256.0  # int8 outputs are multiples of 1/256
HALVES = ("select", "report")  # see half()


@dataclass(frozen=True)
class RealClip:
    """One recording: int16 samples at 16 kHz, the folder (or source) it came from, and its file."""

    samples: Int16
    source: str
    path: Path


@dataclass(frozen=True)
class Selection:
    """Which folders play which role for one model."""

    positives: dict[str, str]  # keyword label -> folder of its real utterances
    negatives: tuple[str, ...]  # folders of real speech that must not trigger the model


def realvoice_dir(explicit: Path | str | None = None) -> Path:
    """The data folder: ``explicit``, else ``$KWS_EDGE_REALVOICE``, else :data:`DEFAULT_DIR`."""
    env = os.environ.get(ENV_DIR)
    path = Path(explicit) if explicit else Path(env) if env else DEFAULT_DIR
    if not path.is_dir():
        how = "given" if explicit else f"from ${ENV_DIR}" if env else "default"
        raise ConfigError(f"real-voice folder {path} ({how}) does not exist: expected a folder with one "
                          f"sub-folder of 16 kHz mono .flac clips per phrase (e.g. computer/, view_glass/); "
                          f"pass --realvoice-dir DIR or set ${ENV_DIR}")
    return path


def read_clip(path: Path | str) -> Int16:
    """Read a FLAC (or any libsndfile format) clip as int16; ConfigError unless it is 16 kHz mono."""
    import soundfile as sf

    path = Path(path)
    try:
        x, rate = sf.read(str(path), dtype="int16", always_2d=True)
    except (RuntimeError, OSError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        raise ConfigError(f"{path}: cannot read this audio file ({exc}); expected 16 kHz mono FLAC") from None
    if rate != RATE or x.shape[1] != 1:
        raise ConfigError(f"{path}: {rate} Hz with {x.shape[1]} channel(s); expected 16 kHz mono "
                          f"(convert with 'sox {path.name} -r 16000 -c 1 out.flac')")
    return np.ascontiguousarray(x[:, 0])


def folders(root: Path) -> list[str]:
    """Sub-folders of the data folder that hold at least one ``.flac`` clip."""
    return sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*.flac")))


def load_folder(root: Path, folder: str) -> list[RealClip]:
    """Every clip of one folder, sorted by file name; ConfigError if there is none."""
    files = sorted((root / folder).glob("*.flac"))
    if not files:
        raise ConfigError(f"{root / folder}: expected a folder of 16 kHz mono .flac clips, found none")
    return [RealClip(read_clip(p), folder, p) for p in files]


def load_extra_speech(root: Path | None = EXTRA_SPEECH_DIR) -> list[RealClip]:
    """Real speech WAVs of pocketsphinx-testdata (empty if absent); unreadable files are skipped."""
    from kws_edge.audio import read_wav

    if root is None or not root.is_dir():
        return []
    out = []
    for p in sorted(root.rglob("*.wav")):
        try:
            out.append(RealClip(read_wav(p, RATE), EXTRA_SOURCE, p))
        except AudioError as exc:
            log.warning("skipping %s: %s", p, exc)
    return out


def half(path: Path | str) -> str:
    """The half of a keyword's real recordings a clip belongs to: "select" (model selection during
    training, ``train.select_on = "real"``) or "report" (the figures of a model selected that way), by a
    hash of its file name: stable, about even, and independent of the folder's order."""
    return HALVES[hashlib.sha256(Path(path).name.encode()).digest()[0] & 1]


def positive_clips(root: Path, sel: Selection, positives_half: str | None = None) -> list[tuple[Int16, str]]:
    """(samples, keyword) of every positive clip, or of one :func:`half` of them."""
    if positives_half is not None and positives_half not in HALVES:
        raise ConfigError(f"real-voice positives: expected one of {', '.join(HALVES)} or all, got {positives_half!r}")
    return [(c.samples, kw) for kw, f in sel.positives.items() for c in load_folder(root, f)
            if positives_half is None or half(c.path) == positives_half]


def negative_clips(root: Path, sel: Selection, extra_speech: Path | None = EXTRA_SPEECH_DIR) -> list[RealClip]:
    """The real speech without the keywords: the selection's negative folders plus the extra speech."""
    return [c for f in sel.negatives for c in load_folder(root, f)] + load_extra_speech(extra_speech)


def select_folders(keywords: Sequence[str], available: Sequence[str],
                   negatives: Sequence[str] | None = None) -> Selection:
    """Positives: folders named like a keyword. Negatives: ``negatives`` if given, else the
    validation-only folders that are present and not positive (never the training-safe ones)."""
    positives = {kw: kw for kw in keywords if kw in available}
    if negatives is None:
        chosen = tuple(f for f in VALIDATION_FOLDERS if f in available and f not in positives.values())
    else:
        missing = [f for f in negatives if f not in available]
        if missing:
            raise ConfigError(f"real-voice negative folder(s) {', '.join(missing)} not found; "
                              f"available: {', '.join(available) or 'none'}")
        clash = [f for f in negatives if f in positives.values()]
        if clash:
            raise ConfigError(f"real-voice folder(s) {', '.join(clash)} hold this model's keyword: "
                              "they cannot be negatives")
        chosen = tuple(negatives)
    return Selection(positives, chosen)


def speech_stream(clips: Sequence[tuple[Int16, str]], snr_db: float, bank: aug.NoiseBank,
                  kinds: Sequence[str], seed: int, gap_s: tuple[float, float] = NEG_GAP_S) -> st.Stream:
    """Clips back to back with ``gap_s`` silence on each side, at varied levels, noise at ``snr_db``
    (>= 100: clean); spans are whole clips labelled with their source. Same segments as
    :func:`training.streams.positive_stream`, with shorter gaps."""
    rng = np.random.default_rng(seed)
    parts = [rng.standard_normal(RATE)]  # one second of near-silence first, as a microphone would start
    spans: list[tuple[float, float, str]] = []
    t = RATE
    for samples, label in clips:
        seg, off = st._segment(samples.astype(np.float64), rng, bank, snr_db, gap_s, kinds,
                               rng.uniform(-20.0, -3.0))
        spans.append(((t + off) / RATE, (t + off + len(samples)) / RATE, label))
        parts.append(seg)
        t += len(seg)
    return st.Stream(st._to_int16(np.concatenate(parts)), spans)


def build_streams(pos: Sequence[tuple[Int16, str]], neg: Sequence[tuple[Int16, str]],
                  bank: aug.NoiseBank, kinds: Sequence[str], seed: int,
                  snr_db: float = NOISY_SNR_DB) -> dict[str, dict[str, st.Stream]]:
    """{"clean"|"<snr>db": {"positive": stream, "negative": stream}}; clip order shuffled per seed."""
    rng = np.random.default_rng(seed)
    pos = [pos[int(i)] for i in rng.permutation(len(pos))]
    neg = [neg[int(i)] for i in rng.permutation(len(neg))]
    out = {}
    for k, (name, snr) in enumerate(conditions(snr_db).items()):
        streams = {"negative": speech_stream(neg, snr, bank, kinds, seed + 100 + k)}
        if pos:
            streams["positive"] = st.positive_stream(pos, snr, bank, kinds, seed + 200 + k)
        out[name] = streams
    return out


def conditions(snr_db: float = NOISY_SNR_DB) -> dict[str, float]:
    """Condition name -> SNR used by the stream builders."""
    return {"clean": st.CLEAN_SNR, f"{snr_db:g}db": snr_db}


class _Progress:
    """A ModelRunner stand-in that ticks a tqdm bar on every model run (for long streams)."""

    def __init__(self, runner: ModelRunner, bar: Any) -> None:
        self.manifest = runner.manifest
        self._runner, self._bar = runner, bar

    def run(self, window: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        self._bar.update(1)
        return self._runner.run(window)

    def reset(self) -> None:
        self._runner.reset()


def score(runner: ModelRunner, stream: st.Stream, desc: str, progress: bool = False) -> st.Scores:
    """:func:`training.streams.stream_scores` with an optional progress bar (stderr, TTY only)."""
    from tqdm import tqdm

    m = runner.manifest
    total = max(0, (len(stream.samples) // m.features.hop - m.window_frames) // m.stride_frames + 1)
    with tqdm(total=total, desc=desc, unit="run", disable=None if progress else True, leave=False) as bar:
        return st.stream_scores(cast(ModelRunner, _Progress(runner, bar)), stream.samples)


def detections(scores: st.Scores, labels: Sequence[str], thresholds: Mapping[str, float],
               d: DecisionParams, smooth: Mapping[str, npt.NDArray[np.float64]] | None = None
               ) -> dict[str, list[int]]:
    """Event times (ms) per keyword at per-keyword ``thresholds`` (the runtime Decision, replayed)."""
    return {kw: st.events(scores, labels, kw, thr, d.smoothing_ms, d.min_hits, d.refractory_ms,
                          None if smooth is None else smooth[kw]) for kw, thr in thresholds.items()}


def count_rejects(spans: Sequence[tuple[float, float, str]], evs: Mapping[str, Sequence[int]],
                  tolerance_s: float = TOLERANCE_S) -> dict[str, Any]:
    """Detected/missed clips overall and per keyword; a clip counts if its keyword fires in it or
    up to ``tolerance_s`` after it."""
    det, miss, _ = st.hits_and_misses(spans, evs, tolerance_s)
    per_kw = {}
    for kw in sorted({s[2] for s in spans}):
        d_kw, m_kw, _ = st.hits_and_misses([s for s in spans if s[2] == kw], {kw: evs.get(kw, [])}, tolerance_s)
        per_kw[kw] = {"clips": d_kw + m_kw, "detected": d_kw, "frr": m_kw / max(1, d_kw + m_kw)}
    return {"clips": det + miss, "detected": det, "missed": miss, "frr": miss / max(1, det + miss) if spans
            else None, "per_keyword": per_kw}


def count_accepts(spans: Sequence[tuple[float, float, str]], evs: Mapping[str, Sequence[int]], hours: float,
                  tolerance_s: float = TOLERANCE_S) -> dict[str, Any]:
    """False accepts on a negative stream: total, per hour, per keyword and per source of the clip they
    fall in (``"gap"`` when in none)."""
    per_source: dict[str, int] = {}
    for ts in evs.values():
        for t_ms in ts:
            t = t_ms / 1000
            src = next((s for a, b, s in spans if a <= t <= b + tolerance_s), "gap")
            per_source[src] = per_source.get(src, 0) + 1
    n = sum(len(v) for v in evs.values())
    return {"false_accepts": n, "fa_per_hour": n / hours if hours > 0 else None,
            "per_keyword": {kw: len(v) for kw, v in evs.items()}, "per_source": per_source}


def det_sweep(pos: tuple[st.Scores, st.Stream] | None, neg: tuple[st.Scores, st.Stream], labels: Sequence[str],
              keywords: Sequence[str], d: DecisionParams, tolerance_s: float = TOLERANCE_S) -> list[dict[str, Any]]:
    """FRR and FA/h for a common threshold on the 1/256 grid (FRR None without positives)."""
    sm_neg = {kw: st.smoothed(neg[0], labels.index(kw), d.smoothing_ms) for kw in keywords}
    sm_pos = {kw: st.smoothed(pos[0], labels.index(kw), d.smoothing_ms) for kw in keywords} if pos else {}
    curve = []
    for thr in GRID:
        th = {kw: float(thr) for kw in keywords}
        n = sum(len(v) for v in detections(neg[0], labels, th, d, sm_neg).values())
        frr = None
        if pos is not None:
            det, miss, _ = st.hits_and_misses(pos[1].spans, detections(pos[0], labels, th, d, sm_pos), tolerance_s)
            frr = miss / max(1, det + miss)
        curve.append({"threshold": float(thr), "fa_per_hour": n / neg[1].hours, "frr": frr})
    return curve


def fa_by_keyword(neg: tuple[st.Scores, st.Stream], labels: Sequence[str], keywords: Sequence[str],
                  d: DecisionParams) -> dict[str, list[int]]:
    """False accepts of each keyword alone at every threshold of :data:`GRID` (its own threshold; the
    others' do not matter), for choosing per-keyword thresholds."""
    out = {}
    for kw in keywords:
        sm = {kw: st.smoothed(neg[0], labels.index(kw), d.smoothing_ms)}
        out[kw] = [len(detections(neg[0], labels, {kw: float(thr)}, d, sm)[kw]) for thr in GRID]
    return out


def frr_at_fa(curve: Sequence[Mapping[str, Any]], target_fa_h: float) -> dict[str, Any]:
    """The lowest threshold whose FA/h, and that of every higher threshold, is <= ``target_fa_h``."""
    ok = [i for i in range(len(curve)) if all(c["fa_per_hour"] <= target_fa_h for c in curve[i:])]
    if not ok:
        return {"reachable": False, "threshold": None, "frr": None, "fa_per_hour": None,
                "note": f"not reachable: {curve[-1]['fa_per_hour']:.2f} FA/h even at threshold 255/256"}
    c = curve[ok[0]]
    return {"reachable": True, "threshold": c["threshold"], "frr": c["frr"], "fa_per_hour": c["fa_per_hour"]}


def evaluate_real(runner: ModelRunner, data_dir: Path | str | None = None, decision: DecisionParams | None = None,
                  negatives: Sequence[str] | None = None, extra_speech: Path | None = EXTRA_SPEECH_DIR,
                  seed: int = 0, snr_db: float = NOISY_SNR_DB, tolerance_s: float = TOLERANCE_S,
                  progress: bool = False, positives_half: str | None = None) -> dict[str, Any]:
    """The real-voice report of one model (see the module docstring); ``decision`` defaults to the
    manifest's own thresholds and decision parameters, ``negatives`` overrides the negative folders,
    ``positives_half`` keeps one :func:`half` of the positives (None: all)."""
    t0 = time.monotonic()
    m = runner.manifest
    root = realvoice_dir(data_dir)
    sel = select_folders(m.keywords, folders(root), negatives)
    if decision is None:
        dd = m.decision
        decision = DecisionParams(dict(dd.thresholds), dd.smoothing_ms, dd.min_hits, dd.refractory_ms)
    pos = positive_clips(root, sel, positives_half)
    neg_clips = negative_clips(root, sel, extra_speech)
    if not neg_clips:
        raise ConfigError(f"{root}: no real negative speech for {m.name} (no validation-only folder "
                          f"{' or '.join(VALIDATION_FOLDERS)} besides its positives, no {EXTRA_SPEECH_DIR})")
    neg = [(c.samples, c.source) for c in neg_clips]
    bank = aug.NoiseBank([], [])
    streams = build_streams(pos, neg, bank, NOISE_KINDS, seed, snr_db)
    labels, keywords = list(m.labels), list(m.keywords)
    out: dict[str, Any] = {"at_threshold": {}, "det": {}, "at_fa": {str(t): {} for t in TARGETS_FA_H},
                           "negative_hours": {}, "fa_by_keyword": {}}
    n_false, hours = 0, 0.0
    for name, ss in streams.items():
        neg_sc = score(runner, ss["negative"], f"{name} negatives", progress)
        pos_sc = score(runner, ss["positive"], f"{name} positives", progress) if "positive" in ss else None
        row = count_accepts(ss["negative"].spans, detections(neg_sc, labels, decision.thresholds, decision),
                            ss["negative"].hours, tolerance_s)
        if pos_sc is not None:
            row |= {"rejects": count_rejects(ss["positive"].spans,
                                             detections(pos_sc, labels, decision.thresholds, decision), tolerance_s)}
        out["at_threshold"][name] = row
        n_false += row["false_accepts"]
        hours += ss["negative"].hours
        out["negative_hours"][name] = round(ss["negative"].hours, 4)
        pair = (pos_sc, ss["positive"]) if pos_sc is not None else None
        out["det"][name] = det_sweep(pair, (neg_sc, ss["negative"]), labels, keywords, decision, tolerance_s)
        out["fa_by_keyword"][name] = fa_by_keyword((neg_sc, ss["negative"]), labels, keywords, decision)
        for t in TARGETS_FA_H:
            out["at_fa"][str(t)][name] = frr_at_fa(out["det"][name], t)
    out["fa_per_hour"] = n_false / hours
    counts = {"positive": {f: sum(1 for _, k in pos if k == kw) for kw, f in sel.positives.items()},
              "negative": {s: sum(1 for _, src in neg if src == s) for s in dict.fromkeys(src for _, src in neg)}}
    head = {"model": m.name, "data_dir": str(root), "positive_folders": sel.positives,
            "negative_sources": list(counts["negative"]), "clips": counts, "conditions": conditions(snr_db),
            "decision": {"thresholds": dict(decision.thresholds), "smoothing_ms": decision.smoothing_ms,
                         "min_hits": decision.min_hits, "refractory_ms": decision.refractory_ms},
            "tolerance_s": tolerance_s, "seed": seed}
    if positives_half is not None:
        head["positives_half"] = positives_half
    if not sel.positives:
        head["note"] = (f"no real-voice folder matches the keywords {', '.join(keywords)}: only false accepts "
                        "on real speech are reported")
    report = head | out
    report["summary"] = summary(report)
    report["seconds"] = round(time.monotonic() - t0, 1)
    return report


def summary(real: Mapping[str, Any]) -> dict[str, Any]:
    """Key figures: FRR clean / noisy at the model's threshold, FA/h (pooled), FRR at 0.5 and 1 FA/h (clean)."""
    names = list(real["conditions"])
    at = real["at_threshold"]

    def frr(name: str) -> float | None:
        r = at[name].get("rejects")
        return None if r is None or r["frr"] is None else round(r["frr"], 4)

    def at_fa(t: float) -> float | None:
        v = real["at_fa"][str(t)][names[0]]["frr"]
        return None if v is None else round(v, 4)

    return {"real_frr_clean": frr(names[0]), f"real_frr_{names[1]}": frr(names[1]),
            "real_fa_per_hour": round(real["fa_per_hour"], 3),
            "real_frr_at_0.5fa": at_fa(0.5), "real_frr_at_1fa": at_fa(1.0),
            "real_negative_hours": round(sum(real["negative_hours"].values()), 3)}


def table(real: Mapping[str, Any]) -> str:
    """A short human-readable table of the report."""
    def pct(v: float | None) -> str:
        return "   n/a" if v is None else f"{v * 100:5.1f}%"

    thr = ", ".join(f"{k}={v:.3f}" for k, v in real["decision"]["thresholds"].items())
    half_note = f" ({real['positives_half']} half)" if real.get("positives_half") else ""
    lines = [f"{real['model']}: real voices from {real['data_dir']}", f"  thresholds {thr}; positives{half_note} "
             f"{real['clips']['positive'] or 'none'}; negatives {real['clips']['negative']}",
             f"  {'condition':<10} {'neg h':>6} {'FRR@thr':>8} {'FA/h@thr':>9} "
             f"{'FRR @<=0.5 FA/h':>17} {'FRR @<=1 FA/h':>17}"]
    for name in real["conditions"]:
        at = real["at_threshold"][name]
        rej = at.get("rejects")
        cells = []
        for t in TARGETS_FA_H:
            p = real["at_fa"][str(t)][name]
            if not p["reachable"]:
                cells.append("unreachable")
            else:
                frr = "" if p["frr"] is None else pct(p["frr"]).strip() + " "
                cells.append(f"{frr}@thr {p['threshold']:.3f}")
        lines.append(f"  {name:<10} {real['negative_hours'][name]:6.3f} {pct(rej and rej['frr']):>8} "
                     f"{at['fa_per_hour']:9.2f} {cells[0]:>17} {cells[1]:>17}")
    if "note" in real:
        lines.append(f"  note: {real['note']}")
    return "\n".join(lines)
