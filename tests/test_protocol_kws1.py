"""KWS1 line protocol (kws_edge.protocol): formatting, parsing, checksums, and a reader that never fails."""

from __future__ import annotations

import numpy as np
import pytest

from kws_edge import protocol as p


def test_crc16_check_value() -> None:
    assert p.crc16(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE catalogue check value


def test_round_trip_every_message() -> None:
    messages = [p.Hello("0.1.0", "a994690c", "hey_jarvis"), p.Detection("hey_jarvis", 0.8125, 123456),
                p.Heartbeat(0, 0, 0), p.Heartbeat(2**32 - 1, 17, 4), p.Error("arena_too_small")]
    for message in messages:
        line = p.encode(message)
        assert line.endswith(b"\r\n") and len(line) <= p.MAX_LINE
        assert p.parse_line(line) == message
        assert p.parse_line(line.rstrip(b"\r\n") + b"\n") == message  # bare LF accepted


def test_exact_wire_format() -> None:
    assert p.format_detection("yes", 0.5, 1000) == b"KWS1 DET yes 0.5000 1000*%04X\r\n" % p.crc16(
        b"KWS1 DET yes 0.5000 1000")
    assert p.format_hello("0.1.0", "deadbeef", "m").startswith(b"KWS1 HELLO 0.1.0 deadbeef m*")


@pytest.mark.parametrize("bad", [
    b"KWS1 DET yes 0.5000 1000*0000\r\n",   # wrong checksum
    b"KWS1 DET yes 0.5000 1000\r\n",        # no checksum
    b"\xff\xfe garbage\r\n",
    b"*\r\n",
    b"KWS1 DET yes 0.5000*ZZZZ\n",
])
def test_corrupt_lines_raise_protocol_error(bad: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_line(bad)


def _signed(body: bytes) -> bytes:
    return body + b"*%04X\r\n" % p.crc16(body)


@pytest.mark.parametrize("body", [b"KWS1 DET yes 1.5 10", b"KWS1 DET yes 0.5", b"KWS1 HB -1 0 0",
                                  b"KWS1 HB 4294967296 0 0", b"KWS1 HB 1 0", b"KWS1 HELLO a b", b"KWS1 DET yes nan 1"])
def test_malformed_fields_with_valid_checksum_are_corrupt(body: bytes) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.parse_line(_signed(body))
    assert not isinstance(info.value, p.UnknownMessage)


def test_unknown_version_or_type_is_unknown_not_corrupt() -> None:
    for body in (b"KWS2 DET yes 0.5 1", b"KWS1 TEMP 21"):
        with pytest.raises(p.UnknownMessage):
            p.parse_line(_signed(body))


def test_encode_refuses_values_the_protocol_cannot_carry() -> None:
    with pytest.raises(p.ProtocolError, match="keyword"):
        p.format_detection("two words", 0.5, 1)
    with pytest.raises(p.ProtocolError, match="ms"):
        p.format_heartbeat(-1, 0)
    with pytest.raises(p.ProtocolError, match="limit"):
        p.format_error("x" * 200)


def test_reader_counts_and_survives_garbage_in_random_chunks() -> None:
    rng = np.random.default_rng(3)
    good = [p.encode(p.Detection("yes", i / 100, i)) for i in range(50)]
    stream = bytearray()
    expected_corrupt = 0
    for i, line in enumerate(good):
        stream += line
        if i % 7 == 0:
            stream += bytes(rng.integers(0, 256, 40, dtype=np.uint8)).replace(b"\n", b"") + b"\n"
            expected_corrupt += 1
        if i % 11 == 0:
            flipped = bytearray(line)
            flipped[10] ^= 0x01
            stream += flipped
            expected_corrupt += 1
    stream += b"x" * 1000 + b"\n"  # an over-long line is dropped whole
    expected_corrupt += 1
    stream += _signed(b"KWS1 NEWTHING 1")
    stream += good[0]
    reader = p.LineReader()
    out: list[p.Message] = []
    pos = 0
    while pos < len(stream):
        step = int(rng.integers(1, 300))
        out += reader.feed(bytes(stream[pos:pos + step]))
        pos += step
    assert out == [p.parse_line(x) for x in good] + [p.parse_line(good[0])]
    assert reader.stats.corrupt == expected_corrupt
    assert reader.stats.unknown == 1
    assert reader.stats.messages == 51
    assert reader.stats.by_kind == {"Detection": 51}
