"""Fuzzing the JSON and OTLP parsers (a few seconds in every run), and a corpus of hostile records kept as
regression cases.

Whatever the bytes, a parser returns events and dead letters and never raises; every event it lets
through is within the record limits, so no later step can overflow on it.
"""

import json
import math

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from operators.parse import BatchParser, DEAD, MODEL
from sentinel.events import KEY_SEP, LLMEvent, RawBatch, RawRecord, SecurityEvent
from sentinel.otlp import parse_otlp_json, parse_otlp_proto
from sentinel.parse import DEFAULT_LIMITS, BadRecord, _fast_request, event_from_dict
from sentinel.records import parse_record
from tests.helpers import T0, request

POS = ("fuzz", 0, 0)


def dumps(value) -> bytes:
    """JSON of any value the strategies make (integers beyond 64 bits, lone surrogates escaped)."""
    return json.dumps(value).encode()
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def check_event(ev):
    lim = DEFAULT_LIMITS
    assert isinstance(ev, (LLMEvent, SecurityEvent))
    assert isinstance(ev.ts, float) and math.isfinite(ev.ts)
    if isinstance(ev, LLMEvent):
        assert ev.service and ev.model and KEY_SEP not in ev.service + ev.model
        assert len(ev.service) <= lim.name_length and len(ev.model) <= lim.name_length
        for name, hi in (("latency_ms", lim.latency_ms), ("ttft_ms", lim.ttft_ms), ("cost_usd", lim.cost_usd),
                         ("input_tokens", lim.tokens), ("output_tokens", lim.tokens)):
            v = getattr(ev, name)
            assert v is None or 0 <= v <= hi, (name, v)
        for name in ("provider", "operation", "error_type", "user_id", "tenant_id", "source_ip", "event_id",
                     "region"):
            v = getattr(ev, name)
            assert v is None or (isinstance(v, str) and len(v) <= lim.name_length), name


def check(result):
    events, dead, ignored = result
    for ev in events:
        check_event(ev)
    for d in dead:
        assert d.reason and d.detail and isinstance(d.raw, bytes)
    assert ignored >= 0


# --- strategies ---------------------------------------------------------------------------------

numbers = st.one_of(st.integers(min_value=-2 ** 70, max_value=2 ** 70), st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([0, -1, 1e308, -1e308, 1.7976931348623157e308, 2 ** 63, 2 ** 64, 1e9, 1e9 + 1,
                                     86_400_000.0, 4_090_000_000.0, T0, 0.5]))
names = st.one_of(st.text(max_size=20), st.sampled_from(["a\x1fb", "", " ", "s" * 300, "\u0000", "\ud7ff"]))
json_scalars = st.one_of(st.none(), st.booleans(), numbers, names)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                  st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=4)), max_leaves=12)
FIELDS = ["timestamp", "service", "model", "event_type", "latency_ms", "ttft_ms", "input_tokens", "output_tokens",
          "cost_usd", "status", "error_type", "user_id", "tenant_id", "source_ip", "event_id", "region", "provider",
          "source", "kind"]


@st.composite
def mutated_records(draw):
    """A valid request or security event with some fields replaced by anything JSON can hold."""
    base = dict(request(T0, user_id="u1", status="ok", error_type="timeout")) if draw(st.booleans()) else {
        "event_type": "security", "timestamp": T0, "source": "10.0.0.1", "kind": "jailbreak"}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        if draw(st.booleans()):
            base[name] = draw(json_values)
        else:
            base.pop(name, None)
    return dumps(base)


@given(st.binary(max_size=200))
@FUZZ
def test_json_parser_takes_any_bytes(data):
    check(parse_record(RawRecord(data, POS)))


@given(json_values)
@FUZZ
def test_json_parser_takes_any_json_value(value):
    check(parse_record(RawRecord(dumps(value), POS)))


@given(mutated_records())
@FUZZ
def test_json_parser_takes_mutated_records(data):
    check(parse_record(RawRecord(data, POS)))


def _long_way(data):
    try:
        return event_from_dict(orjson.loads(data))
    except (BadRecord, orjson.JSONDecodeError):
        return None


def _same_event(a, b):
    return type(a) is type(b) and all(getattr(a, k) == getattr(b, k) for k in LLMEvent.__slots__)


def _fast_agrees(data):
    fast = _fast_request(data, DEFAULT_LIMITS)
    if fast is not None:  # it takes a record only as the long way would, with the same event
        slow = _long_way(data)
        assert slow is not None and _same_event(fast, slow), (data, fast, slow)
    return fast


@given(mutated_records())
@FUZZ
def test_the_fast_request_decoder_agrees_with_the_long_way(data):
    _fast_agrees(data)


@given(st.fixed_dictionaries({}, optional={f: json_values for f in FIELDS}).map(
    lambda d: dict(request(T0), **d)).map(dumps))
