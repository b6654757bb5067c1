"""The operator's metrics: service and model label caps, open incidents, event-time lags of a replay, warm-up, no _created."""

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
        m.anomaly("latency", "high", svc, "m1")
    r = m.registry
    got = {svc: r.get_sample_value("sentinel_anomalies_total", {"type": "latency", "severity": "high", "service": svc,
                                                               "model": "m1"})
           for svc in ("a", "b", "other", "none", "c")}
    assert got == {"a": 2.0, "b": 1.0, "other": 3.0, "none": None, "c": None}
    text = generate_latest(r).decode()
    assert "_created" not in text
    assert 'sentinel_build_info{bytewax="' in text


def test_the_model_label_is_capped_on_its_own_with_other_and_none():
    m = Metrics(CollectorRegistry())
    m.configure(max_service_labels=50, max_model_labels=2)
    for svc, model in (("a", "gpt-4o"), ("b", "claude"), ("a", "llama"), ("b", "gpt-4o"), ("a", None),
                       ("c", "mistral"), ("a", "gpt-4o")):
        m.anomaly("latency", "high", svc, model)
    m.anomaly("policy_violation", "medium", "a")  # an alert that names no model

    def n(svc, model, type_="latency", severity="high"):
        return m.registry.get_sample_value("sentinel_anomalies_total", {"type": type_, "severity": severity,
                                                                        "service": svc, "model": model})

    # The first two models seen keep their name, whichever service; later ones are 'other', and so is 'none'
    # (no model) once the cap is full.
    assert (n("a", "gpt-4o"), n("b", "claude"), n("b", "gpt-4o")) == (2.0, 1.0, 1.0)
    assert (n("a", "other"), n("c", "other"), n("a", "llama"), n("c", "mistral")) == (2.0, 1.0, None, None)
    assert n("a", "other", "policy_violation", "medium") == 1
    models = {s.labels["model"] for fam in m.registry.collect() if fam.name == "sentinel_anomalies"
              for s in fam.samples}
    assert models == {"gpt-4o", "claude", "other"}

    fresh = Metrics(CollectorRegistry())
    fresh.configure(max_model_labels=2)
    fresh.anomaly("policy_violation", "medium", "a")  # an alert that names no model
    fresh.anomaly("latency", "high", "a", "")
    assert fresh.registry.get_sample_value("sentinel_anomalies_total", {
        "type": "policy_violation", "severity": "medium", "service": "a", "model": "none"}) == 1
    assert fresh.registry.get_sample_value("sentinel_anomalies_total", {
        "type": "latency", "severity": "high", "service": "a", "model": "none"}) == 1


def test_the_model_label_cap_comes_from_the_config():
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}})
    assert (cfg.metrics.max_service_labels, cfg.metrics.max_model_labels) == (50, 50)
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"max_model_labels": 3}})
    assert cfg.metrics.max_model_labels == 3


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
    assert [a for a in alerts if a.type == "latency" and a.status == "firing"], alerts

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
    first = [a for a in alerts if a.type == "latency" and a.status == "firing"][0]
    assert _value("sentinel_anomalies_total", {"type": "latency", "severity": first.severity,
                                               "service": "lagsvc",
                                               "model": get_metrics().models(first.model)}) >= 1


def test_a_new_key_counts_as_warming_until_its_warm_up_is_over():
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}})
    before = _value("sentinel_keys_warming", {"kind": "model"})
    run_main(build_flow(cfg, source=TestingSource(batches(steady(10, service="young"), size=300)),
                        alert_sinks=[TestingSink([])], dead_letter_sink=TestingSink([])))
    assert _value("sentinel_keys_warming", {"kind": "model"}) == before + 1
