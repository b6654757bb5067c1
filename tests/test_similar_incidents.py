"""``similar_incidents`` from the Qdrant incident memory: real embedded Qdrant, no mocks."""

from __future__ import annotations

import logging
from datetime import timedelta
import uuid
from typing import Any, Dict, List

import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from qdrant_client import QdrantClient, models

from flows import build_flow, make_alert_sinks, make_similar_incidents
from operators.alerts import make_alert, resolved
from sinks.similar import SimilarIncidents
from sentinel.config import ConfigError, QdrantSink, load_config_dict
from sentinel.metrics import get_metrics
from sinks.base import encode_alert
from sinks.qdrant import SIMILAR_LIMIT, SIMILAR_MIN_SCORE, IncidentMemory, QdrantWriter, _registry, shared_client
from tests.helpers import T0, batches, steady

Alert = Dict[str, Any]


def _collection() -> str:
    return "similar_" + uuid.uuid4().hex[:8]


def _write(writer: QdrantWriter, *alerts: Alert) -> None:
    writer.write(list(alerts), [encode_alert(a) for a in alerts])


def _latency(t: float, service: str, model: str = "m1", observed: float = 4000.0, severity: str = "high",
             status: str = "firing") -> Alert:
    return make_alert("latency", "latency_p95_ms", observed, 800.0, 0.97, severity, "robust", t, service, model,
                      status=status)


def _sink_errors() -> float:
    return get_metrics().sink_errors.labels(sink="qdrant")._value.get()


# -- what counts as similar ----------------------------------------------------


def test_second_latency_incident_lists_the_first_not_itself_nor_other_types() -> None:
    collection = _collection()
    writer = QdrantWriter(":memory:", collection)
    memory = IncidentMemory(":memory:", collection)
    try:
        # An earlier latency incident on svc-a: page, escalation, resolve.
        first = _latency(T0, "svc-a")
        first_up = _latency(T0, "svc-a", observed=6000.0, severity="critical", status="escalated")
        # An earlier traffic drop on svc-c: a different kind of anomaly.
        drop = make_alert("traffic", "request_count", 5.0, 60.0, 0.99, "high", "robust", T0 + 600, "svc-c", "m3")
        # An earlier episode of the same key and type as the new incident.
        b_before = _latency(T0 - 86400, "svc-b")
        # The new incident on svc-b: its page and an update are already indexed.
        second = _latency(T0 + 3600, "svc-b", observed=3600.0)
        second_update = second.copy(status="updated", alert_id="b-update-1")
        # An incident that began later than the one asked about.
        later = _latency(T0 + 7200, "svc-d")
        # A resolve with no other message of its incident indexed (a resolve is not an incident).
        lone_resolve = resolved(_latency(T0 + 1200, "svc-e"), T0 + 1800)
        _write(writer, first, first_up, resolved(first, T0 + 900), drop, b_before, second, second_update, later,
               lone_resolve)

        second_esc = _latency(T0 + 3600, "svc-b", observed=5000.0, severity="critical", status="escalated")
        found = memory.similar(second_esc)
        # Each earlier incident once, as its closest message: svc-a's, and svc-b's own earlier episode
        # (a recurrence); not the new incident's page or update, nor the later one.
        assert sorted(s["alert_id"] for s in found) == sorted([first_up.alert_id, b_before.alert_id]), found
        best = next(s for s in found if s["alert_id"] == first_up.alert_id)
        assert best == {
            "alert_id": first_up.alert_id,
            "fingerprint": first.fingerprint,
            "type": "latency",
            "service": "svc-a",
            "model": "m1",
            "score": best["score"],
            "event_time": first.event_time,
            "summary": first_up.summary,
        }
        assert SIMILAR_MIN_SCORE <= best["score"] <= 1.0 and best["score"] == round(best["score"], 6)

        # The traffic drop is left out by its score alone: without a minimum it is listed, below 0.9.
        loose = writer.similar(second_esc, limit=10, min_score=0.0)
        by_id = {s["alert_id"]: s for s in loose}
        assert set(by_id) == {first_up.alert_id, b_before.alert_id, drop.alert_id}, loose
        assert by_id[drop.alert_id]["score"] < SIMILAR_MIN_SCORE
        assert [s["score"] for s in loose] == sorted((s["score"] for s in loose), reverse=True)

        # Only incidents that began earlier: svc-a's lists svc-b's day-old episode, which lists nothing.
        assert [s["alert_id"] for s in memory.similar(first)] == [b_before.alert_id]
        assert memory.similar(b_before) == []
    finally:
        writer.close()


