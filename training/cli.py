"""``kws-edge train``, ``kws-edge eval`` and ``kws-edge export`` (heavy imports happen inside the commands)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from kws_edge.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def default_cache() -> Path:
    """``$KWS_EDGE_CACHE``, else ``<repo>/cache`` (git-ignored) when writable, else ~/.cache/kws-edge."""
    env = os.environ.get("KWS_EDGE_CACHE")
    if env:
        return Path(env)
    if os.access(REPO, os.W_OK):
        return REPO / "cache"
    return Path.home() / ".cache" / "kws-edge"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", type=Path, default=None, help="cache for synthesized clips and features "
                   "(default: $KWS_EDGE_CACHE or <repo>/cache)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default: all usable cores)")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = ("examples:\n  kws-edge train --recipe training/recipes/hey_jarvis.toml\n"
                "  kws-edge train --keyword 'hey computer' --out my_models/\n"
                "  kws-edge train --keyword 'hey computer' --nano --out my_models/")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--recipe", type=Path, help="recipe TOML (see training/recipes/)")
    src.add_argument("--keyword", action="append", help="keyword typed as text (repeat for several); "
                     "uses the default recipe: a speech-embedding model for the Pi "
                     "(training/recipes/default.toml)")
    p.add_argument("--nano", action="store_true", help="with --keyword: an MFCC model that the Nano firmware "
                   "runs too (training/recipes/default_nano.toml); it hears real voices less well")
    p.add_argument("--out", type=Path, default=Path("models"), help="where the model goes (default: models/)")
    p.add_argument("--report-dir", type=Path, default=None, help="default: <out>/reports/<name>/")
    p.add_argument("--run-dir", type=Path, default=None, help="Keras model and firmware C array "
                   "(default: <repo>/runs/<name>/)")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    _common(p)


def default_recipe(name: str, words: list[str], nano: bool = False) -> dict[str, object]:
    """``training/recipes/default.toml`` (``default_nano.toml`` with ``nano``) for these keywords (a wake word;
    several words: commands), without the real-voice parts when the recordings are not on this machine."""
    import logging
    import tomllib

    from training import realvoice

    file = "default_nano.toml" if nano else "default.toml"
    data = tomllib.loads((REPO / "training" / "recipes" / file).read_text(encoding="utf-8"))
    data |= {"name": name, "keywords": words, "kind": "wakeword" if len(words) == 1 else "commands",
             "description": f"{' / '.join(words)}: the default recipe (training/recipes/{file})"}
    try:
        have = set(realvoice.folders(realvoice.realvoice_dir()))
    except ConfigError:
        have = set()
    if not set(data["dataset"].get("real_negatives", [])) <= have:
        logging.getLogger("kws_edge.training").warning(
            "real-voice recordings not found (%s or $KWS_EDGE_REALVOICE): training on TTS voices only",
            realvoice.DEFAULT_DIR)
        data["dataset"] = {k: v for k, v in data["dataset"].items() if not k.startswith("real_negative")}
        data["augment"]["noise_kinds"] = [k for k in data["augment"]["noise_kinds"] if k != "room"]
    return data


def _recipe(args: argparse.Namespace) -> object:
    import dataclasses

    from training.recipe import load_recipe, parse_recipe
    from training.text import keyword_label

    if args.recipe is not None:
        if getattr(args, "nano", False):
            raise ConfigError("--nano goes with --keyword (a recipe names its own model family: [model] family)")
        recipe = load_recipe(args.recipe)
    else:
        words = list(args.keyword)
        name = "_".join(keyword_label(w) for w in words if w.strip()) or "model"
        recipe = parse_recipe(default_recipe(name, words, getattr(args, "nano", False)), "--keyword")
    if getattr(args, "epochs", None):
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, epochs=args.epochs))
    return recipe


def _workers(args: argparse.Namespace) -> int:
    from training.sources import default_workers

    if args.workers < 0:
        raise ConfigError(f"--workers: expected a number >= 0, got {args.workers}")
    return args.workers or default_workers()


def train_main(args: argparse.Namespace) -> int:
    """Synthesize, train, quantize, export and evaluate one recipe."""
    from training.pipeline import check_inputs
    from training.workflow import train_recipe

    recipe = _recipe(args)
    check_inputs(recipe)  # type: ignore[arg-type]
    name = recipe.name  # type: ignore[attr-defined]
    report = train_recipe(recipe, args.out, args.cache or default_cache(),  # type: ignore[arg-type]
                          args.run_dir or REPO / "runs" / name, _workers(args), args.report_dir)
    s = report["summary"]
    print(f"{name}: int8 accuracy {s['accuracy_int8']:.4f} (float {s['accuracy_float']:.4f}), "
          f"FRR {s['frr']:.4f} at {s['fa_per_hour']} FA/h ({_threshold_text(s)}), "
          f"{s['size_bytes']} bytes ({s['gzip_bytes']} gzipped, {s['sparsity']:.1%} zero weights), "
          f"arena {s['arena_bytes']} bytes, {s['runtime_cpu_s_per_hour']} CPU s/h, "
          f"total {report['timings']['total_s']} s")
    if s.get("real_fa_per_hour") is not None:
        frr = s.get("real_frr_clean")
        heard = "no real recordings of the keyword" if frr is None else \
            f"FRR {frr:.1%} clean / {s['real_frr_10db']:.1%} at 10 dB"
        print(f"real voices: {heard}, {s['real_fa_per_hour']:.2f} false accepts per hour on real speech "
              f"(threshold chosen on {s.get('threshold_from', 'synthetic streams')})")
    if s.get("real_vs_synthetic"):
        print(f"warning: real and synthetic voices {s['real_vs_synthetic']}: trust the real figure")
    return 0


def _threshold_text(summary: dict[str, Any]) -> str:
    per_kw: dict[str, float] | None = summary.get("thresholds")
    if not per_kw:
        return f"threshold {summary['threshold']:.3f}"
    return "thresholds " + ", ".join(f"{k} {v:.3f}" for k, v in per_kw.items())


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = ("examples:\n  kws-edge eval --model models/hey_jarvis.json --recipe training/recipes/hey_jarvis.toml\n"
                "  kws-edge eval --model models/hey_jarvis.json --real-only --report-dir /tmp/rv\n\n"
                "real voices: crowd-sourced 16 kHz FLAC recordings, one folder per phrase, in --realvoice-dir\n"
                "(default $KWS_EDGE_REALVOICE, else ../shared/data/realvoice next to the repo). A folder named\n"
                "like a keyword holds its real positives; computer/ and view_glass/ (minus the positive one) and\n"
                "the pocketsphinx-testdata speech are the real negatives.")
    p.add_argument("--model", required=True, help="manifest (.json), .tflite or installed model name")
    p.add_argument("--recipe", type=Path, default=None,
                   help="the recipe the model was trained with (required unless --real-only)")
    p.add_argument("--report-dir", type=Path, default=None, help="default: reports/<name>/ next to the model")
    p.add_argument("--no-update", action="store_true",
                   help="do not write the chosen threshold and metrics into the manifest")
    p.add_argument("--realvoice-dir", type=Path, default=None, metavar="DIR",
                   help="real-voice recordings (default: $KWS_EDGE_REALVOICE or ../shared/data/realvoice); "
                        "without it the real-voice part is skipped when the default folder is missing")
    p.add_argument("--real-only", action="store_true",
                   help="only the real-voice check at the model's own thresholds (no recipe, no synthesis): "
                        "writes real_voice.json and real_det.png and prints a table")
    p.add_argument("--real-positives", choices=("all", "select", "report"), default=None,
                   help="with --real-only: all real positives, or one half of them by file name (a model "
                        "trained with train.select_on = 'real' chose its epoch on the select half, so its "
                        "default is the report half; otherwise all)")
    _common(p)


def eval_main(args: argparse.Namespace) -> int:
    """Evaluate an exported model on the recipe's held-out voices (and on real voices)."""
    from kws_edge.model import resolve_manifest

    if args.recipe is None and not args.real_only:
        raise ConfigError("--recipe is required (the recipe the model was trained with); "
                          "use --real-only to run only the real-voice check, which needs no recipe")
    manifest = resolve_manifest(args.model)
    out = args.report_dir or manifest.parent / "reports" / manifest.stem
    if args.real_only:
        return _real_only(manifest, args.realvoice_dir, out, args.real_positives)
    from training.pipeline import check_inputs
    from training.realvoice import realvoice_dir
    from training.recipe import load_recipe
    from training.workflow import evaluate_recipe

    recipe = load_recipe(args.recipe)
    check_inputs(recipe)
    if args.realvoice_dir is not None:
        realvoice_dir(args.realvoice_dir)  # a folder given explicitly must exist: fail before the long work
    report = evaluate_recipe(manifest, recipe, None, out, cache_dir=args.cache or default_cache(),
                             workers=_workers(args), update=not args.no_update, realvoice_dir=args.realvoice_dir)
    print(f"report: {out / 'report.json'}")
    print(report["summary"])
    return 0


