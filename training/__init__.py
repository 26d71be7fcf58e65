"""Training: keywords typed as text become evaluated int8 models for the Pi and the Nano.

Fronted by ``kws-edge train`` / ``kws-edge eval`` / ``kws-edge export`` (:mod:`training.cli`).
Stages: :mod:`training.sources` (TTS plan and synthesis) or :mod:`training.speech_commands`,
:mod:`training.data` (augmentation and MFCC windows), :mod:`training.train` (DS-CNN,
:mod:`training.model`), :mod:`training.export` (int8, manifest, C array), :mod:`training.evaluate`
and :mod:`training.streams` (held-out voices, FRR, false accepts per hour, DET).
"""