@FUZZ
def test_the_fast_request_decoder_agrees_on_any_field_values(data):
    _fast_agrees(data)


def test_limits_pickle_after_decoding():
    import copy
    import pickle

    from sentinel.parse import Limits, parse_json_record
    lim = Limits(tokens=5000)
    parse_json_record(orjson.dumps(request(T0)), limits=lim)
    back = pickle.loads(pickle.dumps(lim))
    assert (back.tokens, back.name_length) == (5000, 256)
    assert parse_json_record(orjson.dumps(request(T0)), limits=copy.deepcopy(back)).service == "svc"


def test_the_fast_request_decoder_takes_ordinary_requests():
    # Duplicate keys (the last one counts, as orjson reads them), integers for numbers, escapes.
    for rec in (request(T0, user_id="u1"), dict(request(T0), status="error", error_type="e" * 300),
                dict(request(T0), timestamp="2026-01-05T00:00:00+00:00", latency_ms=800, cost_usd=0)):
        assert _fast_agrees(orjson.dumps(rec)) is not None, rec
    assert _fast_agrees(b'{"timestamp": 1767571200, "service": "a", "service": "b", "model": "m"}').service == "b"
    assert _fast_agrees(b'{"timestamp": 1767571200, "service": "\\u00e9", "model": "m"}').service == "\u00e9"
    for bad in (b'{"timestamp": 1767571200, "service": "a\\u001fb", "model": "m"}',
                b'{"timestamp": 1767571200, "service": "\\ud800", "model": "m"}',
                b'{"timestamp": true, "service": "a", "model": "m"}',
                b'{"timestamp": 1767571200, "service": "a", "model": "m", "input_tokens": 5.0}',
                b'{"timestamp": 1767571200, "service": "a", "model": "m", "status": null}'):
        assert _fast_agrees(bad) is None, bad


@given(st.binary(max_size=300))
@FUZZ
def test_otlp_proto_parser_takes_any_bytes(data):
    check(parse_otlp_proto(data, POS))


attr_values = st.one_of(
    st.fixed_dictionaries({"stringValue": names}), st.fixed_dictionaries({"intValue": st.one_of(numbers, names)}),
    st.fixed_dictionaries({"doubleValue": st.one_of(numbers, names)}), st.fixed_dictionaries({"boolValue": st.booleans()}),
    st.fixed_dictionaries({"arrayValue": st.just({"values": []})}), json_values)
ATTRS = ["service.name", "gen_ai.request.model", "gen_ai.response.model", "gen_ai.operation.name",
         "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.server.time_to_first_token",
         "gen_ai.usage.cost", "error.type", "user.id", "gen_ai.provider.name", "cloud.region"]
attrs = st.lists(st.fixed_dictionaries({"key": st.sampled_from(ATTRS), "value": attr_values}), max_size=6)
times = st.one_of(numbers, st.integers(min_value=0, max_value=2 ** 64 - 1).map(str), names, st.none())


@st.composite
def otlp_json_requests(draw):
    span = {"name": "chat", "startTimeUnixNano": draw(times), "endTimeUnixNano": draw(times),
            "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "gpt"}}] + draw(attrs),
            "spanId": draw(st.one_of(names, st.none())), "status": draw(st.one_of(json_values, st.just({"code": 2})))}
    if draw(st.booleans()):
        span = draw(json_values)
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}] + draw(attrs)}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}


@given(otlp_json_requests())
@FUZZ
def test_otlp_json_parser_takes_mutated_requests(req):
    data = dumps(req)
    check(parse_otlp_json(data, POS))


@given(otlp_json_requests())
@FUZZ
def test_otlp_proto_parser_takes_mutated_requests(req):
    """The same requests as protobuf, where they can be encoded (times and values as the wire allows)."""
    msg = ExportTraceServiceRequest()
    rs = msg.resource_spans.add()
    span = rs.scope_spans.add().spans.add()
    src = req["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    for attr_list, target in ((req["resourceSpans"][0]["resource"]["attributes"], rs.resource.attributes),
                              (src.get("attributes", []) if isinstance(src, dict) else [], span.attributes)):
        for kv in attr_list if isinstance(attr_list, list) else []:
            v = kv.get("value")
            a = target.add()
            a.key = kv["key"]
            try:
                if isinstance(v, dict) and "stringValue" in v and isinstance(v["stringValue"], str):
                    a.value.string_value = v["stringValue"]
                elif isinstance(v, dict) and isinstance(v.get("intValue"), int) and -2 ** 63 <= v["intValue"] < 2 ** 63:
                    a.value.int_value = v["intValue"]
                elif isinstance(v, dict) and isinstance(v.get("doubleValue"), float):
                    a.value.double_value = v["doubleValue"]
            except (ValueError, TypeError):
                pass  # not encodable (a lone surrogate): the attribute stays empty
    if isinstance(src, dict):
        for field, name in (("start_time_unix_nano", "startTimeUnixNano"), ("end_time_unix_nano", "endTimeUnixNano")):
            t = src.get(name)
            if isinstance(t, int) and 0 <= t < 2 ** 64:
                setattr(span, field, t)
    check(parse_otlp_proto(msg.SerializeToString(), POS))


