"""Real-voice bench streams: crowd-sourced recordings heard as a microphone would, cached like the TTS corpus.

Clips come from the real-voice folder (``training.realvoice``: ``$KWS_EDGE_REALVOICE`` or
``../shared/data/realvoice``) and from pocketsphinx-testdata's read speech. Streams (16 kHz int16 WAV +
``labels.json``, the same schema as :mod:`benchmarks.corpus`, deterministic for a seed):

- ``real_speech`` (negative): ``view_glass/`` + pocketsphinx-testdata, clean, short gaps. It never holds
  ``smart_mirror/`` or ``snowboy/``: kws_edge may train on those as negatives, and the bench must not
  measure anyone on our own training data.
- ``real_<folder>_speech`` (negative, ``excluded_for`` that folder's keyword): a validation folder that is
  also a bench keyword (``computer/``), as real speech for every *other* keyword.
- ``real_<folder>_clean`` and ``real_<folder>_snr10`` (positive, keyword = folder): the clips 1-1.5 s apart,
  clean and in noise at 10 dB (pink, white or brown per clip). Clips have no word timing, so an instance
  spans its whole clip and a detection up to 1 s after it counts.

Streams are built with ``training.realvoice.speech_stream`` and ``training.streams.positive_stream``, the
same builders as ``kws-edge eval --real-only``, so the bench and the eval hear the same kind of audio.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.corpus import Corpus, Stream, load_corpus, publish
from kws_edge.audio import write_wav
from kws_edge.errors import ConfigError

_VERSION = 1  # bump when the generator changes, so cached streams are rebuilt
EXCLUDED_FOLDERS = ("smart_mirror", "snowboy")  # kws_edge's allowed training negatives: never bench audio
REAL_KEYWORDS = ("computer",)  # validation folders that are also bench keywords (their own positives)
NEGATIVE_FOLDERS = ("view_glass",)  # validation folders that are nobody's keyword: real speech only


@dataclass(frozen=True)
class RealConfig:
    """Everything that determines the real streams; its hash (with the clip files) names the cache dir."""

    data_dir: str
    extra_speech_dir: str | None = "/usr/share/pocketsphinx/test/data"
    seed: int = 1234
    snr_db: float = 10.0
    max_clips: int | None = None  # per folder (and for the extra speech); None: all of them

    def files(self) -> dict[str, list[Path]]:
        """Source -> clip files (sorted, capped at ``max_clips``): positives and negatives of the bench."""
        root = Path(self.data_dir)
        out: dict[str, list[Path]] = {}
        for folder in (*REAL_KEYWORDS, *NEGATIVE_FOLDERS):
            files = sorted((root / folder).glob("*.flac"))
            if files:
                out[folder] = files[: self.max_clips]
        extra = Path(self.extra_speech_dir) if self.extra_speech_dir else None
        if extra is not None and extra.is_dir():
            out["pocketsphinx"] = sorted(extra.rglob("*.wav"))[: self.max_clips]
        return out

    def key(self) -> str:
        listing = {src: [f"{p.relative_to(p.parents[1])}:{p.stat().st_size}" for p in fs]
                   for src, fs in self.files().items()}
        raw = json.dumps([_VERSION, dataclasses.asdict(self), listing], sort_keys=True)
        return hashlib.sha1(raw.encode()).hexdigest()[:16]


def real_config(data_dir: Path | str | None, seed: int = 1234, quick: bool = False,
                extra_speech_dir: Path | str | None = "/usr/share/pocketsphinx/test/data") -> RealConfig:
    """The config for ``data_dir`` (None: ``training.realvoice``'s default); ``quick``: 6 clips per folder."""
    from training.realvoice import realvoice_dir

    root = realvoice_dir(data_dir).resolve()
    return RealConfig(str(root), str(extra_speech_dir) if extra_speech_dir else None, seed,
                      max_clips=6 if quick else None)


def build_real_corpus(cfg: RealConfig, cache: Path, log: Callable[[str], None] | None = None) -> Corpus:
    """Build (or reuse from ``cache``) the real-voice streams for ``cfg``; return them as a Corpus."""
    root = cache / "corpus" / f"real-{cfg.key()}"
    if (root / "labels.json").exists():
        return load_corpus(root)
    from training import augment as aug
    from training import realvoice as rv
    from training import streams as st

    files = cfg.files()
    negatives = [s for s in (*NEGATIVE_FOLDERS, "pocketsphinx") if s in files]
    if not negatives:
        raise ConfigError(f"{cfg.data_dir}: no real negative speech (no {', '.join(NEGATIVE_FOLDERS)}/ folder "
                          "and no pocketsphinx-testdata)")
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    bank = aug.NoiseBank([], [])
    clips = {src: [(_read(p), f"{src}/{p.name}") for p in fs] for src, fs in files.items()}
    streams = [_negative("real_speech", [c for s in negatives for c in clips[s]], [], bank, rv, cfg.seed, tmp)]
    for k, kw in enumerate(kw for kw in REAL_KEYWORDS if kw in clips):
        streams.append(_negative(f"real_{kw}_speech", clips[kw], [kw], bank, rv, cfg.seed + 10 + k, tmp))
        for j, snr in enumerate((None, cfg.snr_db)):
            streams.append(_positive(kw, clips[kw], snr, bank, st, rv.NOISE_KINDS, cfg.seed + 20 + 2 * k + j, tmp))
    for s in streams:
        if log:
            log(f"real corpus: {s.name} ({s.duration_s:.0f} s)")
    return publish(cfg, streams, tmp, root)


def _read(path: Path) -> Any:
    from training.realvoice import read_clip

    return read_clip(path)


def _shuffled(clips: Sequence[tuple[Any, str]], seed: int) -> list[tuple[Any, str]]:
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(clips))
    return [clips[int(i)] for i in order]


def _negative(name: str, clips: Sequence[tuple[Any, str]], excluded_for: list[str], bank: Any, rv: Any,
              seed: int, out: Path) -> Stream:
    clips = _shuffled(clips, seed)
    s = rv.speech_stream(clips, 100.0, bank, rv.NOISE_KINDS, seed)  # >= 100 dB: clean
    write_wav(out / f"{name}.wav", s.samples)
    spans = [{"start": round(a, 3), "end": round(b, 3), "source": src.split("/", 1)[0], "file": src}
             for a, b, src in s.spans]
    return Stream(name, f"{name}.wav", "negative", None, None, None, round(len(s.samples) / 16000, 3),
                  source="real", excluded_for=excluded_for, clips=spans)


def _positive(kw: str, clips: Sequence[tuple[Any, str]], snr: float | None, bank: Any, st: Any,
              kinds: Sequence[str], seed: int, out: Path) -> Stream:
    name = f"real_{kw}_clean" if snr is None else f"real_{kw}_snr{snr:g}"
    clips = _shuffled(clips, seed)
    s = st.positive_stream([(x, src) for x, src in clips], st.CLEAN_SNR if snr is None else snr, bank, kinds,
                           seed)
    write_wav(out / f"{name}.wav", s.samples)
    inst = [{"start": round(a, 3), "end": round(b, 3), "voice": f"real:{src}", "text": kw.replace("_", " "),
             "rt60_s": None} for a, b, src in s.spans]
    return Stream(name, f"{name}.wav", "positive", kw, None if snr is None else round(snr),
                  None if snr is None else "+".join(kinds), round(len(s.samples) / 16000, 3), inst,
                  source="real")
