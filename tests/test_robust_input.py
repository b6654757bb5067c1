"""Input robustness: no valid record crashes a step, event time one sender cannot poison, bounded keys,
and every input record counted once."""

from datetime import timedelta

import orjson
import pytest
from bytewax.dataflow import Dataflow
import bytewax.operators as op
from bytewax.operators import StatefulLogic
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from operators.guard import StepFailure, guarded, is_failure
from operators.parse import DEAD, MODEL, OVERFLOW, SECURITY, BatchParser, KeyCaps
from sentinel.events import RawBatch, RawRecord
from sentinel.metrics import get_metrics
from sentinel.parse import BadRecord, parse_json_record
from tests.helpers import T0, batches, request, run_flow, steady

OUTCOMES = ("ok", "security", "dead_letter", "ignored", "late", "duplicate")


def outcome_counts():
    ev = get_metrics().events
    return {o: ev.labels(outcome=o)._value.get() for o in OUTCOMES}


def delta(before):
    after = outcome_counts()
    return {o: after[o] - before[o] for o in OUTCOMES}


# --- ranges --------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("output_tokens", 1e308), ("input_tokens", 10 ** 12), ("latency_ms", 1e308), ("ttft_ms", 1e300),
    ("cost_usd", 1e308), ("latency_ms", -1.0),
])
def test_a_value_beyond_its_range_is_out_of_range_naming_the_field(field, value):
    with pytest.raises(BadRecord) as ex:
        parse_json_record(orjson.dumps(request(T0, **{field: value})))
    assert ex.value.reason == "out_of_range"
    assert ex.value.detail.startswith(field + ":")


def test_plausible_extremes_still_pass():
    ev = parse_json_record(orjson.dumps(request(T0, latency=3_600_000.0, output_tokens=2_000_000, cost_usd=900.0)))
    assert ev.output_tokens == 2_000_000 and ev.latency_ms == 3_600_000.0


def test_a_huge_name_is_not_kept():
    with pytest.raises(BadRecord) as ex:
        parse_json_record(orjson.dumps(request(T0, service="s" * 900_000)))
    assert ex.value.reason == "out_of_range" and ex.value.detail == "service: 900000 characters, limit 256"
    with pytest.raises(BadRecord) as ex:
        parse_json_record(orjson.dumps(request(T0, user_id="u" * 10_000)))
    assert ex.value.detail.startswith("user_id:")
    # A long error message is cut, not refused: the error still counts.
    ev = parse_json_record(orjson.dumps(request(T0, status="error", error_type="x" * 5000)))
    assert ev.is_error and len(ev.error_type) == 256


def test_the_key_separator_in_a_name_cannot_merge_two_keys():
    for obj in (request(T0, service="a\x1fb", model="c"), request(T0, service="a", model="b\x1fc")):
        with pytest.raises(BadRecord) as ex:
            parse_json_record(orjson.dumps(obj))
        assert ex.value.reason == "invalid_name"


def _with_huge_tokens():
    evs = steady(40)
    evs += [request(T0 + 600 + i, user_id="u1", output_tokens=1e308) for i in range(3)]
    return sorted(evs, key=lambda e: e["timestamp"])


def test_huge_token_counts_are_dead_letters_and_the_flow_goes_on(tmp_path):
    """Three records with output_tokens 1e308 for one user: out_of_range, with and without recovery."""
    items = batches(_with_huge_tokens())
    _, dead = run_flow(items)
    assert [d.reason for d in dead] == ["out_of_range"] * 3
    assert all(d.detail.startswith("output_tokens:") for d in dead)

    init_db_dir(tmp_path, 1)
    rc = RecoveryConfig(str(tmp_path))
    from flows import build_flow
    from sentinel.config import load_config_dict

    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}})
    cut = len(items) // 2
    crashed = items[:cut] + [TestingSource.ABORT()] + items[cut:]
    for _ in range(3):  # the abort fires once; then two resumptions finish the run
        dead = []
        run_main(build_flow(cfg, source=TestingSource(crashed), alert_sinks=[TestingSink([])],
                            dead_letter_sink=TestingSink(dead)), epoch_interval=timedelta(0), recovery_config=rc)


def test_huge_token_counts_do_not_crash_the_flow_with_the_ranges_lifted():
    # Arithmetic on a value that passes must not overflow either (token use is capped per request).
    _, dead = run_flow(batches(_with_huge_tokens()), {"limits": {"tokens": 10 ** 309}})
    assert dead == []


# --- the last line of defence -------------------------------------------------------------------