def _real_only(manifest: Path, data_dir: Path | None, out: Path, positives: str | None = None) -> int:
    """``kws-edge eval --real-only``: real_voice.json, real_det.png and a table."""
    import time

    from kws_edge.model import load_model
    from training import plots
    from training.pipeline import write_json
    from training.realvoice import evaluate_real, realvoice_dir, table

    t0 = time.monotonic()
    root = realvoice_dir(data_dir)
    runner = load_model(manifest)
    if positives is None:
        selected = runner.manifest.training.get("recipe", {}).get("train", {}).get("select_on") == "real"
        positives = "report" if selected else "all"
    real = evaluate_real(runner, root, progress=True, positives_half=None if positives == "all" else positives)
    write_json(out / "real_voice.json", real)
    plots.real_det_plot(real, out / "real_det.png")
    print(table(real))
    print(f"wrote {out / 'real_voice.json'} and {out / 'real_det.png'} ({time.monotonic() - t0:.0f} s)")
    return 0


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = ("examples:\n  kws-edge export --model models/hey_jarvis.json --c-array-dir mcu_firmware/model\n"
                "  kws-edge export --keras runs/hey_jarvis/hey_jarvis.keras "
                "--recipe training/recipes/hey_jarvis.toml --out models/")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="exported model (manifest): write its firmware C array")
    src.add_argument("--keras", type=Path, help="a saved .keras model to quantize and export")
    p.add_argument("--c-array-dir", type=Path, help="where model_data.cc/.h go (with --model)")
    p.add_argument("--symbol", default="g_model", help="C symbol of the array (default g_model)")
    p.add_argument("--recipe", type=Path, help="recipe (with --keras: labels, decision, calibration data)")
    p.add_argument("--out", type=Path, default=Path("models"), help="output folder (with --keras)")
    _common(p)


