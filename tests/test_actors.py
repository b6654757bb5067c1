"""Token abuse: an actor judged against its own habit and the population's heavy users."""

import random

import pytest

from operators import actors
from tests.helpers import T0, batches, request, run_flow


@pytest.fixture(autouse=True)
def fresh_population(monkeypatch):
    # The heavy-user population is per process: each test starts with its own.
    monkeypatch.setattr(actors, "POPULATION", actors.DecayingQuantiles())


def _user_traffic(rng, user, minutes, per_minute, tokens, start=T0):
    out = []
    for m in range(minutes):
        n = rng.randint(max(1, per_minute // 2), per_minute * 3 // 2) if per_minute > 1 else int(rng.random() < 0.8)
        for _ in range(n):
            ts = start + 60 * (m + rng.random())
            tok = int(rng.lognormvariate(0, 0.5) * tokens)
            out.append(request(ts, "svc", "m1", input_tokens=tok * 4 // 5, output_tokens=tok // 5, user_id=user))
    return out


def _population(seed=1, minutes=100):
    rng = random.Random(seed)
    ev = []
    for i in range(10):  # heavy users: about 60k tokens a minute each, their habit
        ev += _user_traffic(rng, f"heavy{i:02d}", minutes, 20, 3000)
    for i in range(20):  # medium users: about 12k tokens a minute
        ev += _user_traffic(rng, f"medium{i:02d}", minutes, 6, 2000)
    for i in range(120):  # light users: a request or two a minute
        ev += _user_traffic(rng, f"light{i:03d}", minutes, 2, 1500)
    return rng, ev


def _token_abuse(alerts):
    return [(a["subject"], a["status"], (a["event_time"])) for a in alerts if a["type"] == "token_abuse"]


def test_sustained_abuse_with_gaps_is_one_alert_and_a_heavy_users_habit_is_none():
    rng, ev = _population()
    # light007 sends a 40k-token request about every 80 s for 15 minutes: about
    # 8x its habit, with some busy windows of that stretch holding no large
    # request. Its usual traffic goes to m1, the abuse to m2.
    t = T0 + 60 * 60
    while t < T0 + 75 * 60:
        ev.append(request(t, "svc", "m2", input_tokens=int(rng.lognormvariate(0, 0.3) * 40000),
                          output_tokens=300, user_id="light007"))
        t += rng.uniform(50, 110)
    ev.sort(key=lambda e: e["timestamp"])
    alerts, _ = run_flow(batches(ev))
    ta = _token_abuse(alerts)
    assert [(s, st) for s, st, _ in ta] == [("user:light007", "firing"), ("user:light007", "resolved")]
    fired = [a for a in alerts if a["type"] == "token_abuse"][0]
    assert "2026-01-05T01:00:00" <= fired["event_time"] <= "2026-01-05T01:06:00"
    assert fired["evidence"]["ratio"] >= 3 and fired["observed"] > fired["expected"] * 3
    assert (fired["service"], fired["model"]) == ("svc", "m2")  # where the tokens went, not where most requests did


def test_one_huge_request_is_not_abuse():
    rng, ev = _population(seed=2)
    ev.append(request(T0 + 70 * 60 + 5, "svc", "m1", input_tokens=400000, output_tokens=2000, user_id="light011"))
    ev.sort(key=lambda e: e["timestamp"])
    alerts, _ = run_flow(batches(ev))
    assert _token_abuse(alerts) == []


def test_nobody_is_judged_before_the_population_is_a_reference():
    # An hour of a small population (40 actors): fewer busy actor-windows than a
    # reference needs, so even a 20x rise of an actor with an hour of history
    # is not judged yet. The same rise in a full population is.
    def traffic(n_light):
        rng = random.Random(3)
        ev = []
        for i in range(5):
            ev += _user_traffic(rng, f"heavy{i:02d}", 80, 20, 3000)
        for i in range(n_light):
            ev += _user_traffic(rng, f"light{i:03d}", 80, 2, 1500)
        for m in range(45, 60):
            for k in range(3):
                ev.append(request(T0 + 60 * m + 15 * k + 1, "svc", "m1", input_tokens=20000, output_tokens=300,
                                  user_id="light020"))
        return sorted(ev, key=lambda e: e["timestamp"])

    alerts, _ = run_flow(batches(traffic(35)))
    assert _token_abuse(alerts) == []
    actors.POPULATION = actors.DecayingQuantiles()
    alerts, _ = run_flow(batches(traffic(150)))
    assert [(s, st) for s, st, _ in _token_abuse(alerts)] == [("user:light020", "firing"), ("user:light020", "resolved")]



def _rise(rng, user, tokens, start_minute=60, minutes=12):
    # One extra request of about ``tokens`` a minute on m2, on top of the user's habit on m1.
    return [request(T0 + 60 * (m + rng.random()), "svc", "m2", input_tokens=int(rng.lognormvariate(0, 0.2) * tokens),
                    output_tokens=300, user_id=user)
            for m in range(start_minute, start_minute + minutes)]



def test_far_above_its_habit_needs_less_of_the_heavy_level():
    # A sparse user (a request most minutes, about 3k tokens a minute) that goes
    # to about 5x its habit stays under the heavy users' level (the 90th
    # percentile of busy actor-horizons, about 155k here), but is so far above
    # its own habit that part of that level is enough. A light user at about
    # 3.3x (just over `ratio`) still needs the whole heavy level: not abuse.
    rng, ev = _population(seed=4)
    ev += _user_traffic(random.Random(9), "sparse", 100, 1, 1500)
    ev += _rise(rng, "sparse", 11000)
    ev += _rise(rng, "light021", 7800, start_minute=75)
    # An actor whose requests carry no tokens (failed calls) is judged without error.
    ev += [request(T0 + 60 * m + 7, "svc", "m1", input_tokens=0, output_tokens=0, user_id="failing")
           for m in range(100)]
    ev.sort(key=lambda e: e["timestamp"])
    alerts, _ = run_flow(batches(ev))
    ta = _token_abuse(alerts)
    assert [(s, st) for s, st, _ in ta] == [("user:sparse", "firing"), ("user:sparse", "resolved")], ta
    fired = [a for a in alerts if a["type"] == "token_abuse"][0]
    assert fired["evidence"]["ratio"] >= 4
    assert "2026-01-05T01:00:00" <= fired["event_time"] <= "2026-01-05T01:09:00"

    # With the whole heavy level required of everyone, neither is found: the
    # first stays under the heavy users' level.
    actors.POPULATION = actors.DecayingQuantiles()
    try:
        actors.HEAVY_FLOOR, floor = 1.0, actors.HEAVY_FLOOR
        alerts, _ = run_flow(batches(ev))
    finally:
        actors.HEAVY_FLOOR = floor
    assert _token_abuse(alerts) == []
