"""Tokens and cost per request on keys with heavy-tailed requests, large prompts and few requests.

A window's output tokens per request used to be a trimmed mean of its requests: with
answers log-normal (sigma 0.9) and 10-20 requests a window, its noise is about 30%, so a
prompt change that doubles the answers is 2-3 of its noise levels, under the alert level,
and the baseline learned the incident as it went (15 windows of x2 raised it by half);
a key of 5 requests a minute (under ``min_requests``) was not judged at all. They are now
the mean of the requests' logs (a geometric mean) with the standard error its count gives,
pooled over the last windows while one has too few requests (detectors.robust.PooledLogMean).
"""

import math
import random

from detectors.windowed import KeyDetectors
from operators.model_windows import WindowAgg, cause_first
from sentinel.events import LLMEvent
from tests.helpers import poisson
from tests.key_windows import flat_state

T0 = 1767571200.0  # a Monday, 00:00 UTC


def rag_windows(seed, minutes, rate, out_factor=lambda i: 1.0, price_factor=lambda i: 1.0, out_sigma=0.9,
                ttft_factor=lambda i: 1.0, ms_per_token=20.0, fixed_ms=0.0):
    """A RAG key: ``rate`` requests a minute at the daily trough, 1.8 times that at noon (Poisson);
    prompts log-normal around 6,000 tokens (sigma 0.7), answers around 300 (``out_sigma``), one
    answer in 2,000 of 15-25k tokens; latency and cost follow the tokens; 1% errors."""
    rng = random.Random(seed)
    for i in range(minutes):
        ts0 = T0 + 60 * i
        lam = rate * (1 + 0.4 * (1 - math.cos(2 * math.pi * (ts0 % 86400) / 86400)))
        agg = WindowAgg(ts0)
        for _ in range(poisson(rng, lam, normal_above=50)):
            ts = ts0 + rng.random() * 60
            if rng.random() < 0.01:
                agg.add(LLMEvent(ts, "rag", "m", latency_ms=30000.0, is_error=True, error_type="timeout"))
                continue
            inp = int(rng.lognormvariate(math.log(6000), 0.7))
            out = max(1, int(rng.lognormvariate(math.log(300), out_sigma) * out_factor(i)))
            if rng.random() < 1 / 2000:
                out = rng.randint(15000, 25000)
            ttft = (200 + inp * 0.02 * math.exp(rng.gauss(0, 0.2))) * ttft_factor(i)
            agg.add(LLMEvent(ts, "rag", "m", latency_ms=ttft + fixed_ms + out * ms_per_token * math.exp(rng.gauss(0, 0.2)),
                             ttft_ms=ttft, input_tokens=inp, output_tokens=out,
                             cost_usd=(inp * 2.5e-6 + out * 1e-5) * price_factor(i)))
        yield agg.features(60.0)


def fired(windows):
    det = KeyDetectors()
    return [f for w in windows for f in det.update(w) if f.status == "firing"]


INCIDENT = range(120, 135)  # 15 minutes, after two hours of warm-up


def x2(i):
    return 2.0 if i in INCIDENT else 1.0


def caught(fs, typ, metric):
    """The incident was paged under its own type and metric (one of them, given a tuple), from
    inside it (or the two windows after, where the pool still holds it), and nothing else was
    paged."""
    metrics = metric if isinstance(metric, tuple) else (metric,)
    hit = [f for f in fs if f.type == typ and f.metric in metrics
           and INCIDENT[0] * 60 <= f.event_time - T0 and f.window_end - T0 <= (INCIDENT[-1] + 3) * 60]
    others = [f for f in fs if f not in hit and f.type not in ("latency", "drift")]  # latency follows the answers
    return bool(hit), others


def test_output_tokens_x2_is_caught_at_20_requests_a_minute():
    found = 0
    for seed in range(10):
        hit, others = caught(fired(rag_windows(seed, 150, 20, out_factor=x2)), "tokens", "output_tokens_mean")
        assert others == [], (seed, others)
        found += hit
    assert found == 10, found


def test_output_tokens_x2_is_caught_at_5_requests_a_minute():
    # Under min_requests: judged on the last windows pooled (15 windows: about 75 requests, a
    # doubling about 7.5 standard errors of their log-mean at sigma 0.8; at sigma 1.0, 6, and
    # about half of these are caught in time).
    found = 0
    for seed in range(10):
        hit, others = caught(fired(rag_windows(seed, 150, 5, out_factor=x2, out_sigma=0.8)), "tokens",
                             "output_tokens_mean")
        assert others == [], (seed, others)
        found += hit
    assert found >= 8, found


COST_METRICS = ("cost_per_request_usd", "cost_per_million_tokens_usd")


