"""KWS1: the line protocol from the Nano 33 BLE Sense firmware to the Pi (USB serial, 115200 baud).

This docstring is the specification; ``mcu_firmware/kws_nano/kws_protocol.cpp`` is the board's side.

Every line is ASCII, at most :data:`MAX_LINE` bytes including the terminator::

    line     = body "*" crc CRLF            (the reader also accepts a bare LF)
    body     = "KWS1" SP type *(SP field)
    field    = 1*(printable ASCII except SP and "*")
    crc      = 4 upper-case hex digits: CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF,
               no reflection, no final xor) of the body's bytes

Messages of version 1 (``ms`` is the board's audio stream time in milliseconds since it started, an
unsigned 32-bit number that wraps after 49.7 days):

    KWS1 HELLO <fw_version> <model_sha8> <model_name>   at start-up and every 10 s
    KWS1 DET <keyword> <score> <ms>                     one per detection; score 0.0000-1.0000
    KWS1 HB <ms> <dropped> <skipped>                    every second; dropped = audio samples lost so far,
                                                        skipped = model runs skipped to keep up so far
    KWS1 ERR <code>                                     the firmware cannot run (repeated every second)

``model_sha8`` is the first 8 hex digits of the model's sha256 (as in its manifest). A reader ignores
and counts lines that are corrupt (bad checksum, not ASCII, too long, malformed fields) or unknown (a
valid checksum but another version or type), and never fails on them. A board reset shows as a new
HELLO and a stream time that went backwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kws_edge.names import topic_name_problem

VERSION = "KWS1"
MAX_LINE = 128  # bytes, terminator included
_TOKEN_FORBIDDEN = frozenset(" *")


class ProtocolError(ValueError):
    """A line that is not valid KWS1 (the reader counts these; it never raises them at run time)."""


@dataclass(frozen=True)
class Hello:
    fw_version: str
    model_sha8: str
    model_name: str


@dataclass(frozen=True)
class Detection:
    keyword: str
    score: float
    ms: int


@dataclass(frozen=True)
class Heartbeat:
    ms: int
    dropped: int
    skipped: int = 0


@dataclass(frozen=True)
class Error:
    code: str


Message = Hello | Detection | Heartbeat | Error


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (check value: crc16(b"123456789") == 0x29B1)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _token(value: str, what: str) -> str:
    if not value or not value.isascii() or not value.isprintable() or set(value) & _TOKEN_FORBIDDEN:
        raise ProtocolError(f"{what}: expected printable ASCII without spaces or '*', got {value!r}")
    return value


def _u32(value: int, what: str) -> str:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ProtocolError(f"{what}: expected an unsigned 32-bit integer, got {value}")
    return str(value)


def encode(message: Message) -> bytes:
    """The line (CRLF included) for one message; raise ProtocolError for values the protocol cannot carry."""
    if isinstance(message, Hello):
        fields = ["HELLO", _token(message.fw_version, "fw_version"), _token(message.model_sha8, "model_sha8"),
                  _token(message.model_name, "model_name")]
    elif isinstance(message, Detection):
        score = min(1.0, max(0.0, message.score))
        if problem := topic_name_problem(message.keyword):
            raise ProtocolError(f"keyword {message.keyword!r}: {problem}")
        fields = ["DET", _token(message.keyword, "keyword"), f"{score:.4f}", _u32(message.ms, "ms")]
    elif isinstance(message, Heartbeat):
        fields = ["HB", _u32(message.ms, "ms"), _u32(message.dropped, "dropped"), _u32(message.skipped, "skipped")]
    else:
        fields = ["ERR", _token(message.code, "code")]
    body = " ".join([VERSION, *fields]).encode("ascii")
    line = body + b"*%04X\r\n" % crc16(body)
    if len(line) > MAX_LINE:
        raise ProtocolError(f"line of {len(line)} bytes exceeds the {MAX_LINE} byte limit")
    return line


def format_hello(fw_version: str, model_sha8: str, model_name: str) -> bytes:
    return encode(Hello(fw_version, model_sha8, model_name))


def format_detection(keyword: str, score: float, ms: int) -> bytes:
    return encode(Detection(keyword, score, ms))


def format_heartbeat(ms: int, dropped: int, skipped: int = 0) -> bytes:
    return encode(Heartbeat(ms, dropped, skipped))


def format_error(code: str) -> bytes:
    return encode(Error(code))


class UnknownMessage(ProtocolError):
    """A line with a valid checksum but a version or type this reader does not know."""


def _int(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 10 or int(text) > 0xFFFFFFFF:
        raise ProtocolError(f"{what}: expected an unsigned 32-bit integer, got {text!r}")
    return int(text)


def _score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ProtocolError(f"score: expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ProtocolError(f"score: expected a number in [0, 1], got {text!r}")
    return value


_ARITY = {"HELLO": 3, "DET": 3, "HB": 3, "ERR": 1}


def parse_line(line: bytes | str) -> Message:
    """Parse one line (terminator optional); raise ProtocolError (or UnknownMessage) when it is not KWS1."""
    try:
        raw = line.encode("latin-1") if isinstance(line, str) else bytes(line)
    except UnicodeEncodeError:
        raise ProtocolError("line is not ASCII") from None
    raw = raw.rstrip(b"\r\n")
    if len(raw) + 2 > MAX_LINE:
        raise ProtocolError(f"line of {len(raw)} bytes is longer than {MAX_LINE}")
    body, star, crc_text = raw.rpartition(b"*")
    if not star or len(crc_text) != 4:
        raise ProtocolError("no '*XXXX' checksum at the end of the line")
    try:
        expected = int(crc_text.decode("ascii"), 16)
        text = body.decode("ascii")
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("line is not ASCII or its checksum is not hex") from None
    if crc16(body) != expected:
        raise ProtocolError(f"checksum mismatch: line says {expected:04X}, body gives {crc16(body):04X}")
    parts = text.split(" ")
    if parts[0] != VERSION or len(parts) < 2 or parts[1] not in _ARITY:
        raise UnknownMessage(f"unknown message {' '.join(parts[:2])!r}")
    kind, args = parts[1], parts[2:]
    if len(args) != _ARITY[kind] or not all(args):
        raise ProtocolError(f"{kind}: expected {_ARITY[kind]} fields, got {len(args)}")
    if not all(a.isprintable() for a in args):  # the spec: printable ASCII only (no NUL, ESC, CR, ...)
        raise ProtocolError(f"{kind}: a field holds control characters")
    if kind == "DET" and (problem := topic_name_problem(args[0])):
        raise ProtocolError(f"DET keyword {args[0]!r}: {problem}")
    if kind == "HELLO":
        return Hello(*args)
    if kind == "DET":
        return Detection(args[0], _score(args[1]), _int(args[2], "ms"))
    if kind == "HB":
        return Heartbeat(_int(args[0], "ms"), _int(args[1], "dropped"), _int(args[2], "skipped"))
    return Error(args[0])


@dataclass
class ReaderStats:
    """Counters of a :class:`LineReader`."""

    messages: int = 0
    corrupt: int = 0
    unknown: int = 0
    last_problem: str = ""
    by_kind: dict[str, int] = field(default_factory=dict)


class LineReader:
    """Splits a byte stream into lines and parses them; bad lines are counted and skipped, never raised."""

    def __init__(self) -> None:
        self.stats = ReaderStats()
        self._buf = bytearray()
        self._discarding = False  # inside an over-long line: drop bytes up to the next newline

    def reset(self) -> None:
        """Forget a partial line (after a reconnect); the counters stay."""
        self._buf.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[Message]:
        """Add received bytes; return the messages completed by them."""
        out: list[Message] = []
        self._buf.extend(data)
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if self._discarding:
                    self._buf.clear()
                elif len(self._buf) > MAX_LINE:
                    self._count_corrupt(f"line longer than {MAX_LINE} bytes")
                    self._buf.clear()
                    self._discarding = True
                return out
            line = bytes(self._buf[:end + 1])
            del self._buf[:end + 1]
            if self._discarding:
                self._discarding = False
                continue
            message = self._parse(line)
            if message is not None:
                out.append(message)

    def _parse(self, line: bytes) -> Message | None:
        if not line.strip():
            return None
        try:
            message = parse_line(line)
        except UnknownMessage as exc:
            self.stats.unknown += 1
            self.stats.last_problem = str(exc)
            return None
        except ProtocolError as exc:
            self._count_corrupt(str(exc))
            return None
        self.stats.messages += 1
        kind = type(message).__name__
        self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + 1
        return message

    def _count_corrupt(self, problem: str) -> None:
        self.stats.corrupt += 1
        self.stats.last_problem = problem
