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
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple, Union

import msgspec
import orjson
from msgspec.structs import astuple

from sentinel.events import KEY_SEP, REQUEST_FIELDS, DeadLetter, LLMEvent, Requests, SecurityEvent

MAX_RECORD_BYTES = 1_000_000

Event = Union[LLMEvent, SecurityEvent]


class Limits:
    """Plausible ranges of a record's fields (the flow definition's ``limits``).

    A number beyond its bound, or a name longer than ``name_length``
    characters, makes the record a dead letter ``out_of_range`` naming the
    field: no value that passes can overflow the arithmetic of a step, and no
    name that passes is large enough to matter as a key. ``error_type`` is
    cut to ``name_length`` rather than refused (a long error message still
    counts as an error).
    """

    __slots__ = ("latency_ms", "ttft_ms", "tokens", "cost_usd", "name_length", "_decoder")

    def __init__(self, latency_ms: float = 86_400_000.0, ttft_ms: float = 86_400_000.0,
                 tokens: int = 1_000_000_000, cost_usd: float = 100_000.0, name_length: int = 256) -> None:
        self.latency_ms = latency_ms
        self.ttft_ms = ttft_ms
        self.tokens = tokens
        self.cost_usd = cost_usd
        self.name_length = name_length
        self._decoder: Optional[msgspec.json.Decoder] = None

    @property
    def decoder(self) -> "msgspec.json.Decoder":
        """A decoder of well-formed request records within these limits (see :func:`_fast_request`)."""
        if self._decoder is None:
            self._decoder = _request_decoder(self)
        return self._decoder

    def __getstate__(self):
        # The decoder is made again where it is needed (it does not pickle).
        return (self.latency_ms, self.ttft_ms, self.tokens, self.cost_usd, self.name_length)

    def __setstate__(self, s) -> None:
        self.latency_ms, self.ttft_ms, self.tokens, self.cost_usd, self.name_length = s
        self._decoder = None


DEFAULT_LIMITS = Limits()


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


def _too_long(name: str, v: str, limit: int) -> BadRecord:
    return BadRecord("out_of_range", f"{name}: {len(v)} characters, limit {limit}")


def _req_str(obj: Dict[str, Any], name: str, limit: int) -> str:
    v = obj.get(name)
    if v is None:
        raise BadRecord("missing_field", f"{name}: required")
    if not isinstance(v, str) or not v:
        raise BadRecord("wrong_type", f"{name}: expected non-empty string, got {type(v).__name__}")
    if len(v) > limit:
        raise _too_long(name, v, limit)
    return v


def _key_str(obj: Dict[str, Any], name: str, limit: int) -> str:
    """A part of the service/model key: also free of the key separator, so two keys never merge."""
    v = _req_str(obj, name, limit)
    if KEY_SEP in v:
        raise BadRecord("invalid_name", f"{name}: contains the control character U+001F")
    return v


def _opt_str(obj: Dict[str, Any], name: str, limit: int) -> Optional[str]:
    v = obj.get(name)
    if v is None:
        return v
    if isinstance(v, str):
        if len(v) > limit:
            raise _too_long(name, v, limit)
        return v
    raise BadRecord("wrong_type", f"{name}: expected string, got {type(v).__name__}")


def _opt_num(obj: Dict[str, Any], name: str, hi: float) -> Optional[float]:
    v = obj.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BadRecord("wrong_type", f"{name}: expected number, got {type(v).__name__}")
    if not 0 <= v <= hi:  # NaN fails too
        raise BadRecord("out_of_range", f"{name}: expected a number in 0..{hi:g}, got {v!r}")
    return float(v)


def _opt_int(obj: Dict[str, Any], name: str, hi: int) -> Optional[int]:
    v = obj.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        if not (isinstance(v, float) and v.is_integer()):
            raise BadRecord("wrong_type", f"{name}: expected integer, got {type(v).__name__}")
    if not 0 <= v <= hi:
        raise BadRecord("out_of_range", f"{name}: expected an integer in 0..{hi}, got {v!r}")
    return int(v)


