"""Token abuse: an actor judged against its own service's heavy users and its own habit."""

import math
import pickle
import random
import tracemalloc

import orjson

from detectors.actor_tokens import ActorHabits, ServiceActors, add_request
from detectors.population import DecayingQuantiles
from tests.helpers import T0, batches, request, run_flow


def _population(rng, service, users, minutes, per_minute, tokens, sigma=0.6, model="m1", start=T0, out=None):
    """``users`` actors with heavy-tailed (Zipf) shares of ``per_minute`` requests of about ``tokens`` tokens,
    each actor working in sessions: a few minutes at three to four times its usual pace, then a pause."""
    out = [] if out is None else out
    weights = [1.0 / (i + 1) for i in range(users)]
    total = sum(weights)
    for i in range(users):
        rate = per_minute * weights[i] / total  # requests a minute, on average
        t = start + rng.random() * 600
        while t < start + 60 * minutes:
            session = rng.uniform(120, 600)
            end = t + session
            while t < end and t < start + 60 * minutes:
                tok = int(rng.lognormvariate(0, sigma) * tokens)
                out.append(request(t, service, model, input_tokens=tok * 9 // 10, output_tokens=tok // 10,
                                   user_id=f"{service}-{i:05d}"))
                t += rng.expovariate(3.5 * rate / 60.0)
            t += session * 2.5 + rng.expovariate(1 / 60)
    return out


def _world(seed=1, minutes=150):
    """A chat service (small requests, many users) beside a document pipeline (huge requests, few users)."""
    rng = random.Random(seed)
    ev = _population(rng, "chat", 2000, minutes, 120, 1200)
    _population(rng, "docs", 300, minutes, 20, 60000, out=ev)
    return rng, ev


def _token_abuse(alerts):
    return [(a["subject"], a["status"]) for a in alerts if a["type"] == "token_abuse"]


def test_a_heavy_token_services_normal_users_do_not_page():
    # Document-pipeline users send 60k-token requests, often two in a minute, in
    # sessions at 3-4x their usual pace: on a chat service's scale all of them
    # would be abusers; on their own service's scale none is.
    _, ev = _world(seed=1)
    ev.sort(key=lambda e: e["timestamp"])
    alerts, _ = run_flow(batches(ev))
    assert _token_abuse(alerts) == []


def test_sustained_abuse_is_one_alert_on_the_model_the_tokens_went_to():
    rng, ev = _world(seed=2)
    # chat-01500 (a light user) sends ~40k tokens a minute to m2 for 15 minutes.
    t = T0 + 100 * 60
    while t < T0 + 115 * 60:
        ev.append(request(t, "chat", "m2", input_tokens=int(rng.lognormvariate(0, 0.3) * 8000), output_tokens=300,
                          user_id="chat-01500"))
        t += rng.uniform(8, 16)
    ev.sort(key=lambda e: e["timestamp"])
    alerts, _ = run_flow(batches(ev))
    assert _token_abuse(alerts) == [("user:chat-01500", "firing"), ("user:chat-01500", "resolved")]
    fired = next(a for a in alerts if a["type"] == "token_abuse")
    assert (fired["service"], fired["model"]) == ("chat", "m2")
    assert "2026-01-05T01:40:00" <= fired["event_time"] <= "2026-01-05T01:46:00"
    assert fired["observed"] >= 2 * fired["evidence"]["heavy_users_tokens"]
    assert fired["evidence"]["requests_in_horizon"] >= 5


def test_one_huge_request_or_two_requests_are_not_abuse():
    rng, ev = _world(seed=3)
    ev.append(request(T0 + 100 * 60 + 5, "chat", "m1", input_tokens=2_000_000, output_tokens=2000,
                      user_id="chat-01111"))
    for k in range(2):  # two big requests a few minutes apart: big, but not a pattern
        ev.append(request(T0 + 120 * 60 + 200 * k, "chat", "m1", input_tokens=400_000, output_tokens=500,
                          user_id="chat-01222"))
    # A record claiming absurd token counts is one big request, not an overflow.
    for k in range(3):
        ev.append(request(T0 + 130 * 60 + k, "chat", "m1", output_tokens=0, user_id="chat-01333"))
    ev.sort(key=lambda e: e["timestamp"])
    lines = [orjson.dumps(e).replace(b'"output_tokens":0', b'"output_tokens":1e308') if e.get("user_id") ==
             "chat-01333" else orjson.dumps(e) for e in ev]
    alerts, dead = run_flow(batches(lines))
    assert _token_abuse(alerts) == []


