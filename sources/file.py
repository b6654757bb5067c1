"""JSON-lines file source: bounded, resumable by byte offset."""

from __future__ import annotations

import logging
import os
import time
from typing import Dict, List, Optional, Tuple

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from sentinel import shutdown
from sentinel.events import RawBatch, RawRecords

log = logging.getLogger(__name__)

# (byte offset of the next line, number of the next line)
FileState = Tuple[int, int]


# Bytes read from the file at a time.
CHUNK = 1 << 20


class _FilePartition(StatefulSourcePartition[RawBatch, FileState]):
    def __init__(self, path: str, encoding: str, batch_size: int, max_line: int,
                 resume: Optional[FileState]) -> None:
        self._path = path
        self._encoding = encoding
        self._batch_size = batch_size
        self._max_line = max_line
        self._f = open(path, "rb", buffering=0)
        self._size = os.fstat(self._f.fileno()).st_size
        offset, self._line = resume if resume is not None else (0, 1)
        self._f.seek(offset)
        # Read ahead: self._buf[self._i:] starts at file offset self._pos.
        self._buf = b""
        self._i = 0
        self._pos = offset
        self._eof = False
        self._next_log = time.monotonic() + 10.0

    def _more(self) -> bool:
        """Append the next chunk to the read-ahead (dropping what was consumed); False at end of file."""
        if self._eof:
            return False
        chunk = self._f.read(CHUNK)
        if not chunk:
            self._eof = True
            return False
        self._buf = self._buf[self._i:] + chunk
        self._i = 0
        return True

    def _skip_line(self) -> int:
        """Skip the rest of an oversized line (its newline too); the bytes skipped."""
        skipped = 0
        while True:
            buf, i = self._buf, self._i
            j = buf.find(b"\n", i)
            if j >= 0:
                skipped += j + 1 - i
                self._pos += j + 1 - i
                self._i = j + 1
                return skipped
            skipped += len(buf) - i
            self._pos += len(buf) - i
            self._buf, self._i = b"", 0
            if not self._more():
                return skipped

    def next_batch(self) -> List[RawBatch]:
        if shutdown.requested():
            raise StopIteration()
        values: List[bytes] = []
        offsets: List[int] = []
        sizes: Dict[int, int] = {}
        limit = self._max_line
        line_no = self._line
        n = 0
        while n < self._batch_size:
            buf, i = self._buf, self._i
            end = buf.rfind(b"\n", i)
            if end >= i:
                # The whole lines in the read-ahead, cut at once (up to the batch and the first line over the limit).
                want = self._batch_size - n
                lines = buf[i:end].split(b"\n", want)
                if len(lines) > want:
                    del lines[want:]
                if max(map(len, lines)) > limit:
                    lines = lines[:next(k for k, x in enumerate(lines) if len(x) > limit)]
                if lines:
                    size = sum(map(len, lines)) + len(lines)
                    if b"\r" in buf[i:i + size]:
                        lines = [x.rstrip(b"\r\n") for x in lines]
                    if min(lines)[:1] > b" ":  # every line starts with a byte other than blank: none is blank
                        values.extend(lines)
                        offsets.extend(range(line_no, line_no + len(lines)))
                    else:
                        for k, x in enumerate(lines):
                            if x.strip():
                                values.append(x)
                                offsets.append(line_no + k)
                    line_no += len(lines)
                    n += len(lines)
                    self._i = i + size
                    self._pos += size
                    continue
            j = buf.find(b"\n", i)
            if j < 0 and len(buf) - i <= limit and self._more():
                continue  # the line goes on in the next chunk
            if j < 0:
                j = len(buf)  # the last line, without a newline (or over the limit so far)
                if j == i:
                    break  # end of file
            n += 1
            if j - i > limit:
                # Oversized: keep the head for the dead letter, skip the rest of the line.
                head = buf[i:i + limit + 1]
                self._i = i + limit + 1
                self._pos += limit + 1
                sizes[len(values)] = limit + 1 + self._skip_line()
                values.append(head)
                offsets.append(line_no)
                line_no += 1
                # parse_record sees a record over the limit and dead-letters it as oversized.
                continue
            line = buf[i:j]
            end = j + 1 if j < len(buf) else j
            self._pos += end - i
            self._i = end
            line = line.rstrip(b"\r\n")
            if line.strip():
                values.append(line)
                offsets.append(line_no)
            line_no += 1
        self._line = line_no
        now = time.monotonic()
        if now >= self._next_log:
            self._next_log = now + 10.0
            log.info("%s: line %d, %.0f%% read", self._path, line_no, 100.0 * self._pos / max(1, self._size))
        if not values:
            if n == 0 or (self._eof and self._i >= len(self._buf)):
                log.info("%s: end of file after %d lines", self._path, line_no - 1)
                raise StopIteration()
            return []
        return [RawBatch(self._path, RawRecords(self._path, 0, values, offsets, self._encoding, sizes or None),
                         time.time())]

    def snapshot(self) -> FileState:
        return (self._pos, self._line)

    def close(self) -> None:
        self._f.close()


class FileSource(FixedPartitionedSource[RawBatch, FileState]):
    """Read a JSON-lines file; the run ends at end of file."""

    def __init__(self, path: str, encoding: str = "json", batch_size: int = 2000,
                 max_line: int = 1_000_000) -> None:
        self.path = path
        self.encoding = encoding
        self.batch_size = batch_size
        self.max_line = max_line

    def list_parts(self) -> List[str]:
        return [self.path]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[FileState]) -> _FilePartition:
        return _FilePartition(self.path, self.encoding, self.batch_size, self.max_line, resume_state)
