"""pymicro-wakeword (microWakeWord models shipped inside the wheel), fed like a microphone.

Records the package's own smoothed probability (mean over its sliding window) at every model run.
"""

from __future__ import annotations

from typing import Any

from _common import SAMPLE_RATE, cpu, load_job, tflite_c_single_thread, wav_chunks, write_result


def main() -> None:
    job, out = load_job()
    t0 = cpu()
    import json
    from importlib.metadata import version
    from pathlib import Path

    import pymicro_wakeword
    from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model
    from pymicro_wakeword.wakeword import TfLiteWakeWord

    tflite_c_single_thread(TfLiteWakeWord)
    model = Model(job["options"].get("model", job["keyword"]))
    mww = MicroWakeWord.from_builtin(model)
    feats = MicroWakeWordFeatures()
    setup = cpu() - t0
    traces: dict[str, Any] = {}
    detections: dict[str, Any] = {}
    audio = 0
    t1 = cpu()
    for s in job["streams"]:
        t: list[float] = []
        score: list[float] = []
        n = 0
        for data, n in wav_chunks(s["path"], job["chunk"]):
            for f in feats.process_streaming(data):
                p = mww.process_streaming_prob(f)
                if p is not None and not mww._features:  # a model run happened on this frame
                    t.append(n / SAMPLE_RATE)
                    score.append(float(p))
        mww.reset()
        feats.reset()
        traces[s["name"]] = {"t": t, "score": score}
        detections[s["name"]] = {}
        audio += n
    loop = cpu() - t1
    mdir = Path(pymicro_wakeword.__file__).parent / "models"
    config = json.loads((mdir / f"{model.value}.json").read_text())
    info = {"package": f"pymicro-wakeword {version('pymicro-wakeword')}", "model": model.value,
            "default_threshold": mww.probability_cutoff, "sliding_window_size": mww.sliding_window_size,
            "size_bytes": (mdir / config["model"]).stat().st_size,
            "arena_bytes": config["micro"].get("tensor_arena_size")}
    write_result(out, setup_cpu_s=setup, loop_cpu_s=loop, audio_s=audio / SAMPLE_RATE, traces=traces,
                 detections=detections, info=info)


if __name__ == "__main__":
    main()