def _regular_users(rng):
    """A window of a small service: each of 50 users sends a request of about 1,000 tokens half the time."""
    actors = {}
    for i in range(50):
        if rng.random() < 0.5:
            add_request(actors, f"user:{i}", int(rng.lognormvariate(0, 0.5) * 1000), "m")
    return actors


def test_the_biggest_regular_user_is_judged_against_itself():
    # On the detector: a whale far above the service's heavy level is normal at
    # its own pace and in a session at 3.5 times it, and abusive at 10 times it.
    s = ServiceActors(min_population=100, history_windows=30, min_tokens=1000)
    rng = random.Random(5)
    out = []
    for w in range(200):
        actors = _regular_users(rng)
        for _ in range(10):  # the whale: ~20x a regular user's horizon, every window
            add_request(actors, "user:whale", int(rng.lognormvariate(0, 0.3) * 1000), "m")
        if 120 <= w < 140:  # a session at 3.5x its pace: ordinary
            for _ in range(25):
                add_request(actors, "user:whale", int(rng.lognormvariate(0, 0.3) * 1000), "m")
        if w >= 150:  # 10x its pace: abuse
            for _ in range(90):
                add_request(actors, "user:whale", int(rng.lognormvariate(0, 0.3) * 1000), "m")
        out += s.close_window(60.0 * w, actors)
    assert [(f.status, f.actor) for f in out] == [("firing", "user:whale")]
    assert out[0].run_start >= 60.0 * 150


def test_nobody_is_judged_before_the_service_is_a_reference():
    s = ServiceActors(min_population=10_000, history_windows=5, min_tokens=1000)
    out = []
    for w in range(40):
        actors = {f"user:{i}": [1000, 2, "m", 1] for i in range(20)}
        if w >= 20:
            actors["user:3"] = [100000, 20, "m", 1]
        out += s.close_window(60.0 * w, actors)
    assert out == []


def test_a_million_distinct_users_fit_in_bounded_memory():
    # Each window brings 2,000 users never seen before: after 500 windows a
    # million distinct actors have passed, and the state holds the horizon's
    # and the habits of the 20,000 most recently busy.
    s = ServiceActors(min_population=100, history_windows=5)
    tracemalloc.start()
    sizes = []
    for w in range(500):
        actors = {}
        for i in range(2000):
            add_request(actors, f"user:{w}-{i}", 1000 + i, "m")
        s.close_window(60.0 * w, actors)
        if w in (100, 499):
            sizes.append(tracemalloc.get_traced_memory()[0])
    tracemalloc.stop()
    assert s.memory_items() <= 20000 + 10 * 2000
    assert sizes[1] < 1.2 * sizes[0]  # flat between 200,000 and 1,000,000 distinct users


def test_habits_are_what_an_actor_sends_when_busy_and_bounded():
    h = ActorHabits(alpha=0.01, capacity=3)
    assert h.habit("x", 0) is None
    for w in range(0, 100, 10):  # busy every tenth window, its horizon holding 3 requests of 100 tokens
        h.learn("x", w, 300.0, 3)
    tok, req, busy = h.habit("x", 90)
    assert abs(tok - 300.0) < 1e-6 and abs(req - 3.0) < 1e-6 and 6.0 < busy < 7.0  # ten busy windows, decayed
    assert h.habit("x", 190)[2] < 0.4 * busy  # what was learned long ago fades
    for a in ("a", "b", "c"):  # full: the least recently busy ("x") is forgotten first
        h.learn(a, 100, 1.0, 1)
    assert h.habit("x", 100) is None and len(h) == 3