def test_cost_per_request_x2_is_caught_on_its_own():
    # Twice the price, the same tokens: a cost alert, not a tokens one.
    for rate, need in ((5, 8), (20, 10), (100, 10)):
        found = 0
        for seed in range(10):
            fs = fired(rag_windows(seed, 150, rate, price_factor=x2))
            hit, others = caught(fs, "cost", COST_METRICS)
            assert others == [] and not [f for f in fs if f.type == "tokens"], (rate, seed, fs)
            found += hit
        assert found >= need, (rate, found)


def test_a_day_of_normal_heavy_tailed_traffic_raises_nothing():
    # Diurnal rate, heavy-tailed prompts and answers, the odd 20k-token answer: no alert.
    for rate in (5, 20, 100):
        for seed in (101, 102):
            fs = fired(rag_windows(seed, 1440, rate))
            assert fs == [], (rate, seed, [(f.type, f.metric, f.observed, f.expected) for f in fs])


def test_pooled_state_pickles_mid_stream_and_old_state_loads():
    import pickle

    from detectors.robust import PooledLogMean, RobustBaseline

    ws = list(rag_windows(3, 200, 5, out_factor=x2))
    det = KeyDetectors()
    for w in ws[:127]:  # in the middle of the incident: pools flagged, windows waiting to be learned
        det.update(w)
    clone = pickle.loads(pickle.dumps(det))
    a = [(f.type, f.status, f.score) for w in ws[127:] for f in det.update(w)]
    b = [(f.type, f.status, f.score) for w in ws[127:] for f in clone.update(w)]
    assert a == b and a
    # A snapshot from before: its tokens and cost baselines (of trimmed means) start afresh.
    s = flat_state(det)
    s["_base"] = dict(s["_base"], output_tokens_mean=RobustBaseline(log=True))
    old = KeyDetectors.__new__(KeyDetectors)
    old.__setstate__(s)
    assert isinstance(old._base["output_tokens_mean"], PooledLogMean)
    for w in ws[127:]:
        old.update(w)
    assert old._base["output_tokens_mean"].n > 0


def test_a_ttft_rise_is_paged_as_ttft_not_as_the_latency_it_moves():
    # Time to first token is part of a call's latency: when a window opens both and ttft rose by
    # the larger factor, ttft goes first (the incident is paged under it), as tokens go before the
    # latency a prompt change causes. A call slowed as a whole is paged as latency (tests/test_flow.py).
    for seed in range(5):
        det = KeyDetectors()
        first = None
        for i, w in enumerate(rag_windows(seed, 150, 40.0, ttft_factor=lambda i: 3.4 if i in INCIDENT else 1.0,
                                          ms_per_token=3.0)):
            opened = cause_first([f for f in det.update(w) if f.status == "firing"])
            if opened and first is None:
                first = opened[0]
        assert first is not None and first.type == "ttft", (seed, first and first.type)


def first_pages(cause_z, seeds=range(10)):
    """The type of the first page of an output-token doubling on a key whose latency is mostly a
    fixed 2 s (so a window's latency mean stands out more than its answers' length does)."""
    firsts = []
    for seed in seeds:
        det = KeyDetectors(cause_z=cause_z)
        first = None
        for w in rag_windows(seed, 150, 20.0, out_factor=x2, out_sigma=1.2, ms_per_token=8.0, fixed_ms=2000.0):
            opened = cause_first([f for f in det.update(w) if f.status == "firing"])
            if opened and first is None:
                first = opened[0].type
        firsts.append(first)
    return firsts


def test_a_token_rise_whose_latency_stands_out_first_is_paged_as_tokens():
    # Latency follows the answers' length, and its window mean may stand out windows before the
    # answers' own: a latency window that alerts confirms a smaller token rise as its cause, and
    # the page names the tokens. Without that (cause_z 0), 2 of these 10 page as latency first.
    assert first_pages(3.0) == ["tokens"] * 10
    assert first_pages(0.0).count("latency") >= 1


def windows_of(seed, rate, request, minutes=150):
    """Per-minute windows of ``rate`` requests a minute (Poisson), each made by
    ``request(rng, ts, minute)``."""
    rng = random.Random(seed)
    ws = []
    for i in range(minutes):
        agg = WindowAgg(T0 + 60 * i)
        for _ in range(poisson(rng, rate)):
            agg.add(request(rng, T0 + 60 * i + rng.random() * 60, i))
        ws.append(agg.features(60.0))
    return ws