def export_main(args: argparse.Namespace) -> int:
    """Write a model's C array, or re-export a saved Keras model."""
    if args.model:
        from kws_edge import manifest as mf
        from kws_edge.model import resolve_manifest
        from training.export import write_c_array

        if args.c_array_dir is None:
            raise ConfigError("--model needs --c-array-dir DIR (where model_data.cc and model_data.h go)")
        m = mf.load(resolve_manifest(args.model))
        data = m.model_path.read_bytes()
        if mf.sha256_file(m.model_path) != m.sha256:
            raise ConfigError(f"{m.model_path}: sha256 does not match its manifest; re-export the model")
        cc, h = write_c_array(data, m.sha256, args.c_array_dir, args.symbol)
        print(f"wrote {cc} and {h} ({len(data)} bytes, sha256 {m.sha256[:12]})")
        return 0
    if args.recipe is None:
        raise ConfigError("--keras needs --recipe (labels, decision defaults and calibration data)")
    from training.export import ExportSpec, export_keras_file
    from training.pipeline import check_inputs, prepare
    from training.recipe import load_recipe
    from training.train import representative_windows

    recipe = load_recipe(args.recipe)
    check_inputs(recipe)
    prep = prepare(recipe, args.cache or default_cache(), _workers(args), with_stream=False)
    d = recipe.decision
    spec = ExportSpec(recipe.name, recipe.kind, recipe.labels, recipe.keyword_labels,
                      {k: 0.5 for k in recipe.keyword_labels}, stride_frames=d.stride_frames,
                      smoothing_ms=d.smoothing_ms, min_hits=d.min_hits, refractory_ms=d.refractory_ms,
                      description=recipe.description, features=recipe.model.front_end())
    stream = recipe.model.stream_config() if recipe.model.family == "stream" else None
    path = export_keras_file(args.keras, spec, representative_windows(prep.features["train"], 500, recipe.seed),
                             args.out, stream)
    print(f"wrote {path}; run 'kws-edge eval' to choose its threshold", file=sys.stdout)
    return 0
