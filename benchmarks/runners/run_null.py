"""The null system: reads every stream like the others and never fires (score 0 after every chunk)."""

from __future__ import annotations

from typing import Any

from _common import SAMPLE_RATE, cpu, load_job, wav_chunks, write_result


def main() -> None:
    job, out = load_job()
    t0 = cpu()
    traces: dict[str, Any] = {}
    detections: dict[str, Any] = {}
    audio = 0
    for s in job["streams"]:
        t, score, n = [], [], 0
        for _, n in wav_chunks(s["path"], job["chunk"]):
            t.append(n / SAMPLE_RATE)
            score.append(0.0)
        traces[s["name"]] = {"t": t, "score": score}
        detections[s["name"]] = {}
        audio += n
    write_result(out, setup_cpu_s=0.0, loop_cpu_s=cpu() - t0, audio_s=audio / SAMPLE_RATE, traces=traces,
                 detections=detections, info={"default_threshold": 0.5})


if __name__ == "__main__":
    main()
