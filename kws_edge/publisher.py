"""MQTT output: detections, availability, Home Assistant discovery and optional Rhasspy Hermes events.

Every detection is first written to the on-disk :class:`~kws_edge.spool.Spool` (so :meth:`Publisher.publish`
never waits for the network) and leaves it only when the broker acknowledged it (QoS 1 PUBACK). A sender
thread hands queued detections to paho in ``seq`` order while connected; a network thread runs the paho
loop and reconnects with exponential backoff and jitter. Only detections, status and discovery configs are
ever published: never audio or features.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from kws_edge import __version__
from kws_edge.config import MqttSettings
from kws_edge.manifest import Manifest
from kws_edge.names import topic_name_problem
from kws_edge.spool import Spool

log = logging.getLogger(__name__)

MAX_HANDED = 100  # detections handed to paho and not yet acknowledged


def iso_utc(ts: datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2026-11-22T04:30:00.123Z``."""
    ts = ts or datetime.now(UTC)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def detection_payload(seq: int, keyword: str, score: float, model: str, model_sha256: str, source: str,
                      timestamp: datetime | None) -> dict[str, Any]:
    """The JSON body of a detection event (the only data about audio that ever leaves the device)."""
    return {"event_type": keyword, "keyword": keyword, "score": round(float(score), 4), "model": model,
            "model_sha256": model_sha256, "source": source, "timestamp": iso_utc(timestamp), "seq": seq}


def model_filter_template(model: str) -> str:
    """Home Assistant template passing a detection payload through only when it comes from ``model``."""
    return "{% if value_json.model == '" + model + "' %}{{ value }}{% endif %}"


_REQUIRED_KEYS = ("event_type", "keyword", "score", "model", "model_sha256", "source", "timestamp", "seq")


def _undeliverable(payload: dict[str, Any]) -> str | None:
    """Why a queued payload can never be published (None when it can)."""
    missing = [k for k in _REQUIRED_KEYS if k not in payload]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    for key in ("keyword", "model"):
        problem = topic_name_problem(payload[key])
        if problem:
            return f"{key} {payload[key]!r}: {problem}"
    if not isinstance(payload["model_sha256"], str):
        return "model_sha256 is not a string"
    return None


