"""The whole ``kws-edge bench`` on a ~2-minute corpus with the null system and kws_edge (a tiny real model).

No network and no peer venvs: both systems run on this interpreter, each in its own subprocess.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from benchmarks import cli
from kws_edge.errors import ConfigError
from tests.test_bench_real import make_realvoice

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("flite") is None,
                                reason="espeak-ng and flite are needed to synthesize the corpus")


def _args(tmp: Path, manifest: Path, *extra: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    real = tmp / "realvoice"
    if not real.exists():
        make_realvoice(real, per_folder=2)  # hermetic: a tiny FLAC folder, never the shared recordings
    return p.parse_args(["--quick", "--systems", "null,kws_edge", "--kws-model", str(manifest), "--cache",
                         str(tmp / "cache"), "--out", str(tmp / "out"), "--jobs", "2", "--realvoice-dir", str(real),
                         "--extra-speech-dir", str(real / "extra"), *extra])


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    from training.export import update_manifest
    from training.testing import make_tiny_model

    path = make_tiny_model(tmp_path_factory.mktemp("model"), name="tiny_hey_jarvis",
                           labels=("_silence_", "_unknown_", "hey_jarvis"), keywords=("hey_jarvis",), seed=3)
    # An untrained model's posteriors sit near 1/3: a threshold there makes the Detector fire, so the
    # bench's decision replay is checked against real detections.
    update_manifest(path, thresholds={"hey_jarvis": 0.34})
    return path


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def bench_run(bench_dir: Path, tiny_manifest: Path) -> tuple[Path, dict]:
    assert cli.main(_args(bench_dir, tiny_manifest)) == 0
    return bench_dir / "out", json.loads((bench_dir / "out" / "results.json").read_text())


def test_writes_results_tables_and_plots(bench_run: tuple[Path, dict]) -> None:
    out, _ = bench_run
    names = {p.name for p in out.iterdir()}
    assert {"results.json", "results.md", "det_hey_jarvis.png", "frr_snr_hey_jarvis.png"} <= names
    for png in ("det_hey_jarvis.png", "frr_snr_hey_jarvis.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "results.md").read_text()
    for heading in ("## hey_jarvis: accuracy", "## hey_jarvis: cost", "## kws_edge CPU split", "## MCU figures"):
        assert heading in md
    assert "| kws_edge tiny_hey_jarvis |" in md
    assert "## Real voices (headline)" in md and "## Synthetic (TTS) voices: a breakdown" in md
    # computer is measured on real recordings only, with the shipped models/computer.json
    assert "| kws_edge (computer) | computer |" in md
    assert "real_fa.png" in names and "real_det_computer.png" in names


def test_real_speech_is_scored_for_every_system(bench_run: tuple[Path, dict]) -> None:
    _, r = bench_run
    real = r["real"]
    assert real["corpus"]["negative_clips"] == {"view_glass": 2, "pocketsphinx": 1, "computer": 2}
    null = real["systems"]["null"]
    assert null["hey_jarvis"]["default"]["fa_per_h"] == 0.0 and null["hey_jarvis"]["instances"] == 0
    assert null["computer"]["instances"] == 4 and null["computer"]["default"]["frr"] == 1.0
    assert null["computer"]["negative_streams"] == ["real_speech"]
    ours = real["systems"]["kws_edge"]["hey_jarvis"]
    assert ours["negative_streams"] == ["real_speech", "real_computer_speech"] and ours["negative_hours"] > 0
    computer = real["systems"]["kws_edge"]["computer"]
    assert computer["instances"] == 4 and computer["negative_streams"] == ["real_speech"]
    assert "kws_edge/computer" not in r["unavailable"]


def test_null_system_misses_everything_and_never_fires(bench_run: tuple[Path, dict]) -> None:
    _, r = bench_run
    null = r["systems"]["null"]["hey_jarvis"]
    assert r["corpus"]["instances"] == 12
    assert null["default"]["frr"] == 1.0 and null["default"]["false_accepts"] == 0
    assert all(p["frr"] == 1.0 and p["false_accepts"] == 0 for p in null["sweep"])


def test_kws_edge_replay_matches_its_detector_and_costs_are_measured(bench_run: tuple[Path, dict]) -> None:
    _, r = bench_run
    k = r["systems"]["kws_edge"]["hey_jarvis"]
    check = k["replay_check"]
    assert check["detector_detections"] > 0
    assert check["differences"] == 0 and check["replay_detections"] == check["detector_detections"]
    cost = k["cost"]
    assert cost["cpu_s_per_audio_h"] > 0 and cost["peak_rss_mb"] > 10 and cost["threads"] >= 1
    split = cost["split_cpu_s_per_audio_h"]
    assert split["features"] > 0 and split["inference"] > 0
    assert cost["inferences"] > 1000  # one run per 60 ms over ~2 minutes


def test_unknown_system_is_a_clear_error(tmp_path: Path, tiny_manifest: Path) -> None:
    with pytest.raises(ConfigError, match="unknown nosuch"):
        cli.main(_args(tmp_path, tiny_manifest, "--systems", "nosuch"))


def test_reuse_peer_runs_reuses_the_null_run_but_reruns_kws_edge(bench_dir: Path, tiny_manifest: Path,
                                                                  bench_run: tuple[Path, dict]) -> None:
    _, first = bench_run
    assert cli.main(_args(bench_dir, tiny_manifest, "--reuse-peer-runs")) == 0
    again = json.loads((bench_dir / "out" / "results.json").read_text())
    assert again["systems"]["null"]["hey_jarvis"].get("reused_from_utc")
    assert "reused_from_utc" not in again["systems"]["kws_edge"]["hey_jarvis"]
    assert again["corpus"]["root"] == first["corpus"]["root"]  # the cached corpus was used
    assert "## Reused runs" in (bench_dir / "out" / "results.md").read_text()


def test_mcu_mac_count_from_tflite_equals_the_manifest(tiny_manifest: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    from benchmarks import mcu
    from kws_edge import manifest as mf

    m = mf.load(tiny_manifest)
    assert m.macs and mcu.tflite_macs(m.model_path) == m.macs
    fig = mcu.collect([tiny_manifest], None)
    row = fig["kws_edge"][0]
    assert row["inferences_per_s"] == pytest.approx(64e6 / (6 * m.macs))
    assert row["range_low"] < row["inferences_per_s"] < row["range_high"]
    assert any(line.startswith("| kws_edge tiny_hey_jarvis | ") for line in mcu.table(fig))


def test_mcu_figures_leave_out_pi_only_models() -> None:
    """The speech-embedding `computer` has a tiny head but a 1.3 MB front-end: no Nano estimate for it."""
    from benchmarks import mcu

    fig = mcu.collect([cli.REPO / "models" / "computer.json"], None, None)
    assert fig["kws_edge"] == [{"model": "computer", "pi_only": "speech_embedding front-end: runs on the Pi only"}]
    assert "| kws_edge computer | speech_embedding front-end: runs on the Pi only |" in "\n".join(mcu.table(fig))


def test_mcu_table_shows_m4_measurements_of_the_same_export_only(tiny_manifest: Path, tmp_path: Path) -> None:
    """A measured-firmware results file adds the M4 figures for the model whose sha256 it measured; a
    measurement of another export is ignored."""
    from benchmarks import mcu
    from kws_edge import manifest as mf

    m = mf.load(tiny_manifest)
    figures = {"instructions_per_inference": 1_234_567, "instructions_per_audio_second": 21_000_000,
               "arena_used_bytes": 4321}
    results = tmp_path / "firmware_m4.json"
    results.write_text(json.dumps({"models": {m.name: {"sha256": m.sha256, **figures},
                                              "other": {"sha256": "0" * 64, **figures}}}))
    fig = mcu.collect([tiny_manifest], None, results)
    assert fig["kws_edge"][0]["m4"] == figures
    text = "\n".join(mcu.table(fig))
    assert f"| kws_edge {m.name} | 1.23 M | 21.0 | 0.39 | 4,321 |" in text
    results.write_text(json.dumps({"models": {m.name: {"sha256": "f" * 64, **figures}}}))
    assert "m4" not in mcu.collect([tiny_manifest], None, results)["kws_edge"][0]
