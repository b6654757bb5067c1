"""Shared plumbing for alert sinks.

A destination implements :class:`Writer` (``write(alerts, payloads)``, then
``flush(timeout)`` / ``close()``); :class:`AlertSink` turns it into a Bytewax
sink that encodes each alert once, counts what was published and observes the
detection latency. ``write`` returns once the destination has accepted the
batch: a broker's confirmation (Kafka), a file write (jsonl, stdout), or a
durable append to an on-disk spool whose sender thread delivers it later
(RabbitMQ, see :mod:`sinks.spool`). A batch is never dropped silently: it is
retried, spooled, or turned into backpressure.

Alerts arrive as :class:`sentinel.core.types.Alert` (a SPEC section 2 JSON
object, e.g. read back from a file, is taken too); this is where they become
JSON, once per sink: masked first when the flow masks personal data, and the
writer gets the alerts as published (masked) with their payload bytes.

Payloads: with ``envelope="cloudevents"`` (the default of every alert sink
kind) each alert is wrapped in a CloudEvents 1.0 structured-mode envelope and
the SPEC section 2 alert object is its ``data``::

    {"specversion": "1.0", "id": <alert_id>, "source": "llm-sentinel/<flow name>",
     "type": "dev.llmsentinel.alert.<type>", "time": <detected_at>,
     "subject": "<service>/<model>" (or the actor, or the service),
     "datacontenttype": "application/json", "data": {...the alert...}}

``envelope="none"`` writes the bare alert object. :func:`alert_body` reads
either form back.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from sentinel.core.types import Alert
from sentinel.metrics import get_metrics

AlertLike = Union[Alert, Mapping[str, Any]]


def public(alert: AlertLike) -> Dict[str, Any]:
    """The alert as it leaves the flow: its SPEC section 2 JSON object (of a JSON object: internal ``_``
    fields removed)."""
    if isinstance(alert, Alert):
        return alert.to_json()
    return {k: v for k, v in alert.items() if not k.startswith("_")}


ENVELOPES = ("cloudevents", "none")
CLOUDEVENTS_TYPE_PREFIX = "dev.llmsentinel.alert."


def cloudevent(alert: AlertLike, source: str = "llm-sentinel/sentinel") -> Dict[str, Any]:
    """The alert in a CloudEvents 1.0 structured envelope (the alert is ``data``)."""
    body = public(alert)
    service, model, actor = body.get("service"), body.get("model"), body.get("subject")
    if service and model:
        subject = "%s/%s" % (service, model)
    else:
        subject = actor or service
    event: Dict[str, Any] = {
        "specversion": "1.0",
        "id": str(body.get("alert_id")),
        "source": source,
        "type": CLOUDEVENTS_TYPE_PREFIX + str(body.get("type") or "unknown"),
        "time": body.get("detected_at"),
        "datacontenttype": "application/json",
    }
    if subject:
        event["subject"] = str(subject)
    if event["time"] is None:
        del event["time"]  # optional in CloudEvents; never null
    event["data"] = body
    return event


def encode_alert(alert: AlertLike, envelope: str = "none", source: str = "llm-sentinel/sentinel") -> bytes:
    """The bytes a sink publishes: the bare alert (``none``) or its CloudEvents envelope."""
    if envelope == "cloudevents":
        return orjson.dumps(cloudevent(alert, source))
    if envelope == "none":
        return orjson.dumps(public(alert))
    raise ValueError("envelope must be one of %s, got %r" % (", ".join(ENVELOPES), envelope))


def alert_body(obj: Dict[str, Any]) -> Dict[str, Any]:
    """The SPEC alert object from a published payload: unwraps a CloudEvents envelope."""
    if isinstance(obj, dict) and "specversion" in obj and isinstance(obj.get("data"), dict):
        return obj["data"]
    return obj


def event_source(flow_name: Optional[str]) -> str:
    return "llm-sentinel/%s" % (flow_name or "sentinel")


class Writer:
    """One destination's connection, owned by one worker."""

    kind = "base"
    # True for writers that deliver in the background (e.g. from a spool):
    # they count sentinel_alerts_published_total and the detection latency
    # themselves, when the destination confirms.
    async_delivery = False

    def write(self, alerts: List[Alert], payloads: List[bytes]) -> None:  # pragma: no cover - interface
        """Take ``alerts`` (as published; a writer also takes their SPEC JSON objects, see
        :meth:`Alert.of <sentinel.core.types.Alert.of>`) with their encoded ``payloads``."""
        raise NotImplementedError

    def flush(self, timeout: Optional[float] = None) -> None:
        """Return once everything written so far is delivered (no-op for synchronous writers)."""

    def close(self) -> None:
        pass


class _AlertPartition(StatelessSinkPartition[Alert]):
    def __init__(self, writer: Writer, envelope: str, source: str, masker: Any = None) -> None:
        self._writer = writer
        self._masker = masker
        self._envelope = envelope
        self._source = source
        m = get_metrics()
        self._published = m.alerts_published.labels(sink=writer.kind)
        self._latency = m.detection_latency

    def write_batch(self, items: List[Alert]) -> None:
        if not items:
            return
        envelope, source = self._envelope, self._source
        items = [Alert.of(a) for a in items]
        if self._masker is not None:  # personal data and secrets never leave (sentinel/pii.py)
            items = [Alert.from_json(self._masker.alert(a.to_json())).copy(ingested_at=a.ingested_at)
                     for a in items]
        payloads = [encode_alert(a, envelope, source) for a in items]
        self._writer.write(items, payloads)
        if self._writer.async_delivery:
            return
        now = time.time()
        self._published.inc(len(items))
        for a in items:
            ingested = a.ingested_at
            if ingested is not None:
                self._latency.observe(max(0.0, now - ingested))

    def close(self) -> None:
        self._writer.close()


class AlertSink(DynamicSink[Alert]):
    """A Bytewax sink around a :class:`Writer` factory.

    ``make_writer(worker_index, worker_count)`` is called once per worker, so a
    writer can keep per-worker resources (e.g. its own spool directory).
    With a ``masker`` (:class:`sentinel.pii.Masker`) every alert is masked
    before it is encoded and written.
    """

    def __init__(self, make_writer: Callable[[int, int], Writer], envelope: str = "cloudevents",
                 source: str = "llm-sentinel/sentinel", masker: Any = None) -> None:
        if envelope not in ENVELOPES:
            raise ValueError("envelope must be one of %s, got %r" % (", ".join(ENVELOPES), envelope))
        self._make_writer = make_writer
        self.envelope = envelope
        self.source = source
        self.masker = masker

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _AlertPartition:
        from sentinel import shutdown

        shutdown.mark_started()  # built once the cluster is up: a signal now stops the flow gracefully
        return _AlertPartition(self._make_writer(worker_index, worker_count), self.envelope, self.source,
                               self.masker)
