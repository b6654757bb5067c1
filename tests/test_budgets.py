"""Budgets and allowed models (operators/budgets.py) through the whole flow on Bytewax's testing connectors."""

import math
import random
from datetime import datetime

import pytest

from sentinel.config import ConfigError, load_config_dict
from tests.helpers import T0, batches, request, run_flow

# Escalations at once; no re-page of a day-long budget episode within the test.
QUIET = {"alerting": {"group_interval": 0, "repeat_interval": "2d"}}


def _day(cost_fn, hours: float = 24, per_minute: int = 6, service: str = "svc", model: str = "m1", seed: int = 1):
    rng = random.Random(seed)
    out = []
    for m in range(int(hours * 60)):
        for i in range(per_minute):
            ts = T0 + m * 60 + (i + rng.random()) * 60.0 / per_minute
            out.append(request(ts, service, model, rng.lognormvariate(6.68, 0.2), cost_usd=cost_fn(ts),
                               input_tokens=500, output_tokens=200))
    return out


def _policy(alerts):
    return [a for a in alerts if a["type"] == "policy_violation"]


def test_steady_overspend_is_forecast_hours_ahead_then_warned_then_paged():
    per_event = 0.01                      # $0.06 a minute
    budget = 0.06 * (15 * 60 + 40)        # gone at 15:40 at this rate
    evs = _day(lambda ts: per_event, hours=17)
    alerts, dead = run_flow(batches(evs), {**QUIET, "policies": {"budgets": [
        {"service": "svc", "window": "1d", "cost_usd": budget}]}})
    assert dead == []
    pol = _policy(alerts)
    assert [(a["severity"], a["status"]) for a in pol] == [("low", "firing"), ("medium", "escalated"),
                                                           ("high", "escalated")], pol
    forecast, warn, spent = pol
    assert any(f"gone by 15:{m} UTC" in forecast["summary"] for m in (39, 40, 41)), forecast
    fired = datetime.fromisoformat(forecast["evidence"]["fired_event_time"].replace("Z", "+00:00")).timestamp()
    exhausted = datetime.fromisoformat(spent["evidence"]["fired_event_time"].replace("Z", "+00:00")).timestamp()
    assert exhausted - T0 == pytest.approx((15 * 60 + 40) * 60, abs=120)
    assert exhausted - fired >= 5 * 60          # the forecast comes at least five minutes before
    assert fired - T0 <= 2 * 3600               # ... in fact once 10% is spent, 14 hours ahead
    assert {a["fingerprint"] for a in pol} == {forecast["fingerprint"]}
    assert forecast["subject"] == "budget:cost_usd/1d" and forecast["detector"] == "budget"
    assert warn["evidence"]["share"] >= 0.8
    assert spent["observed"] >= spent["expected"] == pytest.approx(budget)
    assert not [a for a in alerts if a["type"] != "policy_violation"], alerts


def test_the_window_ending_resolves_and_the_next_starts_afresh():
    budget = 0.06 * 50                    # an hourly budget gone after 50 minutes
    alerts, _ = run_flow(batches(_day(lambda ts: 0.01, hours=2.5)), {**QUIET, "policies": {"budgets": [
        {"service": "svc", "window": "1h", "cost_usd": budget, "forecast_min_elapsed": "5m"}]}})
    pol = _policy(alerts)
    pages = [a for a in pol if a["status"] == "firing"]
    assert len(pages) == 3                # one episode per hour
    assert sum(a["status"] == "resolved" for a in pol) >= 2
    assert all(a["summary"].startswith("At this rate the hourly cost budget") for a in pages)


