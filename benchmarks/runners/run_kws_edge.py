"""kws_edge: its model run through ``kws_edge.pipeline.Detector`` exactly as the service runs it.

Records the keyword's raw posterior at every model run (the bench replays the manifest's decision over
them for the threshold sweep) and the Detector's own detections at the manifest threshold (to check
the replay), plus the Detector's per-stage process CPU times.
"""

from __future__ import annotations

from typing import Any

from _common import SAMPLE_RATE, cpu, load_job, wav_chunks, write_result


class Recorder:
    """Stands in for a ModelRunner inside the Detector and records one label's posterior per run."""

    def __init__(self, runner: Any, keyword: str) -> None:
        self.runner = runner
        self.manifest = runner.manifest
        self.name = runner.name
        self.labels = runner.labels
        self.index = runner.labels.index(keyword)
        self.scores: list[float] = []

    def fresh(self) -> Recorder:
        self.runner = self.runner.fresh()
        return self

    def reset(self) -> None:
        self.runner.reset()

    def quantize_frames(self, frames: Any) -> Any:
        return self.runner.quantize_frames(frames)

    def run_frames(self, q: Any) -> Any:  # what the Detector calls per run
        post = self.runner.run_frames(q)
        self.scores.append(float(post[self.index]))
        return post


def main() -> None:
    job, out = load_job()
    t0 = cpu()
    import numpy as np

    from kws_edge.model import load_model
    from kws_edge.pipeline import Detector

    kw = job["keyword"]
    rec = Recorder(load_model(job["options"]["manifest"]), kw)
    det = Detector([rec], timed=True)  # type: ignore[list-item]
    m = rec.manifest
    setup = cpu() - t0
    stages = {"features": 0.0, "inference": 0.0, "decision": 0.0, "inferences": 0}
    traces: dict[str, Any] = {}
    detections: dict[str, Any] = {}
    audio = 0
    t1 = cpu()
    for s in job["streams"]:
        rec.scores = []
        fired: list[float] = []
        n = 0
        for data, done in wav_chunks(s["path"], job["chunk"]):
            n = done
            fired += [d.t for d in det.process(np.frombuffer(data, dtype="<i2")) if d.keyword == kw]
        fired += [d.t for d in det.flush() if d.keyword == kw]
        for key in stages:
            stages[key] += getattr(det.times, key)
        det.reset()
        hop, flen, win, stride = m.features.hop, m.features.frame_len, m.window_frames, m.stride_frames
        ends = [((win + k * stride - 1) * hop + flen) for k in range(len(rec.scores))]
        traces[s["name"]] = {"t": [(e * 1000 // m.features.sample_rate) / 1000 for e in ends],
                             "score": rec.scores}
        detections[s["name"]] = {"detector": fired}
        audio += n
    loop = cpu() - t1
    d = m.decision
    info = {"model": m.name, "sha256": m.sha256, "backend": rec.runner.backend, "stages_cpu_s": stages,
            "default_threshold": d.thresholds[kw], "smoothing_ms": d.smoothing_ms, "min_hits": d.min_hits,
            "refractory_ms": d.refractory_ms, "size_bytes": m.size_bytes, "arena_bytes": m.arena_bytes}
    write_result(out, setup_cpu_s=setup, loop_cpu_s=loop, audio_s=audio / SAMPLE_RATE, traces=traces,
                 detections=detections, info=info)


if __name__ == "__main__":
    main()
