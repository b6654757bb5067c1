"""The JSON edge: every kind of bad record becomes a dead letter with a reason."""

import orjson
import pytest

from sentinel.events import LLMEvent, RawRecord, SecurityEvent
from sentinel.parse import BadRecord, dead_letter_to_dict, parse_json_record, parse_timestamp
from sentinel.records import parse_record

GOOD = {
    "timestamp": "2026-01-05T10:00:00.250Z",
    "service": "support-bot",
    "model": "gpt-4o",
    "provider": "openai",
    "latency_ms": 812.5,
    "ttft_ms": 120,
    "input_tokens": 900,
    "output_tokens": 210,
    "cost_usd": 0.0042,
    "status": "error",
    "error_type": "timeout",
    "user_id": "u1",
}


def test_canonical_event_is_parsed():
    ev = parse_json_record(orjson.dumps(GOOD))
    assert isinstance(ev, LLMEvent)
    assert ev.ts == pytest.approx(1767607200.25)
    assert (ev.service, ev.model, ev.provider) == ("support-bot", "gpt-4o", "openai")
    assert ev.latency_ms == 812.5 and ev.ttft_ms == 120.0
    assert (ev.input_tokens, ev.output_tokens) == (900, 210)
    assert ev.is_error and ev.error_type == "timeout"
    assert ev.actor == "user:u1"
    assert ev.key == "support-bot\x1fgpt-4o"


def test_epoch_seconds_and_offsets():
    assert parse_timestamp(1767607200) == 1767607200.0
    assert parse_timestamp("2026-01-05T12:00:00+02:00") == 1767607200.0
    with pytest.raises(BadRecord) as ex:
        parse_timestamp("2026-01-05T10:00:00")
    assert ex.value.reason == "bad_timestamp" and "offset" in ex.value.detail


def test_security_event():
    ev = parse_json_record(b'{"event_type":"security","timestamp":1767607200,"source":"1.2.3.4","kind":"jailbreak"}')
    assert isinstance(ev, SecurityEvent)
    assert (ev.source, ev.kind) == ("1.2.3.4", "jailbreak")


@pytest.mark.parametrize(
    "raw, reason, needle",
    [
        (b"garbage \x00 here", "bad_json", "not JSON"),
        (b'{"timestamp": "2026-01-05T10:00:00Z", "service": "a", "mod', "bad_json", "not JSON"),
        (b"[1, 2, 3]", "not_object", "list"),
        (b'"just a string"', "not_object", "str"),
        (b'{"service": "a", "model": "b"}', "missing_field", "timestamp"),
        (b'{"timestamp": 1767607200, "model": "b"}', "missing_field", "service"),
        (b'{"timestamp": 1767607200, "service": 5, "model": "b"}', "wrong_type", "service"),
        (b'{"timestamp": 1767607200, "service": "a", "model": "b", "latency_ms": "fast"}', "wrong_type", "latency_ms"),
        (b'{"timestamp": 1767607200, "service": "a", "model": "b", "latency_ms": -3}', "out_of_range", "latency_ms"),
        (b'{"timestamp": 1767607200, "service": "a", "model": "b", "input_tokens": 1.5}', "wrong_type", "input_tokens"),
        (b'{"timestamp": 1767607200, "service": "a", "model": "b", "output_tokens": true}', "wrong_type", "output_tokens"),
        (b'{"timestamp": 1767607200, "service": "a", "model": "b", "status": "meh"}', "wrong_type", "status"),
        (b'{"timestamp": true, "service": "a", "model": "b"}', "bad_timestamp", "bool"),
        (b'{"timestamp": "yesterday", "service": "a", "model": "b"}', "bad_timestamp", "RFC 3339"),
        (b'{"timestamp": 99, "service": "a", "model": "b"}', "bad_timestamp", "range"),
        (b'{"timestamp": 1767607200, "event_type": "nope", "service": "a", "model": "b"}', "unknown_event_type", "event_type"),
        (b'{"timestamp": 1767607200, "event_type": "security", "kind": "jailbreak"}', "missing_field", "source"),
        (b'{"timestamp": 1767607200, "service": "caf\xe9", "model": "b"}', "invalid_utf8", "UTF-8"),
    ],
)
def test_bad_records_are_dead_letters(raw, reason, needle):
    events, dead, ignored = parse_record(RawRecord(raw, ("events.jsonl", 0, 42)))
    assert events == [] and ignored == 0
    assert len(dead) == 1
    dl = dead[0]
    assert dl.reason == reason
    assert needle in dl.detail
    assert dl.position == ("events.jsonl", 0, 42)
    assert dl.raw == raw


