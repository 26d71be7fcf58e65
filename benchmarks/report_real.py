"""The real-voice part of the report: FA/h on real speech per system, FRR on real voices, their plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.systems import SYSTEMS

TRAINING_ENGINES = ("espeak-ng", "espeak-ng-accent", "flite", "festival", "piper")  # training/tts.py


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _thr(x: float) -> str:
    return f"{x:g}"


def _title(name: str, r: dict[str, Any]) -> str:
    title = SYSTEMS[name].title if name in SYSTEMS else name
    model = r.get("info", {}).get("model") or r.get("info", {}).get("keyphrase")
    return f"{title} ({model})" if model else title


def _no_model_rows(results: dict[str, Any], kw: str, cells: int) -> list[str]:
    return [f"| {SYSTEMS[k.split('/')[0]].title} | " + " | ".join([f"{v}"] + [""] * (cells - 1)) + " |"
            for k, v in results["unavailable"].items() if k.endswith(f"/{kw}") and k.split("/")[0] in SYSTEMS]


def fa_table(results: dict[str, Any]) -> list[str]:
    """FA/h on the real negative speech at each system's default threshold and the thresholds it needs."""
    rows = ["| system (model) | keyword | real speech (h) | FA/h at default threshold (false accepts) | "
            "where they fell | lowest threshold with <= 1 FA/h | with <= 0.5 FA/h |", "|---|---|---|---|---|---|---|"]
    for name, per_kw in results["real"]["systems"].items():
        if name == "null":
            continue
        for kw, r in per_kw.items():
            d = r["default"]
            src = ", ".join(f"{k} {v}" for k, v in d.get("false_accepts_by_source", {}).items()) or "-"
            at = []
            for t in ("1", "0.5"):
                p = r["at_fa"].get(t)
                if p is None:
                    at.append("not reached")
                elif r["instances"]:
                    at.append(f"{_thr(p['threshold'])} ({p['fa_per_h']:.2f} FA/h, FRR {_pct(p['frr'])})")
                else:
                    at.append(f"{_thr(p['threshold'])} ({p['fa_per_h']:.2f} FA/h)")
            rows.append(f"| {_title(name, r)} | {kw} | {r['negative_hours']:.2f} | {d['fa_per_h']:.2f} at "
                        f"{_thr(d['threshold'])} ({d['false_accepts']}) | {src} | {at[0]} | {at[1]} |")
    return rows


def frr_table(results: dict[str, Any], kw: str) -> list[str]:
    """FRR on the real recordings of ``kw``, clean and noisy, at the default threshold and at FA/h targets."""
    rows = ["| system (model) | default threshold | FRR clean | FRR 10 dB | FA/h | FRR @ <= 0.5 FA/h: clean / 10 dB "
            "(threshold) | FRR @ <= 1 FA/h: clean / 10 dB (threshold) |", "|---|---|---|---|---|---|---|"]
    for name, per_kw in results["real"]["systems"].items():
        r = per_kw.get(kw)
        if r is None or not r["instances"] or name == "null":
            continue
        d = r["default"]
        cells = []
        for t in ("0.5", "1"):
            p = r["at_fa"].get(t)
            cells.append("not reached" if p is None else f"{_pct(p['frr_by_snr'].get('clean'))} / "
                         f"{_pct(p['frr_by_snr'].get('10 dB'))} ({_thr(p['threshold'])})")
        rows.append(f"| {_title(name, r)} | {_thr(d['threshold'])} | {_pct(d['frr_by_snr'].get('clean'))} | "
                    f"{_pct(d['frr_by_snr'].get('10 dB'))} | {d['fa_per_h']:.2f} | {cells[0]} | {cells[1]} |")
    return rows + _no_model_rows(results, kw, 6)