def test_a_per_actor_state_of_an_earlier_version_is_dropped_not_a_crash():
    from bytewax.operators import StatefulLogic

    from operators.actors import ActorLogic
    from sentinel.config import load_config_dict

    class ActorState:  # what a snapshot held when actors were keys of their own
        windows = None

    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}})
    logic = ActorLogic(cfg, ActorState())
    assert logic.state is None and logic.notify_at() is None
    assert logic.on_notify() == ([], StatefulLogic.DISCARD)
    assert logic.on_eof() == ([], StatefulLogic.RETAIN)


def _agent_service(rng, windows, extra=None):
    """Agent users: each task is a burst of calls (a dozen on average, one in a hundred over fifty)
    within a few minutes, its context growing with every call. ``extra(w, actors)`` adds to window w."""
    s = ServiceActors(min_population=200, history_windows=30, min_tokens=1000)
    active = []  # [user, calls left, context]
    out = []
    for w in range(windows):
        for _ in range(rng.randint(3, 6)):  # new tasks
            active.append([f"user:a{rng.randrange(60)}", 1 + int(rng.expovariate(1 / 11.0)), 0.0])
        actors = {}
        for task in active:
            for _ in range(min(task[1], 12)):  # a call every five seconds
                out_tok = int(rng.lognormvariate(0, 0.7) * 900)
                task[2] += 0.3 * out_tok
                add_request(actors, task[0], int(rng.lognormvariate(0, 0.5) * 4500 + task[2]) + out_tok, "m")
                task[1] -= 1
        active = [t for t in active if t[1] > 0]
        if extra is not None:
            extra(w, actors)
        out += s.close_window(60.0 * w, actors)
    return s, out


def test_an_agents_long_tasks_are_bursts_not_abuse():
    # A task of 60 calls with a growing context sends many times a user's usual tokens and calls
    # in ten minutes; its calls come as one burst, so the count that is judged is of bursts.
    s, out = _agent_service(random.Random(11), 600)
    assert s.burst_size() > 4.0
    assert out == []


def test_an_agent_user_at_twenty_times_its_habit_is_abuse():
    def abuse(w, actors):
        if w >= 500:  # the stolen key: a burst of its size every few seconds
            for _ in range(40):
                add_request(actors, "user:a7", 30000, "m")
        elif w % 20 == 0:  # its habit: one task every twenty minutes
            for _ in range(10):
                add_request(actors, "user:a7", 6000, "m")
    s, out = _agent_service(random.Random(12), 530, abuse)
    assert [(f.status, f.actor) for f in out] == [("firing", "user:a7")]


def _actor_windows(rng, n_windows, users=400):
    """Windows of a service's actors ({actor: [tokens, requests, model, model weight]}), heavy-tailed,
    and one actor at a request a window that sends thirty a window from window 200 on."""
    out = []
    for w in range(n_windows):
        actors = {}
        for _ in range(rng.randint(20, 60)):
            u = f"u{int(rng.paretovariate(1.2)) % users}"
            add_request(actors, u, int(rng.lognormvariate(8, 0.8)), "m1")
        for _ in range(30 if w >= 200 else 1):
            add_request(actors, "abuser", int(rng.lognormvariate(8, 0.3)), "m1")
        out.append(actors)
    return out


