"""The real-voice check: data location and format errors, streams, folder roles, counting, the CLI.

Hermetic: the real-voice folder is a fixture written here (espeak-ng speech or tones as FLAC); nothing
under /work/shared is read.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kws_edge.decision import DecisionParams
from kws_edge.errors import ConfigError
from tests.conftest import kws_cmd, needs_tts, shipped, write_flac
from training import augment as aug
from training import realvoice as rv
from training import streams as st
from training.evaluate import frr_breakdown
from training.workflow import real_summary

sf = pytest.importorskip("soundfile")


def _tone(seconds: float, freq: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    x = np.sin(2 * np.pi * freq * t) * np.hanning(len(t)) * 8000 + rng.standard_normal(len(t)) * 30
    return x.astype(np.int16)


# --- locating and reading the data ---------------------------------------------------------------------

def test_missing_folder_is_a_config_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=str(missing)):
        rv.realvoice_dir(missing)
    monkeypatch.setenv(rv.ENV_DIR, str(missing / "env"))
    with pytest.raises(ConfigError, match=r"KWS_EDGE_REALVOICE"):
        rv.realvoice_dir()
    monkeypatch.setenv(rv.ENV_DIR, str(tmp_path))
    assert rv.realvoice_dir() == tmp_path
    assert rv.realvoice_dir(tmp_path / ".") == tmp_path / "."  # an explicit argument wins over the env
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"empty.*\.flac"):
        rv.load_folder(tmp_path, "empty")


def test_default_folder_is_next_to_the_repo() -> None:
    repo = Path(rv.__file__).resolve().parents[1]
    assert repo.parent / "shared" / "data" / "realvoice" == rv.DEFAULT_DIR


def test_wrong_rate_or_channels_names_the_file(tmp_path: Path) -> None:
    good = write_flac(tmp_path / "ok" / "good.flac", _tone(1.0, 440, 0))
    x = rv.read_clip(good)
    assert x.dtype == np.int16 and len(x) == 16000
    slow = write_flac(tmp_path / "bad" / "slow.flac", _tone(1.0, 440, 0), rate=8000)
    with pytest.raises(ConfigError, match=r"slow\.flac.*8000 Hz.*16 kHz mono"):
        rv.read_clip(slow)
    write_flac(tmp_path / "bad2" / "stereo.flac", np.stack([_tone(0.5, 440, 1)] * 2, axis=1))
    with pytest.raises(ConfigError, match=r"stereo\.flac.*2 channel"):
        rv.load_folder(tmp_path, "bad2")
    junk = tmp_path / "bad3" / "junk.flac"
    junk.parent.mkdir()
    junk.write_bytes(b"not audio at all")
    with pytest.raises(ConfigError, match=r"junk\.flac"):
        rv.read_clip(junk)


# --- streams ------------------------------------------------------------------------------------------

def _clips(n: int, seed: int, prefix: str) -> list[tuple[np.ndarray, str]]:
    rng = np.random.default_rng(seed)
    return [(_tone(rng.uniform(0.8, 2.0), rng.uniform(200, 2000), seed + i), f"{prefix}{i}") for i in range(n)]


def test_streams_are_deterministic_per_seed_and_spans_cover_the_clips() -> None:
    pos, neg = _clips(4, 1, "p"), _clips(6, 2, "n")
    bank = aug.NoiseBank([], [])
    a = rv.build_streams(pos, neg, bank, rv.NOISE_KINDS, seed=3)
    b = rv.build_streams(pos, neg, bank, rv.NOISE_KINDS, seed=3)
    c = rv.build_streams(pos, neg, bank, rv.NOISE_KINDS, seed=4)
    assert list(a) == ["clean", "10db"]
    for cond in a:
        for role in ("positive", "negative"):
            assert np.array_equal(a[cond][role].samples, b[cond][role].samples)
            assert a[cond][role].spans == b[cond][role].spans
            assert not np.array_equal(a[cond][role].samples[:len(c[cond][role].samples)],
                                      c[cond][role].samples[:len(a[cond][role].samples)])
    by_label = dict((lab, x) for x, lab in pos + neg)
    for role, clips in (("positive", pos), ("negative", neg)):
        stream = a["clean"][role]
        assert sorted(s[2] for s in stream.spans) == sorted(lab for _, lab in clips)  # every clip, once
        ends = [0.0]
        for start, end, lab in sorted(stream.spans):
            assert start >= ends[-1]  # clips do not overlap
            ends.append(end)
            seg = stream.samples[round(start * 16000):round(end * 16000)].astype(np.float64)
            ref = by_label[lab].astype(np.float64)
            assert len(seg) == len(ref)  # the span is the whole clip
            assert np.corrcoef(seg, ref)[0, 1] > 0.99  # ... and holds that clip (clean: scaled + dither)
        assert ends[-1] * 16000 <= len(stream.samples)
    noisy = a["10db"]["negative"]
    assert len(noisy.spans) == len(neg) and noisy.hours > 0


# --- which folders play which role --------------------------------------------------------------------

ALL = ("computer", "smart_mirror", "snowboy", "view_glass")


@pytest.mark.parametrize("keywords", [("computer",), ("view_glass",), ("hey_jarvis",), ("snowboy",),
                                      ("smart_mirror", "computer"), ("yes", "no")])
def test_training_folders_are_never_default_negatives(keywords: tuple[str, ...]) -> None:
    sel = rv.select_folders(keywords, ALL)
    assert not set(sel.negatives) & set(rv.TRAINING_FOLDERS)
    assert set(sel.negatives) == set(rv.VALIDATION_FOLDERS) - set(keywords)
    assert sel.positives == {k: k for k in keywords if k in ALL}


def test_folder_roles_and_override() -> None:
    assert rv.select_folders(["computer"], ALL).negatives == ("view_glass",)
    assert rv.select_folders(["hey_jarvis"], ("computer",)).negatives == ("computer",)
    assert rv.select_folders(["hey_jarvis"], ALL, negatives=["smart_mirror"]).negatives == ("smart_mirror",)
    with pytest.raises(ConfigError, match="nope"):
        rv.select_folders(["hey_jarvis"], ALL, negatives=["nope"])
    with pytest.raises(ConfigError, match="computer"):
        rv.select_folders(["computer"], ALL, negatives=["computer", "view_glass"])


# --- counting -----------------------------------------------------------------------------------------

LABELS = ["_silence_", "_unknown_", "kw"]


def _scores(seconds: float, bursts: list[float]) -> st.Scores:
    """60 ms model runs; the keyword posterior is 0.9 for 0.3 s from each burst time (s), else 0.02."""
    t = np.arange(60, int(seconds * 1000), 60, dtype=np.int64)
    p = np.full((len(t), 3), [0.49, 0.49, 0.02])
    for b in bursts:
        on = (t >= b * 1000) & (t < b * 1000 + 300)
        p[on] = [0.05, 0.05, 0.9]
    return st.Scores(t, p)


def test_rejects_and_accepts_on_hand_made_scores() -> None:
    d = DecisionParams({"kw": 0.5}, smoothing_ms=0, min_hits=2, refractory_ms=1500)
    spans = [(1.0, 2.0, "kw"), (5.0, 6.0, "kw"), (10.0, 11.0, "kw"), (15.0, 16.0, "kw")]
    # inside clip 1, 0.7 s after clip 2 (within the 1 s tolerance), 1.5 s after clip 3 (too late), none for 4
    sc = _scores(20.0, [1.5, 6.7, 12.5])
    evs = rv.detections(sc, LABELS, d.thresholds, d)
    assert len(evs["kw"]) == 3
    r = rv.count_rejects(spans, evs)
    assert (r["clips"], r["detected"], r["missed"]) == (4, 2, 2) and r["frr"] == 0.5
    assert r["per_keyword"]["kw"] == {"clips": 4, "detected": 2, "frr": 0.5}
    assert rv.count_rejects(spans, evs, tolerance_s=2.0)["detected"] == 3
    neg_spans = [(1.0, 2.0, "view_glass"), (5.0, 6.0, "computer"), (10.0, 11.0, "computer")]
    a = rv.count_accepts(neg_spans, evs, hours=0.5)
    assert a["false_accepts"] == 3 and a["fa_per_hour"] == 6.0
    assert a["per_source"] == {"view_glass": 1, "computer": 1, "gap": 1}
    strict = DecisionParams({"kw": 0.95}, 0, 1, 1500)
    assert rv.detections(sc, LABELS, strict.thresholds, strict) == {"kw": []}


def test_det_sweep_and_operating_points() -> None:
    d = DecisionParams({"kw": 0.5}, smoothing_ms=0, min_hits=1, refractory_ms=1500)
    pos = st.Stream(np.zeros(20 * 16000, dtype=np.int16), [(1.0, 2.0, "kw"), (5.0, 6.0, "kw")])
    neg = st.Stream(np.zeros(3600 * 16000 // 100, dtype=np.int16), [])  # 36 s = 0.01 h
    curve = rv.det_sweep((_scores(20.0, [1.5]), pos), (_scores(36.0, [20.0]), neg), LABELS, ["kw"], d)
    assert len(curve) == 255
    low, high = curve[0], curve[-1]  # 1/256: everything above 0.02 fires; 255/256: nothing does
    assert low["frr"] == 0.0 and high["frr"] == 1.0
    assert high["fa_per_hour"] == 0.0 and low["fa_per_hour"] > 100
    mid = next(c for c in curve if c["threshold"] == 0.5)
    assert mid["frr"] == 0.5 and mid["fa_per_hour"] == pytest.approx(100.0)
    fake = [{"threshold": 0.1, "fa_per_hour": 5.0, "frr": 0.0}, {"threshold": 0.2, "fa_per_hour": 0.4, "frr": 0.1},
            {"threshold": 0.3, "fa_per_hour": 0.6, "frr": 0.2}, {"threshold": 0.4, "fa_per_hour": 0.2, "frr": 0.3}]
    assert rv.frr_at_fa(fake, 0.5) == {"reachable": True, "threshold": 0.4, "frr": 0.3, "fa_per_hour": 0.2}
    assert rv.frr_at_fa(fake, 1.0)["threshold"] == 0.2  # every higher threshold also meets it
    far = rv.frr_at_fa(fake, 0.1)
    assert not far["reachable"] and far["frr"] is None and "not reachable" in far["note"]


def test_frr_breakdown_per_engine_and_voice() -> None:
    spans = [(1.0, 2.0, "kw"), (4.0, 5.0, "kw"), (7.0, 8.0, "kw"), (10.0, 11.0, "kw"), (13.0, 14.0, "kw")]
    voices = ["espeak-ng:en-us", "espeak-ng:en-us+f3", "espeak-ng:en-us", "flite:slt", "piper:x:y"]
    evs = {"kw": [1500, 7200, 14500]}  # hits spans 0, 2 and 4 (0.5 s after its end)
    out = frr_breakdown(spans, voices, evs)
    assert out["engine"] == {"espeak-ng": {"utterances": 3, "missed": 1, "frr": 1 / 3},
                             "flite": {"utterances": 1, "missed": 1, "frr": 1.0},
                             "piper": {"utterances": 1, "missed": 0, "frr": 0.0}}
    assert out["voice"]["espeak-ng:en-us"] == {"utterances": 2, "missed": 0, "frr": 0.0}
    assert out["voice"]["espeak-ng:en-us+f3"]["missed"] == 1
    for kind in ("engine", "voice"):
        assert sum(r["utterances"] for r in out[kind].values()) == len(spans)
        assert sum(r["missed"] for r in out[kind].values()) == st.hits_and_misses(spans, evs)[1]
    with pytest.raises(ValueError, match="one voice per span"):
        frr_breakdown(spans, voices[:2], evs)


def test_real_summary_flags_disagreement() -> None:
    skipped = real_summary({"skipped": "no folder"}, 0.05)
    assert skipped["real_frr_clean"] is None and "real_vs_synthetic" not in skipped
    real = {"summary": {"real_frr_clean": 0.30, "real_frr_10db": 0.5, "real_fa_per_hour": 0.2,
                        "real_frr_at_0.5fa": 0.3, "real_frr_at_1fa": 0.25}}
    flagged = real_summary(real, 0.05)
    assert flagged["real_vs_synthetic"] == "disagree: synthetic 5.0% vs real 30.0%"
    assert "real_vs_synthetic" not in real_summary(real, 0.25)


# --- the whole check, with the shipped model ----------------------------------------------------------

@needs_tts
def test_evaluate_real_on_fixture(realvoice_root: Path, tmp_path: Path) -> None:
    from kws_edge.model import load_model
    from training import plots

    runner = load_model(shipped("hey_jarvis"))
    real = rv.evaluate_real(runner, realvoice_root, extra_speech=None, seed=1)
    assert real["positive_folders"] == {"hey_jarvis": "hey_jarvis"}
    assert real["clips"] == {"positive": {"hey_jarvis": 3}, "negative": {"computer": 2, "view_glass": 2}}
    for cond in ("clean", "10db"):
        at = real["at_threshold"][cond]
        assert at["rejects"]["clips"] == 3 and 0.0 <= at["rejects"]["frr"] <= 1.0
        assert len(real["det"][cond]) == 255 and real["negative_hours"][cond] > 0
    assert set(real["summary"]) >= {"real_frr_clean", "real_frr_10db", "real_fa_per_hour", "real_frr_at_0.5fa",
                                    "real_frr_at_1fa"}
    plots.real_det_plot(real, tmp_path / "real_det.png")
    assert (tmp_path / "real_det.png").stat().st_size > 1000
    again = rv.evaluate_real(runner, realvoice_root, extra_speech=None, seed=1)
    assert again["det"] == real["det"]  # seeded: the same streams, the same scores


@needs_tts
def test_cli_real_only(realvoice_root: Path, tmp_path: Path) -> None:
    model = shipped("hey_jarvis")
    # a copy without the positive folder: the model's keyword matches no folder -> false accepts only
    root = tmp_path / "rv"
    for folder in ("computer", "view_glass", "smart_mirror", "snowboy"):
        (root / folder).mkdir(parents=True)
        for f in (realvoice_root / folder).glob("*.flac"):
            (root / folder / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "report"
    r = subprocess.run(kws_cmd("eval", "--model", str(model), "--real-only", "--realvoice-dir", str(root),
                               "--report-dir", str(out)), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    real = json.loads((out / "real_voice.json").read_text())
    assert (out / "real_det.png").stat().st_size > 1000
    assert real["positive_folders"] == {} and "note" in real
    assert {"computer", "view_glass"} <= set(real["negative_sources"])
    assert not set(real["negative_sources"]) & {"smart_mirror", "snowboy"}
    assert real["summary"]["real_frr_clean"] is None and real["summary"]["real_fa_per_hour"] >= 0
    assert "FA/h" in r.stdout and "10db" in r.stdout

    missing = tmp_path / "missing"
    r = subprocess.run(kws_cmd("eval", "--model", str(model), "--real-only", "--realvoice-dir", str(missing),
                               "--report-dir", str(out)), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and str(missing) in r.stderr and "does not exist" in r.stderr
    r = subprocess.run(kws_cmd("eval", "--model", str(model)), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--recipe is required" in r.stderr and "Traceback" not in r.stderr


def test_real_thresholds_pool_conditions_by_hours_and_split_the_budget_per_keyword() -> None:
    from training.realvoice import GRID
    from training.workflow import _real_thresholds

    def counts(fas: dict[float, int]) -> list[int]:  # false accepts at and below each listed threshold
        return [next((n for t, n in sorted(fas.items()) if g <= t), 0) for g in GRID]

    # one keyword: at 0.5 the pooled rate is (0 + 6) / 4 h = 1.5 FA/h
    real = {"negative_hours": {"clean": 1.0, "10db": 3.0},
            "fa_by_keyword": {"clean": {"a": counts({0.25: 4, 0.5: 0})}, "10db": {"a": counts({0.25: 12, 0.5: 6})}}}
    assert _real_thresholds(real, 1.0, ["a"]) == {"a": GRID[GRID > 0.5][0]}
    assert _real_thresholds(real, 1.5, ["a"]) == {"a": GRID[GRID > 0.25][0]}
    assert _real_thresholds(real, 10.0, ["a"]) == {"a": GRID[0]}
    # two keywords share the budget: each may have 0.5 FA/h (2 false accepts in 4 h), and the quiet one
    # keeps a low threshold
    real["fa_by_keyword"] = {"clean": {"a": counts({0.25: 2}), "b": counts({0.9: 2})},
                             "10db": {"a": counts({0.25: 1}), "b": counts({0.9: 1})}}
    got = _real_thresholds(real, 1.0, ["a", "b"])
    assert got == {"a": GRID[GRID > 0.25][0], "b": GRID[GRID > 0.9][0]}
    # a keyword whose false accepts come back above a quiet stretch takes the threshold above them all
    real["fa_by_keyword"] = {"clean": {"a": counts({0.3: 0, 0.6: 5})}, "10db": {"a": counts({0.6: 0})}}
    assert _real_thresholds(real, 1.0, ["a"]) == {"a": GRID[GRID > 0.6][0]}
    assert _real_thresholds({"skipped": "no data"}, 1.0, ["a"]) is None
    # the synthetic side: one condition, 0.5 FA/h over 10 keywords in 0.5 h allows none per keyword
    from training.evaluate import per_keyword_thresholds

    synth = {"synthetic": {"a": counts({0.7: 1}), "b": counts({})}}
    assert per_keyword_thresholds(synth, {"synthetic": 0.5}, 0.5, ["a", "b"]) == {"a": GRID[GRID > 0.7][0],
                                                                                  "b": GRID[0]}


def test_substitution_floors_keep_a_keyword_off_the_others_utterances() -> None:
    """"up" scores 0.7 inside 3 of 200 "stop" utterances: allowed to fire on 1 % of them (2), its floor
    rises above 0.7; allowed 2 % (4), it keeps the lowest threshold."""
    from kws_edge.decision import DecisionParams
    from training.evaluate import floors_from_scores
    from training.streams import Scores

    labels, keywords = ["_silence_", "_unknown_", "up", "stop"], ["up", "stop"]
    n = 200
    times = np.arange(n * 50) * 60  # 60 ms runs, one utterance every 3 s
    post = np.zeros((len(times), 4))
    spans = [(i * 3.0 + 1.0, i * 3.0 + 1.5, "stop") for i in range(n)]
    t = times / 1000
    for i, (a, b, _) in enumerate(spans):
        inside = (t >= a) & (t <= b)
        post[inside, 3] = 0.99
        if i < 3:  # three "stop" utterances also look like "up"
            post[inside, 2] = 0.7
    d = DecisionParams({"up": 0.5, "stop": 0.5}, smoothing_ms=0, min_hits=2, refractory_ms=1000)
    floors = floors_from_scores([(Scores(times, post), spans)], labels, keywords, d, max_rate=0.01)
    assert floors["up"] > 0.7  # 3 of 200 would be 1.5 %
    assert floors["stop"] == 1 / 256  # no "up" utterance to fire on
    floors = floors_from_scores([(Scores(times, post), spans)], labels, keywords, d, max_rate=0.02)
    assert floors["up"] == 1 / 256  # 3 of 200 is within 2 % (4 allowed)


def test_substitution_floors_are_per_pair_of_keywords() -> None:
    """Nine harmless keywords cannot hide one confusable pair: "up" scores 0.7 in 3 of 100 "stop" utterances
    and in none of 900 others'. Pooled that is 0.3 % (under 1 %); for the pair it is 3 %, so the floor rises."""
    from kws_edge.decision import DecisionParams
    from training.evaluate import floors_from_scores
    from training.streams import Scores

    others = [f"w{i}" for i in range(9)]
    keywords = ["up", "stop", *others]
    labels = ["_silence_", "_unknown_", *keywords]
    spoken = ["stop"] * 100 + [w for w in others for _ in range(100)]
    times = np.arange(len(spoken) * 50) * 60
    t = times / 1000
    post = np.zeros((len(times), len(labels)))
    spans = [(i * 3.0 + 1.0, i * 3.0 + 1.5, w) for i, w in enumerate(spoken)]
    for i, (a, b, w) in enumerate(spans):
        inside = (t >= a) & (t <= b)
        post[inside, labels.index(w)] = 0.99
        if i < 3:
            post[inside, labels.index("up")] = 0.7
    d = DecisionParams({k: 0.5 for k in keywords}, smoothing_ms=0, min_hits=2, refractory_ms=1000)
    floors = floors_from_scores([(Scores(times, post), spans)], labels, keywords, d, max_rate=0.01)
    assert floors["up"] > 0.7
    assert all(floors[w] == 1 / 256 for w in ["stop", *others])