def test_legitimate_heavy_days_within_budget_do_not_alert():
    """Diurnal traffic (peaks at three times the night) and a burst, 85-95% of the budget by the day's end."""
    false = 0
    for seed in range(1, 6):
        rng = random.Random(seed)
        burst = rng.uniform(8, 16) * 3600

        def cost(ts, burst=burst):
            h = (ts - T0) / 3600
            c = 0.01 * (1 + 0.5 * math.sin((h - 9) / 24 * 2 * math.pi)) ** 2
            return c * 3 if burst <= ts - T0 < burst + 1800 else c

        evs = _day(cost, hours=24, seed=seed)
        total = sum(e["cost_usd"] for e in evs)
        share = rng.uniform(0.85, 0.95)
        alerts, _ = run_flow(batches(evs), {**QUIET, "policies": {"budgets": [
            {"service": "svc", "window": "1d", "cost_usd": total / share}]}})
        false += len([a for a in _policy(alerts) if a["severity"] in ("low", "high")])
        # 80% is spent on such a day: the warning is right, nothing else.
        assert [a["severity"] for a in _policy(alerts) if a["status"] != "resolved"] == ["medium"], seed
    assert false == 0


def test_tokens_and_a_wildcard_rule():
    alerts, _ = run_flow(batches(_day(lambda ts: 0.0, hours=1, service="a") + _day(lambda ts: 0.0, hours=1, service="b")),
                         {**QUIET, "policies": {"budgets": [{"service": "*", "window": "1h", "tokens": 700 * 6 * 30,
                                                             "forecast": False}]}})
    pol = _policy(alerts)
    firing = sorted((a["service"], a["severity"]) for a in pol if a["status"] != "resolved")
    assert firing == [("a", "high"), ("a", "medium"), ("b", "high"), ("b", "medium")]
    assert all(a["subject"] == "budget:tokens/1h" for a in pol)
    assert any("token budget of a (126,000 tokens)" in a["summary"] for a in pol)


def test_a_model_outside_the_allow_list_is_a_policy_violation():
    evs = sorted(_day(lambda ts: 0.001, hours=3) +
                 [request(T0 + 3600 + i * 30, "svc", "gpt-4o", 900.0) for i in range(20)],
                 key=lambda e: e["timestamp"])
    alerts, dead = run_flow(batches(evs), {**QUIET, "policies": {"allowed_models": {"svc": ["m1"]}}})
    pol = _policy(alerts)
    assert [(a["status"], a["model"], a["subject"], a["severity"]) for a in pol] == [
        ("firing", "gpt-4o", "model:gpt-4o", "medium"), ("resolved", "gpt-4o", "model:gpt-4o", "medium")]
    assert pol[0]["event_time"] == "2026-01-05T01:00:00Z"
    assert "not among its allowed models (m1)" in pol[0]["summary"]
    # Other services and the allowed model: nothing.
    alerts, _ = run_flow(batches(_day(lambda ts: 0.001, hours=1)), {**QUIET, "policies": {
        "allowed_models": {"svc": ["m1"], "other": ["x"]}}})
    assert _policy(alerts) == []


def test_policy_config_errors_name_the_key():
    base = {"source": {"kind": "simulator"}}
    with pytest.raises(ConfigError, match=r"policies.budgets\[0\]: Value error, give tokens or cost_usd"):
        load_config_dict({**base, "policies": {"budgets": [{"service": "svc"}]}})
    with pytest.raises(ConfigError, match=r"policies.budgets\[0\].warn"):
        load_config_dict({**base, "policies": {"budgets": [{"service": "svc", "cost_usd": 1, "warn": 1.5}]}})
    with pytest.raises(ConfigError, match=r"policies.budget"):
        load_config_dict({**base, "policies": {"budget": []}})


