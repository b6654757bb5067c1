"""Budgets and allowed models per service (``policies:``), on event time.

Keyed by service. For each budget rule that covers the service, token and
cost use is summed per window of event time (aligned to UTC: a ``1d``
window is a UTC day). Within a window the budget's episode pages at most
three times, each step an escalation of the one before:

- ``low``: the forecast. At the burn rate (the lower of the window's
  average and the rate of its last quarter, at most the last hour, at least
  the last five minutes) the budget is spent before the last twentieth of
  the window: "at this rate the daily cost budget of
  support-bot ($200) is gone by 15:40 UTC". It needs ``forecast_min_elapsed``
  of the window seen and ``forecast_min_share`` of the budget spent.
- ``medium``: ``warn`` (80% by default) of the budget is spent.
- ``high``: the budget is spent.

The episode resolves when the window ends (the budget starts again). Alerts
are of type ``policy_violation`` (detector ``budget``), subject
``budget:<tokens|cost_usd>/<window>``, or for a rule with ``per: tenant`` or
``per: user`` each tenant or user on its own (subject ``tenant:<id>`` or
``user:<id>``, at most ``max_actors`` of them per service and rule).

``allowed_models`` lists the models a service may call; a call to another
one is a ``policy_violation`` (detector ``model_allowlist``, subject
``model:<model>``, severity ``medium``), one episode per service and model,
resolved after ``violation_quiet`` of event time without such a call.

``guardrail_rate``: the security events that name the service (guardrail
breaches) per request of the service in a window of event time; more than
``max_rate`` of them (and at least ``min_events``) is a ``policy_violation``
(detector ``guardrail_rate``, subject ``guardrails/<window>``, ``medium``,
``high`` beyond twice the rate), one page per window, resolved once the
window after the next has begun (the requests and the security events come
in batches of their own, so two windows stay open).
Each breach is counted, none pages on its own.

The policies are read from a :class:`sentinel.policy_reload.PolicyHolder`,
which a watcher of the flow definition may replace while the flow runs. Each
service adopts a new version with its next batch (:meth:`BudgetLogic._adopt`):
a budget rule is known by its identity (service, per, window, and the
quantity: tokens or cost_usd), so a rule the new block keeps keeps its
meters and their spend, with its new budget and warn level; a new rule counts
from that batch on; a removed rule's open episode resolves. When a change
leaves an episode's level unearned (a budget raised above what is spent), the
episode resolves too and the next event pages again at whatever level the
new budget gives. A model the new block allows resolves its violation; a
changed guardrail window closes the open windows (resolving their pages) and
counts afresh. State restored from a snapshot is adopted the same way.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

from operators.alerts import alert_id, fingerprint, make_alert, resolved
from operators.guard import StepFailure, guarded
from operators.stateful import stateful, step_name
from sentinel.config import BudgetRule, PoliciesConfig
from sentinel.core.times import iso
from sentinel.core.types import Alert, KeyGroup
from sentinel.events import KEY_SEP
from sentinel.metrics import get_metrics
from sentinel.policy_reload import PolicyHolder

LEVELS = ("forecast", "warn", "exceeded")
SEVERITY = {"forecast": "low", "warn": "medium", "exceeded": "high"}
BUCKET = 60.0  # seconds of the burn-rate buckets
FORECAST_MARGIN = 0.05  # the forecast speaks when the budget would be gone before the window's last 5%


def _window_name(seconds: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return f"{seconds:g}s"


def _period(seconds: float) -> str:
    return {86400: "daily", 3600: "hourly", 60: "per-minute"}.get(int(seconds), _window_name(seconds))


@dataclass
class _Meter:
    """One rule and one quantity (tokens or cost) in the current window."""

    quantity: str
    budget: float
    window_start: float = float("-inf")
    spent: float = 0.0
    level: int = -1                        # index in LEVELS of the last level paged in this window
    firing: Optional[Alert] = None  # a dict in older snapshots
    buckets: Dict[int, float] = field(default_factory=dict)  # minute -> spent
    actor: Optional[str] = None            # the tenant or user, for a rule with per: tenant | user
    since: Optional[float] = None          # event time counting began, for a rule added while its window ran


@dataclass
class _Guardrail:
    """Requests and guardrail breaches of the service in the current window."""

    window_start: float = float("-inf")
    requests: int = 0
    breaches: int = 0
    kinds: Dict[str, int] = field(default_factory=dict)
    firing: Optional[Alert] = None  # a dict in older snapshots
    window: float = 0.0                    # its length (0: not recorded, a snapshot from before reloads)


@dataclass
class BudgetState:
    service: str
    meters: Dict[Tuple[str, str, Optional[str]], _Meter] = field(default_factory=dict)  # (rule, quantity, actor)
    guardrail: Dict[float, _Guardrail] = field(default_factory=dict)    # window start -> counts
    violations: Dict[str, Tuple[float, int, Alert]] = field(default_factory=dict)  # model -> (last, n, alert)
    last_ts: float = float("-inf")
    last_ingest: float = 0.0
    policy_version: str = ""               # the policies version the state was last adopted under
    rules_added: Dict[str, float] = field(default_factory=dict)  # rule -> event time a reload added it
    rule_set: Tuple[str, ...] = ()         # the rules covering the service under that version


QUANTITIES = ("tokens", "cost_usd")


def rule_keys(policies: PoliciesConfig) -> List[Tuple[str, BudgetRule, str]]:
    """Each budget rule's meters: (identity, rule, quantity), the identity being service, per, window and
    quantity (a second rule of the same identity gets #2)."""
    seen: Dict[str, int] = {}
    out = []
    for r in policies.budgets:
        for quantity in QUANTITIES:
            if getattr(r, quantity) is None:
                continue
            base = f"{r.service}|{r.per}|{_window_name(r.window)}|{quantity}"
            seen[base] = seen.get(base, 0) + 1
            out.append((base if seen[base] == 1 else f"{base}#{seen[base]}", r, quantity))
    return out


def rules_for(policies: PoliciesConfig, service: str) -> List[Tuple[str, BudgetRule, str]]:
    """The budget meters of the rules that cover ``service`` (its own, and ``*``): (identity, rule, quantity)."""
    return [k for k in rule_keys(policies) if k[1].service in (service, "*")]


def _earned(rule: BudgetRule, spent: float, budget: float) -> int:
    """The level (index in LEVELS) that ``spent`` has reached by itself, the forecast aside."""
    return 2 if spent >= budget else 1 if spent >= rule.warn * budget else -1


class BudgetLogic(StatefulLogic[Tuple[str, List[Any]], Alert, BudgetState]):
    """Per service: budget meters and the allowed-model check."""

    def __init__(self, holder: PolicyHolder, state: Optional[BudgetState],
                 now: Any = time.time) -> None:
        self.holder = holder
        self.version, self.policies = holder.current
        self.state = state
        self._now = now
        self._metrics = get_metrics()
        self._rules: Tuple[str, List[Tuple[str, BudgetRule, str]]] = ("", [])

    def _rules_of(self, service: str) -> List[Tuple[str, BudgetRule, str]]:
        """:func:`rules_for` the policies in force, worked out once per version."""
        if self._rules[0] != self.version:
            self._rules = (self.version, rules_for(self.policies, service))
        return self._rules[1]

    # -- the stream ------------------------------------------------------------

    def on_item(self, value: Tuple[str, str, List[Any], float]) -> Tuple[List[Alert], bool]:
        service, tag, events, ingested_at = value
        self.version, self.policies = self.holder.current
        out: List[Alert] = []
        if self.state is None:
            self.state = BudgetState(service, policy_version=self.version,
                                     rule_set=tuple(k[0] for k in self._rules_of(service)))
        elif getattr(self.state, "policy_version", "") != self.version:
            out.extend(self._adopt())
        st = self.state
        st.last_ingest = ingested_at
        if self.policies.guardrail_rate is not None:
            out.extend(self._guardrail(events, tag == "s"))
        if tag == "s":
            return out, self._idle()
        allowed = self.policies.allowed_models.get(service)
        rules = self._rules_of(service)
        if allowed is None and not rules:
            # No budget and no model list for the service (policies that are reloadable but say
            # nothing of it): only its clock moves, read off the batch's time column.
            stamps = getattr(events, "ts", None)
            if stamps is None:
                stamps = [ev.ts for ev in events]
            if stamps:
                st.last_ts = max(st.last_ts, max(stamps))
            out.extend(self._quiet_violations(st.last_ts))
            return out, self._idle()
        for ev in sorted(events, key=lambda e: e.ts):
            ts = ev.ts
            st.last_ts = max(st.last_ts, ts)
            if allowed is not None and ev.model not in allowed and ev.model != "(overflow)":
                out.extend(self._violation(ev.model, ts, allowed))
            if rules:
                used_by = {"tokens": (ev.input_tokens or 0) + (ev.output_tokens or 0), "cost_usd": ev.cost_usd or 0.0}
                for i, rule, quantity in rules:
                    actor = None
                    if rule.per != "service":
                        actor = ev.tenant_id if rule.per == "tenant" else ev.user_id
                        if not actor:
                            continue
                    key = (i, quantity, actor)
                    meter = st.meters.get(key)
                    if meter is None:
                        if actor is not None and not self._room(st, i, rule, ts):
                            continue
                        meter = st.meters[key] = _Meter(quantity, float(getattr(rule, quantity)), actor=actor)
                        added = getattr(st, "rules_added", {}).get(i)
                        if added is not None and (ts // rule.window) * rule.window <= added:
                            meter.since = ts  # its window ran before the rule came: spend before is unknown
                    out.extend(self._spend(rule, meter, ts, used_by[quantity]))
        out.extend(self._quiet_violations(st.last_ts))
        return out, self._idle()

    def _idle(self) -> bool:
        """Nothing to keep: no policy covers the service and nothing of it is open (the state is dropped)."""
        st, p = self.state, self.policies
        return (not st.meters and not st.violations and not st.guardrail and p.guardrail_rate is None
                and st.service not in p.allowed_models and not self._rules_of(st.service))

    def on_eof(self) -> Tuple[List[Alert], bool]:
        return [], False

    def snapshot(self) -> BudgetState:
        return copy.deepcopy(self.state)

    # -- budgets ---------------------------------------------------------------

    def _room(self, st: BudgetState, i: str, rule: BudgetRule, ts: float) -> bool:
        """Whether a new actor of rule ``i`` may have a meter: at most ``max_actors``; meters of windows
        that have ended (and page no more) make room first."""
        mine = [k for k, m in st.meters.items() if k[0] == i and m.actor is not None]
        if len(mine) < rule.max_actors:
            return True
        for k in mine:
            m = st.meters[k]
            if m.window_start + rule.window <= ts and m.firing is None:
                del st.meters[k]
        return len([k for k in st.meters if k[0] == i and st.meters[k].actor is not None]) < rule.max_actors

    # -- a new version of the policies ------------------------------------------------

    def _adopt(self) -> List[Alert]:
        """Carry the state over to the policies in force (a reload, or a snapshot taken under others)."""
        st, p = self.state, self.policies
        out: List[Alert] = []
        at = st.last_ts
        rules = {k: rule for k, rule, _ in self._rules_of(st.service)}
        if not hasattr(st, "rules_added"):
            st.rules_added = {}
        known = set()
        for key in list(st.meters):
            m = st.meters.pop(key)
            if isinstance(key, str):  # a snapshot of the index-keyed meters: "<rule index>/<quantity>[/<actor>]"
                idx, _, rest = key.partition("/")
                quantity, _, actor = rest.partition("/")
                budgets = p.budgets
                if not idx.isdigit() or int(idx) >= len(budgets) or quantity not in QUANTITIES:
                    continue
                was = budgets[int(idx)]
                ident = next((k for k, r, q in rule_keys(p) if r is was and q == quantity), None)
                if ident is None:
                    continue
                key = (ident, quantity, actor or None)
            known.add(key[0])
            rule = rules.get(key[0])
            limit = getattr(rule, m.quantity, None) if rule is not None else None
            if limit is None:
                if m.firing is not None:
                    out.append(self._close(m.firing, at, "rule_removed"))
                continue
            st.meters[key] = m
            m.budget = float(limit)
            if m.firing is not None and m.level >= 1 and _earned(rule, m.spent, m.budget) < m.level:
                out.append(self._close(m.firing, at, "budget_raised"))
                m.firing, m.level = None, -1
        known.update(getattr(st, "rule_set", ()))
        st.rule_set = tuple(rules)
        for k, rule in rules.items():
            if k not in known and k not in st.rules_added and at > float("-inf"):
                st.rules_added[k] = at
        for k, added in list(st.rules_added.items()):
            rule = rules.get(k)
            if rule is None or added < (at // rule.window) * rule.window:
                del st.rules_added[k]
        allowed = p.allowed_models.get(st.service)
        for model, (last, n, alert) in list(st.violations.items()):
            if allowed is None or model in allowed:
                del st.violations[model]
                r = self._close(alert, max(at, last), "model_allowed")
                r.evidence["calls"] = n
                out.append(r)
        g = p.guardrail_rate
        for start in sorted(st.guardrail):
            w = st.guardrail[start]
            size = getattr(w, "window", 0.0) or (g.window if g is not None and start % g.window == 0 else -1.0)
            if g is None or size != g.window:  # counted under another window: closed, counting starts afresh
                del st.guardrail[start]
                if w.firing is not None:
                    out.append(self._close(w.firing, max(at, start), "guardrail_rule_changed"))
        st.policy_version = self.version
        return out

    def _close(self, firing: Alert, at: float, reason: str) -> Alert:
        """The resolve message of an episode a new version of the policies ends."""
        r = resolved(firing, at if at > float("-inf") else first_ts(firing, at))
        r.evidence["resolved_by"] = reason
        r.evidence["policy_version"] = self.version
        return r

    def _spend(self, rule: BudgetRule, m: _Meter, ts: float, used: float) -> List[Alert]:
        out: List[Alert] = []
        w = rule.window
        start = (ts // w) * w
        if start > m.window_start:
            if m.firing is not None:
                out.append(resolved(m.firing, m.window_start + w))
            if m.since is not None and m.window_start > float("-inf"):
                m.since = None  # a whole window counted since
            m.window_start, m.spent, m.level, m.firing, m.buckets = start, 0.0, -1, None, {}
        elif start < m.window_start:
            return out  # a late event of a window already closed
        m.spent += used
        minute = int(ts // BUCKET)
        m.buckets[minute] = m.buckets.get(minute, 0.0) + used
        if len(m.buckets) > 120:
            for k in sorted(m.buckets)[:-120]:
                del m.buckets[k]
        level = -1
        exhausted_at = None
        if m.spent >= m.budget:
            level = 2
        elif m.spent >= rule.warn * m.budget:
            level = 1
        elif rule.forecast:
            exhausted_at = self._forecast(rule, m, ts)
            if exhausted_at is not None:
                level = 0
        if level > m.level:
            m.level = level
            out.append(self._budget_alert(rule, m, ts, LEVELS[level], exhausted_at))
        return out

    def _forecast(self, rule: BudgetRule, m: _Meter, ts: float) -> Optional[float]:
        """When the budget is gone at the recent burn rate, if before the window ends; else None."""
        elapsed = ts - m.window_start
        if elapsed < rule.forecast_min_elapsed or m.spent < rule.forecast_min_share * m.budget:
            return None
        lookback = min(max(rule.window / 4.0, 300.0), 3600.0, elapsed)
        first = int((ts - lookback) // BUCKET) + 1  # whole minutes from here on, and the current one
        span = ts - max(first * BUCKET, m.window_start)
        if span <= 0:
            return None
        recent = sum(v for k, v in m.buckets.items() if k >= first)
        # The lower of the recent and the window's average rate: a busy hour of a day that stays within
        # its budget is not extrapolated to the whole day.
        rate = min(recent / span, m.spent / elapsed)
        if rate <= 0:
            return None
        at = ts + (m.budget - m.spent) / rate
        # Gone before the last twentieth of the window: a day that ends near its budget is not an overspend.
        return at if at < m.window_start + rule.window * (1 - FORECAST_MARGIN) else None

    def _budget_alert(self, rule: BudgetRule, m: _Meter, ts: float, level: str,
                      exhausted_at: Optional[float]) -> Alert:
        service = self.state.service
        severity = SEVERITY[level]
        self._metrics.anomaly("policy_violation", severity, service, None)
        window = _window_name(rule.window)
        cost = m.quantity == "cost_usd"

        def amount(v: float) -> str:
            return f"${v:,.2f}" if cost else f"{v:,.0f} tokens"

        whose = service if m.actor is None else f"{rule.per}:{m.actor} on {service}"
        what = f"{_period(rule.window)} {'cost' if cost else 'token'} budget of {whose} ({amount(m.budget)})"
        share = m.spent / m.budget
        if level == "forecast":
            when = datetime.fromtimestamp(exhausted_at, timezone.utc).strftime("%H:%M")
            summary = f"At this rate the {what} is gone by {when} UTC: {amount(m.spent)} spent ({share:.0%})."
        elif level == "warn":
            summary = f"{share:.0%} of the {what} is spent ({amount(m.spent)})."
        else:
            summary = f"The {what} is spent: {amount(m.spent)} ({share:.0%})."
        evidence = {"budget": m.budget, "spent": round(m.spent, 6), "share": round(share, 4),
                    "window_seconds": rule.window, "window_start": iso(m.window_start),
                    "window_end": iso(m.window_start + rule.window), "level": level,
                    "fired_event_time": iso(ts)}
        if exhausted_at is not None:
            evidence["exhausted_at"] = iso(exhausted_at)
        if m.since is not None and m.since >= m.window_start:
            evidence["counted_since"] = iso(m.since)  # the rule came in this window: spend before it is not counted
        evidence["policy_version"] = self.version
        first = m.firing
        metric = f"budget_{m.quantity}_{window}"
        subject = f"budget:{m.quantity}/{window}" if m.actor is None else f"{rule.per}:{m.actor}"
        status = "firing" if first is None else "escalated"
        start = first_ts(first, ts)
        alert = make_alert(
            "policy_violation", metric, m.spent, m.budget, min(1.0, share), severity, "budget", start, service,
            None, subject=subject, evidence=evidence, summary=summary, ingested_at=self.state.last_ingest,
            now=self._now(), status=status)
        # One episode per budget: the metric (quantity and window) is part of its fingerprint.
        alert.fingerprint = fingerprint("policy_violation", service, metric, subject)
        alert.alert_id = alert_id(alert.fingerprint, start, status, severity)
        if first is None:
            m.firing = alert
        return alert

    # -- guardrail breach rate ---------------------------------------------------

    def _guardrail(self, events: List[Any], breaches: bool) -> List[Alert]:
        """Count requests or breaches into their windows; the two streams arrive in batches of their own,
        so the last two windows stay open and a window closes (and resolves) when a second newer opens."""
        rule = self.policies.guardrail_rate
        windows = self.state.guardrail
        out: List[Alert] = []
        for ev in sorted(events, key=lambda e: e.ts):
            start = (ev.ts // rule.window) * rule.window
            g = windows.get(start)
            if g is None:
                if windows and start < min(windows) and len(windows) >= 2:
                    continue  # a window already closed
                g = windows[start] = _Guardrail(window_start=start, window=rule.window)
                for old in sorted(windows)[:-2]:
                    closed = windows.pop(old)
                    if closed.firing is not None:
                        out.append(resolved(closed.firing, old + rule.window))
            if breaches:
                g.breaches += 1
                g.kinds[ev.kind] = g.kinds.get(ev.kind, 0) + 1
            else:
                g.requests += 1
            if (g.firing is None and g.breaches >= rule.min_events
                    and g.breaches > rule.max_rate * max(g.requests, 1)):
                out.append(self._guardrail_alert(rule, g, ev.ts))
        return out

    def _guardrail_alert(self, rule: Any, g: _Guardrail, ts: float) -> Alert:
        service = self.state.service
        rate = g.breaches / max(g.requests, 1)
        severity = "high" if rate > 2 * rule.max_rate else "medium"
        self._metrics.anomaly("policy_violation", severity, service, None)
        kinds = dict(sorted(g.kinds.items(), key=lambda kv: -kv[1])[:5])
        window = _window_name(rule.window)
        g.firing = make_alert(
            "policy_violation", f"guardrail_breach_rate_{window}", round(rate, 6), rule.max_rate, min(1.0, rate),
            severity, "guardrail_rate", ts, service, None, subject=f"guardrails/{window}",
            evidence={"breaches": g.breaches, "requests": g.requests, "kinds": kinds, "window_seconds": rule.window,
                      "window_start": iso(g.window_start), "fired_event_time": iso(ts),
                      "policy_version": self.version},
            summary=f"{g.breaches} guardrail breaches on {service} in {window} ({', '.join(kinds)}): "
                    f"{rate:.1%} of its {g.requests:,} requests, above {rule.max_rate:.1%}.",
            ingested_at=self.state.last_ingest, now=self._now())
        return g.firing

    # -- allowed models --------------------------------------------------------

    def _violation(self, model: str, ts: float, allowed: List[str]) -> List[Alert]:
        st = self.state
        seen = st.violations.get(model)
        if seen is not None:
            st.violations[model] = (max(seen[0], ts), seen[1] + 1, seen[2])
            return []
        self._metrics.anomaly("policy_violation", "medium", st.service, model)
        alert = make_alert(
            "policy_violation", "calls_to_model", 1, 0, 1.0, "medium", "model_allowlist", ts, st.service, model,
            subject=f"model:{model}",
            evidence={"model": model, "allowed_models": list(allowed), "fired_event_time": iso(ts),
                      "policy_version": self.version},
            summary=f"{st.service} called {model}, which is not among its allowed models "
                    f"({', '.join(allowed) or 'none'}).",
            ingested_at=st.last_ingest, now=self._now())
        st.violations[model] = (ts, 1, alert)
        return [alert]

    def _quiet_violations(self, now_ts: float) -> List[Alert]:
        out = []
        quiet = self.policies.violation_quiet
        for model, (last, n, alert) in list(self.state.violations.items()):
            if now_ts - last >= quiet:
                del self.state.violations[model]
                r = resolved(alert, last + quiet)
                r.evidence["calls"] = n
                out.append(r)
        return out


def first_ts(first: Optional[Alert], ts: float) -> float:
    """Event time of the episode's first page (every message of an episode keeps it; a dict in older snapshots)."""
    if first is None:
        return ts
    return Alert.of(first).event_ts


@operator
def budgets(
    step_id: str,
    up: KeyedStream[KeyGroup],
    security: KeyedStream[KeyGroup],
    policies: Union[PoliciesConfig, PolicyHolder],
    clock: Callable[[], float] = time.monotonic,
) -> KeyedStream[Union[Alert, StepFailure]]:
    """Per service: budgets and allowed models over the parse step's service/model groups (``up``) and,
    for the guardrail rate, its security groups (``security``: taken in when a guardrail rate is set, or
    when the policies may be reloaded, a hot :class:`PolicyHolder`); a group that raises is a
    :class:`StepFailure`. ``clock`` is the wall clock (monotonic seconds) of the step's guard."""

    def by_service(kv: Tuple[str, KeyGroup]) -> Optional[Tuple[str, tuple]]:
        _key, _partition, events, ingested_at = kv[1][:4]
        if events is None:  # a partition's quiet marker (budgets keep no windows)
            return None
        service = kv[0].split(KEY_SEP, 1)[0]
        return service, (service, "m", events, ingested_at)

    holder = policies if isinstance(policies, PolicyHolder) else PolicyHolder(policies)
    keyed = op.filter_map("budget_key", up, by_service)
    if holder.hot or holder.current[1].guardrail_rate is not None:
        def breaches_by_service(kv: Tuple[str, KeyGroup]) -> List[Tuple[str, tuple]]:
            _key, _partition, events, ingested_at = kv[1][:4]
            per: Dict[str, List[Any]] = {}
            for ev in events:
                if ev.service:
                    per.setdefault(ev.service, []).append(ev)
            return [(svc, (svc, "s", evs, ingested_at)) for svc, evs in per.items()]

        keyed = op.merge("budget_inputs", keyed, op.flat_map("budget_security_key", security, breaches_by_service))
    return stateful(keyed, guarded(step_name(step_id), lambda st: BudgetLogic(holder, st), clock=clock))
