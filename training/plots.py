"""PNG plots of an evaluation report: DET curve, FRR per SNR, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def det_plot(report: dict[str, Any], path: Path) -> None:
    """FRR (%) against false accepts per hour, one point per threshold; the chosen point marked."""
    plt = _pyplot()
    curve = report["det"]["curve"]
    fa = np.array([c["fa_per_hour"] for c in curve])
    frr = np.array([c["frr"] for c in curve]) * 100
    chosen = report["det"]["chosen"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    floor = 0.5 / max(report["streams"]["negative_hours"], 1e-9)  # plot 0 FA/h at half a false accept
    ax.plot(np.maximum(fa, floor), frr, "-o", ms=2.5, lw=1.2, label="threshold sweep")
    ax.plot(max(chosen["fa_per_hour"], floor), chosen["frr"] * 100, "r*", ms=14,
            label=f"chosen: threshold {chosen['threshold']:.3f}")
    target = report.get("target_fa_per_hour", 0.5)
    ax.axvline(target, color="grey", ls="--", lw=1, label=f"{target} FA/h target")
    ax.axhline(5, color="grey", ls=":", lw=1, label="5 % FRR target")
    ax.set_xscale("log")
    ax.set_xlabel(f"false accepts per hour (0 plotted at {floor:.2g})")
    ax.set_ylabel("false rejects (%)")
    ax.set_ylim(0, min(100.0, max(20.0, chosen["frr"] * 130 + 5, float(np.nanmin(frr)) * 3 + 5)))
    ax.set_title(f"{report['model']}: DET on held-out voices "
                 f"({report['streams']['negative_hours']:.2f} h negative stream)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def frr_snr_plot(report: dict[str, Any], path: Path) -> None:
    """False-reject rate per SNR at the chosen threshold."""
    plt = _pyplot()
    frr = report["frr_at_threshold"]
    keys = list(frr)
    names = ["clean" if float(k) >= 100 else f"{float(k):g} dB" for k in keys]
    vals = [frr[k]["frr"] * 100 for k in keys]
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=110)
    bars = ax.bar(names, vals, color="tab:blue")
    for b, v in zip(bars, vals, strict=True):
        ax.annotate(f"{v:.1f} %", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("false rejects (%)")
    ax.set_xlabel("signal-to-noise ratio")
    ax.set_ylim(0, max(10.0, max(vals) * 1.25 if vals else 10.0))
    ax.set_title(f"{report['model']}: FRR per SNR at threshold {report['summary']['threshold']:.3f}")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def confusion_plot(report: dict[str, Any], labels: Sequence[str], path: Path) -> None:
    """Row-normalised int8 confusion matrix on the held-out (augmented) test windows."""
    plt = _pyplot()
    cm = np.array(report["clip"]["test"]["int8"]["confusion"], dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(labels)
    size = max(4.0, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    acc = report["clip"]["test"]["int8"]["accuracy"]
    ax.set_title(f"{report['model']} int8: accuracy {acc * 100:.1f} % (held-out voices)", fontsize=10)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def real_det_plot(real: dict[str, Any], path: Path) -> None:
    """Real voices: DET curve (FRR vs FA/h) per condition with the model's operating point marked; for a
    model without real positives, FA/h against threshold with its threshold marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    hours = min(real["negative_hours"].values())
    floor = min(0.5 / max(hours, 1e-9), 0.2)  # plot 0 FA/h at half a false accept, below the targets
    has_pos = bool(real["positive_folders"])
    thr = max(real["decision"]["thresholds"].values())
    for (name, curve), color in zip(real["det"].items(), ("tab:blue", "tab:orange", "tab:green"), strict=False):
        fa = np.maximum([c["fa_per_hour"] for c in curve], floor)
        at = real["at_threshold"][name]
        fa_op = max(at["fa_per_hour"], floor)
        if has_pos:
            frr = np.array([c["frr"] for c in curve]) * 100
            ax.plot(fa, frr, "-o", ms=2, lw=1.2, color=color, label=f"{name}")
            ax.plot(fa_op, at["rejects"]["frr"] * 100, "*", ms=14, color=color, mec="black",
                    label=f"{name} at threshold {thr:.3f}")
        else:
            ax.plot([c["threshold"] for c in curve], fa, "-", lw=1.2, color=color, label=name)
            ax.plot(thr, fa_op, "*", ms=14, color=color, mec="black", label=f"{name} at threshold {thr:.3f}")
    for target in (0.5, 1.0):
        line = ax.axvline if has_pos else ax.axhline
        line(target, color="grey", ls="--" if target == 0.5 else ":", lw=1, label=f"{target} FA/h")
    if has_pos:
        ax.set_xscale("log")
        ax.set_xlabel(f"false accepts per hour on real speech (0 plotted at {floor:.2g})")
        ax.set_ylabel("false rejects of real voices (%)")
        ax.set_ylim(0, 100)
    else:
        ax.set_yscale("log")
        ax.set_xlabel("threshold")
        ax.set_ylabel(f"false accepts per hour (0 plotted at {floor:.2g})")
    ax.set_title(f"{real['model']}: real voices ({hours:.2f} h of negative speech per condition)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_all(report: dict[str, Any], labels: Sequence[str], out_dir: Path) -> list[Path]:
    """Write det.png, frr_snr.png and confusion.png into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "det.png", out_dir / "frr_snr.png", out_dir / "confusion.png"]
    det_plot(report, paths[0])
    frr_snr_plot(report, paths[1])
    confusion_plot(report, labels, paths[2])
    return paths
