"""Service configuration: one TOML file -> frozen dataclasses, command-line flags on top.

The file (``/etc/kws-edge/config.toml`` by default; ``deploy/kws-edge.toml`` documents every key) has the
sections ``[service]``, ``[audio]``, ``[models]``, ``[mqtt]`` (with ``[mqtt.tls]``), ``[serial]`` and
``[wyoming]``. Every
key is optional. Every error names the key, the bad value and what was expected. Secrets are never held
here: the MQTT password is read from its file or environment variable when connecting.
"""

from __future__ import annotations

import math
import os
import re
import socket
import ssl
import stat
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kws_edge.errors import ConfigError
from kws_edge.names import MAX_NAME, topic_name_problem

DEFAULT_CONFIG = Path("/etc/kws-edge/config.toml")
DEFAULT_STATE_DIR = Path("/var/lib/kws-edge")
_TOPIC_WORD = re.compile(r"[A-Za-z0-9_\-]{1,64}(/[A-Za-z0-9_\-]{1,64}){0,7}")
_DEVICE_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")  # MAX_NAME
_SECRET_KEYS = ("password_file", "password_env")  # their values are never printed
DEVICE_ID_EXPECTED = f"1 to {MAX_NAME} letters, digits, '_' or '-'"


def check_device_id(value: str, where: str, sep: str = " = ") -> str:
    """The one check for a device id (a topic level): regex over the whole string plus the topic rule."""
    problem = topic_name_problem(value)
    if problem or not _DEVICE_ID.fullmatch(value):
        raise ConfigError(f"{where}{sep}{value!r}: expected {DEVICE_ID_EXPECTED}")
    return value


@dataclass(frozen=True)
class MqttSettings:
    """Broker connection, topics, discovery and the on-disk queue."""

    enabled: bool = True
    host: str = "localhost"
    port: int = 1883
    tls: bool = False
    ca_file: Path | None = None  # None: the system's CA store
    cert_file: Path | None = None  # client certificate (optional)
    key_file: Path | None = None
    tls_insecure: bool = False  # skip hostname verification (warned about)
    username: str = ""
    password_file: Path | None = None
    password_env: str = ""  # name of an environment variable holding the password
    client_id: str = ""  # default: kws-edge-<device_id>
    topic_prefix: str = "kws_edge"
    keepalive_s: int = 30
    discovery: bool = True  # Home Assistant MQTT discovery
    discovery_prefix: str = "homeassistant"
    hermes: bool = False  # also publish hermes/hotword/<keyword>/detected
    spool_max: int = 10000  # detections kept on disk while the broker is away
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0

    def read_password(self) -> str | None:
        """The password from ``password_file`` or ``password_env``; None when neither is set."""
        if self.password_file is not None:
            try:
                value = self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise ConfigError(f"mqtt.password_file: cannot read {self.password_file} "
                                  f"({why}); expected a readable file holding the password") from None
            if not value:
                raise ConfigError(f"mqtt.password_file: {self.password_file} is empty; expected the MQTT "
                                  "password on its first line")
            return value
        if self.password_env:
            env = os.environ.get(self.password_env)
            if env is None:
                raise ConfigError(f"mqtt.password_env: environment variable {self.password_env!r} is not "
                                  "set; expected it to hold the MQTT password")
            if not env:
                raise ConfigError(f"mqtt.password_env: environment variable {self.password_env!r} is "
                                  "empty; expected it to hold the MQTT password")
            return env
        return None

    def password_file_warning(self) -> str | None:
        """A warning when the password file can be read by other users (None when it cannot)."""
        if self.password_file is None:
            return None
        try:
            mode = self.password_file.stat().st_mode
        except OSError:
            return None
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            return (f"mqtt.password_file: {self.password_file} is readable by every user (mode "
                    f"{stat.S_IMODE(mode):04o}); restrict it: chmod 600 (or 640 with group kws-edge)")
        return None


@dataclass(frozen=True)
class AudioSettings:
    device: str = ""  # PortAudio name fragment or index; "" = the default input
    chunk_ms: int = 80
    queue_chunks: int = 50  # audio kept while processing lags; the oldest is dropped beyond this
    enabled: bool = True  # false: no microphone (e.g. the service only serves Wyoming)


@dataclass(frozen=True)
class ModelSettings:
    names: tuple[str, ...] = ()  # names or paths; () = every installed model
    thresholds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SerialSettings:
    enabled: bool = False
    port: str = "/dev/ttyACM0"
    baudrate: int = 115200


