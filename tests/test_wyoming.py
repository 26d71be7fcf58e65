"""``kws-edge wyoming`` as Home Assistant sees it: a real server subprocess on a loopback port and the
``wyoming`` package's own client doing describe, detect, audio-start, audio-chunk..., audio-stop.

The reference is ``kws-edge detect --json`` on the same file: same names, timestamps equal to its ``t`` in
ms (it rounds to 1 ms). Bad clients are dropped with a log line while a good client, half-way through its
stream, keeps being served. No fixed sleeps: every wait is for a port, an event, a log line or EOF.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("wyoming")

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event, async_write_event
from wyoming.info import Describe, Info
from wyoming.ping import Ping
from wyoming.wake import Detect, Detection

from tests.test_service_support import KWS_EDGE, REPO, TIMEOUT, free_port, hermetic_env, wait_until
from tests.test_service_systemd import NotifySocket

DEMO = REPO / "models" / "demo" / "demo.wav"
LABELS = REPO / "models" / "demo" / "demo.labels.json"
MODELS = [str(REPO / "models" / "hey_jarvis.json"), str(REPO / "models" / "commands.json")]
STRIDE_MS = 60  # one model stride (3 frames of 20 ms): resampled audio may shift a detection by that much

Found = list[tuple[str, int]]  # (name, timestamp in ms from audio start)


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[str]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _start(cmd: list[str], port: int, log: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)

    def up() -> bool:
        assert proc.poll() is None, f"server exited {proc.returncode}: {log.read_text()}"
        return _port_open(port)

    wait_until(up, what=f"the server on port {port}")
    return proc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("wyoming")
    port = free_port()
    config = tmp / "empty.toml"
    config.write_text("# defaults only, never the host's /etc/kws-edge\n")
    cmd = [*KWS_EDGE, "-v", "wyoming", "--config", str(config), "--uri", f"tcp://127.0.0.1:{port}",
           *(a for m in MODELS for a in ("--model", m))]
    proc = _start(cmd, port, tmp / "server.log", hermetic_env(tmp))
    yield Server(port, proc, tmp / "server.log")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(TIMEOUT) == 0, (tmp / "server.log").read_text()


def _detect_json(wav: Path) -> Found:
    res = subprocess.run([*KWS_EDGE, "detect", str(wav), *(a for m in MODELS for a in ("--model", m)), "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    return [(r["keyword"], round(r["t"] * 1000)) for r in rows]


def _read_wav(path: Path) -> tuple[bytes, int, int, int]:
    with wave.open(str(path), "rb") as w:
        return w.readframes(w.getnframes()), w.getframerate(), w.getsampwidth(), w.getnchannels()


@pytest.fixture(scope="module")
def stereo44(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo recording at 44.1 kHz, stereo (right channel at 80 %), 16-bit."""
    from scipy.signal import resample_poly

    raw, _, _, _ = _read_wav(DEMO)
    x = resample_poly(np.frombuffer(raw, dtype="<i2").astype(np.float64), 441, 160)
    both = np.stack([x, 0.8 * x], axis=1)
    path = tmp_path_factory.mktemp("audio") / "demo44k_stereo.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(np.clip(np.rint(both), -32768, 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def reference() -> Found:
    return _detect_json(DEMO)


async def _describe(port: int) -> Info:
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Describe().event())
        event = await asyncio.wait_for(c.read_event(), TIMEOUT)
        assert event is not None and Info.is_type(event.type)
        return Info.from_event(event)


async def _collect(c: AsyncTcpClient) -> tuple[Found, list[str]]:
    """Events up to the pong that follows audio-stop: (detections, other event types)."""
    found: Found = []
    other: list[str] = []
    while True:
        event = await asyncio.wait_for(c.read_event(), TIMEOUT)
        assert event is not None, "server closed the connection"
        if Detection.is_type(event.type):
            d = Detection.from_event(event)
            assert d.name is not None and d.timestamp is not None
            found.append((d.name, d.timestamp))
        elif event.type == "pong":
            return found, other
        else:
            other.append(event.type)


