"""One incident, one page: grouping, silences and feedback on the whole flow."""

from operators.silences import Controls
from sentinel.core.types import Alert, Severity
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


def test_silence_outside_its_window_does_not_apply():
    alerts, _ = run_flow(batches(incident_traffic()), {"alerting": {"silences": [
        {"matchers": {"service": "svc"}, "start": "2026-01-06T00:00:00Z", "end": "2026-01-06T02:00:00Z"}]}})
    assert [a for a in alerts if a["status"] == "firing"]


def test_false_positive_feedback_mutes_that_pattern_but_not_a_bigger_one():
    controls = Controls()  # the runs share their silences and feedback, as a process's flow and its listener do
    first, _ = run_flow(batches(incident_traffic(lat=3.0)), controls=controls)
    page = [a for a in first if a["status"] == "firing"][0]
    assert controls.add_feedback({"alert_id": page["alert_id"], "label": "false_positive",
                                  "reason": "batch job", "who": "ops"})
    # The same pattern again (another day, same size): no page.
    again, _ = run_flow(batches(incident_traffic(lat=3.0, seed=2)), controls=controls)
    assert [a for a in again if a["status"] == "firing" and a["type"] == "latency"] == []
    # A real incident on that key, far bigger: pages.
    real, _ = run_flow(batches(incident_traffic(lat=12.0, seed=3)), controls=controls)
    assert [a for a in real if a["status"] == "firing" and a["type"] == "latency"]


def test_feedback_for_an_unknown_alert_waits_for_it():
    c = Controls()
    assert not c.add_feedback({"alert_id": "nope", "label": "false_positive"})
    alert = Alert.from_json({"alert_id": "nope", "fingerprint": "fp", "service": "s", "model": "m", "type": "latency",
                             "metric": "latency_p95_ms", "observed": 300.0, "expected": 100.0,
                             "event_time": "2026-01-05T00:00:00Z"})
    c.remember(alert)
    assert c.dismissed_by(alert.copy(observed=320.0)) is not None
    assert c.dismissed_by(alert.copy(observed=900.0)) is None


# -- the incidents step on its own: one page per incident --------------------------------------------------

import pickle  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

import bytewax.operators as op  # noqa: E402
from bytewax.dataflow import Dataflow  # noqa: E402
from bytewax.testing import TestingSink, TestingSource, run_main  # noqa: E402

from operators.alerts import make_alert, resolved  # noqa: E402
from operators.incidents import GroupState, Incident, IncidentLogic, group_key  # noqa: E402
from sentinel.config import AlertingConfig  # noqa: E402
from sentinel.metrics import get_metrics  # noqa: E402

H = T0 + 3600  # an hour in


def _iso(t):
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def alert(typ, t, severity="medium", model="m1", service="svc", subject=None, status="firing", fired=None):
    """An alert of an episode that began at ``t`` (event time), this message raised at ``fired`` (or t)."""
    metric = {"token_abuse": "tokens_per_horizon", "coordinated_attack": "security_events"}.get(typ, typ)
    return make_alert(typ, metric, 10.0, 1.0, 0.95, severity, "d", t, service, model, subject=subject, status=status,
                      evidence={"fired_event_time": _iso(fired if fired is not None else t)})


