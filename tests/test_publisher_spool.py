"""The on-disk detection queue: order, bounds, seq across restarts, and survival of SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kws_edge.errors import ConfigError
from kws_edge.spool import Spool


def _payload(seq: int) -> dict[str, object]:
    return {"keyword": "yes", "seq": seq}


def test_fifo_and_remove(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "q.sqlite3", max_entries=10)
    seqs = [spool.append(_payload) for _ in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert [s for s, _ in spool.peek()] == seqs
    assert [p["seq"] for _, p in spool.peek(after=2, limit=2)] == [3, 4]
    spool.remove(3)
    spool.remove(3)  # twice is harmless (a duplicate PUBACK)
    assert [s for s, _ in spool.peek()] == [1, 2, 4, 5]
    assert len(spool) == 4
    spool.close()


def test_seq_survives_restart_even_when_empty(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "q.sqlite3")
    for _ in range(3):
        spool.remove(spool.append(_payload))
    spool.close()
    again = Spool(tmp_path / "q.sqlite3")
    assert len(again) == 0
    assert again.append(_payload) == 4
    again.close()


def test_full_queue_drops_oldest_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path / "q.sqlite3", max_entries=3)
    dropped: list[int] = []
    spool.on_drop = dropped.append
    for _ in range(5):
        spool.append(_payload)
    assert [s for s, _ in spool.peek()] == [3, 4, 5]
    assert spool.dropped == 2 and dropped == [1, 1]
    assert "dropped the 1 oldest" in caplog.text
    spool.close()


def test_bad_size_and_unwritable_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        Spool(tmp_path / "q.sqlite3", max_entries=0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="writable state directory"):
        Spool(blocker / "sub" / "q.sqlite3")


WRITER = """
import sys
from kws_edge.spool import Spool
spool = Spool(sys.argv[1])
for i in range(100000):
    seq = spool.append(lambda s: {"seq": s})
    print(seq, flush=True)
"""


def test_entries_survive_sigkill_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert proc.stdout is not None
    reported = [int(proc.stdout.readline()) for _ in range(50)]  # each seq printed after its commit
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    spool = Spool(path)
    seqs = [s for s, _ in spool.peek(limit=1_000_000)]
    assert seqs[:50] == reported == list(range(1, 51))
    assert seqs == list(range(1, len(seqs) + 1))  # no gaps, no torn entry
    assert spool.append(_payload) == max(seqs) + 1
    spool.close()
