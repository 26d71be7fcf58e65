"""``kws-edge run``: the service. Microphone (or a WAV file) and the Nano's serial line -> detections -> MQTT.

With ``[wyoming] enabled = true`` it also serves Home Assistant's Wyoming wake-word clients (their own audio,
answered over the same connection, logged but not published), from its own thread and event loop with its
own interpreters; with ``[audio] enabled = false`` it serves only them.

Threads: PortAudio's callback fills a bounded queue (drops the oldest when processing lags); the main
thread runs features, models and decisions and pings the systemd watchdog; the publisher's threads talk to
the broker; the optional serial bridge runs in its own thread. Signals: SIGHUP reloads the config and the
models without touching the MQTT connection; SIGTERM/SIGINT process what is buffered, give the broker a
moment to acknowledge queued detections, publish ``offline`` and exit 0.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from kws_edge import config as cfg
from kws_edge.cli import _parse_threshold
from kws_edge.errors import AudioError, ConfigError, KwsError
from kws_edge.logs import setup as setup_logging
from kws_edge.notify import Notifier

log = logging.getLogger("kws_edge.daemon")

DEMO_WAV = Path(__file__).resolve().parent.parent / "models" / "demo" / "demo.wav"
STATUS_EVERY_S = 5.0
SHUTDOWN_DRAIN_S = 5.0  # on SIGTERM: how long the broker gets to acknowledge queued detections
STALL_S = 5.0  # an open microphone that delivers nothing for this long is closed and reopened


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE",
                   help=f"TOML config (default: {cfg.DEFAULT_CONFIG} if it exists; see deploy/kws-edge.toml)")
    p.add_argument("--demo", action="store_true",
                   help="no config needed: the default microphone, else the demo recording, in real time; "
                        "detections printed, and published to mqtt://127.0.0.1:1883 if a broker answers")
    p.add_argument("--input", "-i", metavar="FILE.wav",
                   help="run on a WAV file instead of the microphone; exit when it is done and every "
                        "detection is acknowledged by the broker")
    p.add_argument("--realtime", action="store_true", help="with --input: feed the file at real-time speed")
    p.add_argument("--mqtt-url", metavar="URL", help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS)")
    p.add_argument("--no-mqtt", action="store_true", help="do not publish; print detections only")
    p.add_argument("--device-id", metavar="ID", help="device id in the MQTT topics (default: host name)")
    p.add_argument("--model", "-m", action="append", metavar="NAME|PATH",
                   help="model name or path; repeat for several (default: config, else every installed)")
    p.add_argument("--threshold", "-t", action="append", type=_parse_threshold, default=[],
                   metavar="KEYWORD=VALUE", help="override a keyword's threshold (0..1)")
    p.add_argument("--state-dir", metavar="DIR", help="where the detection queue and seq counter live")
    p.add_argument("--device", "-d", metavar="NAME|INDEX", help="audio input device")
    p.add_argument("--print", dest="print_detections", action="store_true",
                   help="also print every detection to stdout")
    p.add_argument("--check-config", action="store_true",
                   help="load the config and the models, print a summary and exit (0 when all is valid)")
    p.add_argument("--drain-timeout", type=float, default=0.0, metavar="SECONDS",
                   help="with --input: give up waiting for acknowledgements after this long (0: wait)")


def load_settings(args: argparse.Namespace) -> cfg.Settings:
    """Config file (explicit, or the default one when present) with the command-line overrides on top."""
    base = cfg.load(args.config) if args.config else cfg.load(cfg.DEFAULT_CONFIG, required=False)
    return cfg.with_overrides(base, mqtt_url=args.mqtt_url, no_mqtt=args.no_mqtt, models=args.model,
                              thresholds=args.threshold, device_id=args.device_id, state_dir=args.state_dir,
                              audio_device=args.device)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``kws-edge run``."""
    if args.demo:
        return _demo(args)
    settings = load_settings(args)
    if args.check_config:
        return _check_config(settings)
    setup_logging(settings.log_level, getattr(args, "verbose", False))
    return Service(settings, args).run()