def test_limit_caps_distinct_incidents() -> None:
    collection = _collection()
    writer = QdrantWriter(":memory:", collection)
    try:
        past = [_latency(T0 + i * 3600, f"svc-{i}", observed=4000.0 + 100 * i) for i in range(5)]
        _write(writer, *past)
        new = _latency(T0 + 10 * 3600, "svc-new", observed=4050.0)
        found = IncidentMemory(":memory:", collection, limit=2).similar(new)
        assert len(found) == 2
        assert {s["service"] for s in found} <= {p.service for p in past}
        assert IncidentMemory(":memory:", collection, limit=0).similar(new) == []
    finally:
        writer.close()


# -- one client per location per process --------------------------------------


def test_writers_and_lookups_share_one_client_per_location(tmp_path) -> None:
    path = str(tmp_path / "qdrant")
    w1 = QdrantWriter(path, "incidents")
    w2 = QdrantWriter(str(tmp_path / "." / "qdrant"), "incidents")  # same path, second worker: no lock error
    try:
        assert w1._client is w2._client
        _write(w1, _latency(T0, "svc-a"))
        # A lookup while the writers are open borrows their client (an embedded path opens once).
        assert [s["service"] for s in IncidentMemory(path, "incidents").similar(_latency(T0 + 3600, "svc-b"))] == [
            "svc-a"]
    finally:
        w1.close()
        assert len([k for k in _registry if k.endswith("qdrant")]) == 1  # w2 still holds it
        w2.close()
    assert not [k for k in _registry if k.endswith("qdrant")]
    # The last close closed the client: another client may open the path now.
    other = QdrantClient(path=path)
    try:
        assert other.count("incidents").count == 1
    finally:
        other.close()
    # And a lookup with no writer open opens the path for the lookup only.
    assert [s["service"] for s in IncidentMemory(path, "incidents").similar(_latency(T0 + 3600, "svc-b"))] == [
        "svc-a"]
    assert not [k for k in _registry if k.endswith("qdrant")]


def test_memory_location_is_shared_and_closed_with_the_last_handle() -> None:
    collection = _collection()
    h = shared_client(":memory:")
    try:
        writer = QdrantWriter(":memory:", collection)
        assert writer._client is h.client
        writer.close()
        assert h.client.collection_exists(collection)  # still open: h holds it
    finally:
        h.close()
        h.close()  # idempotent
    assert ":memory:" not in _registry
    fresh = shared_client(":memory:")
    try:
        assert not fresh.client.collection_exists(collection)
    finally:
        fresh.close()


# -- failures ------------------------------------------------------------------


def test_failed_lookup_sends_the_alert_with_no_similar_incidents(caplog) -> None:
    collection = _collection()
    holder = shared_client(":memory:")
    try:
        # A collection the query cannot run on (8-dim vectors): every lookup fails.
        holder.client.create_collection(
            collection, vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE))
        holder.client.upsert(collection, points=[models.PointStruct(id=1, vector=[0.1] * 8, payload={})])
        step = SimilarIncidents(IncidentMemory(":memory:", collection))
        alert = _latency(T0, "svc-a")
        alert.similar_incidents = ["untouched"]
        before = _sink_errors()
        with caplog.at_level(logging.WARNING, logger="sinks.similar"):
            out1 = step(alert)
            out2 = step(_latency(T0 + 60, "svc-b"))
        assert out1.similar_incidents == [] and out2.similar_incidents == []
        assert out1.copy(similar_incidents=[]) == alert.copy(similar_incidents=[])
        assert alert.similar_incidents == ["untouched"]  # the input is not changed
        assert _sink_errors() - before == 2
        warnings = [r for r in caplog.records if r.name == "sinks.similar"]
        assert len(warnings) == 1, warnings  # rate limited
        assert collection in warnings[0].getMessage()
    finally:
        holder.close()


