"""A bounded on-disk queue of detections that survives crashes, full disks and corrupt files.

Storage: SQLite (``detections.sqlite3`` in the state directory, WAL, ``synchronous=FULL``). An entry is
committed before :meth:`Spool.append` returns when the disk allows it, and is deleted only by
:meth:`Spool.remove`, which the publisher calls when the broker acknowledged it (PUBACK). When the queue
holds ``max_entries``, the oldest entries are dropped and counted.

What happens when things go wrong (nothing stops the pipeline, nothing raises out of ``append``):

- **Disk full or I/O error**: the entry is held in memory (in order, bounded by ``max_entries``) and the
  publisher sends it from there; every later call and :meth:`flush` (the publisher calls it twice a
  second) retries the write. One error line says how many are held; one line says when they are written.
  Held entries are lost only if the process ends while the disk still refuses them (logged at close).
- **A row that cannot be read or sent** (not UTF-8, not a JSON object, a name that is not a valid topic
  level): moved to the ``quarantine`` table with the reason, logged once, counted in
  :attr:`Spool.quarantined`; later rows are not held up.
- **A corrupt file** (at start or at run time): the rows that can still be read are recovered, the file is
  renamed ``detections.sqlite3.corrupt-<UTC time>`` with a warning, and a fresh queue is started.

``seq`` never goes backwards. The high-water mark is kept twice: in the database (``meta.last_seq``) and
in ``detections.sqlite3.seq``, a 32-byte file created once and then overwritten in place (so writing it
needs no free disk blocks) with a CRC. The next seq is one more than the larger of the two, so it
survives a spool file that is deleted, truncated or corrupt, and a crash while the disk is full.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sqlite3
import threading
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kws_edge.errors import ConfigError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (seq INTEGER PRIMARY KEY, payload BLOB, reason TEXT NOT NULL,
                                       at TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0), ('dropped', 0);
"""
_DISK_ERRNOS = (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS)


def _kind(exc: BaseException) -> str:
    """'corrupt', 'disk' (full or I/O, worth retrying) or 'other'."""
    if isinstance(exc, OSError):
        return "disk" if exc.errno in _DISK_ERRNOS else "other"
    name = str(getattr(exc, "sqlite_errorname", ""))
    text = str(exc).lower()
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text:
        return "corrupt"
    if name.startswith(("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_BUSY")) \
            or "disk" in text or "readonly" in text:
        return "disk"
    return "other"


