"""Collect the reports of several training runs per recipe (one per seed) into mean / min / max.

Each run is a ``kws-edge train --out DIR`` directory (or its ``report.json``); the recipe name and seed
come from the model manifest the run wrote (``training.recipe``). The figures per run:

- real-voice FRR at <= 1 and <= 0.5 false accepts per hour on real speech, each condition (clean, 10 dB)
  at its own threshold (``real_voice.at_fa``): the figures to compare; unreachable counts as FRR 1.0;
- the same at the one threshold the run shipped for both conditions (``summary.real_frr_clean`` / ``_10db``);
- clip accuracy int8 / float on the augmented and the clean synthetic test windows.

Usage (the study of issue #10):
    python -m benchmarks.seed_study /tmp/seeds/computer_stream_{1,2,3} /tmp/seeds/computer_stream_distill_{1,2,3} \\
        /tmp/seeds/computer_stream_distill_a08_{1,2,3} --out benchmarks/results/seed_study_stream.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

# (column, title) of the per-run figures, in table order
METRICS = (
    ("frr_1fa_clean", "FRR <=1 FA/h clean"),
    ("frr_1fa_10db", "FRR <=1 FA/h 10 dB"),
    ("frr_05fa_clean", "FRR <=0.5 FA/h clean"),
    ("frr_05fa_10db", "FRR <=0.5 FA/h 10 dB"),
    ("frr_shipped_clean", "FRR shipped thr. clean"),
    ("frr_shipped_10db", "FRR shipped thr. 10 dB"),
    ("acc_int8", "clip acc. int8"),
    ("acc_float", "clip acc. float"),
    ("acc_int8_clean", "clip acc. int8 clean"),
    ("acc_float_clean", "clip acc. float clean"),
)


def find_report(path: Path) -> Path:
    """``path`` itself if a file, else the one ``report.json`` under the run directory."""
    if path.is_file():
        return path
    found = sorted(path.glob("reports/*/report.json")) or sorted(path.rglob("report.json"))
    if len(found) != 1:
        raise ValueError(f"{path}: expected one reports/<name>/report.json, found {len(found)}")
    return found[0]


def _at_fa(real: dict[str, Any], budget: str, condition: str) -> float:
    point = real["at_fa"][budget][condition]
    return float(point["frr"]) if point.get("reachable", True) and point.get("frr") is not None else 1.0


def run_figures(report_path: Path) -> dict[str, Any]:
    """One run's recipe name, seed and figures (fractions) from its report and manifest."""
    report = json.loads(report_path.read_text())
    run_dir = report_path.parent.parent.parent  # <out>/reports/<name>/report.json
    manifest = json.loads((run_dir / report["manifest"]).read_text())
    recipe = manifest["training"]["recipe"]
    real, summary = report["real_voice"], report["summary"]
    return {
        "recipe": recipe["name"], "seed": int(recipe["seed"]), "run": str(run_dir),
        "frr_1fa_clean": _at_fa(real, "1.0", "clean"), "frr_1fa_10db": _at_fa(real, "1.0", "10db"),
        "frr_05fa_clean": _at_fa(real, "0.5", "clean"), "frr_05fa_10db": _at_fa(real, "0.5", "10db"),
        "frr_shipped_clean": summary["real_frr_clean"], "frr_shipped_10db": summary["real_frr_10db"],
        "threshold_shipped": summary["threshold"],
        "acc_int8": summary["accuracy_int8"], "acc_float": summary["accuracy_float"],
        "acc_int8_clean": summary["accuracy_int8_clean"], "acc_float_clean": summary["accuracy_float_clean"],
        "best_epoch": manifest["training"].get("history", {}).get("best_epoch"),
        "recipe_file": manifest["training"].get("recipe_file", ""),
        "total_s": report.get("timings", {}).get("total_s"),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per recipe (in first-seen order): its runs sorted by seed and mean / min / max / spread per figure."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["recipe"] for r in runs):
        mine = sorted((r for r in runs if r["recipe"] == name), key=lambda r: r["seed"])
        stats = {}
        for key, _ in METRICS:
            values = [float(r[key]) for r in mine]
            stats[key] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
                          "spread": max(values) - min(values),
                          "stdev": statistics.stdev(values) if len(values) > 1 else 0.0}
        out[name] = {"seeds": [r["seed"] for r in mine], "runs": mine, "stats": stats}
    return out


def table(study: dict[str, Any], keys: tuple[str, ...] = ("frr_1fa_clean", "frr_1fa_10db", "frr_shipped_clean",
                                                             "frr_shipped_10db", "acc_int8", "acc_float")) -> str:
    """A markdown table: one row per run, then mean and min-max per recipe (percent)."""
    titles = dict(METRICS)
    lines = ["| recipe | seed | " + " | ".join(titles[k] for k in keys) + " |", "|---|---|" + "---|" * len(keys)]
    for name, s in study.items():
        for r in s["runs"]:
            lines.append(f"| {name} | {r['seed']} | " + " | ".join(f"{100 * r[k]:.1f}" for k in keys) + " |")
        st = s["stats"]
        lines.append(f"| {name} | mean | " + " | ".join(f"**{100 * st[k]['mean']:.1f}**" for k in keys) + " |")
        lines.append(f"| {name} | min-max | " + " | ".join(f"{100 * st[k]['min']:.1f}-{100 * st[k]['max']:.1f}"
                                                         for k in keys) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("runs", nargs="+", type=Path, help="kws-edge train --out directories (or their report.json)")
    ap.add_argument("--out", type=Path,
                    help="write the results JSON here (e.g. benchmarks/results/seed_study_stream.json)")
    args = ap.parse_args(argv)
    try:
        runs = [run_figures(find_report(p)) for p in args.runs]
    except (OSError, ValueError, KeyError) as exc:
        print(f"seed_study: {exc}", file=sys.stderr)
        return 2
    study = summarize(runs)
    print(table(study))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"metrics": dict(METRICS), "recipes": study}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