def markdown(results: dict[str, Any]) -> list[str]:
    """The headline section of results.md."""
    real = results.get("real", {})
    if not real.get("systems"):
        why = results["unavailable"].get("real voices", "not run (--no-real)")
        return ["## Real voices (headline)", "", f"Not measured: {why}", ""]
    c = real["corpus"]
    neg = ", ".join(f"`{n}` {v['hours']:.2f} h" + (f" (not for {', '.join(v['excluded_for'])})"
                                                    if v["excluded_for"] else "")
                    for n, v in c["negative_streams"].items())
    clips = ", ".join(f"{k} {v}" for k, v in c["negative_clips"].items())
    pos_kw = sorted({kw for per in real["systems"].values() for kw, r in per.items() if r["instances"]})
    lines = ["## Real voices (headline)", "",
             f"Crowd-sourced recordings from `{c['data_dir']}` (Picovoice wake-word benchmark, 50+ speakers on their "
             "own devices) plus pocketsphinx-testdata's read speech, streamed like the synthetic corpus (seed "
             f"{c['seed']}). Real negative speech: {neg}; clips per source: {clips}. `smart_mirror/` and "
             "`snowboy/` are left out on purpose: kws_edge may train on them as negatives. Real positives: "
             + ", ".join(f"`{n}` ({k} clips)" for n, k in c["positive_streams"].items())
             + " (clean, and pink/white/brown noise at "
             f"{c['snr_db']:g} dB); no word timing, so an instance spans its whole clip and a detection up to "
             "1 s after it counts. FA/h is counted on the negative speech only: with "
             + " / ".join(f"{h:.2f} h" for h in sorted({r["negative_hours"] for per in real["systems"].values()
                                                       for r in per.values()}))
             + " of it, one false accept is "
             + " / ".join(f"{1 / h:.1f} FA/h" for h in sorted({r["negative_hours"] for per in real["systems"].values()
                                                              for r in per.values()}) if h > 0)
             + ": the real FA/h figures are coarse (see the false-accept counts).", "",
             "### False accepts per hour on real speech (no keyword in it)", "", *fa_table(results), ""]
    for kw in pos_kw:
        lines += [f"### {kw} on real voices", "", *frr_table(results, kw), ""]
    missing = [f"- {k}: {v}" for k, v in results["unavailable"].items() if k.startswith("kws_edge/")]
    if missing:
        lines += ["Not measured:", "", *missing, ""]
    return lines


def synthetic_lines(results: dict[str, Any]) -> list[str]:
    """Which TTS voices the synthetic breakdown uses, whose training engines they are, FRR per engine."""
    c = results["corpus"]
    roles = c.get("voice_roles", {})
    models = sorted({m for v in roles.values() for m in v["kws_edge"]})
    lines = ["## Synthetic (TTS) voices: a breakdown, not the headline", "",
             "Every offline TTS engine the bench can run (" + ", ".join(TRAINING_ENGINES) + ") is one of kws_edge's "
             "training engines (training/tts.py; the new recipes train on all five). No synthetic voice is "
             "therefore independent of our training, even when the model held that voice out, and peers are "
             "tested on voices whose *engine* we trained on: this favours kws_edge. The synthetic streams are "
             "kept as a per-engine breakdown (below); the headline comparison is the real recordings above. "
             "Voices: per engine, up to four voice groups the model's recipe holds out (one voice each), plus "
             "every festival and piper voice (too few to hold out, so kws_edge may have trained on them).", ""]
    if roles:
        lines += ["| voice | engine | " + " | ".join(f"kws_edge {m}" for m in models) + " |",
                  "|---|---|" + "---|" * len(models)]
        lines += [f"| {v} | {r['engine']} | " + " | ".join(r["kws_edge"].get(m, "") for m in models) + " |"
                  for v, r in roles.items()]
        lines.append("")
    for kw in sorted({k for r in results["systems"].values() for k in r}):
        engines = sorted({e for per in results["systems"].values() if kw in per
                          for e in per[kw]["default"].get("frr_by_engine", {})})
        if not engines:
            continue
        lines += [f"### {kw}: FRR per TTS engine (all conditions) at the 0.5 FA/h operating point / default "
                  "threshold", "", "| system | " + " | ".join(engines) + " |", "|---|" + "---|" * len(engines)]
        for name, per in results["systems"].items():
            if kw not in per or name == "null":
                continue
            op = (per[kw].get("operating_point") or {}).get("frr_by_engine", {})
            d = per[kw]["default"].get("frr_by_engine", {})
            lines.append(f"| {_title(name, {})} | " + " | ".join(f"{_pct(op.get(e))} / {_pct(d.get(e))}"
                                                                  for e in engines) + " |")
        lines.append("")
    return lines