def event_from_dict(obj: Any, limits: Limits = DEFAULT_LIMITS) -> Event:
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
        n = limits.name_length
        error_type = obj.get("error_type")
        if error_type is not None:
            if not isinstance(error_type, str):
                raise BadRecord("wrong_type", f"error_type: expected string, got {type(error_type).__name__}")
            if len(error_type) > n:
                error_type = error_type[:n]
        return LLMEvent(
            ts,
            _key_str(obj, "service", n),
            _key_str(obj, "model", n),
            _opt_str(obj, "provider", n),
            _opt_str(obj, "operation", n),
            _opt_num(obj, "latency_ms", limits.latency_ms),
            _opt_num(obj, "ttft_ms", limits.ttft_ms),
            _opt_int(obj, "input_tokens", limits.tokens),
            _opt_int(obj, "output_tokens", limits.tokens),
            _opt_num(obj, "cost_usd", limits.cost_usd),
            is_error,
            error_type,
            _opt_str(obj, "user_id", n),
            _opt_str(obj, "tenant_id", n),
            _opt_str(obj, "source_ip", n),
            _opt_str(obj, "event_id", n),
            _opt_str(obj, "region", n),
        )
    if event_type == "security":
        n = limits.name_length
        return SecurityEvent(
            ts,
            _req_str(obj, "source", n),
            _req_str(obj, "kind", n),
            _opt_str(obj, "service", n),
            _opt_str(obj, "model", n),
            _opt_str(obj, "severity", n),
            _opt_str(obj, "event_id", n),
        )
    raise BadRecord("unknown_event_type", f"event_type: expected 'llm.request' or 'security', got {str(event_type)[:32]!r}")


def _request_decoder(limits: Limits) -> "msgspec.json.Decoder":
    """A msgspec decoder that takes a request record only when every field :func:`event_from_dict`
    checks is already right (types, ranges, lengths, ``event_type`` and ``status``); anything else
    fails to decode, and the record goes the long way, which names what is wrong. Unknown fields are
    skipped, as there. Its fields are in :class:`LLMEvent`'s order (``timestamp`` as written where
    ``ts`` is, ``status`` where ``is_error`` is; ``event_type`` last)."""
    n = limits.name_length
    name = Annotated[str, msgspec.Meta(min_length=1, max_length=n)]
    text = Optional[Annotated[str, msgspec.Meta(max_length=n)]]

    # Bounds beyond what msgspec represents are cut to its range: a value past the cut goes the long way.
    def num(hi: float) -> Any:
        try:
            hi = min(float(hi), 1.7976931348623157e308)
        except OverflowError:
            hi = 1.7976931348623157e308
        return Optional[Annotated[float, msgspec.Meta(ge=0, le=hi)]]

    count = Optional[Annotated[int, msgspec.Meta(ge=0, le=min(int(limits.tokens), 2 ** 63 - 1))]]
    fields = [
        ("timestamp", Union[str, float]), ("service", name), ("model", name),
        ("provider", text, None), ("operation", text, None),
        ("latency_ms", num(limits.latency_ms), None), ("ttft_ms", num(limits.ttft_ms), None),
        ("input_tokens", count, None), ("output_tokens", count, None),
        ("cost_usd", num(limits.cost_usd), None), ("status", Literal["ok", "error"], "ok"),
        ("error_type", Optional[str], None),
        ("user_id", text, None), ("tenant_id", text, None), ("source_ip", text, None),
        ("event_id", text, None), ("region", text, None),
        ("event_type", Literal["llm.request"], "llm.request"),
    ]
    # request_columns takes a record's fields as LLMEvent's, by position.
    if [{"timestamp": "ts", "status": "is_error"}.get(f[0], f[0]) for f in fields[:-1]] != list(REQUEST_FIELDS):
        raise RuntimeError("the request decoder's fields are not in LLMEvent's order")
    # Not tracked by the garbage collector: a record holds strings and numbers only, never a cycle.
    return msgspec.json.Decoder(msgspec.defstruct("Request", fields, gc=False))


DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
_fromisoformat = datetime.fromisoformat


def request_ts(w: Any, limits: Limits) -> Optional[float]:
    """The event time of a record the request decoder took, or None when the long way must decide.

    The decoded record itself stands for the request from then on (its
    ``error_type`` cut to ``limits.name_length``); :func:`request_columns`
    turns a key's records into :class:`sentinel.events.Requests`."""
    return request_times([w], limits)[0]