class SeqMark:
    """A seq high-water mark in a fixed-size file overwritten in place (no new disk blocks needed)."""

    SIZE = 32  # bytes

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def read(self) -> int:
        try:
            text = self.path.read_bytes().decode("ascii").split()
            value, crc = int(text[0]), int(text[1], 16)
        except (OSError, ValueError, IndexError, UnicodeDecodeError):
            return 0
        return value if crc == zlib.crc32(str(value).encode()) and value >= 0 else 0

    def write(self, seq: int) -> bool:
        line = f"{seq} {zlib.crc32(str(seq).encode()):08x}".ljust(self.SIZE - 1) + "\n"
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.pwrite(self._fd, line.encode("ascii"), 0)
            os.fsync(self._fd)
            return True
        except OSError as exc:
            log.debug("cannot write the seq mark %s (%s)", self.path, exc)
            return False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Spool:
    """Thread-safe persistent FIFO of JSON payloads keyed by a per-device sequence number."""

    def __init__(self, path: Path, max_entries: int = 10000) -> None:
        if max_entries < 1:
            raise ConfigError(f"spool size {max_entries}: expected at least 1 entry")
        self.path = Path(path)
        self.max_entries = max_entries
        self.on_drop: Callable[[int], None] | None = None
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._memory: dict[int, str] = {}  # seq -> payload held in memory while the disk refuses it
        self._acked: set[int] = set()  # acknowledged but not yet deleted on disk
        self._bad: dict[int, str] = {}  # seq -> reason: rows to move to the quarantine table
        self._bad_held: dict[int, tuple[str, str]] = {}  # seq -> (payload, reason): held entries to move
        self._disk_count = 0  # rows in the queue table at the last successful count
        self._extra_dropped = 0  # dropped from memory (the disk counter could not be updated)
        self._failing = ""  # the disk error being retried ("" when writes work)
        self._blocked = False  # queued rows exist that cannot be read yet: send nothing until they can
        self._on_disk_too: set[int] = set()  # held rows that are also in the (unopenable) file
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._config_error(exc) from None
        self._mark = SeqMark(self.path.with_name(self.path.name + ".seq"))
        self._open()
        self._last_seq = max(self._mark.read(), self._db_last_seq())
        self._mark.write(self._last_seq)

    # -- opening, corruption ------------------------------------------------------------------------
    def _config_error(self, exc: BaseException) -> ConfigError:
        return ConfigError(f"{self.path}: cannot open the detection queue ({exc}); expected a writable "
                           "state directory (service.state_dir / --state-dir)")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            db.text_factory = bytes  # rows are decoded here, so a bad row is quarantined, not fatal
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != b"ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({check[:80]!r})")
        except BaseException:
            db.close()
            raise
        return db

    def _open(self) -> None:
        salvaged: list[tuple[int, bytes]] = []
        for attempt in (1, 2):
            try:
                self._db = self._connect()
                break
            except (sqlite3.Error, OSError) as exc:
                kind = _kind(exc)
                if kind == "corrupt" and attempt == 1:
                    salvaged = self._set_aside(exc)
                    continue
                if kind == "disk":
                    self._db = None
                    self._fail(f"cannot open it ({exc})")
                    self._load_read_only()
                    break
                raise self._config_error(exc) from None
        for seq, payload in salvaged:
            self._memory[seq] = payload.decode("utf-8", "replace")
        self._flush()
        self._count()

    def _load_read_only(self) -> None:
        """The disk is too full to open the queue for writing: hold its rows in memory, in order.

        A non-empty WAL (left by a crash) cannot be read without writing; then nothing is sent until the
        queue opens, so queued detections are never overtaken by newer ones.
        """
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            self._blocked = True
            log.error("detection queue %s: cannot read it on a full disk (its WAL holds data); new "
                      "detections are held in memory and nothing is sent until the disk has room", self.path)
            return
        try:
            ro = sqlite3.connect(f"file:{self.path}?immutable=1", uri=True)
            try:
                ro.text_factory = bytes
                last = ro.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
                rows = ro.execute("SELECT seq, payload FROM queue ORDER BY seq").fetchall()
            finally:
                ro.close()
        except sqlite3.Error as exc:
            self._blocked = True
            log.error("detection queue %s: cannot read it (%s); nothing is sent until it opens", self.path, exc)
            return
        if last and int(last[0]) > self._mark.read():
            self._mark.write(int(last[0]))
        for seq, payload in rows:
            self._memory[int(seq)] = payload.decode("utf-8", "replace") if isinstance(payload, bytes) \
                else str(payload)
            self._on_disk_too.add(int(seq))

    def _set_aside(self, exc: BaseException) -> list[tuple[int, bytes]]:
        """Recover readable rows of a corrupt file, rename it (and its WAL) aside; return the rows."""
        rows: list[tuple[int, bytes]] = []
        last = 0
        try:
            old = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            old.text_factory = bytes
            with contextlib.suppress(sqlite3.Error, TypeError, ValueError):
                last = int(old.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0])
            try:
                for seq, payload in old.execute("SELECT seq, payload FROM queue ORDER BY seq"):
                    if isinstance(seq, int) and isinstance(payload, bytes):
                        rows.append((seq, payload))
            except sqlite3.Error:
                pass
            old.close()
        except sqlite3.Error:
            pass
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    os.replace(side, aside.with_name(aside.name + suffix))
        except OSError as err:
            raise self._config_error(err) from None
        if last > self._mark.read():
            self._mark.write(last)
        log.warning("detection queue %s is corrupt (%s): moved it aside to %s, recovered %d queued "
                    "detection(s) from it, starting a fresh queue (seq continues after %d)", self.path, exc,
                    aside.name, len(rows), max(last, self._mark.read()))
        return rows

    def _recover_at_run_time(self, exc: BaseException) -> None:
        if self._db is not None:
            self._db.close()
        self._db = None
        salvaged = self._set_aside(exc)
        for seq, payload in salvaged:
            text = payload.decode("utf-8", "replace")
            if seq in self._bad:
                self._bad_held[seq] = (text, self._bad[seq])
            elif seq not in self._acked:
                self._memory.setdefault(seq, text)
        self._memory = dict(sorted(self._memory.items()))
        self._acked.clear()
        self._bad.clear()
        self._disk_count = 0

    # -- write path ---------------------------------------------------------------------------------
    def _db_last_seq(self) -> int:
        if self._db is None:
            return 0
        try:
            return int(self._db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0])
        except (sqlite3.Error, TypeError, ValueError):
            return 0

    def _fail(self, what: str) -> None:
        if not self._failing:
            log.error("detection queue %s: %s; %d detection(s) held in memory and retried until the disk "
                      "takes them (they are lost only if the service stops before then)", self.path, what,
                      len(self._memory))
        self._failing = what

    def _rollback(self) -> None:
        db = self._db
        if db is not None and db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")

    def _flush(self) -> int:
        """Write held entries and pending deletions; return the number of entries dropped for room."""
        if not (self._memory or self._acked or self._bad or self._bad_held or self._failing):
            return 0
        for attempt in (1, 2):
            try:
                if self._db is None:
                    self._db = self._connect()
                return self._write()
            except (sqlite3.Error, OSError) as exc:
                self._rollback()
                kind = _kind(exc)
                if kind == "corrupt" and attempt == 1:
                    try:
                        self._recover_at_run_time(exc)
                    except ConfigError as err:
                        self._fail(str(err))
                        break
                    continue
                self._fail(f"cannot write ({exc})")
                break
        return self._trim_memory()

    def _write(self) -> int:
        assert self._db is not None
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        for seq in sorted(self._acked):
            db.execute("DELETE FROM queue WHERE seq = ?", (seq,))
        at = datetime.now(UTC).isoformat(timespec="seconds")
        for seq, reason in sorted(self._bad.items()):
            db.execute("INSERT OR REPLACE INTO quarantine (seq, payload, reason, at) SELECT seq, payload, ?, ? "
                       "FROM queue WHERE seq = ?", (reason, at, seq))
            db.execute("DELETE FROM queue WHERE seq = ?", (seq,))
        for seq, (payload, reason) in sorted(self._bad_held.items()):
            db.execute("INSERT OR REPLACE INTO quarantine (seq, payload, reason, at) VALUES (?, ?, ?, ?)",
                       (seq, payload, reason, at))
        for seq, payload in self._memory.items():
            db.execute("INSERT OR REPLACE INTO queue (seq, payload) VALUES (?, ?)", (seq, payload))
        db.execute("UPDATE meta SET value = MAX(value, ?) WHERE key = 'last_seq'", (self._last_seq,))
        dropped = self._trim()
        db.execute("COMMIT")
        written = len(self._memory)
        self._memory.clear()
        self._acked.clear()
        self._bad.clear()
        self._bad_held.clear()
        self._on_disk_too.clear()
        self._blocked = False
        if self._failing:
            log.warning("detection queue %s is writable again: %d held detection(s) written", self.path,
                        written)
            self._failing = ""
        self._count()
        return dropped

    def _trim(self) -> int:
        assert self._db is not None
        count = self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
        excess = count - self.max_entries
        if excess <= 0:
            return 0
        self._db.execute("DELETE FROM queue WHERE seq IN (SELECT seq FROM queue ORDER BY seq LIMIT ?)",
                         (excess,))
        self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (excess,))
        return int(excess)

    def _trim_memory(self) -> int:
        excess = len(self._memory) + max(0, self._disk_count - len(self._acked)) - self.max_entries
        excess = min(excess, len(self._memory))
        for seq in list(self._memory)[:max(0, excess)]:
            del self._memory[seq]
        self._extra_dropped += max(0, excess)
        return max(0, excess)

    def _count(self) -> None:
        if self._db is None:
            self._disk_count = 0
            return
        with contextlib.suppress(sqlite3.Error):
            self._disk_count = int(self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0])

    # -- public API ---------------------------------------------------------------------------------
    def append(self, make_payload: Callable[[int], dict[str, Any]]) -> int:
        """Allocate the next seq, store ``make_payload(seq)`` (on disk when it can), return the seq."""
        with self._lock:
            seq = self._last_seq + 1
            payload = json.dumps(make_payload(seq), separators=(",", ":"))
            self._last_seq = seq
            self._memory[seq] = payload
            dropped = self._flush()
            self._mark.write(seq)  # before the entry can be sent (the lock is held), after its commit
            if self._failing:
                log.warning("detection seq %d held in memory (%d held; disk: %s)", seq, len(self._memory),
                            self._failing)
        if dropped:
            log.warning("detection queue full (%d entries): dropped the %d oldest undelivered detection(s)",
                        self.max_entries, dropped)
            if self.on_drop:
                self.on_drop(dropped)
        return seq

    def flush(self) -> None:
        """Retry writes the disk refused earlier (cheap when there are none)."""
        with self._lock:
            self._flush()

    def peek(self, after: int = 0, limit: int = 100) -> list[tuple[int, dict[str, Any]]]:
        """Up to ``limit`` entries with seq > ``after``, oldest first (they stay in the queue).

        Rows that cannot be decoded are quarantined on the way and never returned.
        """
        with self._lock:
            rows: list[tuple[int, Any]] = []
            if self._blocked:
                return []
            if self._db is not None:
                try:
                    skip = len(self._acked) + len(self._bad)
                    rows = self._db.execute("SELECT seq, payload FROM queue WHERE seq > ? ORDER BY seq "
                                            "LIMIT ?", (after, limit + skip)).fetchall()
                except sqlite3.Error as exc:
                    if _kind(exc) == "corrupt":
                        self._flush_after_corruption(exc)
                    rows = []
            out: list[tuple[int, dict[str, Any]]] = []
            for seq, raw in rows:
                if seq in self._acked or seq in self._bad:
                    continue
                payload = self._decode(seq, raw)
                if payload is not None:
                    out.append((int(seq), payload))
            for seq, text in list(self._memory.items()):
                if seq > after and (payload := self._decode(seq, text)) is not None:
                    out.append((seq, payload))
            out.sort(key=lambda e: e[0])
            return out[:limit]

    def _flush_after_corruption(self, exc: BaseException) -> None:
        self._rollback()
        try:
            self._recover_at_run_time(exc)
        except ConfigError as err:
            self._fail(str(err))
            return
        self._flush()

    def _decode(self, seq: int, raw: Any) -> dict[str, Any] | None:
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            payload = json.loads(text)
            if not isinstance(payload, dict):
                raise ValueError(f"a JSON {type(payload).__name__}, not an object")
            return payload
        except (ValueError, RecursionError) as exc:
            self.quarantine(seq, f"unreadable row ({exc})")
            return None

    def quarantine(self, seq: int, reason: str) -> None:
        """Move an entry that can never be delivered out of the queue, with the reason (logged once)."""
        with self._lock:
            log.error("detection queue: seq %d can never be delivered (%s); moved to the quarantine table "
                      "of %s", seq, reason, self.path)
            held = self._memory.pop(seq, None)
            if held is not None:
                self._bad_held[seq] = (held, reason[:500])
            else:
                self._bad[seq] = reason[:500]
            self._flush()

    def remove(self, seq: int) -> None:
        """Forget an entry (acknowledged by the broker). Removing an absent seq is a no-op."""
        with self._lock:
            if self._memory.pop(seq, None) is not None and seq not in self._on_disk_too:
                return
            self._acked.add(seq)
            self._flush()

    def __len__(self) -> int:
        with self._lock:
            self._count()
            return max(0, self._disk_count - len(self._acked) - len(self._bad)) + len(self._memory)

    @property
    def held_in_memory(self) -> int:
        """Entries the disk has refused so far (0 when every entry is on disk)."""
        with self._lock:
            return len(self._memory)

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._last_seq

    @property
    def dropped(self) -> int:
        """Entries dropped because the queue was full, over the spool's whole life."""
        with self._lock:
            on_disk = 0
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error, TypeError):
                    on_disk = int(self._db.execute("SELECT value FROM meta WHERE key = 'dropped'")
                                  .fetchone()[0])
            return on_disk + self._extra_dropped

    @property
    def quarantined(self) -> int:
        """Entries moved to quarantine over the spool file's life (including moves not yet on disk)."""
        with self._lock:
            count = len(self._bad) + len(self._bad_held)
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    count += int(self._db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0])
            return count

    def close(self) -> None:
        with self._lock:
            self._flush()
            if self._memory:
                seqs = sorted(self._memory)
                log.error("detection queue %s: the disk still refuses %d detection(s) (seq %d..%d); they are "
                          "lost with this process", self.path, len(seqs), seqs[0], seqs[-1])
            if self._db is not None:
                self._db.close()
                self._db = None
            self._mark.close()