class _Fragile(StatefulLogic):
    """Sums the numbers of its key; a batch holding "boom" raises (a step with a bug)."""

    def __init__(self, state):
        self.total = state or 0

    def on_item(self, value):
        if "boom" in value:
            raise OverflowError("int too large to convert to float")
        self.total += sum(value)
        return [self.total], StatefulLogic.RETAIN

    def snapshot(self):
        return self.total


def _fragile_flow(items, out, failures):
    flow = Dataflow("fragile")
    s = op.input("in", flow, TestingSource(items))
    s = op.stateful("sum", op.key_on("k", s, lambda _: "key"), guarded("sum", _Fragile))
    s = op.map("unkey", s, lambda kv: kv[1])
    b = op.branch("failures", s, is_failure)
    op.output("out", b.falses, TestingSink(out))
    op.output("dlq", b.trues, TestingSink(failures))
    return flow


def test_a_batch_that_raises_in_a_step_is_a_dead_letter_and_no_crash_loop(tmp_path):
    errors = get_metrics().step_errors.labels(step="sum")
    before = errors._value.get()
    items = [[1, 2], [3, "boom"], TestingSource.ABORT(), [4]]
    init_db_dir(tmp_path, 1)
    rc = RecoveryConfig(str(tmp_path))
    first, first_dl = [], []
    run_main(_fragile_flow(items, first, first_dl), epoch_interval=timedelta(0), recovery_config=rc)
    second, second_dl = [], []
    run_main(_fragile_flow(items, second, second_dl), epoch_interval=timedelta(0), recovery_config=rc)
    assert first == [3] and second[-1] == 7  # the bad batch is skipped, the key's state goes on
    dl = (first_dl + second_dl)[0]
    assert isinstance(dl, StepFailure) and dl.dead_letter.reason == "step_error"
    assert dl.dead_letter.detail.startswith("step sum: OverflowError")
    assert errors._value.get() - before >= 1


def test_a_snapshot_a_step_cannot_take_up_starts_the_key_afresh():
    def strict(state):
        if state == "old format":
            raise TypeError("unexpected state")
        return _Fragile(state)

    logic = guarded("strict", strict)("old format")
    assert logic.on_item([5])[0] == [5]


# --- event time ---------------------------------------------------------------------------------

def _late():
    return get_metrics().events.labels(outcome="late")._value.get()


@pytest.mark.parametrize("first", [True, False])
def test_one_event_dated_2099_makes_no_later_event_late(first):
    good = steady(60)  # 3,600 events of one key
    poison = request(4_090_000_000.0)  # 2099-08-09
    evs = [poison] + good if first else good[:100] + [poison] + good[100:]
    items = batches([poison], size=1) + batches(good) if first else batches(evs)
    clean_alerts, _ = run_flow(batches(good))
    late = _late()
    before = outcome_counts()
    alerts, dead = run_flow(items)
    assert _late() == late
    assert [d.reason for d in dead] == ["future_timestamp"]
    assert "2099-08-09" in dead[0].detail
    assert alerts == [] or [a["alert_id"] for a in alerts] == [a["alert_id"] for a in clean_alerts]
    d = delta(before)
    assert d["ok"] == len(good) and d["dead_letter"] == 1


def test_a_partition_that_resumes_after_a_gap_jumps_and_loses_nothing():
    """A replay across two quiet hours: the events after the gap are ahead of the partition, and all go on."""
    evs = steady(40) + steady(40, seed=2, start=T0 + 40 * 60 + 2 * 3600)
    late = _late()
    before = outcome_counts()
    _, dead = run_flow(batches(evs))
    assert dead == [] and _late() == late
    assert delta(before)["ok"] == len(evs)


def test_a_quiet_partition_with_few_events_ahead_is_judged_at_end_of_input():
    evs = steady(20)
    tail = [request(T0 + 5 * 3600 + i) for i in range(2)]  # two stray events five hours ahead, then nothing
    _, dead = run_flow(batches(evs) + batches(tail, size=2))
    assert [d.reason for d in dead] == ["future_timestamp", "future_timestamp"]
    many = [request(T0 + 5 * 3600 + i) for i in range(5)]  # five: the partition moved on
    _, dead = run_flow(batches(evs) + batches(many, size=5))
    assert dead == []


def test_max_future_is_configurable():
    evs = steady(10) + [request(T0 + 10 * 60 + 200)] + steady(5, start=T0 + 10 * 60, seed=3)
    _, dead = run_flow(batches(evs))
    assert dead == []  # 200 s ahead: within the default 10 minutes
    _, dead = run_flow(batches(evs), {"limits": {"max_future": "1m"}})
    assert [d.reason for d in dead] == ["future_timestamp"]


# --- counting -----------------------------------------------------------------------------------

