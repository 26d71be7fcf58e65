"""The fallback interpreter: tflite-runtime 2.14 (numpy<2) gives the same detections as LiteRT.

It runs in its own venv (.venv-tflite, made by `make setup`) because it cannot share numpy 2 with LiteRT.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kws_edge.audio import write_wav

REPO = Path(__file__).resolve().parent.parent
TFL_PYTHON = Path(os.environ.get("KWS_EDGE_TFLITE_PYTHON", REPO / ".venv-tflite" / "bin" / "python"))


def _has_tflite_runtime() -> bool:
    if not TFL_PYTHON.exists():
        return False
    probe = subprocess.run([str(TFL_PYTHON), "-c", "import tflite_runtime.interpreter"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _has_tflite_runtime(), reason="no .venv-tflite with tflite-runtime (run make setup)")
def test_tflite_runtime_fallback_matches_litert(tiny_model: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    write_wav(tmp_path / "n.wav", (rng.standard_normal(16000 * 5) * 3000).astype(np.int16))
    args = ["-m", "kws_edge", "detect", str(tmp_path / "n.wav"), "--model", str(tiny_model), "--json",
            "--threshold", "yes=0.2", "--threshold", "no=0.2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    which = "from kws_edge.model import interpreter_backend; print(interpreter_backend()[0])"
    backend = subprocess.run([str(TFL_PYTHON), "-c", which], env=env, capture_output=True, text=True, check=True)
    assert backend.stdout.strip() == "tflite-runtime"
    fallback = subprocess.run([str(TFL_PYTHON), *args], env=env, capture_output=True, text=True, check=True)
    litert = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, check=True)
    assert litert.stdout and fallback.stdout == litert.stdout
