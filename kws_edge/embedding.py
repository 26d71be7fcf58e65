"""A pretrained speech-embedding front-end, for models that must hear people they were never trained on.

Google's ``speech_embedding`` model (Apache-2.0), trained on a large body of real speech, turns 775 ms
of 32-band mel spectrogram into a 96-number summary every 80 ms; openWakeWord trains small keyword heads
on top of it from synthetic speech. We take the two float models (``melspectrogram.tflite`` and
``embedding_model.tflite``) from the pyopen-wakeword wheel, a pip dependency, and check their sha256.
Our own code is the streaming around them and the int8 keyword head a recipe trains
(``[model] family = "embedding"``). The front-end runs on the Pi only: at 1.3 MB it does not fit
the Nano, whose models stay MFCC ones.

:class:`EmbeddingParams` stands where :class:`kws_edge.features.FeatureParams` stands for MFCC models
(a manifest's ``features``, with ``"kind": "speech_embedding"``). It has the attributes the pipeline
reads: ``numcep`` (96 numbers per frame), ``hop`` (1280 samples) and ``frame_len`` (samples until the
first frame is complete). :class:`StreamingEmbedding` is the streaming front-end: it computes the mel
spectrogram in fixed 8-frame blocks (1632 samples, 80 ms apart) and an embedding as soon as its 76
mel frames are there. Fed a signal in any chunking, it gives the same frames.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kws_edge.errors import ModelError

KIND = "speech_embedding"
PACKAGE = "pyopen-wakeword"
DIR_ENV = "KWS_EDGE_EMBEDDING_DIR"  # a folder holding the two files, instead of the package's
MEL_FILE, EMBEDDING_FILE = "melspectrogram.tflite", "embedding_model.tflite"
MEL_SHA256 = "96fa0adccb6e8cf95cb14465409a1a2898ee4a96a85bb9ed3c7eb0e68bf163e8"
EMBEDDING_SHA256 = "c0aea21eb84a4ce90a08c870da41b7a7173b45269e6a3207c71d67c40f3a59d8"

MEL_HOP = 160  # samples between mel frames (10 ms)
MEL_WINDOW = 512  # samples per mel frame
MEL_BINS = 32
MEL_BLOCK = 8  # mel frames per run of the mel model: one embedding step
EMBEDDING_MEL_FRAMES = 76  # mel frames per embedding (775 ms)
EMBEDDING_DIMS = 96
BLOCK_SAMPLES = (MEL_BLOCK - 1) * MEL_HOP + MEL_WINDOW  # 1632


@dataclass(frozen=True)
class EmbeddingParams:
    """The speech-embedding front-end as a manifest names it (the files are checked by sha256)."""

    kind: str = KIND
    sample_rate: int = 16000
    package: str = PACKAGE
    melspectrogram_sha256: str = MEL_SHA256
    embedding_sha256: str = EMBEDDING_SHA256

    def __post_init__(self) -> None:
        if self.kind != KIND:
            raise ValueError(f"kind: expected {KIND!r}, got {self.kind!r}")
        if self.sample_rate != 16000:
            raise ValueError(f"sample_rate: the speech-embedding models take 16000 Hz, got {self.sample_rate}")

    @property
    def numcep(self) -> int:
        """Numbers per frame (one embedding)."""
        return EMBEDDING_DIMS

    @property
    def hop(self) -> int:
        """Samples between embeddings (80 ms)."""
        return MEL_BLOCK * MEL_HOP

    @property
    def frame_len(self) -> int:
        """Samples until the first embedding is complete: the mel blocks covering its 76 mel frames."""
        blocks = -(-EMBEDDING_MEL_FRAMES // MEL_BLOCK)  # 10
        return (blocks - 1) * self.hop + BLOCK_SAMPLES  # 13152

    def samples_for(self, frames: int) -> int:
        """Samples that make exactly ``frames`` embeddings."""
        return self.frame_len + (frames - 1) * self.hop

    def streamer(self) -> StreamingEmbedding:
        return StreamingEmbedding(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "features") -> EmbeddingParams:
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(fields)}")
        for name in fields:
            value = data.get(name, getattr(cls, name))
            expected = int if name == "sample_rate" else str
            if not isinstance(value, expected) or isinstance(value, bool):
                raise ValueError(f"{where}.{name}: expected {expected.__name__}, got {value!r}")
        try:
            return cls(**data)
        except ValueError as exc:
            raise ValueError(f"{where}.{exc}") from None


def model_dir() -> Path:
    """Where the two front-end files are: ``$KWS_EDGE_EMBEDDING_DIR`` or the installed package's models."""
    explicit = os.environ.get(DIR_ENV)
    if explicit:
        return Path(explicit)
    spec = importlib.util.find_spec("pyopen_wakeword")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"speech-embedding models need the {PACKAGE} package for their front-end "
                         f"(pip install {PACKAGE}==1.1.0), or {DIR_ENV} naming a folder with "
                         f"{MEL_FILE} and {EMBEDDING_FILE}")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