def test_a_budget_per_user_pages_the_user_who_spends_it():
    evs = []
    for m in range(120):
        for u, per_minute in (("u-heavy", 6), ("u-light", 2)):
            for i in range(per_minute):
                evs.append(request(T0 + m * 60 + i * 60.0 / per_minute + (0.5 if u == "u-light" else 0), "svc", "m1",
                                   800.0, user_id=u, cost_usd=0.01))
    evs.sort(key=lambda e: e["timestamp"])
    alerts, dead = run_flow(batches(evs), {**QUIET, "policies": {"budgets": [
        {"service": "svc", "per": "user", "window": "1d", "cost_usd": 5.0, "forecast": False},
        {"service": "svc", "window": "1d", "cost_usd": 100.0, "forecast": False}]}})
    assert dead == []
    pol = [a for a in _policy(alerts) if a["status"] != "resolved"]
    assert [(a["subject"], a["severity"]) for a in pol] == [("user:u-heavy", "medium"), ("user:u-heavy", "high")]
    assert "daily cost budget of user:u-heavy on svc ($5.00)" in pol[1]["summary"]
    # At 0.06 $/min the user's $5 is gone after 83 minutes.
    spent_at = datetime.fromisoformat(pol[1]["evidence"]["fired_event_time"].replace("Z", "+00:00")).timestamp()
    assert spent_at - T0 == pytest.approx(83.3 * 60, abs=60)


def _breach(ts, i, kind="prompt_injection", service="svc"):
    return {"event_type": "security", "timestamp": ts, "source": f"203.0.113.{i % 200}", "kind": kind,
            "service": service}


def test_guardrail_breach_rate_pages_once_per_window_and_counts_every_breach():
    evs = _day(lambda ts: 0.001, hours=3.5)                     # 360 requests an hour
    evs += [_breach(T0 + i * 600, i) for i in range(6)]          # hour 0: 6 breaches, under min_events
    evs += [_breach(T0 + 3600 + i * 100, i, "jailbreak" if i % 3 else "pii_leak") for i in range(30)]  # 8.3%
    evs += [_breach(T0 + 7200 + i * 300, i, service="other") for i in range(12)]  # another service's
    evs.sort(key=lambda e: e["timestamp"])
    alerts, dead = run_flow(batches(evs), {**QUIET, "policies": {"guardrail_rate": {
        "window": "1h", "max_rate": 0.05, "min_events": 20}}})
    assert dead == []
    pol = _policy(alerts)
    assert [(a["status"], a["service"], a["severity"], a["subject"]) for a in pol] == [
        ("firing", "svc", "medium", "guardrails/1h"), ("resolved", "svc", "medium", "guardrails/1h")]
    page = pol[0]
    assert page["evidence"]["breaches"] == 20 and page["evidence"]["kinds"] == {"jailbreak": 13, "pii_leak": 7}
    assert page["observed"] > 0.05 and page["detector"] == "guardrail_rate"
    assert "20 guardrail breaches on svc in 1h (jailbreak, pii_leak)" in page["summary"]


def test_every_guardrail_breach_is_recorded_for_audit(tmp_path, monkeypatch):
    import json

    from sentinel.pii import Masker

    monkeypatch.setenv("SENTINEL_TEST_PSEUDONYM_KEY", "audit-test-key-0123456789")
    evs = _day(lambda ts: 0.001, hours=1)
    breaches = [_breach(T0 + 10 + i * 7, i, "jailbreak") for i in range(300)]
    breaches[5]["source"] = "mallory@evil.example"
    evs = sorted(evs + breaches, key=lambda e: e["timestamp"])
    audit = tmp_path / "audit" / "guardrails.jsonl"
    alerts, dead = run_flow(batches(evs), {**QUIET, "policies": {"guardrail_audit": str(audit)},
                                           "privacy": {"pseudonym_key_env": "SENTINEL_TEST_PSEUDONYM_KEY"}})
    assert dead == []
    rows = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(rows) == 300
    m = Masker(pseudonym_key=b"audit-test-key-0123456789")
    assert sorted(r["subject"] for r in rows) == sorted(m.pseudonym(b["source"]) for b in breaches)
    assert {r["kind"] for r in rows} == {"jailbreak"} and {r["service"] for r in rows} == {"svc"}
    assert "mallory" not in audit.read_text() and "203.0.113." not in audit.read_text()
    assert oct(audit.stat().st_mode & 0o777) == "0o640"
    # No page for each: the only alerts are the flow's own (a coordinated attack needs one source's burst).
    assert not _policy(alerts)
