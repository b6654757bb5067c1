"""Shared plumbing for alert sinks.

A destination implements :class:`Writer` (``write(alerts, payloads)`` then
``close()``); :class:`AlertSink` turns it into a Bytewax sink that encodes each
alert once, counts what was published and observes the detection latency.
``write`` returns only once the destination has accepted the batch (publisher
confirms, producer flush, fsync-free file write): a batch that cannot be
delivered is retried inside ``write`` and so turns into backpressure, never
into a silent drop.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from sentinel.metrics import get_metrics

Alert = Dict[str, Any]

INGESTED_AT = "_ingested_at"


def public(alert: Alert) -> Alert:
    """The alert as it leaves the flow: internal ``_`` fields removed."""
    return {k: v for k, v in alert.items() if not k.startswith("_")}


def encode_alert(alert: Alert) -> bytes:
    return orjson.dumps(public(alert))


class Writer:
    """One destination's connection, owned by one worker."""

    kind = "base"

    def write(self, alerts: List[Alert], payloads: List[bytes]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class _AlertPartition(StatelessSinkPartition[Alert]):
    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        m = get_metrics()
        self._published = m.alerts_published.labels(sink=writer.kind)
        self._latency = m.detection_latency

    def write_batch(self, items: List[Alert]) -> None:
        if not items:
            return
        payloads = [encode_alert(a) for a in items]
        self._writer.write(items, payloads)
        now = time.time()
        self._published.inc(len(items))
        for a in items:
            ingested = a.get(INGESTED_AT)
            if ingested is not None:
                self._latency.observe(max(0.0, now - ingested))

    def close(self) -> None:
        self._writer.close()


class AlertSink(DynamicSink[Alert]):
    """A Bytewax sink around a :class:`Writer` factory (one writer per worker)."""

    def __init__(self, make_writer: Callable[[int, int], Writer]) -> None:
        self._make_writer = make_writer

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _AlertPartition:
        return _AlertPartition(self._make_writer(worker_index, worker_count))
