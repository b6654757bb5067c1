"""One raw record of any encoding becomes events and dead letters.

JSON goes to :mod:`sentinel.parse`, OpenTelemetry spans (``otlp_proto``,
``otlp_json``) to :mod:`sentinel.otlp`, which reads the same limits; this
module sits above both, so neither imports the other's caller.
"""

from __future__ import annotations

from typing import List, Tuple

from sentinel import otlp
from sentinel.events import DeadLetter, RawRecord
from sentinel.parse import DEFAULT_LIMITS, MAX_RECORD_BYTES, BadRecord, Event, Limits, parse_json_record


def parse_record(
    rec: RawRecord, max_bytes: int = MAX_RECORD_BYTES, limits: Limits = DEFAULT_LIMITS
) -> Tuple[List[Event], List[DeadLetter], int]:
    """Parse one raw record of any encoding into (events, dead letters, ignored)."""
    enc = rec.encoding
    if enc == "json":
        try:
            return [parse_json_record(rec.data, max_bytes, rec.size, limits)], [], 0
        except BadRecord as ex:
            return [], [DeadLetter(ex.reason, ex.detail, rec.position, rec.data)], 0
    if len(rec.data) > max_bytes * 16:
        return [], [DeadLetter("oversized", f"message is {len(rec.data)} bytes", rec.position, rec.data)], 0
    if enc == "otlp_proto":
        return otlp.parse_otlp_proto(rec.data, rec.position, limits)
    if enc == "otlp_json":
        return otlp.parse_otlp_json(rec.data, rec.position, limits)
    return [], [DeadLetter("unknown_encoding", f"encoding {enc!r}", rec.position, rec.data)], 0
