"""Datasets in the Speech Commands folder layout, with their official split.

Layout: ``<root>/<word>/*.wav`` (16 kHz mono, ~1 s), ``<root>/_background_noise_/*.wav``,
``<root>/validation_list.txt`` and ``<root>/testing_list.txt`` (paths relative to root, one per line).
A word folder named like a keyword label gives that label; every other word is ``_unknown_``.
Files in neither list are training files.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kws_edge.audio import read_wav
from kws_edge.errors import ConfigError
from training.sources import Clip, parallel_map

NOISE_DIR = "_background_noise_"
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Entry:
    path: Path
    label: str
    split: str  # train | val | test


def _rate(path: Path) -> int:
    try:
        with wave.open(str(path), "rb") as w:
            return w.getframerate()
    except (wave.Error, EOFError, OSError) as exc:
        raise ConfigError(f"{path}: not a readable WAV file ({exc})") from None


def _read_list(root: Path, name: str) -> set[str]:
    path = root / name
    if not path.exists():
        return set()
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def scan(root: Path, keyword_labels: tuple[str, ...]) -> list[Entry]:
    """Every clip with its label and official split; ConfigError for an unusable folder."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"dataset folder {root} does not exist or is not a directory")
    words = sorted(d for d in root.iterdir() if d.is_dir() and d.name != NOISE_DIR and not d.name.startswith("."))
    val, test = _read_list(root, "validation_list.txt"), _read_list(root, "testing_list.txt")
    entries: list[Entry] = []
    rates: dict[int, Path] = {}
    for d in words:
        for wav in sorted(d.glob("*.wav")):
            rel = f"{d.name}/{wav.name}"
            split = "test" if rel in test else "val" if rel in val else "train"
            label = d.name if d.name in keyword_labels else "_unknown_"
            entries.append(Entry(wav, label, split))
            rates.setdefault(_rate(wav), wav)
    if not entries:
        raise ConfigError(f"dataset folder {root} contains no <word>/*.wav files (Speech Commands layout: "
                          "<root>/<word>/<clip>.wav)")
    if len(rates) > 1:
        detail = ", ".join(f"{r} Hz ({p})" for r, p in sorted(rates.items()))
        raise ConfigError(f"dataset folder {root}: mismatched sample rates: {detail}; resample to one rate")
    rate = next(iter(rates))
    if rate != SAMPLE_RATE:
        raise ConfigError(f"dataset folder {root}: clips are {rate} Hz, expected {SAMPLE_RATE} Hz "
                          f"(e.g. {rates[rate]}); resample with sox")
    missing = [kw for kw in keyword_labels if not any(e.label == kw for e in entries)]
    if missing:
        raise ConfigError(f"dataset folder {root} has no folder for keyword(s) {', '.join(missing)}")
    for split in ("train", "test"):
        if not any(e.split == split for e in entries):
            raise ConfigError(f"dataset folder {root}: the official split leaves no {split} clips "
                              "(check validation_list.txt / testing_list.txt)")
    return entries


def _load(entry: Entry) -> npt.NDArray[np.int16]:
    return read_wav(entry.path, SAMPLE_RATE)


def load_clips(root: Path, keyword_labels: tuple[str, ...], workers: int = 1) -> dict[str, list[Clip]]:
    """Clips per split; a keyword clip's role is "keyword", any other word's is "word"."""
    entries = scan(root, keyword_labels)
    arrays = parallel_map(_load, entries, workers, "load wavs", chunksize=64)
    out: dict[str, list[Clip]] = {}
    for e, x in zip(entries, arrays, strict=True):
        role = "keyword" if e.label != "_unknown_" else "word"
        out.setdefault(e.split, []).append(Clip(x, e.label, e.split, role, f"speaker:{e.path.stem.split('_')[0]}"))
    return out


def background_noise(root: Path) -> list[npt.NDArray[np.float64]]:
    """The ``_background_noise_`` recordings as float arrays (empty if the folder is absent)."""
    folder = Path(root) / NOISE_DIR
    if not folder.is_dir():
        return []
    return [read_wav(p, SAMPLE_RATE).astype(np.float64) for p in sorted(folder.glob("*.wav"))]