class Clock:
    """A wall clock the test moves (the incidents step reads ``logic.clock``)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def logic(interval=60.0, **kw):
    lg = IncidentLogic(AlertingConfig(group_interval=interval, **kw), None)
    lg.clock = Clock()
    return lg


def feed(lg, *alerts):
    out = []
    for a in alerts:
        out += lg.on_item(a)[0]
    return out


def statuses(out):
    return [a.status for a in out]


def test_an_attack_during_an_open_incident_of_its_service_pages_as_an_attack():
    # Through Bytewax as the flow keys it: an abusing user's incident is open on the service
    # when an attack on the same service begins; the attack is its own page.
    cfg = AlertingConfig()
    items = [alert("token_abuse", H, "high", model=None, subject="user:u1"),
             alert("latency", H + 30, "medium"),
             alert("coordinated_attack", H + 60, "high", model=None, subject="ip:10.0.0.9"),
             alert("token_abuse", H + 90, "high", model=None, subject="user:u2")]
    flow = Dataflow("incidents_only")
    s = op.input("in", flow, TestingSource(items))
    keyed = op.key_on("group_key", s, lambda a: group_key(a, ("service",)))
    got = op.stateful("incidents", keyed, lambda st: IncidentLogic(cfg, st))
    out = []
    op.output("out", op.map("unkey", got, lambda kv: kv[1]), TestingSink(out))
    run_main(flow)
    pages = sorted((a.type, a.subject) for a in out if a.status == "firing")
    assert pages == [("coordinated_attack", "ip:10.0.0.9"), ("latency", None),
                     ("token_abuse", "user:u1"), ("token_abuse", "user:u2")], statuses(out)
    assert all("grouped" not in a.evidence for a in out)


def test_group_key_separates_families_and_actors():
    key = lambda a: group_key(a, ("service",))  # noqa: E731
    lat, ttft = alert("latency", H), alert("ttft", H, model="m2")
    abuse = alert("token_abuse", H, model=None, subject="user:u1")
    attack = alert("coordinated_attack", H, model=None, subject="ip:1")
    policy = alert("policy_violation", H, model=None, subject="user:u1")
    assert key(lat) == key(ttft)
    assert len({key(lat), key(abuse), key(attack)}) == 3
    assert key(abuse) != key(alert("token_abuse", H, model=None, subject="user:u2"))
    assert key(policy) == key(alert("policy_violation", H, model=None, subject="user:u2")) != key(attack)
    assert key(alert("coordinated_attack", H, model=None, service=None, subject="ip:1")).startswith("fp:")


def test_a_member_of_a_type_the_incident_has_folds_silently():
    grouped = get_metrics().alerts_suppressed.labels(reason="grouped")
    before = grouped._value.get()
    lg = logic()
    out = feed(lg, alert("latency", H, model="m1"))
    lg.clock.now += 3600
    out += feed(lg, alert("latency", H + 600, model="m2"))  # an hour later, wall and event time: still nothing
    assert statuses(out) == ["firing"]
    assert grouped._value.get() == before + 1
    # ... but it is named by the incident's later messages.
    out += feed(lg, alert("tokens", H + 1200))
    assert statuses(out) == ["firing", "updated"]
    assert sorted((m["type"], m["model"]) for m in out[-1].evidence["grouped"]) == [("latency", "m2"),
                                                                                       ("tokens", "m1")]


def test_a_busy_incident_sends_at_most_one_update_per_group_interval():
    lg = logic()
    out = feed(lg, alert("latency", H, model="m0"))
    # 50 more models' latency within seconds (event and wall time), then three new types.
    for i in range(1, 51):
        lg.clock.now += 0.1
        out += feed(lg, alert("latency", H + i, model=f"m{i}"))
    for i, typ in enumerate(("ttft", "error_rate", "cost")):
        lg.clock.now += 1
        out += feed(lg, alert(typ, H + 51 + i, model="m1"))
    assert statuses(out) == ["firing"]
    # A replay: event time runs on, the wall clock hardly moves; still held.
    out += feed(lg, alert("tokens", H + 500, model="m1"))
    assert statuses(out) == ["firing"]
    # A minute of wall time later the held change goes out once (on_notify), all new types in it.
    assert lg.notify_at() is not None
    lg.clock.now += 60
    out += lg.on_notify()[0]
    assert statuses(out) == ["firing", "updated"]
    types = {m["type"] for m in out[-1].evidence["grouped"]}
    assert {"ttft", "error_rate", "cost", "tokens", "latency"} <= types
    assert out[-1].type == "latency" and out[-1].fingerprint == out[0].fingerprint
    # Nothing more to say: no further message, however much time passes.
    lg.clock.now += 600
    assert lg.on_notify()[0] == [] and feed(lg, alert("latency", H + 900, model="m99")) == []


def test_a_change_waits_for_the_group_interval_of_event_time_too():
    lg = logic()
    out = feed(lg, alert("latency", H))
    lg.clock.now += 3600  # a live flow whose events lag: wall time passes, event time does not
    out += feed(lg, alert("ttft", H + 10))
    assert statuses(out) == ["firing"]
    out += feed(lg, alert("latency", H + 70, model="m2"))  # the group's next alert, an interval later
    assert statuses(out) == ["firing", "updated"]


def test_a_severity_rise_escalates_and_wins_over_a_held_update():
    lg = logic()
    out = feed(lg, alert("latency", H, "medium"))
    out += feed(lg, alert("ttft", H + 5, "medium"), alert("tokens", H + 6, "critical"))
    assert statuses(out) == ["firing"]  # both within the interval: held, one message
    lg.clock.now += 61
    out += feed(lg, alert("latency", H + 70, "medium", model="m2"))
    assert statuses(out) == ["firing", "escalated"]
    esc = out[-1]
    assert esc.severity == "critical" and esc.type == "tokens"
    assert esc.summary.startswith("Escalated to critical: ")
    assert esc.fingerprint == out[0].fingerprint and esc.event_time == out[0].event_time
    # A rise once the interval has passed re-pages at once.
    lg2 = logic()
    out2 = feed(lg2, alert("latency", H, "medium"))
    lg2.clock.now += 61
    out2 += feed(lg2, alert("latency", H, "high", status="escalated", fired=H + 61))
    assert statuses(out2) == ["firing", "escalated"] and out2[-1].severity == "high"
    assert out2[-1].summary.count("Escalated to") == 1


def test_the_headline_is_the_most_severe_member_the_earliest_among_equals():
    lg = logic(group_wait=120.0)
    out = feed(lg, alert("latency", H, "medium"), alert("ttft", H + 10, "high"),
               alert("cost", H + 20, "high"), alert("tokens", H + 100, "low"))
    assert out == []  # group_wait: the page waits for members arriving together
    lg.clock.now += 120
    out += lg.on_notify()[0]
    assert statuses(out) == ["firing"]
    page = out[0]
    assert (page.type, page.severity) == ("ttft", "high")
    assert page.alert_id == alert("ttft", H + 10, "high").alert_id
    assert {m["type"] for m in page.evidence["grouped"]} == {"latency", "cost", "tokens"}
    # Later messages keep the page's fingerprint and event time, with the current headline.
    lg.clock.now += 61
    out += feed(lg, alert("error_rate", H + 200, "critical"))
    assert statuses(out) == ["firing", "escalated"]
    assert out[1].type == "error_rate" and out[1].metric == "error_rate"
    assert (out[1].fingerprint, out[1].event_time) == (page.fingerprint, page.event_time)


def test_one_resolve_when_every_member_has_resolved_and_held_changes_die_with_it():
    lg = logic()
    a, b, c = alert("latency", H), alert("latency", H + 5, model="m2"), alert("ttft", H + 10)
    out = feed(lg, a, b, c)
    out += feed(lg, resolved(a, H + 20), resolved(b, H + 25))
    assert statuses(out) == ["firing"]  # the ttft is held, the incident still open
    out += feed(lg, resolved(c, H + 30))
    assert statuses(out) == ["firing", "resolved"]
    assert len(out[-1].evidence["grouped"]) == 2 and "3 anomalies" in out[-1].summary
    assert lg.state.incidents == [] and lg.on_eof()[0] == []


def test_a_held_change_of_an_open_incident_is_announced_at_end_of_input():
    lg = logic()
    out = feed(lg, alert("latency", H), alert("ttft", H + 5))
    out += lg.on_eof()[0]
    assert statuses(out) == ["firing", "updated"]
    assert lg.on_eof()[0] == []


def test_alert_ids_are_the_same_in_a_replay():
    def run():
        lg = logic()
        seq = [alert("latency", H), alert("ttft", H + 5), alert("tokens", H + 100, "critical"),
               alert("latency", H + 200, model="m2")]
        out = []
        for i, x in enumerate(seq):
            lg.clock.now += 61 * i
            out += feed(lg, x)
        out += feed(lg, *(resolved(x, H + 300) for x in seq))
        return [(a.status, a.alert_id) for a in out]

    first = run()
    assert [s for s, _ in first] == ["firing", "updated", "escalated", "resolved"]
    assert first == run() and len({i for _, i in first}) == 4


def test_state_of_an_earlier_version_still_loads():
    page, member = alert("latency", H), alert("ttft", H + 5)
    # Alerts were dicts then: the SPEC object and the ingest time under "_ingested_at".
    old_page, old_member = (dict(a.to_json(), _ingested_at=12.5) for a in (page, member))
    inc = Incident.__new__(Incident)
    inc.__setstate__({"primary": old_page, "members": {page.fingerprint: old_page, member.fingerprint: old_member},
                      "active": {page.fingerprint: True, member.fingerprint: True}, "severity": "medium",
                      "paged": True, "hold_until_event": H, "hold_until_wall": 0.0, "last_page_event": H + 0.0,
                      "repeats": 0, "escalations": 0, "first_event": H + 0.0, "last_event": H + 5.0, "updates": 0,
                      "last_update_event": H + 0.0, "pending_update": True})
    st = GroupState.__new__(GroupState)
    st.__setstate__({"incidents": [inc], "last_wall": 5.0})
    st = pickle.loads(pickle.dumps(st))
    assert (inc.held, inc.last_sent_event, inc.headline) == ("updated", H, page.copy(ingested_at=12.5))
    assert isinstance(inc.primary, Alert) and inc.severity is Severity.medium
    lg = IncidentLogic(AlertingConfig(group_interval=60.0), st)
    out = lg.on_eof()[0]
    assert statuses(out) == ["updated"] and {m["type"] for m in out[0].evidence["grouped"]} == {"ttft"}
    # An episode's firing alert kept as a dict by an older snapshot still resolves.
    out = feed(lg, resolved(old_page, H + 100), resolved(old_member, H + 100))
    assert statuses(out) == ["resolved"]


def test_snapshots_are_copies():
    lg = logic()
    feed(lg, alert("latency", H))
    snap = lg.snapshot()
    feed(lg, alert("ttft", H + 5))
    assert len(snap.incidents[0].members) == 1 and len(lg.state.incidents[0].members) == 2


def test_alerts_of_the_first_window_are_in_the_first_page():
    # A x5 latency moves the ttft too; with group_wait 0 both fire in the same window. The page
    # names both at once, where it used to name the latency and hold the ttft for an update.
    alerts, _ = run_flow(batches(incident_traffic()))
    firing = [a for a in alerts if a["status"] == "firing"]
    assert len(firing) == 1, [(a["type"], a["status"]) for a in alerts]
    named = {firing[0]["type"]} | {m["type"] for m in firing[0]["evidence"].get("grouped", [])}
    assert named == {"latency", "ttft"}
    assert [a["status"] for a in alerts] == ["firing", "resolved"]


def _through_the_operator(items, cfg, batch_size):
    """The flow's own incidents operator over ``items``, fed ``batch_size`` alerts a batch."""
    from operators.incidents import incidents

    flow = Dataflow(f"incidents_batched_{batch_size}")
    s = op.input("in", flow, TestingSource(items, batch_size=batch_size))
    keyed = op.key_on("group_key", s, lambda a: group_key(a, ("service",)))
    out = []
    op.output("out", op.map("unkey", incidents("incidents", keyed, cfg), lambda kv: kv[1]), TestingSink(out))
    run_main(flow)
    return out


