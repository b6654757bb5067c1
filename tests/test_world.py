"""Scenario families (benchmarks/world.py) and the receiver's count of notifications (benchmarks/scoring.py)."""

from __future__ import annotations

import hashlib
import os
import sys
from collections import Counter

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import world  # noqa: E402
from scoring import score, to_epoch  # noqa: E402

from sentinel.parse import parse_json_record  # noqa: E402

HOURS = 0.5
HAS_TRACE = os.path.exists(os.path.join(world.DEFAULT_DATA_DIR, world.TRACE_FILE))
needs_trace = pytest.mark.skipif(not HAS_TRACE, reason="the real trace is not beside the repository")


def _digest(w: world.World) -> str:
    h = hashlib.sha256()
    for ev in w.events():
        h.update(repr(sorted(ev.items())).encode())
    for lab in w.labels:
        h.update(repr(sorted(lab.items())).encode())
    return h.hexdigest()


def test_families_split_two_for_tuning_three_for_testing():
    assert len(world.list_families("tune")) == 2
    assert len(world.list_families("test")) == 3
    trace_families = [f.name for f in world.FAMILIES.values() if "trace" in f.archetypes]
    assert any(world.FAMILIES[f].split == "test" for f in trace_families)


def test_same_seed_same_world_other_seed_other_world():
    assert _digest(world.World("saas-chat", 1, hours=HOURS)) == _digest(world.World("saas-chat", 1, hours=HOURS))
    assert _digest(world.World("saas-chat", 1, hours=HOURS)) != _digest(world.World("saas-chat", 2, hours=HOURS))


@pytest.mark.parametrize("family", ["saas-chat", "enterprise-mix"])
def test_events_follow_the_contract_and_are_time_ordered(family):
    w = world.World(family, 3, hours=HOURS)
    last = 0.0
    ids = set()
    kinds = Counter()
    for ev in w.events():
        t = to_epoch(ev["timestamp"])
        assert ev["timestamp"].endswith("Z") and w.start <= t < w.end
        assert t >= last
        last = t
        assert ev["event_id"] not in ids
        ids.add(ev["event_id"])
        kinds[ev["event_type"]] += 1
        assert parse_json_record(world._dumps(ev).rstrip()) is not None  # the flow's own parser takes it
        if ev["event_type"] == "security":
            assert ev["source"] and ev["kind"] and ev["service"] and ev["severity"]
        else:
            assert ev["status"] in ("ok", "error")
            assert ev["user_id"] and ev["tenant_id"] and ev["source_ip"]
            if ev["status"] == "ok":
                assert ev["input_tokens"] > 0 and ev["output_tokens"] > 0 and ev["cost_usd"] > 0
                assert ev["latency_ms"] >= ev.get("ttft_ms", 0.0) > -1
            else:
                assert ev["error_type"]
    assert kinds["llm.request"] > 1000 and kinds["security"] > 10


def test_labels_are_well_formed_and_inside_the_run():
    for family in world.list_families():
        w = world.World(family, 1, hours=HOURS)
        labels = w.labels
        assert labels, family
        keys = {(s.name, m) for s in w.services for m, _ in s.models}
        for lab in labels:
            assert set(lab) >= {"id", "type", "service", "model", "subject", "start", "end", "magnitude",
                                "metric", "effects", "detail"}
            assert lab["type"] in world.INCIDENT_TYPES
            start, end = to_epoch(lab["start"]), to_epoch(lab["end"])
            assert w.start < start < end <= w.end
            assert (lab["service"], lab["model"]) in keys
            if lab["type"] == "token_abuse":
                assert lab["subject"].startswith("user:u")
            elif lab["type"] == "coordinated_attack":
                assert lab["subject"]
            else:
                assert lab["subject"] is None
            assert ("grace_s" in lab) == (lab["type"] == "drift")
        assert len({lab["id"] for lab in labels}) == len(labels)


def test_incidents_on_one_key_do_not_overlap():
    w = world.World("legal-docs", 2, hours=24)
    by_key = {}
    for inc in w.incidents:
        if inc.type != "coordinated_attack":
            by_key.setdefault((inc.service, inc.model), []).append(inc)
    for incs in by_key.values():
        incs.sort(key=lambda i: i.start)
        for a, b in zip(incs, incs[1:]):
            assert b.start >= a.busy_until() + world.CLEARANCE_S
    types = Counter(i.type for i in w.incidents)
    assert all(types[t] >= 2 for t in world.INCIDENT_TYPES), types


