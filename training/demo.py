"""The demo recording ``models/demo/demo.wav`` that ``make run`` plays when there is no microphone.

About 20 s of 16 kHz mono: "hey jarvis" and command words spoken by held-out voices (voices the
shipped models never trained on), with quiet room noise between them and >= 1 s of leading silence.
``demo.labels.json`` lists each keyword label with its start and end in seconds.

    python -m training.demo --out models/demo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from kws_edge.audio import write_wav
from training import tts
from training.augment import colored_noise
from training.text import keyword_label

# (text, engine, voice name, rate): every voice group here is held out by the shipped recipes (seed 1).
SCRIPT = (
    ("hey jarvis", "espeak-ng", "en-us+f3", 0.95),
    ("yes", "flite", "rms", 1.0),
    ("stop", "espeak-ng", "en-gb+m6", 1.0),
    ("hey jarvis", "flite", "rms", 1.0),
    ("left", "espeak-ng", "en-us+Andy", 1.0),
    ("on", "espeak-ng", "en-gb-x-rp+linda", 1.0),
    ("hey jarvis", "espeak-ng", "en-gb-x-rp+Michael", 0.95),
    ("go", "espeak-ng", "en-us+f3", 1.0),
    ("down", "flite", "rms", 1.0),
)


def make_demo(out_dir: Path, seed: int = 1, rate: int = 16000) -> tuple[Path, Path]:
    """Write demo.wav and demo.labels.json into ``out_dir``; return their paths."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(int(1.5 * rate))]
    labels = []
    t = len(parts[0])
    for text, engine, name, speed in SCRIPT:
        voice = tts.Voice(engine, name, f"{engine}:{name.split('+')[-1]}")
        clip = tts.trim_silence(tts.synthesize(voice, text, rate=speed, pitch=0.5), pad=160).astype(np.float64)
        clip *= 10 ** (-6 / 20) * 32767 / (np.max(np.abs(clip)) or 1.0)
        labels.append({"keyword": keyword_label(text), "text": text, "voice": voice.id,
                       "start": round(t / rate, 3), "end": round((t + len(clip)) / rate, 3)})
        gap = np.zeros(int(rng.uniform(1.3, 1.8) * rate))
        parts += [clip, gap]
        t += len(clip) + len(gap)
    x = np.concatenate(parts)
    x += colored_noise("pink", len(x), rng) * 30.0  # a quiet room, about -60 dBFS
    out_dir.mkdir(parents=True, exist_ok=True)
    wav, js = out_dir / "demo.wav", out_dir / "demo.labels.json"
    write_wav(wav, np.clip(np.rint(x), -32768, 32767).astype(np.int16), rate)
    js.write_text(json.dumps({"sample_rate": rate, "seconds": round(len(x) / rate, 3), "keywords": labels},
                             indent=2) + "\n", encoding="utf-8")
    return wav, js


def main(argv: list[str] | None = None) -> int:
    """``python -m training.demo --out models/demo``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", type=Path, default=Path("models/demo"))
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    wav, js = make_demo(args.out, args.seed)
    print(f"wrote {wav} and {js}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
