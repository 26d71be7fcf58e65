"""A bounded on-disk queue of detections that survives crashes (SQLite in the state directory).

An entry is committed to disk before :meth:`Spool.append` returns and is deleted only by
:meth:`Spool.remove`, which the publisher calls when the broker acknowledged it (PUBACK). The sequence
number is allocated in the same transaction, so it stays monotonic across restarts and SIGKILL. When the
queue holds ``max_entries``, the oldest entries are dropped and counted.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kws_edge.errors import ConfigError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0), ('dropped', 0);
"""


class Spool:
    """Thread-safe persistent FIFO of JSON payloads keyed by a per-device sequence number."""

    def __init__(self, path: Path, max_entries: int = 10000) -> None:
        if max_entries < 1:
            raise ConfigError(f"spool size {max_entries}: expected at least 1 entry")
        self.path = Path(path)
        self.max_entries = max_entries
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"{self.path}: cannot open the detection queue ({exc}); expected a writable "
                              "state directory (service.state_dir / --state-dir)") from None
        self.on_drop: Callable[[int], None] | None = None

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0])

    def append(self, make_payload: Callable[[int], dict[str, Any]]) -> int:
        """Allocate the next seq, store ``make_payload(seq)`` durably, return the seq."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._meta("last_seq") + 1
                payload = json.dumps(make_payload(seq), separators=(",", ":"))
                self._db.execute("INSERT INTO queue (seq, payload) VALUES (?, ?)", (seq, payload))
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (seq,))
                dropped = self._trim()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if dropped:
            log.warning("detection queue full (%d entries): dropped the %d oldest undelivered detection(s)",
                        self.max_entries, dropped)
            if self.on_drop:
                self.on_drop(dropped)
        return seq

    def _trim(self) -> int:
        count = self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
        excess = count - self.max_entries
        if excess <= 0:
            return 0
        self._db.execute("DELETE FROM queue WHERE seq IN (SELECT seq FROM queue ORDER BY seq LIMIT ?)",
                         (excess,))
        self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (excess,))
        return int(excess)

    def peek(self, after: int = 0, limit: int = 100) -> list[tuple[int, dict[str, Any]]]:
        """Up to ``limit`` entries with seq > ``after``, oldest first (they stay in the queue)."""
        with self._lock:
            rows = self._db.execute("SELECT seq, payload FROM queue WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (after, limit)).fetchall()
        return [(int(seq), json.loads(payload)) for seq, payload in rows]

    def remove(self, seq: int) -> None:
        """Forget an entry (acknowledged by the broker). Removing an absent seq is a no-op."""
        with self._lock:
            self._db.execute("DELETE FROM queue WHERE seq = ?", (seq,))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0])

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._meta("last_seq")

    @property
    def dropped(self) -> int:
        """Entries dropped because the queue was full, over the spool's whole life."""
        with self._lock:
            return self._meta("dropped")

    def close(self) -> None:
        with self._lock:
            self._db.close()
