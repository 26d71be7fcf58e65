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


@pytest.mark.parametrize("name", ["hey_jarvis", "commands"])
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
    assert "'flite' not found" in err and "apt-get install flite" in err
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
