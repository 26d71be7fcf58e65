"""Config: every kind of mistake gives an error naming the key, the bad value and what was expected."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kws_edge import config as cfg
from kws_edge.daemon import add_arguments, load_settings
from kws_edge.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def _load(tmp_path: Path, text: str) -> cfg.Settings:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return cfg.load(path)


@pytest.mark.parametrize(("text", "needles"), [
    ("[mqtt]\nport = 1883\n", ["mqtt.port", "unknown key", "url"]),  # unknown key
    ("[mqtt]\nkeepalive_s = \"30\"\n", ["mqtt.keepalive_s", "'30'", "an integer from 5 to 3600"]),  # type
    ("[mqtt]\nkeepalive_s = 1\n", ["mqtt.keepalive_s", "= 1", "an integer from 5 to 3600"]),  # range
    ("[mqtt]\ndiscovery = \"yes\"\n", ["mqtt.discovery", "'yes'", "true or false"]),  # bool as string
    ("[audio]\nchunk_ms = true\n", ["audio.chunk_ms", "True", "an integer"]),  # bool as int
    ("[mqtt]\nurl = \"http://broker\"\n", ["mqtt.url", "http://broker", "mqtt://HOST[:PORT]"]),  # scheme
    ("[mqtt]\nurl = \"mqtt://u:pw@broker\"\n", ["mqtt.url", "credentials", "password_file"]),  # secrets
    ("[mqtt]\ntopic_prefix = \"kws/#\"\n", ["mqtt.topic_prefix", "kws/#", "without wildcards"]),
    ("[mqtt.tls]\nca_file = \"/nonexistent/ca.crt\"\n", ["mqtt.tls.ca_file", "/nonexistent/ca.crt",
                                                          "an existing file"]),  # missing file
    ("[mqtt]\npassword_env = \"A\"\npassword_file = \"{pw}\"\n", ["mqtt.password_env", "not both"]),
    ("[mqtt.tls]\nkey_file = \"{pw}\"\n", ["mqtt.tls.key_file", "cert_file"]),  # incomplete pair
    ("[models]\nnames = \"hey_jarvis\"\n", ["models.names", "'hey_jarvis'", "a list"]),  # not a list
    ("[models.thresholds]\nhey_jarvis = 1.5\n", ["models.thresholds.hey_jarvis", "1.5", "0.0 to 1.0"]),
    ("[service]\ndevice_id = \"living room\"\n", ["service.device_id", "'living room'", "letters"]),
    ("[service]\nlog_level = \"loud\"\n", ["service.log_level", "'loud'", "debug, info"]),
    ("[serial]\nbaudrate = 0\n", ["serial.baudrate", "= 0", "an integer from 300"]),
    ("[mqtt]\ntls = 1\n", ["mqtt.tls", "= 1", "a table"]),  # a table given as a value
    ("[speakers]\nx = 1\n", ["'speakers'", "unknown key", "service, audio"]),  # unknown section
    ("[wyoming]\nuri = \"http://0.0.0.0:10400\"\n", ["wyoming.uri", "http://", "tcp://HOST:PORT"]),
    ("[wyoming]\nuri = \"tcp://0.0.0.0\"\n", ["wyoming.uri", "tcp://0.0.0.0", "tcp://HOST:PORT"]),  # no port
    ("[wyoming]\nuri = \"unix:///run/kws.sock\"\nzeroconf = true\n", ["wyoming.zeroconf", "unix://"]),
    ("[wyoming]\nport = 10400\n", ["wyoming.port", "unknown key", "uri"]),
    ("[audio]\nenabled = false\n", ["audio.enabled", "wyoming.enabled", "at least one"]),  # no source left
    ("[mqtt\nurl = 1\n", ["not valid TOML", "key = value"]),  # syntax
])
def test_each_kind_of_mistake_is_named(tmp_path: Path, text: str, needles: list[str]) -> None:
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text.replace("{pw}", str(pw)))
    message = str(err.value)
    assert str(tmp_path / "config.toml") in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_missing_and_optional_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        cfg.load(tmp_path / "absent.toml")
    assert cfg.load(tmp_path / "absent.toml", required=False).mqtt.port == 1883


def test_password_sources_are_read_lazily_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = _load(tmp_path, '[mqtt]\npassword_env = "KWS_TEST_PW"\n').mqtt
    monkeypatch.delenv("KWS_TEST_PW", raising=False)
    with pytest.raises(ConfigError, match="'KWS_TEST_PW' is not set"):
        s.read_password()
    monkeypatch.setenv("KWS_TEST_PW", "hunter2")
    assert s.read_password() == "hunter2"
    assert "hunter2" not in repr(s)


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_command_line_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[service]\ndevice_id = "kitchen"\nstate_dir = "/var/lib/x"\n'
                    '[mqtt]\nurl = "mqtt://broker.lan:1884"\n'
                    '[models]\nnames = ["hey_jarvis"]\n[models.thresholds]\nhey_jarvis = 0.7\nyes = 0.4\n')
    s = load_settings(_args("--config", str(path)))
    assert (s.device_id, s.mqtt.host, s.mqtt.port, s.mqtt.tls) == ("kitchen", "broker.lan", 1884, False)
    s = load_settings(_args("--config", str(path), "--device-id", "den", "--mqtt-url", "mqtts://b",
                            "--model", "tiny", "--threshold", "yes=0.2", "--state-dir", str(tmp_path)))
    assert (s.device_id, s.mqtt.host, s.mqtt.port, s.mqtt.tls) == ("den", "b", 8883, True)
    assert s.models.names == ("tiny",) and s.models.thresholds == {"hey_jarvis": 0.7, "yes": 0.2}
    assert s.state_dir == tmp_path
    with pytest.raises(ConfigError, match="--mqtt-url"):
        load_settings(_args("--config", str(path), "--mqtt-url", "tcp://b"))
    with pytest.raises(ConfigError, match="--device-id 'a b'"):
        load_settings(_args("--config", str(path), "--device-id", "a b"))


def test_shipped_example_config_is_valid() -> None:
    s = cfg.load(REPO / "deploy" / "kws-edge.toml")
    assert s.mqtt.topic_prefix == "kws_edge" and s.state_dir == Path("/var/lib/kws-edge")


def test_cli_prints_config_errors_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[mqtt]\nkeepalive_s = -3\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "kws_edge", "run", "--config", str(path), "--no-mqtt"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2
    assert "mqtt.keepalive_s = -3: expected an integer from 5 to 3600" in res.stderr
    assert "Traceback" not in res.stderr


def _check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    from tests.test_service_support import hermetic_env, tiny_model

    path = tmp_path / "c.toml"
    path.write_text(text.replace("{model}", str(tiny_model())))
    return subprocess.run([sys.executable, "-m", "kws_edge", "run", "--config", str(path), "--check-config"],
                          capture_output=True, text=True, env=hermetic_env(tmp_path), timeout=120)


def test_check_config_accepts_a_valid_file(tmp_path: Path) -> None:
    res = _check(tmp_path, '[service]\ndevice_id = "den"\n[models]\nnames = ["{model}"]\n'
                           '[models.thresholds]\nyes = 0.7\n')
    assert res.returncode == 0, res.stderr
    assert "config OK" in res.stdout and "'yes': 0.7" in res.stdout and "kws_edge/den/" in res.stdout


def test_check_config_names_a_threshold_for_an_unknown_keyword(tmp_path: Path) -> None:
    res = _check(tmp_path, '[models]\nnames = ["{model}"]\n[models.thresholds]\nhey_jarvis = 0.7\n')
    assert res.returncode == 2
    assert "models.thresholds.hey_jarvis" in res.stderr and "expected one of no, yes" in res.stderr


def test_check_config_names_a_missing_password_variable(tmp_path: Path) -> None:
    res = _check(tmp_path, '[models]\nnames = ["{model}"]\n[mqtt]\nusername = "u"\n'
                           'password_env = "KWS_EDGE_TEST_UNSET_PW"\n')
    assert res.returncode == 2
    assert "mqtt.password_env" in res.stderr and "'KWS_EDGE_TEST_UNSET_PW' is not set" in res.stderr
