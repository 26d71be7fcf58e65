"""``kws-edge wyoming`` and the service's Wyoming thread: the shell around :mod:`kws_edge.wyoming_server`.

Stand-alone (``kws-edge wyoming``): serve until SIGTERM/SIGINT, SIGHUP reloads the models, sd_notify READY,
WATCHDOG and STATUS from the event loop. Inside ``kws-edge run`` (``[wyoming] enabled = true``): a
:class:`ServerThread` with its own event loop and its own interpreters; a busy port is logged and retried.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import threading
import time

from kws_edge import config as cfg
from kws_edge.errors import ConfigError
from kws_edge.wyoming_server import Catalog, WyomingServer

log = logging.getLogger("kws_edge.wyoming")


class ServerThread:
    """A :class:`WyomingServer` on its own event loop in a thread, for ``kws-edge run``; binding is retried."""

    def __init__(self, server: WyomingServer, retry_max_s: float = 30.0) -> None:
        self.server = server
        self.listening = threading.Event()
        self.settled = threading.Event()  # set once listening or after the first failure to listen
        self._retry_max_s = retry_max_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wyoming", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stalled(self, max_age_s: float) -> bool:
        """True when the loop is listening but has not refreshed its heartbeat for ``max_age_s``."""
        return self.listening.is_set() and time.monotonic() - self.server.heartbeat > max_age_s

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        if self._stopping.is_set():
            return
        delay = 1.0
        while not self._stop.is_set():
            try:
                await self.server.serve(self._stop, on_ready=self._on_ready)
            except Exception as exc:  # the service keeps its other work; listening is retried
                self.settled.set()
                log.error("%s; retrying in %.0f s", exc, delay)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, self._retry_max_s)
        self.listening.clear()

    def _on_ready(self) -> None:
        self.listening.set()
        self.settled.set()


def load_catalog(settings: cfg.Settings) -> Catalog:
    """Load the configured models (a fresh set of interpreters, owned by the Wyoming event loop)."""
    from kws_edge.daemon import build_detector

    detector = build_detector(settings)
    return Catalog(tuple(detector.runners), dict(settings.models.thresholds))


def zeroconf_name(settings: cfg.Settings, override: str | None = None) -> str | None:
    """The mDNS instance name, or None when the announcement is off (``override`` from --zeroconf)."""
    w = settings.wyoming
    if override is None and not w.zeroconf:
        return None
    return override or w.zeroconf_name or f"kws-edge-{settings.device_id}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from kws_edge.cli import _parse_threshold

    p.description = (
        "Serve the loaded models as a Wyoming wake-word service for Home Assistant Assist.\n"
        "In Home Assistant: Settings -> Devices & services -> Add integration -> Wyoming Protocol,\n"
        "host = this machine, port = 10400. The service serves it too: [wyoming] enabled = true.")
    p.add_argument("--uri", metavar="URI",
                   help="tcp://HOST:PORT or unix:///PATH (default: [wyoming] uri of the config, "
                        "else tcp://0.0.0.0:10400)")
    p.add_argument("--config", "-c", metavar="FILE",
                   help=f"TOML config for models, thresholds and [wyoming] (default: {cfg.DEFAULT_CONFIG} if it "
                        "exists)")
    p.add_argument("--model", "-m", action="append", metavar="NAME|PATH",
                   help="model name or path; repeat for several (default: config, else every installed)")
    p.add_argument("--threshold", "-t", action="append", type=_parse_threshold, default=[],
                   metavar="KEYWORD=VALUE", help="override a keyword's threshold (0..1)")
    p.add_argument("--zeroconf", nargs="?", const="", default=None, metavar="NAME",
                   help="announce the service over mDNS as NAME._wyoming._tcp (default name: "
                        "kws-edge-<device_id>); off unless given here or in the config")


def main(args: argparse.Namespace) -> int:
    """Entry point of ``kws-edge wyoming``: serve until SIGTERM/SIGINT; SIGHUP reloads the models."""
    from kws_edge.logs import setup as setup_logging
    from kws_edge.notify import Notifier

    def settings_from_args() -> cfg.Settings:
        base = cfg.load(args.config) if args.config else cfg.load(cfg.DEFAULT_CONFIG, required=False)
        return cfg.with_overrides(base, models=args.model, thresholds=args.threshold)

    settings = settings_from_args()
    uri = args.uri or settings.wyoming.uri
    scheme, _, _ = cfg.parse_wyoming_uri(uri, "--uri")
    name = zeroconf_name(settings, args.zeroconf)
    if name is not None and scheme != "tcp":
        raise ConfigError(f"--zeroconf needs a tcp:// uri, got {uri!r}")
    setup_logging(settings.log_level, getattr(args, "verbose", False))
    server = WyomingServer(load_catalog(settings), uri, name)
    notify = Notifier()

    async def serve() -> None:
        loop, stop = asyncio.get_running_loop(), asyncio.Event()

        def reload() -> None:
            notify.reloading()
            try:
                server.catalog = load_catalog(settings_from_args())
                log.info("SIGHUP: models reloaded; new audio streams use them")
            except Exception as exc:  # a bad reload keeps the running models
                log.error("reload failed, keeping the running models: %s", str(exc).splitlines()[0] if
                          str(exc) else type(exc).__name__)
            notify.ready()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload)

        def tick() -> None:
            notify.watchdog()
            notify.status(f"Wyoming on {uri}: {server.clients} client(s), {server.detections} detection(s)")

        await server.serve(stop, on_ready=lambda: notify.ready(), tick=tick)

    try:
        asyncio.run(serve())
    finally:
        notify.stopping()
        notify.close()
    log.info("stopped after %d detection(s)", server.detections)
    return 0
