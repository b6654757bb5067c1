"""Coordinated attacks: the per-source detector alone (detectors/attacks.py), and its step (operators/attacks.py)."""

import pickle
from collections import Counter

from detectors.attacks import SourceAttacks
from operators.attacks import AttackLogic, AttackState
from sentinel.config import load_config_dict
from sentinel.events import SecurityEvent
from sentinel.redeploy import refresh_attack_state
from tests.helpers import T0, batches, run_flow, steady


def ev(ts, kind="jailbreak", service="chat", model="m1"):
    return SecurityEvent(ts, "203.0.113.9", kind, service, model)


def view(findings):
    return [(f.status, f.count, f.first, f.fired, f.end, f.severity, round(f.score, 9), f.kinds, f.service, f.model)
            for f in findings]


def feed(d, events, size=5):
    out = []
    for i in range(0, len(events), size):
        out += d.update(events[i:i + size])
    return out


def attack(start, n, every=20.0, **kw):
    return [ev(start + every * i, **kw) for i in range(n)]


def test_more_than_threshold_events_in_a_window_fire_once():
    d = SourceAttacks(window=300.0, threshold=10)
    assert feed(d, attack(T0, 10)) == []  # ten in 180 s: not more than the threshold
    assert not d.active
    out = feed(d, attack(T0 + 190, 1))
    assert [(f.status, f.count, f.first, f.fired, f.severity, f.service) for f in out] == [
        ("firing", 11, T0, T0 + 190, "high", "chat")]
    assert out[0].end == T0 + 190 + 300 and out[0].kinds == {"jailbreak": 11} and d.active
    slow = SourceAttacks(window=300.0, threshold=10)
    assert feed(slow, attack(T0, 11, every=40.0)) == []  # 11 over 400 s: at most 8 in any five minutes


def test_severity_and_score_grow_with_the_count():
    (g,) = SourceAttacks(window=300.0, threshold=10).update(attack(T0, 12, every=5.0))
    assert (g.count, g.severity, g.score) == (11, "high", 0.9 + 0.1 * 11 / 40)
    # Counts jump past three times the threshold when the threshold is lowered on a source that has them
    # (a flow restored with a new threshold: operators keep the tuning values as the flow's).
    d = SourceAttacks(window=300.0, threshold=100)
    assert d.update(attack(T0, 31, every=5.0)) == []
    d.threshold = 10
    (f,) = d.update([ev(T0 + 160)])
    assert (f.count, f.severity, f.score) == (32, "critical", 0.9 + 0.1 * 32 / 40)


def test_an_ongoing_attack_is_one_episode_and_a_quiet_window_resolves_it():
    d = SourceAttacks(window=300.0, threshold=10)
    out = feed(d, attack(T0, 90))  # 30 minutes at three a minute
    assert [f.status for f in out] == ["firing"]
    last = T0 + 20 * 89
    # Until one whole window after the last event of a window over the threshold, the episode is open.
    assert feed(d, [ev(last + 300)]) == [] and d.active
    (r,) = d.update([ev(last + 301)])
    assert (r.status, r.end, r.first, r.count, r.severity) == ("resolved", last + 300, T0, 11, "high")
    assert not d.active
    # A new attack later is a new episode.
    (again,) = feed(d, attack(last + 3600, 11))
    assert (again.status, again.first) == ("firing", last + 3600)


def test_the_end_of_the_stream_resolves_an_open_episode_at_its_end():
    d = SourceAttacks(window=300.0, threshold=10)
    assert d.close() is None
    feed(d, attack(T0, 11))
    r = d.close()
    assert (r.status, r.end) == ("resolved", T0 + 200 + 300) and not d.active
    assert d.close() is None


def test_an_attack_during_another_open_episode_on_the_same_service_fires():
    # Two sources attack one service; the second's attack fires while the first's is open, and
    # neither resolves the other.
    a, b = SourceAttacks(), SourceAttacks()
    fa = feed(a, attack(T0, 11, kind="jailbreak"))
    fb = feed(b, attack(T0 + 100, 11, kind="prompt_injection"))
    assert [(f.status, f.service, f.kinds) for f in fa + fb] == [
        ("firing", "chat", {"jailbreak": 11}), ("firing", "chat", {"prompt_injection": 11})]
    assert a.active and b.active


def test_an_attack_during_an_open_latency_incident_of_its_service_pages_as_an_attack():
    def slow(ts, lat):
        return lat * 5 if T0 + 60 * 60 <= ts < T0 + 70 * 60 else lat

    evs = steady(90, latency_fn=slow)
    evs += [{"event_type": "security", "timestamp": T0 + 62 * 60 + 10 * i, "source": "10.0.0.9",
             "kind": "jailbreak", "service": "svc", "model": "m1"} for i in range(15)]
    evs.sort(key=lambda e: e["timestamp"])
    alerts, _ = run_flow(batches(evs))
    lat = [a for a in alerts if a["type"] == "latency" and a["status"] == "firing"]
    att = [a for a in alerts if a["type"] == "coordinated_attack"]
    assert lat and lat[0]["event_time"] < "2026-01-05T01:02:00Z"  # the latency incident is open first
    assert [(a["status"], a["service"], a["subject"], a["observed"]) for a in att] == [
        ("firing", "svc", "10.0.0.9", 11), ("resolved", "svc", "10.0.0.9", 11)]
    assert att[0]["event_time"] == "2026-01-05T01:02:00Z"


