"""End to end through a real mosquitto: ``kws-edge run --input`` -> broker -> a paho subscriber."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from kws_edge import manifest as mf
from tests.test_service_support import (
    Broker,
    Subscriber,
    daemon_cmd,
    detect_json,
    hermetic_env,
    needs_mosquitto,
    noise_wav,
    tiny_model,
    wait_until,
)

PAYLOAD_KEYS = {"event_type", "keyword", "score", "model", "model_sha256", "source", "timestamp", "seq"}
pytestmark = needs_mosquitto


def _run(cmd: list[str], tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=hermetic_env(tmp), capture_output=True, text=True, timeout=timeout)


def _assert_no_audio(value: Any, where: str) -> None:
    """Nothing that could carry audio or features: no long numeric arrays, no long opaque strings."""
    if isinstance(value, dict):
        for k, v in value.items():
            _assert_no_audio(v, f"{where}.{k}")
    elif isinstance(value, list):
        assert len(value) <= 16, f"{where}: a list of {len(value)} items"
        assert not all(isinstance(v, (int, float)) for v in value) or not value, f"{where}: numeric array"
        for v in value:
            _assert_no_audio(v, where)
    elif isinstance(value, str):
        assert len(value) <= 80, f"{where}: a {len(value)}-character string"


def test_run_input_publishes_exactly_the_detections(tmp_path: Path) -> None:
    model = tiny_model()
    wav = noise_wav(tmp_path / "noise.wav", 6.0, seed=1)
    expected = detect_json(wav, model)
    assert len(expected) >= 3
    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker)
    try:
        res = _run(daemon_cmd(wav, broker.url, tmp_path / "state", model), tmp_path)
        assert res.returncode == 0, res.stderr
        wait_until(lambda: sub.on("/status") and sub.on("/status")[-1][1] == b"offline", what="offline")
        got = sub.detections()
        late = Subscriber(broker, "kws_edge/dev1/status", client_id="late-sub")  # sees retained messages
        wait_until(lambda: late.messages, what="the retained status")
        late.close()
    finally:
        sub.close()
        broker.stop()
    assert late.messages == [("kws_edge/dev1/status", b"offline", True)]
    sha = mf.load(model).sha256
    assert [(d["keyword"], d["score"], d["model"]) for d in got] == \
        [(e["keyword"], e["score"], e["model"]) for e in expected]
    assert [d["seq"] for d in got] == list(range(1, len(expected) + 1))
    for d in got:
        assert set(d) == PAYLOAD_KEYS
        assert d["event_type"] == d["keyword"] and d["source"] == "pi" and d["model_sha256"] == sha
        assert datetime.fromisoformat(d["timestamp"]).utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert [p for _, p, _ in sub.on("dev1/status")] == [b"online", b"offline"]


def test_no_payload_contains_audio_or_features(tmp_path: Path) -> None:
    model = tiny_model()
    wav = noise_wav(tmp_path / "noise.wav", 4.0, seed=2)
    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker)
    try:
        res = _run(daemon_cmd(wav, broker.url, tmp_path / "state", model), tmp_path)
        assert res.returncode == 0, res.stderr
        wait_until(lambda: sub.on("/status") and sub.on("/status")[-1][1] == b"offline", what="offline")
        messages = list(sub.messages)
    finally:
        sub.close()
        broker.stop()
    topics = {t for t, _, _ in messages}
    assert topics == {"kws_edge/dev1/status", "kws_edge/dev1/detection",
                      "homeassistant/event/kws_edge_dev1/tiny/config"}
    for topic, payload, _ in messages:
        assert len(payload) < 1024, topic
        if payload not in (b"online", b"offline"):
            _assert_no_audio(json.loads(payload), topic)


def test_tls_with_password_file(tmp_path: Path) -> None:
    model = tiny_model()
    wav = noise_wav(tmp_path / "noise.wav", 3.0, seed=3)
    broker = Broker(tmp_path / "broker", tls=True).start()
    secret = tmp_path / "mqtt.password"
    secret.write_text(broker.password + "\n")
    config = tmp_path / "tls.toml"
    config.write_text(f'[mqtt]\nusername = "{broker.username}"\npassword_file = "{secret}"\n'
                      f'[mqtt.tls]\nca_file = "{broker.certs["ca"]}"\n')
    sub = Subscriber(broker)
    try:
        cmd = daemon_cmd(wav, broker.url, tmp_path / "state", model, "--config", str(config))
        res = _run(cmd, tmp_path)
        assert res.returncode == 0, res.stderr
        assert broker.url.startswith("mqtts://")
        wait_until(lambda: len(sub.detections()) == len(detect_json(wav, model)), what="TLS detections")
    finally:
        sub.close()
        broker.stop()
    assert broker.password not in res.stderr + res.stdout


def test_wrong_password_is_reported_without_leaking_it(tmp_path: Path) -> None:
    model = tiny_model()
    wav = noise_wav(tmp_path / "noise.wav", 2.5, seed=4)
    broker = Broker(tmp_path / "broker", tls=True).start()
    config = tmp_path / "bad.toml"
    config.write_text(f'[mqtt]\nusername = "{broker.username}"\npassword_env = "KWS_TEST_MQTT_PW"\n'
                      f'[mqtt.tls]\nca_file = "{broker.certs["ca"]}"\n')
    env = hermetic_env(tmp_path, KWS_TEST_MQTT_PW="wrong-horse-battery")
    cmd = daemon_cmd(wav, broker.url, tmp_path / "state", model, "--config", str(config),
                     "--drain-timeout", "2")
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    finally:
        broker.stop()
    assert res.returncode == 0, res.stderr
    assert "refused the connection" in res.stderr
    assert "wrong-horse-battery" not in res.stderr + res.stdout
    assert "stay queued" in res.stderr  # nothing was acknowledged, so nothing was forgotten
