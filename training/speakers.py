"""Pseudo-speakers: a TTS clip re-spoken with another vocal-tract length and pitch.

Praat's "Change gender" (through praat-parselmouth) scales the formants (``formant`` ratio ~0.8-1.25:
below 1 a longer vocal tract, above 1 a shorter one), moves the median pitch to ``pitch_hz`` and scales
the pitch excursions by ``pitch_range``. Used on a fraction of the planned jobs (``speaker_augment``),
so a handful of TTS voices stand in for many speakers. The transform is deterministic (PSOLA and
resampling; the random periods PSOLA uses in unvoiced stretches come from Praat's generator, seeded
from the clip and the speaker for each call); the parameters are drawn per job in :func:`draw` and are part of the job's
cache key.
"""

from __future__ import annotations

import hashlib
import random
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000
PITCH_FLOOR_HZ = 75.0  # pitch analysis range of the source clip
PITCH_CEILING_HZ = 600.0
MIN_SAMPLES = 1600  # 100 ms: shorter clips are returned unchanged


@dataclass(frozen=True)
class Speaker:
    """A pseudo-speaker: formant shift ratio, new median pitch (Hz), pitch range factor."""

    formant: float
    pitch_hz: float
    pitch_range: float


def draw(rng: random.Random, formant: tuple[float, float], pitch_hz: tuple[float, float],
         pitch_range: tuple[float, float]) -> Speaker:
    """A speaker from the ranges: pitch log-uniform; the formant ratio leans with the pitch (a high voice
    tends to come with a short vocal tract) but keeps half of its range free; always 3 draws from ``rng``."""
    u_pitch, u_formant, u_range = rng.random(), rng.random(), rng.random()
    hz = float(np.exp(np.log(pitch_hz[0]) + u_pitch * (np.log(pitch_hz[1]) - np.log(pitch_hz[0]))))
    lean = 0.5 * u_pitch + 0.5 * u_formant
    return Speaker(round(formant[0] + lean * (formant[1] - formant[0]), 3), round(hz, 1),
                   round(pitch_range[0] + u_range * (pitch_range[1] - pitch_range[0]), 3))


def transform(x: npt.NDArray[np.int16], speaker: Speaker, rate: int = SAMPLE_RATE) -> npt.NDArray[np.int16]:
    """``x`` as spoken by ``speaker``, same length, int16; unchanged if Praat cannot do it (a clip too
    short or without voiced frames)."""
    if len(x) < MIN_SAMPLES or not np.any(x):
        return x
    import parselmouth
    from parselmouth.praat import call

    sound = parselmouth.Sound(x.astype(np.float64) / 32768.0, sampling_frequency=rate)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PraatWarning "no voiced segments": handled below
            pitch = sound.to_pitch(time_step=0.01, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ)
            if call(pitch, "Count voiced frames") < 3:
                return x
            digest = hashlib.sha256(x.tobytes() + repr(speaker).encode()).digest()
            parselmouth.praat.run(  # Praat's own generator: seeded per clip so output is reproducible
                f"random_initializeWithSeedUnsafelyButPredictably ({int.from_bytes(digest[:6], 'big')})")
            out = call(sound, "Change gender", PITCH_FLOOR_HZ, PITCH_CEILING_HZ, speaker.formant,
                       speaker.pitch_hz, speaker.pitch_range, 1.0)
    except parselmouth.PraatError:
        return x
    finally:
        parselmouth.praat.run("random_initializeSafelyAndUnpredictably ()")
    y = np.asarray(out.values[0], dtype=np.float64) * 32768.0
    if len(y) == 0 or not np.all(np.isfinite(y)):
        return x
    peak = float(np.abs(y).max())
    if peak > 32767.0:  # keep the level, but never clip
        y *= 32767.0 / peak
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def median_pitch(x: npt.NDArray[np.int16], rate: int = SAMPLE_RATE) -> float:
    """Median F0 (Hz) of the voiced frames, NaN if none (for tests and reports)."""
    import parselmouth

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pitch = parselmouth.Sound(x.astype(np.float64) / 32768.0, sampling_frequency=rate).to_pitch(
            time_step=0.01, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ)
    f0 = pitch.selected_array["frequency"]
    voiced = f0[f0 > 0]
    return float(np.median(voiced)) if len(voiced) else float("nan")