async def _send_audio(c: AsyncTcpClient, raw: bytes, rate: int, width: int, channels: int, chunk_ms: int) -> None:
    """``chunk_ms`` of audio per chunk; a negative value is a byte count that splits frames (-4001)."""
    step = rate * chunk_ms // 1000 * width * channels if chunk_ms > 0 else -chunk_ms
    for i in range(0, len(raw), step):
        await c.write_event(AudioChunk(rate, width, channels, raw[i:i + step]).event())


async def _run(port: int, wav: Path, chunk_ms: int = 50, names: list[str] | None = None,
               halfway: asyncio.Event | None = None, resume: asyncio.Event | None = None) -> tuple[Found, list[str]]:
    """One Home-Assistant-like wake-word run; with ``halfway``/``resume`` it pauses mid-stream."""
    raw, rate, width, channels = _read_wav(wav)
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Detect(names=names).event())
        await c.write_event(AudioStart(rate, width, channels).event())
        cut = len(raw) // 2 // (width * channels) * (width * channels) if halfway else len(raw)
        await _send_audio(c, raw[:cut], rate, width, channels, chunk_ms)
        if halfway is not None and resume is not None:
            halfway.set()
            await asyncio.wait_for(resume.wait(), TIMEOUT)
            await _send_audio(c, raw[cut:], rate, width, channels, chunk_ms)
        await c.write_event(AudioStop().event())
        await c.write_event(Ping().event())  # answered after audio-stop: marks the end of this run's events
        return await _collect(c)


