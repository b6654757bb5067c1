"""A window's quantiles must hold without its busiest user.

On an agent key, a window is one or two tasks of a dozen calls, and a task's calls share its
slowness (a long context, a slow tool): one slow task makes the window's p95 alone, and paged
as latency or ttft although the model was as fast as ever for everyone else. A quantile that
one user's requests could make alone (that user sent at least 5% of the window) is judged on
the rest of the window as well (``WindowFeatures.rest``), and not at all when the rest is
fewer than ``min_requests`` requests: the window's mean latency, pooled over windows and
counted in users (``PooledLogMean``), speaks for such windows.
"""

import math
import random

from detectors import key_metrics
from detectors.windowed import KeyDetectors
from operators.model_windows import WindowAgg
from sentinel.events import LLMEvent
from tests.helpers import poisson

T0 = 1767571200.0
QUANTILES = ("latency_p95_ms", "latency_p50_ms", "ttft_p95_ms")


def agent_windows(seed, minutes, tasks_per_min=1.5, slow=lambda i: 1.0):
    """Tasks (Poisson, 1.5 a minute) of 1 + Exp(9) calls about 6 s apart, from 400 heavy-tailed
    users; every call of a task is slowed by the task's own log-normal factor (sigma 0.5)."""
    rng = random.Random(seed)
    calls = {}
    for i in range(minutes):
        for _ in range(poisson(rng, tasks_per_min)):
            user = f"u{int(rng.paretovariate(1.2)) % 400}"
            factor = rng.lognormvariate(0, 0.5)
            t = T0 + 60 * i + rng.random() * 60
            for _ in range(1 + int(rng.expovariate(1 / 9))):
                calls.setdefault(int((t - T0) // 60), []).append((t, user, factor))
                t += rng.lognormvariate(math.log(6), 0.5)
    for i in range(minutes):
        agg = WindowAgg(T0 + 60 * i)
        for t, user, factor in sorted(calls.get(i, [])):
            s = factor * slow(i)
            ttft = rng.lognormvariate(math.log(500), 0.3) * s
            agg.add(LLMEvent(t, "agent", "m", latency_ms=ttft + rng.lognormvariate(math.log(3000), 0.3) * s,
                             ttft_ms=ttft, input_tokens=int(rng.lognormvariate(8, 0.4)),
                             output_tokens=int(rng.lognormvariate(5.5, 0.5)), cost_usd=0.002, user_id=user))
        yield agg.features(60.0)


def chat_windows(seed, minutes, slow=lambda i: 1.0):
    """About 15 requests a minute, each from one of 3,000 users."""
    rng = random.Random(seed)
    for i in range(minutes):
        agg = WindowAgg(T0 + 60 * i)
        for _ in range(poisson(rng, 15.0)):
            ttft = rng.lognormvariate(math.log(400), 0.4) * slow(i)
            agg.add(LLMEvent(T0 + 60 * i + rng.random() * 60, "chat", "m",
                             latency_ms=ttft + rng.lognormvariate(math.log(1600), 0.4) * slow(i), ttft_ms=ttft,
                             input_tokens=int(rng.lognormvariate(7, 0.5)), output_tokens=int(rng.lognormvariate(5, 0.6)),
                             cost_usd=0.001, user_id=f"u{rng.randrange(3000)}"))
        yield agg.features(60.0)


def fired(windows):
    det = KeyDetectors()
    return [f for w in windows for f in det.update(w) if f.status == "firing"]


def quantile_pages(seeds):
    return [(seed, f.metric, round((f.event_time - T0) / 60)) for seed in seeds
            for f in fired(agent_windows(seed, 1440)) if f.metric in QUANTILES]


def test_one_slow_task_on_an_agent_key_does_not_page(monkeypatch):
    # Six calm days of an agent key: no quantile pages; without the rule, 4 (p95 latency and
    # ttft of a window of one or two slow tasks, and a p50).
    assert quantile_pages(range(6)) == []
    monkeypatch.setattr(key_metrics, "REST_OF", {})
    assert len(quantile_pages(range(6))) >= 3


def test_a_slow_model_on_an_agent_key_still_pages():
    caught = 0
    for seed in range(6):
        fs = fired(agent_windows(seed, 600, slow=lambda i: 2.5 if 500 <= i < 515 else 1.0))
        caught += any(f.type in ("latency", "ttft") and 500 * 60 <= f.event_time - T0 <= 516 * 60 for f in fs)
    assert caught >= 4, caught


def test_a_slow_model_on_a_busy_chat_key_pages_on_its_quantiles():
    # Every request slower: the window without its busiest user is as slow as the window.
    for seed in range(3):
        fs = fired(chat_windows(seed, 260, slow=lambda i: 2.5 if 200 <= i < 215 else 1.0))
        hit = [f for f in fs if f.type == "latency" and 200 * 60 <= f.event_time - T0 <= 203 * 60]
        assert hit, (seed, [(f.type, f.metric, (f.event_time - T0) / 60) for f in fs])


def test_the_rest_of_a_window_is_computed_only_where_one_user_could_make_its_tail():
    agg = WindowAgg(T0)
    for j in range(40):
        agg.add(LLMEvent(T0 + j, "s", "m", latency_ms=100.0 + j, ttft_ms=50.0, user_id=f"u{j}"))
    # Nobody sent two requests: no quantiles without a user; the p95s without the slowest request.
    assert agg.features(60.0).rest == (40, None, None, None, 137.0, 50.0)
    for j in range(4):
        agg.add(LLMEvent(T0 + 40 + j, "s", "m", latency_ms=9000.0, ttft_ms=5000.0, user_id="slow"))
    f = agg.features(60.0)
    assert f.lat_p95 >= 9000.0
    n, p50, p95, ttft95, p95_top, ttft95_top = f.rest
    assert n == 40 and p95 < 200.0 and ttft95 == 50.0
    assert p95_top == 9000.0 and ttft95_top == 5000.0  # four slow requests are more than one


def test_one_slow_request_is_not_a_slow_window():
    # A busy key's windows of a dozen requests; in one of them a single request is ten times as slow
    # (a cold start, a huge prompt): the window's p95 is that request, and it does not count.
    det = KeyDetectors()
    rng = random.Random(5)
    out = []
    for w in range(200):
        agg = WindowAgg(T0 + 60 * w)
        for j in range(12):
            lat = 800.0 * math.exp(rng.gauss(0.0, 0.3))
            ttft = 200.0 * math.exp(rng.gauss(0.0, 0.3))
            if w in (150, 151) and j == 0:
                lat, ttft = lat * 10.0, ttft * 10.0
            agg.add(LLMEvent(T0 + 60 * w + j, "s", "m", latency_ms=lat, ttft_ms=ttft, user_id=f"u{w}-{j}"))
        out += det.update(agg.features(60.0))
    assert [(f.type, f.status) for f in out if f.event_time >= T0 + 100 * 60] == []
    # Every request slower: a slow model, paged.
    for w in range(200, 210):
        agg = WindowAgg(T0 + 60 * w)
        for j in range(12):
            agg.add(LLMEvent(T0 + 60 * w + j, "s", "m", latency_ms=2400.0 * math.exp(rng.gauss(0.0, 0.3)),
                             ttft_ms=600.0 * math.exp(rng.gauss(0.0, 0.3)), user_id=f"u{w}-{j}"))
        out += det.update(agg.features(60.0))
    assert {f.type for f in out if f.status == "firing" and f.event_time >= T0 + 200 * 60} >= {"latency", "ttft"}