def test_lookup_before_anything_is_indexed_is_not_an_error() -> None:
    before = _sink_errors()
    out = SimilarIncidents(IncidentMemory(":memory:", _collection()))(_latency(T0, "svc-a"))
    assert out.similar_incidents == []
    assert _sink_errors() == before


# -- in the flow ---------------------------------------------------------------


def _two_incidents() -> List[dict]:
    """svc-a and svc-b, latency x5 on svc-a at minutes 60-70 and on svc-b at minutes 110-120."""

    def slow(start):
        return lambda ts, lat: lat * 5 if T0 + start * 60 <= ts < T0 + (start + 10) * 60 else lat

    evs = steady(150, seed=1, service="svc-a", latency_fn=slow(60)) + steady(
        150, seed=2, service="svc-b", latency_fn=slow(110))
    evs.sort(key=lambda e: e["timestamp"])
    return evs


def _run(cfg_sinks: List[dict], items: List, with_cfg_sinks: bool) -> List[Alert]:
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0},
                            "sinks": cfg_sinks})
    out: List[Alert] = []
    sinks = [TestingSink(out)] + (make_alert_sinks(cfg) if with_cfg_sinks else [])
    run_main(build_flow(cfg, source=TestingSource(items), alert_sinks=sinks, dead_letter_sink=TestingSink([])))
    return out


def test_flow_fills_similar_incidents_of_a_repeated_incident() -> None:
    collection = _collection()
    alerts = _run([{"kind": "qdrant", "location": ":memory:", "collection": collection}], batches(_two_incidents()),
                  with_cfg_sinks=True)
    a = [x for x in alerts if x.service == "svc-a" and x.type == "latency"]
    b = [x for x in alerts if x.service == "svc-b" and x.type == "latency"]
    assert a and b, alerts
    assert all(x.similar_incidents == [] for x in a), a  # nothing like it before
    first_fp = a[0].fingerprint
    for x in b:
        if x.status == "resolved":
            continue
        listed = x.similar_incidents
        assert listed and {s["fingerprint"] for s in listed} == {first_fp}, x
        assert len(listed) == 1  # the first incident once, not each of its messages
        assert listed[0]["alert_id"] in {y.alert_id for y in a if y.status != "resolved"}
        assert listed[0]["service"] == "svc-a" and listed[0]["score"] >= SIMILAR_MIN_SCORE
        assert listed[0]["event_time"] < x.event_time
    # Every alert left the flow, enriched or not.
    assert all("similar_incidents" in x.to_json() for x in alerts)


def test_flow_on_two_workers_shares_one_memory() -> None:
    """Four services, one latency incident each, 50 minutes apart; the keys are spread over two workers."""

    def slow(start):
        return lambda ts, lat: lat * 5 if T0 + start * 60 <= ts < T0 + (start + 10) * 60 else lat

    services = ["svc-a", "svc-b", "svc-c", "svc-d"]
    evs: List[dict] = []
    for i, svc in enumerate(services):
        evs += steady(240, per_minute=30, seed=i + 1, service=svc, latency_fn=slow(60 + 50 * i))
    evs.sort(key=lambda e: e["timestamp"])
    collection = _collection()
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0},
                            "sinks": [{"kind": "qdrant", "location": ":memory:", "collection": collection}]})
    out: List[Alert] = []
    # Live, incidents 50 minutes apart are minutes apart in wall time too: a short pause in the
    # input after each one lets the workers index it before the next is looked up (without it,
    # a replay's keys race across the workers within one epoch).
    items: List[Any] = []
    pauses = [T0 + (75 + 50 * i) * 60 for i in range(3)]  # 15 minutes after each of the first three
    for n, b in enumerate(batches(evs, size=500)):
        items.append(b)
        last = evs[min(len(evs), (n + 1) * 500) - 1]["timestamp"]
        if any(p <= last < p + 300 for p in pauses):
            items.append(TestingSource.PAUSE(timedelta(milliseconds=300)))
    flow = build_flow(cfg, source=TestingSource(items), alert_sinks=[TestingSink(out)] + make_alert_sinks(cfg),
                      dead_letter_sink=TestingSink([]))
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    pages = {a.service: a for a in out if a.type == "latency" and a.status == "firing"}
    assert sorted(pages) == services, out
    for i, svc in enumerate(services):
        listed = {s["service"] for s in pages[svc].similar_incidents}
        assert listed == set(services[:i]), (svc, pages[svc].similar_incidents)


