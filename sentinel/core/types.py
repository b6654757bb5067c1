"""The shared types: an alert and its severity, and one key's group of a parsed batch.

An :class:`Alert` is a typed record from where a detector finding becomes an
alert (:mod:`operators.alerts`) to the sinks, which alone turn it into the
SPEC section 2 JSON object (:meth:`Alert.to_json`, the fields in the SPEC's
order); readers of that JSON (the incident store, the control topic, tests)
go back with :meth:`Alert.from_json`.

>>> a = Alert(alert_id="a1", fingerprint="fp", type="latency", severity="high", service="chat",
...           model="m", subject=None, metric="latency_p95_ms", observed=900.0, expected=300.0,
...           score=0.99, detector="robust", event_time="2026-01-01T00:00:00Z",
...           detected_at="2026-01-01T00:01:00Z", summary="Slow.", ingested_at=12.5)
>>> a.severity is Severity.high, a.severity == "high", a.severity.rank
(True, True, 3)
>>> list(a.to_json())[:4], a.to_json()["severity"], "ingested_at" in a.to_json()
(['alert_id', 'fingerprint', 'type', 'severity'], 'high', False)
>>> Alert.from_json(a.to_json()) == a.copy(ingested_at=None)
True
>>> max(["low", "critical", "medium"], key=Severity.rank_of)
'critical'
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Union

from sentinel.core.times import to_epoch


class Severity(enum.StrEnum):
    """SPEC section 2's severities, least severe first. A member is its name as a string
    (``Severity.high == "high"``, same hash), so plain strings and members mix in sets and dicts."""

    info = "info"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"

    @property
    def rank(self) -> int:
        """0 (info) to 4 (critical)."""
        return SEVERITY_RANK[self]

    @classmethod
    def rank_of(cls, value: Optional[str]) -> int:
        """The rank of a severity given as a string; 0 for one that is none (``None``, unknown)."""
        return SEVERITY_RANK.get(value, 0)  # type: ignore[arg-type]


SEVERITIES = tuple(Severity)
SEVERITY_RANK: Dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
# The RabbitMQ queues of SPEC section 2: incidents.high-priority gets these, incidents.low-priority the rest.
HIGH_SEVERITIES = (Severity.high, Severity.critical)
LOW_SEVERITIES = tuple(s for s in SEVERITIES if s not in HIGH_SEVERITIES)

STATUSES = ("firing", "updated", "escalated", "resolved")

# The SPEC section 2 fields, in the order an alert's JSON object lists them.
ALERT_FIELDS = ("alert_id", "fingerprint", "type", "severity", "service", "model", "subject", "metric",
                "observed", "expected", "score", "detector", "event_time", "detected_at", "summary",
                "evidence", "root_cause_hints", "similar_incidents", "status")
# The ingest time's key in alert objects of older snapshots (the alert was a dict then).
_OLD_INGESTED_AT = "_ingested_at"


@dataclass
class Alert:
    """One alert message (SPEC section 2), plus the ingest time of the telemetry that raised it.

    ``event_time`` and ``detected_at`` are RFC 3339 strings as published (see
    :mod:`sentinel.core.times`); :attr:`event_ts` and :attr:`fired_ts` read them as epoch seconds.
    ``ingested_at`` (wall-clock epoch seconds, or None) stays inside the flow: it is the start of the
    detection latency the sinks observe and is not part of the JSON.
    """

    alert_id: str
    fingerprint: str
    type: str
    severity: Severity
    service: Optional[str]
    model: Optional[str]
    subject: Optional[str]
    metric: str
    observed: float
    expected: float
    score: float
    detector: str
    event_time: str
    detected_at: str
    summary: str
    evidence: Dict[str, Any] = field(default_factory=dict)
    root_cause_hints: List[str] = field(default_factory=list)
    similar_incidents: List[Any] = field(default_factory=list)
    status: str = "firing"
    ingested_at: Optional[float] = None

    def __post_init__(self) -> None:
        if type(self.severity) is not Severity:
            self.severity = Severity(self.severity)

    @property
    def event_ts(self) -> float:
        """``event_time`` in epoch seconds."""
        return to_epoch(self.event_time)

    @property
    def fired_ts(self) -> float:
        """Event time at which the alert could first be raised: a resolve's ``evidence.fired_event_time``,
        else ``event_time``."""
        return to_epoch((self.evidence or {}).get("fired_event_time") or self.event_time)

    def copy(self, **changes: Any) -> "Alert":
        """A shallow copy with ``changes`` (``evidence`` and the lists are shared unless replaced)."""
        return replace(self, **changes)

    def to_json(self) -> Dict[str, Any]:
        """The SPEC section 2 object, the fields in the SPEC's order (ready for ``orjson.dumps``)."""
        return {
            "alert_id": self.alert_id,
            "fingerprint": self.fingerprint,
            "type": self.type,
            "severity": self.severity.value,
            "service": self.service,
            "model": self.model,
            "subject": self.subject,
            "metric": self.metric,
            "observed": self.observed,
            "expected": self.expected,
            "score": self.score,
            "detector": self.detector,
            "event_time": self.event_time,
            "detected_at": self.detected_at,
            "summary": self.summary,
            "evidence": self.evidence,
            "root_cause_hints": self.root_cause_hints,
            "similar_incidents": self.similar_incidents,
            "status": self.status,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Alert":
        """An alert from its SPEC section 2 object (or an older snapshot's dict, ``_ingested_at`` included).

        Fields the object lacks are empty (None, ``{}``, ``[]``; status ``firing``); ``KeyError`` when it has
        no ``alert_id``, ``ValueError`` when its severity is not one of :class:`Severity`."""
        ingested = obj.get(_OLD_INGESTED_AT, obj.get("ingested_at"))
        return cls(
            alert_id=obj["alert_id"],
            fingerprint=obj.get("fingerprint"),
            type=obj.get("type"),
            severity=Severity(obj.get("severity") or "info"),
            service=obj.get("service"),
            model=obj.get("model"),
            subject=obj.get("subject"),
            metric=obj.get("metric"),
            observed=obj.get("observed"),
            expected=obj.get("expected"),
            score=obj.get("score"),
            detector=obj.get("detector"),
            event_time=obj.get("event_time"),
            detected_at=obj.get("detected_at"),
            summary=obj.get("summary"),
            evidence=obj.get("evidence") or {},
            root_cause_hints=list(obj.get("root_cause_hints") or []),
            similar_incidents=list(obj.get("similar_incidents") or []),
            status=obj.get("status") or "firing",
            ingested_at=ingested,
        )

    @classmethod
    def of(cls, value: Union["Alert", Mapping[str, Any]]) -> "Alert":
        """``value`` itself when it is an Alert, else :meth:`from_json` of it (a JSON object read back,
        an alert kept as a dict by an older snapshot)."""
        return value if isinstance(value, Alert) else cls.from_json(value)


assert tuple(f.name for f in fields(Alert))[:len(ALERT_FIELDS)] == ALERT_FIELDS


class KeyGroup(NamedTuple):
    """One key's part of a parsed source batch: what the keyed steps (windows, actors, attacks, budgets,
    forecast) get, keyed by ``key``. A tuple, so ``key, partition, events, ingested_at, partitions = group``."""

    key: str  # service/model key, service, or security source
    partition: str  # the source partition the batch came from
    events: Any  # the key's events: a :class:`sentinel.events.Requests`, or a list of security events
    ingested_at: float  # wall clock (epoch seconds) when the batch was read
    partitions: int  # how many partitions the source had then
