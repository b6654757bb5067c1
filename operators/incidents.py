"""Where alerts become incidents: grouping, folding, escalation, resolve.

Keyed by the group key (``alerting.group_by``, by default the service).
Anomalies of one group that overlap in time (latency + ttft + error_rate of
one model, or one metric on several models of a service: an alert that fires
within ``group_window`` of event time of an open incident's latest member)
are one incident:
the first alert pages, later ones fold into it as ``evidence.grouped``
(counted as suppressed with reason ``grouped``), a member that raises the
incident's severity re-pages it as ``escalated``, and when every member has
resolved the incident resolves with one message. An incident still firing
after ``repeat_interval`` of event time is paged again.

``group_wait`` (event time, and wall time for a live flow) holds a new
incident's first page so that members arriving together are in it; 0 pages
at once. ``group_interval`` > 0 announces members that joined a paged
incident in an ``updated`` message, at most once per interval of event time
(a member that joins sooner, say in the same window as the page, is
announced by the group's next alert an interval later, or at end of input);
0 folds them silently (they appear in escalations and in the resolve).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Tuple

from bytewax.operators import StatefulLogic

from detectors.episode import RANK
from operators.alerts import alert_id, iso
from sinks.base import INGESTED_AT
from sentinel.config import AlertingConfig
from sentinel.metrics import get_metrics

Alert = Dict[str, Any]


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def fired_at(alert: Alert) -> float:
    """Event time at which the alert could first be raised."""
    ev = alert.get("evidence") or {}
    return _ts(ev.get("fired_event_time") or alert["event_time"])


def group_key(alert: Alert, group_by: Tuple[str, ...]) -> str:
    parts = []
    for f in group_by:
        v = alert.get(f)
        parts.append("" if v is None else str(v))
    if not any(parts):
        # An alert with none of the grouping fields (an attack on no service) is its own group.
        return "fp:" + alert["fingerprint"]
    return "\x1f".join(parts)


def _member(alert: Alert) -> Dict[str, Any]:
    return {k: alert.get(k) for k in ("alert_id", "fingerprint", "type", "severity", "service", "model",
                                        "subject", "metric", "observed", "expected", "score", "event_time")}


@dataclass
class Incident:
    primary: Alert
    members: Dict[str, Alert] = field(default_factory=dict)  # fingerprint -> latest firing/escalated alert
    active: Dict[str, bool] = field(default_factory=dict)  # fingerprint -> still firing
    severity: str = "info"
    paged: bool = False
    hold_until_event: float = 0.0
    hold_until_wall: float = 0.0
    last_page_event: float = 0.0
    repeats: int = 0
    escalations: int = 0
    first_event: float = 0.0
    last_event: float = 0.0
    updates: int = 0
    last_update_event: float = 0.0
    # A member joined the paged incident within group_interval of its last message:
    # announced by the next alert of the group that comes an interval later (or at end of input).
    pending_update: bool = False


@dataclass
class GroupState:
    incidents: List[Incident] = field(default_factory=list)
    last_wall: float = 0.0


MAX_OPEN_INCIDENTS = 64


class IncidentLogic(StatefulLogic[Alert, Alert, GroupState]):
    def __init__(self, cfg: AlertingConfig, state: Optional[GroupState]) -> None:
        self.cfg = cfg
        self.state = state if state is not None else GroupState()
        m = get_metrics()
        self._grouped = m.alerts_suppressed.labels(reason="grouped")

    # -- Bytewax hooks -----------------------------------------------------

    def _find(self, fp: str, t: float) -> Optional[Incident]:
        """The open incident this alert belongs to: its own, else one it overlaps in time."""
        incs = self.state.incidents
        for inc in incs:
            if fp in inc.members and inc.active.get(fp):
                return inc
        best = None
        for inc in incs:
            if (any(inc.active.values()) and inc.first_event - self.cfg.group_window <= t
                    <= inc.last_event + self.cfg.group_window):
                if best is None or inc.last_event > best.last_event:
                    best = inc
        return best

    def on_item(self, alert: Alert) -> Tuple[List[Alert], bool]:
        out, discard = self._on_item(alert)
        ingested = alert.get(INGESTED_AT)
        if ingested is not None:
            for a in out:
                a.setdefault(INGESTED_AT, ingested)
        return out, discard

    def _on_item(self, alert: Alert) -> Tuple[List[Alert], bool]:
        st = self.state
        now = time.monotonic()
        st.last_wall = now
        out: List[Alert] = []
        t = fired_at(alert)
        for inc in st.incidents:
            self._flush_held(inc, t, now, out)
            self._repeat(inc, t, out)
            if inc.pending_update and t - inc.last_update_event >= self.cfg.group_interval:
                self._update(inc, t, out)
        status = alert.get("status", "firing")
        fp = alert["fingerprint"]
        if status == "resolved":
            inc = next((i for i in st.incidents if i.active.get(fp)), None)
            if inc is None:
                out.append(alert)  # not part of an incident we track: pass it on
                return out, self._discard()
            inc.active[fp] = False
            if not any(inc.active.values()):
                self._resolve(inc, alert, out)
                st.incidents.remove(inc)
            return out, self._discard()
        inc = self._find(fp, t)
        if inc is None:
            inc = Incident(primary=alert, severity=alert["severity"], first_event=t, last_event=t,
                           hold_until_event=t + self.cfg.group_wait, hold_until_wall=now + self.cfg.group_wait)
            inc.members[fp] = alert
            inc.active[fp] = True
            st.incidents.append(inc)
            if len(st.incidents) > MAX_OPEN_INCIDENTS:
                st.incidents.pop(0)  # bounded: the oldest open incident is forgotten
            if self.cfg.group_wait <= 0:
                self._page(inc, out, t)
            return out, StatefulLogic.RETAIN
        inc.last_event = max(inc.last_event, t)
        inc.first_event = min(inc.first_event, t)
        new_member = fp not in inc.members or not inc.active.get(fp)
        inc.members[fp] = alert
        inc.active[fp] = True
        grew = RANK.get(alert["severity"], 0) > RANK.get(inc.severity, 0)
        if grew:
            inc.severity = alert["severity"]
        if not inc.paged:
            if new_member:
                self._grouped.inc()
            return out, StatefulLogic.RETAIN
        if grew:
            self._escalate(inc, alert, out, t)
        elif new_member and self.cfg.group_interval > 0 and t - inc.last_update_event >= self.cfg.group_interval:
            self._update(inc, t, out)
        elif new_member or status == "escalated":
            self._grouped.inc()
            if new_member and self.cfg.group_interval > 0:
                inc.pending_update = True
        return out, StatefulLogic.RETAIN

    def _update(self, inc: Incident, t: float, out: List[Alert]) -> None:
        """Announce the paged incident's members in an ``updated`` message."""
        inc.updates += 1
        inc.last_update_event = t
        inc.pending_update = False
        a = self._incident_alert(inc, "updated")
        a["alert_id"] = alert_id(a["fingerprint"], _ts(a["event_time"]), "updated", str(inc.updates))
        out.append(a)

    def on_notify(self) -> Tuple[List[Alert], bool]:
        out: List[Alert] = []
        now = time.monotonic()
        for inc in self.state.incidents:
            if not inc.paged and now >= inc.hold_until_wall:
                self._page(inc, out, inc.last_event)
        return out, self._discard()

    def on_eof(self) -> Tuple[List[Alert], bool]:
        out: List[Alert] = []
        for inc in self.state.incidents:
            if not inc.paged:
                self._page(inc, out, inc.last_event)
            elif inc.pending_update:
                self._update(inc, inc.last_event, out)
        return out, StatefulLogic.RETAIN

    def notify_at(self) -> Optional[datetime]:
        held = [i.hold_until_wall for i in self.state.incidents if not i.paged]
        if held:
            wait = max(0.0, min(held) - time.monotonic())
            return datetime.now(timezone.utc) + timedelta(seconds=wait)
        if not self.state.incidents:
            return datetime.now(timezone.utc) + timedelta(seconds=self.cfg.idle_evict)
        return None

    def snapshot(self) -> GroupState:
        return copy.deepcopy(self.state)

    # -- lifecycle ----------------------------------------------------------

    def _discard(self) -> bool:
        st = self.state
        if not st.incidents and time.monotonic() - st.last_wall >= self.cfg.idle_evict:
            return StatefulLogic.DISCARD
        return StatefulLogic.RETAIN

    def _flush_held(self, inc: Incident, t: float, now: float, out: List[Alert]) -> None:
        if not inc.paged and t >= inc.hold_until_event:
            self._page(inc, out, t)

    def _repeat(self, inc: Incident, t: float, out: List[Alert]) -> None:
        r = self.cfg.repeat_interval
        if inc.paged and r > 0 and t - inc.last_page_event >= r and any(inc.active.values()):
            inc.repeats += 1
            a = self._incident_alert(inc, "firing")
            a["alert_id"] = alert_id(a["fingerprint"], _ts(a["event_time"]), "repeat", str(inc.repeats))
            a["evidence"]["repeat"] = inc.repeats
            inc.last_page_event = t
            out.append(a)

    def _page(self, inc: Incident, out: List[Alert], t: float) -> None:
        # The primary is the most severe member, the earliest among equals.
        inc.primary = max(inc.members.values(), key=lambda a: (RANK.get(a["severity"], 0), -_ts(a["event_time"])))
        inc.paged = True
        inc.last_page_event = inc.last_update_event = t
        out.append(self._incident_alert(inc, "firing"))

    def _escalate(self, inc: Incident, member: Alert, out: List[Alert], t: float) -> None:
        inc.escalations += 1
        a = self._incident_alert(inc, "escalated")
        a["severity"] = inc.severity
        a["alert_id"] = alert_id(a["fingerprint"], _ts(a["event_time"]), "escalated",
                                 f"{inc.severity}|{inc.escalations}")
        if member["fingerprint"] != inc.primary["fingerprint"] or member.get("status") == "escalated":
            prefix = f"Escalated to {inc.severity}: "
            summary = member["summary"]
            a["summary"] = summary if summary.startswith("Escalated to ") else prefix + summary
        inc.last_page_event = t
        inc.pending_update = False  # the escalation names every member
        out.append(a)

    def _resolve(self, inc: Incident, last: Alert, out: List[Alert]) -> None:
        if not inc.paged:
            self._page(inc, out, fired_at(last))
        a = self._incident_alert(inc, "resolved")
        a["alert_id"] = alert_id(a["fingerprint"], _ts(a["event_time"]), "resolved", inc.severity)
        p = inc.primary
        where = f"{p['service']}/{p['model']}" if p.get("model") else (p.get("service") or p.get("subject"))
        a["summary"] = (f"Resolved: {where} is back to normal ({len(inc.members)} anomal"
                        f"{'y' if len(inc.members) == 1 else 'ies'} in this incident).")
        a["evidence"]["resolved_event_time"] = (last.get("evidence") or {}).get("fired_event_time")
        out.append(a)

    def _incident_alert(self, inc: Incident, status: str) -> Alert:
        a = dict(inc.primary)
        # The primary's ingest time is not this message's: the flow sets it from the
        # alert that triggered the message (see on_item).
        a.pop(INGESTED_AT, None)
        a["evidence"] = dict(a.get("evidence") or {})
        a["status"] = status
        a["severity"] = inc.severity if status != "firing" else max(
            (m["severity"] for m in inc.members.values()), key=lambda s: RANK.get(s, 0))
        others = [_member(m) for fp, m in inc.members.items() if fp != inc.primary["fingerprint"]]
        if others:
            a["evidence"]["grouped"] = others
            if status == "firing":
                a["summary"] = a["summary"] + f" {len(others)} related anomal{'y' if len(others) == 1 else 'ies'} grouped."
        a["detected_at"] = iso(time.time())
        return a