def build_detector(s: cfg.Settings) -> Any:
    """Load the configured models into a Detector; thresholds for unknown keywords are config errors."""
    from kws_edge.model import load_models
    from kws_edge.pipeline import Detector

    runners = load_models(list(s.models.names) or None,
                          on_skip=lambda exc: log.error("skipping an installed model: %s", exc))
    known = sorted({kw for r in runners for kw in r.manifest.keywords})
    for kw in s.models.thresholds:
        if kw not in known:
            raise ConfigError(f"models.thresholds.{kw} (config file or --threshold): no loaded model detects "
                              f"{kw!r}; expected one of {', '.join(known)}")
    return Detector(runners, s.models.thresholds)


def _check_config(s: cfg.Settings) -> int:
    detector = build_detector(s)
    runners, thresholds = detector.runners, detector.thresholds
    m = s.mqtt
    print(f"device_id {s.device_id}; state_dir {s.state_dir}")
    print(f"mqtt {'mqtts' if m.tls else 'mqtt'}://{m.host}:{m.port} as {m.username or 'anonymous'}, "
          f"topics {m.topic_prefix}/{s.device_id}/..." if m.enabled else "mqtt disabled")
    print(f"models {', '.join(r.name for r in runners)}; thresholds {thresholds}")
    print(f"audio device {s.audio.device or 'default'}" if s.audio.enabled else "audio off",
          f"; serial {s.serial.port if s.serial.enabled else 'off'}", sep="")
    if s.wyoming.enabled:
        print(f"wyoming {s.wyoming.uri}, zeroconf {'on' if s.wyoming.zeroconf else 'off'}")
    if m.enabled:
        m.read_password()  # fails here, naming the key, when the password source is unusable (never its value)
        warning = m.password_file_warning()
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    _check_state_dir(s.state_dir)
    print("config OK")
    return 0


def _check_state_dir(state_dir: Path) -> None:
    """The queue's directory must exist and be writable, or be creatable (as run will do)."""
    d = state_dir
    while not d.exists() and d != d.parent:
        d = d.parent
    if not d.is_dir() or not os.access(d, os.W_OK | os.X_OK):
        raise ConfigError(f"service.state_dir = {str(state_dir)!r}: {d} is not a writable directory; expected "
                          "a directory the service user can write (the detection queue lives there)")


def _demo(args: argparse.Namespace) -> int:
    setup_logging("warning", getattr(args, "verbose", False))  # the printed lines are the output
    source = args.input
    if not source:
        from kws_edge.audio import list_input_devices

        try:
            has_mic = bool(list_input_devices())
        except AudioError:
            has_mic = False
        if has_mic:
            print("demo: listening on the default microphone; Ctrl-C to stop", file=sys.stderr)
        elif DEMO_WAV.exists():
            print(f"demo: no microphone found; playing the demo recording {DEMO_WAV} in real time",
                  file=sys.stderr)
            source = str(DEMO_WAV)
        else:
            raise AudioError(f"demo: no microphone found and the demo recording {DEMO_WAV} is missing; plug "
                             "in a microphone, or run 'kws-edge run --input FILE.wav --no-mqtt --print'")
    broker = not args.no_mqtt and _broker_answers("127.0.0.1", 1883)
    print("demo: MQTT broker at mqtt://127.0.0.1:1883 answers: publishing detections there" if broker else
          "demo: no MQTT broker answers at 127.0.0.1:1883: printing detections only", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="kws-edge-demo-") as state:
        settings = cfg.with_overrides(cfg.from_dict({}), models=args.model, thresholds=args.threshold,
                                      device_id=args.device_id or "demo", state_dir=args.state_dir or state,
                                      mqtt_url="mqtt://127.0.0.1:1883" if broker else None,
                                      no_mqtt=not broker, audio_device=args.device)
        demo_args = argparse.Namespace(**{**vars(args), "input": source, "realtime": True,
                                          "print_detections": True, "drain_timeout": 5.0})
        service = Service(settings, demo_args)
        rc = service.run()
        print(f"demo: {service.detections} detection(s)", file=sys.stderr)
        return rc


