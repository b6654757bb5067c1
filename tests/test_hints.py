"""Root-cause hints: the pure hint functions, and the hints findings carry."""

import pickle
import re

import pytest

from detectors.hints import (cost_hints, error_hints, hints_for, latency_hints, moved_up, tokens_hints,
                             ttft_hints)
from detectors.windowed import KeyDetectors, WindowFeatures
from operators.model_windows import MAX_ERROR_TYPES, WindowAgg
from sentinel.events import LLMEvent
from tests.key_windows import flat_state

T0 = 1767571200.0


def lv(ratio, z=None, expected=100.0):
    """A level ``ratio`` times its expected value; z follows a 0.1 log-noise unless given."""
    import math

    return (expected * ratio, expected, math.log(ratio) / 0.1 if z is None else z)


def levels(**ratios):
    names = {"lat95": "latency_p95_ms", "lat50": "latency_p50_ms", "ttft": "ttft_p95_ms",
             "out": "output_tokens_mean", "inp": "input_tokens_mean", "cost": "cost_per_request_usd",
             "count": "request_count"}
    return {names[k]: (v if isinstance(v, tuple) else lv(v)) for k, v in ratios.items()}


# -- latency ---------------------------------------------------------------

def test_latency_with_ttft_up_points_before_the_first_token():
    h = latency_hints("latency_p50_ms", levels(lat50=5, lat95=5, ttft=5, out=1, inp=1))
    assert h == ["time to first token is up x5.0 too: the delay is before the first token "
                 "(queueing or prefill at the provider)"]


def test_latency_with_longer_answers():
    h = latency_hints("latency_p50_ms", levels(lat50=3, lat95=3, ttft=1.02, out=2.84, inp=1))
    assert h == ["answers are x2.8 longer (output tokens): longer generations take longer"]


def test_latency_with_ttft_and_tokens_normal_is_decode_speed():
    h = latency_hints("latency_p50_ms", levels(lat50=4, lat95=4, ttft=1.05, out=0.97, inp=1.0))
    assert h == ["time to first token is normal: generation itself is slower (decode speed)"]


def test_latency_without_ttft_says_the_answers_are_not_longer():
    h = latency_hints("latency_p50_ms", levels(lat50=4, lat95=4, out=1.0, inp=1.0))
    assert h == ["answers are their usual length (output tokens): each request is slower, not longer"]


def test_latency_with_larger_prompts_tail_and_load_keeps_three_most_telling():
    h = latency_hints("latency_p95_ms", levels(lat95=3, lat50=1.0, ttft=3, out=2, inp=2.5, count=2))
    assert len(h) == 3
    assert h[0].startswith("time to first token is up x3.0 too")
    assert h[1] == "answers are x2.0 longer (output tokens): longer generations take longer"
    assert h[2] == "prompts are x2.5 larger (input tokens): a longer prefill"
    h = latency_hints("latency_p95_ms", levels(lat95=3, lat50=1.0, ttft=1.0, out=1.0, count=2))
    assert h[1] == "median latency is normal: only the slowest requests are slower (the tail)"
    assert h[2] == ("traffic is x2.0 its usual level (requests per window): the slowdown comes with more load")


def test_latency_says_nothing_the_data_does_not_support():
    # ttft up a little but within its noise (z 1.5): neither moved nor normal.
    assert latency_hints("latency_p50_ms", levels(lat50=4, ttft=(125.0, 100.0, 1.5), out=(125.0, 100.0, 1.5))) == []
    # a big ratio in a very noisy metric is not "moved"
    assert moved_up(levels(ttft=(300.0, 100.0, 1.2)), "ttft_p95_ms") is None
    # nothing else known about the key
    assert latency_hints("latency_p50_ms", levels(lat50=4)) == []
    # no median hint on a median alert
    assert latency_hints("latency_p50_ms", levels(lat50=4, lat95=1.0)) == []


# -- ttft, tokens, cost ------------------------------------------------------

def test_ttft_hints():
    assert ttft_hints(levels(ttft=4, inp=2)) == [
        "prompts are x2.0 larger (input tokens): a longer prompt lengthens prefill"]
    assert ttft_hints(levels(ttft=4, inp=1.0)) == [
        "prompts are their usual size (input tokens): the provider is slower to start answering "
        "(queueing or prefill capacity)"]
    assert ttft_hints(levels(ttft=4)) == []
    assert ttft_hints(levels(ttft=4, inp=(120.0, 100.0, 1.8))) == []


def test_tokens_hints_name_the_side_that_grew():
    assert tokens_hints(levels(out=3, inp=1.0)) == [
        "answers are x3.0 longer (output tokens), prompts their usual size: "
        "a change in instructions, max_tokens or the model's behaviour"]
    assert tokens_hints(levels(out=1.0, inp=2.2)) == [
        "prompts are x2.2 larger (input tokens), answers their usual length: "
        "more context is sent (retrieval results, chat history or a prompt template)"]
    h = tokens_hints(levels(out=3, inp=2, cost=2.4))
    assert h == ["prompts are x2.0 larger and answers x3.0 longer: the service is used differently "
                 "(a new caller, feature or prompt template)", "cost per request is up x2.4 with them"]
    assert tokens_hints(levels(out=1.1, inp=1.0, cost=2)) == []


