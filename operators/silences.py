"""Which alerts are not published: silences, maintenance windows and feedback.

``AlertFilter`` runs before incidents are formed. An alert is dropped (and
counted in ``sentinel_alerts_suppressed_total{reason}``) when

* a silence matches it (``silenced``): every matcher equals the alert's
  field and the alert's ``event_time`` lies in the silence's [start, end);
  silences come from the flow definition and, at run time, from the control
  topic (:mod:`sentinel.control`);
* operators marked the same pattern a false positive (``feedback``): same
  service, model, type and metric, same direction, and a deviation no larger
  than 1.5 times the one they dismissed. A bigger deviation on that key
  still pages.

Every later message of a dropped episode (escalations, the resolve) is
dropped with it, so a silenced incident never half-appears.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any, Dict, List, Optional, Tuple

from sentinel.metrics import get_metrics

log = logging.getLogger(__name__)

Alert = Dict[str, Any]

FEEDBACK_MARGIN = 1.5


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def deviation(alert: Alert) -> Tuple[int, float]:
    """(direction, size) of an alert's deviation: the ratio observed/expected folded to >= 1."""
    obs, exp = alert.get("observed") or 0.0, alert.get("expected") or 0.0
    if obs > 0 and exp > 0:
        r = obs / exp
        return (1, r) if r >= 1 else (-1, 1.0 / r)
    return (1 if obs >= exp else -1, float("inf") if exp == 0 and obs > 0 else 1.0)


class SilenceRule:
    __slots__ = ("id", "matchers", "start", "end", "comment")

    def __init__(self, id: str, matchers: Dict[str, str], start: Optional[float], end: Optional[float],
                 comment: str = "") -> None:
        self.id = id
        self.matchers = dict(matchers)
        self.start = start
        self.end = end
        self.comment = comment

    def matches(self, alert: Alert, t: float) -> bool:
        if self.start is not None and t < self.start:
            return False
        if self.end is not None and t >= self.end:
            return False
        for k, v in self.matchers.items():
            if str(alert.get(k)) != v:
                return False
        return True


class FeedbackPattern:
    __slots__ = ("key", "direction", "size", "label", "reason", "who")

    def __init__(self, key: Tuple[str, str, str, str], direction: int, size: float, label: str,
                 reason: str = "", who: str = "") -> None:
        self.key = key
        self.direction = direction
        self.size = size
        self.label = label
        self.reason = reason
        self.who = who


def pattern_key(alert: Alert) -> Tuple[str, str, str, str]:
    return (str(alert.get("service")), str(alert.get("model")), str(alert.get("type")), str(alert.get("metric")))


class Controls:
    """Silences and feedback known to this process (flow definition + control topics)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._silences: Dict[str, SilenceRule] = {}
        self._feedback: Dict[Tuple[str, str, str, str], List[FeedbackPattern]] = {}
        self._seen: "OrderedDict[str, Alert]" = OrderedDict()  # alert_id / fingerprint -> alert
        self._pending: Dict[str, Dict[str, Any]] = {}  # feedback for alerts not seen yet

    # -- silences -------------------------------------------------------------

    def add_silence(self, rule: SilenceRule) -> None:
        with self._lock:
            self._silences[rule.id] = rule
        log.info("silence %s: %s from %s to %s %s", rule.id, rule.matchers, rule.start, rule.end, rule.comment)

    def expire_silence(self, sid: str) -> bool:
        with self._lock:
            return self._silences.pop(sid, None) is not None

    def silenced_by(self, alert: Alert) -> Optional[SilenceRule]:
        t = _ts(alert["event_time"])
        with self._lock:
            for rule in self._silences.values():
                if rule.matches(alert, t):
                    return rule
        return None

    # -- feedback -------------------------------------------------------------

    def remember(self, alert: Alert) -> None:
        """An alert was published: feedback may name it by alert_id or fingerprint."""
        with self._lock:
            for k in (alert["alert_id"], alert["fingerprint"]):
                self._seen[k] = alert
                self._seen.move_to_end(k)
            while len(self._seen) > 100_000:
                self._seen.popitem(last=False)
            pend = self._pending.pop(alert["alert_id"], None) or self._pending.pop(alert["fingerprint"], None)
        if pend is not None:
            self.add_feedback(pend)

    def add_feedback(self, fb: Dict[str, Any]) -> bool:
        """Apply one feedback record; returns False when the alert it names is unknown (kept pending)."""
        ref = fb.get("alert_id") or fb.get("fingerprint")
        with self._lock:
            alert = self._seen.get(ref) if ref else None
        if alert is None and all(fb.get(k) is not None for k in ("service", "type", "metric", "observed", "expected")):
            alert = fb
        if alert is None:
            with self._lock:
                if ref:
                    self._pending[ref] = fb
            return False
        label = fb.get("label")
        direction, size = deviation(alert)
        pat = FeedbackPattern(pattern_key(alert), direction, size, label, fb.get("reason", ""), fb.get("who", ""))
        with self._lock:
            if label == "false_positive":
                self._feedback.setdefault(pat.key, []).append(pat)
        log.info("feedback %s on %s (%s/%s %s %s) by %s: %s", label, ref, alert.get("service"), alert.get("model"),
                 alert.get("type"), alert.get("metric"), fb.get("who", "?"), fb.get("reason", ""))
        return True

    def dismissed_by(self, alert: Alert) -> Optional[FeedbackPattern]:
        with self._lock:
            pats = self._feedback.get(pattern_key(alert))
            if not pats:
                return None
            direction, size = deviation(alert)
            for p in pats:
                if p.direction == direction and size <= p.size * FEEDBACK_MARGIN:
                    return p
        return None


_controls = Controls()


def get_controls() -> Controls:
    return _controls


def load_silences(silences, controls: Controls) -> None:
    for i, s in enumerate(silences):
        controls.add_silence(SilenceRule(
            f"flow-{i}", s.matchers, s.start.timestamp() if s.start else None,
            s.end.timestamp() if s.end else None, s.comment))


class AlertFilter:
    """``op.filter`` callable: drop silenced and dismissed alerts (and the rest of their episodes)."""

    def __init__(self, controls: Optional[Controls] = None) -> None:
        self.controls = controls if controls is not None else get_controls()
        m = get_metrics()
        self._silenced = m.alerts_suppressed.labels(reason="silenced")
        self._feedback = m.alerts_suppressed.labels(reason="feedback")
        self._dropped: "OrderedDict[Tuple[str, str], str]" = OrderedDict()

    def __call__(self, alert: Alert) -> bool:
        episode = (alert["fingerprint"], alert["event_time"])
        reason = self._dropped.get(episode)
        if reason is None and alert.get("status", "firing") == "firing":
            if self.controls.silenced_by(alert) is not None:
                reason = "silenced"
            elif self.controls.dismissed_by(alert) is not None:
                reason = "feedback"
            if reason is not None:
                self._dropped[episode] = reason
                while len(self._dropped) > 100_000:
                    self._dropped.popitem(last=False)
        if reason is None:
            return True
        (self._silenced if reason == "silenced" else self._feedback).inc()
        if alert.get("status") == "resolved":
            self._dropped.pop(episode, None)
        return False