def _broker_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Service:
    """Wires audio, pipeline, publisher, serial bridge, signals and systemd together."""

    def __init__(self, settings: cfg.Settings, args: argparse.Namespace) -> None:
        self.settings = settings
        self.args = args
        self.notify = Notifier()
        self.stop = threading.Event()
        self.reload_requested = False
        self.detections = 0
        self.audio_state = "starting"
        self.publisher: Any = None
        self.detector: Any = None
        self.manifests: list[Any] = []
        self.wyoming: Any = None  # wyoming_server.ServerThread when [wyoming] is enabled
        self._ready = False
        self._last_status = 0.0

    # -- lifecycle ----------------------------------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        self._load_models(self.settings)
        self._start_publisher()
        bridge = self._start_bridge()
        try:
            self._start_wyoming()
            if self.args.input:
                self._run_file(Path(self.args.input))
            elif self.settings.audio.enabled:
                self._run_microphone()
            else:
                self._run_without_audio()
        finally:
            self._shutdown(bridge)
        return 0

    def _install_signals(self) -> None:
        def on_stop(signum: int, frame: Any) -> None:
            log.info("%s: shutting down", signal.Signals(signum).name)
            self.stop.set()

        def on_hup(signum: int, frame: Any) -> None:
            self.reload_requested = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def _load_models(self, settings: cfg.Settings) -> None:
        self._use_detector(build_detector(settings))

    def _use_detector(self, detector: Any) -> None:
        self.detector = detector
        self.manifests = [r.manifest for r in self.detector.runners]
        log.info("models: %s", ", ".join(f"{m.name} ({', '.join(m.keywords)})" for m in self.manifests))

    def _start_publisher(self) -> None:
        if not self.settings.mqtt.enabled:
            log.info("MQTT disabled: detections are only logged")
            return
        from kws_edge.publisher import Publisher

        s = self.settings
        warning = s.mqtt.password_file_warning()
        if warning:
            log.warning("%s", warning)
        self.publisher = Publisher(s.mqtt, s.device_id, s.state_dir, self.manifests)
        self.publisher.start()
        if self.publisher.pending:
            log.info("%d detection(s) from an earlier run still queued: delivering them first",
                     self.publisher.pending)

    def _start_bridge(self) -> threading.Thread | None:
        s = self.settings.serial
        if not s.enabled:
            return None
        try:
            from kws_edge.bridge import SerialBridge  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            log.error("serial.enabled = true but the serial bridge is not available (%s)", exc)
            return None
        expected = {m.name: m.sha256 for m in self.manifests}
        bridge = SerialBridge(s.port, s.baudrate, self._on_mcu_detection, expected)
        t = threading.Thread(target=bridge.run, args=(self.stop,), name="serial-bridge", daemon=True)
        t.start()
        log.info("serial bridge on %s at %d baud", s.port, s.baudrate)
        return t

    def _start_wyoming(self) -> None:
        w = self.settings.wyoming
        if not w.enabled:
            return
        from kws_edge.wyoming_service import ServerThread, WyomingServer, load_catalog, zeroconf_name

        # A second set of interpreters: the audio loop and the Wyoming loop never share one.
        server = WyomingServer(load_catalog(self.settings), w.uri, zeroconf_name(self.settings))
        self.wyoming = ServerThread(server)
        self.wyoming.start()
        self.wyoming.settled.wait(10.0)  # READY=1 after it listens (a busy port is retried and logged)

    def _run_without_audio(self) -> None:
        """[audio] enabled = false: the Wyoming server (and serial bridge) do the work; keep systemd informed."""
        self.audio_state = "off (audio.enabled = false)"
        self._mark_ready()
        while not self.stop.is_set():
            if self.wyoming is None or not self.wyoming.stalled(STALL_S):
                self._tick()  # no WATCHDOG=1 while the Wyoming loop is stuck: systemd restarts the service
            self.stop.wait(0.5)

    def _shutdown(self, bridge: threading.Thread | None) -> None:
        self.stop.set()
        self.notify.stopping()
        if self.wyoming is not None:
            self.wyoming.stop()
        if self.publisher is not None:
            if self.publisher.pending and self.publisher.connected:
                self.publisher.wait_idle(SHUTDOWN_DRAIN_S)
            left = self.publisher.pending
            self.publisher.stop()
            if left:
                log.warning("%d detection(s) not yet acknowledged stay queued in %s for the next start",
                            left, self.settings.state_dir)
        if bridge is not None:
            bridge.join(2.0)
        self.notify.close()
        log.info("stopped after %d detection(s)", self.detections)

    # -- audio sources ------------------------------------------------------------------------------
    def _run_file(self, path: Path) -> None:
        from kws_edge.audio import wav_chunks

        rate = self.detector.sample_rate
        chunks = wav_chunks(path, rate, max(1, rate * self.settings.audio.chunk_ms // 1000))
        first = next(chunks, None)  # the header is checked before the service says READY
        self.audio_state = f"file {path.name}"
        self._mark_ready()
        for chunk in self._file_chunks(first, chunks):
            self._tick()
            self._handle(self.detector.process(chunk))
            if self.stop.is_set():
                return
        self._handle(self.detector.flush())
        log.info("end of %s: %d detection(s)", path, self.detections)
        self._drain_after_file()

    def _file_chunks(self, first: Any, rest: Iterator[Any]) -> Iterator[Any]:
        rate = self.detector.sample_rate
        start = time.monotonic()
        if self.args.realtime:
            log.info("real-time feed started at epoch %.6f", time.time())
        end = 0
        for chunk in itertools.chain([first] if first is not None else [], rest):
            end += len(chunk)
            if self.args.realtime:  # a chunk is available once its last sample has been "captured"
                delay = start + end / rate - time.monotonic()
                if delay > 0 and self.stop.wait(delay):
                    return
            yield chunk

    def _drain_after_file(self) -> None:
        if self.publisher is None:
            return
        timeout = self.args.drain_timeout or float("inf")
        deadline = time.monotonic() + timeout
        while not self.stop.is_set() and self.publisher.pending and time.monotonic() < deadline:
            self.publisher.wait_idle(0.5)
            self._tick()

    def _run_microphone(self) -> None:
        from kws_edge.audio import Microphone

        a = self.settings.audio
        rate = self.detector.sample_rate
        delay = 1.0
        while not self.stop.is_set():
            mic = Microphone(a.device or None, rate, max(1, rate * a.chunk_ms // 1000), a.queue_chunks)
            try:
                mic.open()
            except AudioError as exc:
                self.audio_state = f"waiting for microphone ({exc})"
                log.warning("%s; retrying in %.0f s", self.audio_state, delay)
                self._mark_ready()  # models are up; say in STATUS= that audio is not, rather than time out
                self._idle(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 1.0
            try:
                self._listen(mic)
            except AudioError as exc:
                self.audio_state = f"microphone lost ({exc})"
                log.warning("%s; reopening", self.audio_state)
            finally:
                mic.close()

    def _listen(self, mic: Any) -> None:
        self.audio_state = f"listening on {mic.device_name!r}"
        log.info("%s (%d Hz)", self.audio_state, mic.native_rate)
        self._mark_ready()
        dropped = 0
        last_audio = time.monotonic()
        while not self.stop.is_set():
            chunk = mic.read(timeout=1.0)
            self._tick()
            if chunk is not None:
                last_audio = time.monotonic()
                self._handle(self.detector.process(chunk))
            elif time.monotonic() - last_audio > STALL_S:
                raise AudioError(f"microphone {mic.device_name!r} delivered no audio for {STALL_S:.0f} s")
            if mic.dropped_chunks != dropped:
                log.warning("processing fell behind: dropped %d audio chunk(s) so far", mic.dropped_chunks)
                dropped = mic.dropped_chunks
        while (chunk := mic.read(timeout=0.0)) is not None:  # SIGTERM: finish what was captured
            self._handle(self.detector.process(chunk))

    def _idle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.stop.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            self._tick()

    # -- per-iteration work -------------------------------------------------------------------------
    def _mark_ready(self) -> None:
        if not self._ready:
            self._ready = True
            self.notify.ready(self._status_text())

    def _tick(self) -> None:
        self.notify.watchdog()
        if self.reload_requested:
            self.reload_requested = False
            self._reload()
        now = time.monotonic()
        if now - self._last_status >= STATUS_EVERY_S:
            self._last_status = now
            self.notify.status(self._status_text())

    def _status_text(self) -> str:
        mqtt = "MQTT off"
        if self.publisher is not None:
            mqtt = f"MQTT {self.publisher.state}, {self.publisher.pending} queued"
            spool = self.publisher.spool
            if spool.held_in_memory:
                mqtt += f" ({spool.held_in_memory} in memory: disk refuses writes)"
            if spool.quarantined:
                mqtt += f", {spool.quarantined} quarantined"
        text = f"{self.detections} detection(s); audio: {self.audio_state}; {mqtt}"
        if self.wyoming is not None:
            w = self.wyoming.server
            state = f"{w.clients} client(s), {w.detections} detection(s)" if self.wyoming.listening.is_set() \
                else "not listening (see the log)"
            text += f"; Wyoming {w.uri}: {state}"
        return text

    def _reload(self) -> None:
        self.notify.reloading()
        log.info("SIGHUP: reloading config and models")
        try:
            new = load_settings(self.args)
            detector = build_detector(new)
            if self.detector is not None and detector.sample_rate != self.detector.sample_rate:
                raise ConfigError(f"the new models need {detector.sample_rate} Hz audio but the running ones "
                                  f"use {self.detector.sample_rate} Hz; restart the service to switch")
            catalog = None
            if self.wyoming is not None:
                from kws_edge.wyoming_service import load_catalog

                catalog = load_catalog(new)
            self._use_detector(detector)
            if catalog is not None:
                self.wyoming.server.catalog = catalog  # new audio streams use it; running ones finish on the old
        except Exception as exc:  # nothing a reload reads may stop the running service
            reason = str(exc) if isinstance(exc, KwsError) else f"{type(exc).__name__}: {exc}"
            log.error("reload failed, keeping the running config and models: %s", reason.splitlines()[0]
                      if reason else type(exc).__name__)
            self.notify.ready(self._status_text())
            return
        if new.mqtt != self.settings.mqtt or new.device_id != self.settings.device_id:
            log.warning("MQTT settings changed: they take effect at the next restart (the connection is kept)")
        if new.wyoming != self.settings.wyoming or new.audio.enabled != self.settings.audio.enabled:
            log.warning("[wyoming] or audio.enabled changed: they take effect at the next restart")
        if self.publisher is not None:
            self.publisher.update_models(self.manifests)
        self.settings = replace(new, mqtt=self.settings.mqtt, device_id=self.settings.device_id,
                                wyoming=self.settings.wyoming,
                                audio=replace(new.audio, enabled=self.settings.audio.enabled))
        self.notify.ready(self._status_text())

    def _handle(self, detections: list[Any]) -> None:
        for d in detections:
            self._emit(d.keyword, d.score, d.model, d.model_sha256, "pi", f"{d.t:8.2f}s")

    def _on_mcu_detection(self, det: Any) -> None:
        model, sha = "mcu", str(det.model_sha8)
        for m in self.manifests:
            if m.sha256.startswith(sha):
                model, sha = m.name, m.sha256
        self._emit(det.keyword, float(det.score), model, sha, "mcu", "     mcu")

    def _emit(self, keyword: str, score: float, model: str, sha: str, source: str, when: str) -> None:
        self.detections += 1
        seq = self.publisher.publish(keyword, score, model, sha, source) if self.publisher else None
        log.info("detected %s (score %.2f, model %s, source %s%s)", keyword, score, model, source,
                 f", seq {seq}" if seq is not None else "",
                 extra={"KEYWORD": keyword, "SCORE": f"{score:.4f}", "MODEL": model, "SOURCE": source})
        if self.args.print_detections:
            tail = f"  -> MQTT seq {seq}" if seq is not None else ""
            print(f"{when}  {keyword:<16} score {score:.2f}  ({model}){tail}", flush=True)
