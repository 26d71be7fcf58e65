"""pyopen-wakeword (openWakeWord models shipped inside the wheel; research use only), fed like a microphone.

Records the model's probability at every model run (every 80 ms of audio).
"""

from __future__ import annotations

from typing import Any

from _common import SAMPLE_RATE, cpu, load_job, tflite_c_single_thread, wav_chunks, write_result


def main() -> None:
    job, out = load_job()
    t0 = cpu()
    from importlib.metadata import version
    from pathlib import Path

    import pyopen_wakeword
    from pyopen_wakeword import Model, OpenWakeWord, OpenWakeWordFeatures
    from pyopen_wakeword.wakeword import TfLiteWakeWord

    tflite_c_single_thread(TfLiteWakeWord)
    model = Model(job["options"].get("model", job["keyword"]))
    oww = OpenWakeWord.from_builtin(model)
    feats = OpenWakeWordFeatures.from_builtin()
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
                for p in oww.process_streaming(f):
                    t.append(n / SAMPLE_RATE)
                    score.append(float(p))
        oww.reset()
        feats.reset()
        traces[s["name"]] = {"t": t, "score": score}
        detections[s["name"]] = {}
        audio += n
    loop = cpu() - t1
    mdir = Path(pyopen_wakeword.__file__).parent / "models"
    sizes = {p.name: p.stat().st_size for p in (mdir / f"{model.value}.tflite", mdir / "melspectrogram.tflite",
                                                mdir / "embedding_model.tflite")}
    info = {"package": f"pyopen-wakeword {version('pyopen-wakeword')}", "model": model.value,
            "default_threshold": 0.5, "size_bytes": sum(sizes.values()), "model_files": sizes}
    write_result(out, setup_cpu_s=setup, loop_cpu_s=loop, audio_s=audio / SAMPLE_RATE, traces=traces,
                 detections=detections, info=info)


if __name__ == "__main__":
    main()
