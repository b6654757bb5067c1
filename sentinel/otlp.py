"""OpenTelemetry GenAI spans -> :class:`LLMEvent` (SPEC section 1).

One Kafka message written by the OpenTelemetry Collector's Kafka exporter holds
one ``ExportTraceServiceRequest`` with any number of spans, encoded either as
protobuf (``otlp_proto``) or as OTLP/JSON (``otlp_json``). Both decoders walk
the message by hand and hand every span to one mapping function,
:func:`_map_span`, so the two encodings give identical events.

Per message the result is ``(events, dead_letters, ignored)``:

* a span without GenAI attributes (HTTP, DB, ...) is not an error, it is
  counted in ``ignored``; so is a GenAI span that is not a model call and names
  no model (``execute_tool``, ``invoke_agent``, ``create_agent``);
* a GenAI span that cannot become an event (no model, no ``service.name``,
  bad times, bad token counts, ...) becomes one ``invalid_span`` dead letter
  whose ``raw`` is that span alone, and the other spans still come out;
* a message that does not decode becomes a single dead letter holding the
  message bytes.

This is a hot path: no validation library, only the attributes we map are
looked at, and the protobuf classes are imported once.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Dict, List, Optional, Tuple, Union

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from sentinel.events import KEY_SEP, DeadLetter, LLMEvent, Position
from sentinel.parse import DEFAULT_LIMITS, Limits

Result = Tuple[List[LLMEvent], List[DeadLetter], int]

# Same plausibility window as the canonical JSON path (sentinel.parse).
_MIN_NS = 946684800 * 1_000_000_000  # 2000-01-01
_MAX_NS = 4102444800 * 1_000_000_000  # 2100-01-01

_STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR

# Attribute keys (span level) that the mapping reads; everything else is skipped
# without decoding its value.
_OP = "gen_ai.operation.name"
_REQ_MODEL = "gen_ai.request.model"
_RESP_MODEL = "gen_ai.response.model"
_SPAN_KEYS = frozenset(
    (
        _OP,
        _REQ_MODEL,
        _RESP_MODEL,
        "gen_ai.provider.name",
        "gen_ai.system",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.prompt_tokens",
        "gen_ai.usage.completion_tokens",
        "error.type",
        "gen_ai.server.time_to_first_token",
        "gen_ai.response.time_to_first_chunk",
        "gen_ai.usage.cost",
        "llm.usage.cost_usd",
        "user.id",
        "enduser.id",
        "tenant.id",
        "client.address",
    )
)
_RESOURCE_KEYS = frozenset(("service.name", "cloud.region"))

# GenAI operations that are not a model call; without a model they are not
# broken, just not something an LLMEvent describes.
_NON_MODEL_OPS = frozenset(("execute_tool", "invoke_agent", "create_agent"))


class _Bad:
    """Marks an attribute whose value has an unusable type (array, map, bytes,
    an ``intValue`` that is not an integer...)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unusable value>"


_BAD: Any = _Bad()


class _OutOfRange(str):
    """Why a span is refused when a value is beyond its plausible range (reason ``out_of_range``)."""

    __slots__ = ()


def _reason(r: str) -> str:
    return "out_of_range" if type(r) is _OutOfRange else "invalid_span"


# ---------------------------------------------------------------------------
# The shared mapping
# ---------------------------------------------------------------------------


def _str(a: Dict[str, Any], key: str) -> Optional[str]:
    v = a.get(key)
    if v is None or type(v) is str:
        return v
    if v is _BAD:
        return None
    return str(v)  # an int / double / bool attribute where a string was expected


def _tokens(a: Dict[str, Any], key: str, legacy: str, hi: int) -> Union[int, None, str]:
    """A token count, None when absent, or an error message (a str)."""
    v = a.get(key)
    if v is None:
        v = a.get(legacy)
        if v is None:
            return None
        key = legacy
    t = type(v)
    if t is int or (t is float and v.is_integer()):
        if v < 0:
            return f"{key}: negative token count {v!r}"
        if v > hi:
            return _OutOfRange(f"{key}: expected an integer in 0..{hi}, got {v!r:.40}")
        return int(v)
    return f"{key}: expected a non-negative integer, got {v!r:.40}"


