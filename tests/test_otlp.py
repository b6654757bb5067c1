"""OTLP spans -> LLMEvent (sentinel.otlp).

Every span here is made by the official OpenTelemetry SDK and encoded by the
official OTLP encoder; the OTLP/JSON form is protobuf's JSON mapping with the
ids rewritten from base64 to hex, which is what the Collector's Kafka exporter
writes with ``encoding: otlp_json``. No protobuf bytes are written by hand.
"""

from __future__ import annotations

import base64
import os
import sys
from typing import Any, Dict, Optional

import orjson
import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sentinel.events import LLMEvent  # noqa: E402
from sentinel.otlp import parse_otlp_json, parse_otlp_proto  # noqa: E402

POS = ("otlp_spans", 3, 42)
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
MS = 1_000_000


# ---------------------------------------------------------------------------
# Building spans with the SDK, and the two encodings
# ---------------------------------------------------------------------------


class Recorder:
    """One in-memory exporter fed by any number of TracerProviders (one per
    resource), so one message can hold several resourceSpans."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self._tracers: Dict[Any, Any] = {}

    def tracer(self, resource: Optional[Dict[str, Any]] = None, *, raw_resource: bool = False):
        attrs = {"service.name": "chatbot"} if resource is None else resource
        key = (tuple(sorted(attrs.items())), raw_resource)
        if key not in self._tracers:
            # Resource.create adds telemetry.sdk.* (and a default service.name);
            # the bare constructor does not, which lets a test drop service.name.
            res = Resource(attrs) if raw_resource else Resource.create(attrs)
            tp = TracerProvider(resource=res)
            tp.add_span_processor(SimpleSpanProcessor(self.exporter))
            self._tracers[key] = tp.get_tracer("test.genai", "1.0")
        return self._tracers[key]

    def span(
        self,
        attrs: Dict[str, Any],
        start: int = T0,
        dur_ms: float = 250.0,
        *,
        end: Optional[int] = None,
        error: bool = False,
        name: str = "chat gpt-4o",
        kind: SpanKind = SpanKind.CLIENT,
        resource: Optional[Dict[str, Any]] = None,
        raw_resource: bool = False,
    ):
        tr = self.tracer(resource, raw_resource=raw_resource)
        s = tr.start_span(name, kind=kind, attributes=attrs, start_time=start)
        if error:
            s.set_status(StatusCode.ERROR, "upstream failed")
        s.end(end_time=end if end is not None else start + int(dur_ms * MS))
        return s

    def finished(self):
        return self.exporter.get_finished_spans()

    def request(self):
        return encode_spans(self.finished())

    def proto(self) -> bytes:
        return self.request().SerializeToString()

    def json(self, **mapping_opts: Any) -> bytes:
        return to_collector_json(self.request(), **mapping_opts)


def _b64_to_hex(d: Dict[str, Any], *keys: str) -> None:
    for k in keys:
        if d.get(k):
            d[k] = base64.b64decode(d[k]).hex()


def to_collector_json(req, hex_ids: bool = True, **mapping_opts: Any) -> bytes:
    """protobuf JSON mapping -> OTLP/JSON as the Collector writes it: the only
    difference is that trace/span ids are hex strings, not base64."""
    d = MessageToDict(req, **mapping_opts)
    if hex_ids:
        for rs in d.get("resourceSpans", d.get("resource_spans", [])):
            for ss in rs.get("scopeSpans", rs.get("scope_spans", [])):
                for sp in ss.get("spans", []):
                    _b64_to_hex(sp, "traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
                    for link in sp.get("links", []):
                        _b64_to_hex(link, "traceId", "spanId", "trace_id", "span_id")
    return orjson.dumps(d)


def span_hex(span) -> str:
    return format(span.get_span_context().span_id, "016x")


def encode(rec: Recorder, enc: str) -> bytes:
    return rec.proto() if enc == "proto" else rec.json()


PARSERS = {"proto": parse_otlp_proto, "json": parse_otlp_json}
ENCODINGS = pytest.mark.parametrize("enc", ["proto", "json"])


def chat_attrs(**extra: Any) -> Dict[str, Any]:
    a = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 48,
        "server.address": "api.openai.com",
    }
    a.update(extra)
    return a


def parse(rec: Recorder, enc: str):
    return PARSERS[enc](encode(rec, enc), POS)


# ---------------------------------------------------------------------------
# Mapping
# ---------------------------------------------------------------------------


@ENCODINGS
def test_maps_every_field(enc):
    rec = Recorder()
    s = rec.span(
        chat_attrs(
            **{
                "gen_ai.server.time_to_first_token": 0.125,
                "gen_ai.usage.cost": 0.0042,
                "user.id": "u-17",
                "tenant.id": "acme",
                "client.address": "10.1.2.3",
            }
        ),
        start=T0 + 1_500 * MS,
        dur_ms=812.5,
        resource={"service.name": "chatbot", "cloud.region": "eu-west-1", "service.version": "2.1"},
    )
    events, dead, ignored = parse(rec, enc)
    assert (dead, ignored) == ([], 0)
    assert events == [
        LLMEvent(
            ts=T0 / 1e9 + 1.5,
            service="chatbot",
            model="gpt-4o",
            provider="openai",
            operation="chat",
            latency_ms=812.5,
            ttft_ms=125.0,
            input_tokens=120,
            output_tokens=48,
            cost_usd=0.0042,
            is_error=False,
            error_type=None,
            user_id="u-17",
            tenant_id="acme",
            source_ip="10.1.2.3",
            event_id=span_hex(s),
            region="eu-west-1",
        )
    ]
    ev = events[0]
    assert type(ev.ts) is float and type(ev.input_tokens) is int and type(ev.output_tokens) is int
    assert ev.key == "chatbot\x1fgpt-4o"


@ENCODINGS
def test_minimal_span_leaves_optionals_empty(enc):
    rec = Recorder()
    rec.span({"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "text-embedding-3-small"}, dur_ms=40)
    (ev,), dead, ignored = parse(rec, enc)
    assert (dead, ignored) == ([], 0)
    assert (ev.service, ev.model, ev.operation, ev.latency_ms) == ("chatbot", "text-embedding-3-small", "embeddings", 40.0)
    assert ev.provider is ev.input_tokens is ev.output_tokens is ev.ttft_ms is ev.cost_usd is None
    assert ev.user_id is ev.tenant_id is ev.source_ip is ev.region is None
    assert ev.is_error is False and ev.error_type is None


@ENCODINGS
def test_legacy_and_fallback_attributes(enc):
    rec = Recorder()
    rec.span(
        {
            # no request model: the response model is used
            "gen_ai.response.model": "claude-sonnet-4",
            "gen_ai.system": "anthropic",  # pre-1.37 name of gen_ai.provider.name
            "gen_ai.usage.prompt_tokens": 7,  # pre-1.27 names of the token counts
            "gen_ai.usage.completion_tokens": 9,
            "gen_ai.response.time_to_first_chunk": 0.5,
            "llm.usage.cost_usd": 1,
            "enduser.id": "e-1",
        }
    )
    (ev,), dead, _ = parse(rec, enc)
    assert dead == []
    assert (ev.model, ev.provider, ev.operation) == ("claude-sonnet-4", "anthropic", None)
    assert (ev.input_tokens, ev.output_tokens, ev.ttft_ms, ev.cost_usd, ev.user_id) == (7, 9, 500.0, 1.0, "e-1")


@ENCODINGS
def test_new_names_win_over_legacy(enc):
    rec = Recorder()
    rec.span(chat_attrs(**{"gen_ai.system": "azure.ai.openai", "gen_ai.usage.prompt_tokens": 1, "user.id": "u", "enduser.id": "e"}))
    (ev,), _, _ = parse(rec, enc)
    assert (ev.provider, ev.input_tokens, ev.user_id) == ("openai", 120, "u")


@ENCODINGS
def test_errors(enc):
    rec = Recorder()
    rec.span(chat_attrs(**{"error.type": "timeout"}), error=True, start=T0)
    rec.span(chat_attrs(), error=True, start=T0 + 1 * MS)  # status only
    rec.span(chat_attrs(**{"error.type": "rate_limited"}), start=T0 + 2 * MS)  # attribute only
    rec.span(chat_attrs(), start=T0 + 3 * MS)  # ok
    events, dead, _ = parse(rec, enc)
    assert dead == []
    got = sorted((e.ts, e.is_error, e.error_type) for e in events)
    assert [g[1:] for g in got] == [(True, "timeout"), (True, "error"), (True, "rate_limited"), (False, None)]


@ENCODINGS
def test_non_genai_spans_are_ignored(enc):
    rec = Recorder()
    rec.span({"http.request.method": "POST", "url.full": "https://x/y", "http.response.status_code": 500},
             name="POST /v1/chat", kind=SpanKind.SERVER, error=True)
    rec.span({"db.system.name": "postgresql", "db.query.text": "select 1"}, name="SELECT")
    rec.span({}, name="internal")
    rec.span({"user.id": "u-1", "error.type": "500"}, name="auth")  # mapped keys, but no GenAI ones
    # a tool call is a GenAI span but not a model call: ignored, not dead-lettered
    rec.span({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}, name="execute_tool search")
    rec.span(chat_attrs(), start=T0 + 5 * MS)
    events, dead, ignored = parse(rec, enc)
    assert dead == []
    assert ignored == 5
    assert len(events) == 1 and events[0].model == "gpt-4o"


@ENCODINGS
def test_several_resources_in_one_message(enc):
    rec = Recorder()
    rec.span(chat_attrs(), resource={"service.name": "chatbot"})
    rec.span(chat_attrs(), resource={"service.name": "search-api"})
    rec.span(chat_attrs(**{"gen_ai.request.model": "mistral-large"}), resource={"service.name": "search-api"})
    req = rec.request()
    assert len(req.resource_spans) == 2
    events, dead, _ = parse(rec, enc)
    assert dead == []
    assert sorted(e.key.replace("\x1f", "/") for e in events) == [
        "chatbot/gpt-4o",
        "search-api/gpt-4o",
        "search-api/mistral-large",
    ]


# ---------------------------------------------------------------------------
# Broken GenAI spans: one dead letter each, the rest of the message survives
# ---------------------------------------------------------------------------

BROKEN = [
    # (id, span kwargs, words expected in the detail)
    ("no_model", dict(attrs={"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai"}), "no model"),
    ("empty_model", dict(attrs=chat_attrs(**{"gen_ai.request.model": "", "gen_ai.response.model": ""})), "no model"),
    ("negative_tokens", dict(attrs=chat_attrs(**{"gen_ai.usage.input_tokens": -5})), "gen_ai.usage.input_tokens"),
    ("float_tokens", dict(attrs=chat_attrs(**{"gen_ai.usage.output_tokens": 12.5})), "gen_ai.usage.output_tokens"),
    ("string_tokens", dict(attrs=chat_attrs(**{"gen_ai.usage.output_tokens": "many"})), "gen_ai.usage.output_tokens"),
    ("bool_tokens", dict(attrs=chat_attrs(**{"gen_ai.usage.input_tokens": True})), "gen_ai.usage.input_tokens"),
    ("end_before_start", dict(attrs=chat_attrs(), start=T0, end=T0 - 1), "before start"),
    ("start_zero", dict(attrs=chat_attrs(), start=0, end=T0), "start time"),
    ("negative_cost", dict(attrs=chat_attrs(**{"gen_ai.usage.cost": -0.5})), "gen_ai.usage.cost"),
    ("array_model", dict(attrs=chat_attrs(**{"gen_ai.request.model": ["a", "b"], "gen_ai.response.model": ""})), "model"),
    (
        "no_service_name",
        dict(attrs=chat_attrs(), resource={"telemetry.sdk.language": "python"}, raw_resource=True),
        "service.name",
    ),
]


@ENCODINGS
@pytest.mark.parametrize("case,kwargs,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_genai_span_is_dead_lettered_alone(enc, case, kwargs, words):
    rec = Recorder()
    kwargs = dict(kwargs)
    good1 = rec.span(chat_attrs(), start=T0 + 10 * MS)
    bad = rec.span(kwargs.pop("attrs"), **kwargs)
    good2 = rec.span(chat_attrs(**{"gen_ai.request.model": "o3"}), start=T0 + 20 * MS)
    rec.span({"http.request.method": "GET"}, name="GET /health")
    data = encode(rec, enc)
    events, dead, ignored = PARSERS[enc](data, POS)

    assert sorted(e.event_id for e in events) == sorted([span_hex(good1), span_hex(good2)])
    assert ignored == 1
    assert len(dead) == 1
    dl = dead[0]
    assert dl.reason == "invalid_span"
    assert dl.position == POS
    assert words in dl.detail
    # the detail names where the span is in the message
    assert "resourceSpans[" in dl.detail and "].scopeSpans[0].spans[" in dl.detail
    idx = dl.detail.split(":")[0]
    req = rec.request()
    i, k = int(idx.split("resourceSpans[")[1].split("]")[0]), int(idx.split("spans[")[-1].split("]")[0])
    located = req.resource_spans[i].scope_spans[0].spans[k]
    assert located.span_id.hex() == span_hex(bad)
    # raw is that span alone, not the whole message
    assert len(dl.raw) < len(data)
    if enc == "proto":
        pb = PbSpan()
        pb.ParseFromString(dl.raw)
        assert pb.span_id.hex() == span_hex(bad)
        assert pb == located
    else:
        assert orjson.loads(dl.raw)["spanId"] == span_hex(bad)


# ---------------------------------------------------------------------------
# Messages that do not decode
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe\xfd garbage \x00\x01", b'{"resourceSpans": []}', b"\x0a\xff\xff\xff\xff\x0f"],
    ids=["garbage", "json_on_proto_topic", "truncated_length"],
)
def test_undecodable_protobuf(data):
    events, dead, ignored = parse_otlp_proto(data, POS)
    assert (events, ignored) == ([], 0)
    assert len(dead) == 1
    assert dead[0].reason == "bad_protobuf" and dead[0].raw == data and dead[0].position == POS


def test_truncated_protobuf_message():
    rec = Recorder()
    for n in range(5):
        rec.span(chat_attrs(), start=T0 + n * MS)
    data = rec.proto()
    events, dead, _ = parse_otlp_proto(data[: len(data) // 2], POS)
    assert events == [] and [d.reason for d in dead] == ["bad_protobuf"]


def test_truncated_json():
    rec = Recorder()
    rec.span(chat_attrs())
    data = rec.json()[:-7]
    events, dead, ignored = parse_otlp_json(data, POS)
    assert (events, ignored) == ([], 0)
    assert [(d.reason, d.raw, d.position) for d in dead] == [("bad_json", data, POS)]


@pytest.mark.parametrize("data", [b"[]", b'[{"resourceSpans": []}]', b'"x"', b"12", b"null"])
def test_json_not_an_object(data):
    events, dead, ignored = parse_otlp_json(data, POS)
    assert (events, ignored) == ([], 0)
    assert [(d.reason, d.raw) for d in dead] == [("not_object", data)]


def test_json_object_that_is_not_otlp():
    data = b'{"timestamp": 1767225600, "service": "a", "model": "b"}'
    events, dead, _ = parse_otlp_json(data, POS)
    assert events == [] and [d.reason for d in dead] == ["not_otlp"]
    _, dead, _ = parse_otlp_json(b'{"resourceSpans": {"a": 1}}', POS)
    assert [d.reason for d in dead] == ["not_otlp"]


def test_json_invalid_utf8():
    events, dead, _ = parse_otlp_json(b'{"resourceSpans": "\xff"}', POS)
    assert events == [] and [d.reason for d in dead] == ["invalid_utf8"]


@ENCODINGS
def test_empty_request(enc):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    data = req.SerializeToString() if enc == "proto" else to_collector_json(req)
    assert PARSERS[enc](data, POS) == ([], [], 0)


def test_json_structural_garbage_inside_a_valid_message():
    rec = Recorder()
    good = rec.span(chat_attrs())
    d = orjson.loads(rec.json())
    d["resourceSpans"][0]["scopeSpans"][0]["spans"].append("not a span")
    d["resourceSpans"].append(17)
    events, dead, _ = parse_otlp_json(orjson.dumps(d), POS)
    assert [e.event_id for e in events] == [span_hex(good)]
    assert sorted(x.detail for x in dead) == [
        "resourceSpans[0].scopeSpans[0].spans[1]: not an object",
        "resourceSpans[1]: not an object",
    ]


# ---------------------------------------------------------------------------
# The JSON variants the Collector (or others) may write
# ---------------------------------------------------------------------------


def _mixed_recorder():
    rec = Recorder()
    rec.span(chat_attrs(**{"error.type": "timeout", "gen_ai.usage.cost": 0.25}), error=True, start=T0)
    rec.span(chat_attrs(**{"gen_ai.request.model": "o3", "user.id": "u-9"}), start=T0 + 7 * MS, dur_ms=3)
    rec.span(chat_attrs(**{"gen_ai.usage.input_tokens": 0}), error=True, start=T0 + 9 * MS)
    rec.span({"http.request.method": "GET"})
    return rec


def _attrs_of_all_spans(d):
    for rs in d["resourceSpans"]:
        yield rs["resource"]["attributes"]
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                yield sp["attributes"]


def test_json_and_proto_give_the_same_events():
    rec = _mixed_recorder()
    p = parse_otlp_proto(rec.proto(), POS)
    j = parse_otlp_json(rec.json(), POS)
    assert len(p[0]) == 3
    assert p[0] == j[0] and p[2] == j[2] == 1 and p[1] == j[1] == []


def test_json_numbers_instead_of_strings_and_integer_status():
    """int64 as JSON numbers, times as numbers, status code 2 instead of the name."""
    rec = _mixed_recorder()
    expected = parse_otlp_proto(rec.proto(), POS)
    d = orjson.loads(rec.json(use_integers_for_enums=True))
    for rs in d["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                sp["startTimeUnixNano"] = int(sp["startTimeUnixNano"])
                sp["endTimeUnixNano"] = int(sp["endTimeUnixNano"])
    n = 0
    for attrs in _attrs_of_all_spans(d):
        for kv in attrs:
            if "intValue" in kv["value"]:
                kv["value"]["intValue"] = int(kv["value"]["intValue"])
                n += 1
    assert n > 0
    codes = {sp.get("status", {}).get("code") for rs in d["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]}
    assert 2 in codes
    assert parse_otlp_json(orjson.dumps(d), POS) == expected


def test_json_snake_case_keys():
    rec = _mixed_recorder()
    expected = parse_otlp_proto(rec.proto(), POS)
    data = rec.json(preserving_proto_field_name=True)
    assert b"resource_spans" in data and b"start_time_unix_nano" in data and b"string_value" in data
    assert parse_otlp_json(data, POS) == expected


def test_json_base64_ids_are_converted_to_hex():
    """protobuf's own JSON mapping (ids in base64) still yields hex event ids."""
    rec = _mixed_recorder()
    expected = parse_otlp_proto(rec.proto(), POS)
    data = to_collector_json(rec.request(), hex_ids=False)
    assert parse_otlp_json(data, POS) == expected