def test_cost_hints_tell_price_from_tokens():
    assert cost_hints(levels(cost=4, out=1.0, inp=1.02)) == [
        "tokens per request are normal: the price per token changed "
        "(a pricing change, another model version or a routing change)"]
    assert cost_hints(levels(cost=3, out=3, inp=1.0)) == [
        "answers are x3.0 longer (output tokens): the cost follows the tokens"]
    assert cost_hints(levels(cost=3, out=1.0, inp=3)) == [
        "prompts are x3.0 larger (input tokens): the cost follows the tokens"]
    assert cost_hints(levels(cost=4)) == []  # no token counts: nothing to tell
    assert cost_hints(levels(cost=4, out=(125.0, 100.0, 1.5), inp=1.0)) == []


# -- errors ------------------------------------------------------------------

def test_error_hints_name_the_dominant_type_and_what_it_means():
    assert error_hints({"rate_limit": 25, "timeout": 5}) == [
        "83% of the errors (25 of 30) are rate_limit: a quota or rate limit at the provider, not a model fault"]
    assert error_hints({"timeout": 9, None: 1}) == [
        "90% of the errors (9 of 10) are timeout: the provider is slow to answer (timeouts)"]
    assert error_hints({"server_error": 12}) == [
        "100% of the errors (12 of 12) are server_error: provider-side failures (server errors)"]
    assert error_hints({"HTTP 503": 6})[0].endswith("are HTTP 503: provider-side failures (server errors)")
    assert error_hints({"openai.RateLimitError": 6})[0].endswith("a quota or rate limit at the provider, "
                                                                 "not a model fault")


def test_error_hints_second_type_and_mix():
    h = error_hints({"rate_limit": 14, "server_error": 6})
    assert h == ["70% of the errors (14 of 20) are rate_limit: a quota or rate limit at the provider, "
                 "not a model fault",
                 "30% of them (6) are server_error: provider-side failures (server errors)"]
    assert error_hints({"rate_limit": 4, "timeout": 4, None: 3}) == [
        "no single error type dominates (11 errors): rate_limit 36%, timeout 36%, untyped 27%"]


def test_error_hints_without_a_type_or_with_too_few_errors():
    assert error_hints({None: 9, "rate_limit": 1}) == ["90% of the errors (9 of 10) carry no error type"]
    assert error_hints({"error": 5}) == ["100% of the errors (5 of 5) carry no error type"]
    assert error_hints({"quux_failure": 5}) == ["100% of the errors (5 of 5) are quux_failure"]
    assert error_hints({"rate_limit": 2}) == []
    # Only names that look like an error class or a status code are repeated: no message, address or key.
    for leaked in ("Invalid key sk-proj-4f9a8b7c6d5e", "user jane.doe@example.com not found",
                   "quota exceeded for project 123456789", "x" * 41):
        (h,) = error_hints({leaked: 5})
        assert h.startswith("100% of the errors (5 of 5) are an unlisted error type"), h
        assert not re.search(r"sk-|@|123456789|xxxx", h), h
    assert error_hints(None) == [] and error_hints({}) == []
    assert error_hints({"rate_limit": 5}, levels(count=3))[1] == (
        "traffic is x3.0 its usual level (requests per window): the errors come with more load")


def test_hints_for_dispatches_by_type():
    assert hints_for("error_rate", "error_rate", {}, {"timeout": 5})[0].startswith("100% of the errors")
    assert hints_for("ttft", "ttft_p95_ms", levels(ttft=4, inp=2))[0].startswith("prompts are x2.0")
    for typ in ("traffic", "drift", "multivariate", "token_abuse"):
        assert hints_for(typ, "request_count", levels(count=5, out=3, ttft=4), {"timeout": 9}) == []


# -- on findings ---------------------------------------------------------------

def window(i, lat=1.0, ttft=1.0, errors=1, error_types=None):
    j = 1.0 + 0.03 * ((i * 7919) % 13 - 6) / 6  # deterministic +-3% jitter
    return WindowFeatures(T0 + 60 * i, T0 + 60 * (i + 1), 100, errors, 500.0 * lat * j, 1000.0 * lat * j,
                          300.0 * ttft / j, 800.0 * j, 200.0 / j, 0.002 * j, 0.2, 100000,
                          error_types if error_types is not None else ({None: errors} if errors else None))


def _findings(det, windows):
    out = []
    for f in windows:
        out.extend(det.update(f))
    return out


