"""Alerts as JSON lines: to a file (appended, flushed per batch) or to stdout.

Workers of one process share one handle per path (under a lock), so lines
from several workers never interleave.

On stdout, a terminal gets one readable line per alert (:func:`text_line`),
a pipe or a file the JSON lines; :func:`set_stdout_format` (``sentinel run
--format text|json``) overrides either.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Dict, List, Optional, Tuple

from sinks.base import Alert, Writer

_files: Dict[str, Tuple[object, threading.Lock, List[int]]] = {}
_files_lock = threading.Lock()

FILE_MODE = 0o640  # files holding alerts or telemetry: never readable by others


def open_private(path: str, flags: int = os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode: int = FILE_MODE) -> int:
    """``os.open`` with ``mode`` for a new file; an existing one of ours is brought down to 0640 at most."""
    fd = os.open(path, flags, mode)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o037 and st.st_uid == os.geteuid():
            os.fchmod(fd, st.st_mode & 0o740)
    except OSError:
        pass
    return fd


class SharedFile:
    """An append-only file opened once per process, written line batches at a time."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        with _files_lock:
            entry = _files.get(self.path)
            if entry is None:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                entry = (os.fdopen(open_private(self.path), "ab"), threading.Lock(), [0])
                _files[self.path] = entry
            entry[2][0] += 1
        self._f, self._lock, self._refs = entry
        self._closed = False

    def write_lines(self, lines: List[bytes]) -> None:
        data = b"".join(line + b"\n" for line in lines)
        with self._lock:
            self._f.write(data)
            self._f.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _files_lock:
            self._refs[0] -= 1
            if self._refs[0] == 0:
                _files.pop(self.path, None)
                self._f.close()


class JsonlWriter(Writer):
    kind = "jsonl"

    def __init__(self, path: str) -> None:
        self._file = SharedFile(path)

    def write(self, alerts: List[Alert], payloads: List[bytes]) -> None:
        self._file.write_lines(payloads)

    def close(self) -> None:
        self._file.close()


_stdout_lock = threading.Lock()
_stdout_format: Optional[str] = None  # "text" or "json"; None: text on a terminal, else JSON


def set_stdout_format(fmt: Optional[str]) -> None:
    """How the stdout sink writes alerts: ``"text"``, ``"json"``, or None (text when stdout is a terminal)."""
    global _stdout_format
    if fmt not in (None, "text", "json"):
        raise ValueError(f"stdout format {fmt!r}: text or json")
    _stdout_format = fmt


def stdout_is_text() -> bool:
    if _stdout_format is not None:
        return _stdout_format == "text"
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def text_line(alert: Alert) -> str:
    """One readable line: event time, severity, status, type, where, summary.

    >>> text_line(Alert.from_json({"alert_id": "a1", "event_time": "2026-01-05T01:12:00Z", "severity": "high",
    ...     "status": "firing", "type": "latency", "service": "chat", "model": "gpt-4o", "subject": None,
    ...     "summary": "P95 latency of chat/gpt-4o is 4,000 ms, above its usual 800 ms."}))
    '2026-01-05T01:12:00Z HIGH     firing    latency      chat/gpt-4o  P95 latency of chat/gpt-4o is 4,000 ms, above its usual 800 ms.'
    """
    where = alert.service or "-"
    if alert.model:
        where += "/" + str(alert.model)
    if alert.subject:
        where += " (" + str(alert.subject) + ")"
    return (f"{alert.event_time or ''} {str(alert.severity).upper():8} "
            f"{alert.status or '':9} {alert.type or '':12} {where}  {alert.summary or ''}")


class StdoutWriter(Writer):
    kind = "stdout"

    def __init__(self, text: Optional[bool] = None) -> None:
        self.text = stdout_is_text() if text is None else text

    def write(self, alerts: List[Alert], payloads: List[bytes]) -> None:
        if self.text:
            data = "".join(text_line(a) + "\n" for a in alerts).encode("utf-8", "replace")
        else:
            data = b"".join(p + b"\n" for p in payloads)
        with _stdout_lock:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
