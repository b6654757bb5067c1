"""Which alerts are not published: silences, maintenance windows and feedback.

``AlertFilter`` runs before incidents are formed. An alert is dropped (and
counted in ``sentinel_alerts_suppressed_total{reason}``) when

* a silence matches it (``silenced``): every matcher equals the alert's
  field, every other matcher holds (``!=``, ``=~``, ``!~`` as Alertmanager's:
  a regular expression matches the whole value, a null field is ``""``) and
  the alert's ``event_time`` lies in the silence's [start, end);
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
from typing import Any, Dict, List, Optional, Tuple

from sentinel.core.types import ALERT_FIELDS, Alert
from sentinel.metrics import get_metrics

log = logging.getLogger(__name__)

FEEDBACK_MARGIN = 1.5


def _field(alert: Alert, name: str) -> Any:
    """A matcher's field of the alert (None for a name that is not one of its SPEC fields)."""
    return getattr(alert, name) if name in _FIELDS else None


_FIELDS = frozenset(ALERT_FIELDS)


def deviation(alert: Alert) -> Tuple[int, float]:
    """(direction, size) of an alert's deviation: the ratio observed/expected folded to >= 1."""
    obs, exp = alert.observed or 0.0, alert.expected or 0.0
    if obs > 0 and exp > 0:
        r = obs / exp
        return (1, r) if r >= 1 else (-1, 1.0 / r)
    return (1 if obs >= exp else -1, float("inf") if exp == 0 and obs > 0 else 1.0)


class SilenceRule:
    __slots__ = ("id", "matchers", "start", "end", "comment", "origin", "others")

    def __init__(self, id: str, matchers: Dict[str, str], start: Optional[float], end: Optional[float],
                 comment: str = "", origin: str = "topic", others: Tuple[Tuple[str, str, Any], ...] = ()) -> None:
        self.id = id
        self.matchers = dict(matchers)
        # (field, op, value) with op "!=" (value a str) or "=~" / "!~" (value a compiled pattern).
        self.others = tuple(others)
        self.start = start
        self.end = end
        self.comment = comment
        self.origin = origin  # "flow" (the flow definition) or "topic" (the control topic)

    def fields(self) -> Tuple[str, ...]:
        return tuple(sorted(self.matchers))

    def values(self) -> Tuple[str, ...]:
        return tuple(self.matchers[k] for k in self.fields())

    def in_time(self, t: float) -> bool:
        return (self.start is None or t >= self.start) and (self.end is None or t < self.end)

    def others_hold(self, alert: Alert) -> bool:
        for k, op, v in self.others:
            got = _field(alert, k)
            got = "" if got is None else str(got)
            if op == "!=":
                if got == v:
                    return False
            elif (v.fullmatch(got) is not None) != (op == "=~"):
                return False
        return True

    def matches(self, alert: Alert, t: float) -> bool:
        if not self.in_time(t):
            return False
        for k, v in self.matchers.items():
            if str(_field(alert, k)) != v:
                return False
        return self.others_hold(alert)


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
    return (str(alert.service), str(alert.model), str(alert.type), str(alert.metric))


