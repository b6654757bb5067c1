"""Where alerts become incidents: grouping, folding, escalation, resolve.

Keyed by the group key (:func:`group_key`): the ``alerting.group_by`` fields
(by default the service) and the alert's type family, ``security``
(coordinated_attack, policy_violation), ``abuse`` (token_abuse) or ``health``
(every other type); an actor-scoped alert (token_abuse, coordinated_attack)
adds its subject, so each abusing actor and each attacking source is an
incident of its own, and an attack never folds into a health or abuse
incident (nor they into it).

Anomalies of one group that overlap in time (an alert that fires within
``group_window`` of event time of an open incident's members) are one
incident: the first alert pages, later ones fold into it as
``evidence.grouped`` (counted as suppressed with reason ``grouped``), and
when every member has resolved the incident resolves with one message. An
incident still firing after ``repeat_interval`` of event time is paged again.

After the page the incident speaks again only when it changes: a member of a
type the incident does not have yet is announced in an ``updated`` message
(another member of a type it has, say the latency of a second model of the
service, folds silently), a member that raises the incident's severity
re-pages it as ``escalated``. Both go out at most once per ``group_interval``
of wall-clock time and at most once per ``group_interval`` of event time,
counted from the incident's last message; a change that comes sooner is held
and announced by one message (``escalated`` if any held change escalated,
else ``updated``) once both have passed: by the group's next alert, by
``on_notify``, or at end of input if the incident is still open. A held
change of an incident that resolves first is not announced: the resolve
names every member. ``group_interval: 0`` sends escalations at once and
no ``updated`` messages (new members are named by escalations and the
resolve).

Every message of an incident carries the incident's fingerprint and
event_time (those of its first page, so alert_ids are stable under replay)
and, as its headline (type, model, metric, observed, expected, score,
summary, ...), the incident's most severe member, the earliest among equals.

``group_wait`` (event time, and wall time for a live flow) holds a new
incident's first page so that members arriving together are in it; 0 pages
at once: in the flow (``batched``), at the end of the batch of alerts that
opened the incident, so that the group's other alerts of the same window
(the ttft beside the latency of one key, say) are in the first page rather
than in an ``updated`` a group_interval later.
"""

from __future__ import annotations

import copy
import time
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

from operators.alerts import alert_id
from operators.guard import StepFailure, guarded
from operators.stateful import stateful, step_name
from sentinel.config import AlertingConfig
from sentinel.core.times import iso
from sentinel.core.types import Alert, Severity
from sentinel.metrics import get_metrics

# Type families: alerts of different families are never one incident.
FAMILIES = {"coordinated_attack": "security", "policy_violation": "security", "token_abuse": "abuse"}
# Types about one actor (a user, a tenant, a source): each subject is its own incident.
ACTOR_SCOPED = frozenset({"token_abuse", "coordinated_attack"})

MAX_OPEN_INCIDENTS = 64  # per group; beyond it the oldest open incident is forgotten
MAX_MEMBERS = 500  # per incident; beyond it the oldest resolved member is forgotten


def fired_at(alert: Alert) -> float:
    """Event time at which the alert could first be raised."""
    return alert.fired_ts


def family(type_: Optional[str]) -> str:
    """``security``, ``abuse`` or ``health``."""
    return FAMILIES.get(type_ or "", "health")


def group_key(alert: Alert, group_by: Tuple[str, ...]) -> str:
    """The ``group_by`` fields, the type family and, for actor-scoped types, the subject."""
    parts = []
    for f in group_by:
        v = getattr(alert, f)
        parts.append("" if v is None else str(v))
    if not any(parts):
        # An alert with none of the grouping fields (an attack on no service) is its own group.
        return "fp:" + alert.fingerprint
    typ = alert.type
    # A forecast's warnings are incidents of their own: the regular page of the anomaly they foresee
    # is not held back as an escalation of an info warning.
    parts.append("forecast" if alert.detector == "trend_forecast" else family(typ))
    if typ in ACTOR_SCOPED and "subject" not in group_by:
        parts.append(alert.subject or "")
    return "\x1f".join(parts)


MEMBER_FIELDS = ("alert_id", "fingerprint", "type", "severity", "service", "model", "subject", "metric",
                 "observed", "expected", "score", "event_time")