def test_group_wait_zero_pages_at_the_end_of_the_batch_and_not_later():
    # The incidents operator of the flow: alerts of the opening window in the same batch join the
    # page; an alert of a later window in that batch comes after the page, as a change.
    cfg = AlertingConfig(group_interval=0.0)
    items = [alert("latency", H, "medium"), alert("ttft", H, "medium", model="m2"),
             alert("error_rate", H + 60, "high")]
    out = _through_the_operator(items, cfg, 10)
    assert statuses(out) == ["firing", "escalated"]
    page = out[0]
    assert {page.type} | {m["type"] for m in page.evidence["grouped"]} == {"latency", "ttft"}
    assert page.severity == "medium" and out[1].severity == "high"
    # One item a batch: the page goes out with the first alert, as before.
    out = _through_the_operator(items, cfg, 1)
    assert statuses(out)[0] == "firing" and "grouped" not in out[0].evidence


def test_an_incident_forgotten_for_the_bound_before_its_page_pages_first():
    # More open incidents in one group than the bound, each still held by a long group_wait:
    # the oldest is forgotten to make room, and its page goes out rather than being lost.
    from operators.incidents import MAX_OPEN_INCIDENTS

    lg = logic(group_wait="1d")
    out = feed(lg, *[alert("latency", H + 660 * i, model=f"m{i}") for i in range(MAX_OPEN_INCIDENTS + 1)])
    assert [(a.status, a.model) for a in out] == [("firing", "m0")]
