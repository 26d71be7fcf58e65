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
from benchmarks.corpus import Corpus, CorpusConfig, build_corpus, keyword_text
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


@dataclass
class _Job:
    system: SystemSpec
    keyword: str
    tag: str
    options: dict[str, Any]
    run: RunResult | None = None
    error: str | None = None


def run_bench(opts: BenchOptions, log: Callable[[str], None]) -> dict[str, Any]:
    """Build the corpus, run every system on it, score; return the results dict."""
    started = time.time()
    corpus = build_corpus(opts.corpus, opts.cache, log)
    log(f"corpus ready: {len(corpus.streams)} streams, {sum(s.duration_s for s in corpus.streams) / 3600:.2f} h "
        f"in {corpus.root}")
    jobs, unavailable = _plan(opts)
    _execute(jobs, corpus, opts, log, unavailable)
    results: dict[str, Any] = {"systems": {}, "unavailable": unavailable}
    for name in opts.systems:
        for kw in opts.corpus.keywords:
            mine = [j for j in jobs if j.system.name == name and j.keyword == kw]
            if not mine or any(j.run is None for j in mine):
                continue
            results["systems"].setdefault(name, {})[kw] = _score_system(SYSTEMS[name], kw, mine, corpus)
    results["corpus"] = _corpus_summary(corpus)
    results["machine"] = machine_info()
    results["started_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    results["duration_s"] = round(time.time() - started, 1)
    results["kws_manifests"] = {k: str(p) for k, p in opts.kws_manifests.items()}
    return results


def _plan(opts: BenchOptions) -> tuple[list[_Job], dict[str, str]]:
    jobs: list[_Job] = []
    unavailable: dict[str, str] = {}
    for name in opts.systems:
        spec = SYSTEMS[name]
        for kw in opts.corpus.keywords:
            if spec.keywords is not None and kw not in spec.keywords:
                unavailable[f"{name}/{kw}"] = f"{spec.title} ships no {kw} model"
                continue
            if name == "kws_edge":
                if kw not in opts.kws_manifests:
                    unavailable[f"{name}/{kw}"] = f"no kws_edge model for {kw}"
                    continue
                jobs.append(_Job(spec, kw, f"{name}-{kw}", {"manifest": str(opts.kws_manifests[kw])}))
            elif name == "pocketsphinx":
                for th in SPHINX_THRESHOLDS:
                    jobs.append(_Job(spec, kw, f"{name}-{kw}-{th:g}",
                                     {"keyphrase": keyword_text(kw), "threshold": th}))
            else:
                jobs.append(_Job(spec, kw, f"{name}-{kw}", {"model": kw}))
    return jobs, unavailable


def _execute(jobs: list[_Job], corpus: Corpus, opts: BenchOptions, log: Callable[[str], None],
             unavailable: dict[str, str]) -> None:
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
        streams = [{"name": s.name, "path": str(corpus.path(s))} for s in corpus.for_keyword(job.keyword)]
        payload = {"keyword": job.keyword, "chunk": CHUNK, "streams": streams, "options": job.options}
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


def _score_system(spec: SystemSpec, kw: str, jobs: Sequence[_Job], corpus: Corpus) -> dict[str, Any]:
    streams = corpus.for_keyword(kw)
    if spec.name == "pocketsphinx":
        by_thr: dict[float, dict[str, list[float]]] = {}
        for j in jobs:
            if j.run is None:
                continue
            th = j.options["threshold"]
            by_thr[th] = {s: next(iter(d.values())) for s, d in j.run.result["detections"].items()}
        points = [{"threshold": th, **scoring.score_streams(streams, dets)} for th, dets in sorted(by_thr.items())]
        cost_job = next(j for j in jobs if j.options["threshold"] == SPHINX_DEFAULT)
        default = next(p for p in points if p["threshold"] == SPHINX_DEFAULT)
        rule = {"kind": "pocketsphinx kws_threshold (one decoder process per value)"}
        out: dict[str, Any] = {"default": default, "sweep": [_slim(p) for p in points]}
    else:
        cost_job = jobs[0]
        if cost_job.run is None:
            raise RuntimeError(f"{cost_job.tag} has no result")  # the caller only passes finished jobs
        out, rule = _score_traces(spec, cost_job.run.result, streams)
    out["operating_point"] = scoring.operating_point(out["sweep"])
    if cost_job.run is None:
        raise RuntimeError(f"{cost_job.tag} has no result")
    out["cost"] = _cost(spec, cost_job.run, [j.run.maxrss_mb for j in jobs if j.run])
    out["decision_rule"] = rule
    out["info"] = cost_job.run.result.get("info", {})
    reused = sorted({j.run.extra["reused_from_utc"] for j in jobs if j.run and "reused_from_utc" in j.run.extra})
    if reused:
        out["reused_from_utc"] = reused
    return out


def _score_traces(spec: SystemSpec, result: dict[str, Any], streams: Sequence[Any]) -> tuple[dict[str, Any],
                                                                                              dict[str, Any]]:
    info = result.get("info", {})
    default = float(info.get("default_threshold", 0.5))
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

    points = [{"threshold": th, **scoring.score_streams(streams, detect(th))}
              for th in scoring.sweep_thresholds(default)]
    out: dict[str, Any] = {"default": next(p for p in points if p["threshold"] == round(default, 5)),
                           "sweep": [_slim(p) for p in points]}
    if spec.name == "kws_edge":
        replay = detect(default)
        real = {n: d.get("detector", []) for n, d in result["detections"].items()}
        diff = sum(len(set(np.round(replay[n], 3)) ^ set(np.round(real.get(n, []), 3))) for n in replay)
        out["replay_check"] = {"detector_detections": sum(len(v) for v in real.values()),
                               "replay_detections": sum(len(v) for v in replay.values()), "differences": diff}
    return out, rule


def _slim(p: dict[str, Any]) -> dict[str, Any]:
    keys = ("threshold", "frr", "fa_per_h", "false_accepts", "misses", "frr_by_snr")
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
