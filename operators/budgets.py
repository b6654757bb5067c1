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
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

from bytewax.operators import StatefulLogic

from operators.alerts import alert_id, fingerprint, iso, make_alert, resolved
from sentinel.config import BudgetRule, PoliciesConfig
from sentinel.metrics import get_metrics

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
    firing: Optional[Dict[str, Any]] = None
    buckets: Dict[int, float] = field(default_factory=dict)  # minute -> spent
    actor: Optional[str] = None            # the tenant or user, for a rule with per: tenant | user


@dataclass
class _Guardrail:
    """Requests and guardrail breaches of the service in the current window."""

    window_start: float = float("-inf")
    requests: int = 0
    breaches: int = 0
    kinds: Dict[str, int] = field(default_factory=dict)
    firing: Optional[Dict[str, Any]] = None


@dataclass
class BudgetState:
    service: str
    meters: Dict[str, _Meter] = field(default_factory=dict)              # "<rule index>/<quantity>" -> meter
    guardrail: Dict[float, _Guardrail] = field(default_factory=dict)    # window start -> counts
    violations: Dict[str, Tuple[float, int, Dict[str, Any]]] = field(default_factory=dict)  # model -> (last, n, alert)
    last_ts: float = float("-inf")
    last_ingest: float = 0.0


def rules_for(policies: PoliciesConfig, service: str) -> List[Tuple[int, BudgetRule]]:
    """The budget rules that cover ``service`` (its own, and ``*``), with their indexes."""
    return [(i, r) for i, r in enumerate(policies.budgets) if r.service in (service, "*")]


class BudgetLogic(StatefulLogic[Tuple[str, List[Any]], Dict[str, Any], BudgetState]):
    """Per service: budget meters and the allowed-model check."""

    def __init__(self, policies: PoliciesConfig, state: Optional[BudgetState],
                 now: Any = time.time) -> None:
        self.policies = policies
        self.state = state
        self._now = now
        self._metrics = get_metrics()

    # -- the stream ------------------------------------------------------------

    def on_item(self, value: Tuple[str, str, List[Any], float]) -> Tuple[List[Dict[str, Any]], bool]:
        service, tag, events, ingested_at = value
        if self.state is None:
            self.state = BudgetState(service)
        st = self.state
        st.last_ingest = ingested_at
        out: List[Dict[str, Any]] = []
        if self.policies.guardrail_rate is not None:
            out.extend(self._guardrail(events, tag == "s"))
        if tag == "s":
            return out, False
        allowed = self.policies.allowed_models.get(service)
        rules = rules_for(self.policies, service)
        for ev in sorted(events, key=lambda e: e.ts):
            ts = ev.ts
            st.last_ts = max(st.last_ts, ts)
            if allowed is not None and ev.model not in allowed and ev.model != "(overflow)":
                out.extend(self._violation(ev.model, ts, allowed))
            if rules:
                tokens = (ev.input_tokens or 0) + (ev.output_tokens or 0)
                for i, rule in rules:
                    actor = None
                    if rule.per != "service":
                        actor = ev.tenant_id if rule.per == "tenant" else ev.user_id
                        if not actor:
                            continue
                    for quantity, limit, used in (("tokens", rule.tokens, tokens), ("cost_usd", rule.cost_usd,
                                                                                       ev.cost_usd or 0.0)):
                        if limit is None:
                            continue
                        key = f"{i}/{quantity}" if actor is None else f"{i}/{quantity}/{actor}"
                        meter = st.meters.get(key)
                        if meter is None:
                            if actor is not None and not self._room(st, i, rule, ts):
                                continue
                            meter = st.meters[key] = _Meter(quantity, float(limit), actor=actor)
                        out.extend(self._spend(rule, meter, ts, used))
        out.extend(self._quiet_violations(st.last_ts))
        return out, False

    def on_eof(self) -> Tuple[List[Dict[str, Any]], bool]:
        return [], False

    def snapshot(self) -> BudgetState:
        return copy.deepcopy(self.state)

    # -- budgets ---------------------------------------------------------------

    def _room(self, st: BudgetState, i: int, rule: BudgetRule, ts: float) -> bool:
        """Whether a new actor of rule ``i`` may have a meter: at most ``max_actors``; meters of windows
        that have ended (and page no more) make room first."""
        prefix = f"{i}/"
        mine = [k for k, m in st.meters.items() if k.startswith(prefix) and m.actor is not None]
        if len(mine) < rule.max_actors:
            return True
        for k in mine:
            m = st.meters[k]
            if m.window_start + rule.window <= ts and m.firing is None:
                del st.meters[k]
        return len([k for k in st.meters if k.startswith(prefix) and st.meters[k].actor is not None]) \
            < rule.max_actors

    def _spend(self, rule: BudgetRule, m: _Meter, ts: float, used: float) -> List[Dict[str, Any]]:
        out: List[Dict[str, Any]] = []
        w = rule.window
        start = (ts // w) * w
        if start > m.window_start:
            if m.firing is not None:
                out.append(resolved(m.firing, m.window_start + w))
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
                      exhausted_at: Optional[float]) -> Dict[str, Any]:
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
        alert["fingerprint"] = fingerprint("policy_violation", service, metric, subject)
        alert["alert_id"] = alert_id(alert["fingerprint"], start, status, severity)
        if first is None:
            m.firing = alert
        return alert

    # -- guardrail breach rate ---------------------------------------------------

    def _guardrail(self, events: List[Any], breaches: bool) -> List[Dict[str, Any]]:
        """Count requests or breaches into their windows; the two streams arrive in batches of their own,
        so the last two windows stay open and a window closes (and resolves) when a second newer opens."""
        rule = self.policies.guardrail_rate
        windows = self.state.guardrail
        out: List[Dict[str, Any]] = []
        for ev in sorted(events, key=lambda e: e.ts):
            start = (ev.ts // rule.window) * rule.window
            g = windows.get(start)
            if g is None:
                if windows and start < min(windows) and len(windows) >= 2:
                    continue  # a window already closed
                g = windows[start] = _Guardrail(window_start=start)
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

    def _guardrail_alert(self, rule: Any, g: _Guardrail, ts: float) -> Dict[str, Any]:
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
                      "window_start": iso(g.window_start), "fired_event_time": iso(ts)},
            summary=f"{g.breaches} guardrail breaches on {service} in {window} ({', '.join(kinds)}): "
                    f"{rate:.1%} of its {g.requests:,} requests, above {rule.max_rate:.1%}.",
            ingested_at=self.state.last_ingest, now=self._now())
        return g.firing

    # -- allowed models --------------------------------------------------------

    def _violation(self, model: str, ts: float, allowed: List[str]) -> List[Dict[str, Any]]:
        st = self.state
        seen = st.violations.get(model)
        if seen is not None:
            st.violations[model] = (max(seen[0], ts), seen[1] + 1, seen[2])
            return []
        self._metrics.anomaly("policy_violation", "medium", st.service, model)
        alert = make_alert(
            "policy_violation", "calls_to_model", 1, 0, 1.0, "medium", "model_allowlist", ts, st.service, model,
            subject=f"model:{model}",
            evidence={"model": model, "allowed_models": list(allowed), "fired_event_time": iso(ts)},
            summary=f"{st.service} called {model}, which is not among its allowed models "
                    f"({', '.join(allowed) or 'none'}).",
            ingested_at=st.last_ingest, now=self._now())
        st.violations[model] = (ts, 1, alert)
        return [alert]

    def _quiet_violations(self, now_ts: float) -> List[Dict[str, Any]]:
        out = []
        quiet = self.policies.violation_quiet
        for model, (last, n, alert) in list(self.state.violations.items()):
            if now_ts - last >= quiet:
                del self.state.violations[model]
                r = resolved(alert, last + quiet)
                r["evidence"]["calls"] = n
                out.append(r)
        return out


