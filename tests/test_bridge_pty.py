"""The serial bridge over a real pseudo-terminal pair.

A Nano 33 BLE Sense cannot exist on this machine: :class:`FakeNano` stands in for it. It owns the master
side of a real pty pair (``os.openpty``) and writes KWS1 lines exactly as the firmware does; a symlink
plays ``/dev/ttyACM0`` and points at the slave side, which the bridge opens with pyserial. Unplugging
closes the pty and removes the link; plugging in again makes a new pty behind the same link, as the
kernel does when the board re-enumerates.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from kws_edge import protocol as p
from kws_edge.bridge import McuDetection, SerialBridge
from tests.test_service_support import KWS_EDGE, Broker, Subscriber, hermetic_env, needs_mosquitto, wait_until

SHA = "0123456789abcdef" * 4
OTHER_SHA = "deadbeef" * 8


class FakeNano:
    """Stands in for the board: the master side of a real pty, reachable through ``link``."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = self.slave = -1

    def plug(self) -> FakeNano:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # as the USB CDC device: no echo, no CR/LF translation
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(os.ttyname(self.slave))
        return self

    def send(self, *lines: bytes) -> None:
        for line in lines:
            os.write(self.master, line)

    def unplug(self) -> None:
        self.link.unlink()
        os.close(self.master)
        os.close(self.slave)
        self.master = self.slave = -1


class Collector:
    def __init__(self) -> None:
        self.items: list[McuDetection] = []
        self.lock = threading.Lock()

    def __call__(self, det: McuDetection) -> None:
        with self.lock:
            self.items.append(det)

    def count(self) -> int:
        with self.lock:
            return len(self.items)


@pytest.fixture
def nano(tmp_path: Path) -> Iterator[FakeNano]:
    board = FakeNano(tmp_path / "ttyACM0").plug()
    yield board
    if board.master >= 0:
        board.unplug()


def start(bridge: SerialBridge) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=bridge.run, args=(stop,), daemon=True)
    thread.start()
    wait_until(lambda: bridge.stats.connects >= 1, what="the bridge to open the pty")
    return stop, thread


