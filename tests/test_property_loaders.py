"""Property tests: the KWS1 parser, the manifest loader and the config loader turn any input into a value
or the project's own error (ProtocolError, ModelError, ConfigError), never another exception."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("hypothesis", reason="hypothesis is not installed: pip install hypothesis (dev extra)")

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kws_edge import config as cfg
from kws_edge import manifest as mf
from kws_edge import protocol
from kws_edge.errors import ConfigError, ModelError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=10), c, max_size=5),
                    max_leaves=20)

# -- KWS1 ---------------------------------------------------------------------------------------------------

TOKENS = st.sampled_from([b"HELLO", b"DET", b"HB", b"ERR", b"XYZ", b""])
FIELD = st.binary(min_size=0, max_size=12)


@st.composite
def checksummed_lines(draw: Any) -> bytes:
    """Lines with a valid CRC (so the parser goes past the checksum) and arbitrary fields."""
    fields = draw(st.lists(FIELD, max_size=5))
    body = b" ".join([draw(st.sampled_from([b"KWS1", b"KWS2", b"kws1"])), draw(TOKENS), *fields])
    return body + b"*%04X" % protocol.crc16(body) + draw(st.sampled_from([b"", b"\n", b"\r\n"]))


@FUZZ
@given(st.one_of(st.binary(max_size=200), checksummed_lines(), st.text(max_size=140)))
def test_kws1_parse_line_gives_a_message_or_protocol_error(line: bytes | str) -> None:
    try:
        message = protocol.parse_line(line)
    except protocol.ProtocolError:
        return
    if isinstance(message, protocol.Detection):
        assert 0.0 <= message.score <= 1.0 and protocol.topic_name_problem(message.keyword) is None
        assert protocol.parse_line(protocol.encode(message)) == message


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=300), checksummed_lines()), max_size=10))
def test_kws1_line_reader_never_raises(chunks: list[bytes]) -> None:
    reader = protocol.LineReader()
    for chunk in chunks:
        for message in reader.feed(chunk):
            assert isinstance(message, protocol.Hello | protocol.Detection | protocol.Heartbeat | protocol.Error)


# -- manifests --------------------------------------------------------------------------------------------

def _valid_manifest() -> dict[str, Any]:
    from tests.test_service_support import tiny_model

    return dict(json.loads(tiny_model().read_text()))


def _paths(d: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(d, dict):
        for k, v in d.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out += _paths(v, (*prefix, i))
    return out


@FUZZ
@given(JSON)
def test_manifest_parse_of_any_json_value(value: Any) -> None:
    with contextlib.suppress(ModelError):
        mf.parse(value, "fuzz.json")


@FUZZ
@given(st.data())
def test_manifest_parse_of_a_valid_manifest_with_one_value_replaced(data: Any) -> None:
    base = _valid_manifest()
    target = copy.deepcopy(base)
    where = data.draw(st.sampled_from(_paths(base)))
    node = target
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = data.draw(JSON)
    try:
        m = mf.parse(target, "fuzz.json")
    except ModelError:
        return
    assert m.features.hop >= 1 and all(protocol.topic_name_problem(k) is None for k in m.keywords)


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_manifest_load_of_any_file(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.json"
        path.write_bytes(raw)
        with contextlib.suppress(ModelError):
            mf.load(path)


# -- config -----------------------------------------------------------------------------------------------

TOML_VALUE = st.recursive(st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                          lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                          max_leaves=12)
SECTIONS = {"service": ("device_id", "state_dir", "log_level"), "audio": ("device", "chunk_ms", "queue_chunks"),
            "models": ("names", "thresholds"), "serial": ("enabled", "port", "baudrate"),
            "mqtt": cfg._MQTT_KEYS}


@st.composite
def config_dicts(draw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "other"]), max_size=4, unique=True)):
        keys = SECTIONS.get(section, ("x",))
        out[section] = {k: draw(TOML_VALUE) for k in draw(st.lists(st.sampled_from(keys), max_size=4,
                                                                    unique=True))}
    return out


@FUZZ
@given(config_dicts())
def test_config_from_any_dict(data: dict[str, Any]) -> None:
    try:
        s = cfg.from_dict(data, "fuzz.toml")
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert protocol.topic_name_problem(s.device_id) is None
    assert s.mqtt.reconnect_min_s <= s.mqtt.reconnect_max_s and str(s.state_dir)


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_config_load_of_any_file(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.toml"
        path.write_bytes(raw)
        with contextlib.suppress(ConfigError):
            cfg.load(path)
