"""The incidents of a run: the seed's schedule (``incidents="auto"``) or the caller's list, and their labels."""

from __future__ import annotations

import math
import random
from typing import Any, Dict, List, Optional, Set, Tuple

from simulator.config import SimConfig
from simulator.fleet import SECURITY_CAP, SERVICES, Fleet, Key, N_USERS, RateCurve, pick, seeded
from simulator.io import format_time, to_epoch

INCIDENT_TYPES = (
    "latency",  # latency x3-x6 on one key (ttft unchanged)
    "ttft",  # ttft x4 on one streaming key, latency up by about a quarter of the added ttft
    "tokens",  # output tokens x3 on one key (latency and cost follow, as they would)
    "cost",  # cost per request x4 on one key, tokens and latency unchanged
    "error_rate",  # error rate 20-40 % on one key (rate_limit or server_error)
    "traffic",  # traffic down to 10 % on one key that normally has >= 1 event/s
    "drift",  # output/input tokens or cost per request of one key ramps up x1.5 over 60 min, then stays
    "token_abuse",  # one user sends 20-50x their usual token volume on one key
    "coordinated_attack",  # one source emits 30-60 security events in 5 minutes
)

DEFAULT_MAGNITUDE = {
    "latency": 4.0,
    "ttft": 4.0,
    "tokens": 3.0,
    "cost": 4.0,
    "error_rate": 0.3,
    "traffic": 0.1,
    "drift": 1.5,
    "token_abuse": 30.0,
    "coordinated_attack": 45.0,
}

# Metrics that move along with an incident's own, as they would in production.
# Labels carry them as ``effects``; scoring counts alerts of these types on the
# incident's key in its window as true (they detect nothing on their own).
_EFFECTS = {
    "latency": [],
    "ttft": ["latency"],
    "tokens": ["latency", "cost"],
    "cost": [],
    "error_rate": [],
    "traffic": [],
    "drift": ["tokens", "cost", "latency"],
    # The abuser's large inputs also lengthen prefill: ttft and latency on its key.
    "token_abuse": ["tokens", "cost", "latency", "ttft"],
    "coordinated_attack": [],
}

# What a drift moves (label ``metric``) -> the alert types it can legitimately
# raise besides ``drift`` (``ttft`` only where the key streams).
DRIFT_METRICS = ("output_tokens", "input_tokens", "cost_usd")
_DRIFT_EFFECTS = {
    "output_tokens": ["tokens", "cost", "latency"],
    "input_tokens": ["tokens", "cost", "latency", "ttft"],
    "cost_usd": ["cost"],
}
DRIFT_S = 3600.0  # length of an auto drift ramp
# A drift is still a drift after its ramp ends (the level stays), and detecting
# a slow ramp takes time: its matching window extends this far past the ramp.
DRIFT_GRACE_S = 1800.0

# The metric an incident moves first (label ``metric``, informative).
_PRIMARY_METRIC = {
    "latency": "latency_ms",
    "ttft": "ttft_ms",
    "tokens": "output_tokens",
    "cost": "cost_usd",
    "error_rate": "error_rate",
    "traffic": "request_rate",
    "token_abuse": "tokens_per_user",
    "coordinated_attack": "security_events",
}

WARMUP_S = 3600.0
INCIDENT_SPACING_S = 2400.0  # about one incident per 40 simulated minutes
ABUSER_RANKS = (30, 120)  # token_abuse picks a user of moderate activity (rank 1 = busiest)
_ATTACK_KINDS = (
    (0.50, "prompt_injection", "high"),
    (0.80, "jailbreak", "high"),
    (0.90, "policy_violation", "medium"),
    (1.0, "auth_failure", "low"),
)


