"""systemd integration on real sockets: sd_notify datagrams, signals, journald handler selection."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kws_edge import logs
from kws_edge.notify import Notifier
from tests.test_service_support import (
    KWS_EDGE,
    REPO,
    Broker,
    Subscriber,
    hermetic_env,
    needs_mosquitto,
    noise_wav,
    tiny_model,
    wait_until,
)


class NotifySocket:
    """A bound AF_UNIX datagram socket collecting sd_notify messages, like systemd's."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + path[1:] if path.startswith("@") else path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def lines(self) -> list[str]:
        return [line for m in list(self.messages) for line in m.split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture()
def notify_socket() -> Iterator[NotifySocket]:
    d = tempfile.mkdtemp(prefix="kws-notify-")  # short: AF_UNIX paths are limited to 107 bytes
    ns = NotifySocket(os.path.join(d, "notify"))
    yield ns
    ns.close()
    shutil.rmtree(d)


def test_notifier_is_a_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled and not n.send("READY=1")
    n.ready()
    n.watchdog()
    n.stopping()


def test_notifier_messages_on_a_real_socket(notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.path)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier()
    assert n.watchdog_interval_s == 2.0
    n.ready("models loaded")
    n.status("2 detections")
    n.status("2 detections")  # unchanged: not repeated
    n.watchdog()
    n.stopping()
    wait_until(lambda: len(notify_socket.messages) >= 4, what="four notifications")
    assert notify_socket.messages == ["READY=1\nSTATUS=models loaded", "STATUS=2 detections", "WATCHDOG=1",
                                      "STOPPING=1"]
    n.close()


def test_notifier_abstract_socket_and_foreign_watchdog_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    ns = NotifySocket(f"@kws-edge-test-{os.getpid()}")
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", ns.path)
        monkeypatch.setenv("WATCHDOG_USEC", "1000000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # the watchdog is meant for another process
        n = Notifier()
        assert n.watchdog_interval_s is None
        assert n.send("READY=1")
        wait_until(lambda: ns.messages, what="the abstract-socket message")
        assert ns.messages == ["READY=1"]
    finally:
        ns.close()


def test_daemon_sends_ready_watchdog_status_stopping(notify_socket: NotifySocket, tmp_path: Path) -> None:
    wav = noise_wav(tmp_path / "noise.wav", 3.0, seed=8)
    cmd = [*KWS_EDGE, "run", "--config", str(_empty(tmp_path)), "--input", str(wav), "--realtime",
           "--no-mqtt", "--model", str(tiny_model()), "--threshold", "yes=0.0"]
    env = hermetic_env(tmp_path, NOTIFY_SOCKET=notify_socket.path, WATCHDOG_USEC="1000000")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    wait_until(lambda: "STOPPING=1" in notify_socket.lines(), what="STOPPING=1")
    lines = notify_socket.lines()
    assert lines[0] == "READY=1"
    assert lines.index("WATCHDOG=1") > 0
    assert any(line.startswith("STATUS=") and "detection(s)" in line for line in lines)
    assert lines.count("WATCHDOG=1") >= 3  # pinged from the processing loop throughout the 3 s
    assert lines[-1] == "STOPPING=1"


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.toml"
    path.write_text("")
    return path


def test_missing_microphone_is_retried_and_reported_never_fatal(notify_socket: NotifySocket,
                                                                 tmp_path: Path) -> None:
    cmd = [*KWS_EDGE, "run", "--config", str(_empty(tmp_path)), "--no-mqtt", "--model", str(tiny_model()),
           "--device", "no-such-microphone-xyz"]
    proc = subprocess.Popen(cmd, env=hermetic_env(tmp_path, NOTIFY_SOCKET=notify_socket.path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: any(line.startswith("STATUS=") and "waiting for microphone" in line
                               for line in notify_socket.lines()), what="STATUS= waiting for microphone")
        assert "READY=1" in notify_socket.lines()
        assert proc.poll() is None  # still running, retrying
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "retrying in" in err and "Traceback" not in err
    assert "STOPPING=1" in notify_socket.lines()


@needs_mosquitto
def test_sighup_reloads_without_reconnecting_and_sigterm_exits_0(tmp_path: Path) -> None:
    model = tiny_model()
    wav = noise_wav(tmp_path / "noise.wav", 60.0, seed=9)
    config = tmp_path / "live.toml"
    config.write_text(f'[models]\nnames = ["{model}"]\n[models.thresholds]\nyes = 0.0\n')
    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker)
    cmd = [*KWS_EDGE, "run", "--config", str(config), "--input", str(wav), "--realtime", "--mqtt-url",
           broker.url, "--device-id", "dev1", "--state-dir", str(tmp_path / "state")]
    log = tmp_path / "daemon.log"
    with open(log, "wb") as err_out:
        proc = subprocess.Popen(cmd, env=hermetic_env(tmp_path), stdout=subprocess.DEVNULL, stderr=err_out)
    try:
        wait_until(lambda: len(sub.detections()) >= 1, what="a detection before the reload")
        config.write_text("[mqtt]\nkeepalive_s = 1\n")  # a broken edit: keep running on the old config
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload failed" in log.read_text(), what="the failed reload")
        assert "mqtt.keepalive_s = 1" in log.read_text() and proc.poll() is None
        config.write_text(f'[models]\nnames = ["{model}"]\n[models.thresholds]\nyes = 1.0\nno = 1.0\n')
        proc.send_signal(signal.SIGHUP)
        n = len(sub.detections())
        wait_until(lambda: len(sub.on("/config")) >= 2, what="discovery re-announced after the reload")
        after_reload = len(sub.detections())
        assert after_reload <= n + 1  # at most one detection was already on its way
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        wait_until(lambda: sub.on("/status")[-1][1] == b"offline", what="offline on shutdown")
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
        broker.stop()
    err = log.read_text()
    assert proc.returncode == 0, err
    assert "SIGHUP: reloading" in err and "SIGTERM: shutting down" in err
    assert [p for _, p, _ in sub.on("/status")] == [b"online", b"offline"]  # one connection throughout
    assert len(sub.detections()) == after_reload  # thresholds of 1.0 took effect


def test_journald_handler_only_when_stderr_is_the_journal(tmp_path: Path) -> None:
    code = ("import logging, sys; from kws_edge import logs; h = logs.setup('info');"
            "print(type(h).__name__); sys.stdout.flush()")
    err_file = tmp_path / "stderr"
    with open(err_file, "wb") as err:
        st = os.fstat(err.fileno())
        env = hermetic_env(tmp_path, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        under_systemd = subprocess.run([sys.executable, "-c", code], env=env, stderr=err, capture_output=False,
                                       stdout=subprocess.PIPE, text=True, cwd=REPO, check=True)
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino + 1}"
        elsewhere = subprocess.run([sys.executable, "-c", code], env=env, stderr=err, stdout=subprocess.PIPE,
                                   text=True, check=True)
    assert under_systemd.stdout.strip() == "JournalHandler"
    assert elsewhere.stdout.strip() == "StreamHandler"


def test_journal_fields_carry_keyword_and_score() -> None:
    record = logging.LogRecord("kws_edge.daemon", logging.WARNING, __file__, 1, "detected %s", ("yes",), None)
    record.KEYWORD = "yes"
    record.SCORE = "0.9100"
    fields = logs.journal_fields(record, record.getMessage())
    assert fields["MESSAGE"] == "detected yes" and fields["PRIORITY"] == "4"
    assert fields["KEYWORD"] == "yes" and fields["SCORE"] == "0.9100"
    assert fields["SYSLOG_IDENTIFIER"] == "kws-edge"
    assert not any(k.islower() for k in fields)
