"""The on-disk spool (sinks/spool.py): order, crash safety, torn records, compaction, bound."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import pytest

from sinks.spool import Spool, SpoolFull, SpoolLocked

ROOT = Path(__file__).resolve().parents[1]


def rec(i: int, size: int = 20) -> bytes:
    return (b"record-%06d-" % i).ljust(size, b"x")


def read_all(spool: Spool, timeout: float = 0.0) -> List[tuple]:
    out = []
    while True:
        batch = spool.read(1000, timeout=timeout)
        if not batch:
            return out
        out.extend(batch)


def segments(path: Path) -> List[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith("seg-"))


def test_records_come_back_in_order_once_and_again_after_rewind(tmp_path: Path) -> None:
    with Spool(str(tmp_path)) as spool:
        spool.put([rec(0), rec(1), rec(2)])
        spool.put([rec(3)])
        spool.put([rec(4), rec(5)])
        assert spool.pending == 6
        got = spool.read(4)
        assert got == [(i, rec(i)) for i in range(4)]
        assert spool.read(100) == [(4, rec(4)), (5, rec(5))]
        assert spool.read(100) == []  # handed out once
        spool.ack(1)
        assert spool.pending == 4
        spool.rewind()  # delivery failed: hand out the unacknowledged ones again
        assert [s for s, _ in read_all(spool)] == [2, 3, 4, 5]
        spool.ack(5)
        assert spool.pending == 0 and spool.wait_empty(0)


def test_read_waits_for_a_put_from_another_thread(tmp_path: Path) -> None:
    with Spool(str(tmp_path)) as spool:
        timer = threading.Timer(0.2, lambda: spool.put([rec(7)]))
        timer.start()
        start = time.monotonic()
        assert spool.read(10, timeout=5) == [(0, rec(7))]
        assert 0.1 < time.monotonic() - start < 4
        timer.join()
        assert spool.read(10, timeout=0.05) == []
        # wake() ends a wait at once (a sender being stopped), without losing anything.
        timer = threading.Timer(0.2, spool.wake)
        timer.start()
        start = time.monotonic()
        assert spool.read(10, timeout=10) == []
        assert time.monotonic() - start < 5
        timer.join()
        spool.put([rec(8)])
        assert spool.read(10, timeout=1) == [(1, rec(8))]


def test_reopen_resumes_after_the_acknowledged_offset(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), segment_bytes=100)
    spool.put([rec(i) for i in range(5)])
    spool.put([rec(i) for i in range(5, 10)])
    read_all(spool)
    spool.ack(6)
    spool.close()
    with Spool(str(tmp_path), segment_bytes=100) as again:
        assert again.pending == 3
        assert read_all(again) == [(i, rec(i)) for i in range(7, 10)]
        again.put([rec(10)])  # numbering goes on
        assert again.read(10) == [(10, rec(10))]


def test_one_owner_per_directory(tmp_path: Path) -> None:
    with Spool(str(tmp_path)):
        with pytest.raises(SpoolLocked, match="in use"):
            Spool(str(tmp_path))
    Spool(str(tmp_path)).close()  # free again after close


_KILLED_WRITER = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
from sinks.spool import Spool
spool = Spool(sys.argv[1], segment_bytes=200)
for b in range(6):
    spool.put([b"batch-%d-rec-%d" % (b, i) for i in range(5)])
got = []
while len(got) < 12:
    got += spool.read(100)
spool.ack(11)          # the sender confirmed the first 12 records
spool.read(100)        # read more, not confirmed yet
print("ready", flush=True)
time.sleep(60)         # killed here, without close()
"""


def test_restart_after_kill_9_delivers_every_unacknowledged_record_in_order(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path), str(ROOT)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    expected = [b"batch-%d-rec-%d" % (b, i) for b in range(6) for i in range(5)]
    with Spool(str(tmp_path), segment_bytes=200) as spool:  # the lock died with the process
        assert spool.pending == 30 - 12
        got = read_all(spool)
        assert [r for _, r in got] == expected[12:]
        assert [s for s, _ in got] == list(range(12, 30))


