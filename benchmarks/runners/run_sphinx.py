"""pocketsphinx keyphrase search at one threshold (the bench runs one process per threshold of its sweep).

A detection is reported when the decoder's hypothesis appears; the utterance is then restarted, as
pocketsphinx's own keyword-spotting examples do.
"""

from __future__ import annotations

from typing import Any

from _common import SAMPLE_RATE, cpu, load_job, wav_chunks, write_result


def main() -> None:
    job, out = load_job()
    t0 = cpu()
    from importlib.metadata import version

    from pocketsphinx import Decoder

    phrase = job["options"]["keyphrase"]
    threshold = float(job["options"]["threshold"])
    dec = Decoder(lm=None, keyphrase=phrase, kws_threshold=threshold, loglevel="FATAL")
    setup = cpu() - t0
    traces: dict[str, Any] = {}
    detections: dict[str, Any] = {}
    audio = 0
    t1 = cpu()
    for s in job["streams"]:
        fired: list[float] = []
        n = 0
        dec.start_utt()
        for data, n in wav_chunks(s["path"], job["chunk"]):
            dec.process_raw(data, False, False)
            if dec.hyp() is not None:
                fired.append(n / SAMPLE_RATE)
                dec.end_utt()
                dec.start_utt()
        dec.end_utt()
        traces[s["name"]] = {"t": [], "score": []}
        detections[s["name"]] = {f"{threshold:g}": fired}
        audio += n
    loop = cpu() - t1
    info = {"package": f"pocketsphinx {version('pocketsphinx')}", "keyphrase": phrase,
            "kws_threshold": threshold}
    write_result(out, setup_cpu_s=setup, loop_cpu_s=loop, audio_s=audio / SAMPLE_RATE, traces=traces,
                 detections=detections, info=info)


if __name__ == "__main__":
    main()