def decode_each(values: List[bytes], limits: Limits) -> List[Any]:
    """Each record decoded by the request decoder, None where it fails (the long way decides there)."""
    decode = limits.decoder.decode
    out: List[Any] = []
    append = out.append
    for data in values:
        try:
            append(decode(data))
        except DECODE_ERRORS:
            append(None)
    return out


def request_times(records: List[Any], limits: Limits) -> List[Optional[float]]:
    """:func:`request_ts` of each decoded record (None for None), in one loop."""
    out: List[Optional[float]] = []
    append = out.append
    n = limits.name_length
    for w in records:
        if w is None:
            append(None)
            continue
        if KEY_SEP in w.service or KEY_SEP in w.model:
            append(None)
            continue
        # parse_timestamp, for what the decoder lets through (a string, or a number as a float).
        v = w.timestamp
        if v.__class__ is str:
            try:
                dt = _fromisoformat(v)
                if dt.tzinfo is None:
                    append(None)
                    continue
                ts = dt.timestamp()
            except (ValueError, OverflowError):
                append(None)
                continue
        else:
            ts = v
        if not _MIN_TS <= ts <= _MAX_TS:  # NaN fails too
            append(None)
            continue
        error_type = w.error_type
        if error_type is not None and len(error_type) > n:
            w.error_type = error_type[:n]
        append(ts)
    return out


# The request decoder's fields, in LLMEvent's order: the record's ``timestamp`` where ``ts`` is, its
# ``status`` where ``is_error`` is, and ``event_type`` after the last (see _request_decoder).
_STATUS_AT = REQUEST_FIELDS.index("is_error")


def request_columns(records: List[Any], ts: List[float]) -> Requests:
    """The :class:`Requests` of decoded records (:func:`request_ts`) and their event times: each record
    a tuple of its fields, the tuples turned into columns at once."""
    if not records:
        return Requests(((),) * len(REQUEST_FIELDS))
    cols = list(zip(*map(astuple, records)))
    del cols[len(REQUEST_FIELDS):]  # event_type
    cols[0] = tuple(ts)
    cols[_STATUS_AT] = tuple([s == "error" for s in cols[_STATUS_AT]])
    return Requests(cols)


def event_record(ev: LLMEvent, limits: Limits) -> Any:
    """An event made the long way as a decoded record (what :func:`request_columns` takes)."""
    return limits.decoder.type(ev.ts, ev.service, ev.model, ev.provider, ev.operation, ev.latency_ms, ev.ttft_ms,
                               ev.input_tokens, ev.output_tokens, ev.cost_usd, "error" if ev.is_error else "ok",
                               ev.error_type, ev.user_id, ev.tenant_id, ev.source_ip, ev.event_id, ev.region)


def record_event(ts: float, w: Any) -> LLMEvent:
    """The :class:`LLMEvent` of a decoded record (:func:`request_ts`)."""
    return LLMEvent(ts, w.service, w.model, w.provider, w.operation, w.latency_ms, w.ttft_ms, w.input_tokens,
                    w.output_tokens, w.cost_usd, w.status == "error", w.error_type, w.user_id, w.tenant_id,
                    w.source_ip, w.event_id, w.region)


def _fast_request(data: bytes, limits: Limits) -> Optional[LLMEvent]:
    """The event of a well-formed request record, or None: then :func:`event_from_dict` decides.

    The same event as the long way for every record it takes (tests/test_robust_fuzz.py compares
    the two on generated records); about four times faster."""
    try:
        w = limits.decoder.decode(data)
    except DECODE_ERRORS:
        return None
    ts = request_ts(w, limits)
    return None if ts is None else record_event(ts, w)


def parse_json_record(data: bytes, max_bytes: int = MAX_RECORD_BYTES, size: int = 0,
                      limits: Limits = DEFAULT_LIMITS) -> Event:
    if len(data) > max_bytes:
        raise BadRecord("oversized", f"record is {max(size, len(data))} bytes, limit {max_bytes}")
    ev = _fast_request(data, limits)
    if ev is not None:
        return ev
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as ex:
        msg = str(ex)
        if "utf-8" in msg.lower() or "surrogate" in msg.lower():
            raise BadRecord("invalid_utf8", f"not valid UTF-8: {msg[:120]}") from None
        raise BadRecord("bad_json", f"not JSON: {msg[:120]}") from None
    return event_from_dict(obj, limits)


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