def test_describe_lists_every_loaded_keyword_as_a_wake_model(server: Server) -> None:
    info = asyncio.run(_describe(server.port))
    assert len(info.wake) == 1
    program = info.wake[0]
    assert program.name == "kws_edge" and program.installed
    models = {m.name: m for m in program.models}
    assert set(models) == {"hey_jarvis", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"}
    jarvis = models["hey_jarvis"]
    assert jarvis.phrase == "hey jarvis" and jarvis.installed and jarvis.languages == ["en"]
    assert jarvis.version and jarvis.attribution.name == "kws_edge"


def test_detections_match_detect_json_at_every_chunk_size(server: Server, reference: Found) -> None:
    labels = json.loads(LABELS.read_text())["keywords"]
    assert len(reference) >= 4
    for name, ms in reference:  # the reference itself: each detection right after a spoken keyword
        assert any(k["keyword"] == name and k["start"] * 1000 <= ms <= k["end"] * 1000 + 1000 for k in labels)
    for chunk_ms in (20, 37, 50, 100):
        found, other = asyncio.run(_run(server.port, DEMO, chunk_ms))
        assert found == reference, f"chunk {chunk_ms} ms"
        assert other == []  # detections fired: no not-detected


def test_44k_stereo_gives_what_detect_gives_and_the_same_wake_words(server: Server, reference: Found,
                                                                    stereo44: Path) -> None:
    found, _ = asyncio.run(_run(server.port, stereo44, 30))
    assert found == _detect_json(stereo44)  # the same conversion as detect's WAV reader: identical
    assert asyncio.run(_run(server.port, stereo44, 100))[0] == found  # and chunking does not matter,
    assert asyncio.run(_run(server.port, stereo44, -4001))[0] == found  # even chunks that split frames
    jarvis = [ms for n, ms in found if n == "hey_jarvis"]
    assert len(jarvis) >= 2 and len(jarvis) == len([n for n, _ in reference if n == "hey_jarvis"])
    assert all(abs(a - b) <= STRIDE_MS for a, b in zip(jarvis, [ms for n, ms in reference if n == "hey_jarvis"],
                                                       strict=True))


def test_44k_stereo_gives_every_16k_mono_detection(server: Server, reference: Found, stereo44: Path) -> None:
    found, _ = asyncio.run(_run(server.port, stereo44, 30))
    assert [n for n, _ in found] == [n for n, _ in reference]
    assert all(abs(a - b) <= STRIDE_MS for (_, a), (_, b) in zip(found, reference, strict=True))


def test_names_filter_and_not_detected(server: Server, reference: Found, tmp_path: Path) -> None:
    found, other = asyncio.run(_run(server.port, DEMO, 80, names=["hey_jarvis"]))
    assert found == [d for d in reference if d[0] == "hey_jarvis"] and other == []
    found, other = asyncio.run(_run(server.port, DEMO, 80, names=["commands"]))  # a model name: its keywords
    assert found == [d for d in reference if d[0] != "hey_jarvis"]
    found, other = asyncio.run(_run(server.port, DEMO, 80, names=["okay_nabu"]))  # not loaded
    assert found == [] and other == ["not-detected"]
    silence = tmp_path / "silence.wav"
    with wave.open(str(silence), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(2 * 16000 * 2))
    assert asyncio.run(_run(server.port, silence, 20)) == ([], ["not-detected"])


def test_four_clients_at_once_each_get_their_own_detections(server: Server, reference: Found, stereo44: Path,
                                                             tmp_path: Path) -> None:
    raw, rate, width, channels = _read_wav(DEMO)
    late = tmp_path / "late.wav"  # the demo's second half: its own timestamps, from its own audio start
    start = len(raw) // 2 // 640 * 640  # a multiple of the 20 ms hop, so the later detections keep their frames
    with wave.open(str(late), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw[start:])

    async def together() -> list[tuple[Found, list[str]]]:
        return list(await asyncio.gather(_run(server.port, DEMO, 20), _run(server.port, stereo44, 100),
                                         _run(server.port, late, 50), _run(server.port, DEMO, 100, ["go"])))

    a, b, c, d = asyncio.run(together())
    assert a[0] == reference
    assert b[0] == _detect_json(stereo44)
    assert c[0] == _detect_json(late) and c[0] and c[0][-1][1] < reference[-1][1]
    assert d[0] == [x for x in reference if x[0] == "go"]


async def _bad_client(port: int, case: str) -> bytes:
    """Misbehave as ``case`` says; return what the server sent before closing (b"" for a hang-up)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunk = AudioChunk(16000, 2, 1, bytes(3200))
    if case == "invalid-json":
        writer.write(b'{"type": "detect", "data": {\n')
    elif case == "unknown-event":
        await async_write_event(Event("transcribe-everything", {"x": 1}), writer)
    elif case == "huge-payload":
        writer.write(json.dumps({"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1},
                                 "payload_length": 2**31}).encode() + b"\n" + bytes(1000))
    elif case == "odd-rate":
        await async_write_event(Detect().event(), writer)
        await async_write_event(AudioStart(383999, 2, 1).event(), writer)
    elif case == "audio-before-start":
        await async_write_event(Detect().event(), writer)
        await async_write_event(chunk.event(), writer)
    elif case == "disconnect-mid-stream":
        await async_write_event(Detect().event(), writer)
        await async_write_event(AudioStart(16000, 2, 1).event(), writer)
        await async_write_event(chunk.event(), writer)
        header = {"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, "payload_length": 3200}
        writer.write(json.dumps(header).encode() + b"\n" + bytes(100))  # half an event, then gone
        await writer.drain()
        writer.close()
        return b""
    await writer.drain()
    sent = await asyncio.wait_for(reader.read(), TIMEOUT)  # until the server closes the connection
    writer.close()
    return sent


BAD_CASES = {
    "invalid-json": "invalid JSON header",
    "unknown-event": "unknown event type 'transcribe-everything'",
    "huge-payload": "payload_length 2147483648 exceeds the limit",
    "odd-rate": "cannot resample 383999 Hz to 16000 Hz",
    "audio-before-start": "audio-chunk before audio-start",
    "disconnect-mid-stream": "disconnected mid-stream after 0.10 s of audio",
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_client_is_dropped_while_a_good_one_is_served(server: Server, reference: Found, case: str) -> None:
    async def scenario() -> tuple[tuple[Found, list[str]], bytes]:
        halfway, resume = asyncio.Event(), asyncio.Event()
        good = asyncio.create_task(_run(server.port, DEMO, 40, halfway=halfway, resume=resume))
        await asyncio.wait_for(halfway.wait(), TIMEOUT)
        sent = await _bad_client(server.port, case)  # while the good client is mid-stream
        if case == "disconnect-mid-stream":
            await asyncio.to_thread(wait_until, lambda: BAD_CASES[case] in server.log_text(), what="its log line")
        resume.set()
        return await good, sent

    (found, other), sent = asyncio.run(scenario())
    assert found == reference and other == []
    log = server.log_text()
    assert BAD_CASES[case] in log, log[-2000:]
    if case != "disconnect-mid-stream":
        assert b'"type": "error"' in sent  # told why, then disconnected
        assert "dropping client 127.0.0.1:" in log
    assert server.proc.poll() is None
    assert asyncio.run(_describe(server.port)).wake[0].models  # and new clients are still welcome


def test_service_serves_wyoming_without_microphone_with_sd_notify_and_sighup(tmp_path: Path) -> None:
    d = Path(os.environ.get("TMPDIR", "/tmp"))
    notify = NotifySocket(str(d / f"kws-wy-{os.getpid()}.sock"))  # short: AF_UNIX paths <= 107 bytes
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(f'[audio]\nenabled = false\n[mqtt]\nenabled = false\n[models]\nnames = {json.dumps(MODELS)}\n'
                      f'[wyoming]\nenabled = true\nuri = "tcp://127.0.0.1:{port}"\n')
    env = hermetic_env(tmp_path, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="2000000")
    try:
        proc = _start([*KWS_EDGE, "run", "--config", str(config), "--state-dir", str(tmp_path / "state")], port,
                      tmp_path / "run.log", env)
        try:
            wait_until(lambda: "READY=1" in notify.lines(), what="READY=1")
            found, _ = asyncio.run(_run(port, DEMO, 50, names=["hey_jarvis"]))
            assert [n for n, _ in found] == [n for n, _ in _detect_json(DEMO) if n == "hey_jarvis"]
            assert len(found) >= 2
            wait_until(lambda: "WATCHDOG=1" in notify.lines(), what="WATCHDOG=1 from the Wyoming-only loop")
            proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "RELOADING=1" in notify.lines(), what="RELOADING=1")
            wait_until(lambda: notify.lines().count("READY=1") >= 2, what="READY=1 after the reload")
            stops = [(n, t) for n, t in _detect_json(DEMO) if n == "stop"]
            assert len(stops) == 1 and asyncio.run(_run(port, DEMO, 100, names=["stop"]))[0] == stops
            wait_until(lambda: any("Wyoming tcp://" in line for line in notify.lines()), what="STATUS with Wyoming")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(TIMEOUT) == 0
        log = (tmp_path / "run.log").read_text()
        assert "wyoming: detected hey_jarvis" in log and "STOPPING=1" in notify.lines()
    finally:
        notify.close()
        Path(notify.path).unlink(missing_ok=True)



def test_zeroconf_is_off_by_default_and_announces_when_asked(server: Server, tmp_path: Path) -> None:
    assert "announced" not in server.log_text() and "zeroconf" not in server.log_text()
    port = free_port()
    config = tmp_path / "empty.toml"
    config.write_text("")
    cmd = [*KWS_EDGE, "wyoming", "--config", str(config), "--uri", f"tcp://127.0.0.1:{port}", "--model", MODELS[0],
           "--zeroconf", "kws-test"]
    proc = _start(cmd, port, tmp_path / "zc.log", hermetic_env(tmp_path))
    try:
        log = wait_until(lambda: (t := (tmp_path / "zc.log").read_text()) and ("announced" in t or "failed" in t)
                         and t, what="the zeroconf log line")
        # Registered (this sandbox does not loop multicast back, so no browser check), or a logged failure
        # without a network: either way the server goes on serving.
        assert "announced kws-test._wyoming._tcp.local." in log or "zeroconf announcement failed" in log
        assert [m.name for m in asyncio.run(_describe(port)).wake[0].models] == ["hey_jarvis"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
