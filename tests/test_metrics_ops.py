"""The operator's metrics: service label cap, open incidents, event-time lags of a replay, warm-up, no _created."""

from __future__ import annotations

from bytewax.testing import TestingSink, TestingSource, run_main
from prometheus_client import CollectorRegistry, generate_latest

from flows import build_flow
from sentinel.config import load_config_dict
from sentinel.metrics import Metrics, get_metrics
from tests.helpers import T0, batches, steady


def _value(name, labels=None):
    return get_metrics().registry.get_sample_value(name, labels or {}) or 0.0


def test_the_service_label_is_capped_with_other():
    m = Metrics(CollectorRegistry())
    m.configure(max_service_labels=2)
    for svc in ("a", "b", "c", "d", "a", None):
        m.anomaly("latency", "high", svc)
    r = m.registry
    got = {svc: r.get_sample_value("sentinel_anomalies_total", {"type": "latency", "severity": "high", "service": svc})
           for svc in ("a", "b", "other", "none", "c")}
    assert got == {"a": 2.0, "b": 1.0, "other": 3.0, "none": None, "c": None}
    text = generate_latest(r).decode()
    assert "_created" not in text
    assert 'sentinel_build_info{bytewax="' in text


def test_a_replay_lags_in_its_own_time_and_open_incidents_count_by_service():
    """Data of January replayed in December: lags are of minutes (the stream's clock), not months."""
    def slow(ts, lat):
        return lat * 5 if ts >= T0 + 60 * 60 else lat

    events = steady(75, latency_fn=slow, service="lagsvc")  # ends while the latency incident is open
    get_metrics().reset_clock()  # as in a process of its own: earlier tests' streams were of other times
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}})
    lag_all = _value("sentinel_event_lag_seconds_count")
    lag_hour = _value("sentinel_event_lag_seconds_bucket", {"le": "3600.0"})
    close_all = _value("sentinel_window_close_lag_seconds_count")
    close_5m = _value("sentinel_window_close_lag_seconds_bucket", {"le": "300.0"})
    open_before = _value("sentinel_incidents_open", {"service": "lagsvc"})
    warming_before = _value("sentinel_keys_warming", {"kind": "model"})
    alerts = []
    run_main(build_flow(cfg, source=TestingSource(batches(events, size=300)), alert_sinks=[TestingSink(alerts)],
                        dead_letter_sink=TestingSink([])))
    assert [a for a in alerts if a["type"] == "latency" and a["status"] == "firing"], alerts

    n = _value("sentinel_event_lag_seconds_count") - lag_all
    assert n >= len(events) // 300
    assert _value("sentinel_event_lag_seconds_bucket", {"le": "3600.0"}) - lag_hour == n  # none beyond an hour
    closed = _value("sentinel_window_close_lag_seconds_count") - close_all
    assert closed >= 74
    assert _value("sentinel_window_close_lag_seconds_bucket", {"le": "300.0"}) - close_5m == closed
    assert 0 <= _value("sentinel_watermark_delay_seconds") <= 300
    assert _value("sentinel_incidents_open", {"service": "lagsvc"}) - open_before == 1
    # 75 windows: the key is past its 30 windows of warm-up.
    assert _value("sentinel_keys_warming", {"kind": "model"}) == warming_before
    assert _value("sentinel_anomalies_total", {"type": "latency", "severity": alerts[0]["severity"],
                                               "service": "lagsvc"}) >= 1


def test_a_new_key_counts_as_warming_until_its_warm_up_is_over():
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}})
    before = _value("sentinel_keys_warming", {"kind": "model"})
    run_main(build_flow(cfg, source=TestingSource(batches(steady(10, service="young"), size=300)),
                        alert_sinks=[TestingSink([])], dead_letter_sink=TestingSink([])))
    assert _value("sentinel_keys_warming", {"kind": "model"}) == before + 1
