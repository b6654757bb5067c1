"""RFC 3339 times of alerts: one format, one parse.

>>> iso(1700000000.5)
'2023-11-14T22:13:20.500000Z'
>>> to_epoch("2023-11-14T22:13:20.500000Z")
1700000000.5
>>> to_epoch("2023-11-14T23:13:20+01:00")
1700000000.0
"""

from __future__ import annotations

from datetime import datetime, timezone


def iso(ts: float) -> str:
    """Epoch seconds as RFC 3339 in UTC, ``Z`` for the offset (microseconds when there are any)."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def parse_iso(s: str) -> datetime:
    """An RFC 3339 string (``Z`` or an offset) as an aware datetime; ``ValueError`` when it is not one.

    A string without an offset is read as it is (naive): callers that need UTC check ``tzinfo``."""
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def to_epoch(s: str) -> float:
    """An RFC 3339 string as epoch seconds."""
    return parse_iso(s).timestamp()