def _member(alert: Union[Alert, Mapping[str, Any]]) -> Dict[str, Any]:
    """A member's summary (a JSON object of ``evidence.grouped``); from a whole alert of an older snapshot too."""
    obj = alert.to_json() if isinstance(alert, Alert) else alert
    return {k: obj.get(k) for k in MEMBER_FIELDS}


def _weight(alert: Alert) -> Tuple[int, float]:
    """Headline order: the most severe, then the earliest."""
    return alert.severity.rank, -alert.event_ts


def _plain(summary: str) -> str:
    """A member's summary without the "Escalated to <severity>: " of its own escalation."""
    if summary.startswith("Escalated to ") and ": " in summary:
        return summary.split(": ", 1)[1]
    return summary


def _fill_defaults(obj: Any, state: Dict[str, Any]) -> None:
    """Restore a pickled dataclass, giving fields an older version did not have their defaults."""
    obj.__dict__.update(state)
    for f in fields(obj):
        if f.name not in obj.__dict__:
            if f.default is not MISSING:
                obj.__dict__[f.name] = f.default
            elif f.default_factory is not MISSING:
                obj.__dict__[f.name] = f.default_factory()


@dataclass
class Incident:
    # The alert the incident paged with (before the page, its first): its fingerprint,
    # event_time and alert_id are the incident's.
    primary: Alert
    members: Dict[str, Alert] = field(default_factory=dict)  # fingerprint -> member summary (_member)
    active: Dict[str, bool] = field(default_factory=dict)  # fingerprint -> still firing
    severity: Severity = Severity.info  # the highest a member reached
    paged: bool = False
    hold_until_event: float = 0.0
    hold_until_wall: float = 0.0
    last_page_event: float = 0.0  # the page, repeat or escalation (for repeat_interval)
    repeats: int = 0
    escalations: int = 0
    first_event: float = 0.0
    last_event: float = 0.0
    updates: int = 0
    # The headline: the latest alert of the most severe member, the earliest among equals.
    headline: Optional[Alert] = None
    # When the last message (page, update, escalation, repeat) went out: group event time, wall clock.
    last_sent_event: float = 0.0
    last_sent_wall: float = 0.0
    # A change held by group_interval: "", "updated" or "escalated".
    held: str = ""

    def __setstate__(self, state: Dict[str, Any]) -> None:
        _fill_defaults(self, state)
        # Before type families and held escalations: a bool for a held update, the page's event time.
        if self.__dict__.pop("pending_update", False):
            self.held = self.held or "updated"
        old_update = self.__dict__.pop("last_update_event", None)
        if not self.last_sent_event:
            self.last_sent_event = max(old_update or 0.0, self.last_page_event)
        # Alerts were dicts (SPEC section 2 objects with "_ingested_at").
        self.primary = Alert.of(self.primary)
        self.headline = self.primary if self.headline is None else Alert.of(self.headline)
        self.severity = Severity(self.severity)
        # Members were whole alerts: keep their summaries only.
        self.members = {fp: _member(m) for fp, m in self.members.items()}


@dataclass
class GroupState:
    incidents: List[Incident] = field(default_factory=list)
    last_wall: float = 0.0  # wall clock (monotonic) of the group's latest alert
    last_event: float = 0.0  # the group's event time: the latest seen

    def __setstate__(self, state: Dict[str, Any]) -> None:
        _fill_defaults(self, state)
        if not self.last_event and self.incidents:
            self.last_event = max(i.last_event for i in self.incidents)


