"""Home Assistant discovery and Rhasspy Hermes through a real broker, driving the Publisher in-process."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.publish as mqtt_publish
import pytest

from kws_edge import manifest as mf
from kws_edge.config import MqttSettings
from kws_edge.publisher import Publisher
from tests.test_service_support import Broker, Subscriber, needs_mosquitto, tiny_model, wait_until

pytestmark = needs_mosquitto
CONFIG_KEYS = {"name", "unique_id", "state_topic", "value_template", "event_types", "availability_topic",
               "payload_available", "payload_not_available", "qos", "device"}


def _publisher(broker: Broker, state: Path, models: list[mf.Manifest], **kw: object) -> Publisher:
    settings = MqttSettings(host="127.0.0.1", port=broker.port, **kw)  # type: ignore[arg-type]
    p = Publisher(settings, "den", state, models)
    p.start()
    wait_until(lambda: p.connected, what="the publisher to connect")
    return p


def test_discovery_shape_republish_and_removal(tmp_path: Path) -> None:
    tiny = mf.load(tiny_model())
    other = dataclasses.replace(tiny, name="other", keywords=("no",))
    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker, "homeassistant/#")
    topic = "homeassistant/event/kws_edge_den/{}/config"
    try:
        pub = _publisher(broker, tmp_path / "state", [tiny, other])
        wait_until(lambda: len(sub.on("/config")) == 2, what="two discovery configs")
        config = json.loads(sub.on(topic.format("tiny"))[0][1])
        assert set(config) == CONFIG_KEYS
        assert config["event_types"] == ["yes", "no"]
        assert config["state_topic"] == "kws_edge/den/detection"
        assert config["availability_topic"] == "kws_edge/den/status"
        assert config["unique_id"] == "kws_edge_den_tiny"
        assert config["device"]["identifiers"] == ["kws_edge_den"]
        assert json.loads(sub.on(topic.format("other"))[0][1])["event_types"] == ["no"]

        mqtt_publish.single("homeassistant/status", "online", hostname="127.0.0.1", port=broker.port)
        wait_until(lambda: len(sub.on("/config")) >= 4, what="discovery republished after HA online")
        pub.stop()

        pub = _publisher(broker, tmp_path / "state", [tiny])  # "other" was removed from the config
        wait_until(lambda: sub.on(topic.format("other"))[-1][1] == b"", what="removal of 'other'")
        pub.stop()
    finally:
        sub.close()
        broker.stop()
    late_topics = {t for t, p, _ in sub.messages if p}
    assert topic.format("tiny") in late_topics


def test_hermes_hotword_detected(tmp_path: Path) -> None:
    tiny = mf.load(tiny_model())
    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker, "hermes/#")
    try:
        pub = _publisher(broker, tmp_path / "state", [tiny], hermes=True, discovery=False)
        when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
        assert pub.publish("yes", 0.91234, "tiny", tiny.sha256, timestamp=when) == 1
        assert pub.wait_idle(30)
        assert pub.pending == 0
        wait_until(lambda: sub.messages, what="the Hermes message")
        pub.stop()
    finally:
        sub.close()
        broker.stop()
    [(topic, payload, _)] = sub.messages
    assert topic == "hermes/hotword/yes/detected"
    body = json.loads(payload)
    assert body["modelId"] == "tiny" and body["siteId"] == "den" and body["modelType"] == "personal"
    assert set(body) == {"modelId", "modelVersion", "modelType", "currentSensitivity", "siteId", "sessionId",
                         "sendAudioCaptured", "lang", "customEntities"}


def test_publish_returns_at_once_without_a_broker(tmp_path: Path) -> None:
    tiny = mf.load(tiny_model())
    broker = Broker(tmp_path / "broker")  # never started
    settings = MqttSettings(host="127.0.0.1", port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.1)
    pub = Publisher(settings, "den", tmp_path / "state", [tiny])
    pub.start()
    seqs = [pub.publish("yes", 0.5, "tiny", tiny.sha256) for _ in range(3)]
    assert seqs == [1, 2, 3]
    assert not pub.connected and pub.pending == 3
    assert not pub.wait_idle(0.3)
    wait_until(lambda: "unreachable" in pub.state, what="the unreachable state")
    pub.stop()


def _render_as_home_assistant(template: str, payload: bytes) -> str:
    """Render a value_template the way Home Assistant's MQTT event platform does (value, value_json)."""
    jinja2 = pytest.importorskip("jinja2", reason="jinja2 (Home Assistant's template engine) is not installed")
    env = jinja2.sandbox.ImmutableSandboxedEnvironment()
    return str(env.from_string(template).render(value=payload.decode(), value_json=json.loads(payload)))


def test_each_entity_receives_only_its_own_models_events(tmp_path: Path) -> None:
    """Two models on one detection topic: each entity's template passes its own events, drops the other's
    (Home Assistant ignores an empty rendered payload), and the shared topic is unchanged."""
    import jinja2.sandbox  # noqa: F401  (the submodule, for the helper)

    tiny = mf.load(tiny_model())
    other = dataclasses.replace(tiny, name="commands", keywords=("no",))
    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker, "#")
    try:
        pub = _publisher(broker, tmp_path / "state", [tiny, other])
        wait_until(lambda: len(sub.on("/config")) == 2, what="two discovery configs")
        pub.publish("yes", 0.9, "tiny", tiny.sha256)
        pub.publish("no", 0.8, "commands", tiny.sha256)
        pub.publish("no", 0.7, "tiny", tiny.sha256)
        assert pub.wait_idle(20)
        wait_until(lambda: len(sub.on("kws_edge/den/detection")) == 3, what="three detections")
        pub.stop()
    finally:
        sub.close()
        broker.stop()
    configs = {m: json.loads(sub.on(f"/kws_edge_den/{m}/config")[0][1]) for m in ("tiny", "commands")}
    payloads = [p for _, p, _ in sub.on("kws_edge/den/detection")]
    for model, config in configs.items():
        assert config["state_topic"] == "kws_edge/den/detection"
        received = []
        for p in payloads:
            rendered = _render_as_home_assistant(config["value_template"], p)
            if rendered:
                received.append(json.loads(rendered))
        assert [r["model"] for r in received] == [model] * len(received)
        assert all(r["event_type"] in config["event_types"] for r in received)
        assert len(received) == (2 if model == "tiny" else 1)
