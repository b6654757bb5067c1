"""One incident, one page: grouping, silences and feedback on the whole flow."""

from operators.silences import Controls, get_controls
from tests.helpers import T0, batches, run_flow, steady


def incident_traffic(minutes=120, start_min=70, length=10, lat=5.0, errors=False, model="m1", seed=1):
    def slow(ts, value):
        return value * lat if T0 + start_min * 60 <= ts < T0 + (start_min + length) * 60 else value

    evs = steady(minutes, latency_fn=slow, model=model, seed=seed)
    if errors:
        for e in evs:
            if T0 + start_min * 60 <= e["timestamp"] < T0 + (start_min + length) * 60 and hash(e["timestamp"]) % 3 == 0:
                e["status"] = "error"
    return evs


def pages(alerts):
    return [a for a in alerts if a["status"] in ("firing", "escalated")]


def test_ten_minute_incident_is_one_page_and_one_resolve():
    alerts, _ = run_flow(batches(incident_traffic()))
    firing = [a for a in alerts if a["status"] == "firing"]
    resolved = [a for a in alerts if a["status"] == "resolved"]
    assert len(firing) == 1 and len(resolved) == 1, [(a["type"], a["status"]) for a in alerts]
    assert firing[0]["fingerprint"] == resolved[0]["fingerprint"]
    assert alerts[-1]["status"] == "resolved"


def test_related_anomalies_on_one_service_are_one_incident():
    evs = incident_traffic(errors=True)
    alerts, _ = run_flow(batches(evs), {"alerting": {"group_wait": "2m"}})
    firing = [a for a in alerts if a["status"] == "firing"]
    assert len(firing) == 1, [(a["type"], a["status"]) for a in alerts]
    grouped = {m["type"] for m in firing[0]["evidence"].get("grouped", [])} | {firing[0]["type"]}
    assert {"latency", "error_rate"} <= grouped
    assert [a["status"] for a in alerts].count("resolved") == 1


def test_separate_services_are_separate_incidents():
    a = incident_traffic()
    b = [dict(e, service="other") for e in incident_traffic(seed=9)]
    alerts, _ = run_flow(batches(sorted(a + b, key=lambda e: e["timestamp"])))
    assert sorted(x["service"] for x in alerts if x["status"] == "firing") == ["other", "svc"]


def test_silence_in_the_flow_definition_drops_the_whole_episode():
    from sentinel.metrics import get_metrics

    silenced = get_metrics().alerts_suppressed.labels(reason="silenced")
    before = silenced._value.get()
    alerts, _ = run_flow(batches(incident_traffic()), {"alerting": {"silences": [
        {"matchers": {"service": "svc", "type": "latency"}, "start": "2026-01-05T01:00:00Z",
         "end": "2026-01-05T02:00:00Z", "comment": "planned load test"}]}})
    assert [a for a in alerts if a["type"] == "latency"] == []
    assert silenced._value.get() > before
    get_controls().expire_silence("flow-0")


def test_silence_outside_its_window_does_not_apply():
    alerts, _ = run_flow(batches(incident_traffic()), {"alerting": {"silences": [
        {"matchers": {"service": "svc"}, "start": "2026-01-06T00:00:00Z", "end": "2026-01-06T02:00:00Z"}]}})
    assert [a for a in alerts if a["status"] == "firing"]
    get_controls().expire_silence("flow-0")


def test_false_positive_feedback_mutes_that_pattern_but_not_a_bigger_one():
    controls = get_controls()
    first, _ = run_flow(batches(incident_traffic(lat=3.0)))
    page = [a for a in first if a["status"] == "firing"][0]
    assert controls.add_feedback({"alert_id": page["alert_id"], "label": "false_positive",
                                  "reason": "batch job", "who": "ops"})
    # The same pattern again (another day, same size): no page.
    again, _ = run_flow(batches(incident_traffic(lat=3.0, seed=2)))
    assert [a for a in again if a["status"] == "firing" and a["type"] == "latency"] == []
    # A real incident on that key, far bigger: pages.
    real, _ = run_flow(batches(incident_traffic(lat=12.0, seed=3)))
    assert [a for a in real if a["status"] == "firing" and a["type"] == "latency"]
    controls._feedback.clear()


def test_feedback_for_an_unknown_alert_waits_for_it():
    c = Controls()
    assert not c.add_feedback({"alert_id": "nope", "label": "false_positive"})
    alert = {"alert_id": "nope", "fingerprint": "fp", "service": "s", "model": "m", "type": "latency",
             "metric": "latency_p95_ms", "observed": 300.0, "expected": 100.0, "event_time": "2026-01-05T00:00:00Z"}
    c.remember(alert)
    assert c.dismissed_by(dict(alert, observed=320.0)) is not None
    assert c.dismissed_by(dict(alert, observed=900.0)) is None