def test_horizon_sums_survive_a_snapshot_and_match_the_windows():
    # The per-actor sums over the horizon are kept as windows come and go and are not snapshotted:
    # a detector restored mid-stream finds what one that never stopped finds, and the sums equal the
    # horizon's windows added up.
    import pickle

    windows = _actor_windows(random.Random(3), 320)
    kw = dict(min_population=200, history_windows=30)
    straight, restored = ServiceActors(**kw), ServiceActors(**kw)
    a, b = [], []
    for i, actors in enumerate(windows):
        start = T0 + 60.0 * i
        a += [(f.status, f.actor, f.tokens, f.requests) for f in straight.close_window(start, actors)]
        b += [(f.status, f.actor, f.tokens, f.requests) for f in restored.close_window(start, actors)]
        if i in (150, 205):
            restored = pickle.loads(pickle.dumps(restored))
        sums = {}
        for _, seen, _n in straight._recent:
            for actor, w in seen.items():
                s = sums.setdefault(actor, [0, 0, 0])
                s[0] += w[0]
                s[1] += w[1]
                s[2] += 1
        assert straight._sums == sums, i
        models = {}
        for _, seen, _n in straight._recent:
            for w in seen.values():
                models[w[2]] = models.get(w[2], 0) + w[1]
        assert straight._model_sums == models, i
    assert a == b
    assert ("firing", "abuser") in [(s, x) for s, x, _, _ in a]


def test_a_capped_learn_is_the_habit_then_the_learn_of_the_capped_totals():
    """ActorHabits.learn with known_after (what close_window does for most actors) against what it
    replaced: habit() first, then learn() of the totals winsorised at twice the habit once known."""
    rnd = random.Random(5)
    fused, apart = ActorHabits(alpha=0.05, capacity=30), ActorHabits(alpha=0.05, capacity=30)
    now = 0
    for _ in range(5000):
        now += rnd.choice([0, 1, 1, 2, 7])
        actor = f"user:{rnd.randint(1, 40)}"
        tokens = rnd.choice([rnd.randint(1, 3000), rnd.randint(20000, 90000)])
        requests = rnd.randint(1, 30)
        habit = apart.habit(actor, now)
        if habit is None or habit[2] < 3.0:
            apart.learn(actor, now, tokens, requests)
        else:
            apart.learn(actor, now, min(tokens, 2.0 * habit[0]), min(requests, 2.0 * habit[1]))
        fused.learn(actor, now, tokens, requests, 3.0)
        assert fused.habit(actor, now) == apart.habit(actor, now)
    assert fused.__getstate__() == apart.__getstate__()
    assert list(fused._table) == list(apart._table)  # the same order: the same actor is forgotten first


def _update_one(q, x):
    """DecayingQuantiles.update as it was, one value at a time."""
    if not x > 0:
        return
    i = int(math.log2(x) * q.per_octave)
    i = 0 if i < 0 else min(i, len(q._counts) - 1)
    q._counts[i] += 1.0
    q._total += 1.0
    q._n += 1
    if q._n % q.decay_every == 0:
        q._counts = [c * q.decay for c in q._counts]
        q._total *= q.decay


def test_population_update_many_is_update_of_each():
    rnd = random.Random(3)
    xs = [rnd.choice([0, -1.0, rnd.uniform(0.1, 1e6), 1e300, 1e-9]) for _ in range(5000)]
    one, many = DecayingQuantiles(decay_every=700), DecayingQuantiles(decay_every=700)
    for x in xs:
        _update_one(one, x)
    for i in range(0, len(xs), 37):
        many.update_many(xs[i:i + 37])
    assert one.__getstate__() == many.__getstate__()
    assert one.quantile(0.9) == many.quantile(0.9)


def test_a_new_agent_user_s_second_task_is_judged_against_its_first():
    # A user new to the service runs a short task (12 calls in two minutes), then a long one: 72
    # calls in six minutes, its context growing to 110k tokens. That passes the stranger's bar
    # (heavy_ratio times the heavy quartile), but the user has a habit, if a young one, and the
    # long task is eight bursts against its first task's one or two: no pattern.
    def newcomer(w, actors):
        if 480 <= w < 482:
            for k in range(6):
                add_request(actors, "user:newcomer", 4500 + 3000 * (6 * (w - 480) + k), "m")
        if 500 <= w < 506:
            for k in range(12):
                add_request(actors, "user:newcomer", 4500 + 1500 * (12 * (w - 500) + k), "m")
    for seed in (13, 14, 15):
        s, out = _agent_service(random.Random(seed), 530, newcomer)
        assert sum(4500 + 1500 * i for i in range(72)) >= s.heavy_ratio * s.heavy_level()
        assert out == [], seed


