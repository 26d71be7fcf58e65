"""`kws-edge detect` on synthesized speech with the shipped models: the keyword is found at the right time,
and ordinary speech stays silent.

Voices: flite "rms" is always held out of training (training/recipe.py), so these utterances come from a
voice the models never heard.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import compose, kws_cmd, needs_tts, shipped, tts

needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite is needed (apt-get install flite)")

SENTENCES = [
    "the garden looks lovely after the rain",
    "could you pass me the salt and pepper please",
    "we are driving to the coast this weekend",
    "my neighbour has a very friendly dog",
]


def _detect(wav: Path, model: Path) -> list[dict]:
    out = subprocess.run(kws_cmd("detect", str(wav), "--model", str(model), "--json"), capture_output=True,
                         text=True, check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


@needs_tts
@needs_flite
def test_hey_jarvis_found_at_the_right_time(tmp_path: Path) -> None:
    model = shipped("hey_jarvis")
    kw = tts("hey jarvis", tmp_path / "kw.wav", voice="rms", engine="flite")
    ends = compose([1.5, kw, 3.0, kw, 2.5, kw, 2.0], tmp_path / "stream.wav", seed=1)
    found = _detect(tmp_path / "stream.wav", model)
    assert len(found) == len(ends), found
    for det, end in zip(found, ends, strict=True):
        assert det["keyword"] == "hey_jarvis" and det["model"] == "hey_jarvis"
        assert end - 0.3 <= det["t"] <= end + 1.0, (det, end)


@needs_tts
@needs_flite
def test_ordinary_speech_stays_silent(tmp_path: Path) -> None:
    model = shipped("hey_jarvis")
    parts: list = [1.0]
    for i, text in enumerate(SENTENCES):
        parts += [tts(text, tmp_path / f"s{i}.wav", voice="rms", engine="flite"), 0.7]
    compose(parts, tmp_path / "talk.wav", seed=2)
    assert _detect(tmp_path / "talk.wav", model) == []


@needs_tts
@needs_flite
def test_commands_model_hears_its_words(tmp_path: Path) -> None:
    model = shipped("commands")
    words = ["yes", "stop", "left"]
    parts: list = [1.0]
    for w in words:
        parts += [tts(w, tmp_path / f"{w}.wav", voice="rms", engine="flite"), 2.0]
    ends = compose(parts, tmp_path / "cmds.wav", seed=3)
    found = _detect(tmp_path / "cmds.wav", model)
    assert [d["keyword"] for d in found] == words, found
    for det, end in zip(found, ends, strict=True):
        assert end - 0.3 <= det["t"] <= end + 1.0, (det, end)
