"""``kws-edge bridge``: detections from a Nano 33 BLE Sense over USB serial (protocol KWS1) -> MQTT.

:class:`SerialBridge` is the core, used by this command and by the daemon (``[serial]`` in its config):
it opens the port with pyserial, parses KWS1 lines (:mod:`kws_edge.protocol`), calls ``on_detection``
for each detection, reconnects with backoff when the board is unplugged or reset, counts and skips
garbage, and warns when the model the board reports (its sha256 prefix) matches no installed manifest.
It has no MQTT dependency; the command publishes through :class:`kws_edge.publisher.Publisher` when
that is installed, else prints the detections.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kws_edge import protocol
from kws_edge.errors import KwsError

log = logging.getLogger("kws_edge.bridge")


@dataclass(frozen=True)
class McuDetection:
    """One detection reported by the board."""

    keyword: str
    score: float
    ms: int  # the board's audio stream time, ms since it started
    model_sha8: str  # first 8 hex digits of the board's model sha256 ("" before its first HELLO)


@dataclass
class BridgeStats:
    """What the bridge has seen since it was created (all connections together)."""

    connects: int = 0
    disconnects: int = 0
    open_failures: int = 0
    detections: int = 0
    hellos: int = 0
    heartbeats: int = 0
    board_errors: int = 0
    board_resets: int = 0
    sha_mismatches: int = 0
    callback_errors: int = 0
    dropped_samples: int = 0
    skipped_runs: int = 0
    reader: protocol.ReaderStats = field(default_factory=protocol.ReaderStats)


class SerialBridge:
    """Reads KWS1 from a serial port until ``stop`` is set; see the module docstring."""

    def __init__(self, port: str, baudrate: int, on_detection: Callable[[McuDetection], None],
                 expected_sha256: Mapping[str, str] | None = None, *, backoff_min_s: float = 0.2,
                 backoff_max_s: float = 5.0, read_timeout_s: float = 0.2) -> None:
        self.port = port
        self.baudrate = baudrate
        self.on_detection = on_detection
        self.expected_sha256 = dict(expected_sha256 or {})
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.read_timeout_s = read_timeout_s
        self._reader = protocol.LineReader()
        self.stats = BridgeStats(reader=self._reader.stats)
        self.board: protocol.Hello | None = None  # the last HELLO on the current connection
        self._last_ms: int | None = None
        self._warned_sha: set[str] = set()
        self._last_error = ""

    @property
    def connected(self) -> bool:
        return self.stats.connects > self.stats.disconnects

    def run(self, stop: threading.Event) -> None:
        """Block until ``stop`` is set: connect, read, reconnect with exponential backoff."""
        import serial  # pyserial; imported here so that importing this module stays cheap

        backoff = self.backoff_min_s
        failing = False
        while not stop.is_set():
            try:
                port = serial.Serial(self.port, self.baudrate, timeout=self.read_timeout_s)
            except (serial.SerialException, OSError, ValueError) as exc:
                self.stats.open_failures += 1
                (log.debug if failing else log.warning)(
                    "cannot open %s (%s); retrying every <= %.0f s", self.port, exc, self.backoff_max_s)
                failing = True
                stop.wait(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            failing = False
            backoff = self.backoff_min_s
            self._on_connect()
            try:
                self._read_until_error(port, stop)
            except (serial.SerialException, OSError) as exc:
                log.warning("lost %s (%s); reconnecting", self.port, exc)
            finally:
                port.close()
                self.stats.disconnects += 1
            if not stop.is_set():
                stop.wait(backoff)

    def _on_connect(self) -> None:
        self.stats.connects += 1
        self._reader.reset()
        self.board = None
        self._last_ms = None
        log.info("connected to %s", self.port)

    def _read_until_error(self, port: Any, stop: threading.Event) -> None:
        while not stop.is_set():
            data = port.read(max(1, port.in_waiting))
            if data:
                for message in self._reader.feed(data):
                    self.handle(message)

    def handle(self, message: protocol.Message) -> None:
        """Act on one parsed message (public so a test or another transport can drive it)."""
        if isinstance(message, protocol.Detection):
            self.stats.detections += 1
            self._note_time(message.ms)
            det = McuDetection(message.keyword, message.score, message.ms,
                               self.board.model_sha8 if self.board else "")
            try:
                self.on_detection(det)
            except Exception:  # a consumer's bug must not stop the bridge
                self.stats.callback_errors += 1
                log.exception("detection handler failed for %s", det)
        elif isinstance(message, protocol.Heartbeat):
            self.stats.heartbeats += 1
            self._note_time(message.ms)
            if message.dropped > self.stats.dropped_samples:
                log.warning("board dropped %d audio samples so far", message.dropped)
            self.stats.dropped_samples = message.dropped
            if message.skipped > self.stats.skipped_runs:
                log.debug("board skipped %d model runs so far to keep up", message.skipped)
            self.stats.skipped_runs = message.skipped
        elif isinstance(message, protocol.Hello):
            self._on_hello(message)
        else:
            self.stats.board_errors += 1
            if message.code != self._last_error:
                log.error("board reports it cannot run: %s (see mcu_firmware/README.md)", message.code)
            self._last_error = message.code

    def _note_time(self, ms: int) -> None:
        wrapped = self._last_ms is not None and self._last_ms > 0xFFFFFFFF - 60_000 and ms < 60_000
        if self._last_ms is not None and ms < self._last_ms and not wrapped:  # 32-bit ms wrap after 49.7 days
            self.stats.board_resets += 1
            log.info("board restarted (stream time went from %d to %d ms)", self._last_ms, ms)
        self._last_ms = ms

    def _on_hello(self, hello: protocol.Hello) -> None:
        self.stats.hellos += 1
        if self.board != hello:
            log.info("board firmware %s, model %s (sha256 %s...)", hello.fw_version, hello.model_name,
                     hello.model_sha8)
        self.board = hello
        self._last_error = ""
        if not self.expected_sha256:
            return
        if any(sha.startswith(hello.model_sha8) for sha in self.expected_sha256.values()):
            return
        self.stats.sha_mismatches += 1
        if hello.model_sha8 not in self._warned_sha:
            self._warned_sha.add(hello.model_sha8)
            installed = ", ".join(f"{n} ({s[:8]})" for n, s in sorted(self.expected_sha256.items()))
            log.warning("board runs model %s with sha256 %s..., which matches no installed manifest "
                        "(installed: %s); flash it with 'kws-edge flash --model NAME'",
                        hello.model_name, hello.model_sha8, installed)


# -- the command ------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Read detections from a Nano 33 BLE Sense running the kws_edge firmware (mcu_firmware/) over\n"
        "USB serial (protocol KWS1) and publish them to MQTT with source \"mcu\", like the Pi's own.")
    p.add_argument("--port", "-p", metavar="DEVICE", help="serial port (default: [serial] port, /dev/ttyACM0)")
    p.add_argument("--baud", type=int, metavar="N", help="baud rate (default: [serial] baudrate, 115200)")
    p.add_argument("--config", "-c", metavar="FILE", help="daemon config file for [mqtt] and [serial]")
    p.add_argument("--model", "-m", action="append", metavar="NAME|PATH",
                   help="manifests the board's model must match (default: every installed model)")
    p.add_argument("--mqtt-url", metavar="URL", help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    p.add_argument("--no-mqtt", action="store_true", help="print detections only")
    p.add_argument("--device-id", metavar="ID", help="device id in the MQTT topics (default: host name)")
    p.add_argument("--state-dir", metavar="DIR", help="where the MQTT detection queue lives")
    p.add_argument("--json", action="store_true", help="print detections as JSON lines")


def _manifests(names: list[str] | None) -> list[Any]:
    from kws_edge import manifest as mf
    from kws_edge.model import installed_manifests, resolve_manifest

    paths = [resolve_manifest(n) for n in names] if names else installed_manifests()
    out = []
    for path in paths:
        try:
            out.append(mf.load(path))
        except KwsError as exc:
            log.warning("ignoring %s", exc)
    return out


def _publisher(args: argparse.Namespace, manifests: list[Any]) -> tuple[Any, str, int]:
    """(publisher or None, port, baudrate) from the config file and the command line."""
    try:
        from kws_edge import config
        from kws_edge.publisher import Publisher
    except ImportError as exc:
        if args.mqtt_url:
            raise KwsError(f"--mqtt-url: MQTT publishing is not available here ({exc})") from None
        return None, args.port or "/dev/ttyACM0", args.baud or 115200
    settings = config.with_overrides(config.load(args.config, required=bool(args.config)),
                                     mqtt_url=args.mqtt_url, no_mqtt=args.no_mqtt, device_id=args.device_id,
                                     state_dir=args.state_dir)
    port, baud = args.port or settings.serial.port, args.baud or settings.serial.baudrate
    if not settings.mqtt.enabled:
        return None, port, baud
    pub = Publisher(settings.mqtt, settings.device_id, settings.state_dir, manifests)
    return pub, port, baud


def main(args: argparse.Namespace) -> int:
    """Run the bridge until SIGINT/SIGTERM."""
    manifests = _manifests(args.model)
    by_sha8 = {m.sha256[:8]: m for m in manifests}
    publisher, port, baud = _publisher(args, manifests)
    stop = threading.Event()

    def on_detection(det: McuDetection) -> None:
        m = by_sha8.get(det.model_sha8)
        model, sha = (m.name, m.sha256) if m else ("mcu", det.model_sha8)
        if args.json:
            print(json.dumps({"keyword": det.keyword, "score": det.score, "ms": det.ms, "model": model,
                              "source": "mcu"}), flush=True)
        else:
            print(f"{det.ms / 1000:10.2f}s  {det.keyword:<16} score {det.score:.2f}  ({model}, mcu)", flush=True)
        if publisher is not None:
            publisher.publish(det.keyword, det.score, model, sha, source="mcu")

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if publisher is not None:
        publisher.start()
    bridge = SerialBridge(port, baud, on_detection, {m.name: m.sha256 for m in manifests})
    log.info("bridge on %s at %d baud; %s", port, baud,
             "publishing to MQTT" if publisher is not None else "printing only (MQTT off)")
    try:
        bridge.run(stop)
    finally:
        if publisher is not None:
            if publisher.pending and publisher.connected:
                publisher.wait_idle(3.0)  # deliver what the board just reported before disconnecting
            publisher.stop()
    s = bridge.stats
    print(f"bridge stopped: {s.detections} detection(s), {s.reader.corrupt} corrupt and {s.reader.unknown} "
          f"unknown line(s), {s.connects} connection(s)", file=sys.stderr)
    return 0
