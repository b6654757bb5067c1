"""Predictive warnings (operators/forecast.py): a trend towards a key's alert level warns early, at info."""

from __future__ import annotations

import math
import random

import pytest

from helpers import T0, batches, run_flow, steady
from operators.forecast import DETECTOR, KeyForecaster, _Series, fit_trend
from sentinel.config import ConfigError, load_config_dict

FORECAST = {"detection": {"forecast": {"enabled": True, "horizon": "15m", "windows": 10, "min_slope_z": 4}}}
SPEC_FIELDS = ("alert_id", "fingerprint", "type", "severity", "service", "model", "subject", "metric", "observed",
               "expected", "score", "detector", "event_time", "detected_at", "summary", "evidence",
               "root_cause_hints", "similar_incidents", "status")
RAMP_START = T0 + 90 * 60  # the latency starts rising after 90 quiet minutes


def ramp(ts: float, lat: float) -> float:
    """Latency x1 until RAMP_START, then up 6% a minute (x2 after 12 minutes, x4 after 24)."""
    if ts < RAMP_START:
        return lat
    return lat * math.exp(0.06 * (ts - RAMP_START) / 60.0)


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_steady_latency_ramp_warns_before_the_regular_alert():
    alerts, dead = run_flow(batches(steady(130, latency_fn=ramp)), FORECAST)
    assert not dead
    warnings = [a for a in alerts if a["detector"] == DETECTOR and a["status"] == "firing"]
    regular = [a for a in alerts if a["detector"] != DETECTOR and a["type"] == "latency" and a["status"] == "firing"]
    assert len(warnings) == 1, [a["summary"] for a in alerts]
    w = warnings[0]
    assert (w["type"], w["severity"], w["metric"]) == ("latency", "info", "latency_gmean_ms")
    assert regular, "the ramp pages as a regular latency alert too"
    warned = _ts(w["evidence"]["fired_event_time"])
    paged = _ts(regular[0]["evidence"]["fired_event_time"])
    assert RAMP_START < warned < paged
    # The level the warning names is crossed after it, about when it said.
    crossing = _ts(w["evidence"]["projected_crossing"])
    assert warned < crossing <= warned + 15 * 60
    assert w["observed"] < w["evidence"]["level"]


def test_a_warning_carries_the_spec_fields_and_resolves():
    alerts, _ = run_flow(batches(steady(130, latency_fn=ramp)), FORECAST)
    mine = [a for a in alerts if a["detector"] == DETECTOR]
    w = mine[0]
    for f in SPEC_FIELDS:
        assert f in w, f
    assert w["subject"] is None and w["service"] == "svc" and w["model"] == "m1"
    ev = w["evidence"]
    assert ev["forecast"] is True
    for f in ("projected_crossing", "minutes_to_crossing", "level", "slope_per_minute", "slope_z"):
        assert f in ev, f
    assert 0 < ev["minutes_to_crossing"] <= 15 and ev["slope_z"] >= 4 and ev["slope_per_minute"] > 0
    assert "Forecast" in w["summary"] and "UTC" in w["summary"]
    # Its own episode and incident: not the regular alert's fingerprint, resolved once the level is reached.
    regular = [a for a in alerts if a["detector"] != DETECTOR and a["type"] == "latency"]
    assert w["fingerprint"] not in {a["fingerprint"] for a in regular}
    resolves = [a for a in mine if a["status"] == "resolved"]
    assert len(resolves) == 1
    assert _ts(resolves[0]["evidence"]["resolved_event_time"]) <= _ts(regular[0]["evidence"]["fired_event_time"])


def test_a_flat_noisy_key_does_not_warn():
    rng = random.Random(5)
    # Heavier noise than steady()'s, and a sparse key besides.
    noisy = steady(180, latency_fn=lambda ts, lat: lat * rng.lognormvariate(0.0, 0.5), seed=3)
    sparse = steady(180, per_minute=9, seed=4, model="m2")
    alerts, _ = run_flow(batches(sorted(noisy + sparse, key=lambda e: e["timestamp"])), FORECAST)
    assert not [a for a in alerts if a["detector"] == DETECTOR]


