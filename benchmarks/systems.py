"""The systems under test and how each one runs: its own venv, its own process, one thread.

Every run is one subprocess executing ``benchmarks/runners/run_<name>.py JOB.json OUT.json`` (see
:mod:`benchmarks.runners._common` for the protocol). Peers run in a venv the bench creates under
``<cache>/venvs/`` from PyPI, pinned to the versions checked by hand (the models are inside the wheels,
so nothing is downloaded at run time). Process CPU time and peak RSS come from ``os.wait4`` on that
child alone; thread pools are limited to one thread by environment (OMP/OpenBLAS/MKL/TF) and, for the
TensorFlow Lite C library the peers use, by interpreter options (see the runners).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNNERS = Path(__file__).resolve().parent / "runners"
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                  "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
SPHINX_THRESHOLDS = (1e-50, 1e-35, 1e-20, 1e-5)
SPHINX_DEFAULT = 1e-20  # the value pocketsphinx's keyword-spotting examples use; its run gives the cost
PEER_REFRACTORY_MS = 1500  # after a detection a peer stays quiet this long (kws_edge: its manifest's value)


@dataclass(frozen=True)
class SystemSpec:
    name: str
    title: str
    runner: str
    requirement: str | None  # PyPI requirement for its own venv; None: the bench's own interpreter
    neural: bool
    keywords: tuple[str, ...] | None  # models it ships; None: any keyword (kws_edge: its models; sphinx: dict)
    note: str = ""


SYSTEMS: dict[str, SystemSpec] = {s.name: s for s in (
    SystemSpec("kws_edge", "kws_edge", "run_kws_edge.py", None, True, None,
               "models/<keyword>.json through kws_edge.pipeline.Detector, LiteRT reference kernels"),
    SystemSpec("pymicro_wakeword", "pymicro-wakeword (microWakeWord)", "run_micro.py",
               "pymicro-wakeword==2.5.0", True, ("hey_jarvis", "alexa", "hey_mycroft", "okay_nabu"),
               "models shipped in the wheel; TFLite C library with num_threads=1"),
    SystemSpec("pyopen_wakeword", "pyopen-wakeword (openWakeWord)", "run_oww.py",
               "pyopen-wakeword==1.1.0", True, ("hey_jarvis", "alexa", "hey_mycroft", "okay_nabu"),
               "models shipped in the wheel (CC BY-NC-SA, research use only, never committed); num_threads=1"),
    SystemSpec("pocketsphinx", "pocketsphinx keyphrase search", "run_sphinx.py", "pocketsphinx==5.1.1",
               False, None, "en-us acoustic model and dictionary shipped in the wheel; one process per threshold"),
    SystemSpec("null", "null (never fires)", "run_null.py", None, False, None, "reads the audio, never fires"),
)}


class Unavailable(Exception):
    """A system that cannot run here; the message says why (it goes into the report)."""


@dataclass
class RunResult:
    result: dict[str, Any]
    cpu_s: float  # user + system CPU of the child process
    maxrss_mb: float
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def ensure_python(spec: SystemSpec, cache: Path, log: Callable[[str], None]) -> str:
    """The interpreter that runs ``spec``: the bench's own, or a venv under ``cache`` created on first use."""
    if spec.requirement is None:
        return sys.executable
    venv = cache / "venvs" / spec.name
    python = venv / "bin" / "python"
    stamp = venv / "kws_bench_requirement.txt"
    if stamp.exists() and stamp.read_text() == spec.requirement and python.exists():
        return str(python)
    log(f"{spec.name}: creating {venv} with {spec.requirement}")
    steps = ([sys.executable, "-m", "venv", "--clear", str(venv)],
             [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", spec.requirement])
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise Unavailable(f"could not install {spec.requirement}: {tail}")
    stamp.write_text(spec.requirement)
    return str(python)


def job_key(python: str, spec: SystemSpec, job: dict[str, Any]) -> str:
    """Everything a run's output depends on: the job, the runner code, the package and the interpreter."""
    h = hashlib.sha256(json.dumps([job, spec.requirement, python], sort_keys=True).encode())
    for f in (RUNNERS / spec.runner, RUNNERS / "_common.py"):
        h.update(f.read_bytes())
    for stream in job["streams"]:
        st = Path(stream["path"]).stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def reused_run(python: str, spec: SystemSpec, job: dict[str, Any], work: Path, tag: str) -> RunResult | None:
    """The stored result of an earlier identical run (same key), or None."""
    meta = work / f"{tag}.{job_key(python, spec, job)}.meta.json"
    if not meta.exists():
        return None
    m = json.loads(meta.read_text())
    result = json.loads((work / f"{tag}.out.json").read_text())
    return RunResult(result, m["cpu_s"], m["maxrss_mb"], m["wall_s"], {"reused_from_utc": m["finished_utc"]})


def run_job(python: str, spec: SystemSpec, job: dict[str, Any], work: Path, tag: str,
            timeout_s: float = 2400.0) -> RunResult:
    """Run one runner process on ``job``; measure its CPU time and peak RSS with ``os.wait4``."""
    work.mkdir(parents=True, exist_ok=True)
    job_path, out_path, err_path = work / f"{tag}.job.json", work / f"{tag}.out.json", work / f"{tag}.stderr"
    for old in work.glob(f"{tag}.*.meta.json"):
        old.unlink()
    job_path.write_text(json.dumps(job))
    out_path.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | ONE_THREAD_ENV
    t0 = time.monotonic()
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([python, "-E", "-s", str(RUNNERS / spec.runner), str(job_path), str(out_path)],
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env, cwd=str(work))
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if proc.returncode != 0 or not out_path.exists():
        tail = err_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise Unavailable(f"{spec.runner} exited with {proc.returncode}: {' | '.join(tail) or 'no output'}")
    result = json.loads(out_path.read_text())
    run = RunResult(result, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, wall)
    meta = {"cpu_s": run.cpu_s, "maxrss_mb": run.maxrss_mb, "wall_s": wall,
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (work / f"{tag}.{job_key(python, spec, job)}.meta.json").write_text(json.dumps(meta))
    return run
