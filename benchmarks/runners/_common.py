"""Shared by the runner scripts: the job/result protocol and a microphone-like WAV reader.

Job (JSON): ``{"keyword": "hey_jarvis", "chunk": 1280, "streams": [{"name", "path"}, ...],
"options": {...}}``. Result (JSON): ``{"setup_cpu_s", "loop_cpu_s", "audio_s", "threads", "info",
"traces": {stream: {"t": [...], "score": [...]}}, "detections": {stream: {label: [t, ...]}}}``.
``loop_cpu_s`` is the process CPU time spent feeding audio (setup excluded); scores and detections
are kept in lists during the loop and written only at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
import wave
from collections.abc import Iterator
from typing import Any

SAMPLE_RATE = 16000


def load_job() -> tuple[dict[str, Any], str]:
    """(job, output path) from argv."""
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} JOB.json OUT.json")
    with open(sys.argv[1], encoding="utf-8") as f:
        return json.load(f), sys.argv[2]


def wav_chunks(path: str, chunk: int) -> Iterator[tuple[bytes, int]]:
    """Yield (int16 little-endian bytes, samples read so far) chunk by chunk, as a microphone would."""
    with wave.open(path, "rb") as w:
        if w.getframerate() != SAMPLE_RATE or w.getsampwidth() != 2 or w.getnchannels() != 1:
            sys.exit(f"{path}: expected 16 kHz 16-bit mono")
        done = 0
        while True:
            data = w.readframes(chunk)
            if not data:
                return
            done += len(data) // 2
            yield data, done


def proc_status(field: str) -> int:
    """An integer field of /proc/self/status (``Threads``, ``VmHWM`` in kB), or -1 when unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def cpu() -> float:
    return time.process_time()


def write_result(out: str, *, setup_cpu_s: float, loop_cpu_s: float, audio_s: float,
                 traces: dict[str, Any], detections: dict[str, Any], info: dict[str, Any]) -> None:
    # VmHWM is the peak RSS of this program's own address space: unlike ru_maxrss it does not include
    # the parent's memory that the forked child carried until exec.
    result = {"setup_cpu_s": setup_cpu_s, "loop_cpu_s": loop_cpu_s, "audio_s": audio_s,
              "threads": proc_status("Threads"), "vm_hwm_kb": proc_status("VmHWM"), "pid": os.getpid(),
              "info": info, "traces": traces, "detections": detections}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f)


def tflite_c_single_thread(base_cls: Any) -> None:
    """Make every interpreter a ``TfLiteWakeWord`` subclass creates run with one thread.

    pymicro-wakeword and pyopen-wakeword call ``TfLiteInterpreterCreate(model, NULL)``, which lets
    TensorFlow Lite start a thread pool; the bench compares single-threaded CPU time, so the runner
    passes interpreter options with ``num_threads = 1`` instead. Nothing else changes.
    """
    original = base_cls.__init__

    def init(self: Any, path: Any) -> None:
        original(self, path)
        self.lib = _OneThreadLib(self.lib)

    base_cls.__init__ = init


class _OneThreadLib:
    def __init__(self, lib: Any) -> None:
        import ctypes

        self._lib = lib
        lib.TfLiteInterpreterOptionsCreate.restype = ctypes.c_void_p
        lib.TfLiteInterpreterOptionsSetNumThreads.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        self._options = lib.TfLiteInterpreterOptionsCreate()
        lib.TfLiteInterpreterOptionsSetNumThreads(self._options, 1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lib, name)

    def TfLiteInterpreterCreate(self, model: Any, _options: Any) -> Any:
        return self._lib.TfLiteInterpreterCreate(model, self._options)