def test_torn_last_record_is_ignored_with_a_warning(tmp_path: Path, caplog) -> None:
    spool = Spool(str(tmp_path))
    spool.put([rec(0), rec(1)])
    spool.put([rec(2)])
    spool.close()
    (seg,) = segments(tmp_path)
    path = tmp_path / seg
    good_size = path.stat().st_size
    # A crash in the middle of writing record 3: header says 100 bytes, 7 made it.
    with open(path, "ab") as f:
        f.write((100).to_bytes(4, "little") + (12345).to_bytes(4, "little") + b"partial")
    with caplog.at_level(logging.WARNING, logger="sinks.spool"):
        spool = Spool(str(tmp_path))
    try:
        assert any("torn or corrupt record" in r.getMessage() for r in caplog.records), caplog.text
        assert path.stat().st_size == good_size  # cut off, so appends go after the good records
        assert spool.pending == 3
        spool.put([rec(3)])
        assert read_all(spool) == [(i, rec(i)) for i in range(4)]
    finally:
        spool.close()


def test_last_record_with_bad_checksum_or_half_header_is_ignored(tmp_path: Path, caplog) -> None:
    spool = Spool(str(tmp_path))
    spool.put([rec(0)])
    spool.put([rec(1)])
    spool.close()
    (seg,) = segments(tmp_path)
    path = tmp_path / seg
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip a bit of record 1's payload
    path.write_bytes(bytes(data) + b"\x05\x00")  # and a torn header after it
    with caplog.at_level(logging.WARNING, logger="sinks.spool"):
        with Spool(str(tmp_path)) as again:
            assert read_all(again) == [(0, rec(0))]
    assert "checksum mismatch" in caplog.text


def test_compaction_deletes_fully_acknowledged_segments(tmp_path: Path) -> None:
    with Spool(str(tmp_path), segment_bytes=50) as spool:
        for b in range(5):  # two 28-byte records per batch: 56 bytes, one segment each
            spool.put([rec(2 * b), rec(2 * b + 1)])
        assert len(segments(tmp_path)) == 5
        total = spool.disk_bytes
        assert total == sum((tmp_path / s).stat().st_size for s in segments(tmp_path))
        read_all(spool)
        spool.ack(4)  # records 0-4: segments 0 and 1 complete, segment 2 half
        assert segments(tmp_path) == ["seg-%020d.log" % s for s in (4, 6, 8)]
        assert spool.disk_bytes == total - 2 * 56
        spool.ack(9)
        assert segments(tmp_path) == []
        assert spool.disk_bytes == 0 and spool.pending == 0
        spool.put([rec(10)])
        assert segments(tmp_path) == ["seg-%020d.log" % 10]
        assert spool.read(10) == [(10, rec(10))]
    with Spool(str(tmp_path), segment_bytes=50) as again:
        assert again.pending == 1  # record 10, numbering kept across the empty spool
        assert again.read(10) == [(10, rec(10))]


def test_full_spool_blocks_put_until_records_are_acknowledged(tmp_path: Path, caplog) -> None:
    record_size = 8 + 100
    with Spool(str(tmp_path), max_bytes=10 * record_size, segment_bytes=2 * record_size) as spool:
        for b in range(5):  # one segment of two records per batch
            spool.put([rec(2 * b, 100), rec(2 * b + 1, 100)])
        assert spool.disk_bytes == 10 * record_size
        with caplog.at_level(logging.WARNING, logger="sinks.spool"):
            start = time.monotonic()
            with pytest.raises(SpoolFull):
                spool.put([rec(10, 100)], timeout=0.3)
            assert time.monotonic() - start >= 0.3
        assert "is full" in caplog.text and "nothing is dropped" in caplog.text
        assert spool.pending == 10  # the refused batch was not written

        # A blocked put goes through once the reader acknowledges a segment.
        done = threading.Event()

        def producer() -> None:
            spool.put([rec(10, 100)])
            done.set()

        t = threading.Thread(target=producer)
        t.start()
        assert not done.wait(0.3)  # still blocked: backpressure, not a drop
        batch = spool.read(2)
        spool.ack(batch[-1][0])  # frees the first segment (2 records)
        assert done.wait(5)
        t.join()
        assert spool.disk_bytes <= spool.max_bytes
        assert [s for s, _ in read_all(spool)] == list(range(2, 11))


def test_a_batch_larger_than_the_bound_goes_into_an_empty_spool(tmp_path: Path) -> None:
    with Spool(str(tmp_path), max_bytes=100) as spool:
        spool.put([rec(i, 50) for i in range(4)])  # 232 bytes > 100, but the spool is empty
        assert spool.pending == 4
        with pytest.raises(SpoolFull):
            spool.put([rec(4)], timeout=0.1)
        read_all(spool)
        spool.ack(3)
        spool.put([rec(4)], timeout=0.1)


def test_empty_records_are_refused(tmp_path: Path) -> None:
    with Spool(str(tmp_path)) as spool:
        with pytest.raises(ValueError):
            spool.put([b"ok", b""])
        assert spool.pending == 0