class Incident:
    """One injected incident: what it is, where, when, how strong; :meth:`label` is its ground truth."""

    __slots__ = (
        "id", "type", "key", "service", "model", "subject", "user", "start", "end",
        "magnitude", "error_type", "attack", "detail", "metric", "effects",
    )

    def __init__(self, id: str, type: str, start: float, end: float) -> None:
        self.id = id
        self.type = type
        self.start, self.end = start, end
        self.key: Optional[int] = None  # index of the fleet key (None for coordinated_attack)
        self.service: Optional[str] = None
        self.model: Optional[str] = None
        self.subject: Optional[str] = None
        self.user: Optional[int] = None  # index of the abusing user (token_abuse)
        self.magnitude = 0.0
        self.error_type: Optional[str] = None
        self.attack: Optional[List[Tuple[float, Dict[str, Any]]]] = None  # the attack's events
        self.detail = ""
        self.metric: Optional[str] = _PRIMARY_METRIC.get(type)
        self.effects: List[str] = []

    def label(self) -> Dict[str, Any]:
        out = {
            "id": self.id,
            "type": self.type,
            "service": self.service,
            "model": self.model,
            "subject": self.subject,
            "start": format_time(self.start),
            "end": format_time(self.end),
            "magnitude": self.magnitude,
            "metric": self.metric,
            "effects": list(self.effects),
            "detail": self.detail,
        }
        if self.type == "drift":
            out["grace_s"] = DRIFT_GRACE_S
        return out

    def busy_until(self) -> float:
        """Until when this incident may still legitimately raise alerts on its key."""
        return self.end + (DRIFT_GRACE_S if self.type == "drift" else 0.0)


def plan_incidents(cfg: SimConfig, fleet: Fleet, curve: RateCurve) -> Tuple[List[Incident], Set[int]]:
    """The run's incidents by start time (attacks with their events) and the indexes of the keys that drift."""
    planner = _Planner(cfg, fleet, curve)
    if cfg.auto_incidents:
        incidents = planner.auto_schedule()
    else:
        incidents = [planner.from_dict(d, i) for i, d in enumerate(cfg.incidents)]
    incidents.sort(key=lambda x: (x.start, x.id))
    for inc in incidents:
        if inc.type == "coordinated_attack":
            inc.attack = attack_events(cfg.seed, inc)
    return incidents, planner.drift_keys


