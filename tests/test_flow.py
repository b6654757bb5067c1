"""The whole dataflow on Bytewax's testing source and sink."""

from tests.helpers import T0, batches, request, run_flow, steady


def _types(alerts):
    return sorted((a["type"], a["service"], a["model"]) for a in alerts)


def test_latency_incident_alerts_once_with_spec_fields():
    def slow(ts, lat):
        return lat * 5 if T0 + 60 * 60 <= ts < T0 + 70 * 60 else lat

    alerts, dead = run_flow(batches(steady(90, latency_fn=slow)))
    assert dead == []
    # The incident's messages share the page's fingerprint; their headline is the most
    # severe member (the ttft that joins, latency x5 moves ttft too, may become it).
    page = next(a for a in alerts if a["type"] == "latency")
    lat = [a for a in alerts if a["fingerprint"] == page["fingerprint"]]
    statuses = [a["status"] for a in lat]
    # One page, escalations only if it grew, an update naming the ttft that joined
    # (both held by group_interval of wall time in a replay this fast), one resolve.
    assert statuses[0] == "firing" and statuses[-1] == "resolved", statuses
    assert set(statuses[1:-1]) <= {"escalated", "updated"} and len(statuses) <= 5, statuses
    assert statuses.count("firing") == 1
    assert len({a["fingerprint"] for a in lat}) == 1
    assert len({a["alert_id"] for a in lat}) == len(lat)
    assert lat[-1]["event_time"] == lat[0]["event_time"]
    a = lat[0]
    for field in ("alert_id", "fingerprint", "type", "severity", "service", "model", "subject", "metric",
                  "observed", "expected", "score", "detector", "event_time", "detected_at", "summary",
                  "evidence", "root_cause_hints", "similar_incidents"):
        assert field in a
    assert (a["service"], a["model"], a["subject"]) == ("svc", "m1", None)
    assert a["event_time"] == "2026-01-05T01:00:00Z"
    assert a["observed"] > 3 * a["expected"]
    assert 0.9 <= a["score"] <= 1.0
    assert a["severity"] in ("high", "critical")
    assert not [x for x in alerts if x["type"] not in ("latency", "ttft")], alerts


def test_single_slow_request_is_not_an_incident():
    evs = steady(90)
    evs.append(request(T0 + 60 * 60 + 1.5, latency=60_000.0, ttft_ms=30_000.0))
    evs.sort(key=lambda e: e["timestamp"])
    alerts, _ = run_flow(batches(evs))
    assert alerts == []


def test_alert_ids_are_stable_across_replays():
    def slow(ts, lat):
        return lat * 6 if T0 + 50 * 60 <= ts < T0 + 56 * 60 else lat

    evs = steady(70, latency_fn=slow)
    a1, _ = run_flow(batches(evs))
    a2, _ = run_flow(batches(evs, size=97))
    assert a1 and [a["alert_id"] for a in a1] == [a["alert_id"] for a in a2]
    assert a1[0]["fingerprint"] == a2[0]["fingerprint"]


def test_bad_input_goes_to_dead_letters_and_the_run_goes_on():
    good = steady(5)
    bad = [b"not json at all", b'{"timestamp": 1767571200, "service": "svc"', b"[1,2]",
           b'{"timestamp": 1767571200, "service": 3, "model": "m"}', b'{"timestamp": 1767571200, "service": "\xff", "model": "m"}']
    items = batches(good[:100]) + batches(bad, partition="p0") + batches(good[100:])
    alerts, dead = run_flow(items)
    assert sorted(d.reason for d in dead) == sorted(["bad_json", "bad_json", "not_object", "wrong_type", "invalid_utf8"])
    assert all(d.detail for d in dead)


