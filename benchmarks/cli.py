"""``kws-edge bench``: regenerate the comparison (results.json, results.md, plots) in one command.

Light at import time: everything heavy is imported inside :func:`main`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from kws_edge.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SYSTEMS = ("kws_edge", "pymicro_wakeword", "pyopen_wakeword", "pocketsphinx")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``kws-edge bench``."""
    p.description = (
        "Benchmark kws_edge against open wake-word engines on the same held-out TTS streams: false rejects "
        "per SNR, false accepts per hour, threshold sweeps and DET curves, CPU per audio hour and peak RSS, "
        "MCU figures. Peers are installed from PyPI into venvs under the cache directory on first use.")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results",
                   help="directory for results.json, results.md and the plots (default: %(default)s)")
    p.add_argument("--cache", type=Path, default=REPO / "cache" / "bench",
                   help="corpus, TTS, venvs and raw runs (git-ignored; default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="a ~2-minute corpus (smoke test; numbers meaningless)")
    p.add_argument("--systems", type=_csv, default=DEFAULT_SYSTEMS, metavar="A,B",
                   help="comma-separated: kws_edge, pymicro_wakeword, pyopen_wakeword, pocketsphinx, null "
                        "(default: %(default)s)")
    p.add_argument("--keywords", type=_csv, default=None, metavar="KW,KW",
                   help="keywords to benchmark (default: hey_jarvis, plus alexa when kws_edge ships one, plus computer "
                        "on real recordings only)")
    p.add_argument("--kws-model", action="append", type=Path, default=[], metavar="MANIFEST.json",
                   help="kws_edge model manifest to use for its keyword(s) (default: models/<keyword>.json)")
    p.add_argument("--voices", type=_csv, default=None, metavar="V,V",
                   help="held-out TTS voices, e.g. espeak:en-029+m3,flite:rms (default: see benchmarks.tts)")
    p.add_argument("--per-stream", type=int, default=None, metavar="N",
                   help="keyword instances per positives stream (default 30; --quick: 3)")
    p.add_argument("--negatives-minutes", type=float, default=None, metavar="MIN",
                   help="length of the negatives stream (default 60; --quick: 1)")
    p.add_argument("--seed", type=int, default=1234, help="corpus seed (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="system runs in parallel (default: %(default)s)")
    p.add_argument("--realvoice-dir", type=Path, default=None, metavar="DIR",
                   help="real recordings (one folder of 16 kHz FLAC clips per phrase; default: $KWS_EDGE_REALVOICE, "
                        "else ../shared/data/realvoice)")
    p.add_argument("--extra-speech-dir", type=Path, default=Path("/usr/share/pocketsphinx/test/data"),
                   metavar="DIR", help="more real negative speech: *.wav under DIR (default: pocketsphinx-testdata, "
                                       "%(default)s; skipped when absent)")
    p.add_argument("--no-real", action="store_true", help="leave the real-voice streams out")
    p.add_argument("--reuse-peer-runs", action="store_true",
                   help="reuse a peer's stored run when its corpus, runner and package are unchanged "
                        "(kws_edge always runs; the report names reused runs)")


def _manifests(args: argparse.Namespace) -> dict[str, Path]:
    from kws_edge import manifest as mf

    found: dict[str, Path] = {}
    for path in args.kws_model:
        m = mf.load(path)
        for kw in m.keywords:
            found.setdefault(kw, path)
    for kw in ("hey_jarvis", "alexa", "computer"):
        default = REPO / "models" / f"{kw}.json"
        if kw not in found and default.exists():
            found[kw] = default
    return found


def _config(args: argparse.Namespace, keywords: tuple[str, ...], manifests: dict[str, Path]) -> tuple[Any, str]:
    from benchmarks.corpus import CorpusConfig, quick_config
    from benchmarks.tts import default_voices
    from kws_edge import manifest as mf

    if args.voices:
        voices, source = tuple(args.voices), "--voices"
    else:
        first = next((manifests[k] for k in keywords if k in manifests), None)
        voices, source = default_voices(mf.load(first).training if first else None)
    cfg = quick_config(keywords, voices, args.seed) if args.quick else CorpusConfig(keywords, voices, args.seed)
    changes: dict[str, Any] = {}
    if args.per_stream is not None:
        if args.per_stream < 1:
            raise ConfigError(f"--per-stream: expected a positive number, got {args.per_stream}")
        changes["per_stream"] = args.per_stream
    if args.negatives_minutes is not None:
        if args.negatives_minutes <= 0:
            raise ConfigError(f"--negatives-minutes: expected a positive number, got {args.negatives_minutes}")
        changes["negatives_s"] = 60.0 * args.negatives_minutes
    import dataclasses

    return (dataclasses.replace(cfg, **changes) if changes else cfg), source


def main(args: argparse.Namespace) -> int:
    """Run the bench and write its results; return 0 (peers that cannot run are reported, not fatal)."""
    from benchmarks import mcu, report
    from benchmarks.bench import BenchOptions, run_bench
    from benchmarks.systems import SYSTEMS
    from kws_edge import manifest as mf

    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown:
        raise ConfigError(f"--systems: unknown {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs: expected at least 1, got {args.jobs}")
    manifests = _manifests(args)
    from benchmarks.realcorpus import REAL_KEYWORDS, real_config

    wanted = tuple(args.keywords) if args.keywords else ("hey_jarvis", *(["alexa"] if "alexa" in manifests
                                                                        else []), *REAL_KEYWORDS)
    keywords = tuple(k for k in wanted if k not in REAL_KEYWORDS)  # synthetic corpus keywords
    real_keywords = () if args.no_real else tuple(k for k in wanted if k in REAL_KEYWORDS)
    if not keywords:
        raise ConfigError(f"--keywords: at least one keyword besides {', '.join(REAL_KEYWORDS)} (real-only) is "
                          "needed for the synthetic corpus")
    if "kws_edge" in args.systems and not any(k in manifests for k in wanted):
        raise ConfigError(f"no kws_edge model for {', '.join(keywords)}: expected models/<keyword>.json or "
                          "--kws-model MANIFEST.json (or leave kws_edge out of --systems)")
    cfg, voices_source = _config(args, keywords, manifests)
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    real, real_skipped = None, ""
    if not args.no_real:
        try:
            real = real_config(args.realvoice_dir, args.seed, args.quick, args.extra_speech_dir)
        except ConfigError as exc:
            if args.realvoice_dir is not None:
                raise
            real_skipped = str(exc)
            log(f"real voices: skipped: {exc}")
    opts = BenchOptions(tuple(args.systems), {k: manifests[k] for k in wanted if k in manifests},
                        cfg, args.cache.resolve(), args.jobs, args.reuse_peer_runs, real, real_keywords)
    log(f"voices ({voices_source}): {', '.join(cfg.voices)}")
    results = run_bench(opts, log)
    results["corpus"]["voices_source"] = voices_source
    from benchmarks.tts import voice_roles

    trained = {mf.load(p).name: mf.load(p).training for p in set(opts.kws_manifests.values())}
    results["corpus"]["voice_roles"] = voice_roles(cfg.voices, trained)
    if real_skipped:
        results["unavailable"]["real voices"] = real_skipped
    shipped = sorted(set(opts.kws_manifests.values()) | set((REPO / "models").glob("*.json"))
                     | set((REPO / "models" / "nano").glob("*.json")))
    shipped = [p for p in shipped if not p.name.endswith(".report.json")]
    micro = next(iter((opts.cache / "venvs" / "pymicro_wakeword").glob(
        "lib/python*/site-packages/pymicro_wakeword/models")), None)
    results["mcu"] = mcu.collect(shipped, micro)
    command = ("kws-edge " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"]
               else "kws-edge bench (called from Python)")
    for path in report.write_all(results, args.out, command):
        log(f"wrote {path}")
    return 0