def test_a_new_key_far_beyond_the_busiest_users_is_abuse():
    def flood(w, actors):
        if w >= 500:  # a key never seen before, at full speed with the largest context
            for _ in range(60):
                add_request(actors, "user:stolen", 120000, "m")
    s, out = _agent_service(random.Random(14), 530, flood)
    assert [(f.status, f.actor) for f in out] == [("firing", "user:stolen")]


def test_a_rarely_seen_account_at_fifty_times_its_one_earlier_task_is_abuse():
    # One earlier task (3 requests) is a young habit; twenty minutes at fifty times it pages
    # within a few windows (here, with no wait for the spell to outlast a session): the spell's
    # windows beyond the stranger's bar teach it no habit.
    s = ServiceActors(min_population=100, history_windows=30, min_tokens=1000, sustain=0.0)
    rng = random.Random(6)
    out = []
    for w in range(190):
        actors = _regular_users(rng)
        if w == 100:
            for _ in range(3):
                add_request(actors, "user:rare", 5000, "m")
        if 150 <= w < 170:
            for _ in range(10):
                add_request(actors, "user:rare", 7500, "m")
        out += s.close_window(60.0 * w, actors)
    assert [(f.status, f.actor) for f in out] == [("firing", "user:rare"), ("resolved", "user:rare")]
    assert out[0].window_end <= 60.0 * 157  # within six windows of its start


def test_a_heavy_regulars_climb_does_not_become_its_habit_before_it_pages():
    # A regular of a few large requests an hour (about two in a busy horizon) goes to three a
    # minute. Its first windows are far above its habit in tokens but not yet beyond doubt in
    # their count; learned, even capped at twice the habit, they lifted it until the count never
    # passed (2 of 10 seeds paged). Not learned, the habit it is judged against is its own.
    def run(seed):
        s = ServiceActors(min_population=100, history_windows=30, min_tokens=1000)
        rng = random.Random(seed)
        out = []
        for w in range(260):
            actors = _regular_users(rng)
            n = sum(rng.random() < 0.75 for _ in range(4)) if w >= 200 else int(rng.random() < 0.2)
            for _ in range(n):
                add_request(actors, "user:lawyer", int(rng.lognormvariate(0, 0.3) * 20000), "m")
            out += s.close_window(60.0 * w, actors)
        return [f for f in out if f.status == "firing"]

    paged = 0
    for seed in range(10):
        fired = run(seed)
        assert all(f.actor == "user:lawyer" and f.run_start >= 60.0 * 200 for f in fired), seed
        paged += bool(fired)
    assert paged >= 8, paged


def _two_model_service(rng, windows, storm=range(0), thief_from=None, busy=lambda w: 0.05, users=300):
    """A service of ``users`` who work in sessions (each busy in a window with chance ``busy(w)``); a
    fifth of them use model m2. During ``storm`` every m2 request is retried five more times; from
    window ``thief_from`` one m2 user sends 60 requests of 3,000 tokens a window."""
    s = ServiceActors(min_population=200, history_windows=30, min_tokens=1000)
    out = []
    for w in range(windows):
        actors = {}
        for i in range(users):
            if rng.random() < busy(w):
                model = "m2" if i < users // 5 else "m1"
                for _ in range(rng.randint(1, 6)):
                    tok = int(rng.lognormvariate(0, 0.5) * 1000)
                    for _ in range(6 if (model == "m2" and w in storm) else 1):
                        add_request(actors, f"user:{i}", tok, model)
        if thief_from is not None and w >= thief_from:
            for _ in range(60):
                add_request(actors, "user:7", 3000, "m2")
        out += s.close_window(60.0 * w, actors)
    return s, out