def test_coordinated_attack_needs_more_than_ten_events_in_five_minutes():
    sec = [{"event_type": "security", "timestamp": T0 + i * 20, "source": "10.0.0.9", "kind": "jailbreak"}
           for i in range(11)]  # 11 events within 200 s
    slow = [{"event_type": "security", "timestamp": T0 + i * 40, "source": "10.0.0.7", "kind": "jailbreak"}
            for i in range(11)]  # 11 events over 400 s: at most 8 in any 5 minutes
    alerts, _ = run_flow(batches(sorted(sec + slow, key=lambda e: e["timestamp"])))
    assert [(a["type"], a["subject"], a["status"]) for a in alerts] == [
        ("coordinated_attack", "10.0.0.9", "firing"), ("coordinated_attack", "10.0.0.9", "resolved")]
    assert alerts[0]["model"] is None and alerts[0]["observed"] == 11


def test_lagging_partition_does_not_turn_events_late():
    """Two partitions feeding one key, one hours behind the other in event time."""
    early = steady(60, seed=2)
    late_part = steady(60, seed=3, start=T0 + 3 * 3600)
    items = []
    b_early = batches(early, partition="p-early", size=200, partitions=2)
    b_late = batches(late_part, partition="p-late", size=200, partitions=2)
    for x, y in zip(b_late, b_early):  # the fast partition is read first
        items += [x, y]
    from sentinel.metrics import get_metrics

    late = get_metrics().events.labels(outcome="late")
    before = late._value.get()
    run_flow(items)
    assert late._value.get() == before


def test_resent_events_count_once():
    # Every event of a latency incident arrives twice (a producer's retries, in a
    # later batch): the alerts are those of sending it once. Without the check
    # the windows count each request twice.
    def slow(ts, lat):
        return lat * 5 if T0 + 60 * 60 <= ts < T0 + 70 * 60 else lat

    evs = [dict(e, event_id="e%d" % i) for i, e in enumerate(steady(90, latency_fn=slow))]
    resent = []
    for i in range(0, len(evs), 200):
        resent += evs[i:i + 200] + evs[i:i + 200]
    checked = {"state": {"dedup_ids": 100000}}
    once, _ = run_flow(batches(evs), checked)
    twice, _ = run_flow(batches(resent), checked)

    def view(alerts):
        return [(a["type"], a["status"], a["observed"], a["evidence"].get("requests_in_window")) for a in alerts]

    assert once and view(twice) == view(once)
    unchecked, _ = run_flow(batches(resent))  # off by default
    assert view(unchecked) != view(once)


def test_latency_incident_with_ttft_up_hints_at_the_time_before_the_first_token():
    def slow(ts, lat):
        return lat * 5 if T0 + 60 * 60 <= ts < T0 + 70 * 60 else lat

    alerts, _ = run_flow(batches(steady(90, latency_fn=slow)))  # ttft is a fifth of the latency: x5 too
    lat = [a for a in alerts if a["type"] == "latency"]
    assert lat and lat[0]["status"] == "firing"
    hints = lat[0]["root_cause_hints"]
    assert hints and hints[0].startswith("time to first token is up x") and len(hints) <= 3
    assert "the delay is before the first token" in hints[0]
    # The resolve's headline is the incident's most severe member (here the ttft that joined): its hints.
    inc = [a for a in alerts if a["fingerprint"] == lat[0]["fingerprint"]]
    assert inc[-1]["status"] == "resolved" and inc[-1]["root_cause_hints"]


def test_error_rate_incident_of_rate_limits_hints_at_the_quota():
    import random

    rng = random.Random(5)
    evs = steady(90)
    for e in evs:
        if T0 + 60 * 60 <= e["timestamp"] < T0 + 70 * 60 and rng.random() < 0.3:
            e.update(status="error", error_type="rate_limit")
    alerts, _ = run_flow(batches(evs))
    err = [a for a in alerts if a["type"] == "error_rate"]
    assert [a["status"] for a in err] == ["firing", "resolved"], alerts
    hints = err[0]["root_cause_hints"]
    assert len(hints) == 1 and hints[0].endswith("are rate_limit: a quota or rate limit at the provider, "
                                                 "not a model fault"), hints
    share = int(hints[0].split("%")[0])
    assert 90 <= share <= 100  # the key's usual 1% of errors carry no type
    assert err[-1]["root_cause_hints"] == hints