class ControlRefused(ValueError):
    """A control or feedback message that is not applied; ``reason`` is a bounded metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Controls:
    """Silences and feedback known to one flow (its definition + the control topics).

    The flow builder makes one per flow, or takes the one the runtime made for the
    process (which the control listener feeds).

    Silences are indexed by the fields they match on, so checking an alert
    costs a lookup per distinct set of matcher fields, not a pass over every
    silence. Silences from the topic are capped (``max_silences``), as are
    feedback records waiting for their alert (``max_pending_feedback``, the
    oldest is dropped) and the dismissed patterns (one per key, metric and
    direction: the largest deviation dismissed).
    """

    def __init__(self, max_silences: int = 1000, max_pending_feedback: int = 10_000,
                 max_patterns: int = 100_000) -> None:
        self._lock = threading.Lock()
        self.max_silences = max_silences
        self.max_pending_feedback = max_pending_feedback
        self.max_patterns = max_patterns
        self._silences: Dict[str, SilenceRule] = {}
        # matcher fields -> their values -> {id: rule}
        self._index: Dict[Tuple[str, ...], Dict[Tuple[str, ...], Dict[str, SilenceRule]]] = {}
        self._topic_silences = 0
        self._latest = float("-inf")  # latest alert event time checked: silences ending before it are over
        self._feedback: "OrderedDict[Tuple[Tuple[str, str, str, str], int], FeedbackPattern]" = OrderedDict()
        self._seen: "OrderedDict[str, Alert]" = OrderedDict()  # alert_id / fingerprint -> alert
        self._pending: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()  # feedback for alerts not seen yet

    def configure(self, max_silences: Optional[int] = None, max_pending_feedback: Optional[int] = None) -> None:
        with self._lock:
            if max_silences is not None:
                self.max_silences = max_silences
            if max_pending_feedback is not None:
                self.max_pending_feedback = max_pending_feedback

    # -- silences -------------------------------------------------------------

    def _unindex(self, rule: SilenceRule) -> None:
        by_values = self._index.get(rule.fields())
        if by_values is None:
            return
        rules = by_values.get(rule.values())
        if rules is not None:
            rules.pop(rule.id, None)
            if not rules:
                del by_values[rule.values()]
        if not by_values:
            del self._index[rule.fields()]

    def _remove(self, sid: str) -> Optional[SilenceRule]:
        rule = self._silences.pop(sid, None)
        if rule is not None:
            self._unindex(rule)
            if rule.origin != "flow":
                self._topic_silences -= 1
        return rule

    def add_silence(self, rule: SilenceRule, origin: Optional[str] = None) -> None:
        """Add (or replace, by id) a silence; from the topic, refuse to replace a flow one or to pass the cap."""
        if origin is not None:
            rule.origin = origin
        with self._lock:
            old = self._silences.get(rule.id)
            if rule.origin != "flow":
                if old is not None and old.origin == "flow":
                    raise ControlRefused("flow_silence", f"silence {rule.id!r} is defined in the flow definition")
                if old is None and self._topic_silences >= self.max_silences:
                    over = [sid for sid, r in self._silences.items()
                            if r.origin != "flow" and r.end is not None and r.end <= self._latest]
                    for sid in over:
                        self._remove(sid)
                    if self._topic_silences >= self.max_silences:
                        raise ControlRefused("silences_full", f"already {self.max_silences} silences from the "
                                             f"topic (control.max_silences); expire some first")
            self._remove(rule.id)
            self._silences[rule.id] = rule
            self._index.setdefault(rule.fields(), {}).setdefault(rule.values(), {})[rule.id] = rule
            if rule.origin != "flow":
                self._topic_silences += 1
        log.info("silence %s: %s%s from %s to %s %s", rule.id, rule.matchers,
                 "".join(f" {k}{op}{getattr(v, 'pattern', v)!r}" for k, op, v in rule.others), rule.start, rule.end,
                 rule.comment)

    def expire_silence(self, sid: str, from_topic: bool = False) -> bool:
        with self._lock:
            rule = self._silences.get(sid)
            if rule is None:
                return False
            if from_topic and rule.origin == "flow":
                raise ControlRefused("flow_silence", f"silence {sid!r} is defined in the flow definition; "
                                     f"it ends only there")
            self._remove(sid)
            return True

    def silenced_by(self, alert: Alert) -> Optional[SilenceRule]:
        t = alert.event_ts
        with self._lock:
            if t > self._latest:
                self._latest = t
            for fields, by_values in self._index.items():
                rules = by_values.get(tuple(str(_field(alert, k)) for k in fields))
                if rules:
                    for rule in rules.values():
                        if rule.in_time(t) and (not rule.others or rule.others_hold(alert)):
                            return rule
        return None

    def silence_count(self) -> int:
        return len(self._silences)

    # -- feedback -------------------------------------------------------------

    def remember(self, alert: Alert) -> None:
        """An alert was published: feedback may name it by alert_id or fingerprint."""
        with self._lock:
            for k in (alert.alert_id, alert.fingerprint):
                self._seen[k] = alert
                self._seen.move_to_end(k)
            while len(self._seen) > 100_000:
                self._seen.popitem(last=False)
            pend = self._pending.pop(alert.alert_id, None) or self._pending.pop(alert.fingerprint, None)
        if pend is not None:
            self.add_feedback(pend)

    def add_feedback(self, fb: Dict[str, Any]) -> bool:
        """Apply one feedback record; returns False when the alert it names is unknown (kept pending).

        The pattern dismissed is the alert's, as this flow recorded it: values
        the feedback message carries itself (``observed`` ...) are ignored.
        Returns False also when a pending record had to be dropped to make
        room: see :meth:`add_feedback_counted`.
        """
        return self.add_feedback_counted(fb)[0]

    def add_feedback_counted(self, fb: Dict[str, Any]) -> Tuple[bool, int]:
        """(applied, pending records dropped to keep this one)."""
        ref = fb.get("alert_id") or fb.get("fingerprint")
        if not isinstance(ref, str) or not ref:
            return False, 0
        with self._lock:
            alert = self._seen.get(ref)
            if alert is None:
                self._pending[ref] = fb
                self._pending.move_to_end(ref)
                dropped = 0
                while len(self._pending) > self.max_pending_feedback:
                    self._pending.popitem(last=False)
                    dropped += 1
                return False, dropped
        label = fb.get("label")
        direction, size = deviation(alert)
        pat = FeedbackPattern(pattern_key(alert), direction, size, label, str(fb.get("reason", ""))[:256],
                              str(fb.get("who", ""))[:128])
        with self._lock:
            if label == "false_positive":
                k = (pat.key, direction)
                old = self._feedback.get(k)
                if old is None or pat.size >= old.size:
                    self._feedback[k] = pat
                self._feedback.move_to_end(k)
                while len(self._feedback) > self.max_patterns:
                    self._feedback.popitem(last=False)
        log.info("feedback %s on %s (%s/%s %s %s) by %s: %s", label, ref, alert.service, alert.model,
                 alert.type, alert.metric, pat.who or "?", pat.reason)
        return True, 0

    def pending_feedback(self) -> int:
        return len(self._pending)

    def feedback_patterns(self) -> int:
        return len(self._feedback)

    def dismissed_by(self, alert: Alert) -> Optional[FeedbackPattern]:
        direction, size = deviation(alert)
        with self._lock:
            p = self._feedback.get((pattern_key(alert), direction))
        if p is not None and size <= p.size * FEEDBACK_MARGIN:
            return p
        return None


def load_silences(silences, controls: Controls) -> None:
    for i, s in enumerate(silences):
        controls.add_silence(SilenceRule(
            f"flow-{i}", s.matchers, s.start.timestamp() if s.start else None,
            s.end.timestamp() if s.end else None, s.comment, origin="flow"))


class AlertFilter:
    """``op.filter`` callable: drop silenced and dismissed alerts (and the rest of their episodes)."""

    def __init__(self, controls: Controls) -> None:
        self.controls = controls
        m = get_metrics()
        self._silenced = m.alerts_suppressed.labels(reason="silenced")
        self._feedback = m.alerts_suppressed.labels(reason="feedback")
        self._dropped: "OrderedDict[Tuple[str, str], str]" = OrderedDict()

    def __call__(self, alert: Alert) -> bool:
        episode = (alert.fingerprint, alert.event_time)
        reason = self._dropped.get(episode)
        if reason is None and alert.status == "firing":
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
        if alert.status == "resolved":
            self._dropped.pop(episode, None)
        return False