def test_batch_service_sends_only_in_its_scheduled_bursts():
    hours = 2.0
    w = world.World("ops-batch", 1, hours=hours)
    batch = {s.name: s for s in w.services if s.archetype == "batch"}
    assert len(batch) == 2
    minutes = {name: Counter() for name in batch}
    for ev in w.events():
        svc = batch.get(ev.get("service"))
        if svc is not None and ev["event_type"] == "llm.request":
            t = to_epoch(ev["timestamp"])
            assert any(a <= t < b for a, b in svc.bursts(t, t + 1e-6))
            minutes[svc.name][int((t - w.start) // 60)] += 1
    for name, busy in minutes.items():
        assert 0 < len(busy) < 0.75 * hours * 60, name  # gaps between the bursts
        assert max(busy.values()) > 60, name  # and busy inside them


def test_users_are_many_and_heavy_tailed():
    w = world.World("enterprise-mix", 1, hours=HOURS)
    assert 2000 <= w.n_users <= 20000
    per_user = Counter(ev["user_id"] for ev in w.events() if ev["event_type"] == "llm.request")
    counts = sorted(per_user.values(), reverse=True)
    top = counts[: max(1, len(counts) // 100)]
    assert sum(top) > 0.15 * sum(counts)  # the busiest 1% send far more than 1%
    assert len({w.user_tenant[i] for i in range(w.n_users)}) > 20


@needs_trace
def test_the_real_trace_is_the_traffic_of_a_service():
    trace = world.load_trace()
    assert 8000 < len(trace) < 10000
    pairs = {(i, o) for _, i, o in trace}
    w = world.World("dev-platform", 101, hours=HOURS)
    svc = next(s for s in w.services if s.archetype == "trace")
    evs = [ev for ev in w.events() if ev.get("service") == svc.name and ev.get("status") == "ok"]
    assert len(evs) > 1000
    share = sum((ev["input_tokens"], ev["output_tokens"]) in pairs for ev in evs) / len(evs)
    assert share > 0.9  # the trace's own token counts (an incident may change a few)
    assert all(ev["latency_ms"] > 0 and ev["cost_usd"] > 0 for ev in evs)


def test_normal_heavy_sessions_are_traps_not_labels():
    w = world.World("legal-docs", 1, hours=24)
    kinds = Counter(tr["kind"] for tr in w.trap_records())
    assert kinds["heavy_session"] > 0 and kinds["double_request"] > 0 and kinds["batch_schedule"] > 0
    for tr in w.traps:
        if tr.kind == "heavy_session":
            svc = next(s for s in w.services if s.name == tr.service)
            assert svc.users.index(tr.user) < 20 and 3.0 <= tr.magnitude <= 4.0
    assert not any(lab["id"].startswith("trap") for lab in w.labels)


def test_scoring_counts_updates_as_notifications():
    lab = {"id": "a", "type": "latency", "service": "s", "model": "m", "subject": None,
           "start": "2026-01-05T01:00:00Z", "end": "2026-01-05T01:10:00Z"}
    page = {"type": "latency", "service": "s", "model": "m", "subject": None, "status": "firing",
            "event_time": "2026-01-05T01:02:00Z"}
    upd = dict(page, status="updated", event_time="2026-01-05T01:05:00Z")
    stray = dict(page, status="updated", event_time="2026-01-05T05:00:00Z")
    repeat = dict(page, event_time="2026-01-05T05:02:00Z", evidence={"repeat": 1})
    resolve = dict(page, status="resolved", event_time="2026-01-05T06:00:00Z")
    alerts = [page, upd, stray, repeat, resolve]
    pages = score(alerts, [lab], duration_s=86400)
    assert pages["n_alerts"] == 2 and pages["false_alerts"] == 1
    r = score(alerts, [lab], duration_s=86400, count="all")
    assert r["n_alerts"] == 4  # firing, updated, updated, repeat; not the resolve
    assert r["true_alerts"] == 2 and r["false_alerts"] == 2 and r["false_alerts_per_day"] == 2.0
    assert r["first_pages"] == 1 and r["true_first_pages"] == 1 and r["precision_first_pages"] == 1.0
    assert r["notifications_per_detected"] == 2.0
    assert r["false_alerts_by_type"] == {"latency": 2}
    with pytest.raises(ValueError):
        score(alerts, [lab], duration_s=86400, count="some")


def test_scoring_counts_an_update_naming_a_real_incident_as_true():
    lab = {"id": "t", "type": "tokens", "service": "s", "model": "m", "subject": None,
           "start": "2026-01-05T01:00:00Z", "end": "2026-01-05T01:15:00Z"}
    member = {"type": "tokens", "service": "s", "model": "m", "subject": None,
              "event_time": "2026-01-05T01:03:00Z"}
    upd = {"type": "error_rate", "service": "s", "model": "m", "subject": None, "status": "updated",
           "event_time": "2026-01-05T01:01:00Z", "evidence": {"grouped": [member]}}
    r = score([upd], [lab], duration_s=86400, count="all")
    assert r["recall"] == 1.0 and r["true_alerts"] == 1 and r["false_alerts"] == 0
