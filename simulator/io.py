"""Times in and out, and the three files of a run (events, labels, traps)."""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any, Iterable, Tuple, Union

try:
    import orjson

    def dumps_line(obj: Any) -> bytes:
        """One JSON line (bytes ending in ``\\n``)."""
        return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)

except ImportError:  # pragma: no cover - orjson is a dependency, json is the fallback
    import json

    def dumps_line(obj: Any) -> bytes:
        """One JSON line (bytes ending in ``\\n``)."""
        return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def to_epoch(value: Union[str, int, float]) -> float:
    """Epoch seconds from an RFC 3339 string (with offset) or a number.

    >>> to_epoch("2026-01-05T00:00:00Z")
    1767571200.0
    >>> to_epoch("2026-01-05T00:00:00")
    Traceback (most recent call last):
    ...
    ValueError: timestamp '2026-01-05T00:00:00' has no UTC offset
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            msg = f"timestamp {value!r} has no UTC offset"
            raise ValueError(msg)
        return dt.timestamp()
    msg = f"not a timestamp: {value!r}"
    raise TypeError(msg)


def format_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-01-05T00:00:00.000Z``."""
    sec, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%03dZ" % frac


def format_time(ts: float) -> str:
    """``format_ms`` of epoch seconds, rounded down to the millisecond.

    >>> format_time(1767571200.25)
    '2026-01-05T00:00:00.250Z'
    """
    return format_ms(int(math.floor(ts * 1000.0 + 1e-6)))


def companion_paths(path: str) -> Tuple[str, str]:
    """The labels and traps files that go with an events file: ``<base>.labels.jsonl``, ``<base>.traps.jsonl``.

    >>> companion_paths("out/events.jsonl")
    ('out/events.labels.jsonl', 'out/events.traps.jsonl')
    """
    base = path[: -len(".jsonl")] if path.endswith(".jsonl") else path
    return base + ".labels.jsonl", base + ".traps.jsonl"


def write_lines(path: str, lines: Iterable[bytes]) -> int:
    """Write ``lines`` to ``path`` in blocks of 4,096; returns how many were written."""
    n = 0
    with open(path, "wb") as f:
        buf = []
        for line in lines:
            buf.append(line)
            if len(buf) >= 4096:
                f.write(b"".join(buf))
                n += len(buf)
                buf.clear()
        f.write(b"".join(buf))
        n += len(buf)
    return n


def write_records(path: str, records: Iterable[Any]) -> None:
    """Write one JSON line per record."""
    with open(path, "wb") as f:
        for rec in records:
            f.write(dumps_line(rec))
