"""kws_edge's evaluation and benchmark suite, fronted by ``kws-edge bench``.

Pieces, in the order the bench uses them:

- :mod:`benchmarks.tts` and :mod:`benchmarks.text`: held-out TTS voices and non-keyword sentences;
- :mod:`benchmarks.noise`: white, pink and babble noise, synthetic reverberation, mixing at an SNR;
- :mod:`benchmarks.corpus`: the deterministic evaluation streams and their labels JSON;
- :mod:`benchmarks.systems`: the systems under test (kws_edge, the open peers, a null system), each
  run in its own subprocess (peers in their own venvs) that reads the streams chunk by chunk;
- :mod:`benchmarks.scoring`: detections -> true/false accepts, FRR per SNR, FA/h, threshold sweeps;
- :mod:`benchmarks.report`: ``results.json``, ``results.md`` and the DET plots;
- :mod:`benchmarks.cli`: the ``kws-edge bench`` command.
"""