def test_forecasts_are_off_by_default():
    alerts, _ = run_flow(batches(steady(130, latency_fn=ramp)))
    assert not [a for a in alerts if a["detector"] == DETECTOR]


def test_the_trend_fit_needs_a_significant_slope_below_the_level():
    line = [(float(m), 0.01 * m) for m in range(10)]
    t = fit_trend(line, 0.0, 0.02, 0.3, 4.0)
    assert t is not None and t.slope == pytest.approx(0.01) and t.minutes == pytest.approx(21.0)
    assert fit_trend(line, 0.0, 0.2, 0.3, 4.0) is None        # within the key's own spread
    assert fit_trend([(x, -y) for x, y in line], 0.0, 0.02, 0.3, 4.0) is None   # falling
    assert fit_trend(line, 0.0, 0.02, 0.05, 4.0) is None      # already beyond the level
    # A trend's onset (flat, then rising) warns; a jump (an incident under way) does not.
    onset = [(float(m), 0.0 if m < 4 else 0.015 * (m - 3)) for m in range(12)]
    assert fit_trend(onset, 0.0, 0.02, 0.3, 4.0) is not None
    jump = [(float(m), 0.0 if m < 7 else 0.12) for m in range(12)]
    assert fit_trend(jump, 0.0, 0.02, 0.3, 4.0) is None


def test_one_warning_per_episode_then_a_quiet_period():
    f = KeyForecaster(horizon=900.0, windows=10, min_slope_z=4.0, warmup=30, threshold=0.9)
    s = _Series()
    rng = random.Random(2)
    fired = []
    for m in range(60):
        f.step("latency", s, T0 + 60 * m, 6.7 + rng.gauss(0, 0.02))
    s.firing = None
    for m in range(60, 75):  # rising 1% a minute: the level (about +0.1) is some ten minutes away
        trend, resolve = f.step("latency", s, T0 + 60 * m, 6.7 + 0.01 * (m - 60) + rng.gauss(0, 0.002))
        if trend is not None:
            fired.append(m)
            s.firing = {"warned": m}
    assert len(fired) == 1


def test_forecast_config_is_checked():
    base = {"source": {"kind": "file", "path": "x"}}
    cfg = load_config_dict({**base, **FORECAST})
    f = cfg.detection.forecast
    assert (f.enabled, f.horizon, f.windows, f.min_slope_z) == (True, 900.0, 10, 4.0)
    assert load_config_dict(base).detection.forecast.enabled is False
    with pytest.raises(ConfigError, match="forecast"):
        load_config_dict({**base, "detection": {"forecast": {"window": 10}}})
    with pytest.raises(ConfigError, match="forecast.windows"):
        load_config_dict({**base, "detection": {"forecast": {"windows": 2}}})


def test_an_error_rate_warning_speaks_in_points_a_minute():
    from operators.forecast import ForecastLogic, ForecastState, Trend
    from sentinel.events import KEY_SEP

    cfg = load_config_dict({"source": {"kind": "file", "path": "x"}, "metrics": {"port": 0}, **FORECAST})
    logic = ForecastLogic(cfg, ForecastState(f"svc{KEY_SEP}m1", None), now=lambda: T0)
    y = lambda p: math.asin(math.sqrt(p))  # noqa: E731
    t = Trend(slope=0.01, slope_z=6.0, fitted=y(0.05), latest=y(0.05), location=y(0.01), level=y(0.2), minutes=12)
    a = logic._warning("error_rate", t, T0, T0 + 60, None).to_json()
    assert (a["type"], a["metric"], a["severity"], a["detector"]) == ("error_rate", "error_rate", "info", DETECTOR)
    assert a["observed"] == pytest.approx(0.05) and a["expected"] == pytest.approx(0.01)
    assert a["evidence"]["level"] == pytest.approx(0.2) and a["evidence"]["slope_scale"] == "asin_sqrt"
    assert "+0.44 points a minute" in a["summary"] and "20.0%" in a["summary"]
