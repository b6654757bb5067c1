"""A bounded, crash-safe, on-disk FIFO of byte records (pure standard library).

Used by sinks that must never lose an alert and never block detection while
their destination is down: the flow appends to the spool and goes on, a
sender thread reads from it, delivers, and acknowledges. Layout of the
directory::

    seg-00000000000000000000.log   append-only segments; the number is the
    seg-00000000000000001742.log   sequence number of the segment's first record
    ack                            first sequence number NOT yet acknowledged
    lock                           flock()ed while a process owns the spool

A record on disk is ``<u32 length><u32 crc32(payload)><payload>`` (little
endian). Sequence numbers are implied by the segment name and the position in
the segment, so they never need to be stored.

Guarantees:

* ``put(records)`` writes the whole batch, then ``fsync``\\ s once: when it
  returns, the batch survives a process kill or a power cut. A new segment's
  directory entry is fsynced too.
* Records are read in the order they were put, from the first one not yet
  acknowledged. ``ack(seq)`` acknowledges every record up to ``seq`` and
  persists that (atomic rename of the ``ack`` file); what was read but not
  acknowledged when the process dies is read again on the next start
  (at-least-once, in order).
* A torn last record (the process died in the middle of a ``write``) is
  detected by its length/CRC on start, logged as a warning and cut off; every
  record before it is kept.
* Segments whose records are all acknowledged are deleted (compaction). A
  segment is closed for appends once it reaches ``segment_bytes``.
* The spool holds at most ``max_bytes`` on disk: ``put`` then blocks
  (backpressure; a warning is logged) until the reader has acknowledged
  enough, rather than dropping anything. A single batch larger than the bound
  is accepted once the spool is empty, so it cannot block forever.

One process owns a spool directory at a time (``fcntl.flock`` on ``lock``;
a second owner gets :class:`SpoolLocked`). Within the process, one thread
puts and one thread reads/acks; the methods are thread-safe.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import struct
import threading
import time
import zlib
from typing import List, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")  # length, crc32
_SEGMENT = re.compile(r"^seg-(\d{20})\.log$")
_MAX_RECORD = 1 << 30  # a length above this is corruption, not a record

DEFAULT_MAX_BYTES = 256 * 1024 * 1024


def _private(path: str, flags: int) -> int:
    """``open(..., opener=_private)``: spool files hold alerts, so they are created 0600."""
    return os.open(path, flags, 0o600)


class SpoolError(RuntimeError):
    """The spool cannot be used (locked by another process, closed, full past a timeout)."""


class SpoolLocked(SpoolError):
    """Another process (or another Spool object) owns this directory."""


class SpoolFull(SpoolError):
    """``put(timeout=...)`` could not make room in time."""


def _segment_name(base: int) -> str:
    return "seg-%020d.log" % base


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class Spool:
    """A bounded on-disk FIFO; see the module docstring."""

    def __init__(
        self,
        directory: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        segment_bytes: Optional[int] = None,
        name: str = "spool",
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.directory = os.path.abspath(directory)
        self.max_bytes = int(max_bytes)
        # Small enough that compaction frees space well before the bound.
        self.segment_bytes = int(segment_bytes or max(1, min(16 * 1024 * 1024, self.max_bytes // 8)))
        self.name = name
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        self._lock_fd = os.open(os.path.join(self.directory, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SpoolLocked(
                    "%s: spool directory %s is in use by another process (or another writer in this one); "
                    "give every sink / worker its own spool_dir" % (name, self.directory)
                ) from None
            raise
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        # Segment bases, ascending; sizes in bytes, by base.
        self._bases: List[int] = []
        self._sizes: dict = {}
        self._disk_bytes = 0
        self._next_seq = 0  # sequence number the next put record gets
        self._acked = 0  # every record < _acked is acknowledged
        self._append_f = None  # handle on the last segment, opened lazily
        # Reader state: next seq to hand out, and a handle positioned on it.
        self._read_seq = 0
        self._read_base: Optional[int] = None
        self._read_f = None
        self._read_pos = 0
        self._full_since: Optional[float] = None
        self._interrupted = False
        self._recover()

    # -- start-up -------------------------------------------------------------

    def _path(self, base: int) -> str:
        return os.path.join(self.directory, _segment_name(base))

    def _recover(self) -> None:
        bases = []
        for entry in os.listdir(self.directory):
            m = _SEGMENT.match(entry)
            if m:
                bases.append(int(m.group(1)))
            elif entry.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(self.directory, entry))
                except OSError:
                    pass
        bases.sort()
        acked = self._read_ack()
        if bases and acked < bases[0]:
            # Records below the first segment were compacted away: acknowledged.
            acked = bases[0]
        # Validate the last segment (the only one a crash can have torn) and
        # count its records: that gives the next sequence number.
        next_seq = acked
        while bases:
            last = bases[-1]
            count, good_end, size, reason = self._scan(self._path(last))
            if reason is not None:
                log.warning(
                    "%s: %s: torn or corrupt record at byte %d of %d (%s): ignoring the %d bytes from there "
                    "(a write was interrupted by a crash; every record before it is kept)",
                    self.name, self._path(last), good_end, size, reason, size - good_end,
                )
                with open(self._path(last), "r+b") as f:
                    f.truncate(good_end)
                    f.flush()
                    os.fsync(f.fileno())
            if count == 0:
                os.unlink(self._path(last))
                bases.pop()
                next_seq = max(next_seq, last)
                continue
            next_seq = max(next_seq, last + count)
            break
        if not bases:
            next_seq = max(next_seq, acked)
        if acked > next_seq:
            log.warning("%s: acknowledged offset %d is past the last record %d; resetting", self.name, acked, next_seq)
            acked = next_seq
        self._bases = bases
        self._sizes = {b: os.path.getsize(self._path(b)) for b in bases}
        self._disk_bytes = sum(self._sizes.values())
        self._next_seq = next_seq
        self._acked = acked
        self._read_seq = acked
        self._compact()
        if self.pending:
            log.info("%s: %d unacknowledged records (%d bytes) in %s will be delivered again",
                     self.name, self.pending, self._disk_bytes, self.directory)

    def _read_ack(self) -> int:
        try:
            with open(os.path.join(self.directory, "ack"), "rb") as f:
                text = f.read().strip()
        except FileNotFoundError:
            return 0
        try:
            return int(text)
        except ValueError:
            log.warning("%s: unreadable ack file in %s (%r): delivering every spooled record again",
                        self.name, self.directory, text[:40])
            return 0

    @staticmethod
    def _scan(path: str) -> Tuple[int, int, int, Optional[str]]:
        """(records, end of the last good record, file size, why the rest is bad or None)."""
        count = 0
        pos = 0
        with open(path, "rb") as f:
            data = f.read()
        size = len(data)
        while pos < size:
            if size - pos < _HEADER.size:
                return count, pos, size, "incomplete header"
            length, crc = _HEADER.unpack_from(data, pos)
            if length == 0 or length > _MAX_RECORD:
                return count, pos, size, "bad length %d" % length
            end = pos + _HEADER.size + length
            if end > size:
                return count, pos, size, "record of %d bytes cut short" % length
            if zlib.crc32(data[pos + _HEADER.size:end]) != crc:
                return count, pos, size, "checksum mismatch"
            count += 1
            pos = end
        return count, pos, size, None

    # -- state ----------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records put but not yet acknowledged."""
        return self._next_seq - self._acked

    @property
    def disk_bytes(self) -> int:
        return self._disk_bytes

    @property
    def acked(self) -> int:
        """Sequence number of the first record not yet acknowledged."""
        return self._acked

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError("%s: spool %s is closed" % (self.name, self.directory))

    # -- writing --------------------------------------------------------------

    def put(self, records: Sequence[bytes], timeout: Optional[float] = None) -> None:
        """Append ``records`` durably (one fsync). Blocks while the spool is full."""
        if not records:
            return
        blob = bytearray()
        for rec in records:
            if not rec:
                raise ValueError("%s: empty records cannot be spooled" % self.name)
            rec = bytes(rec)
            blob += _HEADER.pack(len(rec), zlib.crc32(rec))
            blob += rec
        need = len(blob)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._check_open()
            warned = False
            while self._disk_bytes > 0 and self._disk_bytes + need > self.max_bytes:
                if not warned:
                    warned = True
                    if self._full_since is None:
                        self._full_since = time.monotonic()
                    log.warning(
                        "%s: spool %s is full (%d of %d bytes, %d records not yet delivered): "
                        "waiting for the destination to take them (backpressure; nothing is dropped)",
                        self.name, self.directory, self._disk_bytes, self.max_bytes, self.pending,
                    )
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise SpoolFull("%s: spool %s still full after %.1fs" % (self.name, self.directory, timeout))
                self._cond.wait(remaining if remaining is not None else 5.0)
                self._check_open()
            if self._full_since is not None:
                log.info("%s: spool has room again after %.1fs", self.name, time.monotonic() - self._full_since)
                self._full_since = None
            if not self._bases or self._sizes[self._bases[-1]] >= self.segment_bytes:
                self._new_segment()
            self._ensure_append_handle()
            base = self._bases[-1]
            f = self._append_f
            try:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            except BaseException:
                # Cut off whatever part of the batch reached the file: the
                # batch was not accepted, so it must not be read later.
                try:
                    f.truncate(self._sizes[base])
                    f.seek(self._sizes[base])
                except OSError:  # pragma: no cover - disk gone
                    pass
                raise
            self._sizes[base] += need
            self._disk_bytes += need
            self._next_seq += len(records)
            self._cond.notify_all()

    def _new_segment(self) -> None:
        if self._append_f is not None:
            self._append_f.close()
            self._append_f = None
        base = self._next_seq
        path = self._path(base)
        f = open(path, "ab", opener=_private)
        _fsync_dir(self.directory)
        self._bases.append(base)
        self._sizes[base] = 0
        self._append_f = f

    def _ensure_append_handle(self) -> None:
        if self._append_f is None and self._bases:
            self._append_f = open(self._path(self._bases[-1]), "ab", opener=_private)

    # -- reading --------------------------------------------------------------

    def read(self, max_records: int = 256, timeout: Optional[float] = 0.0,
             max_bytes: int = 8 * 1024 * 1024) -> List[Tuple[int, bytes]]:
        """The next records after the last one read: ``[(seq, payload), ...]``.

        Waits up to ``timeout`` seconds (``None``: forever) for at least one.
        Records are handed out once; :meth:`rewind` hands the unacknowledged
        ones out again.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._closed and self._read_seq >= self._next_seq:
                if self._interrupted:
                    self._interrupted = False
                    return []
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                self._cond.wait(remaining)
            self._check_open()
            out: List[Tuple[int, bytes]] = []
            size = 0
            while self._read_seq < self._next_seq and len(out) < max_records and size < max_bytes:
                rec = self._read_one()
                if rec is None:
                    continue  # skipped a corrupt tail of a segment; _read_seq moved on
                out.append((self._read_seq, rec))
                size += len(rec)
                self._read_seq += 1
            return out

    def _segment_of(self, seq: int) -> Optional[int]:
        found = None
        for b in self._bases:
            if b <= seq:
                found = b
            else:
                break
        return found

    def _read_one(self) -> Optional[bytes]:
        seq = self._read_seq
        base = self._segment_of(seq)
        if base is None:  # pragma: no cover - cannot happen while seq >= acked >= first base
            raise SpoolError("%s: record %d has no segment" % (self.name, seq))
        if self._read_base != base or self._read_f is None:
            self._open_reader(base)
            # Skip to ``seq`` within the segment.
            for _ in range(seq - base):
                if self._next_raw(base) is None:
                    return self._skip_segment(base)
        rec = self._next_raw(base)
        if rec is None:
            return self._skip_segment(base)
        return rec

    def _open_reader(self, base: int) -> None:
        if self._read_f is not None:
            self._read_f.close()
        self._read_f = open(self._path(base), "rb")
        self._read_base = base
        self._read_pos = 0

    def _next_raw(self, base: int) -> Optional[bytes]:
        f = self._read_f
        f.seek(self._read_pos)
        header = f.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return None
        length, crc = _HEADER.unpack(header)
        if length == 0 or length > _MAX_RECORD:
            return None
        data = f.read(length)
        if len(data) < length or zlib.crc32(data) != crc:
            return None
        self._read_pos += _HEADER.size + length
        return data

    def _skip_segment(self, base: int) -> None:
        """A record that should be there is unreadable (corruption): move on to the next segment."""
        i = self._bases.index(base)
        nxt = self._bases[i + 1] if i + 1 < len(self._bases) else self._next_seq
        log.error("%s: %s is corrupt at record %d: records %d..%d are lost",
                  self.name, self._path(base), self._read_seq, self._read_seq, nxt - 1)
        self._read_seq = nxt
        if self._read_f is not None:
            self._read_f.close()
        self._read_f, self._read_base = None, None
        return None

    def rewind(self) -> None:
        """Hand out the unacknowledged records again (after a failed delivery)."""
        with self._cond:
            if self._read_seq != self._acked:
                self._read_seq = self._acked
                if self._read_f is not None:
                    self._read_f.close()
                self._read_f, self._read_base = None, None

    # -- acknowledging --------------------------------------------------------

    def ack(self, seq: int) -> None:
        """Every record up to and including ``seq`` is delivered: persist, compact, make room."""
        with self._cond:
            self._check_open()
            upto = min(seq + 1, self._next_seq)
            if upto <= self._acked:
                return
            self._acked = upto
            if self._read_seq < upto:
                self._read_seq = upto
                if self._read_f is not None:
                    self._read_f.close()
                self._read_f, self._read_base = None, None
            self._write_ack(upto)
            self._compact()
            self._cond.notify_all()

    def _write_ack(self, value: int) -> None:
        path = os.path.join(self.directory, "ack")
        tmp = path + ".tmp"
        with open(tmp, "wb", opener=_private) as f:
            f.write(b"%d\n" % value)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.directory)

    def _compact(self) -> None:
        """Delete segments whose records are all acknowledged."""
        removed = False
        while self._bases:
            base = self._bases[0]
            end = self._bases[1] if len(self._bases) > 1 else self._next_seq
            if end > self._acked:
                break
            if len(self._bases) == 1 and self._append_f is not None:
                self._append_f.close()
                self._append_f = None
            if self._read_base == base and self._read_f is not None:
                self._read_f.close()
                self._read_f, self._read_base = None, None
            try:
                os.unlink(self._path(base))
            except FileNotFoundError:
                pass
            self._disk_bytes -= self._sizes.pop(base)
            self._bases.pop(0)
            removed = True
        if removed:
            _fsync_dir(self.directory)
        self._ensure_append_handle()

    # -- waiting and closing --------------------------------------------------

    def wait_empty(self, timeout: Optional[float] = None) -> bool:
        """Wait until every record is acknowledged; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._acked < self._next_seq:
                if self._closed:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def wake(self) -> None:
        """Make a :meth:`read` waiting for records return now (empty); the next one waits again."""
        with self._cond:
            self._interrupted = True
            self._cond.notify_all()

    def close(self) -> None:
        """Release the directory. Unacknowledged records stay for the next owner."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            for f in (self._append_f, self._read_f):
                if f is not None:
                    try:
                        f.close()
                    except OSError:  # pragma: no cover
                        pass
            self._append_f = self._read_f = None
            self._cond.notify_all()
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        finally:
            os.close(self._lock_fd)

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return "Spool(%r, pending=%d, bytes=%d/%d)" % (self.directory, self.pending, self._disk_bytes, self.max_bytes)
