"""Where a record becomes a typed event or a dead letter.

The JSON path is checked by hand (orjson, then explicit type checks): it runs
once per event, and measured against a pydantic model of the same fields that
builds the same event it is somewhat faster (benchmarks/parse_bench.py,
figures in benchmarks/RESULTS.md) and gives the reasons the dead-letter
contract names. Every rejection names the field and the reason.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple, Union

import orjson

from sentinel.events import DeadLetter, LLMEvent, RawRecord, SecurityEvent

MAX_RECORD_BYTES = 1_000_000

Event = Union[LLMEvent, SecurityEvent]


class BadRecord(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


_MIN_TS = 946684800.0  # 2000-01-01
_MAX_TS = 4102444800.0  # 2100-01-01

_ts_cache: Dict[str, float] = {}


def parse_timestamp(value: Any) -> float:
    """RFC 3339 with an offset, or epoch seconds; returns epoch seconds (UTC)."""
    if isinstance(value, bool):
        raise BadRecord("bad_timestamp", "timestamp: expected RFC 3339 string or epoch seconds, got bool")
    if isinstance(value, (int, float)):
        ts = float(value)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise BadRecord("bad_timestamp", f"timestamp: not RFC 3339: {value[:64]!r}") from None
        if dt.tzinfo is None:
            raise BadRecord("bad_timestamp", f"timestamp: no UTC offset: {value[:64]!r}")
        ts = dt.timestamp()
    else:
        raise BadRecord(
            "bad_timestamp", f"timestamp: expected RFC 3339 string or epoch seconds, got {type(value).__name__}"
        )
    if not (_MIN_TS <= ts <= _MAX_TS) or math.isnan(ts):
        raise BadRecord("bad_timestamp", f"timestamp: out of range: {value!r}")
    return ts


def _req_str(obj: Dict[str, Any], name: str) -> str:
    v = obj.get(name)
    if v is None:
        raise BadRecord("missing_field", f"{name}: required")
    if not isinstance(v, str) or not v:
        raise BadRecord("wrong_type", f"{name}: expected non-empty string, got {type(v).__name__}")
    return v


def _opt_str(obj: Dict[str, Any], name: str) -> Optional[str]:
    v = obj.get(name)
    if v is None or isinstance(v, str):
        return v
    raise BadRecord("wrong_type", f"{name}: expected string, got {type(v).__name__}")


def _opt_num(obj: Dict[str, Any], name: str) -> Optional[float]:
    v = obj.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BadRecord("wrong_type", f"{name}: expected number, got {type(v).__name__}")
    if v < 0 or v != v or v == math.inf:
        raise BadRecord("out_of_range", f"{name}: expected a finite number >= 0, got {v!r}")
    return float(v)


def _opt_int(obj: Dict[str, Any], name: str) -> Optional[int]:
    v = obj.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise BadRecord("wrong_type", f"{name}: expected integer, got {type(v).__name__}")
    if v < 0:
        raise BadRecord("out_of_range", f"{name}: expected integer >= 0, got {v!r}")
    return v


def event_from_dict(obj: Any) -> Event:
    """Check one decoded JSON value against SPEC section 1 and build the event."""
    if not isinstance(obj, dict):
        raise BadRecord("not_object", f"expected a JSON object, got {type(obj).__name__}")
    if "timestamp" not in obj:
        raise BadRecord("missing_field", "timestamp: required")
    ts = parse_timestamp(obj["timestamp"])
    event_type = obj.get("event_type", "llm.request")
    if event_type == "llm.request":
        status = obj.get("status", "ok")
        if status == "ok":
            is_error = False
        elif status == "error":
            is_error = True
        else:
            raise BadRecord("wrong_type", f"status: expected 'ok' or 'error', got {str(status)[:32]!r}")
        return LLMEvent(
            ts,
            _req_str(obj, "service"),
            _req_str(obj, "model"),
            _opt_str(obj, "provider"),
            _opt_str(obj, "operation"),
            _opt_num(obj, "latency_ms"),
            _opt_num(obj, "ttft_ms"),
            _opt_int(obj, "input_tokens"),
            _opt_int(obj, "output_tokens"),
            _opt_num(obj, "cost_usd"),
            is_error,
            _opt_str(obj, "error_type"),
            _opt_str(obj, "user_id"),
            _opt_str(obj, "tenant_id"),
            _opt_str(obj, "source_ip"),
            _opt_str(obj, "event_id"),
            _opt_str(obj, "region"),
        )
    if event_type == "security":
        return SecurityEvent(
            ts,
            _req_str(obj, "source"),
            _req_str(obj, "kind"),
            _opt_str(obj, "service"),
            _opt_str(obj, "model"),
            _opt_str(obj, "severity"),
            _opt_str(obj, "event_id"),
        )
    raise BadRecord("unknown_event_type", f"event_type: expected 'llm.request' or 'security', got {str(event_type)[:32]!r}")


def parse_json_record(data: bytes, max_bytes: int = MAX_RECORD_BYTES, size: int = 0) -> Event:
    if len(data) > max_bytes:
        raise BadRecord("oversized", f"record is {max(size, len(data))} bytes, limit {max_bytes}")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as ex:
        msg = str(ex)
        if "utf-8" in msg.lower() or "surrogate" in msg.lower():
            raise BadRecord("invalid_utf8", f"not valid UTF-8: {msg[:120]}") from None
        raise BadRecord("bad_json", f"not JSON: {msg[:120]}") from None
    return event_from_dict(obj)


def parse_record(
    rec: RawRecord, max_bytes: int = MAX_RECORD_BYTES
) -> Tuple[List[Event], List[DeadLetter], int]:
    """Parse one raw record of any encoding into (events, dead letters, ignored)."""
    enc = rec.encoding
    if enc == "json":
        try:
            return [parse_json_record(rec.data, max_bytes, rec.size)], [], 0
        except BadRecord as ex:
            return [], [DeadLetter(ex.reason, ex.detail, rec.position, rec.data)], 0
    if len(rec.data) > max_bytes * 16:
        return [], [DeadLetter("oversized", f"message is {len(rec.data)} bytes", rec.position, rec.data)], 0
    from sentinel import otlp

    if enc == "otlp_proto":
        return otlp.parse_otlp_proto(rec.data, rec.position)
    if enc == "otlp_json":
        return otlp.parse_otlp_json(rec.data, rec.position)
    return [], [DeadLetter("unknown_encoding", f"encoding {enc!r}", rec.position, rec.data)], 0


# A dead letter keeps the original bytes up to this size; beyond it the first
# DEAD_LETTER_KEEP_BYTES are kept with ``raw_truncated`` and ``raw_size`` set,
# so one 10 MB line cannot overflow a Kafka DLQ topic's message limit.
DEAD_LETTER_KEEP_BYTES = 64 * 1024


def dead_letter_to_dict(dl: DeadLetter, now: float) -> Dict[str, Any]:
    """The dead-letter record as written to the DLQ sink (SPEC section 1)."""
    src, part, off = dl.position
    out: Dict[str, Any] = {
        "reason": dl.reason,
        "detail": dl.detail,
        "source": src,
        "partition": part,
        "offset": off,
        "received_at": datetime.fromtimestamp(now, timezone.utc).isoformat(),
    }
    raw = dl.raw
    if len(raw) > DEAD_LETTER_KEEP_BYTES:
        out["raw_size"] = len(raw)
        out["raw_truncated"] = True
        raw = raw[:DEAD_LETTER_KEEP_BYTES]
    try:
        out["raw"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        import base64

        out["raw_base64"] = base64.b64encode(raw).decode("ascii")
    return out
