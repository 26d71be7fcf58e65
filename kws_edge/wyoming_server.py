"""``kws-edge wyoming``: a Wyoming wake-word server, so Home Assistant Assist can use kws_edge's models.

Home Assistant (Settings -> Devices & services -> Wyoming Protocol) connects and sends ``describe``; the
answer is ``info`` with one wake program whose models are the loaded keywords. For each wake-word run it
sends ``detect`` (the names to listen for), ``audio-start``, ``audio-chunk``s and ``audio-stop``; the server
answers ``detection`` (name, timestamp in ms from audio start) for each detection, and ``not-detected`` at
``audio-stop`` when none fired. Each connection has its own feature/model/decision state; the interpreters
are shared, which is safe because every connection runs on the server's one event-loop thread. Audio at
any rate, width and channel count is converted to the models' 16 kHz mono int16 exactly as ``detect``
converts a WAV file (the same streaming resampler), so both give the same detections.

A client that breaks the protocol (invalid JSON, an unknown event, an oversized payload, audio before
``audio-start``) gets an ``error`` event and is disconnected with a log line; other clients go on.
The command line and the service's thread are in :mod:`kws_edge.wyoming_service`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, SelectProgram, WakeModel, WakeProgram
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler, AsyncServer
from wyoming.wake import Detect, Detection, NotDetected

from kws_edge import __version__
from kws_edge import config as cfg
from kws_edge.audio import MAX_CHANNELS, MAX_RATE, StreamingResampler, pcm_to_mono, to_int16
from kws_edge.errors import AudioError, KwsError
from kws_edge.model import ModelRunner
from kws_edge.pipeline import Detector

log = logging.getLogger("kws_edge.wyoming")

PROGRAM = "kws_edge"
MAX_DATA_BYTES = 64 * 1024  # the JSON data block after a header (an info event is ~2 KB)
MAX_PAYLOAD_BYTES = 1024 * 1024  # one audio chunk; 1 MiB = 5.9 s of 44.1 kHz stereo 16-bit, clients send ~0.1 s
LANGUAGES = ["en"]  # every shipped model was trained on English speech
ATTRIBUTION = Attribution(name="kws_edge", url="file:///opt/kws-edge/README.md")


class ClientError(Exception):
    """The client broke the protocol; the message says how (logged, and sent back as an ``error`` event)."""


class PcmConverter:
    """Wyoming PCM bytes at any rate/width/channels -> int16 mono at ``to_rate``; keeps a partial frame."""

    def __init__(self, rate: int, width: int, channels: int, to_rate: int) -> None:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (rate, width, channels)) or \
                not (0 < rate <= MAX_RATE and 1 <= width <= 4 and 1 <= channels <= MAX_CHANNELS):
            raise ValueError(f"unsupported audio format {rate} Hz, {width} bytes, {channels} channels; expected "
                             f"1-{MAX_RATE} Hz, 1-4 bytes (8-bit unsigned as in WAV), 1-{MAX_CHANNELS} channels")
        self.rate, self.width, self.channels = rate, width, channels
        self._frame = width * channels
        try:
            self._resampler = StreamingResampler(rate, to_rate) if rate != to_rate else None
        except AudioError as exc:
            raise ValueError(str(exc)) from None
        self._rest = b""

    def process(self, data: bytes) -> npt.NDArray[np.int16]:
        data = self._rest + data
        usable = len(data) - len(data) % self._frame
        raw, self._rest = data[:usable], data[usable:]
        if not raw:
            return np.zeros(0, dtype=np.int16)
        if self.width == 2 and self.channels == 1 and self._resampler is None:
            return np.frombuffer(raw, dtype="<i2").astype(np.int16)
        mono = pcm_to_mono(raw, self.width, self.channels)
        return self._resampler.process(mono) if self._resampler is not None else to_int16(mono)

    def flush(self) -> npt.NDArray[np.int16]:
        """End of stream: the resampler's last samples (a partial frame is dropped)."""
        self._rest = b""
        return self._resampler.flush() if self._resampler is not None else np.zeros(0, dtype=np.int16)


@dataclass(frozen=True)
class Catalog:
    """What the server offers: loaded models and threshold overrides (replaced as a whole on reload)."""

    runners: tuple[ModelRunner, ...]
    thresholds: Mapping[str, float] = field(default_factory=dict)

    def info(self) -> Info:
        models: dict[str, WakeModel] = {}
        for r in self.runners:
            m = r.manifest
            for kw in m.keywords:
                phrase = kw.replace("_", " ")
                models.setdefault(kw, WakeModel(
                    name=kw, attribution=ATTRIBUTION, installed=True, version=m.sha256[:12],
                    description=phrase, languages=LANGUAGES, phrase=phrase))
        program = WakeProgram(name=PROGRAM, attribution=ATTRIBUTION, installed=True, version=__version__,
                              description="kws_edge: private on-device keyword spotting",
                              models=list(models.values()))
        return Info(wake=[program])

    def select(self, names: Sequence[str] | None) -> tuple[Detector | None, frozenset[str], list[str]]:
        """A fresh Detector for the requested keywords or model names (None or [] = all): (detector or None
        when nothing requested is loaded, the keywords to report, the names that are not loaded)."""
        if not names:
            chosen = list(self.runners)
            unknown: list[str] = []
            keywords = {kw for r in chosen for kw in r.manifest.keywords}
        else:
            chosen, keywords, unknown = [], set(), []
            for name in names:
                hits = [r for r in self.runners if name == r.name or name in r.manifest.keywords]
                if not hits:
                    unknown.append(name)
                for r in hits:
                    keywords |= {name} if name in r.manifest.keywords else set(r.manifest.keywords)
                    if r not in chosen:
                        chosen.append(r)
        if not chosen:
            return None, frozenset(), unknown
        known = {kw for r in chosen for kw in r.manifest.keywords}
        thresholds = {kw: v for kw, v in self.thresholds.items() if kw in known}
        return Detector(chosen, thresholds), frozenset(keywords), unknown