class _Planner:
    def __init__(self, cfg: SimConfig, fleet: Fleet, curve: RateCurve) -> None:
        self.cfg = cfg
        self.fleet = fleet
        self.curve = curve
        self.drift_keys: Set[int] = set()

    def auto_schedule(self) -> List[Incident]:
        """Slots after the warm-up, one incident type per slot (a drift takes two), shuffled by the seed."""
        cfg = self.cfg
        rng = seeded(cfg.seed, 3)
        avail = cfg.end - cfg.start - WARMUP_S
        if avail <= 0:
            return []

        def weight(typ: str) -> int:
            return 2 if typ == "drift" else 1  # a drift ramp needs two slots

        n = int(round(avail / INCIDENT_SPACING_S))  # slots
        if cfg.hours >= 6.0:
            n = max(n, sum(weight(t) for t in INCIDENT_TYPES))
        types = list(INCIDENT_TYPES)
        rng.shuffle(types)
        used = sum(weight(t) for t in types)
        if used > n:  # a short run: as many as fit, in the shuffled order
            chosen, used = [], 0
            for typ in types:
                if used + weight(typ) <= n:
                    chosen.append(typ)
                    used += weight(typ)
            types = chosen
        else:
            others = [t for t in INCIDENT_TYPES if t != "drift"]
            while used < n:
                typ = rng.choice(INCIDENT_TYPES)
                if used + weight(typ) > n:
                    typ = rng.choice(others)
                types.append(typ)
                used += weight(typ)
        out: List[Incident] = []
        if not types:
            return out
        unit = avail / used
        lead, tail = 120.0, 420.0  # quiet before; room for a late alert and recovery after
        cursor = cfg.start + WARMUP_S
        for i, typ in enumerate(types):
            span = weight(typ) * unit
            room = span - lead - tail
            if room >= 300.0:
                if typ == "drift":
                    dur = DRIFT_S
                elif typ == "coordinated_attack":
                    dur = 300.0
                else:
                    dur = float(rng.randint(5, 20) * 60)
                dur = min(dur, math.floor(room / 60.0) * 60.0)
                start = float(math.floor(cursor + lead + rng.uniform(0.0, room - dur)))
                out.append(self.make_auto(rng, i, typ, start, start + dur))
            cursor += span
        return out

    def make_auto(self, rng: random.Random, i: int, typ: str, start: float, end: float) -> Incident:
        fleet = self.fleet
        keys = fleet.keys
        inc = Incident(f"inc-{self.cfg.seed}-{i + 1:02d}-{typ}", typ, start, end)
        # keys with >= 1 event/s both now and over the hour before (the baseline)
        lam = min(self.curve.at(start), self.curve.at(start - 3600.0))
        busy = [k for k in keys if lam * k.share >= 1.0]
        if not busy:
            busy = [max(keys, key=lambda k: k.share)]
        key: Optional[Key]
        if typ == "latency":
            key = rng.choice(keys)
            inc.magnitude = round(rng.uniform(3.0, 6.0), 1)
        elif typ == "ttft":
            key = rng.choice([k for k in keys if k.streams])
            inc.magnitude = DEFAULT_MAGNITUDE["ttft"]
        elif typ == "tokens":
            key = rng.choice(keys)
            inc.magnitude = DEFAULT_MAGNITUDE["tokens"]
        elif typ == "cost":
            key = rng.choice(keys)
            inc.magnitude = DEFAULT_MAGNITUDE["cost"]
        elif typ == "error_rate":
            key = rng.choice(keys)
            inc.magnitude = round(rng.uniform(0.2, 0.4), 2)
            inc.error_type = rng.choice(("rate_limit", "server_error"))
        elif typ == "traffic":
            key = rng.choice(busy)
            inc.magnitude = DEFAULT_MAGNITUDE["traffic"]
        elif typ == "drift":
            fresh = [k for k in keys if k.index not in self.drift_keys]
            key = rng.choice(fresh or keys)
            inc.metric = rng.choice(("output_tokens", "output_tokens", "input_tokens", "cost_usd"))
            inc.magnitude = DEFAULT_MAGNITUDE["drift"]
        elif typ == "token_abuse":
            key = rng.choice(busy)
            inc.magnitude = float(rng.randint(20, 50))
            mid_ranks = [n for n, r in enumerate(fleet.user_rank) if ABUSER_RANKS[0] <= r <= ABUSER_RANKS[1]]
            inc.user = rng.choice(mid_ranks)
            inc.subject = "user:" + fleet.users[inc.user].user_id
        else:  # coordinated_attack
            key = None
            inc.magnitude = float(rng.randint(30, 60))
            inc.subject = f"203.0.113.{rng.randint(2, 250)}"
            inc.service = rng.choice(sorted(SERVICES))
            inc.model = None
        if key is not None:
            inc.key = key.index
            inc.service, inc.model = key.service, key.model
        inc.magnitude = self.scaled(typ, inc.magnitude, key)
        self.finish(inc, key)
        inc.detail = describe(inc)
        return inc

    def scaled(self, typ: str, m: float, key: Optional[Key]) -> float:
        """``m`` weakened (scale < 1) or strengthened (> 1) in log terms, toward the normal level."""
        s = self.cfg.magnitude_scale
        if s == 1.0:
            return m
        if typ == "error_rate":
            base = key.err if key is not None else 0.01
            return round(min(0.95, base * (m / base) ** s), 4)
        if typ == "coordinated_attack":
            return float(max(1, round(SECURITY_CAP * (m / SECURITY_CAP) ** s)))
        return round(m ** s, 3)

    def finish(self, inc: Incident, key: Optional[Key]) -> None:
        """Effects (and drift bookkeeping) once type, key and metric are known."""
        effects = list(_DRIFT_EFFECTS[inc.metric] if inc.type == "drift" else _EFFECTS[inc.type])
        if key is not None and not key.streams and "ttft" in effects:
            effects.remove("ttft")
        inc.effects = effects
        if inc.type == "drift" and key is not None:
            self.drift_keys.add(key.index)

    def from_dict(self, d: Dict[str, Any], i: int) -> Incident:
        fleet = self.fleet
        typ = d.get("type")
        if typ not in INCIDENT_TYPES:
            msg = f"incident {i}: unknown type {typ!r}; expected one of {', '.join(INCIDENT_TYPES)}"
            raise ValueError(msg)
        inc = Incident(str(d.get("id") or f"inc-{self.cfg.seed}-{i + 1:02d}-{typ}"), typ,
                       to_epoch(d["start"]), to_epoch(d["end"]))
        if inc.end <= inc.start:
            msg = f"incident {inc.id}: end must be after start"
            raise ValueError(msg)
        mag = d.get("magnitude")
        inc.magnitude = float(DEFAULT_MAGNITUDE[typ] if mag is None else mag)
        inc.error_type = d.get("error_type") or ("server_error" if typ == "error_rate" else None)
        inc.subject = d.get("subject")
        if typ == "drift":
            inc.metric = d.get("metric") or "output_tokens"
            if inc.metric not in DRIFT_METRICS:
                msg = f"incident {inc.id}: drift metric {inc.metric!r}; expected one of {', '.join(DRIFT_METRICS)}"
                raise ValueError(msg)
        key: Optional[Key] = None
        if typ == "coordinated_attack":
            inc.service, inc.model = d.get("service"), d.get("model")
            inc.subject = inc.subject or "203.0.113.66"
        else:
            key = fleet.key(d.get("service"), d.get("model"))
            if key is None:
                msg = (f"incident {inc.id}: unknown key {d.get('service')}/{d.get('model')}; "
                       f"known: {fleet.known_keys()}")
                raise ValueError(msg)
            if typ == "ttft" and not key.streams:
                msg = f"incident {inc.id}: {key.service}/{key.model} does not stream, it has no ttft"
                raise ValueError(msg)
            inc.key = key.index
            inc.service, inc.model = key.service, key.model
        if typ == "token_abuse":
            if inc.subject:
                uid = inc.subject[5:] if inc.subject.startswith("user:") else inc.subject
                if uid not in fleet.user_by_id:
                    msg = f"incident {inc.id}: unknown user {uid!r} (users are u0001..u{N_USERS:04d})"
                    raise ValueError(msg)
                inc.user = fleet.user_by_id[uid]
            else:
                inc.user = next(n for n, r in enumerate(fleet.user_rank) if r == 50)
            inc.subject = "user:" + fleet.users[inc.user].user_id
        self.finish(inc, key)
        inc.detail = d.get("detail") or describe(inc)
        return inc