def test_a_retry_storm_on_one_model_is_not_its_users_abuse():
    # Every user of the stormed model sends six times its requests; the model is a fifth of the
    # service, so the service's traffic only doubles. Each user is judged against its habit lifted
    # by its model's traffic, and nobody pages (the code that lifted by the service's traffic alone
    # paged one of them). One user of that model sending 60 requests a window while the model's
    # traffic is as usual still pages.
    s, out = _two_model_service(random.Random(21), 300, storm=range(200, 230))
    assert out == []
    assert 0.0 < s._model_rate["m2"] < s._model_rate["m1"]
    _, out = _two_model_service(random.Random(21), 260, thief_from=200)
    assert [(f.status, f.actor) for f in out] == [("firing", "user:7")]


def _regulars_service(rng, windows, storm=range(0), regulars=lambda w: 120, only=None):
    """A service of 800 occasional users of model m1 and ``regulars(w)`` regulars of model m2, each
    busy in every window with one to three requests of about 1,000 tokens. During ``storm`` every
    m2 request (or regular ``only``'s alone) is retried nine more times."""
    s = ServiceActors(min_population=200, history_windows=30, min_tokens=1000)
    out = []
    for w in range(windows):
        actors = {}
        for i in range(800):
            if rng.random() < 0.05:
                for _ in range(rng.randint(1, 6)):
                    add_request(actors, f"user:{i}", int(rng.lognormvariate(0, 0.5) * 1000), "m1")
        for i in range(regulars(w)):
            for _ in range(rng.randint(1, 3)):
                tok = int(rng.lognormvariate(0, 0.3) * 1000)
                for _ in range(10 if w in storm and only in (None, i) else 1):
                    add_request(actors, f"regular:{i}", tok, "m2")
        out += s.close_window(60.0 * w, actors)
    return s, out


def test_a_retry_storm_in_a_quiet_hour_is_not_its_users_abuse():
    # The evening: a twelfth of the model's regulars are left, and a storm multiplies their
    # requests by ten. The model's traffic is then no more than its average over the day, which
    # lifted its users' habits not at all: they paged. Each of the model's other busy users sends
    # ten times the requests a busy user of it usually sends: that is the lift, and nobody pages.
    # Without the storm, one regular that sends ten times its requests still pages.
    evening = lambda w: 120 if w < 200 else 10  # noqa: E731
    paged = [seed for seed in range(1, 6)
             if _regulars_service(random.Random(seed), 300, storm=range(240, 270), regulars=evening)[1]]
    assert paged == [], paged
    _, out = _regulars_service(random.Random(1), 300, storm=range(240, 270), regulars=evening, only=3)
    assert [(f.status, f.actor) for f in out] == [("firing", "regular:3"), ("resolved", "regular:3")]


def _session_windows(rng, windows, new_sessions, new_session, turn, extra=None):
    """Windows of a service whose users open sessions: ``new_sessions`` (lo, hi) of them a window,
    each ``new_session(rng)`` -> [user, requests, state]; at most six requests of a session a
    window, each of ``turn(rng, session)`` tokens. ``extra(w, actors)`` adds to window w."""
    active = []
    out = []
    for w in range(windows):
        for _ in range(rng.randint(*new_sessions)):
            active.append(new_session(rng))
        actors = {}
        for session in active:
            for _ in range(min(session[1], 6)):  # a request every nine or ten seconds
                add_request(actors, session[0], turn(rng, session), "m")
                session[1] -= 1
        active = [x for x in active if x[1] > 0]
        if extra is not None:
            extra(w, actors)
        out.append(actors)
    return out


def _sessions_through(windows, **kw):
    """``windows`` through one ServiceActors (``kw`` goes to it): the detector and its findings."""
    s = ServiceActors(min_population=500, history_windows=60, **kw)
    out = []
    for w, actors in enumerate(windows):
        out += s.close_window(60.0 * w, actors)
    return s, out


def _voice_session(rng):
    size = 1 + int(5 * rng.lognormvariate(-0.5, 1.0) * rng.expovariate(1.0))
    return [f"user:v{rng.randrange(3000)}", size, 0.0]


def _voice_turn(rng, session):
    session[2] += rng.lognormvariate(4.0, 0.5)  # the context so far
    return int(300 + session[2])


