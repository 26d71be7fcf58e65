"""Logging for the service: journald with structured fields under systemd, plain stderr otherwise.

systemd sets ``JOURNAL_STREAM=<dev>:<inode>`` for the stream it connected to stdout/stderr. When it names
our stderr, records go to journald natively, so extra upper-case attributes become journal fields:
``log.info("...", extra={"KEYWORD": "hey_jarvis", "SCORE": "0.93"})`` can be queried with
``journalctl KEYWORD=hey_jarvis``. Otherwise a plain stderr handler is used (journald drops messages
silently when it is not running, so it is never used speculatively).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

IDENTIFIER = "kws-edge"
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def stderr_is_journal() -> bool:
    """True when systemd connected stderr to the journal (``JOURNAL_STREAM`` matches fd 2)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def journal_fields(record: logging.LogRecord, message: str) -> dict[str, str]:
    """The journal entry for a record: MESSAGE, PRIORITY, LOGGER, plus every upper-case attribute."""
    fields = {"MESSAGE": message, "PRIORITY": str(_PRIORITY.get(record.levelno, 6)),
              "LOGGER": record.name, "SYSLOG_IDENTIFIER": IDENTIFIER,
              "CODE_FILE": record.pathname, "CODE_LINE": str(record.lineno), "CODE_FUNC": record.funcName}
    for key, value in record.__dict__.items():
        if key.isupper() and key.replace("_", "").isalnum() and not key.startswith("_"):
            fields[key] = str(value)
    return fields


class JournalHandler(logging.Handler):
    """Sends records to journald with structured fields (needs systemd-python)."""

    def __init__(self) -> None:
        super().__init__()
        from systemd import journal  # only imported when running under systemd

        self._send: Any = journal.send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = journal_fields(record, self.format(record))
            message = fields.pop("MESSAGE")
            self._send(message, **fields)
        except Exception:  # logging must never take the service down
            self.handleError(record)


class _SyslogPrefix(logging.Formatter):
    """Prefix each line with its syslog priority (``<6>``), which journald understands on stderr."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def setup(level: str = "info", verbose: bool = False) -> logging.Handler:
    """Route the root logger to journald or stderr; returns the handler in use."""
    handler: logging.Handler
    if stderr_is_journal():
        try:
            handler = JournalHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
        except ImportError:  # no systemd-python: journald still reads "<priority>" line prefixes
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(_SyslogPrefix("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("paho").setLevel(logging.WARNING)
    return handler
