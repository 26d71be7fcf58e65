"""Speech Commands layout loader on a tiny made-up dataset: labels, official split, bad folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kws_edge.audio import write_wav
from kws_edge.errors import ConfigError
from training import speech_commands as sc
from training.testing import make_speech_commands_dataset as make_dataset
from training.testing import tone as _tone


def test_official_split_and_labels(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "sc", {"yes": 500.0, "no": 900.0, "cat": 1300.0})
    entries = sc.scan(root, ("yes", "no"))
    assert len(entries) == 12
    by = {(e.path.parent.name, e.path.name): e for e in entries}
    assert by[("yes", "00000001_nohash_0.wav")].split == "val"
    assert by[("no", "00000002_nohash_0.wav")].split == "test"
    assert by[("cat", "00000000_nohash_0.wav")].split == "train"
    assert by[("cat", "00000000_nohash_0.wav")].label == "_unknown_"
    assert by[("yes", "00000003_nohash_0.wav")].label == "yes"
    clips = sc.load_clips(root, ("yes", "no"))
    assert {k: len(v) for k, v in clips.items()} == {"train": 6, "val": 3, "test": 3}
    assert all(c.samples.dtype == np.int16 and len(c.samples) == 16000 for cs in clips.values() for c in cs)
    assert {c.role for c in clips["train"]} == {"keyword", "word"}
    noise = sc.background_noise(root)
    assert len(noise) == 1 and len(noise[0]) == 48000


def test_folder_without_wavs(tmp_path: Path) -> None:
    (tmp_path / "empty" / "yes").mkdir(parents=True)
    with pytest.raises(ConfigError, match="contains no <word>/\\*.wav files"):
        sc.scan(tmp_path / "empty", ("yes",))
    with pytest.raises(ConfigError, match="does not exist"):
        sc.scan(tmp_path / "missing", ("yes",))


def test_mismatched_sample_rates(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "sc", {"yes": 500.0, "no": 900.0})
    write_wav(root / "no" / "ffffffff_nohash_0.wav", _tone(700.0, 1, 8000), 8000)
    with pytest.raises(ConfigError, match="mismatched sample rates: 8000 Hz .*16000 Hz"):
        sc.scan(root, ("yes", "no"))


def test_wrong_rate_and_missing_keyword(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "sc8k", {"yes": 500.0}, rate=8000)
    with pytest.raises(ConfigError, match="clips are 8000 Hz, expected 16000 Hz"):
        sc.scan(root, ("yes",))
    root = make_dataset(tmp_path / "sc", {"yes": 500.0})
    with pytest.raises(ConfigError, match="no folder for keyword\\(s\\) stop"):
        sc.scan(root, ("yes", "stop"))
