"""Latency and ttft on keys too quiet for quantiles: a canary model, a sparse key.

A window of three requests has no p95 worth the name (``min_requests`` keeps the
quantiles from judging it), so latency and ttft are also judged on the mean of
their requests' logs, pooled over windows as tokens and cost are.
"""

import math
import random

from detectors.windowed import KeyDetectors
from operators.model_windows import WindowAgg
from sentinel.events import LLMEvent
from tests.helpers import poisson

T0 = 1767571200.0


def canary_windows(seed, minutes, rate, slow=lambda i: 1.0, slow_ttft=lambda i: 1.0):
    """``rate`` requests a minute (Poisson), latency log-normal around 2 s (sigma 0.6), ttft 400 ms (0.5)."""
    rng = random.Random(seed)
    for i in range(minutes):
        ts0 = T0 + 60 * i
        agg = WindowAgg(ts0)
        for _ in range(poisson(rng, rate)):
            ttft = rng.lognormvariate(math.log(400), 0.5) * slow_ttft(i)
            agg.add(LLMEvent(ts0 + rng.random() * 60, "svc", "canary",
                             latency_ms=ttft + rng.lognormvariate(math.log(1600), 0.6) * slow(i), ttft_ms=ttft,
                             input_tokens=int(rng.lognormvariate(7, 0.5)), output_tokens=int(rng.lognormvariate(5, 0.8)),
                             cost_usd=0.001))
        yield agg.features(60.0)


def firing(windows):
    det = KeyDetectors()
    return [f for w in windows for f in det.update(w) if f.status == "firing"]


def test_latency_x3_on_a_canary_of_three_requests_a_minute_pages():
    found = 0
    for seed in range(5):
        fs = firing(canary_windows(seed, 240, 3.0, slow=lambda i: 3.0 if 200 <= i < 215 else 1.0))
        assert all(f.type in ("latency", "ttft") for f in fs), fs
        hit = [f for f in fs if f.type == "latency" and 200 * 60 <= f.window_end - T0 <= 216 * 60]
        found += bool(hit)
    assert found >= 4, found


def test_ttft_x3_on_a_sparse_key_pages_as_ttft():
    fs = firing(canary_windows(7, 240, 4.0, slow_ttft=lambda i: 3.0 if 200 <= i < 215 else 1.0))
    assert any(f.type == "ttft" and f.metric == "ttft_gmean_ms" for f in fs), fs


def test_a_day_of_a_quiet_canary_raises_nothing():
    for seed in (11, 12):
        fs = firing(canary_windows(seed, 24 * 60, 2.0))
        assert fs == [], [(f.type, f.metric, f.observed, f.expected) for f in fs]


def test_a_sparse_key_does_not_page_again_on_an_incident_that_has_resolved():
    """ttft x3 for nine minutes, then seven minutes without requests (the incident resolves),
    then the key as usual: its first pools would reach back over the empty minutes to the
    incident's requests, but those have spoken and left the pool."""
    def windows(seed):
        rng = random.Random(seed)
        for i in range(300):
            ts0 = T0 + 60 * i
            agg = WindowAgg(ts0)
            rate = 0.0 if 209 <= i < 216 else 4.0
            for _ in range(poisson(rng, rate)):
                ttft = rng.lognormvariate(math.log(400), 0.5) * (3.0 if 200 <= i < 209 else 1.0)
                agg.add(LLMEvent(ts0 + rng.random() * 60, "svc", "canary",
                                 latency_ms=ttft + rng.lognormvariate(math.log(1600), 0.6), ttft_ms=ttft,
                                 input_tokens=int(rng.lognormvariate(7, 0.5)),
                                 output_tokens=int(rng.lognormvariate(5, 0.8)), cost_usd=0.001))
            yield agg.features(60.0)

    for seed in range(5):
        fs = [f for f in firing(windows(seed)) if f.type in ("ttft", "latency")]
        assert len(fs) == 1 and 200 * 60 <= fs[0].window_end - T0 <= 210 * 60, \
            (seed, [(f.type, (f.window_end - T0) / 60, round(f.observed)) for f in fs])