def finish(stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


def test_detections_survive_garbage_and_bad_checksums(nano: FakeNano) -> None:
    got = Collector()
    bridge = SerialBridge(str(nano.link), 115200, got, {"hey_jarvis": SHA}, backoff_min_s=0.05)
    stop, thread = start(bridge)
    bad_crc = bytearray(p.format_detection("hey_jarvis", 0.9, 50))
    bad_crc[-4] = ord("0") if bad_crc[-4] != ord("0") else ord("1")

    def firmware() -> None:  # the board's writer, in its own thread as on the real device
        nano.send(p.format_hello("0.1.0", SHA[:8], "hey_jarvis"))
        for i in range(20):
            nano.send(p.format_detection("hey_jarvis", 0.5 + i / 100, 1000 * i))
            if i % 4 == 0:
                nano.send(b"\x00\xff boot noise \x1b[0m\r\n", bytes(bad_crc), b"KWS1 DET half a li")
                nano.send(b"ne\r\n")
        nano.send(p.format_heartbeat(20000, 0, 2), p.format_error("microphone"))

    writer = threading.Thread(target=firmware)
    writer.start()
    writer.join(10)
    wait_until(lambda: got.count() == 20 and bridge.stats.board_errors == 1, what="20 detections")
    finish(stop, thread)
    assert [(d.keyword, d.ms, d.model_sha8) for d in got.items] == [("hey_jarvis", 1000 * i, SHA[:8])
                                                                     for i in range(20)]
    assert [d.score for d in got.items] == [round(0.5 + i / 100, 4) for i in range(20)]
    assert bridge.stats.reader.corrupt == 15  # 5 x (noise, bad checksum, joined half lines)
    assert bridge.stats.sha_mismatches == 0 and bridge.stats.heartbeats == 1
    assert bridge.stats.skipped_runs == 2


def test_unplug_replug_and_board_reset(nano: FakeNano) -> None:
    got = Collector()
    bridge = SerialBridge(str(nano.link), 115200, got, {"hey_jarvis": SHA}, backoff_min_s=0.05,
                          backoff_max_s=0.2)
    stop, thread = start(bridge)
    nano.send(p.format_hello("0.1.0", SHA[:8], "hey_jarvis"), p.format_heartbeat(5000, 0),
              p.format_detection("hey_jarvis", 0.8, 5100))
    wait_until(lambda: got.count() == 1, what="the first detection")
    # The board resets without a USB re-enumeration: a new HELLO and the stream time restarts.
    nano.send(p.format_hello("0.1.0", SHA[:8], "hey_jarvis"), p.format_heartbeat(100, 0))
    wait_until(lambda: bridge.stats.board_resets == 1, what="the reset to be noticed")
    nano.send(b"KWS1 DET hey_jar")  # unplugged in the middle of a line
    nano.unplug()
    wait_until(lambda: bridge.stats.disconnects == 1, what="the bridge to notice the unplug")
    wait_until(lambda: bridge.stats.open_failures >= 2, what="reconnect attempts while unplugged")
    nano.plug()
    wait_until(lambda: bridge.stats.connects == 2, what="the reconnect")
    nano.send(p.format_hello("0.1.0", SHA[:8], "hey_jarvis"), p.format_detection("hey_jarvis", 0.7, 900))
    wait_until(lambda: got.count() == 2, what="a detection after re-plugging")
    finish(stop, thread)
    assert got.items[1] == McuDetection("hey_jarvis", 0.7, 900, SHA[:8])
    assert bridge.stats.reader.corrupt == 0  # the half line was dropped with the connection


def test_sha_mismatch_warns_once_and_still_delivers(nano: FakeNano, caplog: pytest.LogCaptureFixture) -> None:
    got = Collector()
    bridge = SerialBridge(str(nano.link), 115200, got, {"hey_jarvis": SHA}, backoff_min_s=0.05)
    with caplog.at_level(logging.WARNING, logger="kws_edge.bridge"):
        stop, thread = start(bridge)
        for _ in range(3):
            nano.send(p.format_hello("0.1.0", OTHER_SHA[:8], "old_model"))
        nano.send(p.format_detection("hey_jarvis", 0.9, 10))
        wait_until(lambda: got.count() == 1, what="the detection")
        finish(stop, thread)
    warnings = [r.getMessage() for r in caplog.records if "matches no installed manifest" in r.getMessage()]
    assert len(warnings) == 1
    assert "deadbeef" in warnings[0] and "hey_jarvis (01234567)" in warnings[0]
    assert bridge.stats.sha_mismatches == 3
    assert got.items[0].model_sha8 == "deadbeef"


def test_stream_time_wrap_is_not_a_reset() -> None:
    bridge = SerialBridge("/dev/null", 115200, Collector())
    for ms in (2**32 - 1500, 2**32 - 500, 500, 1500, 700):
        bridge.handle(p.Heartbeat(ms, 0, 0))
    assert bridge.stats.board_resets == 1  # only 1500 -> 700


def test_missing_port_is_retried_not_fatal(tmp_path: Path) -> None:
    bridge = SerialBridge(str(tmp_path / "ttyACM9"), 115200, Collector(), backoff_min_s=0.01,
                          backoff_max_s=0.02)
    stop = threading.Event()
    thread = threading.Thread(target=bridge.run, args=(stop,), daemon=True)
    thread.start()
    wait_until(lambda: bridge.stats.open_failures >= 3, what="repeated open attempts")
    finish(stop, thread)
    assert bridge.stats.connects == 0


def _manifest(tmp_path: Path) -> Path:
    from kws_edge import manifest as mf
    from kws_edge.features import FeatureParams

    data = {
        "schema": mf.SCHEMA, "name": "hey_jarvis", "kind": "wakeword", "model_file": "hey_jarvis.tflite",
        "sha256": SHA, "size_bytes": 1000, "labels": ["_silence_", "_unknown_", "hey_jarvis"],
        "keywords": ["hey_jarvis"], "features": FeatureParams().to_dict(), "window_frames": 49,
        "stride_frames": 3, "input": {"shape": [1, 49, 10], "dtype": "int8", "scale": 0.3, "zero_point": 2},
        "output": {"shape": [1, 3], "dtype": "int8", "scale": 1 / 256, "zero_point": -128},
        "decision": {"thresholds": {"hey_jarvis": 0.7}, "smoothing_ms": 200, "min_hits": 1,
                     "refractory_ms": 1500},
        "arena_bytes": 20000, "ops": ["CONV_2D"],
    }
    path = tmp_path / "hey_jarvis.json"
    path.write_text(json.dumps(data))
    return path


@needs_mosquitto
def test_bridge_command_publishes_to_mosquitto(nano: FakeNano, tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker, "kws_edge/nano1/#", client_id="bridge-test-sub")
    cmd = [*KWS_EDGE, "bridge", "--port", str(nano.link), "--mqtt-url", broker.url, "--device-id", "nano1",
           "--state-dir", str(tmp_path / "state"), "--model", str(_manifest(tmp_path)), "--json"]
    proc = subprocess.Popen(cmd, env=hermetic_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_until(lambda: sub.on("/status") and sub.on("/status")[-1][1] == b"online", what="online status")
        nano.send(b"garbage\r\n", p.format_hello("0.1.0", SHA[:8], "hey_jarvis"))
        for i in range(3):
            nano.send(p.format_detection("hey_jarvis", 0.75 + i / 10, 2000 * i))
        wait_until(lambda: len(sub.detections()) == 3, what="3 detections at the broker")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        sub.close()
        broker.stop()
    assert proc.returncode == 0, err
    dets = sub.detections()
    assert [d["source"] for d in dets] == ["mcu"] * 3
    assert [d["model"] for d in dets] == ["hey_jarvis"] * 3 and dets[0]["model_sha256"] == SHA
    assert [d["score"] for d in dets] == [0.75, 0.85, 0.95]
    assert [json.loads(line)["ms"] for line in out.splitlines()] == [0, 2000, 4000]
    assert "1 corrupt" in err
