"""The telemetry simulator (the simulator package) and the benchmark scoring."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections import defaultdict, deque
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scoring import score  # noqa: E402
from simulator import (  # noqa: E402
    DEFAULT_START,
    FLEET,
    INCIDENT_TYPES,
    TRAP_KINDS,
    Simulator,
    format_time,
    to_epoch,
)

H = 3600.0
SECURITY_KINDS = {"prompt_injection", "jailbreak", "pii_leak", "auth_failure", "rate_limited", "policy_violation"}
LABEL_FIELDS = {"id", "type", "service", "model", "subject", "start", "end", "magnitude", "metric", "effects", "detail"}
TRAP_FIELDS = {"id", "kind", "service", "model", "start", "end", "types", "detail"}
FLEET_KEYS = {(s, m) for s, m, _, _ in FLEET}


def _digest(sim: Simulator) -> str:
    h = hashlib.sha256()
    for line in sim.iter_lines():
        h.update(line)
    return h.hexdigest()


def _p95(xs):
    xs = sorted(xs)
    return xs[int(0.95 * (len(xs) - 1))]


def _at(minutes: float) -> str:
    return format_time(DEFAULT_START + minutes * 60.0)


def _check_event(e: dict) -> None:
    assert isinstance(e["timestamp"], str) and e["timestamp"].endswith("Z")
    assert isinstance(e["event_id"], str) and e["event_id"]
    if e["event_type"] == "security":
        assert isinstance(e["source"], str) and e["source"]
        assert e["kind"] in SECURITY_KINDS
        assert e["severity"] in {"info", "low", "medium", "high", "critical"}
        return
    assert e["event_type"] == "llm.request"
    assert isinstance(e["service"], str) and e["service"]
    assert isinstance(e["model"], str) and e["model"]
    for f in ("provider", "model_version", "operation", "region", "user_id", "tenant_id", "source_ip"):
        assert isinstance(e[f], str) and e[f], f
    assert isinstance(e["latency_ms"], float) and e["latency_ms"] >= 0
    assert e["status"] in ("ok", "error")
    if e["status"] == "error":
        assert e["error_type"] in ("rate_limit", "timeout", "server_error")
        assert "ttft_ms" not in e and "output_tokens" not in e
        return
    assert "error_type" not in e
    for f in ("input_tokens", "output_tokens"):
        assert type(e[f]) is int and e[f] >= 0, f
    assert isinstance(e["cost_usd"], float) and e["cost_usd"] >= 0
    if "ttft_ms" in e:
        assert 0 <= e["ttft_ms"] <= e["latency_ms"]


# ------------------------------------------------------------------ 6 hours


@pytest.fixture(scope="module")
def six_hours():
    """One streaming pass over the default run (seed 7, 6 h, 18.5/s), summarised."""
    sim = Simulator(seed=7)
    attackers = {lab["subject"] for lab in sim.labels if lab["type"] == "coordinated_attack"}
    n = n_req = 0
    last = float("-inf")
    in_order = True
    ids = set()
    recent = defaultdict(deque)
    worst_background = 0
    first_seen = {}
    for e in sim.events():
        n += 1
        t = to_epoch(e["timestamp"])
        if e["event_type"] == "llm.request":
            first_seen.setdefault((e["service"], e["model"]), t)
        in_order &= t >= last
        last = t
        ids.add(e["event_id"])
        if e["event_type"] == "security":
            if e["source"] not in attackers:
                q = recent[e["source"]]
                q.append(t)
                while q[0] <= t - 300.0:
                    q.popleft()
                worst_background = max(worst_background, len(q))
        else:
            n_req += 1
    return {"sim": sim, "n": n, "n_req": n_req, "in_order": in_order, "ids": len(ids),
            "worst_background": worst_background, "last": last, "first_seen": first_seen}


def test_six_hours_count_order_and_ids(six_hours):
    sim = six_hours["sim"]
    assert six_hours["in_order"]
    assert six_hours["ids"] == six_hours["n"]  # event ids unique
    # background 18.5/s plus the planned ramp's and the cold start's traffic
    assert sim.expected_events > 18.5 * 6 * H
    assert abs(six_hours["n_req"] - sim.expected_events) < 0.03 * sim.expected_events
    assert six_hours["last"] < sim.end


def test_background_security_stays_below_attack_threshold(six_hours):
    assert six_hours["worst_background"] <= 5


def test_six_hour_labels_cover_every_type(six_hours):
    labels = six_hours["sim"].labels
    assert {lab["type"] for lab in labels} == set(INCIDENT_TYPES)
    for lab in labels:
        assert LABEL_FIELDS <= set(lab)
        assert lab["start"].endswith("Z") and lab["end"].endswith("Z")
        if lab["type"] == "token_abuse":
            assert lab["subject"].startswith("user:")
        elif lab["type"] == "coordinated_attack":
            assert lab["subject"]
        else:
            assert lab["subject"] is None and lab["service"] and lab["model"]


@pytest.mark.parametrize("seed", [1, 2, 7, 42, 1234])
def test_auto_schedule_shape(seed):
    sim = Simulator(seed=seed)
    labels = sim.labels
    assert {lab["type"] for lab in labels} == set(INCIDENT_TYPES)
    spans = sorted((to_epoch(lab["start"]), to_epoch(lab["end"]), lab) for lab in labels)
    for s, e, lab in spans:
        assert s >= sim.start + H  # detectors warm up first
        if lab["type"] == "drift":
            assert 45 * 60.0 <= e - s <= 3600.0
        else:
            assert 300.0 <= e - s <= 1200.0
        assert e <= sim.end
    for (_, e1, _), (s2, _, _) in zip(spans, spans[1:]):
        assert e1 <= s2  # no two overlap (so none on the same key)
    assert [lab["id"] for lab in labels] == [lab["id"] for lab in Simulator(seed=seed).labels]
    assert len({lab["id"] for lab in labels}) == len(labels)


def test_longer_run_has_about_one_incident_per_40_minutes():
    labels = Simulator(seed=3, hours=24.0, incidents="auto").labels
    # 34 slots of ~40 minutes; a drift's 60 minute ramp takes two
    slots = sum(2 if lab["type"] == "drift" else 1 for lab in labels)
    assert slots == 34
    assert 26 <= len(labels) <= 34


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6, 7, 8])
def test_every_type_in_a_day(seed):
    assert {lab["type"] for lab in Simulator(seed=seed, hours=24.0).labels} == set(INCIDENT_TYPES)


# ------------------------------------------------------------- determinism


def test_same_seed_same_bytes_different_seed_differs():
    a = _digest(Simulator(seed=11, hours=1.5, rate=6.0))
    b = _digest(Simulator(seed=11, hours=1.5, rate=6.0))
    c = _digest(Simulator(seed=12, hours=1.5, rate=6.0))
    assert a == b
    assert a != c


def test_determinism_with_traps_drift_and_scale():
    def run(seed, scale=1.0):
        sim = Simulator(seed=seed, hours=6.0, rate=1.5, magnitude_scale=scale)
        return _digest(sim), sim.labels, sim.traps

    a, b = run(11), run(11)
    assert {t["kind"] for t in a[2]} >= {"diurnal", "planned_ramp", "cold_start"}
    assert "drift" in {lab["type"] for lab in a[1]}
    assert a == b
    assert run(12)[0] != a[0]
    assert run(11, 0.6)[0] == run(11, 0.6)[0] != a[0]


def test_events_can_be_iterated_twice_identically():
    sim = Simulator(seed=5, hours=0.25, rate=10.0, incidents=[
        {"type": "coordinated_attack", "service": None, "model": None, "subject": "203.0.113.9",
         "start": _at(5), "end": _at(10), "magnitude": 30},
    ])
    first = list(sim.iter_lines())
    assert first == list(sim.iter_lines())


# ------------------------------------------------------- fields and rates


def _all_types_incidents():
    return [
        {"type": "latency", "service": "support-bot", "model": "gpt-4o-mini", "start": _at(10), "end": _at(20), "magnitude": 4},
        {"type": "ttft", "service": "search-rag", "model": "gemini-2.0-flash", "start": _at(10), "end": _at(20)},
        {"type": "tokens", "service": "code-assist", "model": "claude-sonnet-4", "start": _at(10), "end": _at(20)},
        {"type": "cost", "service": "doc-summarizer", "model": "gemini-2.0-flash", "start": _at(10), "end": _at(20)},
        {"type": "error_rate", "service": "support-bot", "model": "claude-3-5-haiku", "start": _at(10), "end": _at(20), "magnitude": 0.3},
        {"type": "traffic", "service": "search-rag", "model": "gpt-4o-mini", "start": _at(10), "end": _at(20)},
        {"type": "token_abuse", "service": "code-assist", "model": "gpt-4o", "subject": "user:u0050", "start": _at(10), "end": _at(20), "magnitude": 30},
        {"type": "coordinated_attack", "service": None, "model": None, "subject": "203.0.113.77", "start": _at(12), "end": _at(17), "magnitude": 40},
    ]


@pytest.fixture(scope="module")
def all_types():
    sim = Simulator(seed=9, hours=0.5, rate=18.5, incidents=_all_types_incidents())
    return sim, list(sim.events())


def test_every_event_has_spec_fields_and_types(all_types):
    sim, events = all_types
    assert events
    for e in events:
        _check_event(e)
    assert len({e["event_id"] for e in events}) == len(events)
    times = [to_epoch(e["timestamp"]) for e in events]
    assert times == sorted(times)
    assert sim.start <= times[0] and times[-1] < sim.end


def test_rate_scales_with_parameters():
    n = sum(1 for e in Simulator(seed=3, hours=1.0, rate=5.0, incidents=[]).events() if e["event_type"] == "llm.request")
    assert abs(n - 5.0 * H) < 0.1 * 5.0 * H


def test_explicit_incidents_become_labels(all_types):
    sim, _ = all_types
    labels = sim.labels
    assert [lab["type"] for lab in labels] == [i["type"] for i in _all_types_incidents()]
    by_type = {lab["type"]: lab for lab in labels}
    assert by_type["token_abuse"]["subject"] == "user:u0050"
    # Its large inputs lengthen prefill on a streaming key: ttft and latency move too.
    assert set(by_type["token_abuse"]["effects"]) == {"tokens", "cost", "latency", "ttft"}
    assert by_type["latency"]["magnitude"] == 4.0
    assert by_type["latency"]["start"] == _at(10) and by_type["latency"]["end"] == _at(20)


def test_explicit_incident_effects(all_types):
    _, events = all_types
    s, e = DEFAULT_START + 600.0, DEFAULT_START + 1200.0

    def key_events(service, model, inside):
        return [x for x in events if x["event_type"] == "llm.request" and x["service"] == service
                and x["model"] == model and (s <= to_epoch(x["timestamp"]) < e) == inside]

    def ok(xs):
        return [x for x in xs if x["status"] == "ok"]

    inside, outside = key_events("search-rag", "gemini-2.0-flash", True), key_events("search-rag", "gemini-2.0-flash", False)
    assert _p95([x["ttft_ms"] for x in ok(inside)]) > 3 * _p95([x["ttft_ms"] for x in ok(outside)])
    assert _p95([x["latency_ms"] for x in ok(inside)]) < 1.5 * _p95([x["latency_ms"] for x in ok(outside)])

    inside, outside = key_events("code-assist", "claude-sonnet-4", True), key_events("code-assist", "claude-sonnet-4", False)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    assert med([x["output_tokens"] for x in ok(inside)]) > 2.5 * med([x["output_tokens"] for x in ok(outside)])

    inside, outside = key_events("doc-summarizer", "gemini-2.0-flash", True), key_events("doc-summarizer", "gemini-2.0-flash", False)
    assert med([x["cost_usd"] for x in ok(inside)]) > 3 * med([x["cost_usd"] for x in ok(outside)])
    assert med([x["output_tokens"] for x in ok(inside)]) < 1.3 * med([x["output_tokens"] for x in ok(outside)])

    inside = key_events("support-bot", "claude-3-5-haiku", True)
    assert 0.2 < 1 - len(ok(inside)) / len(inside) < 0.4

    inside, outside = key_events("search-rag", "gpt-4o-mini", True), key_events("search-rag", "gpt-4o-mini", False)
    assert len(inside) / 600.0 < 0.25 * len(outside) / 1200.0

    abuser = [x for x in events if x.get("user_id") == "u0050"]
    tokens = lambda xs: sum(x.get("input_tokens", 0) + x.get("output_tokens", 0) for x in xs)  # noqa: E731
    t_in = tokens([x for x in abuser if s <= to_epoch(x["timestamp"]) < e]) / 600.0
    t_out = tokens([x for x in abuser if not s <= to_epoch(x["timestamp"]) < e]) / 1200.0
    assert t_in > 10 * max(t_out, 1.0)

    attack = [x for x in events if x["event_type"] == "security" and x["source"] == "203.0.113.77"]
    assert len(attack) == 40
    assert all(DEFAULT_START + 720 <= to_epoch(x["timestamp"]) < DEFAULT_START + 1020 for x in attack)


def test_latency_incident_raises_p95_of_its_key_only_in_its_interval():
    inc = [{"type": "latency", "service": "support-bot", "model": "gpt-4o-mini",
            "start": _at(60), "end": _at(70), "magnitude": 4.0}]
    with_inc = list(Simulator(seed=21, hours=1.5, rate=18.5, incidents=inc).events())
    without = list(Simulator(seed=21, hours=1.5, rate=18.5, incidents=[]).events())
    s, e = DEFAULT_START + 3600.0, DEFAULT_START + 4200.0

    def lat(events, inside):
        return [x["latency_ms"] for x in events if x["event_type"] == "llm.request" and x["status"] == "ok"
                and x["service"] == "support-bot" and x["model"] == "gpt-4o-mini"
                and (s <= to_epoch(x["timestamp"]) < e) == inside]

    assert _p95(lat(with_inc, True)) > 2.5 * _p95(lat(with_inc, False))
    assert _p95(lat(with_inc, True)) > 2.5 * _p95(lat(without, True))
    # the incident changes nothing else: same events, only that key's latency in the window
    assert len(with_inc) == len(without)
    changed = [a for a, b in zip(with_inc, without) if a != b]
    assert changed
    assert all(a["model"] == "gpt-4o-mini" and a["service"] == "support-bot" for a in changed)
    assert all(s <= to_epoch(a["timestamp"]) < e for a in changed)


def test_bad_incident_is_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="unknown key"):
        Simulator(hours=1, incidents=[{"type": "latency", "service": "nope", "model": "x", "start": _at(1), "end": _at(2)}])
    with pytest.raises(ValueError, match="unknown type"):
        Simulator(hours=1, incidents=[{"type": "bogus", "service": "support-bot", "model": "gpt-4o", "start": _at(1), "end": _at(2)}])
    with pytest.raises(ValueError, match="does not stream"):
        Simulator(hours=1, incidents=[{"type": "ttft", "service": "doc-summarizer", "model": "gemini-2.0-flash",
                                       "start": _at(1), "end": _at(2)}])


def test_write_events_and_labels(tmp_path):
    sim = Simulator(seed=4, hours=0.1, rate=5.0, incidents=[
        {"type": "latency", "service": "support-bot", "model": "gpt-4o", "start": _at(1), "end": _at(4)}])
    n, labels_path = sim.write(str(tmp_path / "ev.jsonl"))
    assert labels_path == str(tmp_path / "ev.labels.jsonl")
    assert n == len((tmp_path / "ev.jsonl").read_bytes().splitlines())
    assert len(Path(labels_path).read_text().splitlines()) == 1


# ------------------------------------------------------------------ scoring


def _label(id_, typ, start_min, end_min, service="svc", model="m", subject=None):
    return {"id": id_, "type": typ, "service": service, "model": model, "subject": subject,
            "start": _at(start_min), "end": _at(end_min), "magnitude": 1.0}


def _alert(typ, minute, service="svc", model="m", subject=None):
    return {"type": typ, "service": service, "model": model, "subject": subject, "event_time": _at(minute)}


def test_scoring_hand_made_case():
    labels = [
        _label("L1", "latency", 60, 70),
        _label("L2", "error_rate", 100, 110),
        _label("L3", "token_abuse", 130, 140, subject="user:u0001"),
        _label("L4", "coordinated_attack", 200, 205, service=None, model=None, subject="203.0.113.5"),
    ]
    alerts = [
        _alert("latency", 62),  # L1, delay 120 s
        _alert("latency", 64),  # L1 again: a true alert, not a second detection
        _alert("latency", 59.5),  # 30 s before start: within the 60 s lead, L1
        _alert("latency", 76),  # 6 min after end: outside the 5 min grace -> false
        _alert("latency", 62, model="other"),  # wrong key -> false (collateral: no)
        _alert("error_rate", 63),  # wrong type in L1's window -> false, collateral (same key)
        _alert("token_abuse", 131, subject="user:u0002"),  # wrong subject -> false, collateral (same key)
        _alert("coordinated_attack", 201, service="x", model=None, subject="203.0.113.5"),  # L4, delay 60 s
        _alert("cost", 300, service="zzz"),  # unrelated -> false
    ]
    r = score(alerts, labels, duration_s=12 * H)
    assert r["n_labels"] == 4 and r["n_alerts"] == 9
    assert r["recall"] == 0.5
    assert r["recall_by_type"] == {"coordinated_attack": 1.0, "error_rate": 0.0, "latency": 1.0, "token_abuse": 0.0}
    assert r["detected_by_type"]["latency"] == [1, 1]
    assert r["true_alerts"] == 4
    assert r["precision"] == 4 / 9
    assert r["false_alerts"] == 5
    assert r["false_alerts_per_day"] == 10.0
    assert r["false_alerts_by_type"] == {"cost": 1, "error_rate": 1, "latency": 2, "token_abuse": 1}
    assert r["collateral_false_alerts"] == 2
    assert r["delay_by_type"] == {"coordinated_attack": 60.0, "latency": 0.0}
    assert r["median_delay_s"] == 30.0
    assert [lab["id"] for lab in r["missed_labels"]] == ["L2", "L3"]
    assert len(r["false_alert_list"]) == 5
    det = {d["label_id"]: d for d in r["detections"]}
    assert det["L1"]["alerts"] == 3 and det["L4"]["alerts"] == 1


def test_scoring_grace_and_empty_cases():
    labels = [_label("L1", "latency", 60, 70)]
    late = [_alert("latency", 74)]
    assert score(late, labels, duration_s=H)["recall"] == 1.0
    assert score(late, labels, duration_s=H, grace_s=120)["recall"] == 0.0
    r = score([], labels, duration_s=H)
    assert r["recall"] == 0.0 and r["precision"] == 1.0 and r["median_delay_s"] is None
    r = score(late, [], duration_s=H)
    assert r["recall"] == 1.0 and r["precision"] == 0.0 and r["false_alerts_per_day"] == 24.0


def test_scoring_accepts_cloudevents_envelopes_and_epoch_times():
    labels = [_label("L1", "traffic", 60, 70)]
    alert = {"specversion": "1.0", "type": "io.sentinel.alert", "data": {
        "type": "traffic", "service": "svc", "model": "m", "subject": None,
        "event_time": DEFAULT_START + 61 * 60}}
    r = score([alert], labels, duration_s=H)
    assert r["recall"] == 1.0 and r["median_delay_s"] == 60.0


# ------------------------------------------------------------------ drift


def _key_ok(events, service, model, a_min, b_min):
    a, b = DEFAULT_START + a_min * 60.0, DEFAULT_START + b_min * 60.0
    return [x for x in events if x["event_type"] == "llm.request" and x["service"] == service
            and x["model"] == model and x["status"] == "ok" and a <= to_epoch(x["timestamp"]) < b]


def _mean(xs):
    return sum(xs) / len(xs)


@pytest.mark.parametrize("metric, field, other", [
    ("output_tokens", "output_tokens", "input_tokens"),
    ("input_tokens", "input_tokens", "output_tokens"),
    ("cost_usd", "cost_usd", "output_tokens"),
])
def test_drift_ramps_linearly_then_stays(metric, field, other):
    inc = [{"type": "drift", "service": "support-bot", "model": "gpt-4o-mini", "metric": metric,
            "start": _at(20), "end": _at(80), "magnitude": 1.5}]
    sim = Simulator(seed=31, hours=1.75, rate=18.5, incidents=inc)
    events = list(sim.events())
    base = _mean([x[field] for x in _key_ok(events, "support-bot", "gpt-4o-mini", 10, 20)])
    late = _mean([x[field] for x in _key_ok(events, "support-bot", "gpt-4o-mini", 70, 80)])
    mid = _mean([x[field] for x in _key_ok(events, "support-bot", "gpt-4o-mini", 45, 55)])
    after = _mean([x[field] for x in _key_ok(events, "support-bot", "gpt-4o-mini", 90, 105)])
    # the last 10 minutes of the ramp average x1.46, its middle x1.25; the level then stays at x1.5
    assert 1.35 < late / base < 1.6
    assert 1.15 < mid / base < 1.35
    assert 1.38 < after / base < 1.62
    if metric != "input_tokens":  # input drives ttft and cost; the others move alone
        o_base = _mean([x[other] for x in _key_ok(events, "support-bot", "gpt-4o-mini", 10, 20)])
        o_after = _mean([x[other] for x in _key_ok(events, "support-bot", "gpt-4o-mini", 90, 105)])
        assert 0.9 < o_after / o_base < 1.1
    (lab,) = sim.labels
    assert lab["type"] == "drift" and lab["metric"] == metric
    assert lab["start"] == _at(20) and lab["end"] == _at(80)
    assert lab["grace_s"] >= 1800
    assert "cost" in lab["effects"]
    if metric == "output_tokens":
        assert set(lab["effects"]) == {"tokens", "cost", "latency"}


def test_drift_changes_only_its_key():
    inc = [{"type": "drift", "service": "code-assist", "model": "gpt-4o", "start": _at(10), "end": _at(40)}]
    with_inc = list(Simulator(seed=8, hours=1.0, rate=10.0, incidents=inc).events())
    without = list(Simulator(seed=8, hours=1.0, rate=10.0, incidents=[]).events())
    assert len(with_inc) == len(without)
    changed = [a for a, b in zip(with_inc, without) if a != b]
    assert changed
    assert all((a["service"], a["model"]) == ("code-assist", "gpt-4o") for a in changed)
    assert all(to_epoch(a["timestamp"]) >= DEFAULT_START + 600 for a in changed)
    assert Simulator(seed=8, hours=1.0, incidents=inc).labels[0]["magnitude"] == 1.5  # the default


def test_bad_drift_metric_is_rejected():
    with pytest.raises(ValueError, match="drift metric"):
        Simulator(hours=1, incidents=[{"type": "drift", "service": "support-bot", "model": "gpt-4o",
                                       "metric": "latency", "start": _at(1), "end": _at(30)}])


# ------------------------------------------------------------------ traps


def _count(events, service, model, a_min, b_min):
    a, b = DEFAULT_START + a_min * 60.0, DEFAULT_START + b_min * 60.0
    return sum(1 for x in events if x["event_type"] == "llm.request" and x["service"] == service
               and x["model"] == model and a <= to_epoch(x["timestamp"]) < b)


def _strip(e):
    return {k: v for k, v in e.items() if k != "event_id"}


@pytest.fixture(scope="module")
def ramp_runs():
    trap = [{"kind": "planned_ramp", "service": "support-bot", "model": "gpt-4o-mini", "start": _at(30)}]
    with_trap = Simulator(seed=17, hours=1.75, rate=18.5, incidents=[], traps=trap)
    without = Simulator(seed=17, hours=1.75, rate=18.5, incidents=[], traps=[])
    return with_trap, list(with_trap.events()), list(without.events())


def test_planned_ramp_doubles_traffic_smoothly(ramp_runs):
    sim, events, base = ramp_runs
    key = ("support-bot", "gpt-4o-mini")
    assert _count(events, *key, 20, 30) == _count(base, *key, 20, 30)  # nothing before the ramp
    mid = _count(events, *key, 47.5, 57.5) / _count(base, *key, 47.5, 57.5)  # around the midpoint (52.5)
    assert 1.35 < mid < 1.65
    after = _count(events, *key, 75, 105) / _count(base, *key, 75, 105)
    assert 1.9 < after < 2.1
    # no latency, token or error change: same distribution as the background
    lat = lambda xs: sorted(x["latency_ms"] for x in xs)[len(xs) // 2]  # noqa: E731
    assert 0.93 < lat(_key_ok(events, *key, 75, 105)) / lat(_key_ok(base, *key, 75, 105)) < 1.07
    (trap,) = [t for t in sim.traps if t["kind"] == "planned_ramp"]
    assert (trap["service"], trap["model"]) == key
    assert trap["start"] == _at(30) and trap["end"] == _at(75) and trap["magnitude"] == 2.0


def test_planned_ramp_adds_events_without_touching_the_background(ramp_runs):
    _, events, base = ramp_runs
    key = ("support-bot", "gpt-4o-mini")

    def others(evs):
        return [_strip(e) for e in evs
                if e["event_type"] != "llm.request" or (e["service"], e["model"]) != key]

    assert others(events) == others(base)


def test_cold_start_key_absent_before_present_after():
    trap = [{"kind": "cold_start", "service": "support-bot", "model": "gpt-5-mini", "start": _at(30)}]
    sim = Simulator(seed=5, hours=1.5, rate=18.5, incidents=[], traps=trap)
    events = list(sim.events())
    key = ("support-bot", "gpt-5-mini")
    assert key not in FLEET_KEYS
    assert _count(events, *key, 0, 30) == 0
    n = _count(events, *key, 30, 90)
    assert abs(n - 0.05 * 18.5 * 3600) < 0.15 * 0.05 * 18.5 * 3600
    ok = _key_ok(events, *key, 30, 90)
    assert ok and all(x["provider"] == "openai" and x["model_version"].startswith("gpt-5-mini") for x in ok)
    for x in ok:
        _check_event(x)
    (t,) = [t for t in sim.traps if t["kind"] == "cold_start"]
    assert (t["service"], t["model"]) == key and t["start"] == _at(30) and t["end"] == _at(90)


def test_bad_traps_are_rejected():
    with pytest.raises(ValueError, match="already in the fleet"):
        Simulator(hours=1, traps=[{"kind": "cold_start", "service": "support-bot", "model": "gpt-4o", "start": _at(5)}])
    with pytest.raises(ValueError, match="unknown key"):
        Simulator(hours=1, traps=[{"kind": "planned_ramp", "service": "x", "model": "y", "start": _at(5)}])
    with pytest.raises(ValueError, match="listed automatically"):
        Simulator(hours=1, traps=[{"kind": "diurnal", "start": _at(5)}])
    with pytest.raises(ValueError, match="unknown kind"):
        Simulator(hours=1, traps=[{"kind": "nope", "start": _at(5)}])


def test_six_hour_traps_listed_and_cold_key_appears_only_after_its_start(six_hours):
    sim = six_hours["sim"]
    traps = sim.traps
    assert {t["kind"] for t in traps} == set(TRAP_KINDS)
    for t in traps:
        assert TRAP_FIELDS <= set(t)
        assert t["kind"] in TRAP_KINDS
        assert sim.start <= to_epoch(t["start"]) <= to_epoch(t["end"]) <= sim.end
    (diurnal,) = [t for t in traps if t["kind"] == "diurnal"]
    assert diurnal["service"] is None and diurnal["types"] == ["traffic"]
    assert to_epoch(diurnal["start"]) == sim.start and to_epoch(diurnal["end"]) == sim.end
    (cold,) = [t for t in traps if t["kind"] == "cold_start"]
    key = (cold["service"], cold["model"])
    assert key not in FLEET_KEYS
    assert six_hours["first_seen"][key] >= to_epoch(cold["start"])
    assert six_hours["first_seen"][key] < to_epoch(cold["start"]) + 60.0
    assert {k for k in six_hours["first_seen"] if k not in FLEET_KEYS} == {key}
    extremes = [t for t in traps if t["kind"] == "extreme_request"]
    assert 10 <= len(extremes) <= 60  # about one request in 12,000
    assert [t["start"] for t in traps] == sorted(t["start"] for t in traps)


def test_extreme_requests_are_in_the_data():
    sim = Simulator(seed=3, hours=3.0, rate=18.5, incidents=[])
    extremes = [t for t in sim.traps if t["kind"] == "extreme_request"]
    assert extremes
    by_time = {}
    for e in sim.events():
        if e["event_type"] == "llm.request":
            by_time.setdefault(e["timestamp"], []).append(e)
    for t in extremes:
        evs = [e for e in by_time[t["start"]] if (e["service"], e["model"]) == (t["service"], t["model"])]
        assert any(e["latency_ms"] >= 25000 or e["output_tokens"] >= 8192 for e in evs), t


@pytest.mark.parametrize("seed", [1, 2, 3, 7, 42])
@pytest.mark.parametrize("hours", [6.0, 24.0])
def test_traps_keep_clear_of_incidents_on_their_key(seed, hours):
    sim = Simulator(seed=seed, hours=hours)
    kinds = [t["kind"] for t in sim.traps]
    assert kinds.count("planned_ramp") == 1 and kinds.count("cold_start") == 1 and kinds.count("diurnal") == 1
    labels = sim.labels
    drift_keys = {(lab["service"], lab["model"]) for lab in labels if lab["type"] == "drift"}
    for t in sim.traps:
        if t["service"] is None:
            continue
        key = (t["service"], t["model"])
        margin = 600.0 if t["kind"] == "extreme_request" else 1800.0
        a, b = to_epoch(t["start"]) - margin, to_epoch(t["end"]) + margin
        for lab in labels:
            if (lab["service"], lab["model"]) == key and lab["type"] != "coordinated_attack":
                end = to_epoch(lab["end"]) + (lab.get("grace_s") or 0.0)
                assert end <= a or to_epoch(lab["start"]) >= b, (t, lab)
        if t["kind"] == "planned_ramp":
            assert key not in drift_keys
            assert to_epoch(t["end"]) - to_epoch(t["start"]) == 45 * 60.0


def test_no_injected_traps_in_short_runs_or_with_explicit_incidents():
    assert {t["kind"] for t in Simulator(seed=1, hours=3.0).traps} <= {"diurnal", "extreme_request"}
    assert {t["kind"] for t in Simulator(seed=1, hours=6.0, incidents=[]).traps} <= {"diurnal", "extreme_request"}
    assert {t["kind"] for t in Simulator(seed=1, hours=6.0, traps=None).traps} <= {"diurnal", "extreme_request"}


def test_write_traps(tmp_path):
    traps = [{"kind": "planned_ramp", "service": "support-bot", "model": "gpt-4o", "start": _at(2)},
             {"kind": "cold_start", "service": "code-assist", "model": "gpt-5-mini", "start": _at(3)}]
    sim = Simulator(seed=4, hours=0.1, rate=5.0, incidents=[], traps=traps)
    sim.write(str(tmp_path / "ev.jsonl"))
    lines = (tmp_path / "ev.traps.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == sim.traps
    assert {t["kind"] for t in sim.traps} >= {"diurnal", "planned_ramp", "cold_start"}


# ---------------------------------------------------------- magnitude scale


def test_magnitude_scale_weakens_auto_incidents_in_log_terms():
    full = Simulator(seed=7).labels
    half = Simulator(seed=7, magnitude_scale=0.5).labels
    strong = Simulator(seed=7, magnitude_scale=1.5).labels
    assert [(a["id"], a["service"], a["model"], a["subject"], a["start"], a["end"]) for a in full] == \
        [(a["id"], a["service"], a["model"], a["subject"], a["start"], a["end"]) for a in half]
    base_err = {(s, m): e for s, m, _, e in FLEET}
    for f, h, s in zip(full, half, strong):
        m, mh = f["magnitude"], h["magnitude"]
        if f["type"] == "error_rate":
            b = base_err[(f["service"], f["model"])]
            assert mh == pytest.approx(b * (m / b) ** 0.5, rel=1e-3)
        elif f["type"] == "coordinated_attack":
            assert mh == round(3 * (m / 3) ** 0.5)
        else:
            assert mh == pytest.approx(m ** 0.5, rel=1e-3)
        # weaker means closer to normal, stronger further away
        norm = {"error_rate": base_err.get((f["service"], f["model"])), "coordinated_attack": 3.0}.get(f["type"], 1.0)
        assert abs(math.log(mh / norm)) < abs(math.log(m / norm)) < abs(math.log(s["magnitude"] / norm))
    lat = [(f, h) for f, h in zip(full, half) if f["type"] == "latency"][0]
    assert lat[1]["magnitude"] == pytest.approx(lat[0]["magnitude"] ** 0.5, rel=1e-3)
    assert Simulator(seed=7, magnitude_scale=1.0).labels == full
    with pytest.raises(ValueError, match="magnitude_scale"):
        Simulator(magnitude_scale=0)


def test_magnitude_scale_weakens_the_data():
    def ratio(scale):
        sim = Simulator(seed=7, hours=6.0, rate=18.5, magnitude_scale=scale)
        lab = next(x for x in sim.labels if x["type"] == "latency")
        s, e = to_epoch(lab["start"]), to_epoch(lab["end"])
        inside, before = [], []
        for x in sim.events():
            t = to_epoch(x["timestamp"])
            if t >= e:
                break
            if (x["event_type"] == "llm.request" and x["status"] == "ok"
                    and (x["service"], x["model"]) == (lab["service"], lab["model"]) and t >= s - 1200):
                (inside if t >= s else before).append(x["latency_ms"])
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        return med(inside) / med(before), lab["magnitude"]

    r_full, m_full = ratio(1.0)
    r_weak, m_weak = ratio(0.5)
    assert m_weak == pytest.approx(m_full ** 0.5, rel=1e-3)
    assert r_weak < r_full
    assert math.log(r_weak) / math.log(r_full) == pytest.approx(0.5, abs=0.15)


# ----------------------------------------------------------- trap scoring


def _trap(id_, kind, start_min, end_min, service="svc", model="m", types=None):
    return {"id": id_, "kind": kind, "service": service, "model": model, "start": _at(start_min),
            "end": _at(end_min), "types": types, "detail": ""}


def test_scoring_traps_and_precision_by_type():
    labels = [_label("L1", "latency", 60, 70), _label("D1", "drift", 200, 260)]
    labels[1]["grace_s"] = 1800.0
    labels[1]["effects"] = ["tokens", "cost", "latency"]
    traps = [
        _trap("T1", "planned_ramp", 100, 145),
        _trap("T2", "cold_start", 300, 360, service="new", model="k"),
        _trap("T3", "diurnal", 0, 24 * 60, service=None, model=None, types=["traffic"]),
        _trap("T4", "extreme_request", 500, 500),
    ]
    alerts = [
        _alert("latency", 62),  # true (L1)
        _alert("traffic", 120),  # on the ramp's key, inside -> trap (planned_ramp and diurnal)
        _alert("latency", 150),  # ramp ended at 145, within 10 minutes -> trap (planned_ramp)
        _alert("latency", 160),  # more than 10 minutes after -> false, no trap
        _alert("drift", 285),  # 25 min after the ramp's end: inside the drift's 30 min grace -> true (D1)
        _alert("tokens", 250),  # an effect of D1 -> true
        _alert("drift", 300),  # 40 min after the ramp's end -> false
        _alert("latency", 310, service="new", model="k"),  # cold start -> trap
        _alert("traffic", 400, service="other"),  # any key: diurnal -> trap
        _alert("cost", 505),  # 5 minutes after an extreme request -> trap
        _alert("latency", 66, service="new", model="k"),  # before the cold start -> false, no trap
    ]
    r = score(alerts, labels, duration_s=24 * H, traps=traps)
    assert r["recall"] == 1.0
    assert r["detected_by_type"] == {"drift": [1, 1], "latency": [1, 1]}
    assert r["true_alerts"] == 3 and r["false_alerts"] == 8
    assert r["trap_alerts"] == 5
    assert r["trap_alerts_by_kind"] == {"cold_start": 1, "diurnal": 2, "extreme_request": 1, "planned_ramp": 2}
    assert r["traps_by_kind"] == {"cold_start": 1, "diurnal": 1, "extreme_request": 1, "planned_ramp": 1}
    assert r["traps_fired_by_kind"] == {"cold_start": 1, "diurnal": 1, "extreme_request": 1, "planned_ramp": 1}
    assert {x["trap_id"] for x in r["trap_alert_list"]} == {"T1", "T2", "T3", "T4"}
    assert r["alerts_by_type"]["drift"] == [1, 2]
    assert r["precision_by_type"]["drift"] == 0.5
    assert r["precision_by_type"]["tokens"] == 1.0
    assert r["precision_by_type"]["latency"] == 0.2
    assert r["precision_by_type"]["traffic"] == 0.0
    # without traps the trap counts are empty, the rest identical
    r0 = score(alerts, labels, duration_s=24 * H)
    assert r0["trap_alerts"] == 0 and r0["trap_alerts_by_kind"] == {}
    assert r0["false_alerts"] == r["false_alerts"]


def test_scoring_counts_grouped_members_of_pages_and_updates_not_of_resolves():
    labels = [_label("L1", "latency", 60, 70), _label("T1", "tokens", 100, 110)]
    member = _alert("tokens", 101)
    page = dict(_alert("latency", 101), status="firing")  # a tokens incident paged as latency ...
    resolve = dict(_alert("latency", 101), status="resolved", evidence={"grouped": [member]})  # ... told at the end
    r = score([_alert("latency", 61), page, resolve], labels, duration_s=H)
    assert r["detected_by_type"]["tokens"] == [0, 1]  # a resolve tells the operator too late
    assert r["detected_grouped_only_by_type"] == {}
    assert r["n_alerts"] == 2  # the resolve is not a page
    update = dict(_alert("latency", 102), status="updated", evidence={"grouped": [member]})
    r = score([_alert("latency", 61), page, update, resolve], labels, duration_s=H)
    assert r["detected_by_type"]["tokens"] == [1, 1]  # the incident's update named it
    assert r["detected_grouped_only_by_type"] == {"tokens": 1}
    assert r["grouped_only_labels"] == ["T1"]
    assert r["n_alerts"] == 2  # an update is not a page either