"""The benchmark run: corpus -> one process per (system, keyword[, threshold]) -> scores and costs.

:func:`run_bench` returns the whole result as a JSON-able dict; :mod:`benchmarks.report` renders it.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import scoring
from benchmarks.corpus import Corpus, CorpusConfig, Stream, build_corpus, keyword_text
from benchmarks.realcorpus import RealConfig, build_real_corpus
from benchmarks.systems import (
    PEER_REFRACTORY_MS,
    SPHINX_DEFAULT,
    SPHINX_THRESHOLDS,
    SYSTEMS,
    RunResult,
    SystemSpec,
    Unavailable,
    ensure_python,
    reused_run,
    run_job,
)
from kws_edge.errors import ConfigError

REAL_TARGETS_FA_H = (0.5, 1.0)  # FA/h on real speech at which FRR (or the threshold needed) is reported
CHUNK = 1280  # samples per read: 80 ms at 16 kHz, as a microphone delivers them
_WEIGHT = {"pyopen_wakeword": 3, "pocketsphinx": 2}  # relative run times, for scheduling only


@dataclass(frozen=True)
class BenchOptions:
    systems: tuple[str, ...]
    kws_manifests: dict[str, Path]  # keyword -> kws_edge manifest
    corpus: CorpusConfig
    cache: Path
    jobs: int = 2
    reuse_peers: bool = False  # reuse identical earlier peer runs (same corpus, runner, package)
    real: RealConfig | None = None  # real-voice streams (None: none)
    real_keywords: tuple[str, ...] = ()  # keywords measured on real recordings only (no TTS streams)


@dataclass
class _Job:
    system: SystemSpec
    keyword: str
    tag: str
    options: dict[str, Any]
    run: RunResult | None = None
    error: str | None = None


def run_bench(opts: BenchOptions, log: Callable[[str], None]) -> dict[str, Any]:
    """Build the corpora, run every system on them, score; return the results dict."""
    started = time.time()
    corpus = build_corpus(opts.corpus, opts.cache, log)
    log(f"corpus ready: {len(corpus.streams)} streams, {sum(s.duration_s for s in corpus.streams) / 3600:.2f} h "
        f"in {corpus.root}")
    unavailable: dict[str, str] = {}
    real = None
    if opts.real is not None:
        try:
            real = build_real_corpus(opts.real, opts.cache, log)
            log(f"real corpus ready: {sum(s.duration_s for s in real.streams) / 3600:.2f} h in {real.root}")
        except (ConfigError, ImportError) as exc:
            unavailable["real voices"] = str(exc)
            log(f"real voices: unavailable: {exc}")
    real_pos = {s.keyword for s in real.streams if s.kind == "positive"} if real else set()
    keywords = (*opts.corpus.keywords, *(k for k in opts.real_keywords if k in real_pos
                                         and k not in opts.corpus.keywords))
    streams = {kw: (corpus.for_keyword(kw) if kw in opts.corpus.keywords else [])
               + (real.for_keyword(kw) if real else []) for kw in keywords}
    paths = {s.name: str(c.path(s)) for c in (corpus, real) if c is not None for s in c.streams}
    inputs = {kw: [{"name": s.name, "path": paths[s.name]} for s in ss] for kw, ss in streams.items()}
    jobs, planned_out = _plan(opts, keywords)
    unavailable |= planned_out
    _execute(jobs, inputs, opts, log, unavailable)
    results: dict[str, Any] = {"systems": {}, "real": {"systems": {}}, "unavailable": unavailable}
    for name in opts.systems:
        for kw in keywords:
            mine = [j for j in jobs if j.system.name == name and j.keyword == kw]
            if not mine or any(j.run is None for j in mine):
                continue
            sw = _sweep(SYSTEMS[name], mine)
            if kw in opts.corpus.keywords:
                results["systems"].setdefault(name, {})[kw] = _score_system(SYSTEMS[name], sw, mine,
                                                                             corpus.for_keyword(kw))
            if real is not None:
                results["real"]["systems"].setdefault(name, {})[kw] = _score_real(sw, real.for_keyword(kw))
    results["corpus"] = _corpus_summary(corpus)
    if real is not None:
        results["real"]["corpus"] = _real_summary(real)
    results["machine"] = machine_info()
    results["started_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    results["duration_s"] = round(time.time() - started, 1)
    results["kws_manifests"] = {k: str(p) for k, p in opts.kws_manifests.items()}
    return results


def _plan(opts: BenchOptions, keywords: Sequence[str]) -> tuple[list[_Job], dict[str, str]]:
    jobs: list[_Job] = []
    unavailable: dict[str, str] = {}
    for name in opts.systems:
        spec = SYSTEMS[name]
        for kw in keywords:
            if spec.keywords is not None and kw not in spec.keywords:
                unavailable[f"{name}/{kw}"] = f"{spec.title} ships no {kw} model"
                continue
            if name == "kws_edge":
                if kw not in opts.kws_manifests:
                    unavailable[f"{name}/{kw}"] = f"no kws_edge model for {kw} (models/{kw}.json not there)"
                    continue
                jobs.append(_Job(spec, kw, f"{name}-{kw}", {"manifest": str(opts.kws_manifests[kw])}))
            elif name == "pocketsphinx":
                for th in SPHINX_THRESHOLDS:
                    jobs.append(_Job(spec, kw, f"{name}-{kw}-{th:g}",
                                     {"keyphrase": keyword_text(kw), "threshold": th}))
            else:
                jobs.append(_Job(spec, kw, f"{name}-{kw}", {"model": kw}))
    return jobs, unavailable


def _execute(jobs: list[_Job], inputs: dict[str, list[dict[str, str]]], opts: BenchOptions,
             log: Callable[[str], None], unavailable: dict[str, str]) -> None:
    pythons: dict[str, str] = {}
    for spec in {j.system.name: j.system for j in jobs}.values():
        try:
            pythons[spec.name] = ensure_python(spec, opts.cache, log)
        except Unavailable as exc:
            unavailable[spec.name] = str(exc)
            log(f"{spec.name}: unavailable: {exc}")
    work = opts.cache / "runs"

    def one(job: _Job) -> None:
        if job.system.name not in pythons:
            job.error = unavailable[job.system.name]
            return
        payload = {"keyword": job.keyword, "chunk": CHUNK, "streams": inputs[job.keyword], "options": job.options}
        python = pythons[job.system.name]
        if opts.reuse_peers and job.system.name != "kws_edge":
            job.run = reused_run(python, job.system, payload, work, job.tag)
            if job.run is not None:
                log(f"reused {job.tag} from {job.run.extra['reused_from_utc']}")
                return
        log(f"run {job.tag} ...")
        try:
            job.run = run_job(python, job.system, payload, work, job.tag)
        except Unavailable as exc:
            job.error = str(exc)
            unavailable[job.tag] = str(exc)
            log(f"{job.tag}: failed: {exc}")
            return
        r = job.run
        log(f"done {job.tag}: {r.cpu_s:.1f} s CPU, {r.maxrss_mb:.0f} MB, {r.wall_s:.0f} s wall")

    # Longest runs first, so parallel workers finish together (openWakeWord, then pocketsphinx).
    order = sorted(jobs, key=lambda j: -_WEIGHT.get(j.system.name, 1))
    with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
        list(pool.map(one, order))


def _trace_arrays(tr: dict[str, list[float]]) -> tuple[np.ndarray, np.ndarray]:
    return np.rint(np.asarray(tr["t"], dtype=np.float64) * 1000).astype(np.int64), np.asarray(tr["score"])


@dataclass
class _SweepDetections:
    """Detection times per threshold (stream -> seconds) of one system on one keyword, over every stream."""

    by_threshold: dict[float, dict[str, list[float]]]
    default: float
    rule: dict[str, Any]
    cost_job: _Job
    extra: dict[str, Any]


def _sweep(spec: SystemSpec, jobs: Sequence[_Job]) -> _SweepDetections:
    if spec.name == "pocketsphinx":
        by_thr: dict[float, dict[str, list[float]]] = {}
        for j in jobs:
            if j.run is not None:
                by_thr[j.options["threshold"]] = {s: next(iter(d.values()))
                                                  for s, d in j.run.result["detections"].items()}
        cost_job = next(j for j in jobs if j.options["threshold"] == SPHINX_DEFAULT)
        rule = {"kind": "pocketsphinx kws_threshold (one decoder process per value)"}
        return _SweepDetections(dict(sorted(by_thr.items())), SPHINX_DEFAULT, rule, cost_job, {})
    cost_job = jobs[0]
    if cost_job.run is None:
        raise RuntimeError(f"{cost_job.tag} has no result")  # the caller only passes finished jobs
    return _trace_sweep(spec, cost_job)


def _score_system(spec: SystemSpec, sw: _SweepDetections, jobs: Sequence[_Job], streams: Sequence[Stream]
                  ) -> dict[str, Any]:
    """The synthetic (TTS) scores of one system on one keyword, with its cost."""
    points = [{"threshold": th, **scoring.score_streams(streams, d)} for th, d in sw.by_threshold.items()]
    out: dict[str, Any] = {"default": next(p for p in points if p["threshold"] == sw.default),
                           "sweep": [_slim(p) for p in points]}
    out["operating_point"] = scoring.operating_point(out["sweep"])
    run = sw.cost_job.run
    if run is None:
        raise RuntimeError(f"{sw.cost_job.tag} has no result")
    out["cost"] = _cost(spec, run, [j.run.maxrss_mb for j in jobs if j.run])
    out["decision_rule"] = sw.rule
    out["info"] = run.result.get("info", {})
    out |= sw.extra
    reused = sorted({j.run.extra["reused_from_utc"] for j in jobs if j.run and "reused_from_utc" in j.run.extra})
    if reused:
        out["reused_from_utc"] = reused
    return out


def _score_real(sw: _SweepDetections, streams: Sequence[Stream]) -> dict[str, Any]:
    """Real-voice scores: FA/h on the real negative speech only, FRR on the real positives (if any)."""
    neg = [s for s in streams if s.kind == "negative"]
    pos = [s for s in streams if s.kind == "positive"]
    points = []
    for th, dets in sw.by_threshold.items():
        n = scoring.score_streams(neg, dets)
        p = scoring.score_streams(pos, dets) if pos else None
        points.append({"threshold": th, "fa_per_h": n["fa_per_h"], "false_accepts": n["false_accepts"],
                       "frr": p["frr"] if p else None, "misses": p["misses"] if p else None,
                       "frr_by_snr": p["frr_by_snr"] if p else {}})
    default = dict(next(p for p in points if p["threshold"] == sw.default))
    default["false_accepts_by_source"] = scoring.false_accepts_by_source(neg, sw.by_threshold[sw.default])
    pick = scoring.operating_point if pos else scoring.lowest_threshold_at
    return {"default": default, "sweep": points, "negative_hours": round(sum(s.duration_s for s in neg) / 3600, 4),
            "negative_streams": [s.name for s in neg], "instances": sum(len(s.instances) for s in pos),
            "at_fa": {f"{t:g}": pick(points, t) for t in REAL_TARGETS_FA_H}, "decision_rule": sw.rule,
            "info": sw.cost_job.run.result.get("info", {}) if sw.cost_job.run else {}}


def _trace_sweep(spec: SystemSpec, job: _Job) -> _SweepDetections:
    if job.run is None:
        raise RuntimeError(f"{job.tag} has no result")  # the caller only passes finished jobs
    result = job.run.result
    info = result.get("info", {})
    default = round(float(info.get("default_threshold", 0.5)), 5)
    arrays = {name: _trace_arrays(tr) for name, tr in result["traces"].items()}
    if spec.name == "kws_edge":
        rule = {"kind": "kws_edge.decision replay", "smoothing_ms": info["smoothing_ms"],
                "min_hits": info["min_hits"], "refractory_ms": info["refractory_ms"], "strict": False}
        arrays = {n: (t, scoring.smooth(t, s, rule["smoothing_ms"])) for n, (t, s) in arrays.items()}
    else:
        rule = {"kind": "threshold on the package's own score", "min_hits": 1,
                "refractory_ms": PEER_REFRACTORY_MS, "strict": True}

    def detect(th: float) -> dict[str, list[float]]:
        return {n: scoring.events(t, s, th, rule["refractory_ms"], rule["min_hits"], rule["strict"])
                for n, (t, s) in arrays.items()}

    by_thr = {th: detect(th) for th in scoring.sweep_thresholds(default)}
    extra: dict[str, Any] = {}
    if spec.name == "kws_edge":
        replay = by_thr[default]
        real = {n: d.get("detector", []) for n, d in result["detections"].items()}
        diff = sum(len(set(np.round(replay[n], 3)) ^ set(np.round(real.get(n, []), 3))) for n in replay)
        extra["replay_check"] = {"detector_detections": sum(len(v) for v in real.values()),
                                 "replay_detections": sum(len(v) for v in replay.values()), "differences": diff}
    return _SweepDetections(by_thr, default, rule, job, extra)


def _slim(p: dict[str, Any]) -> dict[str, Any]:
    keys = ("threshold", "frr", "fa_per_h", "false_accepts", "misses", "frr_by_snr", "frr_by_engine")
    return {k: p[k] for k in keys}


def _cost(spec: SystemSpec, run: RunResult, rss_all: list[float]) -> dict[str, Any]:
    r = run.result
    hours = r["audio_s"] / 3600.0
    cost = {"audio_h": round(hours, 4), "cpu_s_per_audio_h": r["loop_cpu_s"] / hours if hours else None,
            "process_cpu_s": round(run.cpu_s, 2), "setup_cpu_s": round(r["setup_cpu_s"], 3),
            "peak_rss_mb": round(r["vm_hwm_kb"] / 1024.0, 1) if r.get("vm_hwm_kb", -1) > 0 else None,
            "ru_maxrss_mb": round(run.maxrss_mb, 1), "ru_maxrss_mb_all_runs": round(max(rss_all), 1),
            "threads": r.get("threads"), "wall_s": round(run.wall_s, 1)}
    stages = r.get("info", {}).get("stages_cpu_s")
    if stages and hours:
        split = {k: stages[k] / hours for k in ("features", "inference", "decision")}
        split["audio_and_other"] = r["loop_cpu_s"] / hours - sum(split.values())
        cost["split_cpu_s_per_audio_h"] = split
        cost["inferences"] = stages["inferences"]
    return cost


def _corpus_summary(corpus: Corpus) -> dict[str, Any]:
    pos = [s for s in corpus.streams if s.kind == "positive"]
    neg = [s for s in corpus.streams if s.kind == "negative"]
    return {"root": str(corpus.root), "seed": corpus.config["seed"], "voices": corpus.config["voices"],
            "streams": len(corpus.streams), "instances": sum(len(s.instances) for s in pos),
            "positives_h": round(sum(s.duration_s for s in pos) / 3600, 3),
            "negatives_h": round(sum(s.duration_s for s in neg) / 3600, 3),
            "conditions": corpus.config["conditions"], "per_stream": corpus.config["per_stream"]}


def _real_summary(real: Corpus) -> dict[str, Any]:
    neg = [s for s in real.streams if s.kind == "negative"]
    clips: dict[str, int] = {}
    for s in neg:
        for c in s.clips:
            clips[c["source"]] = clips.get(c["source"], 0) + 1
    pos = {s.name: len(s.instances) for s in real.streams if s.kind == "positive"}
    return {"root": str(real.root), "data_dir": real.config["data_dir"], "seed": real.config["seed"],
            "snr_db": real.config["snr_db"], "max_clips": real.config["max_clips"],
            "negative_streams": {s.name: {"hours": round(s.duration_s / 3600, 4), "excluded_for": s.excluded_for}
                                 for s in neg},
            "negative_clips": clips, "positive_streams": pos,
            "positives_h": round(sum(s.duration_s for s in real.streams if s.kind == "positive") / 3600, 4)}


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": sys.version.split()[0]}