def test_flow_with_injected_sinks_reads_the_configured_memory(tmp_path) -> None:
    path = str(tmp_path / "qdrant")
    writer = QdrantWriter(path, "incidents")
    earlier = _latency(T0 - 86400, "svc-old", model="m9")
    _write(writer, earlier)
    writer.close()

    def slow(ts, lat):
        return lat * 5 if T0 + 60 * 60 <= ts < T0 + 70 * 60 else lat

    alerts = _run([{"kind": "qdrant", "location": path, "collection": "incidents"}],
                  batches(steady(90, latency_fn=slow)), with_cfg_sinks=False)
    firing = [x for x in alerts if x.type == "latency" and x.status != "resolved"]
    assert firing
    for x in firing:
        assert [s["alert_id"] for s in x.similar_incidents] == [earlier.alert_id], x


def test_no_qdrant_sink_or_limit_zero_means_no_lookup() -> None:
    base = {"source": {"kind": "file", "path": "unused"}}
    assert make_similar_incidents(load_config_dict(base)) is None
    assert make_similar_incidents(load_config_dict(
        dict(base, sinks=[{"kind": "qdrant", "similar_limit": 0}]))) is None
    step = make_similar_incidents(load_config_dict(dict(base, sinks=[
        {"kind": "stdout"},
        {"kind": "qdrant", "location": ":memory:", "collection": "first", "similar_limit": 5,
         "similar_min_score": 0.8},
        {"kind": "qdrant", "location": ":memory:", "collection": "second"}])))
    m = step.memory
    assert (m.location, m.collection, m.limit, m.min_score) == (":memory:", "first", 5, 0.8)


# -- configuration -------------------------------------------------------------


def test_config_defaults() -> None:
    s = QdrantSink(kind="qdrant")
    assert s.similar_limit == SIMILAR_LIMIT == 3
    assert s.similar_min_score == SIMILAR_MIN_SCORE == 0.9


@pytest.mark.parametrize("key,value,message", [
    ("similar_limit", -1, "sinks[0].similar_limit: Input should be greater than or equal to 0"),
    ("similar_limit", "three", "sinks[0].similar_limit: Input should be a valid integer"),
    ("similar_limit", 1.5, "sinks[0].similar_limit: Input should be a valid integer"),
    ("similar_limit", 1000, "sinks[0].similar_limit: Input should be less than or equal to 100"),
    ("similar_min_score", 1.5, "sinks[0].similar_min_score: Input should be less than or equal to 1"),
    ("similar_min_score", -0.1, "sinks[0].similar_min_score: Input should be greater than or equal to 0"),
    ("similar_min_score", "high", "sinks[0].similar_min_score: Input should be a valid number"),
    ("similar_minscore", 0.5, "sinks[0].similar_minscore: Extra inputs are not permitted"),
])
def test_config_rejects_bad_values(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config_dict({"source": {"kind": "file", "path": "x"},
                          "sinks": [{"kind": "qdrant", key: value}]}, "flow.yaml")
    assert message in str(err.value), str(err.value)


def test_config_accepts_the_bounds() -> None:
    cfg = load_config_dict({"source": {"kind": "file", "path": "x"}, "sinks": [
        {"kind": "qdrant", "similar_limit": 0, "similar_min_score": 0},
        {"kind": "qdrant", "similar_limit": 100, "similar_min_score": 1}]})
    assert [(s.similar_limit, s.similar_min_score) for s in cfg.sinks] == [(0, 0.0), (100, 1.0)]
