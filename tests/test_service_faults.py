"""Hostile input against the service: poisoned board lines, bad names, malformed manifests, reloads that
fail, absurd WAV headers, config mistakes that used to pass, and flash without arduino-cli.

Real parts throughout: a mosquitto per test, a real pty for the board, the daemon as a child process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kws_edge import config as cfg
from kws_edge import manifest as mf
from kws_edge import protocol
from kws_edge.errors import ConfigError, ModelError
from kws_edge.model import load_model
from tests.test_service_support import (
    KWS_EDGE,
    Broker,
    Subscriber,
    board_daemon,
    detect_json,
    hermetic_env,
    needs_mosquitto,
    noise_wav,
    tiny_model,
    wait_until,
)

BAD_NAMES = ["x\x00y", "x\x1by", "x/y", "a/+/#", "$SYS", "x y", "dev\n", "x" * 65, ""]


def _line(keyword: bytes) -> bytes:
    """A KWS1 DET line with a valid checksum, whatever the keyword bytes."""
    body = b"KWS1 DET " + keyword + b" 0.9000 100"
    return body + b"*%04X\r\n" % protocol.crc16(body)


# -- one rule for topic names ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_by_every_loader(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="service.device_id"):
        cfg.from_dict({"service": {"device_id": name}})
    if name:
        with pytest.raises(ConfigError, match="--device-id"):
            cfg.with_overrides(cfg.from_dict({"service": {"device_id": "ok"}}), device_id=name)
    data = json.loads(tiny_model().read_text())
    data["labels"] = [*data["labels"][:-1], name]
    data["keywords"] = [name]
    data["decision"]["thresholds"] = {name: 0.5}
    with pytest.raises(ModelError, match="keywords|labels"):
        mf.parse(data, "m.json")
    if name and "\n" not in name and " " not in name and len(name) < 60:
        with pytest.raises(protocol.ProtocolError):
            protocol.parse_line(_line(name.encode("latin-1")))


@needs_mosquitto
def test_poisoned_board_lines_never_reach_the_broker_and_later_ones_arrive(tmp_path: Path) -> None:
    pytest.importorskip("serial")
    model = tiny_model()
    with board_daemon(tmp_path, "", "#", model, config_extra="[mqtt]\nhermes = true\n") as d:
        os.write(d.board, protocol.format_detection("yes", 0.5, 1))
        for bad in (b"x\x00y", b"x\x1by", b"a/+/#", b"$SYS", b"x/y"):
            os.write(d.board, _line(bad))
        os.write(d.board, protocol.format_detection("no", 0.6, 2))
        wait_until(lambda: len(d.sub.detections()) >= 2, what="the two valid detections")
        d.stop()
    sub, log = d.sub, d.log
    dets = sub.detections()
    assert [(d["keyword"], d["seq"]) for d in dets] == [("yes", 1), ("no", 2)]
    topics = [t for t, _, _ in sub.messages if t.startswith("hermes/")]
    assert topics == ["hermes/hotword/yes/detected", "hermes/hotword/no/detected"]
    assert "Traceback" not in log.read_text()


# -- malformed manifests: one line, never a traceback ---------------------------------------------------

def _tiny_copy(d: Path, name: str = "tiny") -> tuple[Path, dict[str, Any]]:
    src = tiny_model()
    data = json.loads(src.read_text())
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(src.parent / data["model_file"], d / data["model_file"])
    path = d / f"{name}.json"
    path.write_text(json.dumps({**data, "name": name}))
    return path, data


def _bad_manifests(d: Path) -> dict[str, Path]:
    _, data = _tiny_copy(d)
    out: dict[str, Path] = {}

    def write(tag: str, content: str | bytes) -> None:
        p = d / f"bad_{tag}.json"
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        out[tag] = p

    write("not_utf8", b"\xff\xfe{" + json.dumps(data).encode())
    write("deep_nesting", "[" * 100_000 + "]" * 100_000)
    (d / "adir").mkdir()
    write("dir_model_file", json.dumps({**data, "model_file": "adir"}))
    write("zero_hop", json.dumps({**data, "features": {**data["features"], "winstep": 1e-5}}))
    write("nan_scale", json.dumps({**data, "input": {**data["input"], "scale": float("nan")}}))
    write("infinite_winlen", json.dumps({**data, "features": {**data["features"], "winlen": 1e400}}))
    write("bool_frames", json.dumps({**data, "window_frames": True}))
    write("fractional_zero_point", json.dumps({**data, "input": {**data["input"], "zero_point": 1.5}}))
    write("bool_threshold", json.dumps({**data, "decision": {**data["decision"], "thresholds": {"yes": True,
                                                                                               "no": 0.5}}}))
    write("huge_nfft", json.dumps({**data, "features": {**data["features"], "nfft": 10**12}}))
    write("not_an_object", "[1, 2, 3]")
    return out


def test_every_malformed_manifest_is_a_model_error(tmp_path: Path) -> None:
    for tag, path in _bad_manifests(tmp_path / "m").items():
        with pytest.raises(ModelError) as err:
            load_model(path)
        assert str(path) in str(err.value) or "adir" in str(err.value), tag
        assert "\n" not in str(err.value), tag


def test_detect_prints_one_line_for_a_malformed_manifest(tmp_path: Path) -> None:
    wav = noise_wav(tmp_path / "n.wav", 2.0)
    bad = _bad_manifests(tmp_path / "m")
    for tag in ("not_utf8", "deep_nesting", "dir_model_file", "zero_hop"):
        res = subprocess.run([*KWS_EDGE, "detect", str(wav), "--model", str(bad[tag])], capture_output=True,
                             text=True, env=hermetic_env(tmp_path), timeout=120)
        assert res.returncode == 2, (tag, res.stderr)
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, (tag, res.stderr)


def test_a_bad_installed_manifest_is_skipped_by_detect_models_and_run(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _tiny_copy(models)
    (models / "broken.json").write_bytes(b"\xff not json")
    wav = noise_wav(tmp_path / "n.wav", 6.0, seed=3)
    env = {**hermetic_env(tmp_path), "KWS_EDGE_MODELS": str(models)}  # first; this checkout's models/ follow
    res = subprocess.run([*KWS_EDGE, "detect", str(wav), "--json", "--threshold", "yes=0.0"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    got = [json.loads(x) for x in res.stdout.splitlines()]
    assert [d for d in got if d["model"] == "tiny"] == detect_json(wav, models / "tiny.json")
    assert "broken.json" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([*KWS_EDGE, "models"], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0 and "tiny (" in res.stdout and "broken.json" in res.stderr
    config = tmp_path / "c.toml"
    config.write_text("")
    res = subprocess.run([*KWS_EDGE, "run", "--config", str(config), "--input", str(wav), "--no-mqtt",
                          "--threshold", "yes=0.0", "--state-dir", str(tmp_path / "st")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "skipping an installed model" in res.stderr and "broken.json" in res.stderr


@needs_mosquitto
def test_sighup_with_malformed_manifests_keeps_running_and_loses_nothing(tmp_path: Path) -> None:
    model = tiny_model()
    bad = _bad_manifests(tmp_path / "m")
    wav = noise_wav(tmp_path / "noise.wav", 14.0, seed=4)
    expected = detect_json(wav, model)
    config = tmp_path / "live.toml"
    good = f'[models]\nnames = ["{model}"]\n[models.thresholds]\nyes = 0.0\n'
    config.write_text(good)
    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker, "kws_edge/+/detection")
    cmd = [*KWS_EDGE, "run", "--config", str(config), "--input", str(wav), "--realtime", "--mqtt-url",
           broker.url, "--device-id", "dev1", "--state-dir", str(tmp_path / "state")]
    log = tmp_path / "daemon.log"
    with open(log, "wb") as err_out:
        proc = subprocess.Popen(cmd, env=hermetic_env(tmp_path), stdout=subprocess.DEVNULL, stderr=err_out)
    try:
        wait_until(lambda: sub.detections(), what="a detection before the reloads")
        tags = ["not_utf8", "deep_nesting", "dir_model_file", "zero_hop", "nan_scale", "bool_frames"]
        for i, tag in enumerate(tags, 1):
            config.write_text(f'[models]\nnames = ["{bad[tag]}"]\n')
            proc.send_signal(signal.SIGHUP)
            wait_until(lambda i=i: log.read_text().count("reload failed") >= i, what=f"reload {tag} refused")
            assert proc.poll() is None, log.read_text()
        config.write_text("[service]\ndevice_id = \"x\\ny\"\n")  # and a bad config
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: log.read_text().count("reload failed") > len(tags), what="bad config refused")
        config.write_text(good)
        assert proc.wait(120) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
        broker.stop()
    text = log.read_text()
    assert "Traceback" not in text
    got = sub.detections()
    assert [d["seq"] for d in got] == list(range(1, len(expected) + 1))
    assert [d["keyword"] for d in got] == [e["keyword"] for e in expected]


# -- detect streams WAV files and refuses absurd headers ----------------------------------------------------

def _wav(path: Path, rate: int, seconds: float = 1.0, channels: int = 1) -> Path:
    x = (np.random.default_rng(0).standard_normal(int(rate * seconds) * channels) * 3000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    return path


def _detect(tmp_path: Path, wav: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KWS_EDGE, "detect", str(wav), "--model", str(tiny_model()), *extra],
                          capture_output=True, text=True, env=hermetic_env(tmp_path), timeout=300)


def test_absurd_headers_and_low_rates_are_refused_in_one_line(tmp_path: Path) -> None:
    one_hz = tmp_path / "one_hz.wav"
    _wav(one_hz, 16000, seconds=2.0)
    raw = bytearray(one_hz.read_bytes())
    raw[24:28] = struct.pack("<I", 1)  # sample rate 1 Hz
    raw[28:32] = struct.pack("<I", 2)
    one_hz.write_bytes(bytes(raw))
    huge = tmp_path / "huge.wav"
    _wav(huge, 16000)
    raw = bytearray(huge.read_bytes())
    raw[40:44] = struct.pack("<I", 0x7FFFFFF0)  # data chunk claims 2 GiB
    huge.write_bytes(bytes(raw))
    for wav, needle in ((one_hz, "1 Hz"), (huge, "announces"), (_wav(tmp_path / "8k.wav", 8000), "8000 Hz")):
        res = _detect(tmp_path, wav)
        assert res.returncode == 2, res.stderr
        assert needle in res.stderr and res.stderr.count("\n") == 1, res.stderr


def test_48k_stereo_is_resampled_and_detected(tmp_path: Path) -> None:
    res = _detect(tmp_path, _wav(tmp_path / "48k.wav", 48000, seconds=6.0, channels=2), "--threshold", "yes=0.0",
                  "--json")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip(), "no detections from a resampled file"


# VmHWM, not ru_maxrss: after fork+exec ru_maxrss still counts the parent's pages (this test's big arrays).
RSS = ("import sys; from kws_edge.cli import main; rc = main(sys.argv[1:]); "
       "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
       "print('maxrss_kb', hwm, file=sys.stderr); sys.exit(rc)")


def _peak_rss_mb(tmp_path: Path, wav: Path) -> float:
    res = subprocess.run([sys.executable, "-c", RSS, "detect", str(wav), "--model", str(tiny_model()), "--json"],
                         capture_output=True, text=True, env=hermetic_env(tmp_path), timeout=300)
    assert res.returncode == 0, res.stderr
    return int(res.stderr.split("maxrss_kb")[-1].split()[0]) / 1024


def test_detect_memory_is_flat_in_the_file_length(tmp_path: Path) -> None:
    short = _peak_rss_mb(tmp_path, noise_wav(tmp_path / "short.wav", 30.0))
    long = _peak_rss_mb(tmp_path, noise_wav(tmp_path / "long.wav", 600.0))  # 19 MB of PCM
    print(f"\ndetect peak RSS: 30 s file {short:.1f} MB, 10 min file {long:.1f} MB")
    assert long - short < 8.0


# -- --check-config: what run would fail on, and no secret ever printed ---------------------------------------

def _load(tmp_path: Path, text: str) -> cfg.Settings:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return cfg.load(path)


def test_config_mistakes_that_used_to_pass(tmp_path: Path) -> None:
    not_cert = tmp_path / "ca.crt"
    not_cert.write_text("this is not a certificate\n")
    empty = tmp_path / "empty_pw"
    empty.write_text("\n")
    cases = {
        f'[mqtt.tls]\nca_file = "{not_cert}"\n': "PEM CA certificate",
        f'[mqtt.tls]\ncert_file = "{not_cert}"\n': "PEM client certificate",
        "[mqtt]\nreconnect_min_s = 5.0\nreconnect_max_s = 1.0\n": "at most mqtt.reconnect_max_s",
        '[service]\nstate_dir = ""\n': "non-empty directory path",
        '[service]\ndevice_id = "dev\\n"\n': "service.device_id",
        "[mqtt]\nreconnect_min_s = nan\n": "mqtt.reconnect_min_s",
    }
    for text, needle in cases.items():
        with pytest.raises(ConfigError, match=needle):
            _load(tmp_path, text)
    s = _load(tmp_path, f'[mqtt]\nusername = "u"\npassword_file = "{empty}"\n').mqtt
    with pytest.raises(ConfigError, match="is empty"):
        s.read_password()


def test_secret_key_values_are_never_printed(tmp_path: Path) -> None:
    for text in ('[mqtt]\npassword_env = "hunter2 is my password"\n',
                 '[mqtt]\npassword_file = "/nonexistent/hunter2"\n',
                 '[mqtt]\npassword_file = 12345\n'):
        with pytest.raises(ConfigError) as err:
            _load(tmp_path, text.replace("12345", "12345"))
        assert "hunter2" not in str(err.value) and "12345" not in str(err.value)
        assert "<hidden>" in str(err.value)


def _check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "c.toml"
    path.write_text(f'[models]\nnames = ["{tiny_model()}"]\n' + text)
    return subprocess.run([*KWS_EDGE, "run", "--config", str(path), "--check-config"], capture_output=True,
                          text=True, env=hermetic_env(tmp_path), timeout=120)


def test_check_config_warns_on_a_world_readable_password_file(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    pw.chmod(0o644)
    res = _check(tmp_path, f'[service]\nstate_dir = "{tmp_path / "st"}"\n[mqtt]\nusername = "u"\n'
                           f'password_file = "{pw}"\n')
    assert res.returncode == 0, res.stderr
    assert "readable by every user" in res.stderr and "chmod 600" in res.stderr
    assert "hunter2" not in res.stdout + res.stderr
    pw.chmod(0o600)
    res = _check(tmp_path, f'[service]\nstate_dir = "{tmp_path / "st"}"\n[mqtt]\nusername = "u"\n'
                           f'password_file = "{pw}"\n')
    assert res.returncode == 0 and "readable" not in res.stderr


def test_check_config_refuses_an_unwritable_state_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = _check(tmp_path, f'[service]\nstate_dir = "{blocker / "sub"}"\n')
    assert res.returncode == 2 and "service.state_dir" in res.stderr, res.stderr


# -- flash without arduino-cli changes nothing ---------------------------------------------------------------

def test_flash_without_arduino_cli_writes_no_sketch_file(tmp_path: Path) -> None:
    from kws_edge import firmware

    sketch = tmp_path / "kws_nano"
    shutil.copytree(firmware.SKETCH_DIR, sketch)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sketch.iterdir() if p.is_file()}
    res = subprocess.run([*KWS_EDGE, "flash", "--port", "/dev/ttyACM9", "--model", str(tiny_model()), "--sketch",
                          str(sketch), "--arduino-cli", str(tmp_path / "no-such-arduino-cli")],
                         capture_output=True, text=True, env=hermetic_env(tmp_path), timeout=120)
    assert res.returncode == 2 and "arduino-cli core install" in res.stderr and "nothing was changed" in res.stderr
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sketch.iterdir() if p.is_file()}
    assert after == before
