"""The detection queue under faults: a real full tmpfs, poisoned rows, corrupt and truncated files.

Every test checks that no accepted detection is lost or reordered and that later ones still arrive.
The disk-full tests mount a real 256 KiB tmpfs (root only; skipped with the reason otherwise).
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kws_edge.config import MqttSettings
from kws_edge.publisher import Publisher
from kws_edge.spool import Spool
from tests.test_service_support import Broker, Subscriber, needs_mosquitto, wait_until


def _payload(keyword: str = "yes"):  # type: ignore[no-untyped-def]
    return lambda s: {"event_type": keyword, "keyword": keyword, "score": 0.9, "model": "tiny",
                      "model_sha256": "0" * 64, "source": "pi", "timestamp": "2026-01-01T00:00:00.000Z",
                      "seq": s}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "disk"
    d.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(d)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()}); these tests need root")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def fill(disk: Path) -> Path:
    """Write a filler file until the tmpfs says ENOSPC; return it (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        (disk / "probe").write_bytes(b"x" * 4096)
    return filler


def _seqs(spool: Spool) -> list[int]:
    return [s for s, _ in spool.peek(limit=100000)]


def test_disk_full_holds_entries_in_order_and_writes_them_when_space_returns(
        small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = small_disk / "detections.sqlite3"
    spool = Spool(path)
    assert [spool.append(_payload()) for _ in range(3)] == [1, 2, 3]
    spool.close()  # the WAL is checkpointed and removed: reopening needs new blocks
    filler = fill(small_disk)
    caplog.set_level(logging.INFO, "kws_edge.spool")
    spool = Spool(path)  # must not raise on a full disk
    seqs = [spool.append(_payload()) for _ in range(5)]
    assert seqs == [4, 5, 6, 7, 8]
    assert spool.held_in_memory >= 5
    assert "held in memory" in caplog.text and "Traceback" not in caplog.text
    assert _seqs(spool) == [1, 2, 3, 4, 5, 6, 7, 8]
    spool.remove(2)  # an acknowledgement while the disk is full
    spool.remove(5)
    assert _seqs(spool) == [1, 3, 4, 6, 7, 8]
    filler.unlink()
    spool.flush()
    assert spool.held_in_memory == 0
    assert "writable again" in caplog.text
    assert spool.append(_payload()) == 9
    spool.close()
    again = Spool(path)
    assert _seqs(again) == [1, 3, 4, 6, 7, 8, 9]
    again.close()


def test_seq_never_goes_back_after_a_crash_on_a_full_disk(small_disk: Path) -> None:
    path = small_disk / "detections.sqlite3"
    spool = Spool(path)
    spool.append(_payload())
    spool.close()
    filler = fill(small_disk)
    spool = Spool(path)
    assert [spool.append(_payload()) for _ in range(3)] == [2, 3, 4]  # held in memory only
    spool.close()  # logs that seq 2..4 are lost with this process (a crash would lose them as well)
    filler.unlink()
    again = Spool(path)
    assert again.append(_payload()) == 5  # the in-place seq mark kept the high-water mark
    again.close()


@needs_mosquitto
def test_full_disk_with_broker_down_then_up_delivers_everything_in_order(small_disk: Path,
                                                                          tmp_path: Path) -> None:
    state = small_disk / "state"
    Spool(state / "detections.sqlite3").close()
    filler = fill(small_disk)
    broker = Broker(tmp_path / "broker", persistence=True).start()  # keeps the subscriber's session
    sub = Subscriber(broker, "kws_edge/den/detection", client_id="full-disk-sub")
    broker.stop()  # the broker is down
    settings = MqttSettings(host="127.0.0.1", port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.2,
                            discovery=False)
    pub = Publisher(settings, "den", state, [])
    pub.start()
    try:
        first = [pub.publish("yes", 0.9, "tiny", "0" * 64) for _ in range(4)]
        assert pub.spool.held_in_memory == 4
        broker.start()
        later = [pub.publish("no", 0.8, "tiny", "0" * 64) for _ in range(2)]
        wait_until(lambda: len({d["seq"] for d in sub.detections()}) >= 6, what="all six detections")
        assert pub.wait_idle(10)
        got = sub.detections()
        order = list(dict.fromkeys(d["seq"] for d in got))
        assert order == first + later == [1, 2, 3, 4, 5, 6]
        assert [d["keyword"] for d in got][:6] == ["yes"] * 4 + ["no"] * 2
        filler.unlink()
        sub.close()
    finally:
        pub.stop()
        broker.stop()


def _raw_insert(path: Path, seq: int, payload: bytes | str) -> None:
    db = sqlite3.connect(str(path))
    db.execute("INSERT INTO queue (seq, payload) VALUES (?, ?)", (seq, payload))
    db.execute("UPDATE meta SET value = MAX(value, ?) WHERE key = 'last_seq'", (seq,))
    db.commit()
    db.close()


def test_unreadable_rows_are_quarantined_and_never_block_later_ones(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "detections.sqlite3"
    spool = Spool(path)
    spool.append(_payload())
    spool.close()
    _raw_insert(path, 2, "{not json")
    _raw_insert(path, 3, b"\xff\xfe not utf-8")
    _raw_insert(path, 4, "[1, 2]")
    spool = Spool(path)
    spool.append(_payload())
    assert _seqs(spool) == [1, 5]
    assert spool.quarantined == 3
    assert caplog.text.count("can never be delivered") == 3
    assert _seqs(spool) == [1, 5]  # logged once, not on every look
    assert caplog.text.count("can never be delivered") == 3
    spool.close()
    rows = sqlite3.connect(str(path)).execute("SELECT seq, reason FROM quarantine ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [2, 3, 4]


@needs_mosquitto
def test_poisoned_keywords_in_an_old_queue_are_quarantined_and_later_ones_delivered(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = state / "detections.sqlite3"
    spool = Spool(path)
    spool.append(_payload("yes"))
    for bad in ("x\x00y", "x\x1by", "a/+/#", "$SYS", "x\ny"):
        spool.append(_payload(bad))
    spool.append(_payload("no"))
    spool.close()
    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker, "#")
    settings = MqttSettings(host="127.0.0.1", port=broker.port, hermes=True, discovery=False)
    pub = Publisher(settings, "den", state, [])
    pub.start()
    try:
        assert pub.wait_idle(20)
        dets = sub.detections()
        assert [d["seq"] for d in dets] == [1, 7]
        assert [d["keyword"] for d in dets] == ["yes", "no"]
        assert pub.spool.quarantined == 5
        later = pub.publish("yes", 0.7, "tiny", "0" * 64)
        wait_until(lambda: [d["seq"] for d in sub.detections()] == [1, 7, later], what="a later detection")
        assert sorted(t for t, _, _ in sub.on("/detected")) == ["hermes/hotword/no/detected",
                                                                "hermes/hotword/yes/detected",
                                                                "hermes/hotword/yes/detected"]
        with pytest.raises(ValueError, match="refused"):
            pub.publish("a/b", 0.5, "tiny", "0" * 64)
    finally:
        pub.stop()
        sub.close()
        broker.stop()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "deleted"])
def test_corrupt_truncated_or_deleted_file_starts_fresh_and_seq_goes_on(
        tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "detections.sqlite3"
    spool = Spool(path)
    for _ in range(7):
        spool.remove(spool.append(_payload()))
    spool.append(_payload())
    spool.close()
    if damage == "garbage":
        path.write_bytes(b"this is not an sqlite file at all\n" * 200)
    elif damage == "truncated":
        path.write_bytes(b"")
    else:
        path.unlink()
    spool = Spool(path)
    assert spool.append(_payload()) == 9
    assert _seqs(spool)[-1] == 9
    spool.close()
    if damage == "garbage":
        assert "is corrupt" in caplog.text
        aside = list(tmp_path.glob("detections.sqlite3.corrupt-*"))
        assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")


def test_corruption_at_run_time_recovers_readable_rows(tmp_path: Path) -> None:
    path = tmp_path / "detections.sqlite3"
    spool = Spool(path)
    for _ in range(3):
        spool.append(_payload())
    spool.close()
    spool = Spool(path)
    with open(path, "r+b") as f:  # clobber the header while the spool is open
        f.write(b"garbage!" * 16)
    seq = spool.append(_payload())
    assert seq == 4
    assert _seqs(spool)[-1] == 4
    spool.close()