def test_error_rate_findings_carry_the_types_of_their_windows_and_resolve_keeps_them():
    ws = [window(i) for i in range(200)]
    for i in range(150, 160):
        ws[i] = window(i, errors=30, error_types={"rate_limit": 28, None: 2})
    fs = [f for f in _findings(KeyDetectors(), ws) if f.type == "error_rate"]
    assert [f.status for f in fs][0] == "firing" and fs[-1].status == "resolved"
    # the two windows that made it fire: 56 of their 60 errors
    assert fs[0].hints == ["93% of the errors (56 of 60) are rate_limit: a quota or rate limit at the provider, "
                           "not a model fault"]
    assert fs[-1].hints == fs[0].hints


def test_latency_findings_point_before_the_first_token_and_other_types_have_none():
    ws = [window(i) for i in range(200)]
    for i in range(150, 158):
        ws[i] = window(i, lat=5, ttft=5)
    fs = _findings(KeyDetectors(), ws)
    lat = [f for f in fs if f.type == "latency"]
    assert lat[0].status == "firing" and "before the first token" in lat[0].hints[0]
    assert re.search(r"up x(4\.[5-9]|5\.[0-5]) too", lat[0].hints[0]), lat[0].hints
    # an escalation re-reads its own window; the resolve repeats the latest
    assert lat[-1].status == "resolved" and lat[-1].hints == lat[-2].hints
    ttft = [f for f in fs if f.type == "ttft"]
    assert ttft[0].hints[0].startswith("prompts are their usual size")
    assert all(f.hints == [] for f in fs if f.type not in ("latency", "ttft"))


def test_a_later_episode_counts_only_its_own_error_types():
    ws = [window(i) for i in range(260)]
    for i in range(150, 160):
        ws[i] = window(i, errors=30, error_types={"rate_limit": 30})
    for i in range(200, 210):
        ws[i] = window(i, errors=30, error_types={"timeout": 30})
    det = KeyDetectors()
    fs = [f for f in _findings(det, ws) if f.type == "error_rate"]
    assert [f.status for f in fs] == ["firing", "resolved", "firing", "resolved"], fs
    assert "are rate_limit" in fs[1].hints[0]
    assert fs[2].hints == ["100% of the errors (60 of 60) are timeout: the provider is slow to answer (timeouts)"]
    assert det._errors.error_types == {} and det._hints == {}


def test_state_from_before_hints_still_loads():
    det = KeyDetectors()
    _findings(det, [window(i) for i in range(60)])
    s = flat_state(det)
    del s["_hints"], s["_err_types"]
    old = KeyDetectors.__new__(KeyDetectors)
    old.__setstate__(s)
    ws = [window(i, errors=30, error_types={"timeout": 30}) for i in range(60, 64)]
    fs = [f for f in _findings(old, ws) if f.type == "error_rate"]
    assert fs and fs[0].hints[0].endswith("the provider is slow to answer (timeouts)")
    clone = pickle.loads(pickle.dumps(old))
    assert clone._hints == old._hints

    f = WindowFeatures.__new__(WindowFeatures)
    slots = WindowFeatures.__slots__
    f.__setstate__(window(1).__getstate__()[:slots.index("error_types")])  # before error types (and all after)
    assert f.error_types is None and f.out_log is None and f.lat_log is None and f.clusters is None
    agg = WindowAgg.__new__(WindowAgg)
    agg.__setstate__(WindowAgg(T0).__getstate__()[:WindowAgg.__slots__.index("err_types")])
    assert agg.err_types is None and agg.users == [] and agg.features(60.0).error_types is None
    # A window snapshotted before the cost of a million tokens and the time per output token.
    agg = WindowAgg.__new__(WindowAgg)
    agg.__setstate__(WindowAgg(T0).__getstate__()[:WindowAgg.__slots__.index("unit")])
    agg.add(LLMEvent(T0, "svc", "m", latency_ms=800.0, ttft_ms=200.0, input_tokens=900, output_tokens=100,
                     cost_usd=0.001))
    f = agg.features(60.0)
    assert f.unit_cost == pytest.approx(1.0) and f.tpot == pytest.approx(6.0)


def test_window_counts_error_types_only_when_there_are_errors():
    agg = WindowAgg(T0)
    agg.add(LLMEvent(T0, "svc", "m", latency_ms=800.0))
    assert agg.err_types is None
    for i in range(3):
        agg.add(LLMEvent(T0, "svc", "m", is_error=True, error_type="rate_limit"))
    agg.add(LLMEvent(T0, "svc", "m", is_error=True))
    for i in range(2 * MAX_ERROR_TYPES):
        agg.add(LLMEvent(T0, "svc", "m", is_error=True, error_type=f"e{i}"))
    types = agg.features(60.0).error_types
    assert types["rate_limit"] == 3 and types[None] == 1
    assert len(types) == MAX_ERROR_TYPES + 1 and sum(types.values()) == agg.errors
