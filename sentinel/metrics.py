"""Prometheus metrics of SPEC section 5, in one place.

Every metric is created on a registry handed in, so tests use a fresh
``CollectorRegistry()``; the process-wide instance is :func:`get_metrics`.
Label values are bounded: reasons, outcomes, types, severities and sink kinds
come from fixed vocabularies, never from event content. The two labels taken
from the data are capped (:class:`LabelCap`), each on its own: the first
``metrics.max_service_labels`` services and the first
``metrics.max_model_labels`` models seen keep their name, any later one is
counted as ``other`` (``none`` for an alert without one).

Event-time lags (``sentinel_event_lag_seconds``,
``sentinel_window_close_lag_seconds``, ``sentinel_watermark_delay_seconds``)
are measured against the stream's clock (:class:`StreamClock`): the newest
event time seen, advanced by the wall time since it was seen. Live, that is
the wall clock; in a replay, it is the replay's own "now", so a day replayed
in seconds has lags of seconds to minutes, not of days.

``_created`` series are turned off.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from typing import Dict, List, Optional, Set

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_LAG_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0, 7 * 86400.0)
# A window closes once the stream's clock is a window plus the allowed lateness past its start:
# a minute or two for the default one-minute windows, up to hours for long windows or a backlog.
# Live, it is the allowed lateness plus the wait for the key's next batch: 2 s tells a live
# flow that keeps up from one that does not.
_CLOSE_LAG_BUCKETS = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
                      3 * 3600.0, 6 * 3600.0, 24 * 3600.0)

OTHER = "other"
DEFAULT_MAX_SERVICE_LABELS = 50
DEFAULT_MAX_MODEL_LABELS = 50

prometheus_client.disable_created_metrics()


class LabelCap:
    """Bounds a label's values: the first ``limit`` distinct values keep their name, later ones are ``other``.

    >>> cap = LabelCap(2)
    >>> [cap("a"), cap("b"), cap("c"), cap("a")]
    ['a', 'b', 'other', 'a']
    """

    def __init__(self, limit: int = DEFAULT_MAX_SERVICE_LABELS) -> None:
        self.limit = limit
        self._seen: Set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: Optional[str]) -> str:
        v = value if value else "none"
        if v in self._seen:
            return v
        with self._lock:
            if v in self._seen:
                return v
            if len(self._seen) < self.limit:
                self._seen.add(v)
                return v
        return OTHER


class StreamClock:
    """The stream's clock: the newest event time seen, advanced by the wall time since it was seen.

    Live, events arrive about when they happen and this is the wall clock; in
    a replay it is the replay's own present, so lags measured against it are
    those an operator would have seen living through the data.
    """

    def __init__(self) -> None:
        self.first = 0.0  # the oldest event time seen (of the batches' first events)
        self.newest = 0.0  # newest event time seen (epoch seconds), 0 before any
        self._seen_at = 0.0  # wall clock when it was seen
        self._lock = threading.Lock()

    def see(self, event_time: float, wall: Optional[float] = None, first: Optional[float] = None) -> None:
        if first is not None and (first < self.first or not self.first):
            self.first = first
        if event_time > self.newest:
            with self._lock:
                if event_time > self.newest:
                    if not self.first:
                        self.first = event_time
                    self.newest = event_time
                    self._seen_at = time.time() if wall is None else wall

    def now(self, wall: Optional[float] = None) -> float:
        if not self.newest:
            return time.time() if wall is None else wall
        w = time.time() if wall is None else wall
        return self.newest + max(0.0, w - self._seen_at)

    def behind(self, event_time: float, wall: Optional[float] = None) -> float:
        """How far ``event_time`` is behind the stream's clock, in seconds (>= 0)."""
        return max(0.0, self.now(wall) - event_time)


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
        self.services = LabelCap(DEFAULT_MAX_SERVICE_LABELS)
        self.models = LabelCap(DEFAULT_MAX_MODEL_LABELS)
        self.anomalies = Counter(
            "sentinel_anomalies", "Alerts raised by the detectors (firing), by type, severity, service and model "
            "(capped: services beyond metrics.max_service_labels and models beyond metrics.max_model_labels are "
            "'other'; 'none' for no service or no model).",
            ["type", "severity", "service", "model"], registry=r,
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
            "sentinel_event_lag_seconds", "Processing time minus event time, observed per batch and key: the "
            "stream's clock (newest event time seen, advanced by the wall time since) minus the batch's newest "
            "event time.",
            buckets=_LAG_BUCKETS, registry=r,
        )
        self.clock = StreamClock()
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
        self.incidents_open = Gauge(
            "sentinel_incidents_open", "Incidents open (paged or held, not resolved), by service (capped as "
            "sentinel_anomalies_total's).", ["service"], registry=r,
        )
        self.kafka_consumer_lag = Gauge(
            "sentinel_kafka_consumer_lag", "Messages behind on a source partition: the high watermark the consumer "
            "last saw, less one, less the last offset it consumed (0 when caught up).", ["topic", "partition"],
            registry=r,
        )
        self.watermark_delay = Gauge(
            "sentinel_watermark_delay_seconds", "Newest event time seen minus the end of the newest window closed "
            "(how far event time runs ahead of what is scored).", registry=r,
        )
        self.window_close_lag = Histogram(
            "sentinel_window_close_lag_seconds", "Event-time lag of a window's close: the stream's clock when it "
            "closed minus the window's end.", buckets=_CLOSE_LAG_BUCKETS, registry=r,
        )
        self.keys_warming = Gauge(
            "sentinel_keys_warming", "Keys in memory whose baselines are still warming up (not yet alerting), by "
            "kind; the others of sentinel_keys_active are warm.", ["kind"], registry=r,
        )
        self.build_info = Gauge(
            "sentinel_build_info", "Always 1; the labels say which build runs.", ["version", "python", "bytewax"],
            registry=r,
        )
        self.ready = Gauge(
            "sentinel_ready", "1 once the flow reads (source assigned and reading, sinks built), else 0 (as /readyz).",
            registry=r,
        )
        self.last_event_timestamp = Gauge(
            "sentinel_last_event_timestamp_seconds", "Wall clock (epoch seconds) when the source last read a "
            "record: time() minus this is how long no event came in.", registry=r,
        )
        self.build_info.labels(**build_labels()).set(1)

    def configure(self, max_service_labels: int = DEFAULT_MAX_SERVICE_LABELS,
                  max_model_labels: int = DEFAULT_MAX_MODEL_LABELS) -> None:
        """Apply the flow's ``metrics`` settings (the service and model label caps)."""
        self.services.limit = max_service_labels
        self.models.limit = max_model_labels

    def reset_clock(self) -> None:
        """A new stream: the stream's clock starts again from the first event time seen."""
        self.clock = StreamClock()

    def anomaly(self, type_: str, severity: str, service: Optional[str], model: Optional[str] = None) -> None:
        """Count one firing alert of ``service`` and ``model`` (None when the alert names no model)."""
        self.anomalies.labels(type=type_, severity=severity, service=self.services(service),
                              model=self.models(model)).inc()

    def event_batch(self, newest: float, first: Optional[float] = None) -> None:
        """A key's batch whose newest event time is ``newest`` (and first ``first``) was processed."""
        c = self.clock
        c.see(newest, first=first)
        self.event_lag.observe(c.behind(newest))

    def windows_closed_at(self, ends: List[float]) -> None:
        """Windows ending at ``ends`` (event time, oldest first) were closed and scored."""
        c = self.clock
        now = c.now()
        for end in ends:
            self.window_close_lag.observe(max(0.0, now - end))
        self.watermark_delay.set(max(0.0, c.newest - ends[-1]))


def build_labels() -> Dict[str, str]:
    """``sentinel_build_info``'s labels: Sentinel's, Python's and Bytewax's versions."""
    from importlib.metadata import PackageNotFoundError, version

    from sentinel import __version__

    try:
        bw = version("bytewax")
    except PackageNotFoundError:
        bw = "unknown"
    return {"version": __version__, "python": platform.python_version(), "bytewax": bw}


_lock = threading.Lock()
_metrics: Optional[Metrics] = None


def get_metrics() -> Metrics:
    """The process-wide metrics (on prometheus_client's default registry)."""
    global _metrics
    with _lock:
        if _metrics is None:
            from prometheus_client import REGISTRY

            _metrics = Metrics(REGISTRY)
        return _metrics

