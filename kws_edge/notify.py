"""systemd service notifications (sd_notify): READY=1, WATCHDOG=1, STATUS=..., STOPPING=1.

A no-op when ``NOTIFY_SOCKET`` is unset (not started by systemd, or not ``Type=notify``). Messages go to the
AF_UNIX datagram socket systemd names in ``NOTIFY_SOCKET`` (``@name`` means the abstract namespace).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; every method does nothing without ``NOTIFY_SOCKET``."""

    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET", "")
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        if self._addr:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_interval_s = self._watchdog_interval()
        self._last_ping = 0.0
        self._last_status = ""

    @staticmethod
    def _watchdog_interval() -> float | None:
        """Half the watchdog timeout systemd set for this process, or None without a watchdog."""
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 1e6 / 2

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, message: str) -> bool:
        """Send one raw notification; False when disabled or the socket is gone."""
        if self._sock is None:
            return False
        with self._lock:
            try:
                self._sock.sendto(message.encode("utf-8"), self._addr)
                return True
            except OSError as exc:
                log.debug("sd_notify %r failed: %s", message, exc)
                return False

    def ready(self, status: str = "") -> None:
        self.send("READY=1\nSTATUS=" + status if status else "READY=1")

    def status(self, text: str) -> None:
        """``STATUS=`` shown by ``systemctl status``; repeated identical texts are sent once."""
        if text != self._last_status:
            self._last_status = text
            self.send("STATUS=" + text)

    def watchdog(self) -> None:
        """``WATCHDOG=1``, at most every half watchdog period; call it from the processing loop."""
        if self.watchdog_interval_s is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= min(self.watchdog_interval_s, 1.0) / 2:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def reloading(self) -> None:
        self.send("RELOADING=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
