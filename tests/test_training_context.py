"""The streaming family's longer training windows (``[model] context_frames``, training/data.py).

A window with context C is C frames of background followed by the usual second the clip is placed in:
the keyword's frames are those of the 1 s window shifted by exactly C (same seed, same placement), so the
keyword still ends inside the window's last second and the model's output frame; sentences fill the whole
window; everything is seeded. Recipes refuse a context for the window family and check the receptive
field against the longer window. With ``context_speech`` a share of the windows of every class has speech
in that context and the rest background, while the clip from its onset on stays as without the option.
"""

from __future__ import annotations

import numpy as np
import pytest

from kws_edge.errors import ConfigError
from kws_edge.features import FeatureParams
from training import augment as aug
from training import data
from training.recipe import WINDOW_FRAMES, AugmentConfig, parse_recipe

PARAMS = FeatureParams()
CONTEXT = 30  # frames


def _tone(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (8000 * np.sin(2 * np.pi * 440 * t) + 500 * rng.standard_normal(len(t))).astype(np.int16)


def _speech() -> tuple[np.ndarray, ...]:
    """Stand-ins for other utterances: bursts of white noise, 0.3 to 2 s, with quiet ends."""
    rng = np.random.default_rng(7)
    out = []
    for seconds in (0.3, 0.8, 1.2, 2.0):
        x = 6000 * rng.standard_normal(int(seconds * 16000))
        out.append(np.concatenate([x, np.zeros(1600)]).astype(np.int16))
    return tuple(out)


def _window(context: int, role: str, seconds: float, seed: int, augment: bool = False,
            share: float = 0.0) -> np.ndarray:
    cfg = AugmentConfig(clean_fraction=0.0 if augment else 1.0, noise_kinds=("pink",), mic_prob=0.0)
    data._init_worker(cfg, PARAMS, aug.NoiseBank([], []), 960, context * PARAMS.hop, share,
                      _speech() if share else ())
    clip = None if role == "silence" else _tone(seconds, 1)
    return data.make_window(data.Task(clip, 2, role, seed, augment))


def _loud(x: np.ndarray) -> np.ndarray:
    """Frames whose log energy (c0) is far above the window's quietest frame."""
    return np.flatnonzero(x[:, 0] > x[:, 0].min() + 6.0)


@pytest.mark.parametrize("seed", [3, 11, 12])
def test_keyword_keeps_its_place_in_the_last_second_after_the_context(seed: int) -> None:
    short = _window(0, "keyword", 0.6, seed)
    long = _window(CONTEXT, "keyword", 0.6, seed)
    assert short.shape == (WINDOW_FRAMES, PARAMS.numcep)
    assert long.shape == (WINDOW_FRAMES + CONTEXT, PARAMS.numcep)
    loud = _loud(long)
    assert len(loud) >= 25  # the 0.6 s tone
    assert np.array_equal(loud, _loud(short) + CONTEXT)  # same placement, shifted by the context
    assert loud[0] >= CONTEXT  # background only before the last second


def test_context_windows_are_seeded_and_noise_covers_the_context() -> None:
    a = _window(CONTEXT, "keyword", 0.6, 5, augment=True)
    assert np.array_equal(a, _window(CONTEXT, "keyword", 0.6, 5, augment=True))
    assert not np.array_equal(a, _window(CONTEXT, "keyword", 0.6, 6, augment=True))
    clean = _window(CONTEXT, "keyword", 0.6, 5)
    assert np.ptp(clean[:CONTEXT - 2, 0]) < 1.0  # a clean window's context is the dither floor alone
    assert a[:CONTEXT - 2, 0].mean() > clean[:CONTEXT - 2, 0].mean() + 3.0  # a noisy one's is noise


def test_sentences_fill_the_whole_longer_window() -> None:
    x = _window(CONTEXT, "sentence", 4.0, 2)
    assert x.shape == (WINDOW_FRAMES + CONTEXT, PARAMS.numcep)
    assert len(_loud(x)) == 0 or _loud(x)[0] == 0  # speech from the first frame: no quiet lead
    assert x[:, 0].min() > _window(CONTEXT, "keyword", 0.6, 2)[:, 0].min() + 6.0


def test_noise_windows_have_the_longer_length() -> None:
    cfg = AugmentConfig(noise_kinds=("pink",))
    data._init_worker(cfg, PARAMS, aug.NoiseBank([], []), 960, CONTEXT * PARAMS.hop)
    x = data.make_window(data.Task(None, 0, "silence", 9, True))
    assert x.shape == (WINDOW_FRAMES + CONTEXT, PARAMS.numcep)


def _recipe(family: str, **model: object) -> object:
    return parse_recipe({"name": "t", "kind": "wakeword", "keywords": ["computer"],
                         "model": {"family": family, **model}}, "test")


def test_recipe_context_is_for_the_stream_family_and_bounds_the_receptive_field() -> None:
    shape = {"kernel": 3, "blocks": 4, "norm_frames": 49, "pool_frames": 39, "normalize": True}  # 97 frames
    with pytest.raises(ConfigError, match="receptive field is 97 frames"):
        _recipe("stream", **shape, context_frames=47)
    r = _recipe("stream", **shape, context_frames=48)
    assert r.model.window_frames == 97  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="context_frames"):
        _recipe("window", context_frames=10)
    with pytest.raises(ConfigError, match="context_frames"):
        _recipe("stream", context_frames=-1)


