"""Where an alert is born: a detector finding becomes a typed :class:`~sentinel.core.types.Alert`
(the SPEC section 2 alert; the sinks write its JSON)."""

from __future__ import annotations

import hashlib
import time
from typing import Any, Dict, List, Optional

from sentinel.core.times import iso
from sentinel.core.types import Alert, Severity

METRIC_UNITS = {
    "latency_p95_ms": "p95 latency",
    "ttft_p95_ms": "p95 time to first token",
    "output_tokens_mean": "mean output tokens per request",
    "input_tokens_mean": "mean input tokens per request",
    "cost_per_request_usd": "mean cost per request",
    "cost_per_million_tokens_usd": "cost per million tokens",
    "latency_per_output_token_ms": "time per output token",
    "request_count": "requests per window",
    "error_rate": "error rate",
    "tokens_per_window": "tokens per window",
    "tokens_per_horizon": "an actor's tokens over its horizon",
    "security_events": "security events",
    "feature_vector": "combined rarity of the window's metrics",
    "latency_p50_ms": "median latency",
    "latency_gmean_ms": "typical latency (geometric mean)",
    "ttft_gmean_ms": "typical time to first token (geometric mean)",
}


def fingerprint(type_: str, service: Optional[str], model: Optional[str], subject: Optional[str]) -> str:
    """Same value for every alert about one ongoing anomaly (key and type)."""
    raw = f"{type_}|{service or ''}|{model or ''}|{subject or ''}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def alert_id(fp: str, episode_start: float, status: str = "firing", severity: str = "") -> str:
    """Stable under redelivery and replay: the fingerprint, the episode's start in event time,
    and for later messages of the episode its status (and the severity it escalated to)."""
    tail = "" if status == "firing" else f"|{status}|{severity}"
    return hashlib.sha256(f"{fp}|{episode_start:.3f}{tail}".encode()).hexdigest()[:32]


def _fmt(metric: str, v: float) -> str:
    if metric == "error_rate":
        return f"{v * 100:.1f}%"
    if metric in ("cost_per_request_usd", "cost_per_million_tokens_usd"):
        return f"${v:.4g}"
    if metric == "latency_per_output_token_ms":
        return f"{v:.3g} ms"
    if metric.endswith("_ms"):
        return f"{v:,.0f} ms"
    return f"{v:,.4g}"


def make_alert(
    type_: str,
    metric: str,
    observed: float,
    expected: float,
    score: float,
    severity: str | Severity,
    detector: str,
    event_time: float,
    service: Optional[str],
    model: Optional[str],
    subject: Optional[str] = None,
    evidence: Optional[Dict[str, Any]] = None,
    summary: Optional[str] = None,
    ingested_at: Optional[float] = None,
    now: Optional[float] = None,
    status: str = "firing",
    root_cause_hints: Optional[List[str]] = None,
) -> Alert:
    """A SPEC section 2 alert; ``root_cause_hints`` are short sentences, most telling first."""
    fp = fingerprint(type_, service, model, subject)
    if summary is None:
        what = METRIC_UNITS.get(metric, metric)
        where = f"{service}/{model}" if model else (service or subject or "fleet")
        direction = "above" if observed >= expected else "below"
        if status == "resolved":
            summary = f"{what.capitalize()} of {where} is back to normal (last anomalous: {_fmt(metric, observed)})."
        elif metric == "feature_vector":
            summary = (f"Unusual combination of metrics on {where}: rarer than {observed * 100:.1f}% "
                       f"of its recent windows, though no single metric is out of range.")
        else:
            summary = (
                f"{what.capitalize()} of {where} is {_fmt(metric, observed)}, "
                f"{direction} its usual {_fmt(metric, expected)}."
            )
            if status == "escalated":
                summary = f"Escalated to {severity}: " + summary
    return Alert(
        alert_id=alert_id(fp, event_time, status, severity),
        fingerprint=fp,
        type=type_,
        severity=Severity(severity),
        service=service,
        model=model,
        subject=subject,
        metric=metric,
        observed=round(float(observed), 6),
        expected=round(float(expected), 6),
        score=round(float(score), 4),
        detector=detector,
        event_time=iso(event_time),
        detected_at=iso(now if now is not None else time.time()),
        summary=summary,
        evidence=evidence or {},
        root_cause_hints=list(root_cause_hints or []),
        similar_incidents=[],
        status=status,
        ingested_at=ingested_at,
    )


def resolved(firing: Alert, at_event_time: float) -> Alert:
    """The resolve message of an episode whose firing alert is ``firing`` (a dict of an older snapshot too)."""
    firing = Alert.of(firing)
    return firing.copy(
        status="resolved",
        alert_id=alert_id(firing.fingerprint, firing.event_ts, "resolved", firing.severity),
        evidence=dict(firing.evidence or {}, fired_event_time=iso(at_event_time)),
        summary="Resolved: " + firing.summary,
        detected_at=iso(time.time()),
        ingested_at=None,
    )