class Publisher:
    """Publishes detections to MQTT with at-least-once delivery through an on-disk queue."""

    def __init__(self, settings: MqttSettings, device_id: str, state_dir: Path,
                 models: Sequence[Manifest]) -> None:
        self.settings = settings
        self.device_id = device_id
        self.state_dir = Path(state_dir)
        self.spool = Spool(self.state_dir / "detections.sqlite3", settings.spool_max)
        base = f"{settings.topic_prefix}/{device_id}"
        self.detection_topic = f"{base}/detection"
        self.status_topic = f"{base}/status"
        self._models = list(models)
        self._lock = threading.Lock()  # guards the mid maps, never held while calling paho
        self._inflight: dict[int, int] = {}  # mid -> seq
        self._other: set[int] = set()  # mids of status/discovery/hermes messages
        self._early: dict[int, float] = {}  # PUBACKs that arrived before publish() returned
        self._handed = 0  # highest seq handed to paho by this process
        self._idle = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = False
        self._connects = 0
        self.state = "not started"
        self._threads: list[threading.Thread] = []
        self._client = self._make_client()

    # -- public API ---------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def pending(self) -> int:
        """Detections not yet acknowledged by the broker (in the on-disk queue)."""
        return len(self.spool)

    def start(self) -> None:
        """Connect in the background; returns at once (the broker may be down)."""
        for name, target in (("mqtt-net", self._network_loop), ("mqtt-send", self._send_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def publish(self, keyword: str, score: float, model: str, model_sha256: str, source: str = "pi",
                timestamp: datetime | None = None) -> int:
        """Queue a detection on disk and return its seq; never blocks on the network.

        Raises ValueError for a keyword or model name that cannot be a topic level (the loaders reject
        those earlier); disk problems never raise (see :class:`~kws_edge.spool.Spool`).
        """
        for what, name in (("keyword", keyword), ("model", model)):
            problem = topic_name_problem(name)
            if problem:
                raise ValueError(f"detection {what} {name!r} refused: {problem}")
        ts = timestamp or datetime.now(UTC)
        seq = self.spool.append(lambda s: detection_payload(s, keyword, score, model, model_sha256,
                                                            source, ts))
        self._wake.set()
        return seq

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued detection is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self.pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.5))
        return True

    def update_models(self, models: Sequence[Manifest]) -> None:
        """New model set (config reload): re-announce discovery without reconnecting."""
        self._models = list(models)
        if self._connected:
            self._announce()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish ``offline``, disconnect cleanly and stop the threads (queued detections stay on disk)."""
        if self._connected:
            info = self._client.publish(self.status_topic, "offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):  # lost meanwhile: the will says offline
                info.wait_for_publish(timeout)
        self._stop.set()
        self._wake.set()
        self._client.disconnect()
        for t in self._threads:
            t.join(timeout)
        self.spool.close()
        self.state = "stopped"

    # -- paho wiring --------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client_id = s.client_id or f"kws-edge-{self.device_id}"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
                             protocol=mqtt.MQTTv311)
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        if s.username:
            client.username_pw_set(s.username, s.read_password())
        if s.tls:
            client.tls_set(ca_certs=str(s.ca_file) if s.ca_file else None,
                           certfile=str(s.cert_file) if s.cert_file else None,
                           keyfile=str(s.key_file) if s.key_file else None)
            if s.tls_insecure:
                log.warning("mqtt.tls.insecure = true: the broker's certificate host name is NOT checked; "
                            "anyone on the network path can impersonate the broker")
                client.tls_insecure_set(True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _network_loop(self) -> None:
        s = self.settings
        delay = s.reconnect_min_s
        while not self._stop.is_set():
            connects = self._connects
            try:
                self._client.connect(s.host, s.port, s.keepalive_s)
                rc = mqtt.MQTT_ERR_SUCCESS
                while rc == mqtt.MQTT_ERR_SUCCESS and not self._stop.is_set():
                    rc = self._client.loop(timeout=1.0)
            except Exception as exc:  # paho/ssl/socket errors share no base; never let the thread die
                self.state = f"broker {s.host}:{s.port} unreachable ({exc})"
                log.warning("MQTT: %s; retrying in ~%.1f s", self.state, delay)
            if self._connected:
                self._mark_disconnected("connection lost")
            if self._stop.is_set():
                break
            if self._connects != connects:  # it was up for a while: start the backoff again
                delay = s.reconnect_min_s
            self._stop.wait(delay * (0.5 + random.random() / 2))  # jitter: 50-100 % of the delay
            delay = min(delay * 2, s.reconnect_max_s)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self.state = f"broker {self.settings.host}:{self.settings.port} refused the connection ({reason})"
            log.error("MQTT: %s", self.state)
            return
        self._connected = True
        self._connects += 1
        self.state = f"connected to {self.settings.host}:{self.settings.port}"
        log.info("MQTT: %s", self.state)
        self._note_other(client.publish(self.status_topic, "online", qos=1, retain=True).mid)
        if self.settings.discovery:
            client.subscribe(f"{self.settings.discovery_prefix}/status", qos=1)
            self._announce()
        self._wake.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if self._connected:
            self._mark_disconnected(str(reason))

    def _mark_disconnected(self, why: str) -> None:
        self._connected = False
        if not self._stop.is_set():
            self.state = f"broker {self.settings.host}:{self.settings.port} disconnected ({why})"
            log.warning("MQTT: %s; %d detection(s) queued on disk", self.state, self.pending)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == f"{self.settings.discovery_prefix}/status" and msg.payload == b"online":
            log.info("Home Assistant came online: republishing discovery")
            self._announce()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._lock:
            if mid in self._other:
                self._other.discard(mid)
                return
            seq = self._inflight.pop(mid, None)
            if seq is None:
                self._early[mid] = time.monotonic()
                return
        self._acked(seq)

    def _acked(self, seq: int) -> None:
        self.spool.remove(seq)
        with self._idle:
            self._idle.notify_all()

    def _note_other(self, mid: int) -> None:
        with self._lock:
            if self._early.pop(mid, None) is None:
                self._other.add(mid)

    def _register(self, mid: int, seq: int) -> None:
        with self._lock:
            early = self._early.pop(mid, None) is not None
            if not early:
                self._inflight[mid] = seq
            cutoff = time.monotonic() - 60.0
            for m in [m for m, t in self._early.items() if t < cutoff]:
                del self._early[m]
        if early:
            self._acked(seq)

    # -- sending ------------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self.spool.flush()  # retries writes a full disk refused earlier
                self._send_some()
            except Exception:  # a broken entry or a paho error must not stop delivery for good
                log.exception("MQTT: sending queued detections failed; retrying")
                self._stop.wait(1.0)

    def _send_some(self) -> None:
        while self._connected and not self._stop.is_set():
            with self._lock:
                room = MAX_HANDED - len(self._inflight)
            if room <= 0:
                return
            entries = self.spool.peek(after=self._handed, limit=room)
            if not entries:
                return
            for seq, payload in entries:
                self._handed = seq
                problem = _undeliverable(payload)
                if problem:
                    self.spool.quarantine(seq, problem)
                    continue
                try:
                    info = self._client.publish(self.detection_topic, json.dumps(payload), qos=1)
                except (ValueError, TypeError) as exc:  # paho refuses it: retrying cannot help
                    self.spool.quarantine(seq, f"refused by the MQTT client ({exc})")
                    continue
                self._register(info.mid, seq)
                if self.settings.hermes:
                    try:
                        self._publish_hermes(payload)
                    except (ValueError, TypeError) as exc:
                        log.error("MQTT: Hermes event for seq %d not sent (%s)", seq, exc)

    def _publish_hermes(self, payload: dict[str, Any]) -> None:
        body = {"modelId": payload["model"], "modelVersion": payload["model_sha256"][:12],
                "modelType": "personal", "currentSensitivity": 1.0, "siteId": self.device_id,
                "sessionId": None, "sendAudioCaptured": None, "lang": None, "customEntities": None}
        topic = f"hermes/hotword/{payload['keyword']}/detected"
        self._note_other(self._client.publish(topic, json.dumps(body), qos=1).mid)

    # -- Home Assistant discovery -------------------------------------------------------------------
    def discovery_topic(self, model: str) -> str:
        return f"{self.settings.discovery_prefix}/event/kws_edge_{self.device_id}/{model}/config"

    def discovery_config(self, m: Manifest) -> dict[str, Any]:
        """The retained Home Assistant ``event`` entity config for one model.

        Every model's entity listens on the one detection topic; its ``value_template`` renders other
        models' detections as an empty string, which Home Assistant's MQTT event platform ignores, so an
        entity only ever receives its own model's ``event_types``.
        """
        return {
            "name": m.name.replace("_", " "),
            "unique_id": f"kws_edge_{self.device_id}_{m.name}",
            "state_topic": self.detection_topic,
            "value_template": model_filter_template(m.name),
            "event_types": list(m.keywords),
            "availability_topic": self.status_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "qos": 1,
            "device": {"identifiers": [f"kws_edge_{self.device_id}"], "name": f"kws_edge {self.device_id}",
                       "manufacturer": "kws_edge", "model": "keyword spotter", "sw_version": __version__},
        }

    def _announce(self) -> None:
        if not self.settings.discovery:
            return
        record = self.state_dir / "discovery.json"
        try:
            before = set(json.loads(record.read_text()))
        except (OSError, ValueError, TypeError):
            before = set()
        now = {m.name for m in self._models}
        for m in self._models:
            cfg = json.dumps(self.discovery_config(m))
            self._note_other(self._client.publish(self.discovery_topic(m.name), cfg, qos=1, retain=True).mid)
        for name in sorted(before - now):
            log.info("Home Assistant discovery: removing model %s", name)
            self._note_other(self._client.publish(self.discovery_topic(name), "", qos=1, retain=True).mid)
        try:
            record.write_text(json.dumps(sorted(now)))
        except OSError as exc:
            log.warning("cannot record discovery state in %s (%s)", record, exc.strerror)
