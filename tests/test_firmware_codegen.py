"""Generated sketch files (kws_edge.firmware): values from the manifest, a header that compiles with the
portable C++, refusal of models the firmware cannot run, and the committed files up to date."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kws_edge import firmware
from kws_edge import manifest as mf
from kws_edge.errors import ModelError
from tests.test_firmware_support import REPO

SHIPPED = REPO / "models" / "hey_jarvis.json"


def _const(text: str, name: str) -> str:
    match = re.search(rf"\b{name}(?:\[[^\]]*\])? = (.+);", text)
    assert match, f"{name} not in header"
    return match.group(1)


def test_settings_header_carries_the_manifest(tiny_model: Path) -> None:
    m = mf.load(tiny_model)
    text = firmware.settings_header(m)
    assert _const(text, "kModelSha256") == f'"{m.sha256}"'
    assert _const(text, "kModelSha8") == f'"{m.sha256[:8]}"'
    assert int(_const(text, "kTensorArenaSize").split()[0]) >= m.arena_bytes
    assert float(_const(text, "kInputScale")) == m.input.scale
    assert int(_const(text, "kInputZeroPoint")) == m.input.zero_point
    assert int(_const(text, "kFrameLen")) == m.features.frame_len and int(_const(text, "kHop")) == m.features.hop
    assert _const(text, "kLabels") == "{" + ", ".join(f'"{x}"' for x in m.labels) + "}"
    kws = list(m.decision.thresholds)
    assert _const(text, "kKeywordLabels") == "{" + ", ".join(str(m.labels.index(k)) for k in kws) + "}"
    assert [float(x) for x in _const(text, "kThresholds").strip("{}").split(",")] == \
        [m.decision.thresholds[k] for k in kws]
    assert int(_const(text, "kRefractoryMs")) == m.decision.refractory_ms


def test_generated_files_compile_with_the_portable_code(tiny_model: Path, tmp_path: Path) -> None:
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    sketch = tmp_path / "kws_nano"
    shutil.copytree(firmware.SKETCH_DIR, sketch)
    firmware.generate(tiny_model, sketch)
    check = tmp_path / "check.cpp"
    check.write_text(
        '#include "feature_provider.h"\n#include "model_data.h"\n#include "model_settings.h"\n'
        '#include "recognize_commands.h"\n#include <stdio.h>\n'
        "int main() {\n"
        "  kws::FeatureConfig c{kws_model::kSampleRate, kws_model::kFrameLen, kws_model::kHop,\n"
        "    kws_model::kNfft, kws_model::kNumcep, kws_model::kNfilt, kws_model::kLowFreq,\n"
        "    kws_model::kHighFreq, kws_model::kPreemph, kws_model::kCepLifter, kws_model::kAppendEnergy,\n"
        "    static_cast<kws::WindowKind>(kws_model::kWindowKind), kws_model::kWindowFrames,\n"
        "    kws_model::kStrideFrames, kws_model::kInputScale, kws_model::kInputZeroPoint};\n"
        "  static kws::FeatureProvider fp;\n  static kws::RecognizeCommands rc;\n"
        "  kws::DecisionConfig d{kws_model::kNumLabels, kws_model::kNumKeywords, kws_model::kKeywordLabels,\n"
        "    kws_model::kThresholds, kws_model::kSmoothingMs, kws_model::kMinHits, kws_model::kRefractoryMs};\n"
        "  if (fp.Init(c) != kws::Status::kOk || !rc.Init(d)) return 1;\n"
        '  printf("%u %s\\n", g_model_len, kws_model::kModelSha8);\n  return 0;\n}\n')
    exe = tmp_path / "check"
    subprocess.run(["g++", "-std=c++14", "-Wall", "-Werror", f"-I{sketch}", str(check),
                    str(sketch / "feature_provider.cpp"), str(sketch / "recognize_commands.cpp"),
                    str(sketch / "model_data.cpp"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    m = mf.load(tiny_model)
    assert out == [str(m.size_bytes), m.sha256[:8]]


def test_model_array_is_the_tflite(tiny_model: Path, tmp_path: Path) -> None:
    from training.export import parse_c_array

    sketch = tmp_path / "kws_nano"
    sketch.mkdir()
    firmware.generate(tiny_model, sketch)
    m = mf.load(tiny_model)
    assert parse_c_array((sketch / "model_data.cpp").read_text()) == m.model_path.read_bytes()
    assert m.sha256 in (sketch / "model_data.h").read_text()


def _edited(tiny_model: Path, tmp_path: Path, edit: dict[str, object]) -> Path:
    data = json.loads(tiny_model.read_text())
    for key, value in edit.items():
        section, _, sub = key.partition(".")
        if sub:
            data[section][sub] = value
        else:
            data[key] = value
    shutil.copy(tiny_model.with_suffix(".tflite"), tmp_path / "tiny.tflite")
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, message", [
    ({"features.nfft": 1000}, "power of two"),
    # a valid MQTT topic level (a space is refused when the manifest loads) that KWS1 cannot carry
    ({"labels": ["_silence_", "_unknown_", "yes:please", "no"], "keywords": ["yes:please", "no"],
      "decision.thresholds": {"yes:please": 0.5, "no": 0.5}}, "cannot be sent over serial"),
    ({"ops": ["CONV_2D", "CUSTOM_THING"]}, "no MicroMutableOpResolver registration"),
])
def test_models_the_firmware_cannot_run_are_refused(tiny_model: Path, tmp_path: Path,
                                                    edit: dict[str, object], message: str) -> None:
    path = _edited(tiny_model, tmp_path, edit)
    sketch = tmp_path / "sketch"
    sketch.mkdir()
    with pytest.raises(ModelError, match=message):
        firmware.generate(path, sketch)
    assert not list(sketch.iterdir())


def test_model_and_manifest_that_do_not_belong_together_are_refused(tiny_model: Path, tmp_path: Path) -> None:
    path = _edited(tiny_model, tmp_path, {"sha256": "0" * 64})
    with pytest.raises(ModelError, match="sha256"):
        firmware.generate(path, tmp_path)


def test_committed_sketch_files_are_up_to_date_with_the_shipped_model(tmp_path: Path) -> None:
    if not SHIPPED.exists():
        pytest.skip("models/hey_jarvis is not shipped yet")
    sketch = tmp_path / "kws_nano"
    sketch.mkdir()
    firmware.generate(SHIPPED, sketch)
    for name in firmware.GENERATED:
        committed = firmware.SKETCH_DIR / name
        assert committed.exists(), f"{committed} missing: run kws-edge flash --export-only --model hey_jarvis"
        assert committed.read_bytes() == (sketch / name).read_bytes(), \
            f"{committed} is stale: run kws-edge flash --export-only --model hey_jarvis"