_FILES: dict[tuple[Path, str], bytes] = {}


def _model_bytes(name: str, sha256: str) -> bytes:
    """A front-end file's content, checked once per process against the manifest's sha256."""
    path = model_dir() / name
    key = (path, sha256)
    if key not in _FILES:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{path}: cannot read the speech-embedding front-end ({exc.strerror or exc}); "
                             f"install {PACKAGE}==1.1.0 or set {DIR_ENV}") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise ModelError(f"{path}: sha256 is {digest[:12]}... but the model's manifest expects "
                             f"{sha256[:12]}... (another {PACKAGE} version?)")
        _FILES[key] = data
    return _FILES[key]


def _interpreter(content: bytes, shape: tuple[int, ...]) -> Any:
    """A one-thread float interpreter (the runtime's backend) with the default XNNPACK kernels: this front-end
    is float and Pi-only, so the int8 bit-exactness that keeps the MFCC models off XNNPACK does not apply."""
    from kws_edge.model import _quiet_stderr, interpreter_backend

    _, factory = interpreter_backend()
    with _quiet_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate" on fd 2
        interp = factory(model_content=content, delegates=True)
        interp.resize_tensor_input(interp.get_input_details()[0]["index"], list(shape))
        interp.allocate_tensors()
    return interp


class _Net:
    """One float model with a fixed input shape: set, invoke, get."""

    def __init__(self, content: bytes, shape: tuple[int, ...]) -> None:
        self._it = _interpreter(content, shape)
        self._in = self._it.get_input_details()[0]["index"]
        self._out = self._it.get_output_details()[0]["index"]

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self._it.set_tensor(self._in, x)
        self._it.invoke()
        return np.array(self._it.get_tensor(self._out))


class StreamingEmbedding:
    """Embeddings over a stream of int16 samples; owns its leftover samples and mel frames."""

    def __init__(self, params: EmbeddingParams) -> None:
        self.params = params
        self._mel = _Net(_model_bytes(MEL_FILE, params.melspectrogram_sha256), (1, BLOCK_SAMPLES))
        self._emb = _Net(_model_bytes(EMBEDDING_FILE, params.embedding_sha256),
                         (1, EMBEDDING_MEL_FRAMES, MEL_BINS, 1))
        self.reset()

    def reset(self) -> None:
        self._samples = np.zeros(0, dtype=np.float32)  # from the next mel block's first sample on
        self._mels = np.zeros((0, MEL_BINS), dtype=np.float32)  # from the next embedding's first frame on
        self._seen = 0

    @property
    def samples_seen(self) -> int:
        return self._seen

    def process(self, samples: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Feed samples; return the (n, 96) embeddings they completed (n may be 0)."""
        x = np.asarray(samples).reshape(-1).astype(np.float32)  # int16 values, as the mel model takes them
        self._seen += x.size
        buf = np.concatenate((self._samples, x)) if self._samples.size else x
        hop = self.params.hop
        blocks = 0 if buf.size < BLOCK_SAMPLES else 1 + (buf.size - BLOCK_SAMPLES) // hop
        mels = [self._mels]
        for b in range(blocks):
            block = self._mel(buf[None, b * hop:b * hop + BLOCK_SAMPLES])
            mels.append(block.reshape(-1, MEL_BINS) / 10.0 + 2.0)  # openWakeWord's scaling of the mel output
        self._samples = buf[blocks * hop:].copy()
        m = np.concatenate(mels) if blocks else self._mels
        n = 0 if len(m) < EMBEDDING_MEL_FRAMES else 1 + (len(m) - EMBEDDING_MEL_FRAMES) // MEL_BLOCK
        out = np.zeros((n, EMBEDDING_DIMS))
        for i in range(n):
            window = m[i * MEL_BLOCK:i * MEL_BLOCK + EMBEDDING_MEL_FRAMES]
            out[i] = self._emb(window.reshape(1, EMBEDDING_MEL_FRAMES, MEL_BINS, 1)).reshape(-1)
        self._mels = m[n * MEL_BLOCK:].copy()
        return out

    def flush(self) -> npt.NDArray[np.float64]:
        """End of stream: nothing is padded (an incomplete embedding is dropped); reset."""
        self.reset()
        return np.zeros((0, EMBEDDING_DIMS))


_BATCH: dict[EmbeddingParams, StreamingEmbedding] = {}


def embeddings(signal: npt.ArrayLike, params: EmbeddingParams | None = None) -> npt.NDArray[np.float64]:
    """Batch form: every complete embedding of a whole signal (one streamer per process, reset per call)."""
    p = params or EmbeddingParams()
    if p not in _BATCH:
        _BATCH[p] = StreamingEmbedding(p)
    s = _BATCH[p]
    s.reset()
    return s.process(signal)
