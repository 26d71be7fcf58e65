"""Recipes and bad input: clear errors naming the file, key and value, before any long work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kws_edge.cli import main
from kws_edge.errors import ConfigError
from training.recipe import load_recipe, parse_recipe
from training.text import check_keyword, confusables, keyword_label, sentences

REPO = Path(__file__).resolve().parent.parent
BASE = 'name = "t"\nkind = "wakeword"\nkeywords = ["hey jarvis"]\n'


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.toml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("name", ["hey_jarvis", "commands", "computer", "computer_nano", "default", "default_nano"])
def test_shipped_recipes_parse(name: str) -> None:
    r = load_recipe(REPO / "training" / "recipes" / f"{name}.toml")
    assert r.name == name
    assert r.labels[:2] == ("_silence_", "_unknown_")


@pytest.mark.parametrize(("extra", "match"), [
    ("[synthesis]\nrat = [1.0, 1.2]\n", r"r\.toml: synthesis: unknown key\(s\) rat"),
    ("bogus = 1\n", r"unknown key\(s\) bogus"),
    ("[train]\nepochs = \"ten\"\n", r"train\.epochs: expected an integer, got 'ten'"),
    ("[synthesis]\nrate = [1.3, 0.8]\n", r"synthesis\.rate: expected \[low, high\]"),
    ("[augment]\nnoise_kinds = [\"purple\"]\n", r"unknown kind\(s\) \['purple'\]"),
    ("[model]\nfamily = \"rnn\"\n", r"model\.family: expected one of 'window', 'stream', 'embedding', got 'rnn'"),
    ("[model]\nfamily = \"embedding\"\n[train]\ntime_masks = 2\n",
     r"model\.family = 'embedding' takes no .*train\.time_masks"),
    ("[model]\nfamily = \"stream\"\npool_frames = 30\n", r"receptive field is 50 frames"),
    ("[model]\nfamily = \"stream\"\nkernel = 0\n", r"kernel >= 1"),
])
def test_bad_recipe_keys(tmp_path: Path, extra: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_recipe(_write(tmp_path, BASE + extra))


@pytest.mark.parametrize(("keyword", "match"), [
    ("", "keyword is empty"),
    ("   ", "keyword is empty"),
    ("zzxq", "has no vowel"),
    ("hey 42!", "not pronounceable text"),
])
def test_bad_keywords(keyword: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_keyword(keyword)
    with pytest.raises(ConfigError, match=match):
        parse_recipe({"name": "x", "kind": "wakeword", "keywords": [keyword]}, "r.toml")


def test_cli_reports_bad_recipe_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, BASE + "[model]\nwidth = 3\n")
    assert main(["train", "--recipe", str(path), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "model: unknown key(s) width" in err
    assert "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_cli_missing_recipe_and_empty_keyword(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--recipe", str(tmp_path / "nope.toml")]) == 2
    assert "recipe not found" in capsys.readouterr().err
    assert main(["train", "--keyword", " ", "--out", str(tmp_path / "m")]) == 2
    assert "keyword is empty" in capsys.readouterr().err


def test_missing_tts_engine_names_the_debian_package(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    path = _write(tmp_path, BASE + '[synthesis]\nengines = ["flite"]\n')
    assert main(["train", "--recipe", str(path), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "'flite' is not usable (flite not found on PATH)" in err and "apt-get install flite" in err
    assert os.environ["PATH"] == str(empty)


def test_confusables_and_sentences_exclude_the_keyword() -> None:
    conf = confusables("hey jarvis", 200, seed=3)
    assert "hey jarvis" not in conf
    assert "jarvis" in confusables("hey jarvis", 10_000, seed=3)
    assert conf == confusables("hey jarvis", 200, seed=3)
    cmds = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    for s in sentences(200, seed=4, exclude=cmds):
        assert not set(s.split()) & set(cmds)
    assert keyword_label("Hey  Jarvis") == "hey_jarvis"


@pytest.mark.parametrize("step", ["a", "b", "c"])
def test_step_recipes_parse(step: str) -> None:
    r = load_recipe(REPO / "training" / "recipes" / "steps" / f"computer_step_{step}.toml")
    assert r.keywords == ("computer",) and r.dataset.real_negatives == ("snowboy", "smart_mirror")


@pytest.mark.parametrize(("default", "measured"), [("default", "computer"), ("default_nano", "computer_nano")])
def test_default_recipe_is_the_measured_computer_recipe(default: str, measured: str) -> None:
    """`train --keyword` uses default.toml (`--nano`: default_nano.toml); its settings are those of computer.toml
    (computer_nano.toml), the recipe whose model is measured on real recordings, so the default's real-voice
    figures are known. Only the epoch choice on real recordings of the keyword (train.select_on) may differ:
    a typed keyword has none."""
    import tomllib

    read = lambda n: tomllib.loads((REPO / "training" / "recipes" / f"{n}.toml").read_text())  # noqa: E731
    ours, theirs = read(default), read(measured)
    for recipe in (ours, theirs):
        recipe.get("train", {}).pop("select_on", None)
    tables = {k for k, v in theirs.items() if isinstance(v, dict)}
    assert tables and {k: ours[k] for k in tables} == {k: theirs[k] for k in tables}
    assert load_recipe(REPO / "training" / "recipes" / f"{default}.toml").model.family == \
        ("window" if default.endswith("_nano") else "embedding")


def test_keyword_recipe_drops_real_voice_parts_without_the_recordings(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      realvoice_root: Path) -> None:
    from training.cli import default_recipe

    monkeypatch.setenv("KWS_EDGE_REALVOICE", str(realvoice_root))
    with_real = parse_recipe(default_recipe("hey_bob", ["hey bob"]), "--keyword")
    assert with_real.dataset.real_negatives == ("snowboy", "smart_mirror") and "room" in with_real.augment.noise_kinds
    assert with_real.name == "hey_bob" and with_real.kind == "wakeword" and with_real.keywords == ("hey bob",)
    monkeypatch.setenv("KWS_EDGE_REALVOICE", str(tmp_path / "nowhere"))
    without = parse_recipe(default_recipe("yes_no", ["yes", "no"]), "--keyword")
    assert without.dataset.real_negatives == () and "room" not in without.augment.noise_kinds
    assert without.kind == "commands" and without.model == with_real.model
    nano = parse_recipe(default_recipe("hey_bob", ["hey bob"], nano=True), "--keyword")
    assert with_real.model.family == "embedding" and nano.model.family == "window"
    assert nano.name == "hey_bob" and "default_nano.toml" in nano.description


def test_nano_goes_with_keyword(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--recipe", str(REPO / "training" / "recipes" / "computer.toml"), "--nano",
               "--out", str(tmp_path)])
    assert rc != 0 and "--nano goes with --keyword" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