def _voice_windows(rng, windows, extra=None):
    """A voice assistant's windows: thousands of users open sessions of requests nine seconds apart,
    of heavy-tailed length (six on average, now and then sixty), each request carrying the
    session's context so far. ``extra(w, actors)`` adds to window w."""
    return _session_windows(rng, windows, (4, 8), _voice_session, _voice_turn, extra)


def _voice_service(rng, windows, extra=None, **kw):
    """The voice assistant's windows (_voice_windows) through one ServiceActors (``kw`` goes to it)."""
    return _sessions_through(_voice_windows(rng, windows, extra), **kw)


def _talker_habit(w, actors):
    # Before window 400, user:talker works in short sessions: three requests every quarter hour.
    if w < 400 and w % 15 == 0:
        for i in range(3):
            add_request(actors, "user:talker", 300 + 60 * i, "m")


def _talker_session(minutes, growth):
    """After the short sessions of _talker_habit, user:talker talks for ``minutes`` from window 400,
    six requests a minute, its context growing by ``growth`` tokens a request from 300."""
    def extra(w, actors):
        _talker_habit(w, actors)
        if 400 <= w < 400 + minutes:
            for i in range(6):
                add_request(actors, "user:talker", 300 + growth * (6 * (w - 400) + i), "m")
    return extra


def _talker_script(tokens):
    """After the short sessions of _talker_habit, user:talker's key in a script: six requests of
    ``tokens`` a minute for twenty minutes from window 400."""
    def extra(w, actors):
        _talker_habit(w, actors)
        if 400 <= w < 420:
            for _ in range(6):
                add_request(actors, "user:talker", tokens, "m")
    return extra


# A talker's one session of 60 requests over ten minutes, its context growing to 4k tokens.
_long_session = _talker_session(10, 60)
# The same user's key in a script: six requests of 3k tokens a minute for twenty minutes.
_scripted_loop = _talker_script(3000)


def _sleeping_script(w, actors):
    # The same user's key in a script that sends a burst of twenty 3k-token requests, then sleeps
    # three minutes, for twenty-four minutes.
    _talker_habit(w, actors)
    if 400 <= w < 424 and w % 4 == 0:
        for _ in range(20):
            add_request(actors, "user:talker", 3000, "m")


def test_a_script_that_sleeps_between_its_bursts_is_one_stretch():
    s, out = _voice_service(random.Random(23), 440, _sleeping_script)
    firing = [f for f in out if f.status == "firing" and f.actor == "user:talker"]
    assert len(firing) == 1
    assert 60.0 * 400 + s.sustain <= firing[0].window_end <= 60.0 * 424


def test_a_long_session_is_not_abuse_once_abuse_must_outlast_it():
    # Sixty requests in ten minutes, with the context growing, is many times what the user and the
    # service's heavy users send in a horizon: with no duration asked of abuse, it pages.
    _, fast = _voice_service(random.Random(21), 440, _long_session, sustain=0.0)
    assert ("firing", "user:talker") in [(f.status, f.actor) for f in fast]
    _, out = _voice_service(random.Random(21), 440, _long_session)
    assert "user:talker" not in {f.actor for f in out}


def test_a_loop_that_outlasts_a_horizon_pages_once_it_has():
    s, out = _voice_service(random.Random(22), 440, _scripted_loop)
    firing = [f for f in out if f.status == "firing" and f.actor == "user:talker"]
    assert len(firing) == 1
    # Its busy stretch began with the loop, at window 400: it pages once that has lasted ``sustain``,
    # while the loop still runs.
    assert 60.0 * 400 + s.sustain <= firing[0].window_end <= 60.0 * 420