def describe(inc: Incident) -> str:
    """The label's ``detail``: what the incident does, in words."""
    m = inc.magnitude
    if inc.type == "drift":
        what = {
            "output_tokens": "output tokens per request drift",
            "input_tokens": "input tokens per request drift",
            "cost_usd": "cost per request drifts",
        }[inc.metric]
        why = {
            "output_tokens": "a prompt change rolling out",
            "input_tokens": "retrieval returning ever more context",
            "cost_usd": "traffic moving to a dearer model version, tokens unchanged",
        }[inc.metric]
        return (f"{what} x{m:g} linearly over {(inc.end - inc.start) / 60.0:.0f} min and stay there "
                f"({why})")
    return {
        "latency": f"latency x{m:g} (slow decode at the provider)",
        "ttft": f"time to first token x{m:g} (prefill queueing)",
        "tokens": f"output tokens x{m:g} (verbose prompt regression)",
        "cost": f"cost per request x{m:g} (price table / routing bug, tokens unchanged)",
        "error_rate": f"error rate {m:.1%} ({inc.error_type})",
        "traffic": f"traffic down to {m:.0%} of normal (upstream outage)",
        "token_abuse": f"{inc.subject} sends {m:g}x their usual token volume with large inputs",
        "coordinated_attack": f"source {inc.subject} emits {int(m)} security events",
    }[inc.type]


def attack_events(seed: int, inc: Incident) -> List[Tuple[float, Dict[str, Any]]]:
    """The security events of a coordinated attack, fixed up front (their own random stream)."""
    rng = random.Random(f"{seed}:attack:{inc.id}:{inc.start}")
    n = max(1, int(round(inc.magnitude)))
    dur = inc.end - inc.start
    times = sorted(inc.start + rng.random() * dur for _ in range(n))
    services = sorted(SERVICES)
    out = []
    for t in times:
        _, kind, severity = pick(_ATTACK_KINDS, rng.random())
        svc = inc.service or rng.choice(services)
        ev = {"timestamp": None, "event_type": "security", "event_id": None, "source": inc.subject,
              "kind": kind, "severity": severity, "service": svc}
        if inc.model:
            ev["model"] = inc.model
        out.append((t, ev))
    return out
