"""Alert ids stay unique through the incidents step, whatever the interleaving of episodes."""

import random
from datetime import datetime, timezone

import pytest

from operators.alerts import make_alert, resolved
from operators.incidents import IncidentLogic
from sentinel.config import AlertingConfig

T0 = 1767571200.0
SEVS = ("low", "medium", "high", "critical")


def episodes(rng, n_keys=4, n_eps=60):
    """Random but well-formed lifecycles (firing, escalations, resolve) on a few keys of one service."""
    msgs = []
    for k in range(n_keys):
        t = T0 + rng.randrange(600)
        for _ in range(n_eps // n_keys):
            t += rng.randrange(60, 1800)
            typ = rng.choice(("latency", "ttft", "error_rate"))
            sev = rng.randrange(3)
            a = make_alert(typ, "m", 10.0, 1.0, 0.95, SEVS[sev], "d", t, "svc", f"model{k}",
                           evidence={"fired_event_time": datetime.fromtimestamp(t + 120, timezone.utc).isoformat()})
            msgs.append((t + 120, a))
            end = t + 120
            for _e in range(rng.randrange(3)):
                end += rng.randrange(60, 300)
                if sev < 3:
                    sev += 1
                    e = make_alert(typ, "m", 20.0, 1.0, 0.99, SEVS[sev], "d", t, "svc", f"model{k}",
                                   status="escalated",
                                   evidence={"fired_event_time": datetime.fromtimestamp(end, timezone.utc).isoformat()})
                    msgs.append((end, e))
            end += rng.randrange(300, 900)
            msgs.append((end, resolved(a, end)))
            t = end
    msgs.sort(key=lambda x: x[0])
    return [m for _, m in msgs]


@pytest.mark.parametrize("wall_step", [0.0, 30.0])
@pytest.mark.parametrize("window", [0.0, 120.0, 600.0, 3600.0])
@pytest.mark.parametrize("seed", range(5))
def test_ids_unique_and_every_incident_resolves(window, seed, wall_step):
    rng = random.Random(seed)
    logic = IncidentLogic(AlertingConfig(group_window=window, group_interval=60.0), None)
    wall = [0.0]
    logic.clock = lambda: wall[0]  # a replay (the wall clock stands still) or a live run
    out = []
    for m in episodes(rng):
        wall[0] += wall_step
        got, _ = logic.on_item(m)
        out.extend(got)
    got, _ = logic.on_eof()
    out.extend(got)
    ids = [a.alert_id for a in out]
    assert len(ids) == len(set(ids)), [(a.status, a.severity, a.alert_id[:6]) for a in out]
    firing = {a.alert_id for a in out if a.status == "firing"}
    assert len([a for a in out if a.status == "resolved"]) == len(firing)
    assert logic.state.incidents == []


def _iso(t):
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def test_members_that_join_with_the_page_are_announced_before_the_resolve():
    # Latency, tokens and cost of one key fire in the same window: the first pages
    # at once; the other two are named by an "updated" message when the group's
    # next alert comes an interval later (of event and of wall time), not only in the resolve.
    logic = IncidentLogic(AlertingConfig(group_interval=60.0), None)
    wall = [100.0]
    logic.clock = lambda: wall[0]
    t = T0 + 3600
    first = [make_alert(typ, "m", 10.0, 1.0, 0.95, "high" if typ == "latency" else "medium", "d", t, "svc", "m1",
                        evidence={"fired_event_time": _iso(t + 120)}) for typ in ("latency", "tokens", "cost")]
    out = []
    for a in first:
        out += logic.on_item(a)[0]
    assert [a.status for a in out] == ["firing"]
    assert "grouped" not in out[0].evidence
    wall[0] += 60
    out += logic.on_item(resolved(first[1], t + 420))[0]
    assert [a.status for a in out] == ["firing", "updated"]
    assert {m["type"] for m in out[1].evidence["grouped"]} == {"tokens", "cost"}
    for a in (first[0], first[2]):
        out += logic.on_item(resolved(a, t + 480))[0]
    assert [a.status for a in out] == ["firing", "updated", "resolved"]
    assert len({a.alert_id for a in out}) == 3


def test_a_member_still_unannounced_at_end_of_input_is_announced():
    logic = IncidentLogic(AlertingConfig(group_interval=60.0), None)
    t = T0 + 3600
    for typ in ("latency", "tokens"):
        logic.on_item(make_alert(typ, "m", 10.0, 1.0, 0.95, "medium", "d", t, "svc", "m1",
                                 evidence={"fired_event_time": _iso(t + 120)}))
    out, _ = logic.on_eof()
    assert [(a.status, [m["type"] for m in a.evidence["grouped"]]) for a in out] == [("updated", ["tokens"])]