def test_a_busy_stretch_survives_a_snapshot():
    # Restored in the middle of the loop, when the horizon's windows no longer reach back to the
    # loop's start, the detector still knows when the loop's stretch began: it pages in the same
    # window as one that ran on.
    windows = _voice_windows(random.Random(22), 440, _scripted_loop)
    a = ServiceActors(min_population=500, history_windows=60)
    b = ServiceActors(min_population=500, history_windows=60)
    out_a, out_b = [], []
    for w, actors in enumerate(windows):
        if w == 411:  # the horizon's windows no longer hold the stretch's start (400)
            assert b._stretch["user:talker"][0] == 60.0 * 400
            b = pickle.loads(pickle.dumps(b))
        out_a += a.close_window(60.0 * w, actors)
        out_b += b.close_window(60.0 * w, actors)
    assert [(f.status, f.actor, f.window_end) for f in out_b] == [(f.status, f.actor, f.window_end) for f in out_a]
    assert ("firing", "user:talker") in [(f.status, f.actor) for f in out_a]


def _talk_session(rng):
    return [f"user:v{rng.randrange(300)}", 90 if rng.random() < 0.05 else 3, 0]


def _talk_turn(rng, session):
    session[2] += 1  # the turn
    return 300 + 60 * (session[2] - 1)


def _long_talk_windows(rng, windows, extra=None):
    """A service where one session in twenty is a long talk: 300 users open sessions of three
    requests, or of ninety at six a minute with the context growing each turn (tens of times a
    user's habit, and ordinary here). ``extra(w, actors)`` adds to window w."""
    return _session_windows(rng, windows, (3, 6), _talk_session, _talk_turn, extra)


# A fifteen-minute talk like the service's long ones, its context growing half as fast.
_ordinary_long_talk = _talker_session(15, 30)
# Or a script: six 8k-token requests a minute for twenty minutes.
_big_loop = _talker_script(8000)


def _long_talk_service(seed, extra, **kw):
    s, out = _sessions_through(_long_talk_windows(random.Random(seed), 440, extra), **kw)
    return s, [(f.status, f.actor) for f in out if f.status == "firing"]


def test_a_talk_as_long_as_the_services_own_is_no_abuse():
    # Fifteen minutes, 90 requests and about 80 times the user's habit in a horizon: with the
    # service's rises ignored, it pages (and so does one of the service's own long talks); the
    # service's long talks rise as far, so it is learned as one of them.
    _, fired = _long_talk_service(21, _ordinary_long_talk, rise_quantile=0.0)
    assert ("firing", "user:talker") in fired
    s, fired = _long_talk_service(21, _ordinary_long_talk)
    assert "user:talker" not in {actor for _, actor in fired}
    assert s.rise_floor() > 10 * s.ratio
    assert s._rises.n > 50  # one value a stretch, not one a window


def test_the_services_own_long_talks_page_less_once_its_rises_are_learned():
    # Over ten worlds, the long talks of the service's own users page 9 times with the rises
    # ignored and 3 times with them: a rise beyond all but one in a hundred of the service's
    # stretches is what still pages.
    def pages(**kw):
        return sum(len(_long_talk_service(seed, _talker_habit, **kw)[1]) for seed in range(20, 30))
    assert pages() <= pages(rise_quantile=0.0) // 2


def test_a_loop_beyond_the_services_long_talks_pages():
    s, fired = _long_talk_service(21, _big_loop)
    assert ("firing", "user:talker") in fired
    assert s.rise_floor() > 10 * s.ratio


def test_the_services_rises_survive_a_snapshot_and_old_states_load():
    s, _ = _long_talk_service(21, _ordinary_long_talk)
    b = pickle.loads(pickle.dumps(s))
    assert b.rise_floor() == s.rise_floor() and b._rises.n == s._rises.n
    # A state saved before rises were learned: stretches of two values, no rises, ratio alone.
    d = s.__getstate__()
    d.pop("_rises")
    d.pop("rise_quantile")
    d["_stretch"] = {a: st[:2] for a, st in d["_stretch"].items()}
    old = ServiceActors.__new__(ServiceActors)
    old.__setstate__(d)
    assert old.rise_floor() == old.ratio
    assert all(len(st) == 3 for st in old._stretch.values())
    old.close_window(60.0 * 440, {"user:talker": [1000, 2, "m", 1001]})