# ---------------------------------------------------------------------------
# Many spans per message
# ---------------------------------------------------------------------------


def _many(n: int) -> Recorder:
    rec = Recorder()
    models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-pro"]
    for i in range(n):
        rec.span(
            chat_attrs(
                **{
                    "gen_ai.request.model": models[i % 4],
                    "gen_ai.usage.input_tokens": 100 + i,
                    "gen_ai.usage.output_tokens": i,
                    "user.id": f"u-{i % 13}",
                }
            ),
            start=T0 + i * 10 * MS,
            dur_ms=100 + i,
            error=(i % 17 == 0),
            resource={"service.name": f"svc-{i % 3}"},
        )
    return rec


@ENCODINGS
def test_many_spans_in_one_message(enc):
    rec = _many(200)
    assert len(rec.finished()) == 200
    events, dead, ignored = parse(rec, enc)
    assert (len(events), dead, ignored) == (200, [], 0)
    by_tokens = {e.input_tokens: e for e in events}
    assert sorted(by_tokens) == list(range(100, 300))
    for i in range(200):
        e = by_tokens[100 + i]
        assert e.output_tokens == i
        assert e.ts == (T0 + i * 10 * MS) / 1e9
        assert e.latency_ms == 100 + i
        assert e.service == f"svc-{i % 3}"
        assert e.is_error == (i % 17 == 0)
    assert len({e.event_id for e in events}) == 200