@dataclass
class _Stream:
    """One audio-start .. audio-stop run of one connection."""

    converter: PcmConverter
    detector: Detector | None
    keywords: frozenset[str]
    samples: int = 0  # at the models' rate
    detected: int = 0


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ClientError(f"{key} {value!r} is not a byte count")
    if value > limit:
        raise ClientError(f"{key} {value} exceeds the limit of {limit} bytes")
    return value


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next event, as ``wyoming.event.async_read_event`` reads it, but with size limits and with the
    reason raised as :class:`ClientError` rather than a silent None. None at a clean end of stream."""
    try:
        line = await reader.readline()
    except ValueError:  # no newline within the reader's limit (64 KiB)
        raise ClientError("header line too long (no newline within 64 KiB)") from None
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise asyncio.IncompleteReadError(line, None)
    try:
        header = json.loads(line)
    except (ValueError, RecursionError):
        raise ClientError(f"invalid JSON header {line[:60]!r}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ClientError(f"header is not a JSON object with a string 'type': {line[:60]!r}")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ClientError("'data' is not a JSON object")
    data_length = _length(header, "data_length", MAX_DATA_BYTES)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
    if data_length:
        try:
            extra = json.loads(await reader.readexactly(data_length))
        except (ValueError, RecursionError):
            raise ClientError("invalid JSON in the data block") from None
        if not isinstance(extra, dict):
            raise ClientError("the data block is not a JSON object")
        data.update(extra)
    payload = await reader.readexactly(payload_length) if payload_length else None
    return Event(type=header["type"], data=data, payload=payload)


class WakeHandler(AsyncEventHandler):
    """One client connection: describe, detect, audio-start/chunk/stop; its own detector per audio run."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: WyomingServer) -> None:
        super().__init__(reader, writer)
        self.server = server
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix-socket client"
        self.names: list[str] | None = None
        self.stream: _Stream | None = None

    async def run(self) -> None:
        """Read events until the client leaves; a misbehaving client is logged and dropped, never raised."""
        self._is_running = True
        self.server.clients += 1
        log.debug("client %s connected", self.peer)
        try:
            while self._is_running:
                event = await read_event(self.reader)
                if event is None or not await self.handle_event(event):
                    break
            if self.stream is not None:
                log.info("client %s disconnected mid-stream after %s", self.peer, self._heard())
        except ClientError as exc:
            log.warning("dropping client %s: %s", self.peer, exc)
            with contextlib.suppress(Exception):
                await self.write_event(Error(text=str(exc), code="protocol-error").event())
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            where = f"mid-stream after {self._heard()}" if self.stream is not None else "mid-event"
            log.info("client %s disconnected %s (%s)", self.peer, where, type(exc).__name__)
        except Exception:  # a bug met by one client must not take the server or the other clients down
            log.exception("dropping client %s after an internal error", self.peer)
        finally:
            self.server.clients -= 1
            self.stream = None
            self.writer.close()

    def _heard(self) -> str:
        rate = self.server.catalog.runners[0].manifest.features.sample_rate
        return f"{self.stream.samples / rate:.2f} s of audio" if self.stream else "no audio"

    async def handle_event(self, event: Event) -> bool:
        kind = event.type
        try:
            if Describe.is_type(kind):
                await self.write_event(self.server.catalog.info().event())
            elif Detect.is_type(kind):
                self._detect(event.data.get("names"))
            elif AudioStart.is_type(kind):
                self._start(AudioStart.from_event(event))
            elif AudioChunk.is_type(kind):
                await self._chunk(event)
            elif AudioStop.is_type(kind):
                await self._stop()
            elif Ping.is_type(kind):
                await self.write_event(Pong(text=event.data.get("text")).event())
            elif SelectProgram.is_type(kind):
                if SelectProgram.from_event(event).name != PROGRAM:
                    raise ClientError(f"select-program: no program {event.data.get('name')!r}; this is {PROGRAM!r}")
            else:
                raise ClientError(f"unknown event type {kind[:40]!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ClientError(f"malformed {kind} event ({type(exc).__name__}: {exc})") from None
        return True

    def _detect(self, names: Any) -> None:
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ClientError(f"detect: names must be a list of strings, got {names!r}")
        self.names = names
        _, _, unknown = self.server.catalog.select(names) if names else (None, None, [])
        if unknown:
            log.warning("client %s asked for wake word(s) %s that no loaded model detects", self.peer,
                        ", ".join(unknown))

    def _start(self, start: AudioStart) -> None:
        detector, keywords, _ = self.server.catalog.select(self.names)
        rate = self.server.catalog.runners[0].manifest.features.sample_rate
        converter = PcmConverter(start.rate, start.width, start.channels, rate)
        if start.rate < rate:
            log.warning("client %s sends %d Hz audio: the models listen up to %d Hz, expect fewer detections",
                        self.peer, start.rate, rate // 2)
        self.stream = _Stream(converter, detector, keywords)

    async def _chunk(self, event: Event) -> None:
        s = self.stream
        if s is None:
            raise ClientError("audio-chunk before audio-start")
        c = s.converter
        fmt = (event.data.get("rate", c.rate), event.data.get("width", c.width), event.data.get("channels", c.channels))
        if fmt != (c.rate, c.width, c.channels):
            raise ClientError(f"audio-chunk format {fmt} differs from audio-start's {(c.rate, c.width, c.channels)}")
        samples = c.process(event.payload or b"")
        s.samples += len(samples)
        if s.detector is not None and len(samples):
            await self._report(s.detector.process(samples))

    async def _stop(self) -> None:
        s = self.stream
        if s is None:
            raise ClientError("audio-stop before audio-start")
        if s.detector is not None:
            tail = s.converter.flush()
            s.samples += len(tail)
            await self._report(s.detector.process(tail) if len(tail) else [])
            await self._report(s.detector.flush())
        log.debug("client %s: audio-stop after %s, %d detection(s)", self.peer, self._heard(), s.detected)
        self.stream = None
        if not s.detected:
            await self.write_event(NotDetected().event())

    async def _report(self, detections: Sequence[Any]) -> None:
        s = self.stream
        assert s is not None
        for d in detections:
            if d.keyword not in s.keywords:
                continue
            s.detected += 1
            self.server.detections += 1
            timestamp = round(d.t * 1000)
            log.info("wyoming: detected %s (score %.2f, model %s) at %d ms for %s", d.keyword, d.score, d.model,
                     timestamp, self.peer, extra={"KEYWORD": d.keyword, "SCORE": f"{d.score:.4f}",
                                                  "MODEL": d.model, "SOURCE": "wyoming"})
            await self.write_event(Detection(name=d.keyword, timestamp=timestamp).event())



class WyomingServer:
    """Listens on ``uri`` (tcp://HOST:PORT or unix:///PATH); one :class:`WakeHandler` per connection."""

    def __init__(self, catalog: Catalog, uri: str, zeroconf_name: str | None = None) -> None:
        cfg.parse_wyoming_uri(uri)
        self.catalog = catalog  # swapped as a whole on reload; running streams keep their detectors
        self.uri = uri
        self.zeroconf_name = zeroconf_name  # None: no mDNS announcement
        self.clients = 0
        self.detections = 0
        self.heartbeat = time.monotonic()  # refreshed every second by the event loop (for the watchdog)

    async def serve(self, stop: asyncio.Event, on_ready: Callable[[], None] | None = None,
                    tick: Callable[[], None] | None = None) -> None:
        """Serve until ``stop`` is set; ``on_ready`` once listening, ``tick`` every second from the loop."""
        scheme, _, port = cfg.parse_wyoming_uri(self.uri)
        server = AsyncServer.from_uri(self.uri)
        try:
            await server.start(partial(WakeHandler, server=self))
        except OSError as exc:
            raise KwsError(f"wyoming: cannot listen on {self.uri} ({exc.strerror or exc}); is another service "
                           "using that port?") from None
        names = ", ".join(m.name for m in self.catalog.info().wake[0].models)
        log.info("Wyoming wake-word server on %s; wake words: %s", self.uri, names)
        zeroconf = await self._announce(port) if self.zeroconf_name is not None and scheme == "tcp" else None
        if on_ready is not None:
            on_ready()
        try:
            while not stop.is_set():
                self.heartbeat = time.monotonic()
                if tick is not None:
                    tick()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            if zeroconf is not None:
                with contextlib.suppress(Exception):
                    await zeroconf.async_close()
            await server.stop()

    async def _announce(self, port: int) -> Any:
        """Register ``<name>._wyoming._tcp.local.``; a failure is logged, the server still runs."""
        try:
            from wyoming.zeroconf import HomeAssistantZeroconf

            zc = HomeAssistantZeroconf(port=port, name=self.zeroconf_name or None)
            await zc.register_server()
        except Exception as exc:  # no network, no multicast route, zeroconf missing: serving matters more
            log.error("zeroconf announcement failed (%s); add the service in Home Assistant by host and port",
                      exc)
            return None
        log.info("announced %s._wyoming._tcp.local. on %s port %d", zc.name, zc.host, port)
        return zc._aiozc