def test_context_changes_the_feature_cache_key_only_when_set() -> None:
    clips: dict[str, list] = {"train": []}
    plain = _recipe("stream", kernel=3, blocks=4, norm_frames=8, pool_frames=32)
    same = _recipe("stream", kernel=3, blocks=4, norm_frames=8, pool_frames=32, context_frames=0)
    longer = _recipe("stream", kernel=3, blocks=4, norm_frames=8, pool_frames=32, context_frames=20)
    key = data._cache_key(plain, clips)  # type: ignore[arg-type]
    assert key == data._cache_key(same, clips)  # type: ignore[arg-type]
    assert key != data._cache_key(longer, clips)  # type: ignore[arg-type]


SHARE = 0.5
SEEDS = range(100, 180)


@pytest.mark.parametrize("role", ["keyword", "word", "confusable"])
def test_context_speech_precedes_clips_at_the_share_and_leaves_the_clip_alone(role: str) -> None:
    with_speech = 0
    for seed in SEEDS:
        plain = _window(CONTEXT, role, 0.6, seed)
        x = _window(CONTEXT, role, 0.6, seed, share=SHARE)
        onset = _loud(plain)[0]  # the clip's first loud frame (in the last second, or overlapping it)
        assert onset >= CONTEXT - 1
        assert np.array_equal(x[onset:], plain[onset:])  # the clip from its onset on: unchanged
        if not np.array_equal(x, plain):
            with_speech += 1
            assert x[:CONTEXT - 2, 0].max() > plain[:CONTEXT - 2, 0].max() + 6.0  # loud speech in the context
    assert 0.35 * len(SEEDS) < with_speech < 0.65 * len(SEEDS)


def test_context_speech_before_noise_windows_leaves_their_second_alone() -> None:
    with_speech = 0
    for seed in SEEDS:
        plain = _window(CONTEXT, "silence", 0.0, seed)
        x = _window(CONTEXT, "silence", 0.0, seed, share=SHARE)
        assert np.array_equal(x[CONTEXT:], plain[CONTEXT:])  # the noise window's second: unchanged
        with_speech += not np.array_equal(x[:CONTEXT], plain[:CONTEXT])
    assert 0.35 * len(SEEDS) < with_speech < 0.65 * len(SEEDS)


def test_context_speech_sentences_fill_the_window_or_follow_background() -> None:
    filled = 0
    for seed in SEEDS:
        plain = _window(CONTEXT, "sentence", 4.0, seed)  # without the option: always fills the window
        x = _window(CONTEXT, "sentence", 4.0, seed, share=SHARE)
        if np.array_equal(x, plain):
            filled += 1
        else:  # background before the last second, speech from its first frame
            assert np.ptp(x[:CONTEXT - 2, 0]) < 1.0
            assert x[CONTEXT + 2:, 0].min() > x[:CONTEXT - 2, 0].max() + 6.0
    assert 0.35 * len(SEEDS) < filled < 0.65 * len(SEEDS)


def test_context_speech_is_seeded_and_off_without_a_context() -> None:
    a = _window(CONTEXT, "keyword", 0.6, 4, augment=True, share=SHARE)
    assert np.array_equal(a, _window(CONTEXT, "keyword", 0.6, 4, augment=True, share=SHARE))
    for seed in range(5):  # no context frames: the option changes nothing
        assert np.array_equal(_window(0, "keyword", 0.6, seed, share=SHARE), _window(0, "keyword", 0.6, seed))


def test_recipe_context_speech_needs_a_context_and_changes_the_key_only_when_set() -> None:
    shape = {"kernel": 3, "blocks": 4, "norm_frames": 8, "pool_frames": 32, "context_frames": 20}
    with pytest.raises(ConfigError, match="context_speech"):
        _recipe("stream", kernel=3, blocks=4, norm_frames=8, pool_frames=32, context_speech=0.5)
    with pytest.raises(ConfigError, match="context_speech"):
        _recipe("stream", **shape, context_speech=1.5)
    clips: dict[str, list] = {"train": []}
    key = data._cache_key(_recipe("stream", **shape), clips)  # type: ignore[arg-type]
    assert key == data._cache_key(_recipe("stream", **shape, context_speech=0.0), clips)  # type: ignore[arg-type]
    assert key != data._cache_key(_recipe("stream", **shape, context_speech=0.5), clips)  # type: ignore[arg-type]