def test_oversized_record():
    big = b'{"timestamp": 1767607200, "service": "a", "model": "b", "x": "' + b"y" * 2_000_000 + b'"}'
    events, dead, _ = parse_record(RawRecord(big, ("t", 3, 7)), max_bytes=1_000_000)
    assert not events and dead[0].reason == "oversized"
    assert str(len(big)) in dead[0].detail


def test_dead_letter_record_keeps_original_bytes():
    _, dead, _ = parse_record(RawRecord(b"\xff\xfe not utf8", ("llm.telemetry", 2, 1001)))
    d = dead_letter_to_dict(dead[0], 1767607200.0)
    assert d["reason"] in ("bad_json", "invalid_utf8")
    assert (d["source"], d["partition"], d["offset"]) == ("llm.telemetry", 2, 1001)
    import base64

    assert base64.b64decode(d["raw_base64"]) == b"\xff\xfe not utf8"
    assert d["received_at"].startswith("2026-01-05T10:00:00")

    _, dead, _ = parse_record(RawRecord(b"{oops", ("f", 0, 1)))
    assert dead_letter_to_dict(dead[0], 0.0)["raw"] == "{oops"


def test_huge_dead_letter_is_truncated_with_size():
    raw = b"x" * 200_000
    _, dead, _ = parse_record(RawRecord(raw, ("f", 0, 1)))
    d = dead_letter_to_dict(dead[0], 0.0)
    assert d["raw_truncated"] is True and d["raw_size"] == 200_000
    assert len(d["raw"]) == 64 * 1024


# -- duplicate event ids ------------------------------------------------------


def test_recent_ids_remember_a_bounded_recent_set():
    from operators.parse import RecentIds

    ids = RecentIds(10)
    assert [ids.check_add(i) for i in ("a", "b", "a")] == [False, False, True]
    for i in range(100):
        ids.check_add(str(i))
        assert len(ids) <= 10
    assert ids.check_add("99") and ids.check_add("95")  # the latest capacity/2 are always kept
    assert not ids.check_add("a")  # long gone: seen as new


def test_parser_drops_repeated_event_ids_and_counts_them():
    from operators.parse import MODEL, SECURITY, BatchParser
    from sentinel.events import RawBatch
    from sentinel.metrics import get_metrics

    def rec(obj, off):
        return RawRecord(orjson.dumps(obj), ("p0", 0, off))

    sec = {"timestamp": GOOD["timestamp"], "event_type": "security", "source": "10.0.0.1",
           "kind": "prompt_injection", "service": "support-bot", "event_id": "s-1"}
    recs = [rec(dict(GOOD, event_id="e-1"), 0), rec(dict(GOOD, event_id="e-2"), 1), rec(dict(GOOD, event_id="e-1"), 2),
            rec(dict(GOOD), 3), rec(dict(GOOD), 4),  # no id: never dropped
            rec(sec, 5), rec(sec, 6)]
    dup = get_metrics().events.labels(outcome="duplicate")
    before = dup._value.get()
    out = BatchParser(dedup_ids=1000)(RawBatch("p0", recs, 0.0, 1))
    models = [evs for tag, _k, (_p, evs, _a, _n) in [o for o in out if o[0] == MODEL]]
    secs = [evs for tag, _k, (_p, evs, _a, _n) in [o for o in out if o[0] == SECURITY]]
    assert [e.event_id for e in models[0]] == ["e-1", "e-2", None, None]
    assert [e.event_id for e in secs[0]] == ["s-1"]
    assert dup._value.get() - before == 2
    # A later batch (a producer's retry) is checked against the same memory; off with 0.
    parser = BatchParser(dedup_ids=1000)
    parser(RawBatch("p0", recs[:2], 0.0, 1))
    again = parser(RawBatch("p0", recs[:2], 0.0, 1))
    assert [o for o in again if o[0] == MODEL] == []
    off = BatchParser(dedup_ids=0)(RawBatch("p0", recs, 0.0, 1))
    assert sum(len(o[2][1]) for o in off if o[0] == MODEL) == 5
