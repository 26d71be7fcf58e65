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

import numpy as np
import pytest

from tests.conftest import REPO, compose, kws_cmd, needs_tts, shipped, tts

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


def held_out_voices(recipe: str) -> list[str]:
    """The recipe's held-out espeak-ng en-us voice variants (whole voices never used in training)."""
    import tomllib

    from training import tts as voices

    r = tomllib.loads((REPO / "training" / "recipes" / recipe).read_text())
    s = r["synthesis"]
    split = voices.split_voices(voices.all_voices(tuple(s["engines"])), s["holdout_fraction"],
                                s["val_fraction"], r["seed"], tuple(s["holdout_voices"]))
    return sorted(v.name for v in split["test"] if v.engine == "espeak-ng" and v.name.startswith("en-us+"))


def _check_timing(found: list[dict], ends: list[float], keyword: str) -> int:
    """Every detection falls in [end - 0.3 s, end + 1 s] of one utterance, at most one per utterance;
    return how many utterances were detected."""
    hit: set[int] = set()
    for det in found:
        assert det["keyword"] == keyword, det
        near = [i for i, end in enumerate(ends) if end - 0.3 <= det["t"] <= end + 1.0]
        assert near, f"detection at {det['t']} s is near no utterance (ends {ends})"
        assert near[0] not in hit, f"two detections for the utterance ending at {ends[near[0]]} s"
        hit.add(near[0])
    return len(hit)


@needs_tts
def test_hey_jarvis_found_at_the_right_time(tmp_path: Path) -> None:
    model = shipped("hey_jarvis")
    parts: list = [1.5]
    voices = held_out_voices("hey_jarvis.toml")
    assert len(voices) >= 10
    for i, voice in enumerate(voices):
        parts += [tts("hey jarvis", tmp_path / f"kw{i}.wav", voice=voice), 3.0]
    ends = compose(parts, tmp_path / "stream.wav", seed=1)
    found = _detect(tmp_path / "stream.wav", model)
    detected = _check_timing(found, ends, "hey_jarvis")
    # Measured with the shipped model: 15 of these 20 voices. Eval's FRR over all held-out voices is in
    # models/reports/hey_jarvis/report.json; this bound only catches a broken pipeline or model.
    assert detected >= 0.6 * len(voices), f"only {detected} of {len(voices)} held-out voices detected"


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
def test_commands_model_hears_its_words(tmp_path: Path) -> None:
    model = shipped("commands")
    words = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    parts: list = [1.0]
    spoken = []
    for v, voice in enumerate(held_out_voices("commands.toml")[:5]):
        for w in words:
            parts += [tts(w, tmp_path / f"{v}_{w}.wav", voice=voice), 2.0]
            spoken.append(w)
    ends = compose(parts, tmp_path / "cmds.wav", seed=3)
    found = _detect(tmp_path / "cmds.wav", model)
    hit = 0
    for det in found:
        near = [i for i, end in enumerate(ends) if end - 0.3 <= det["t"] <= end + 1.0]
        assert near, f"detection {det} is near no word"
        assert det["keyword"] == spoken[near[0]], f"heard {det['keyword']!r} for {spoken[near[0]]!r}"
        hit += 1
    # Only catches a broken pipeline or model: the commands model's FRR at its false-accept-limited
    # threshold is high (models/reports/commands/report.json, per engine and per voice).
    assert hit >= 0.25 * len(spoken), f"only {hit} of {len(spoken)} words detected"


@pytest.mark.skipif(shutil.which("flite") is None or shutil.which("text2wave") is None,
                    reason="flite and festival (Debian packages flite, festival, festvox-*) are needed")
def test_hey_jarvis_hears_every_flite_and_festival_voice(tmp_path: Path) -> None:
    """Each flite and festival voice says "hey jarvis" once, with a second of silence on both sides: the
    shipped model finds every one, at the right time (the issue that made these engines part of training
    was that awb, kal and rms were never detected)."""
    from kws_edge.audio import write_wav
    from training import tts as engines

    model = shipped("hey_jarvis")
    voices = engines.all_voices(("flite", "festival"))
    assert {v.engine for v in voices} == {"flite", "festival"} and len(voices) >= 7
    missed = []
    for v in voices:
        x = engines.trim_silence(engines.synthesize(v, "hey jarvis"))
        wav = tmp_path / f"{v.name}.wav"
        write_wav(wav, np.concatenate([np.zeros(16000, np.int16), x, np.zeros(16000, np.int16)]))
        found = _detect(wav, model)
        end = 1.0 + len(x) / 16000
        if not any(d["keyword"] == "hey_jarvis" and end - 0.3 <= d["t"] <= end + 1.0 for d in found):
            missed.append(v.id)
        assert len(found) <= 1, (v.id, found)
    assert not missed, f"not detected: {missed}"


@pytest.mark.xfail(strict=True, reason="known miss (issue 9): the shipped commands model does not hear 'down' "
                   "(flite rms) or 'left' (espeak-ng Andy) in the demo; strict, so a model that does turns "
                   "this into a failure to remove the mark")
def test_demo_recording_detects_every_keyword_it_contains() -> None:
    """`make run` plays models/demo/demo.wav through every shipped model: each keyword it contains is
    detected once, near the end of its utterance, and nothing else fires."""
    labels = json.loads((REPO / "models" / "demo" / "demo.labels.json").read_text())
    out = subprocess.run(kws_cmd("detect", str(REPO / "models" / "demo" / "demo.wav"), "--json"),
                         capture_output=True, text=True, check=True)
    found = [json.loads(line) for line in out.stdout.splitlines()]
    missed, matched = [], set()
    for kw in labels["keywords"]:
        hits = [j for j, d in enumerate(found)
                if d["keyword"] == kw["keyword"] and kw["end"] - 0.3 <= d["t"] <= kw["end"] + 1.0]
        if not hits:
            missed.append(f"{kw['keyword']} ({kw['voice']}, {kw['start']} s)")
        assert len(hits) <= 1, f"{kw['keyword']} at {kw['start']} s detected {len(hits)} times"
        matched.update(hits)
    assert not missed, f"the demo's keywords not detected: {missed}"
    extra = [d for j, d in enumerate(found) if j not in matched]
    assert not extra, f"detections matching no keyword in the demo: {extra}"