def test_a_price_change_is_caught_where_request_sizes_vary_most():
    # Prompts of a few hundred to tens of thousands of tokens (sigma 1.6, as an editor's
    # completions with and without the open files), 3 requests a minute: the cost per request
    # spreads by a factor of five, and twice the price for 15 minutes is lost in it. What a
    # million tokens cost does not depend on the size of the requests.
    def request(rng, ts, i):
        inp = max(1, int(rng.lognormvariate(math.log(2000), 1.6)))
        out = max(1, int(rng.lognormvariate(math.log(30), 0.8)))
        return LLMEvent(ts, "ide", "m", latency_ms=300.0 + 20 * out, ttft_ms=300.0, input_tokens=inp,
                        output_tokens=out, cost_usd=(inp * 2.5e-6 + out * 1e-5) * x2(i))

    found = 0
    for seed in range(10):
        hit, others = caught(fired(windows_of(seed, 3.0, request)), "cost", "cost_per_million_tokens_usd")
        assert others == [], (seed, others)
        found += hit
    assert found >= 8, found


def test_a_slow_model_is_caught_on_a_key_of_two_long_answers_a_minute():
    # A document key: prompts of about 30,000 tokens, answers of a few dozen to a few thousand
    # (sigma 1.0), two requests a minute, the model three times slower for 15 minutes. The
    # latency per request spreads with the answers' length, and the pool of two-request windows
    # missed this on 7 of 10 seeds; the time per output token does not spread with it. With or
    # without a reported ttft.
    for stream in (True, False):
        def request(rng, ts, i):
            inp = int(rng.lognormvariate(math.log(30000), 0.5))
            out = max(1, int(rng.lognormvariate(math.log(600), 1.0)))
            ttft = 400 * math.exp(0.3 * rng.gauss(0, 1)) + 0.05 * inp
            lat = (ttft + out * 25 * math.exp(0.2 * rng.gauss(0, 1))) * (3.0 if i in INCIDENT else 1.0)
            return LLMEvent(ts, "doc", "m", latency_ms=lat, ttft_ms=ttft if stream else None, input_tokens=inp,
                            output_tokens=out, cost_usd=inp * 2.5e-6 + out * 1e-5)

        found = 0
        for seed in range(10):
            fs = fired(windows_of(seed, 2.0, request))
            hit = [f for f in fs if f.type == "latency" and INCIDENT[0] * 60 <= f.event_time - T0
                   and f.window_end - T0 <= (INCIDENT[-1] + 3) * 60]
            assert [f for f in fs if f not in hit] == [], (stream, seed, fs)
            found += bool(hit)
        assert found >= 9, (stream, found)


def test_a_key_restored_from_before_the_new_metrics_judges_them():
    # A snapshot taken before the cost per million tokens and the time per output token existed:
    # the restored key adds them, learns them, and pages a price change on them.
    import pickle

    det = KeyDetectors()
    ws = list(rag_windows(4, 150, 20, price_factor=x2))
    for w in ws[:60]:
        det.update(w)
    new = ("cost_per_million_tokens_usd", "latency_per_output_token_ms")
    det._metrics = [m for m in det._metrics if m not in new]
    det._pooled.metrics = tuple(m for m in det._pooled.metrics if m not in new)
    for m in new:
        del det._pooled._base[m]
    old = pickle.loads(pickle.dumps(det))
    assert all(m in old._metrics and m in old._pooled.metrics for m in new)
    fs = [f for w in ws[60:] for f in old.update(w) if f.status == "firing"]
    assert old._pooled._base["latency_per_output_token_ms"].n > 0
    assert [f.type for f in fs] == ["cost"], fs


def test_shorter_answers_over_a_fixed_overhead_do_not_page_as_a_slower_model():
    # Answers four times shorter from minute 120 on (a prompt asking for brevity), each request
    # with 1.5 s of work that is not decoding: the time per output token rises 1.7x though the
    # model is as fast as ever. It paged on every seed before; the fall of the output tokens
    # explains it now. With or without a ttft, at 5 and 30 requests a minute.
    for rate in (5, 30):
        for stream in (True, False):
            def request(rng, ts, i):
                inp = int(rng.lognormvariate(math.log(3000), 0.5))
                out = max(1, int(rng.lognormvariate(math.log(400 if i < 120 else 100), 0.6)))
                ttft = 300 * math.exp(0.3 * rng.gauss(0, 1))
                lat = 1500 * math.exp(0.2 * rng.gauss(0, 1)) + ttft + out * 20 * math.exp(0.2 * rng.gauss(0, 1))
                return LLMEvent(ts, "k", "m", latency_ms=lat, ttft_ms=ttft if stream else None, input_tokens=inp,
                                output_tokens=out, cost_usd=inp * 2.5e-6 + out * 1e-5)

            for seed in range(5):
                fs = fired(windows_of(seed, rate, request, minutes=240))
                assert fs == [], (rate, stream, seed, [(f.type, f.metric) for f in fs])