def _num(a: Dict[str, Any], key: str, alt: str, hi: float) -> Union[float, None, str]:
    """A non-negative finite number, None when absent, or an error message."""
    v = a.get(key)
    if v is None:
        v = a.get(alt)
        if v is None:
            return None
        key = alt
    t = type(v)
    if (t is float or t is int) and 0 <= v < float("inf"):
        if v > hi:
            return _OutOfRange(f"{key}: expected a number in 0..{hi:g}, got {v!r:.40}")
        return float(v)
    return f"{key}: expected a finite number >= 0, got {v!r:.40}"


def _map_span(
    res: Dict[str, Any],
    a: Dict[str, Any],
    start: Any,
    end: Any,
    status_error: bool,
    event_id: Optional[str],
    limits: Limits = DEFAULT_LIMITS,
) -> Union[LLMEvent, str, None]:
    """Map one span onto an LLMEvent.

    ``res`` / ``a`` hold the resource / span attributes we care about (already
    decoded to Python values, ``_BAD`` for unusable ones), ``start`` / ``end``
    are the span times in ns (int, or None when missing / not a number).

    Returns the event, None for a span that is not a model call (ignored), or a
    string saying why this GenAI span is invalid (an :class:`_OutOfRange` when
    a value is beyond ``limits``).
    """
    model = a.get(_REQ_MODEL)
    if type(model) is not str or not model:
        alt = a.get(_RESP_MODEL)
        if alt is not None and alt != "":
            model = alt
    if model is None or model == "":
        if _OP not in a:
            if _REQ_MODEL not in a and _RESP_MODEL not in a:
                return None  # not a GenAI span
            return "no model: gen_ai.request.model / gen_ai.response.model empty"
        if a[_OP] in _NON_MODEL_OPS:
            return None  # a tool / agent span, not a model call
        return "no model: neither gen_ai.request.model nor gen_ai.response.model"
    if type(model) is not str:
        if model is _BAD:
            return "model: not a string"
        model = str(model)

    service = res.get("service.name")
    if type(service) is not str or not service:
        return "no service.name in the resource"

    if start is None or start == 0:
        return "start time missing or 0"
    if not (_MIN_NS <= start <= _MAX_NS):
        return f"start time {start} ns out of range"
    if end is None:
        return "end time missing"
    if end < start:
        return f"end time {end} before start time {start}"

    n = limits.name_length
    if len(service) > n:
        return _OutOfRange(f"service.name: {len(service)} characters, limit {n}")
    if len(model) > n:
        return _OutOfRange(f"model: {len(model)} characters, limit {n}")
    if KEY_SEP in service or KEY_SEP in model:
        return "service.name / model: contains the control character U+001F"
    latency = (end - start) / 1e6
    if latency > limits.latency_ms:
        return _OutOfRange(f"span duration: {latency:.0f} ms, limit {limits.latency_ms:g}")

    inp = _tokens(a, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", limits.tokens)
    if isinstance(inp, str):
        return inp
    out = _tokens(a, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", limits.tokens)
    if isinstance(out, str):
        return out

    ttft = _num(a, "gen_ai.server.time_to_first_token", "gen_ai.response.time_to_first_chunk",
                limits.ttft_ms / 1000.0)
    if ttft is not None:
        if isinstance(ttft, str):
            return ttft
        ttft *= 1000.0  # seconds -> ms
    cost = _num(a, "gen_ai.usage.cost", "llm.usage.cost_usd", limits.cost_usd)
    if isinstance(cost, str):
        return cost

    error_type = a.get("error.type")
    if error_type is not None:
        is_error = True
        if type(error_type) is not str:
            error_type = "error" if error_type is _BAD else str(error_type)
        elif not error_type:
            error_type = "error"
        elif len(error_type) > n:
            error_type = error_type[:n]
    elif status_error:
        is_error = True
        error_type = "error"
    else:
        is_error = False

    provider = _str(a, "gen_ai.provider.name")
    if provider is None:
        provider = _str(a, "gen_ai.system")
    user = _str(a, "user.id")
    if user is None:
        user = _str(a, "enduser.id")
    operation = _str(a, _OP)
    tenant = _str(a, "tenant.id")
    client = _str(a, "client.address")
    region = _str(res, "cloud.region")
    for name, v in (("gen_ai.provider.name", provider), ("gen_ai.operation.name", operation), ("user.id", user),
                    ("tenant.id", tenant), ("client.address", client), ("cloud.region", region),
                    ("span id", event_id)):
        if v is not None and len(v) > n:
            return _OutOfRange(f"{name}: {len(v)} characters, limit {n}")

    return LLMEvent(
        start / 1e9,
        service,
        model,
        provider,
        operation,
        latency,
        ttft,
        inp,
        out,
        cost,
        is_error,
        error_type,
        user,
        tenant,
        client,
        event_id,
        region,
    )


# ---------------------------------------------------------------------------
# otlp_proto
# ---------------------------------------------------------------------------

_SCALAR_ONEOF = frozenset(("string_value", "bool_value", "int_value", "double_value"))


_which_oneof = AnyValue.WhichOneof  # unbound: saves a bound-method lookup per value


def _proto_attrs(kvs: Any, wanted: frozenset) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for kv in kvs:
        k = kv.key
        if k in wanted:
            v = kv.value
            which = _which_oneof(v, "value")
            if which is None:
                continue  # empty AnyValue: treat as absent
            out[k] = getattr(v, which) if which in _SCALAR_ONEOF else _BAD
    return out


def parse_otlp_proto(data: bytes, position: Position, limits: Limits = DEFAULT_LIMITS) -> Result:
    """Decode one protobuf ``ExportTraceServiceRequest`` into events."""
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(data)
    except Exception as ex:  # DecodeError, or anything else upb may raise
        return [], [DeadLetter("bad_protobuf", f"not an ExportTraceServiceRequest: {str(ex)[:120]}", position, data)], 0

    events: List[LLMEvent] = []
    dead: List[DeadLetter] = []
    ignored = 0
    for i, rs in enumerate(req.resource_spans):
        res = _proto_attrs(rs.resource.attributes, _RESOURCE_KEYS)
        for j, ss in enumerate(rs.scope_spans):
            for k, span in enumerate(ss.spans):
                a = _proto_attrs(span.attributes, _SPAN_KEYS)
                if not a:
                    ignored += 1
                    continue
                sid = span.span_id
                r = _map_span(
                    res,
                    a,
                    span.start_time_unix_nano,
                    span.end_time_unix_nano,
                    span.status.code == _STATUS_ERROR,
                    sid.hex() if sid else None,
                    limits,
                )
                if r is None:
                    ignored += 1
                elif isinstance(r, str):
                    dead.append(
                        DeadLetter(
                            _reason(r),
                            f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]: {r}",
                            position,
                            span.SerializeToString(),
                        )
                    )
                else:
                    events.append(r)
    return events, dead, ignored


# ---------------------------------------------------------------------------
# otlp_json
# ---------------------------------------------------------------------------

_STR, _INT, _DBL, _BOOL = 0, 1, 2, 3
_JSON_KIND = {
    "stringValue": _STR,
    "string_value": _STR,
    "intValue": _INT,
    "int_value": _INT,
    "doubleValue": _DBL,
    "double_value": _DBL,
    "boolValue": _BOOL,
    "bool_value": _BOOL,
}


def _json_value(v: Any) -> Any:
    """An OTLP/JSON AnyValue -> Python scalar, None (empty), or _BAD."""
    if type(v) is not dict:
        return _BAD
    for kind, x in v.items():
        t = _JSON_KIND.get(kind)
        tx = type(x)
        if t == _STR:
            return x if tx is str else _BAD
        if t == _INT:  # int64 is a JSON string in OTLP/JSON, a number is accepted too
            if tx is int:
                return x
            if tx is str:
                try:
                    return int(x)
                except ValueError:
                    return _BAD
            return _BAD
        if t == _DBL:
            if tx is float or tx is int:
                return float(x)
            if tx is str:  # "NaN", "Infinity", "1.5"
                try:
                    return float(x)
                except ValueError:
                    return _BAD
            return _BAD
        if t == _BOOL:
            return x if tx is bool else _BAD
        return _BAD  # arrayValue, kvlistValue, bytesValue, unknown
    return None


def _json_attrs(kvs: Any, wanted: frozenset) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if type(kvs) is not list:
        return out
    for kv in kvs:
        if type(kv) is dict:
            k = kv.get("key")
            if k in wanted:
                v = _json_value(kv.get("value"))
                if v is not None:
                    out[k] = v
    return out


def _json_ns(v: Any) -> Optional[int]:
    """fixed64 ns: a JSON string of digits, or a number."""
    t = type(v)
    if t is int:
        return v
    if t is str:
        try:
            return int(v)
        except ValueError:
            return None
    if t is float and v.is_integer():
        return int(v)
    return None


def _json_id(v: Any) -> Optional[str]:
    """Span id: lowercase hex as the Collector writes it; base64 (protobuf's
    own JSON mapping) is converted to hex."""
    if type(v) is not str or not v:
        return None
    if len(v) == 12 and v[-1] == "=":
        try:
            return base64.b64decode(v, validate=True).hex()
        except (binascii.Error, ValueError):
            return v
    return v


def _get(d: Dict[str, Any], camel: str, snake: str) -> Any:
    v = d.get(camel)
    return d.get(snake) if v is None else v


def parse_otlp_json(data: bytes, position: Position, limits: Limits = DEFAULT_LIMITS) -> Result:
    """Decode one OTLP/JSON ``ExportTraceServiceRequest`` into events."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as ex:
        msg = str(ex)
        low = msg.lower()
        reason = "invalid_utf8" if ("utf-8" in low or "surrogate" in low) else "bad_json"
        return [], [DeadLetter(reason, f"not JSON: {msg[:120]}", position, data)], 0
    if type(obj) is not dict:
        return [], [DeadLetter("not_object", f"expected a JSON object, got {type(obj).__name__}", position, data)], 0

    rss = _get(obj, "resourceSpans", "resource_spans")
    if rss is None:
        if obj:  # {} is a valid, empty request; anything else is not OTLP
            return [], [DeadLetter("not_otlp", "no resourceSpans in the object", position, data)], 0
        return [], [], 0
    if type(rss) is not list:
        return [], [DeadLetter("not_otlp", f"resourceSpans: expected a list, got {type(rss).__name__}", position, data)], 0

    events: List[LLMEvent] = []
    dead: List[DeadLetter] = []
    ignored = 0
    for i, rs in enumerate(rss):
        if type(rs) is not dict:
            dead.append(DeadLetter("invalid_span", f"resourceSpans[{i}]: not an object", position, orjson.dumps(rs)))
            continue
        resource = rs.get("resource")
        res = _json_attrs(resource.get("attributes"), _RESOURCE_KEYS) if type(resource) is dict else {}
        sss = _get(rs, "scopeSpans", "scope_spans")
        if sss is None:
            sss = rs.get("instrumentationLibrarySpans")  # OTLP < 0.15
            if sss is None:
                continue
        if type(sss) is not list:
            dead.append(
                DeadLetter("invalid_span", f"resourceSpans[{i}].scopeSpans: not a list", position, orjson.dumps(rs))
            )
            continue
        for j, ss in enumerate(sss):
            spans = ss.get("spans") if type(ss) is dict else _BAD
            if spans is None:
                continue
            if type(spans) is not list:
                dead.append(
                    DeadLetter(
                        "invalid_span",
                        f"resourceSpans[{i}].scopeSpans[{j}]: spans is not a list",
                        position,
                        orjson.dumps(ss),
                    )
                )
                continue
            for k, span in enumerate(spans):
                if type(span) is not dict:
                    dead.append(
                        DeadLetter(
                            "invalid_span",
                            f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]: not an object",
                            position,
                            orjson.dumps(span),
                        )
                    )
                    continue
                a = _json_attrs(span.get("attributes"), _SPAN_KEYS)
                if not a:
                    ignored += 1
                    continue
                status = span.get("status")
                code = status.get("code") if type(status) is dict else None
                r = _map_span(
                    res,
                    a,
                    _json_ns(_get(span, "startTimeUnixNano", "start_time_unix_nano")),
                    _json_ns(_get(span, "endTimeUnixNano", "end_time_unix_nano")),
                    code == _STATUS_ERROR or code == "STATUS_CODE_ERROR",
                    _json_id(_get(span, "spanId", "span_id")),
                    limits,
                )
                if r is None:
                    ignored += 1
                elif isinstance(r, str):
                    dead.append(
                        DeadLetter(
                            _reason(r),
                            f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]: {r}",
                            position,
                            orjson.dumps(span),
                        )
                    )
                else:
                    events.append(r)
    return events, dead, ignored
