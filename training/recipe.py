"""Training recipes: one TOML file per model, parsed into frozen dataclasses before any work starts.

Every table and key is checked: an unknown key, a wrong type or an impossible value raises ConfigError
naming the file, the key and what was expected. See ``training/recipes/*.toml`` for commented examples.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kws_edge.errors import ConfigError
from training.realvoice import VALIDATION_FOLDERS
from training.text import check_keyword, keyword_label

WINDOW_FRAMES = 49  # frames of every training window (1 s at the 20 ms hop)
FAMILIES = ("window", "stream", "embedding")
EMBEDDING_FRAMES = 16  # embedding family: speech embeddings per window (1.28 s at its 80 ms hop)


@dataclass(frozen=True)
class SynthesisConfig:
    # TTS engines: espeak-ng, espeak-ng-accent (other languages' phonology reading English), flite,
    # festival, piper (see training/tts.py); each gets an equal share of clips unless engine_weights
    engines: tuple[str, ...] = ("espeak-ng", "flite")
    engine_weights: tuple[float, ...] = ()  # relative share per engine, in `engines` order
    positives_per_keyword: int = 1500  # training clips per keyword (spread over training voices)
    test_per_keyword: int = 300  # held-out-voice clips per keyword
    confusables: int = 1500  # clips of generated sound-alike phrases (labelled unknown)
    unknown_words: int = 1500  # clips of common words (labelled unknown)
    sentences: int = 400  # clips of whole sentences (labelled unknown, cut into 1 s windows)
    silence: int = 600  # noise-only windows (labelled silence)
    rate: tuple[float, float] = (0.75, 1.25)  # speaking rate factor range
    pitch: tuple[float, float] = (0.2, 0.8)  # pitch range, 0..1
    holdout_fraction: float = 0.15  # fraction of voice groups held out for test (festival, piper: only
    # when listed in holdout_voices, having too few voices)
    val_fraction: float = 0.08
    holdout_voices: tuple[str, ...] = ("flite:rms",)  # voice groups always held out
    max_keyword_seconds: float = 1.0  # longer (trimmed) keyword clips are dropped
    speaker_augment: float = 0.0  # fraction of clips re-spoken by a pseudo-speaker (training/speakers.py)
    formant_shift: tuple[float, float] = (0.8, 1.25)  # pseudo-speaker formant ratio (< 1: longer vocal tract)
    pitch_median_hz: tuple[float, float] = (80.0, 300.0)  # pseudo-speaker median pitch (log-uniform)
    pitch_range_factor: tuple[float, float] = (0.5, 1.8)  # pseudo-speaker pitch excursion factor


@dataclass(frozen=True)
class AugmentConfig:
    copies: int = 2  # augmented copies per clip (train split)
    clean_fraction: float = 0.2
    snr_db: tuple[float, float] = (0.0, 25.0)
    noise_kinds: tuple[str, ...] = ("white", "pink", "brown", "babble")
    noise_dir: str = ""  # optional folder of .wav noise recordings
    reverb_prob: float = 0.3
    rt60: tuple[float, float] = (0.15, 0.7)
    gain_db: tuple[float, float] = (-30.0, -1.0)  # peak level re full scale
    speed: tuple[float, float] = (0.9, 1.1)
    max_cut_ms: int = 60  # how much of a keyword's start a window may cut off
    mic_prob: float = 0.0  # fraction of windows through a random microphone (band limits, EQ, clipping)


@dataclass(frozen=True)
class ModelSection:
    # "window": the DS-CNN re-reads a whole window every stride (training/model.py); "stream": causal
    # temporal convolutions that consume only the new frames and keep the past as state inside the
    # .tflite (training/streaming.py); "embedding": dense layers (filters units each, blocks layers) on 16
    # frames (1.28 s) of a pretrained speech embedding, Pi only (kws_edge/embedding.py)
    family: str = "window"
    filters: int = 64
    blocks: int = 4
    dropout: float = 0.2
    normalize: bool = False  # cepstral mean normalization (window: over each window; stream: running mean)
    kernel: int = 5  # stream: time taps of every convolution
    norm_frames: int = 16  # stream: frames of the running mean the normalization subtracts
    pool_frames: int = 14  # stream: frames the head averages
    # stream: frames of background before each training window's second, so the running mean and the
    # pooling see context before the keyword as they do when streaming (training windows are
    # WINDOW_FRAMES + context_frames long; the clip stays in the last second; 0: the window family's data)
    context_frames: int = 0
    # stream: share of training windows (every class) whose context holds speech: the tail of another
    # non-keyword training utterance ending a plausible gap before the clip (or filling the whole window
    # for sentences); the others keep background. So what precedes a window carries no label. 0: as before
    context_speech: float = 0.0

    @property
    def window_frames(self) -> int:
        """Frames of every training window."""
        if self.family == "embedding":
            return EMBEDDING_FRAMES
        return WINDOW_FRAMES + self.context_frames

    def front_end(self) -> Any:
        """The feature parameters the family's models read: MFCC, or the speech embedding."""
        if self.family == "embedding":
            from kws_edge.embedding import EmbeddingParams

            return EmbeddingParams()
        from kws_edge.features import FeatureParams

        return FeatureParams()

    def stream_config(self) -> Any:
        from training.streaming import StreamConfig

        return StreamConfig(filters=self.filters, blocks=self.blocks, kernel=self.kernel,
                            norm_frames=self.norm_frames, pool_frames=self.pool_frames, dropout=self.dropout,
                            normalize=self.normalize)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 100
    learning_rate: float = 0.003
    unknown_weight: float = 1.0  # class weight of _unknown_ (wake words: > 1 trades FRR for fewer FAs)
    mining_rounds: int = 0  # hard-negative mining rounds after the first pass (see training.mining)
    mining_hours: float = 1.0  # length of the training-voice negative stream mined each round
    mining_threshold: float = 0.1  # keyword score above which a stream window becomes a hard negative
    mining_max: int = 6000  # hard negatives kept per round (highest scores first)
    mining_epochs: int = 8  # epochs of further training after each round
    time_masks: int = 0  # SpecAugment: time masks per training window (each up to time_mask_frames)
    time_mask_frames: int = 6
    freq_masks: int = 0  # SpecAugment: masked MFCC coefficients per training window (0..freq_masks)
    # Knowledge distillation (training/distill.py): a shipped manifest (path relative to the repo root or
    # absolute) whose float model (<name>.float.tflite next to it) scores every training window once; the
    # loss becomes (1 - distill_weight) * CE(label) + distill_weight * T^2 * KL(teacher_T || student_T),
    # T = distill_temperature. Empty: plain cross-entropy, and the keys below are not part of the recipe.
    teacher: str = ""
    distill_weight: float = 0.5  # alpha, in [0, 1]
    distill_temperature: float = 2.0  # T, > 0
    # Which epoch's weights are kept: "synthetic" = the best validation accuracy on held-out TTS voices;
    # "real" = the lowest FRR at <= 1 false accept per hour on real speech, measured on the selection half
    # of the real recordings of the keyword (training/select.py; the other half reports). Model selection
    # on the validation-only recordings is allowed, gradient steps on them are not.
    select_on: str = "synthetic"
    # Gradual magnitude pruning (training/prune.py): the share of every convolution and dense kernel zeroed
    # by magnitude, reached along Zhu & Gupta's cubic schedule from prune_begin to prune_end (fractions of
    # the first pass's training steps) and kept through the mining rounds; only epochs at the target
    # sparsity can be kept. The int8 .tflite stays dense: it pays in gzip_bytes. 0: off, and the keys below
    # are not part of the recipe.
    prune_sparsity: float = 0.0  # in [0, 1)
    prune_begin: float = 0.2
    prune_end: float = 0.7