def plots(results: dict[str, Any], out: Path, plt: Any) -> list[Path]:
    """real_fa.png (FA/h on real speech per system and model at its default threshold and across the sweep)
    and real_det_<kw>.png (FRR vs FA/h on real voices, clean and 10 dB)."""
    real = results.get("real", {}).get("systems", {})
    rows = [(name, kw, r) for name, per in real.items() if name != "null" for kw, r in per.items()]
    if not rows:
        return []
    paths = []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [f"{_title(n, r)}\n{kw}" for n, kw, r in rows]
    vals = [r["default"]["fa_per_h"] for _, _, r in rows]
    ax1.barh(range(len(rows)), vals, color="tab:red")
    ax1.set_yticks(range(len(rows)), labels, fontsize=7)
    ax1.set_xscale("symlog", linthresh=1)
    ax1.set_xlim(0, max(2.0, 1.5 * max(vals)))
    ax1.set_xlabel("false accepts per hour at the default threshold")
    ax1.set_title("Real speech: FA/h (shipped thresholds)")
    for i, v in enumerate(vals):
        ax1.text(v, i, f" {v:.2f}", va="center", fontsize=7)
    for name, kw, r in rows:
        pts = sorted(r["sweep"], key=lambda p: p["threshold"])
        x = list(range(len(pts))) if name == "pocketsphinx" else [p["threshold"] for p in pts]
        if name == "pocketsphinx":
            x = [0.2 + 0.2 * i for i in x]  # 4 kws_threshold values, drawn at 0.2..0.8 (see the label)
        ax2.plot(x, [p["fa_per_h"] for p in pts], marker="." if name != "pocketsphinx" else "o",
                 label=f"{_title(name, r)} {kw}")
    ax2.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax2.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax2.set_yscale("symlog", linthresh=0.5)
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel("threshold (pocketsphinx: its 4 kws_threshold values, low to high)")
    ax2.set_ylabel("false accepts per hour on real speech")
    ax2.set_title("Real speech: FA/h over the threshold sweep")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=6)
    paths.append(out / "real_fa.png")
    fig.savefig(paths[-1], dpi=90, bbox_inches="tight")
    plt.close(fig)
    for kw in sorted({kw for _, kw, r in rows if r["instances"]}):
        fig, ax = plt.subplots(figsize=(7, 5))
        for name, k, r in rows:
            if k != kw:
                continue
            pts = sorted(r["sweep"], key=lambda p: p["threshold"])
            for cond, style in (("clean", "-"), ("10 dB", "--")):
                ax.plot([p["fa_per_h"] for p in pts], [100 * (p["frr_by_snr"].get(cond) or 0.0) for p in pts],
                        style, marker=".", label=f"{_title(name, r)} {cond}")
            d = r["default"]
            ax.plot([d["fa_per_h"]], [100 * (d["frr_by_snr"].get("clean") or 0.0)], "k*", markersize=10)
        for t in (0.5, 1.0):
            ax.axvline(t, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(left=0)
        ax.set_ylim(-2, 102)
        ax.set_xlabel("false accepts per hour on real speech")
        ax.set_ylabel("false rejects on real voices (%)")
        ax.set_title(f"DET on real voices: {kw} (star: default threshold, clean)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        paths.append(out / f"real_det_{kw}.png")
        fig.savefig(paths[-1], dpi=90, bbox_inches="tight")
        plt.close(fig)
    return paths
