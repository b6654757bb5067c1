"""A window's memory does not grow with its key's rate.

Past ``MAX_WINDOW_SAMPLES`` successful requests a window keeps a systematic sample of their values
(every ``stride``-th request) while its counts and totals stay exact, so a key of 100,000 requests
a minute holds a few thousand values per window instead of 100,000 of each column.
"""

from __future__ import annotations

import math
import pickle
import random

from detectors.windowed import KeyDetectors
from operators.model_windows import _VALUE_COLUMNS, MAX_WINDOW_SAMPLES, WindowAgg
from sentinel.events import LLMEvent, Requests

T0 = 1767571200.0


def _events(rng: random.Random, ts0: float, n: int, slow: float = 1.0, users: int = 2000):
    """``n`` requests of one minute: latency log-normal around 1.2 s (x ``slow``), heavy-tailed users,
    one in 50 failed, one in 40 without a ttft."""
    out = []
    for i in range(n):
        ts = ts0 + 60.0 * i / n
        user = f"u{int(rng.paretovariate(1.2)) % users}"
        if rng.random() < 0.02:
            out.append(LLMEvent(ts, "svc", "m1", latency_ms=30000.0, is_error=True, error_type="timeout",
                                user_id=user))
            continue
        lat = rng.lognormvariate(math.log(1200.0), 0.5) * slow
        out.append(LLMEvent(ts, "svc", "m1", latency_ms=lat,
                            ttft_ms=None if rng.random() < 0.025 else 0.3 * lat,
                            input_tokens=int(rng.lognormvariate(6.5, 0.7)),
                            output_tokens=int(rng.lognormvariate(5.0, 0.8)) + 1,
                            cost_usd=rng.lognormvariate(-7.0, 0.6), user_id=user))
    return out


def _folded(events, sizes):
    """A window of ``events`` folded in batches of the given sizes (cycled), as the flow folds a key's groups."""
    agg = WindowAgg(T0)
    i = k = 0
    while i < len(events):
        n = sizes[k % len(sizes)]
        agg.fold(Requests.of_events(events[i:i + n]))
        i += n
        k += 1
    return agg


def _exact_q(xs, q):
    xs = sorted(xs)
    return xs[min(int(q * len(xs)), len(xs) - 1)]


def test_a_busy_window_keeps_a_bounded_sample_and_exact_counts():
    rng = random.Random(3)
    evs = _events(rng, T0, 100_000)
    agg = _folded(evs, [2000, 1337, 97])
    ok = [e for e in evs if not e.is_error]
    assert agg.count == len(evs) and agg.errors == len(evs) - len(ok)
    assert agg.seen == len(ok)
    assert agg.stride == 32  # 100,000 x 0.98 successful requests over a cap of 4,096
    for name in _VALUE_COLUMNS:
        assert len(getattr(agg, name)) <= MAX_WINDOW_SAMPLES, name
    assert len(agg.users) == len(ok[::agg.stride])  # every stride-th successful request
    assert agg.tok_total == sum(e.input_tokens + e.output_tokens for e in ok)
    assert math.isclose(agg.cost_total, math.fsum(e.cost_usd for e in ok), rel_tol=1e-9)

    f = agg.features(60.0)
    assert f.count == len(evs) and f.errors == len(evs) - len(ok) and f.stride == agg.stride
    lat = [e.latency_ms for e in ok]
    assert math.isclose(f.lat_p50, _exact_q(lat, 0.5), rel_tol=0.03)
    assert math.isclose(f.lat_p95, _exact_q(lat, 0.95), rel_tol=0.05)
    gm_out = math.exp(math.fsum(math.log(e.output_tokens + 1.0) for e in ok) / len(ok)) - 1.0
    assert math.isclose(f.out_tokens, gm_out, rel_tol=0.03)
    # The log statistics are the sample's: their n is what their mean was taken over.
    assert f.out_log[0] == len(agg.out_tok) < MAX_WINDOW_SAMPLES
    # The window without its busiest user counts requests, not kept values.
    top_user = max(set(e.user_id for e in ok), key=[e.user_id for e in ok].count)
    exact_rest = sum(e.user_id != top_user for e in ok)
    assert f.rest is not None and abs(f.rest[0] - exact_rest) < 0.02 * len(ok)


def test_folding_in_batches_keeps_the_same_sample_as_one_request_at_a_time():
    rng = random.Random(5)
    evs = _events(rng, T0, 30_000)
    one = WindowAgg(T0)
    for e in evs:
        one.add(e)
    for sizes in ([2000], [1, 4999, 250], [8192]):
        agg = _folded(evs, sizes)
        assert agg.stride == one.stride == 8
        for name in _VALUE_COLUMNS + ("count", "errors", "seen", "tok_total"):
            assert getattr(agg, name) == getattr(one, name), (sizes, name)
        assert math.isclose(agg.cost_total, one.cost_total, rel_tol=1e-12)


def test_a_window_under_the_cap_keeps_every_value():
    rng = random.Random(7)
    evs = _events(rng, T0, 3000)
    agg = _folded(evs, [500])
    ok = [e for e in evs if not e.is_error]
    assert agg.stride == 1 and agg.users == [e.user_id for e in ok]
    assert agg.lat == [e.latency_ms for e in ok]
    assert agg.features(60.0).stride == 1


def test_a_thinned_window_survives_a_snapshot_and_an_old_one_loads():
    rng = random.Random(9)
    agg = _folded(_events(rng, T0, 12_000), [2000])
    back = pickle.loads(pickle.dumps(agg))
    assert (back.stride, back.seen, back.users, back.lat) == (agg.stride, agg.seen, agg.users, agg.lat)
    more = _events(rng, T0 + 30, 2000)
    agg.fold(Requests.of_events(more))
    back.fold(Requests.of_events(more))
    assert back.users == agg.users and back.count == agg.count
    # A window kept before windows were thinned: every value it holds is a request's.
    small = _folded(_events(rng, T0, 300), [100])
    old = WindowAgg.__new__(WindowAgg)
    old.__setstate__(small.__getstate__()[:WindowAgg.__slots__.index("stride")])
    assert old.stride == 1 and old.seen == len(small.users)
    old.fold(Requests.of_events(_events(rng, T0 + 40, 100)))
    assert old.seen == len(old.users)


def test_a_key_of_ten_thousand_requests_a_minute_pages_a_latency_x2_and_nothing_else():
    """The detectors judge a sampled window as they judge a small one: a steady hour and a half
    pages nothing, a latency x2 for ten minutes pages latency."""
    rng = random.Random(11)
    det = KeyDetectors()
    found = []
    for i in range(100):
        slow = 2.0 if 85 <= i < 95 else 1.0
        agg = _folded(_events(rng, T0 + 60 * i, 10_000, slow=slow), [4000])
        assert agg.stride == 4
        found += [(i, fd.type) for fd in det.update(agg.features(60.0)) if fd.status == "firing"]
    assert [f for f in found if f[0] < 85] == [], found
    assert any(t in ("latency", "ttft") and 85 <= i < 95 for i, t in found), found
