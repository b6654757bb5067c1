"""The alertmanager sink: alerts to a Prometheus Alertmanager (``POST /api/v2/alerts``).

Each alert becomes an Alertmanager alert with the labels ``alertname``
(``LLMSentinel``), ``incident_id``, ``service``, ``model``, ``type``,
``severity`` (and ``subject`` when there is one), the annotations
``summary``, ``evidence`` (JSON), ``root_cause_hints`` (JSON) and
``alert_id``, and ``startsAt`` (the incident's event time). A firing,
updated or escalated alert is sent with ``endsAt`` = now + ``firing_ttl``
(Sentinel pages a still-firing incident again after ``repeat_interval``, so
the TTL should be longer than it); a resolved one with ``endsAt`` = its
``detected_at``: Alertmanager resolves it.

When an incident's labels change (an escalation raises its severity, a new
headline changes its type), the alert under the old labels is resolved in
the same request, so Alertmanager never holds two alerts for one incident.
The writer remembers the labels of the incidents it has sent (the last
10,000); after a restart an old label set runs out at its ``endsAt``.

Delivery is spooled and retried like the other sinks (:class:`sinks.webhook.HttpWriter`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import orjson

from sentinel.core.times import iso
from sinks.base import Alert, alert_body
from sinks.webhook import HttpWriter, decode_record, encode_record
from sinks.spooled import Progress

ALERTNAME = "LLMSentinel"
_REMEMBER = 10_000


def labels_of(alert: Alert) -> Dict[str, str]:
    from sentinel.store import incident_id_of

    labels = {"alertname": ALERTNAME, "incident_id": incident_id_of(alert)}
    for k in ("service", "model", "type", "severity", "subject"):
        v = getattr(alert, k)
        if v is not None and v != "":
            labels[k] = str(v)
    return labels


def to_alertmanager(alert: Alert, firing_ttl: float, generator_url: Optional[str] = None,
                    now: Optional[float] = None) -> Dict[str, Any]:
    now = time.time() if now is None else now
    out: Dict[str, Any] = {
        "labels": labels_of(alert),
        "annotations": {
            "summary": str(alert.summary or ""),
            "evidence": orjson.dumps(alert.evidence or {}, option=orjson.OPT_SORT_KEYS).decode(),
            "root_cause_hints": orjson.dumps(alert.root_cause_hints or []).decode(),
            "alert_id": str(alert.alert_id),
        },
    }
    if alert.event_time:
        out["startsAt"] = alert.event_time
    if alert.status == "resolved":
        out["endsAt"] = alert.detected_at or iso(now)
    else:
        out["endsAt"] = iso(now + firing_ttl)
    if generator_url:
        out["generatorURL"] = generator_url
    return out


class AlertmanagerWriter(HttpWriter):
    kind = "alertmanager"

    def __init__(self, url: str, firing_ttl: float = 5 * 3600.0, generator_url: Optional[str] = None,
                 timeout: float = 10.0, **spool) -> None:
        self.firing_ttl = firing_ttl
        self.generator_url = generator_url
        self._labels: "OrderedDict[str, Dict[str, str]]" = OrderedDict()
        super().__init__(url.rstrip("/"), timeout, **spool)
        self.endpoint = self.url + "/api/v2/alerts"

    def _record(self, alert: Alert, payload: bytes) -> bytes:
        return encode_record(alert, payload)

    def _deliver(self, batch: List[Tuple[int, bytes]], progress: Progress) -> None:
        if self._past_drain_deadline():
            return
        now = time.time()
        seen: Dict[str, Dict[str, str]] = {}  # labels as of this batch; kept only once Alertmanager took it
        groups = []  # per spool record: (seq, ingested, alertmanager alerts, incident_id, labels, resolved)
        for seq, record in batch:
            ingested, _, payload = decode_record(record)
            alert = Alert.from_json(alert_body(orjson.loads(payload)))
            am = to_alertmanager(alert, self.firing_ttl, self.generator_url, now)
            iid = am["labels"]["incident_id"]
            sent = [am]
            old = seen.get(iid, self._labels.get(iid))
            if old is not None and old != am["labels"]:
                stale = {"labels": old, "annotations": am["annotations"], "endsAt": iso(now)}
                if "startsAt" in am:
                    stale["startsAt"] = am["startsAt"]
                sent.insert(0, stale)
            seen[iid] = am["labels"]
            groups.append((seq, ingested, sent, iid, am["labels"], alert.status == "resolved"))
        all_taken = self._post(self.endpoint, orjson.dumps([a for g in groups for a in g[2]]), {})
        for seq, ingested, sent, iid, labels, resolved in groups:
            # One bad alert refuses the whole request: then each is sent on its own.
            if all_taken or (len(groups) > 1 and self._post(self.endpoint, orjson.dumps(sent), {})):
                if resolved:
                    self._labels.pop(iid, None)
                else:
                    self._labels[iid] = labels
                    self._labels.move_to_end(iid)
                progress.confirm(seq, ingested)
            else:
                progress.skip(seq)
        while len(self._labels) > _REMEMBER:
            self._labels.popitem(last=False)