@dataclass(frozen=True)
class WyomingSettings:
    """The Wyoming wake-word server for Home Assistant Assist (``kws-edge wyoming``, or inside the service)."""

    enabled: bool = False
    uri: str = "tcp://0.0.0.0:10400"  # tcp://HOST:PORT or unix:///PATH
    zeroconf: bool = False  # announce _wyoming._tcp over mDNS (tcp only)
    zeroconf_name: str = ""  # default: kws-edge-<device_id>


def parse_wyoming_uri(uri: str, where: str = "wyoming.uri") -> tuple[str, str, int]:
    """``tcp://HOST:PORT`` -> ("tcp", host, port); ``unix:///PATH`` -> ("unix", path, 0)."""
    expected = "tcp://HOST:PORT (e.g. tcp://0.0.0.0:10400) or unix:///PATH"
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{where} = {uri!r}: expected {expected}") from None
    if parts.scheme == "tcp" and parts.hostname and port and parts.path in ("", "/"):
        return "tcp", parts.hostname, port
    if parts.scheme == "unix" and parts.path and not parts.netloc and "\0" not in parts.path:
        return "unix", parts.path, 0
    raise ConfigError(f"{where} = {uri!r}: expected {expected}")


@dataclass(frozen=True)
class Settings:
    device_id: str
    state_dir: Path = DEFAULT_STATE_DIR
    log_level: str = "info"
    audio: AudioSettings = field(default_factory=AudioSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    serial: SerialSettings = field(default_factory=SerialSettings)
    wyoming: WyomingSettings = field(default_factory=WyomingSettings)


def default_device_id() -> str:
    """The host name, reduced to the characters allowed in a topic level."""
    name = re.sub(r"[^A-Za-z0-9_\-]", "_", socket.gethostname().split(".")[0])[:MAX_NAME] or "kws_edge"
    return name


class _Section:
    """Typed access to one TOML table; every error names ``section.key``, the value and the expectation."""

    def __init__(self, data: dict[str, Any], name: str, where: str, known: tuple[str, ...]) -> None:
        self.data, self.name, self.where = data, name, where
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown key {self._key(unknown[0])!r}; expected one of "
                              f"{', '.join(known)}")

    def _key(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def fail(self, key: str, value: Any, expected: str) -> ConfigError:
        shown = "<hidden>" if key.rsplit(".", 1)[-1] in _SECRET_KEYS else repr(value)
        return ConfigError(f"{self.where}: {self._key(key)} = {shown}: expected {expected}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any, expected: str) -> Any:
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind is not bool:
            raise self.fail(key, value, expected)
        if not isinstance(value, kind):
            raise self.fail(key, value, expected)
        return value

    def bool_(self, key: str, default: bool) -> bool:
        return bool(self.get(key, bool, default, "true or false"))

    def str_(self, key: str, default: str, pattern: re.Pattern[str] | None = None,
             expected: str = "a string") -> str:
        value = self.get(key, str, default, expected)
        if pattern is not None and key in self.data and not pattern.fullmatch(value):
            raise self.fail(key, value, expected)
        return str(value)

    def int_(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self.get(key, int, default, f"an integer from {lo} to {hi}")
        if not lo <= value <= hi:
            raise self.fail(key, value, f"an integer from {lo} to {hi}")
        return int(value)

    def float_(self, key: str, default: float, lo: float, hi: float) -> float:
        value = self.get(key, (int, float), default, f"a number from {lo} to {hi}")
        if not math.isfinite(value) or not lo <= value <= hi:
            raise self.fail(key, value, f"a number from {lo} to {hi}")
        return float(value)

    def path(self, key: str, must_exist: bool = False) -> Path | None:
        value = self.get(key, str, "", "a file path")
        if not value:
            return None
        if "\0" in value:
            raise self.fail(key, value, "a file path")
        p = Path(value)
        try:
            is_file = p.is_file()
        except OSError:
            is_file = False
        if must_exist and not is_file:
            raise self.fail(key, value, "an existing file")
        return p

    def table(self, key: str) -> dict[str, Any]:
        value = self.get(key, dict, {}, "a table")
        return dict(value)


def parse_mqtt_url(url: str, where: str = "mqtt.url") -> tuple[str, int, bool]:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` -> (host, port, tls)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{where} = {url!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]") from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"{where} = {url!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    if parts.username or parts.password:
        raise ConfigError(f"{where}: credentials in the URL are not allowed (they would end up in logs "
                          "and process lists); expected mqtt.username and mqtt.password_file")
    tls = parts.scheme == "mqtts"
    return parts.hostname, port or (8883 if tls else 1883), tls


_MQTT_KEYS = ("enabled", "url", "username", "password_file", "password_env", "client_id", "topic_prefix",
              "keepalive_s", "discovery", "discovery_prefix", "hermes", "spool_max", "reconnect_min_s",
              "reconnect_max_s", "tls")


def _mqtt(data: dict[str, Any], where: str) -> MqttSettings:
    s = _Section(data, "mqtt", where, _MQTT_KEYS)
    url = s.str_("url", "mqtt://localhost:1883", expected="mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    host, port, tls = parse_mqtt_url(url, f"{where}: mqtt.url")
    t = _Section(s.table("tls"), "mqtt.tls", where, ("ca_file", "cert_file", "key_file", "insecure"))
    settings = MqttSettings(
        enabled=s.bool_("enabled", True), host=host, port=port, tls=tls,
        ca_file=t.path("ca_file", must_exist=True), cert_file=t.path("cert_file", must_exist=True),
        key_file=t.path("key_file", must_exist=True), tls_insecure=t.bool_("insecure", False),
        username=s.str_("username", ""), password_file=s.path("password_file", must_exist=True),
        password_env=s.str_("password_env", "", re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}"),
                            "an environment variable name"),
        client_id=s.str_("client_id", "", re.compile(r"[A-Za-z0-9_\-]{0,64}"),
                         "up to 64 letters, digits, '_' or '-'"),
        topic_prefix=s.str_("topic_prefix", "kws_edge", _TOPIC_WORD, "topic levels without wildcards"),
        keepalive_s=s.int_("keepalive_s", 30, 5, 3600),
        discovery=s.bool_("discovery", True),
        discovery_prefix=s.str_("discovery_prefix", "homeassistant", _TOPIC_WORD,
                                "topic levels without wildcards"),
        hermes=s.bool_("hermes", False),
        spool_max=s.int_("spool_max", 10000, 1, 10_000_000),
        reconnect_min_s=s.float_("reconnect_min_s", 0.5, 0.01, 60.0),
        reconnect_max_s=s.float_("reconnect_max_s", 30.0, 0.1, 3600.0),
    )
    if settings.key_file is not None and settings.cert_file is None:
        raise s.fail("tls.key_file", str(settings.key_file), "mqtt.tls.cert_file to be set as well")
    if settings.password_file is not None and settings.password_env:
        raise s.fail("password_env", settings.password_env, "either password_file or password_env, not both")
    if settings.reconnect_min_s > settings.reconnect_max_s:
        raise s.fail("reconnect_min_s", settings.reconnect_min_s,
                     f"at most mqtt.reconnect_max_s ({settings.reconnect_max_s})")
    _check_tls_files(settings, where)
    return settings


def _check_tls_files(m: MqttSettings, where: str) -> None:
    """Load the certificate files the way the MQTT client will, so a wrong file fails here, not in run."""
    if m.ca_file is not None:
        try:
            ssl.create_default_context(cafile=str(m.ca_file))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"{where}: mqtt.tls.ca_file = {str(m.ca_file)!r}: expected a PEM CA certificate "
                              f"({exc})") from None
    if m.cert_file is not None:
        try:
            ssl.create_default_context().load_cert_chain(str(m.cert_file),
                                                         str(m.key_file) if m.key_file else None)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"{where}: mqtt.tls.cert_file = {str(m.cert_file)!r}: expected a PEM client "
                              "certificate whose private key is in it or in mqtt.tls.key_file (unencrypted) "
                              f"({exc})") from None


def _models(data: dict[str, Any], where: str) -> ModelSettings:
    s = _Section(data, "models", where, ("names", "thresholds"))
    names = s.get("names", list, [], "a list of model names or paths")
    if not all(isinstance(n, str) and n for n in names):
        raise s.fail("names", names, "a list of non-empty strings (model names or paths)")
    thresholds: dict[str, float] = {}
    t = _Section(s.table("thresholds"), "models.thresholds", where, tuple(s.table("thresholds")))
    for kw in t.data:
        thresholds[kw] = t.float_(kw, 0.5, 0.0, 1.0)
    return ModelSettings(tuple(names), thresholds)


def _wyoming(data: dict[str, Any], where: str) -> WyomingSettings:
    s = _Section(data, "wyoming", where, ("enabled", "uri", "zeroconf", "zeroconf_name"))
    uri = s.str_("uri", WyomingSettings.uri)
    scheme, _, _ = parse_wyoming_uri(uri, f"{where}: wyoming.uri")
    settings = WyomingSettings(
        enabled=s.bool_("enabled", False), uri=uri, zeroconf=s.bool_("zeroconf", False),
        zeroconf_name=s.str_("zeroconf_name", "", re.compile(r"[A-Za-z0-9_\-]{0,63}"),
                             "up to 63 letters, digits, '_' or '-'"))
    if settings.zeroconf and scheme != "tcp":
        raise s.fail("zeroconf", True, "false with a unix:// uri (mDNS announces TCP ports only)")
    return settings


def from_dict(data: dict[str, Any], where: str = "config") -> Settings:
    """Build :class:`Settings` from parsed TOML (``where`` names the file in errors)."""
    top = _Section(data, "", where, ("service", "audio", "models", "mqtt", "serial", "wyoming"))
    sv = _Section(top.table("service"), "service", where, ("device_id", "state_dir", "log_level"))
    au = _Section(top.table("audio"), "audio", where, ("enabled", "device", "chunk_ms", "queue_chunks"))
    se = _Section(top.table("serial"), "serial", where, ("enabled", "port", "baudrate"))
    device = au.get("device", (str, int), "", "a device name fragment or index")
    settings = Settings(
        device_id=check_device_id(sv.str_("device_id", default_device_id()), f"{where}: service.device_id"),
        state_dir=Path(sv.str_("state_dir", str(DEFAULT_STATE_DIR), re.compile(r"[^\0]+"),
                               "a non-empty directory path")),
        log_level=sv.str_("log_level", "info", re.compile(r"^(debug|info|warning|error)$"),
                          "debug, info, warning or error"),
        audio=AudioSettings(str(device), au.int_("chunk_ms", 80, 10, 1000),
                            au.int_("queue_chunks", 50, 2, 10000), au.bool_("enabled", True)),
        models=_models(top.table("models"), where),
        mqtt=_mqtt(top.table("mqtt"), where),
        serial=SerialSettings(se.bool_("enabled", False), se.str_("port", "/dev/ttyACM0"),
                              se.int_("baudrate", 115200, 300, 4_000_000)),
        wyoming=_wyoming(top.table("wyoming"), where),
    )
    if not (settings.audio.enabled or settings.wyoming.enabled or settings.serial.enabled):
        raise ConfigError(f"{where}: audio.enabled = false with neither wyoming.enabled nor serial.enabled: the "
                          "service would hear nothing; expected at least one audio source")
    return settings


def load(path: Path | str | None, required: bool = True) -> Settings:
    """Read a TOML config file. ``path=None`` or a missing optional file gives the defaults."""
    if path is None:
        return from_dict({})
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if not required:
            return from_dict({})
        raise ConfigError(f"{path}: config file not found; expected a TOML file "
                          "(see deploy/kws-edge.toml for a commented example)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); expected key = value lines under [sections]") \
            from None
    return from_dict(data, str(path))


def with_overrides(s: Settings, **kw: Any) -> Settings:
    """Apply command-line overrides (a value of None leaves the setting alone)."""
    mqtt = s.mqtt
    if kw.get("mqtt_url"):
        host, port, tls = parse_mqtt_url(kw["mqtt_url"], "--mqtt-url")
        mqtt = replace(mqtt, host=host, port=port, tls=tls, enabled=True)
    if kw.get("no_mqtt"):
        mqtt = replace(mqtt, enabled=False)
    models = s.models
    if kw.get("models"):
        models = replace(models, names=tuple(kw["models"]))
    if kw.get("thresholds"):
        models = replace(models, thresholds={**models.thresholds, **dict(kw["thresholds"])})
    out = replace(s, mqtt=mqtt, models=models)
    if kw.get("device_id") is not None:
        out = replace(out, device_id=check_device_id(kw["device_id"], "--device-id", " "))
    if kw.get("state_dir"):
        out = replace(out, state_dir=Path(kw["state_dir"]))
    if kw.get("audio_device") is not None:
        out = replace(out, audio=replace(out.audio, device=str(kw["audio_device"])))
    return out
