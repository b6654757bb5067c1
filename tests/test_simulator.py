"""The telemetry simulator (sentinel.simulator) and the benchmark scoring."""

from __future__ import annotations

import hashlib
import sys
from collections import defaultdict, deque
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scoring import score  # noqa: E402
from sentinel.simulator import (  # noqa: E402
    DEFAULT_START,
    INCIDENT_TYPES,
    Simulator,
    format_time,
    to_epoch,
)

H = 3600.0
SECURITY_KINDS = {"prompt_injection", "jailbreak", "pii_leak", "auth_failure", "rate_limited", "policy_violation"}
LABEL_FIELDS = {"id", "type", "service", "model", "subject", "start", "end", "magnitude"}


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
    for e in sim.events():
        n += 1
        t = to_epoch(e["timestamp"])
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
            "worst_background": worst_background, "last": last}


def test_six_hours_count_order_and_ids(six_hours):
    sim = six_hours["sim"]
    assert six_hours["in_order"]
    assert six_hours["ids"] == six_hours["n"]  # event ids unique
    assert abs(six_hours["n_req"] - 18.5 * 6 * H) < 0.1 * 18.5 * 6 * H
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
        assert 300.0 <= e - s <= 1200.0
        assert e <= sim.end
    for (_, e1, _), (s2, _, _) in zip(spans, spans[1:]):
        assert e1 <= s2  # no two overlap (so none on the same key)
    assert [lab["id"] for lab in labels] == [lab["id"] for lab in Simulator(seed=seed).labels]
    assert len({lab["id"] for lab in labels}) == len(labels)


def test_longer_run_has_about_one_incident_per_40_minutes():
    labels = Simulator(seed=3, hours=24.0, incidents="auto").labels
    assert 30 <= len(labels) <= 40


# ------------------------------------------------------------- determinism


def test_same_seed_same_bytes_different_seed_differs():
    a = _digest(Simulator(seed=11, hours=1.5, rate=6.0))
    b = _digest(Simulator(seed=11, hours=1.5, rate=6.0))
    c = _digest(Simulator(seed=12, hours=1.5, rate=6.0))
    assert a == b
    assert a != c


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