def test_every_record_ends_in_exactly_one_outcome():
    good = steady(40)
    sec = [{"event_type": "security", "timestamp": T0 + 60 * i, "source": "10.0.0.1", "kind": "jailbreak"}
           for i in range(20)]
    bad = [b"not json", b"[1]", orjson.dumps(request(T0 + 1200, output_tokens=1e308)),
           orjson.dumps(request(T0 + 1200, service="s" * 300))]
    future = [request(4_090_000_000.0)]
    late = [request(T0 + 5 + i) for i in range(100)]  # 100 events of minute 0, sent after minute 39
    ignored_otlp = orjson.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "web"}}]}, "scopeSpans": [{"spans": [
            {"name": "GET /", "startTimeUnixNano": str(int(T0 * 1e9)), "endTimeUnixNano": str(int(T0 * 1e9) + 5),
             "attributes": [{"key": "http.method", "value": {"stringValue": "GET"}}]}]}]}]})
    ordered = sorted(good + sec, key=lambda e: e["timestamp"])
    items = batches(ordered[:1000] + bad + future + ordered[1000:]) + batches(late)
    items.append(RawBatch("p0", [RawRecord(ignored_otlp, ("p0", 0, 99999), "otlp_json")], 0.0, 1))
    records = len(good) + len(sec) + len(bad) + len(future) + len(late) + 1
    before = outcome_counts()
    run_flow(items)
    d = delta(before)
    assert sum(d.values()) == records, d
    assert d["late"] == 100 and d["dead_letter"] == 5 and d["security"] == 20 and d["ignored"] == 1, d


# --- bounded keys -------------------------------------------------------------------------------

def test_keys_beyond_the_caps_are_folded_into_overflow_keys():
    parser = BatchParser(caps=KeyCaps(max_keys=50, max_models_per_service=3, max_services=10, max_sources=5,
                                      idle=3600.0))
    folded = get_metrics().events_folded
    before = {k: folded.labels(kind=k)._value.get() for k in ("service", "model", "source")}
    recs = [orjson.dumps(request(T0 + i, service=f"svc{i}", model="m")) for i in range(20)]
    recs += [orjson.dumps(request(T0 + 20 + i, service="svc0", model=f"m{i}")) for i in range(6)]
    recs += [orjson.dumps({"event_type": "security", "timestamp": T0 + 30, "source": f"ip{i}", "kind": "jailbreak"})
             for i in range(8)]
    out = parser(RawBatch("p0", [RawRecord(r, ("p0", 0, i)) for i, r in enumerate(recs)], 1000.0, 1))
    keys = {k: len(g[1]) for tag, k, g in out if tag == MODEL}
    assert keys[OVERFLOW + "\x1f" + OVERFLOW] == 10  # services 10..19
    assert keys["svc0\x1f" + OVERFLOW] == 4  # svc0's models beyond its first three (m, m0, m1)
    assert len(keys) == 10 + 2 + 2  # svc0..svc9 with m, svc0 with m0 and m1, the two overflow keys
    sources = {k: len(g[1]) for tag, k, g in out if tag == SECURITY}
    assert sources[OVERFLOW] == 3 and len(sources) == 6
    assert not [o for o in out if o[0] == DEAD]
    assert {k: folded.labels(kind=k)._value.get() - before[k] for k in before} == {
        "service": 10, "model": 4, "source": 3}
    # Keys idle longer than the eviction time free their places.
    later = [orjson.dumps(request(T0 + 100, service="fresh", model="m"))]
    out = parser(RawBatch("p0", [RawRecord(later[0], ("p0", 0, 99))], 1000.0 + 7200, 1))
    assert [k for tag, k, _ in out if tag == MODEL] == ["fresh\x1fm"]


def test_a_flood_of_services_keeps_at_most_the_capped_keys():
    evs = [request(T0 + i * 0.01, service=f"flood-{i}", user_id=f"user-{i}") for i in range(3000)]
    keys = get_metrics().keys_active.labels(kind="model")
    before = keys._value.get()
    _, dead = run_flow(batches(evs), {"limits": {"max_services": 100, "max_keys": 100}})
    assert dead == []
    assert keys._value.get() - before <= 101


def test_a_first_batch_that_ends_past_a_gap_loses_nothing():
    """A partition's first batch holds its first stretch and the start of the next, 35 minutes
    later (an unkeyed producer's partitioner fills one partition in stretches): the first
    decision takes the stretch, and the events past the gap are judged by what follows, not
    dead-lettered with it."""
    evs = steady(6) + steady(30, seed=2, start=T0 + 41 * 60)
    late = _late()
    before = outcome_counts()
    _, dead = run_flow(batches(evs, size=400))
    assert dead == [] and _late() == late
    assert delta(before)["ok"] == len(evs)