@dataclass(frozen=True)
class EvalConfig:
    negative_hours: float = 1.0  # length of the long non-keyword stream for false accepts per hour
    snr_db: tuple[float, ...] = (100.0, 20.0, 10.0, 5.0)  # FRR per SNR (100 = clean)
    headline_snr_db: tuple[float, ...] = (100.0, 20.0, 10.0)  # SNRs pooled into the headline FRR
    target_fa_per_hour: float = 0.5
    positives: int = 200  # held-out keyword utterances per keyword in the FRR streams
    # Raise the threshold until real speech without the keyword (the validation-only real recordings
    # plus pocketsphinx-testdata, see training/realvoice.py) gives <= real_target_fa_per_hour, pooled
    # over clean and 10 dB. Choosing a threshold on them is allowed; the real FA/h then is not unbiased.
    real_threshold: bool = True
    real_target_fa_per_hour: float = 1.0
    # With real speech available: "both" keeps the threshold at least as high as the synthetic stream's
    # choice; "real" lets the real speech alone decide (the synthetic FA/h is then only reported).
    threshold_from: str = "both"


@dataclass(frozen=True)
class DecisionSection:
    stride_frames: int = 3  # 60 ms at a 20 ms hop
    smoothing_ms: int = 200
    min_hits: int = 1
    refractory_ms: int = 1500