class IncidentLogic(StatefulLogic[Alert, Alert, GroupState]):
    def __init__(self, cfg: AlertingConfig, state: Optional[GroupState],
                 clock: Callable[[], float] = time.monotonic, batched: bool = False) -> None:
        self.cfg = cfg
        # With group_wait 0, a new incident's page waits for end_batch (the flow calls it after
        # each batch): alerts of the same window that come in the same batch join it.
        self.batched = batched
        self._opened: Dict[int, Optional[float]] = {}  # id of an incident waiting for end_batch -> ingest time
        self.state = state if state is not None else GroupState()
        # The wall clock (monotonic seconds) of the group_interval and group_wait limits; tests pass a fake one.
        self.clock = clock
        m = get_metrics()
        self._grouped = m.alerts_suppressed.labels(reason="grouped")
        self._metrics = m
        self._open: Dict[str, int] = {}  # service -> open incidents of this group, as last counted
        if state is not None:
            # A monotonic reading from before a restart may be ahead of this process's clock
            # (another boot): no wall-clock stamp is later than now.
            now = self.clock()
            state.last_wall = min(state.last_wall, now)
            for inc in state.incidents:
                inc.last_sent_wall = min(inc.last_sent_wall, now)
                inc.hold_until_wall = min(inc.hold_until_wall, now + cfg.group_wait)
        self._count_open()

    # -- Bytewax hooks -----------------------------------------------------

    def on_item(self, alert: Alert) -> Tuple[List[Alert], bool]:
        out, discard = self._on_item(alert)
        ingested = alert.ingested_at
        if ingested is not None:
            for a in out:
                if a.ingested_at is None:
                    a.ingested_at = ingested
        self._count_open()
        return out, discard

    def end_batch(self) -> Tuple[List[Alert], bool]:
        """After a batch (``batched``, group_wait 0): the first page of each incident the batch opened."""
        out: List[Alert] = []
        if self._opened:
            now = self.clock()
            for inc in self.state.incidents:
                if not inc.paged and id(inc) in self._opened:
                    self._page(inc, out, inc.last_event, now)
                    out[-1].ingested_at = self._opened[id(inc)]
            self._opened.clear()
            self._count_open()
        return out, self._discard()

    def on_notify(self) -> Tuple[List[Alert], bool]:
        out: List[Alert] = []
        now = self.clock()
        clock = self._event_clock(now)
        for inc in self.state.incidents:
            if not inc.paged:
                if now >= inc.hold_until_wall:
                    self._page(inc, out, inc.last_event, now)
            elif inc.held and self._may_send(inc, clock, now):
                self._announce(inc, out, clock, now)
        self._count_open()
        return out, self._discard()

    def on_eof(self) -> Tuple[List[Alert], bool]:
        out: List[Alert] = []
        now = self.clock()
        clock = self.state.last_event
        for inc in self.state.incidents:
            if not inc.paged:
                self._page(inc, out, inc.last_event, now)
            elif inc.held:
                self._announce(inc, out, max(clock, inc.last_sent_event), now)
        return out, StatefulLogic.RETAIN

    def notify_at(self) -> Optional[datetime]:
        st = self.state
        due = []
        for inc in st.incidents:
            if not inc.paged:
                due.append(inc.hold_until_wall)
            elif inc.held:
                gi = self.cfg.group_interval
                # Both limits: the wall clock's, and when the group's event clock (which moves
                # with the wall clock in a live flow, see _event_clock) reaches its own.
                due.append(max(inc.last_sent_wall + gi, st.last_wall + inc.last_sent_event + gi - st.last_event))
        if due:
            wait = max(0.0, min(due) - self.clock())
            return datetime.now(timezone.utc) + timedelta(seconds=wait)
        if not st.incidents:
            return datetime.now(timezone.utc) + timedelta(seconds=self.cfg.idle_evict)
        return None

    def snapshot(self) -> GroupState:
        return copy.deepcopy(self.state)

    def _count_open(self) -> None:
        """``sentinel_incidents_open{service}``: this group's open incidents, by their first alert's service."""
        now: Dict[str, int] = {}
        for inc in self.state.incidents:
            svc = self._metrics.services(inc.primary.service)
            now[svc] = now.get(svc, 0) + 1
        for svc in set(now) | set(self._open):
            d = now.get(svc, 0) - self._open.get(svc, 0)
            if d:
                self._metrics.incidents_open.labels(service=svc).inc(d)
        self._open = now

    # -- alerts -------------------------------------------------------------

    def _on_item(self, alert: Alert) -> Tuple[List[Alert], bool]:
        st = self.state
        now = self.clock()
        t = fired_at(alert)
        st.last_wall = now
        st.last_event = max(st.last_event, t)
        clock = st.last_event
        out: List[Alert] = []
        for inc in st.incidents:
            self._due(inc, out, clock, now)
        status = alert.status
        fp = alert.fingerprint
        if status == "resolved":
            inc = next((i for i in st.incidents if i.active.get(fp)), None)
            if inc is None:
                out.append(alert)  # not part of an incident we track: pass it on
                return out, self._discard()
            inc.active[fp] = False
            if not any(inc.active.values()):
                # A change still held is not announced: the resolve names every member.
                self._resolve(inc, alert, out)
                st.incidents.remove(inc)
            return out, self._discard()
        inc = self._find(fp, t)
        if inc is None:
            inc = Incident(primary=alert, headline=alert, severity=alert.severity, first_event=t, last_event=t,
                           hold_until_event=t + self.cfg.group_wait, hold_until_wall=now + self.cfg.group_wait)
            self._add_member(inc, alert)
            st.incidents.append(inc)
            if len(st.incidents) > MAX_OPEN_INCIDENTS:
                gone = st.incidents.pop(0)  # bounded: the oldest open incident is forgotten
                if not gone.paged:  # (one still waiting for its page pages first)
                    self._page(gone, out, gone.last_event, now)
            if self.cfg.group_wait <= 0:
                if self.batched:
                    self._opened[id(inc)] = alert.ingested_at
                else:
                    self._page(inc, out, clock, now)
            return out, StatefulLogic.RETAIN
        inc.last_event = max(inc.last_event, t)
        inc.first_event = min(inc.first_event, t)
        new_type = alert.type not in {m["type"] for m in inc.members.values()}
        new_member = not inc.active.get(fp)
        self._add_member(inc, alert)
        grew = alert.severity.rank > inc.severity.rank
        if grew:
            inc.severity = alert.severity
        change = "escalated" if grew else "updated" if new_type and self.cfg.group_interval > 0 else ""
        if inc.paged and change:
            inc.held = "escalated" if "escalated" in (inc.held, change) else "updated"
            if self._may_send(inc, clock, now):
                self._announce(inc, out, clock, now)
                return out, StatefulLogic.RETAIN
        if new_member or status == "escalated":
            self._grouped.inc()  # folded: silently, or in a message still held
        return out, StatefulLogic.RETAIN

    def _find(self, fp: str, t: float) -> Optional[Incident]:
        """The open incident this alert belongs to: its own, else one it overlaps in time."""
        incs = self.state.incidents
        for inc in incs:
            if inc.active.get(fp):
                return inc
        best = None
        for inc in incs:
            if (any(inc.active.values()) and inc.first_event - self.cfg.group_window <= t
                    <= inc.last_event + self.cfg.group_window):
                if best is None or inc.last_event > best.last_event:
                    best = inc
        return best

    def _add_member(self, inc: Incident, alert: Alert) -> None:
        fp = alert.fingerprint
        if fp not in inc.members and len(inc.members) >= MAX_MEMBERS:
            gone = next((f for f in inc.members if not inc.active.get(f)), None)
            if gone is not None:
                del inc.members[gone]
                del inc.active[gone]
        inc.members[fp] = _member(alert)
        inc.active[fp] = True
        h = inc.headline or inc.primary
        same_episode = h.fingerprint == fp and h.event_time == alert.event_time
        if _weight(alert) > _weight(h) or same_episode:
            inc.headline = alert

    # -- messages -----------------------------------------------------------

    def _event_clock(self, now: float) -> float:
        """The group's event time now: its latest alert's, plus the wall time since (a live flow's
        event time moves with the wall clock)."""
        st = self.state
        return st.last_event + max(0.0, now - st.last_wall)

    def _may_send(self, inc: Incident, clock: float, now: float) -> bool:
        gi = self.cfg.group_interval
        return clock - inc.last_sent_event >= gi and now - inc.last_sent_wall >= gi

    def _sent(self, inc: Incident, clock: float, now: float) -> None:
        inc.last_sent_event = max(inc.last_sent_event, clock)
        inc.last_sent_wall = now
        inc.held = ""

    def _due(self, inc: Incident, out: List[Alert], clock: float, now: float) -> None:
        """What an incident owes at the group's event time ``clock``: its held page, a repeat, a held change."""
        if not inc.paged:
            # group_wait 0 (batched): a later window's alert pages the incident before it is taken in.
            if clock > inc.hold_until_event or (clock == inc.hold_until_event and self.cfg.group_wait > 0):
                self._page(inc, out, clock, now)
            return
        r = self.cfg.repeat_interval
        if r > 0 and clock - inc.last_page_event >= r and any(inc.active.values()):
            self._repeat(inc, out, clock, now)
        elif inc.held and self._may_send(inc, clock, now):
            self._announce(inc, out, clock, now)

    def _page(self, inc: Incident, out: List[Alert], clock: float, now: float) -> None:
        inc.primary = inc.headline or inc.primary
        inc.paged = True
        inc.last_page_event = clock
        self._sent(inc, clock, now)
        out.append(self._incident_alert(inc, "firing"))

    def _repeat(self, inc: Incident, out: List[Alert], clock: float, now: float) -> None:
        """The incident still firing after repeat_interval pages again (naming every member: no change stays held)."""
        inc.repeats += 1
        a = self._incident_alert(inc, "firing")
        a.alert_id = alert_id(a.fingerprint, a.event_ts, "repeat", str(inc.repeats))
        a.evidence["repeat"] = inc.repeats
        inc.last_page_event = clock
        self._sent(inc, clock, now)
        out.append(a)

    def _announce(self, inc: Incident, out: List[Alert], clock: float, now: float) -> None:
        """The held change in one message: an escalation wins over an update."""
        if inc.held == "escalated":
            inc.escalations += 1
            a = self._incident_alert(inc, "escalated")
            a.alert_id = alert_id(a.fingerprint, a.event_ts, "escalated", f"{inc.severity}|{inc.escalations}")
            inc.last_page_event = clock
        else:
            inc.updates += 1
            a = self._incident_alert(inc, "updated")
            a.alert_id = alert_id(a.fingerprint, a.event_ts, "updated", str(inc.updates))
        self._sent(inc, clock, now)
        out.append(a)

    def _resolve(self, inc: Incident, last: Alert, out: List[Alert]) -> None:
        if not inc.paged:
            self._page(inc, out, fired_at(last), self.clock())
        a = self._incident_alert(inc, "resolved")
        a.alert_id = alert_id(a.fingerprint, a.event_ts, "resolved", inc.severity)
        where = f"{a.service}/{a.model}" if a.model else (a.service or a.subject)
        a.summary = (f"Resolved: {where} is back to normal ({len(inc.members)} anomal"
                     f"{'y' if len(inc.members) == 1 else 'ies'} in this incident).")
        last_ev = last.evidence or {}
        a.evidence["resolved_event_time"] = last_ev.get("fired_event_time")
        if "resolved_by" in last_ev:  # a policy reload ended it (operators/budgets.py)
            a.evidence["resolved_by"] = last_ev["resolved_by"]
        out.append(a)

    def _incident_alert(self, inc: Incident, status: str) -> Alert:
        """A message of the incident: its headline member's alert under the incident's identity."""
        h = inc.headline or inc.primary
        p = inc.primary
        # The headline's ingest time is not this message's: the flow sets it from the
        # alert that triggered the message (see on_item).
        a = h.copy(alert_id=p.alert_id, fingerprint=p.fingerprint, event_time=p.event_time,
                   evidence=dict(h.evidence or {}), status=status, severity=inc.severity,
                   summary=_plain(h.summary), ingested_at=None)
        others = [m for fp, m in inc.members.items() if fp != h.fingerprint]
        if others:
            a.evidence["grouped"] = [dict(m) for m in others]
            if status in ("firing", "updated"):
                a.summary += f" {len(others)} related anomal{'y' if len(others) == 1 else 'ies'} grouped."
        if status == "escalated":
            a.summary = f"Escalated to {inc.severity}: " + a.summary
        a.detected_at = iso(time.time())
        return a

    # -- lifecycle ----------------------------------------------------------

    def _discard(self) -> bool:
        st = self.state
        if not st.incidents and self.clock() - st.last_wall >= self.cfg.idle_evict:
            return StatefulLogic.DISCARD
        return StatefulLogic.RETAIN


@operator
def incidents(
    step_id: str,
    up: KeyedStream[Alert],
    cfg: AlertingConfig,
    clock: Callable[[], float] = time.monotonic,
) -> KeyedStream[Union[Alert, StepFailure]]:
    """Per grouping key (:func:`group_key`): alerts folded into incidents, their messages out; an alert
    that raises is a :class:`StepFailure`. ``clock`` is the wall clock (monotonic seconds) of the
    group limits."""
    return stateful(up, guarded(step_name(step_id), lambda st: IncidentLogic(cfg, st, clock, batched=True),
                                clock=clock))
