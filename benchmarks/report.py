"""Render a bench result: ``results.json``, ``results.md`` (tables) and the DET / FRR-by-SNR plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import mcu, report_real
from benchmarks.scoring import TARGET_FA_PER_H
from benchmarks.systems import SYSTEMS

_SNR_ORDER = ("clean", "20 dB", "10 dB", "5 dB")
OTHER_RESULTS = ("latency.json", "pipeline.json")  # benchmarks/latency_bench.py, benchmarks/pipeline_bench.py


def write_all(results: dict[str, Any], out: Path, command: str) -> list[Path]:
    """Write results.json, results.md and the PNGs into ``out``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    results["command"] = command
    results["latency"] = other_results(out)
    results["targets"] = targets(results)
    paths = [out / "results.json", out / "results.md"]
    paths[0].write_text(json.dumps(results, indent=1, default=float) + "\n")
    paths += plots(results, out)
    paths[1].write_text(markdown(results, [p.name for p in paths[2:]]))
    return paths


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _op(sysres: dict[str, Any]) -> dict[str, Any] | None:
    return sysres.get("operating_point")


def _title(name: str) -> str:
    return SYSTEMS[name].title if name in SYSTEMS else name


def accuracy_table(results: dict[str, Any], kw: str) -> list[str]:
    rows = ["| system | FRR @ <= 0.5 FA/h (threshold) | clean | 20 dB | 10 dB | 5 dB | default thr: FRR / FA/h |",
            "|---|---|---|---|---|---|---|"]
    for name, per_kw in results["systems"].items():
        r = per_kw.get(kw)
        if r is None:
            continue
        op, d = _op(r), r["default"]
        if op is None:
            head = ["not reached in the sweep", "", "", "", ""]
        else:
            by = op["frr_by_snr"]
            head = [f"{_pct(op['frr'])} ({op['threshold']:g})", *(_pct(by.get(c)) for c in _SNR_ORDER)]
        rows.append(f"| {_title(name)} | " + " | ".join(head)
                    + f" | {_pct(d['frr'])} / {d['fa_per_h']:.2f} (thr {d['threshold']:g}) |")
    return rows


def cost_table(results: dict[str, Any], kw: str) -> list[str]:
    rows = ["| system | CPU s per audio hour | % of one core | peak RSS (MB) | threads | setup CPU (s) |",
            "|---|---|---|---|---|---|"]
    for name, per_kw in results["systems"].items():
        r = per_kw.get(kw)
        if r is None:
            continue
        c = r["cost"]
        cpu = c["cpu_s_per_audio_h"]
        rows.append(f"| {_title(name)} | {cpu:.1f} | {cpu / 36:.2f} % | {c['peak_rss_mb']:.0f} | {c['threads']} | "
                    f"{c['setup_cpu_s']:.2f} |")
    return rows


