"""Prometheus metrics of SPEC section 5, in one place.

Every metric is created on a registry handed in, so tests use a fresh
``CollectorRegistry()``; the process-wide instance is :func:`get_metrics`.
Label values are bounded: reasons, outcomes, types, severities and sink kinds
come from fixed vocabularies, never from event content.
"""

from __future__ import annotations

import logging
import threading
from typing import Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_LAG_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0, 7 * 86400.0)


class Metrics:
    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "sentinel_events", "Input records by outcome (ok, security, dead_letter, ignored, late, duplicate); each record ends in one.",
            ["outcome"], registry=r,
        )
        self.dead_letters = Counter(
            "sentinel_dead_letters", "Records sent to the dead-letter sink, by reason.", ["reason"], registry=r
        )
        self.anomalies = Counter(
            "sentinel_anomalies", "Alerts raised by the detectors.", ["type", "severity"], registry=r
        )
        self.alerts_published = Counter(
            "sentinel_alerts_published", "Alerts written and confirmed by a sink.", ["sink"], registry=r
        )
        self.alerts_suppressed = Counter(
            "sentinel_alerts_suppressed", "Alerts not published, by reason.", ["reason"], registry=r
        )
        self.spool_pending = Gauge(
            "sentinel_spool_pending", "Alerts in a sink's on-disk spool, not yet confirmed by the destination.",
            ["sink"], registry=r,
        )
        self.sink_errors = Counter(
            "sentinel_sink_errors", "Failed delivery attempts (retried) and failed incident-memory lookups, by sink.",
            ["sink"], registry=r,
        )
        self.detection_latency = Histogram(
            "sentinel_detection_latency_seconds", "Wall time from ingest of the closing event to alert published.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.event_lag = Histogram(
            "sentinel_event_lag_seconds", "Processing time minus event time, observed per batch and key.",
            buckets=_LAG_BUCKETS, registry=r,
        )
        self.keys_active = Gauge(
            "sentinel_keys_active", "Per-key detector states held in memory.", ["kind"], registry=r
        )
        self.windows_closed = Counter(
            "sentinel_windows_closed", "Event-time windows closed and scored.", registry=r
        )
        self.events_folded = Counter(
            "sentinel_events_folded", "Events of a key beyond a key cap, folded into the overflow key, by the cap "
            "(service, model, source).", ["kind"], registry=r,
        )
        self.control_refused = Counter(
            "sentinel_control_refused", "Control and feedback messages (and unsigned alerts read back) refused, by topic "
            "(control, feedback, alerts) and reason.", ["topic", "reason"], registry=r,
        )
        self.step_errors = Counter(
            "sentinel_step_errors", "Batches that raised inside a stateful step, dead-lettered, by step.",
            ["step"], registry=r,
        )


_lock = threading.Lock()
_metrics: Optional[Metrics] = None
_server_port: Optional[int] = None


def get_metrics() -> Metrics:
    """The process-wide metrics (on prometheus_client's default registry)."""
    global _metrics
    with _lock:
        if _metrics is None:
            from prometheus_client import REGISTRY

            _metrics = Metrics(REGISTRY)
        return _metrics


def serve(port: int, host: str = "127.0.0.1") -> Optional[int]:
    """Start the /metrics endpoint once per process; port 0 turns it off."""
    global _server_port
    if not port:
        return None
    m = get_metrics()
    with _lock:
        if _server_port is not None:
            return _server_port
        start_http_server(port, addr=host, registry=m.registry)
        _server_port = port
    log.info("metrics on http://%s:%d/metrics", host, port)
    return port