@dataclass(frozen=True)
class DatasetSection:
    speech_commands: str = ""  # path to a Speech Commands layout; empty: synthesize with TTS
    # Real recordings used as negative (non-keyword) training speech: folder names under realvoice_dir.
    # computer/ and view_glass/ are validation only and refused here (see training/realvoice.py).
    real_negatives: tuple[str, ...] = ()
    realvoice_dir: str = ""  # empty: $KWS_EDGE_REALVOICE, else ../shared/data/realvoice next to the repo
    real_negative_weight: int = 1  # each real clip is used this many times (differently augmented)


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str
    keywords: tuple[str, ...]
    description: str = ""
    seed: int = 0
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    decision: DecisionSection = field(default_factory=DecisionSection)
    dataset: DatasetSection = field(default_factory=DatasetSection)
    path: str = ""  # where it was read from (not a TOML key)

    @property
    def keyword_labels(self) -> tuple[str, ...]:
        return tuple(keyword_label(k) for k in self.keywords)

    @property
    def labels(self) -> tuple[str, ...]:
        return ("_silence_", "_unknown_", *self.keyword_labels)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("path")
        if not self.train.teacher:  # without a teacher the recipe reads as it did before distillation
            for key in ("teacher", "distill_weight", "distill_temperature"):
                data["train"].pop(key)
        if self.train.select_on == "synthetic":  # and without real-voice selection as it did before that
            data["train"].pop("select_on")
        if not self.train.prune_sparsity:  # and without pruning as it did before that
            for key in ("prune_sparsity", "prune_begin", "prune_end"):
                data["train"].pop(key)
        return data


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``where`` is "<file>: <key path>"."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is str and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _build(cls: Any, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.name != "path"}
    unknown = sorted(set(table) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                          f"expected some of {', '.join(sorted(fields))}")
    sub = (lambda k: f"{where}.{k}") if ": " in where else (lambda k: f"{where}: {k}")
    values = {k: _convert(v, hints[k], sub(k)) for k, v in table.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check(r: Recipe, where: str) -> None:
    if r.kind not in ("wakeword", "commands"):
        raise ConfigError(f"{where}: kind: expected 'wakeword' or 'commands', got {r.kind!r}")
    if not r.keywords:
        raise ConfigError(f"{where}: keywords: expected at least one keyword")
    if len(set(r.keyword_labels)) != len(r.keywords):
        raise ConfigError(f"{where}: keywords: duplicates in {list(r.keywords)}")
    s, a = r.synthesis, r.augment
    for name, lo_hi in (("synthesis.rate", s.rate), ("synthesis.pitch", s.pitch), ("augment.snr_db", a.snr_db),
                        ("augment.rt60", a.rt60), ("augment.gain_db", a.gain_db), ("augment.speed", a.speed)):
        if lo_hi[0] > lo_hi[1]:
            raise ConfigError(f"{where}: {name}: expected [low, high], got {list(lo_hi)}")
    if not 0 < s.holdout_fraction < 1 or not 0 <= s.val_fraction < 1:
        raise ConfigError(f"{where}: synthesis.holdout_fraction/val_fraction must be fractions in (0, 1)")
    for name, lo_hi in (("synthesis.formant_shift", s.formant_shift), ("synthesis.pitch_median_hz", s.pitch_median_hz),
                        ("synthesis.pitch_range_factor", s.pitch_range_factor)):
        if not 0 < lo_hi[0] <= lo_hi[1]:
            raise ConfigError(f"{where}: {name}: expected [low, high] with 0 < low <= high, got {list(lo_hi)}")
    if not 0.0 <= s.speaker_augment <= 1.0:
        raise ConfigError(f"{where}: synthesis.speaker_augment: expected a fraction in [0, 1], got {s.speaker_augment}")
    if not s.engines or len(set(s.engines)) != len(s.engines):
        raise ConfigError(f"{where}: synthesis.engines: expected distinct engine names, got {list(s.engines)}")
    if s.engine_weights and (len(s.engine_weights) != len(s.engines) or min(s.engine_weights) < 0
                             or sum(s.engine_weights) <= 0):
        raise ConfigError(f"{where}: synthesis.engine_weights: expected one weight >= 0 per engine "
                          f"({len(s.engines)}), not all 0, got {list(s.engine_weights)}")
    bad = [k for k in a.noise_kinds if k not in ("white", "pink", "brown", "babble", "file", "room")]
    if bad:
        raise ConfigError(f"{where}: augment.noise_kinds: unknown kind(s) {bad}; expected white, pink, "
                          "brown, babble, file, room")
    if "file" in a.noise_kinds and not a.noise_dir:
        raise ConfigError(f"{where}: augment.noise_kinds has 'file' but augment.noise_dir is empty")
    if "room" in a.noise_kinds and not r.dataset.real_negatives:
        raise ConfigError(f"{where}: augment.noise_kinds has 'room' (quiet parts of real recordings) but "
                          "dataset.real_negatives is empty")
    if r.train.epochs < 1 or r.train.batch_size < 1:
        raise ConfigError(f"{where}: train.epochs and train.batch_size must be >= 1")
    banned = sorted(set(r.dataset.real_negatives) & set(VALIDATION_FOLDERS))
    if banned:
        raise ConfigError(f"{where}: dataset.real_negatives: {banned} are validation only (never trained on); "
                          "use other folders, e.g. snowboy, smart_mirror")
    if r.dataset.real_negative_weight < 1:
        raise ConfigError(f"{where}: dataset.real_negative_weight: expected an integer >= 1, "
                          f"got {r.dataset.real_negative_weight}")
    if not 0.0 <= a.mic_prob <= 1.0:
        raise ConfigError(f"{where}: augment.mic_prob: expected a fraction in [0, 1], got {a.mic_prob}")
    if min(r.train.time_masks, r.train.time_mask_frames, r.train.freq_masks) < 0:
        raise ConfigError(f"{where}: train.time_masks/time_mask_frames/freq_masks must be >= 0")
    _check_distill(r, where)
    _check_prune(r, where)
    if r.train.select_on not in ("synthetic", "real"):
        raise ConfigError(f"{where}: train.select_on: expected 'synthetic' or 'real', got {r.train.select_on!r}")
    if r.eval.threshold_from not in ("both", "real"):
        raise ConfigError(f"{where}: eval.threshold_from: expected 'both' or 'real', got {r.eval.threshold_from!r}")
    if r.eval.negative_hours <= 0:
        raise ConfigError(f"{where}: eval.negative_hours must be > 0")
    if r.model.family not in FAMILIES:
        raise ConfigError(f"{where}: model.family: expected one of {', '.join(map(repr, FAMILIES))}, "
                          f"got {r.model.family!r}")
    if r.model.family == "embedding" and (r.model.normalize or r.train.teacher or r.train.time_masks
                                          or r.train.freq_masks):
        raise ConfigError(f"{where}: model.family = 'embedding' takes no model.normalize, train.teacher, "
                          "train.time_masks or train.freq_masks (they act on MFCC windows)")
    if r.model.family == "stream":
        from training.streaming import receptive_frames

        frames = receptive_frames(r.model.stream_config())  # StreamConfig checks the sizes
        if frames > r.model.window_frames:
            raise ConfigError(f"{where}: model: the stream model's receptive field is {frames} frames "
                              f"(norm_frames - 1 + (kernel - 1) * (blocks + 1) + pool_frames); the training "
                              f"windows hold {r.model.window_frames} (WINDOW_FRAMES {WINDOW_FRAMES} + "
                              f"model.context_frames)")
    if r.model.context_frames < 0 or (r.model.context_frames and r.model.family != "stream"):
        raise ConfigError(f"{where}: model.context_frames: expected an integer >= 0, and 0 unless "
                          f"family = 'stream', got {r.model.context_frames}")
    if not 0.0 <= r.model.context_speech <= 1.0 or (r.model.context_speech and not r.model.context_frames):
        raise ConfigError(f"{where}: model.context_speech: expected a fraction in [0, 1], and 0 unless "
                          f"model.context_frames > 0, got {r.model.context_speech}")


def _check_prune(r: Recipe, where: str) -> None:
    """``train.prune_*`` ranges: a sparsity in [0, 1), 0 <= begin < end <= 1."""
    t = r.train
    if not 0.0 <= t.prune_sparsity < 1.0:
        raise ConfigError(f"{where}: train.prune_sparsity: expected a fraction in [0, 1), got {t.prune_sparsity}")
    if not 0.0 <= t.prune_begin < t.prune_end <= 1.0:
        raise ConfigError(f"{where}: train.prune_begin/prune_end: expected fractions of the first pass with "
                          f"0 <= begin < end <= 1, got {t.prune_begin}, {t.prune_end}")


def _check_distill(r: Recipe, where: str) -> None:
    """``train.distill_*`` ranges; with a ``train.teacher``: a loadable manifest with a float model, the
    recipe's labels and feature parameters and a window no longer than the recipe's."""
    t = r.train
    if not 0.0 <= t.distill_weight <= 1.0:
        raise ConfigError(f"{where}: train.distill_weight: expected a fraction in [0, 1], got {t.distill_weight}")
    if not t.distill_temperature > 0:
        raise ConfigError(f"{where}: train.distill_temperature: expected a number > 0, got {t.distill_temperature}")
    if not t.teacher:
        return
    from kws_edge import manifest as mf
    from kws_edge.errors import ModelError
    from kws_edge.features import FeatureParams
    from training.distill import float_model_path, teacher_path

    try:
        m = mf.load(teacher_path(t.teacher))
    except ModelError as exc:
        raise ConfigError(f"{where}: train.teacher: expected a model manifest, got {t.teacher!r} ({exc})") from None
    if m.streaming is not None:
        raise ConfigError(f"{where}: train.teacher: expected a window model, {t.teacher!r} is a streaming one")
    float_path = float_model_path(m)
    if not float_path.exists():
        raise ConfigError(f"{where}: train.teacher: the teacher's float model {float_path} is missing")
    if list(m.labels) != list(r.labels):
        raise ConfigError(f"{where}: train.teacher: the teacher's labels {list(m.labels)} differ from the "
                          f"recipe's {list(r.labels)}")
    if m.features != FeatureParams():
        raise ConfigError(f"{where}: train.teacher: the teacher's feature parameters {m.features} differ from "
                          f"the recipe's {FeatureParams()}")
    if m.window_frames > r.model.window_frames:
        raise ConfigError(f"{where}: train.teacher: the teacher reads {m.window_frames} frames, the recipe's "
                          f"training windows hold {r.model.window_frames}")


def parse_recipe(data: dict[str, Any], where: str = "recipe") -> Recipe:
    """Build and validate a :class:`Recipe` from a TOML document."""
    recipe: Recipe = _build(Recipe, data, where)
    try:
        keywords = tuple(check_keyword(k) for k in recipe.keywords)
    except ConfigError as exc:
        raise ConfigError(f"{where}: keywords: {exc}") from None
    recipe = dataclasses.replace(recipe, keywords=keywords, path=where)
    _check(recipe, where)
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe TOML file; ConfigError for a missing file, bad TOML or a bad key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_recipe(data, str(path))