def first_ts(first: Optional[Dict[str, Any]], ts: float) -> float:
    """Event time of the episode's first page (every message of an episode keeps it)."""
    if first is None:
        return ts
    return datetime.fromisoformat(first["event_time"].replace("Z", "+00:00")).timestamp()


def budget_step(groups: Any, policies: PoliciesConfig, security_groups: Any = None) -> Any:
    """The ``budgets`` step on the parse step's service/model groups (and, for the guardrail rate, its
    security groups): a stream of (service, alert)."""
    import bytewax.operators as op

    from operators.guard import guarded
    from sentinel.events import KEY_SEP

    def by_service(kv: Tuple[str, tuple]) -> Tuple[str, tuple]:
        service = kv[0].split(KEY_SEP, 1)[0]
        _key, _partition, events, ingested_at = kv[1][:4]
        return service, (service, "m", events, ingested_at)

    keyed = op.map("budget_key", groups, by_service)
    if security_groups is not None and policies.guardrail_rate is not None:
        def breaches_by_service(kv: Tuple[str, tuple]) -> List[Tuple[str, tuple]]:
            _key, _partition, events, ingested_at = kv[1][:4]
            per: Dict[str, List[Any]] = {}
            for ev in events:
                if ev.service:
                    per.setdefault(ev.service, []).append(ev)
            return [(svc, (svc, "s", evs, ingested_at)) for svc, evs in per.items()]

        keyed = op.merge("budget_inputs", keyed, op.flat_map("budget_security_key", security_groups,
                                                             breaches_by_service))
    return op.stateful("budgets", keyed, guarded("budgets", lambda st: BudgetLogic(policies, st)))