def split_table(results: dict[str, Any]) -> list[str]:
    rows = ["| model | features | inference | decision | audio handling + other | inferences |",
            "|---|---|---|---|---|---|"]
    for kw, r in results["systems"].get("kws_edge", {}).items():
        s = r["cost"].get("split_cpu_s_per_audio_h")
        if s:
            rows.append(f"| {kw} | {s['features']:.1f} | {s['inference']:.1f} | {s['decision']:.1f} | "
                        f"{s['audio_and_other']:.1f} | {r['cost']['inferences']} |")
    return rows


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's three targets for kws_edge's hey_jarvis, each with the numbers and the margin."""
    kw = "hey_jarvis"
    ours = results["systems"].get("kws_edge", {}).get(kw)
    peers = {n: r[kw] for n, r in results["systems"].items() if n not in ("kws_edge", "null") and kw in r}
    if ours is None or not peers:
        return []
    out = []
    for cond in ("clean", "10 dB"):
        mine = (_op(ours) or {}).get("frr_by_snr", {}).get(cond)
        best = {n: (_op(r) or {}).get("frr_by_snr", {}).get(cond) for n, r in peers.items()}
        best = {n: v for n, v in best.items() if v is not None}
        if mine is None or not best:
            continue
        who = min(best, key=lambda n: best[n])
        out.append({"target": f"FRR at <= 0.5 FA/h, {cond}: <= best peer", "kws_edge": mine,
                    "reference": best[who], "reference_system": who, "met": mine <= best[who],
                    "margin": mine - best[who]})
    micro = peers.get("pymicro_wakeword")
    if micro:
        mine, ref = ours["cost"]["cpu_s_per_audio_h"], micro["cost"]["cpu_s_per_audio_h"]
        out.append({"target": "CPU per audio hour <= half of pymicro-wakeword's", "kws_edge": mine,
                    "reference": ref / 2, "reference_system": "pymicro_wakeword", "met": mine <= ref / 2,
                    "margin": mine - ref / 2})
    neural = {n: r["cost"]["peak_rss_mb"] for n, r in peers.items() if SYSTEMS.get(n) and SYSTEMS[n].neural}
    if neural:
        who = min(neural, key=lambda n: neural[n])
        mine = ours["cost"]["peak_rss_mb"]
        out.append({"target": "peak RSS <= best neural peer's + 20 MB", "kws_edge": mine,
                    "reference": neural[who] + 20, "reference_system": who, "met": mine <= neural[who] + 20,
                    "margin": mine - neural[who] - 20})
    return out


def other_results(out: Path) -> dict[str, Any]:
    """The service's latency and the lead's pipeline results, read from their JSON files next to ours."""
    found: dict[str, Any] = {}
    for p in (out / name for name in OTHER_RESULTS):
        try:
            found[p.name] = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):  # not there (yet): the report says so
            continue
    return found


def _flat(d: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    if isinstance(d, dict) and depth < 3:
        items: list[tuple[str, Any]] = []
        for k, v in d.items():
            items += _flat(v, f"{prefix}{k}.", depth + 1)
        return items
    if isinstance(d, (int, float, str)) and not isinstance(d, bool):
        return [(prefix.rstrip("."), d)]
    return []


def latency_lines(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, data in results.get("latency", {}).items():
        pairs = [(k, v) for k, v in _flat(data) if isinstance(v, (int, float))][:20]
        if not pairs:
            continue
        lines += [f"From `{name}`:", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in pairs]
        lines.append("")
    return lines or ["No latency or pipeline results files were found next to results.json."]


def markdown(results: dict[str, Any], images: list[str]) -> str:
    """results.md: every table, the targets and how the numbers were made."""
    m, c = results["machine"], results["corpus"]
    lines = [
        "# kws_edge benchmark", "",
        f"Run {results['started_utc']} on {m['cpu']} ({m['cores']} cores), Python {m['python']}, "
        f"{m['platform']}; took {results['duration_s'] / 60:.1f} min. Command: `{results['command']}`.", "",
        *report_real.markdown(results),
        *report_real.synthetic_lines(results),
        f"Synthetic corpus (seed {c['seed']}): {c['instances']} keyword instances in {c['positives_h']:.2f} h of "
        f"positives streams ({c['per_stream']} per condition; clean and 20/10/5 dB white, pink, babble; a quarter "
        f"reverberated; speed 0.85-1.2, pitch 0.8-1.25) plus {c['negatives_h']:.2f} h of negatives. Voices "
        f"({c.get('voices_source', '')}): {', '.join(c['voices'])}.", "",
    ]
    for kw in sorted({k for r in results["systems"].values() for k in r}):
        hours = next((r[kw]["default"]["hours"] for r in results["systems"].values() if kw in r), 0.0)
        lines += [f"## {kw}: accuracy on synthetic voices", "",
                  f"FRR per SNR at each system's {TARGET_FA_PER_H} FA/h operating point (threshold swept over "
                  f"{hours:.2f} h of audio, so at most {int(TARGET_FA_PER_H * hours)} false accept(s)); the last "
                  "column is the system's own default threshold.", "",
                  *accuracy_table(results, kw), "", f"## {kw}: cost (one model, one thread)", "",
                  *cost_table(results, kw), ""]
    lines += ["## kws_edge CPU split (process CPU s per audio hour)", "", *split_table(results), ""]
    for kw, r in results["systems"].get("kws_edge", {}).items():
        c = r.get("replay_check")
        if c:
            lines += [f"Decision replay check ({kw}): the Detector fired {c['detector_detections']} times at the "
                      f"manifest threshold, the replay {c['replay_detections']} times, {c['differences']} "
                      "differences.", ""]
    lines += ["## Targets (kws_edge hey_jarvis, synthetic voices)", ""]
    for t in results["targets"]:
        fmt = _pct if t["target"].startswith("FRR") else (lambda x: f"{x:.1f}")
        lines.append(f"- {t['target']}: kws_edge {fmt(t['kws_edge'])} vs {fmt(t['reference'])} "
                     f"({t['reference_system']}): {'met' if t['met'] else 'MISSED'} "
                     f"(by {fmt(abs(t['margin']))})")
    lines += ["", "## MCU figures", "", *mcu.table(results.get("mcu", {})), "",
              "## Latency and pipeline (from the service and pipeline benchmarks)", "", *latency_lines(results), ""]
    reused = [f"- {_title(n)} {kw}: run of {', '.join(r['reused_from_utc'])} reused (--reuse-peer-runs)"
              for n, per_kw in results["systems"].items() for kw, r in per_kw.items() if r.get("reused_from_utc")]
    if reused:
        lines += ["## Reused runs", "", *reused, ""]
    if results["unavailable"]:
        lines += ["## Not run", ""] + [f"- {k}: {v}" for k, v in results["unavailable"].items()] + [""]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in images] + ["", "## How it is measured", "",
              *METHOD, ""]
    return "\n".join(lines)


METHOD = [
    "- Every system reads the same 16 kHz streams 1280 samples (80 ms) at a time, in its own process (peers "
    "in their own venvs from PyPI, with the models shipped in their wheels).",
    "- True accept: a detection within [start, end + 1 s] of a labelled instance, one per instance; every "
    "other detection is a false accept. FA/h counts false accepts over all streams of the keyword.",
    "- kws_edge: the Detector's raw posteriors are replayed through its manifest's decision rule (smoothing, "
    "consecutive hits, refractory) for each threshold; the replay is checked against the Detector's own "
    "detections at the manifest threshold. Peers: their own score (microWakeWord's sliding-window mean, "
    "openWakeWord's probability) > threshold, then 1.5 s quiet. pocketsphinx: one decoder process per "
    "kws_threshold, detection when a hypothesis appears.",
    "- CPU: process CPU seconds spent feeding the audio (setup excluded) per hour of audio, one thread "
    "(OMP/OpenBLAS/MKL/TF thread variables = 1; TFLite C interpreters created with num_threads = 1). "
    "Peak RSS: VmHWM of the runner process (its own address space; os.wait4's ru_maxrss, also in "
    "results.json, includes the bench's memory that the forked child carried until exec).",
]


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    """det_<kw>.png (FRR vs FA/h per system) and frr_snr_<kw>.png (FRR per SNR at the operating point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for kw in sorted({k for r in results["systems"].values() for k in r}):
        fig, ax = plt.subplots(figsize=(7, 5))
        for name, per_kw in results["systems"].items():
            r = per_kw.get(kw)
            if r is None or name == "null":
                continue
            pts = sorted(r["sweep"], key=lambda p: (p["threshold"], -p["fa_per_h"]))
            ax.plot([p["fa_per_h"] for p in pts], [100 * p["frr"] for p in pts], marker=".", label=_title(name))
        ax.axvline(TARGET_FA_PER_H, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(left=0)
        ax.set_xlabel("false accepts per hour")
        ax.set_ylabel("false rejects (%)")
        ax.set_ylim(-2, 102)
        ax.set_title(f"DET: {kw} (all conditions)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(out / f"det_{kw}.png")
        fig.savefig(paths[-1], dpi=90, bbox_inches="tight")
        plt.close(fig)
        paths.append(_snr_plot(results, kw, out, plt))
    return paths + report_real.plots(results, out, plt)


def _snr_plot(results: dict[str, Any], kw: str, out: Path, plt: Any) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [n for n, r in results["systems"].items() if kw in r and n != "null"]
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        op = _op(results["systems"][name][kw]) or {"frr_by_snr": {}}
        vals = [100 * (op["frr_by_snr"].get(c) or 0.0) for c in _SNR_ORDER]
        ax.bar([x + i * width for x in range(len(_SNR_ORDER))], vals, width, label=_title(name))
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(_SNR_ORDER))], list(_SNR_ORDER))
    ax.set_ylabel(f"FRR (%) at <= {TARGET_FA_PER_H} FA/h")
    ax.set_title(f"{kw}: false rejects per SNR (no bar: 0 % or no operating point)")
    ax.set_ylim(0, 125)
    ax.legend(fontsize=8, ncol=2, loc="upper center")
    path = out / f"frr_snr_{kw}.png"
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path