def _stream():
    """Three attacks from one source, with quiet between and stragglers out of order."""
    evs = attack(T0, 40, every=7.0) + [ev(T0 + 150, "pii")] + attack(T0 + 900, 30, every=9.0, kind="pii")
    evs += attack(T0 + 2000, 5, every=60.0) + attack(T0 + 2400, 25, every=3.0, service="search", model="m2")
    evs += [ev(T0 + 3400)]
    return evs


def test_a_detector_restored_from_a_snapshot_mid_episode_finds_what_one_that_never_stopped_finds():
    evs = _stream()
    whole = feed(SourceAttacks(), evs)
    assert [f.status for f in whole] == ["firing", "resolved", "firing", "resolved", "firing", "resolved"]
    for cut in (15, 55, 90):  # inside the first attack, inside the second, inside the third
        d = SourceAttacks()
        first = feed(d, evs[:cut])
        assert d.active
        d = pickle.loads(pickle.dumps(d))
        assert view(first + feed(d, evs[cut:])) == view(whole)


def test_a_step_restored_from_its_snapshot_mid_episode_sends_the_same_alerts():
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}})
    evs = _stream()
    parts = [evs[i:i + 6] for i in range(0, len(evs), 6)]

    def run(lg, items):
        out = []
        for b in items:
            out += lg.on_item(("203.0.113.9", "p0", b, 5.0, 1))[0]
        return out

    def json(alerts):
        return [{k: v for k, v in a.to_json().items() if k != "detected_at"} for a in alerts]

    one = AttackLogic(cfg, None)
    whole = run(one, parts) + one.on_eof()[0]
    assert [a.status for a in whole] == ["firing", "resolved", "firing", "resolved", "firing", "resolved"]
    lg = AttackLogic(cfg, None)
    head = run(lg, parts[:4])
    assert lg.state.firing is not None
    restored = AttackLogic(cfg, refresh_attack_state(cfg, pickle.loads(pickle.dumps(lg.snapshot()))))
    tail = run(restored, parts[4:]) + restored.on_eof()[0]
    assert json(head + tail) == json(whole)


def test_a_restored_source_takes_the_flows_current_window_and_threshold():
    old = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}})
    new = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0},
                            "detection": {"coordinated_attack": {"window": 60, "threshold": 3}}})
    lg = AttackLogic(old, None)
    assert lg.on_item(("s", "p0", attack(T0, 4), 5.0, 1))[0] == []
    st = refresh_attack_state(new, pickle.loads(pickle.dumps(lg.snapshot())))
    assert (st.detector.window, st.detector.threshold) == (60.0, 3)
    (a,) = AttackLogic(new, st).on_item(("s", "p0", [ev(T0 + 65)], 5.0, 1))[0]
    assert (a.observed, a.expected, a.evidence["window_seconds"]) == (4, 3, 60.0)


def test_a_state_of_the_earlier_layout_is_restored_with_its_open_episode():
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}})
    lg = AttackLogic(cfg, None)
    (firing,) = lg.on_item(("s", "p0", attack(T0, 11), 5.0, 1))[0]
    # What a snapshot of the step held before the detector was its own (its alert as a dict, as older ones).
    st = object.__new__(AttackState)
    st.__setstate__({"source": "s", "times": [T0 + 20 * i for i in range(11)], "kinds": Counter(jailbreak=11),
                     "services": Counter({("chat", "m1"): 11}), "active_until": T0 + 500.0, "last_wall": 0.0,
                     "last_ingest": 5.0, "firing": firing.to_json()})
    restored = AttackLogic(cfg, refresh_attack_state(cfg, st))
    assert restored.state.detector.active
    assert restored.on_item(("s", "p0", [ev(T0 + 500)], 5.0, 1))[0] == []
    (r,) = restored.on_item(("s", "p0", [ev(T0 + 501)], 5.0, 1))[0]
    assert (r.status, r.fingerprint, r.evidence["fired_event_time"]) == (
        "resolved", firing.fingerprint, "2026-01-05T00:08:20Z")


def test_clone_has_the_tuning_and_nothing_learned():
    d = SourceAttacks(window=120.0, threshold=4)
    feed(d, attack(T0, 6))
    c = d.clone()
    assert (c.window, c.threshold, c.active) == (120.0, 4, False) and d.active
    evs = attack(T0 + 1000, 7)
    assert view(feed(c, evs)) == view(feed(SourceAttacks(window=120.0, threshold=4), evs))
