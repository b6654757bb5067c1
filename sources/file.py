"""JSON-lines file source: bounded, resumable by byte offset."""

from __future__ import annotations

import logging
import os
import time
from typing import List, Optional, Tuple

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from sentinel import shutdown
from sentinel.events import RawBatch, RawRecord

log = logging.getLogger(__name__)

# (byte offset of the next line, number of the next line)
FileState = Tuple[int, int]


class _FilePartition(StatefulSourcePartition[RawBatch, FileState]):
    def __init__(self, path: str, encoding: str, batch_size: int, max_line: int,
                 resume: Optional[FileState]) -> None:
        self._path = path
        self._encoding = encoding
        self._batch_size = batch_size
        self._max_line = max_line
        self._f = open(path, "rb")
        self._size = os.fstat(self._f.fileno()).st_size
        offset, self._line = resume if resume is not None else (0, 1)
        self._f.seek(offset)
        self._next_log = time.monotonic() + 10.0

    def next_batch(self) -> List[RawBatch]:
        if shutdown.requested():
            raise StopIteration()
        records: List[RawRecord] = []
        f, limit, path, enc = self._f, self._max_line, self._path, self._encoding
        line_no = self._line
        for _ in range(self._batch_size):
            line = f.readline(limit + 1)
            if not line:
                break
            if len(line) > limit and not line.endswith(b"\n"):
                # Oversized: keep the head for the dead letter, skip the rest of the line.
                head = line
                size = len(line)
                while True:
                    chunk = f.readline(1 << 20)
                    size += len(chunk)
                    if not chunk or chunk.endswith(b"\n"):
                        break
                records.append(RawRecord(head, (path, 0, line_no), enc, size))
                # parse_record sees a record over the limit and dead-letters it as oversized.
                line_no += 1
                continue
            line = line.rstrip(b"\r\n")
            if line.strip():
                records.append(RawRecord(line, (path, 0, line_no), enc))
            line_no += 1
        self._line = line_no
        now = time.monotonic()
        if now >= self._next_log:
            self._next_log = now + 10.0
            log.info("%s: line %d, %.0f%% read", path, line_no, 100.0 * f.tell() / max(1, self._size))
        if not records:
            if f.tell() >= self._size or not line:
                log.info("%s: end of file after %d lines", path, line_no - 1)
                raise StopIteration()
            return []
        return [RawBatch(path, records, time.time())]

    def snapshot(self) -> FileState:
        return (self._f.tell(), self._line)

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
