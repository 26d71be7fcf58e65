"""Nothing is lost while the broker is away: broker restarts mid-stream, daemon SIGKILLed while it is down."""

from __future__ import annotations

import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from kws_edge.spool import Spool
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

pytestmark = needs_mosquitto
FAST_RECONNECT = "[mqtt]\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n"


def _start(cmd: list[str], tmp: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=hermetic_env(tmp), stdout=subprocess.DEVNULL, stderr=out)


def test_broker_restart_mid_stream_delivers_each_detection_once_in_order(tmp_path: Path) -> None:
    model = tiny_model()
    wav = noise_wav(tmp_path / "noise.wav", 9.0, seed=5)
    expected = detect_json(wav, model)
    config = tmp_path / "fast.toml"
    config.write_text(FAST_RECONNECT)
    broker = Broker(tmp_path / "broker", persistence=True).start()  # autosaves the subscriber session
    sub = Subscriber(broker, "kws_edge/+/detection", client_id="outage-sub")
    log = tmp_path / "daemon.log"
    proc = _start(daemon_cmd(wav, broker.url, tmp_path / "state", model, "--realtime", "--config",
                             str(config)), tmp_path, log)
    try:
        wait_until(lambda: sub.detections(), what="the first detection")
        broker.stop(kill=True)  # SIGKILL: no goodbye to anyone
        wait_until(lambda: "disconnected" in log.read_text(), what="the daemon to notice the outage")
        n_before = log.read_text().count("detected ")
        wait_until(lambda: log.read_text().count("detected ") >= n_before + 2,
                   what="two detections queued during the outage")
        broker.start()
        assert proc.wait(120) == 0, log.read_text()
        wait_until(lambda: len({d["seq"] for d in sub.detections()}) >= len(expected),
                   what="the replayed detections")
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
        broker.stop()
    # QoS 1 is at-least-once: a message the broker took just before it was killed, but whose PUBACK never
    # came back, is sent again. A subscriber de-duplicates by seq; a redelivery must be the same message.
    first: dict[int, dict] = {}
    for d in sub.detections():
        if d["seq"] in first:
            assert d == first[d["seq"]], f"seq {d['seq']} reused for a different detection"
        else:
            first[d["seq"]] = d
    assert list(first) == list(range(1, len(expected) + 1)), list(first)
    got = list(first.values())
    assert [(d["keyword"], d["score"]) for d in got] == [(e["keyword"], e["score"]) for e in expected]
    assert "disconnected" in log.read_text() and "connected to" in log.read_text()


def test_queued_detections_survive_sigkill_while_the_broker_is_down(tmp_path: Path) -> None:
    model = tiny_model()
    wav = noise_wav(tmp_path / "noise.wav", 6.0, seed=6)
    expected = detect_json(wav, model)
    broker = Broker(tmp_path / "broker")  # not started yet: its port refuses connections
    state = tmp_path / "state"
    log = tmp_path / "first.log"
    proc = _start(daemon_cmd(wav, broker.url, state, model), tmp_path, log)
    try:
        wait_until(lambda: "end of" in log.read_text(), what="the first run to finish the file")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    spool = Spool(state / "detections.sqlite3")
    assert len(spool) == len(expected)
    spool.close()

    restarted = datetime.now(UTC)
    broker.start()
    sub = Subscriber(broker, "kws_edge/+/detection")
    try:
        short = noise_wav(tmp_path / "short.wav", 0.5, seed=7)  # too short for a single model run
        res = subprocess.run(daemon_cmd(short, broker.url, state, model), env=hermetic_env(tmp_path),
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert "still queued" in res.stderr
        wait_until(lambda: len(sub.detections()) >= len(expected), what="the queued detections")
    finally:
        sub.close()
        broker.stop()
    got = sub.detections()
    assert [d["seq"] for d in got] == list(range(1, len(expected) + 1))
    assert [(d["keyword"], d["score"]) for d in got] == [(e["keyword"], e["score"]) for e in expected]
    assert all(datetime.fromisoformat(d["timestamp"]) < restarted for d in got)  # original timestamps
