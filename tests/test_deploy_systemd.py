"""deploy/: the unit passes systemd-analyze (verify, security <= 2.0), install.sh works, the broker example runs."""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_service_support import (
    REPO,
    Broker,
    Subscriber,
    daemon_cmd,
    hermetic_env,
    make_certs,
    needs_mosquitto,
    noise_wav,
    tiny_model,
    wait_until,
)

UNIT = REPO / "deploy" / "kws-edge.service"
INSTALL = REPO / "deploy" / "install.sh"
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (apt-get install systemd)")


def _unit_keys() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


@needs_analyze
def test_security_exposure_at_most_2() -> None:
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)], capture_output=True,
                         text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout + res.stderr)
    assert found, res.stdout + res.stderr
    assert float(found.group(1)) <= 1.5, res.stdout  # 1.5 measured 2026-12; never looser


@needs_analyze
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart= exists: point it at this checkout's kws-edge, change nothing else.
    kws_edge = Path(sys.executable).parent / "kws-edge"
    if not kws_edge.exists():
        pytest.skip(f"{kws_edge} is not installed (pip install -e .)")
    unit = tmp_path / "kws-edge.service"
    unit.write_text(UNIT.read_text().replace("/opt/kws-edge/.venv/bin/kws-edge", str(kws_edge)))
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "kws-edge.service" not in res.stderr, res.stderr  # no warnings about our unit


def test_unit_has_what_the_service_relies_on() -> None:
    k = _unit_keys()
    assert k["Type"] == ["notify"] and k["Restart"] == ["on-failure"] and "WatchdogSec" in k
    assert k["User"] == ["kws-edge"] and k["SupplementaryGroups"] == ["audio dialout"]
    assert k["StateDirectory"] == ["kws-edge"] and k["ConfigurationDirectory"] == ["kws-edge"]
    assert k["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert k["RestartPreventExitStatus"] == ["2"]  # a config error (exit 2) is not retried every 5 s
    assert k["StartLimitBurst"] == ["10"] and k["TasksMax"] == ["64"]
    assert "PrivateUsers" not in k  # would break the audio/dialout group access
    assert "MemoryDenyWriteExecute" not in k  # see the next test


def test_why_memory_deny_write_execute_stays_off() -> None:
    """PortAudio's callback is a cffi closure: under W^X (what MemoryDenyWriteExecute= enforces) it fails."""
    libc = ctypes.CDLL(None, use_errno=True)
    probe = ("import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True)\n"
             "if libc.prctl(65, 1, 0, 0, 0): sys.exit(3)\n"  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
             "from cffi import FFI\n"
             "try:\n    FFI().callback('int(int)', lambda x: x)\nexcept MemoryError:\n    sys.exit(4)\n")
    if not hasattr(libc, "prctl"):
        pytest.skip("no prctl")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60)
    if res.returncode == 3:
        pytest.skip("kernel without PR_SET_MDWE (< 6.3)")
    assert res.returncode == 4, res.stderr


def _install(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INSTALL), "--root", str(root), "--no-venv", *extra],
                          capture_output=True, text=True, timeout=120)


def test_install_sh_is_idempotent_keeps_config_and_uninstalls(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = _install(root)
    assert first.returncode == 0, first.stderr
    config = root / "etc/kws-edge/config.toml"
    assert config.read_text() == (REPO / "deploy/kws-edge.toml").read_text()
    assert (root / "etc/systemd/system/kws-edge.service").read_text() == UNIT.read_text()
    assert oct(config.stat().st_mode & 0o777) == "0o640"
    config.write_text("# edited by the user\n")
    again = _install(root)
    assert again.returncode == 0, again.stderr
    assert "kept the existing" in again.stdout
    assert config.read_text() == "# edited by the user\n"
    removed = _install(root, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not (root / "etc/systemd/system/kws-edge.service").exists() and not (root / "opt/kws-edge").exists()
    assert config.exists()  # kept without --purge
    assert _install(root, "--uninstall", "--purge").returncode == 0
    assert not config.exists()


def test_install_sh_syntax_and_help() -> None:
    assert subprocess.run(["bash", "-n", str(INSTALL)], timeout=30).returncode == 0
    res = subprocess.run(["bash", str(INSTALL), "--help"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "--uninstall" in res.stdout
    bad = subprocess.run(["bash", str(INSTALL), "--bogus"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "unknown option --bogus" in bad.stderr
    if shutil.which("shellcheck"):
        lint = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True, timeout=60)
        assert lint.returncode == 0, lint.stdout


@needs_mosquitto
def test_mosquitto_example_runs_and_accepts_the_daemon_over_tls(tmp_path: Path) -> None:
    """deploy/mosquitto/kws-edge.conf with only paths and ports swapped for test ones."""
    broker = Broker(tmp_path / "b", tls=True)  # for its certificates, password file and free port
    certs = make_certs(tmp_path / "certs")
    passwd = tmp_path / "b" / "passwd"
    plain_port = Broker(tmp_path / "unused").port
    text = (REPO / "deploy/mosquitto/kws-edge.conf").read_text()
    for old, new in (("/etc/mosquitto/passwd", str(passwd)), ("/etc/mosquitto/certs/ca.crt", str(certs["ca"])),
                     ("/etc/mosquitto/certs/server.crt", str(certs["server_cert"])),
                     ("/etc/mosquitto/certs/server.key", str(certs["server_key"])),
                     ("/var/lib/mosquitto/", f"{tmp_path}/"), ("listener 1883 ", f"listener {plain_port} "),
                     ("listener 8883", f"listener {broker.port} 127.0.0.1")):
        assert old in text
        text = text.replace(old, new)
    broker.conf.write_text(text + f"user {pwd.getpwuid(os.geteuid()).pw_name}\n")  # no privilege drop
    broker.certs = certs
    broker.start()
    secret = tmp_path / "pw"
    secret.write_text(broker.password)
    config = tmp_path / "c.toml"
    config.write_text(f'[mqtt]\nusername = "{broker.username}"\npassword_file = "{secret}"\n'
                      f'[mqtt.tls]\nca_file = "{certs["ca"]}"\n')
    sub = Subscriber(broker, "kws_edge/#")
    try:
        wav = noise_wav(tmp_path / "n.wav", 2.0, seed=10)
        res = subprocess.run(daemon_cmd(wav, broker.url, tmp_path / "state", tiny_model(), "--config",
                                        str(config)), env=hermetic_env(tmp_path), capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        wait_until(lambda: sub.detections(), what="a detection through the example broker")
    finally:
        sub.close()
        broker.stop()