@given(st.lists(st.one_of(mutated_records(), st.binary(max_size=50)), min_size=1, max_size=30))
@FUZZ
def test_the_parse_step_counts_every_record(records):
    parser = BatchParser()
    out = parser(RawBatch("p0", [RawRecord(r, ("p0", 0, i)) for i, r in enumerate(records)], 0.0, 1))
    held = len(parser.clocks["p0"].held)
    out += parser.flush(parser.clocks["p0"], 0.0)
    n_events = sum(len(g[1]) for tag, _k, g in out if tag == MODEL)
    n_sec = sum(len(g[1]) for tag, _k, g in out if tag == "s")
    n_dead = sum(len(g) for tag, _k, g in out if tag == DEAD)
    assert n_events + n_sec + n_dead == len(records), (held, out)


# --- corpus -------------------------------------------------------------------------------------

def _deep(n):
    return b"[" * n + b"]" * n


CORPUS = [
    # (record, expected dead-letter reason or None for an event)
    (orjson.dumps(request(T0, output_tokens=1e308, user_id="u1")), "out_of_range"),
    (dumps(request(T0, input_tokens=2 ** 64)), "out_of_range"),
    (orjson.dumps(request(T0, latency=1.7976931348623157e308)), "out_of_range"),
    (orjson.dumps(request(T0, cost_usd=1e308)), "out_of_range"),
    (b'{"timestamp": 1767571200, "service": "s", "model": "m", "latency_ms": 1e400}', "bad_json"),
    (b'{"timestamp": 1767571200, "service": "s", "model": "m", "latency_ms": NaN}', "bad_json"),
    (orjson.dumps(request(4_090_000_000.0)), None),  # 2099 parses; the parse step judges it (future_timestamp)
    (orjson.dumps(request(T0, service="s" * 900_000)), "out_of_range"),
    (orjson.dumps(request(T0, service="a\x1fb")), "invalid_name"),
    (_deep(100_000), "bad_json"),
    (b"\xff\xfe{}", "invalid_utf8"),
    (b'{"timestamp": "2026-01-05T00:00:00", "service": "s", "model": "m"}', "bad_timestamp"),
    (b'{"timestamp": true, "service": "s", "model": "m"}', "bad_timestamp"),
    (b'{"timestamp": 1e308, "service": "s", "model": "m"}', "bad_timestamp"),
    (b'{"timestamp": 1767571200, "service": "s", "model": "m", "input_tokens": 1.5}', "wrong_type"),
    (orjson.dumps(request(T0, error_type="e" * 100_000, status="error")), None),
]


@pytest.mark.parametrize("data,reason", CORPUS, ids=[f"case{i}" for i in range(len(CORPUS))])
def test_corpus(data, reason):
    events, dead, _ = parse_record(RawRecord(data, POS), max_bytes=2_000_000)
    if reason is None:
        assert len(events) == 1 and not dead
        check_event(events[0])
    else:
        assert not events and [d.reason for d in dead] == [reason]


def test_corpus_oversized_line():
    big = orjson.dumps(request(T0, attributes={"x": "y" * (50 * 1024 * 1024)}))
    _, dead, _ = parse_record(RawRecord(big, POS))
    assert [d.reason for d in dead] == ["oversized"]


def test_corpus_otlp_span_with_absurd_duration_and_tokens():
    def span(extra, start=int(T0 * 1e9), end=int(T0 * 1e9) + 10 ** 9):
        return orjson.dumps({"resourceSpans": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "svc"}}]}, "scopeSpans": [{"spans": [
                {"startTimeUnixNano": str(start), "endTimeUnixNano": str(end), "attributes": [
                    {"key": "gen_ai.request.model", "value": {"stringValue": "gpt"}}] + extra}]}]}]})

    cases = [
        (span([{"key": "gen_ai.usage.output_tokens", "value": {"doubleValue": 1e308}}]), "gen_ai.usage.output_tokens"),
        (span([], end=2 ** 64 - 1), "span duration"),
        (span([{"key": "gen_ai.usage.cost", "value": {"doubleValue": 1e300}}]), "gen_ai.usage.cost"),
        (span([{"key": "user.id", "value": {"stringValue": "u" * 1000}}]), "user.id"),
    ]
    for data, field in cases:
        events, dead, _ = parse_otlp_json(data, POS)
        assert not events and [d.reason for d in dead] == ["out_of_range"], (field, dead)
        assert field in dead[0].detail
