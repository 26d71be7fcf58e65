"""Shared helpers for the service tests (no tests here): a real mosquitto, a paho subscriber, the tiny model.

Every broker listens on a free 127.0.0.1 port and lives in the test's temp dir.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tty
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
KWS_EDGE = [sys.executable, "-m", "kws_edge"]
TIMEOUT = 30.0  # seconds any single wait may take before a test fails

needs_mosquitto = pytest.mark.skipif(shutil.which("mosquitto") is None,
                                     reason="mosquitto is not installed (apt-get install mosquitto)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = TIMEOUT, what: str = "condition") -> Any:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Broker:
    """A mosquitto child process on 127.0.0.1; ``tls`` adds certificates and a password file."""

    def __init__(self, workdir: Path, tls: bool = False, persistence: bool = False) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        lines = [f"listener {self.port} 127.0.0.1", f"persistence {'true' if persistence else 'false'}",
                 # Save after every change (a subscription, a queued message), not once a second: a
                 # broker SIGKILLed within a second of the test subscriber's SUBACK had lost its session,
                 # and with it the detections replayed before the subscriber subscribed again.
                 f"persistence_location {self.dir}/", "autosave_interval 1", "autosave_on_changes true",
                 f"user {pwd.getpwuid(os.geteuid()).pw_name}"]  # as root it would switch to 'mosquitto'
        if tls:
            self.certs = make_certs(self.dir / "certs")
            self.username, self.password = "kws", "s3cret-pw"
            passwd = self.dir / "passwd"
            passwd.write_text(f"{self.username}:{self.password}\n")
            subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True)
            lines += ["allow_anonymous false", f"password_file {passwd}",
                      f"cafile {self.certs['ca']}", f"certfile {self.certs['server_cert']}",
                      f"keyfile {self.certs['server_key']}"]
        else:
            lines.append("allow_anonymous true")
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        log = open(self.dir / "mosquitto.log", "ab")  # noqa: SIM115 (owned by the child process)
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=log, stderr=log)
        log.close()
        wait_until(self._listening, what=f"mosquitto on port {self.port}")
        return self

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited: {(self.dir / 'mosquitto.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"


def make_certs(d: Path) -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1, made with openssl."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.crt", "server.key", "server.csr",
                                                   "server.crt"))
    run = functools.partial(subprocess.run, check=True, capture_output=True)
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "2", "-subj", "/CN=kws-edge test CA"])
    run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=127.0.0.1"])
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext])
    return {"ca": ca, "server_cert": cert, "server_key": key}


class Subscriber:
    """A paho client collecting every message under ``topic`` (persistent session: survives a broker
    restart when the broker keeps sessions)."""

    def __init__(self, broker: Broker, topic: str = "#", client_id: str = "test-sub") -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        if broker.tls:
            c.username_pw_set(broker.username, broker.password)
            c.tls_set(ca_certs=str(broker.certs["ca"]))
        c.reconnect_delay_set(0.05, 0.2)
        c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe(topic, qos=1)
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_message = self._on_message
        self.client = c
        c.connect("127.0.0.1", broker.port, 30)
        c.loop_start()
        wait_until(self.subscribed.is_set, what="the test subscriber's SUBACK")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, suffix: str) -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return [m for m in self.messages if m[0].endswith(suffix)]

    def detections(self) -> list[dict[str, Any]]:
        return [json.loads(p) for _, p, _ in self.on("/detection")]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@functools.cache
def tiny_model() -> Path:
    """The training engineer's seeded tiny model, built once per test session in a temp dir."""
    out = Path(tempfile.mkdtemp(prefix="kws-svc-tiny-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    code = ("import sys; from training.testing import make_tiny_model; "
            "print(make_tiny_model(sys.argv[1], name='tiny', keywords=('yes', 'no')))")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    res = subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    if res.returncode != 0:
        raise AssertionError(f"make_tiny_model failed: {res.stderr[-3000:]}")
    return Path(res.stdout.strip().splitlines()[-1])


def noise_wav(path: Path, seconds: float, seed: int = 0) -> Path:
    """Seeded white noise; with threshold 0 the tiny model fires once per refractory period."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(int(16000 * seconds)) * 3000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(x.tobytes())
    return path


THRESHOLDS = ("--threshold", "yes=0.0")


def detect_json(wav: Path, model: Path) -> list[dict[str, Any]]:
    """What ``kws-edge detect --json`` finds in ``wav`` (the reference for the published events)."""
    res = subprocess.run([*KWS_EDGE, "detect", str(wav), "--model", str(model), *THRESHOLDS, "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def daemon_cmd(wav: Path, broker_url: str, state: Path, model: Path, *extra: str) -> list[str]:
    """``kws-edge run --input`` with an empty config file (never the host's /etc/kws-edge)."""
    config = state.parent / f"{state.name}.toml"
    if not config.exists():
        config.write_text("# empty: defaults and command-line flags only\n")
    return [*KWS_EDGE, "run", "--config", str(config), "--input", str(wav), "--mqtt-url", broker_url,
            "--device-id", "dev1", "--model", str(model), *THRESHOLDS, "--state-dir", str(state), *extra]


def hermetic_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for a daemon child: no systemd variables, no models dir of the host, own HOME."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")}
    env.update(HOME=str(tmp), KWS_EDGE_MODELS=str(tmp / "no-models"), PYTHONPATH=str(REPO), **extra)
    return env


@dataclass
class BoardDaemon:
    """``kws-edge run`` on 30 s of noise, its serial bridge on a real pty whose other end plays the board."""

    board: int  # write KWS1 lines here
    sub: Subscriber
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """SIGTERM, and the daemon must exit 0."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0, self.log.read_text()


@contextlib.contextmanager
def board_daemon(tmp_path: Path, serial_extra: str, topic: str, model: Path,
                 config_extra: str = "") -> Iterator[BoardDaemon]:
    """Start a broker, a subscriber to ``topic`` and the daemon with ``[serial]`` on a pty; wait until the
    bridge is connected; tear everything down afterwards."""
    master, slave = os.openpty()
    tty.setraw(slave)
    config = tmp_path / "serial.toml"
    config.write_text(f'[serial]\nenabled = true\nport = "{os.ttyname(slave)}"\n{serial_extra}{config_extra}')
    wav = noise_wav(tmp_path / "noise.wav", 30.0, seed=11)
    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker, topic)
    log = tmp_path / "daemon.log"
    cmd = [*KWS_EDGE, "run", "--config", str(config), "--input", str(wav), "--realtime", "--mqtt-url",
           broker.url, "--device-id", "dev1", "--model", str(model), "--threshold", "yes=1.0", "--threshold",
           "no=1.0", "--state-dir", str(tmp_path / "state")]
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, env=hermetic_env(tmp_path), stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_until(lambda: "connected to " + os.ttyname(slave) in log.read_text(), what="the bridge")
        yield BoardDaemon(master, sub, proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
        broker.stop()
        os.close(master)
        os.close(slave)
