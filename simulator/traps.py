"""Traps: changes in the data that are not incidents and must not alert (the diurnal swing, isolated extreme
requests, a planned ramp, a cold start), and their records."""

from __future__ import annotations

import bisect
import math
from typing import Any, Dict, List, NamedTuple, Sequence, Set

from simulator.config import SimConfig
from simulator.fleet import (
    COLD_START_KEYS, DIURNAL_AMPLITUDE, MODELS, SERVICES, Fleet, Key, RateCurve, diurnal, seeded,
)
from simulator.io import format_time, to_epoch
from simulator.schedule import Incident

TRAP_KINDS = ("diurnal", "planned_ramp", "cold_start", "extreme_request")
RAMP_S = 2700.0  # planned ramp: 45 minute cosine ramp ...
RAMP_FACTOR = 2.0  # ... to twice the key's traffic, which then stays
COLD_START_SHARE = 0.05  # a new key's traffic, as a share of the fleet rate
COLD_START_WINDOW_S = 3600.0  # the first hour of a new key must not alert
TRAP_AFTER_S = 600.0  # scoring looks this long past a trap's end
TRAP_CLEARANCE_S = 1800.0  # injected traps stay this far from incidents on their key
TRAP_PROBABILITY = 1.0 / 12_000  # isolated extreme requests per background request
EXTREME_LATENCY, EXTREME_TOKENS = 1, 2


def cosine_ramp(x: float) -> float:
    """0 at x <= 0, 1 at x >= 1, half a cosine in between.

    >>> cosine_ramp(-1.0), round(cosine_ramp(0.5), 9), cosine_ramp(2.0)
    (0.0, 0.5, 1.0)
    """
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    return 0.5 - 0.5 * math.cos(math.pi * x)


class TrafficTrap:
    """Extra traffic on one key: a planned ramp (existing key) or a cold start (new key)."""

    __slots__ = ("id", "kind", "key", "start", "end", "factor", "detail")

    def __init__(self, id: str, kind: str, key: Key, start: float, end: float, factor: float, detail: str) -> None:
        self.id = id
        self.kind = kind
        self.key = key
        self.start, self.end = start, end
        self.factor = factor
        self.detail = detail

    def extra(self, t: float) -> float:
        """The extra traffic at ``t``, as a multiple of the key's base rate."""
        if t < self.start:
            return 0.0
        if self.kind == "cold_start":
            return 1.0
        return (self.factor - 1.0) * cosine_ramp((t - self.start) / (self.end - self.start))

    def record(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "service": self.key.service,
            "model": self.key.model,
            "start": format_time(self.start),
            "end": format_time(self.end),
            "types": None,
            "magnitude": self.factor if self.kind == "planned_ramp" else None,
            "detail": self.detail,
        }


class Extreme(NamedTuple):
    """One isolated extreme request, drawn up front: when, on which key, by whom, what and its draws."""

    t: float
    key: int
    user: int
    kind: int  # EXTREME_LATENCY or EXTREME_TOKENS
    value: float  # where in the extreme range (0-1)
    z1: float
    z2: float
    z3: float
    z4: float


def key_busy(incidents: Sequence[Incident], key: int, a: float, b: float) -> bool:
    """Whether an incident on ``key`` may be alerting somewhere in ``[a, b]``."""
    return any(inc.key == key and inc.start < b and inc.busy_until() > a for inc in incidents)


def plan_traffic_traps(cfg: SimConfig, fleet: Fleet, incidents: Sequence[Incident],
                       drift_keys: Set[int]) -> List[TrafficTrap]:
    """The run's planned ramps and cold starts, by start time."""
    if isinstance(cfg.traps, str):
        traps = _auto_traps(cfg, fleet, incidents, drift_keys) if cfg.auto_incidents and cfg.hours >= 6.0 else []
    else:
        traps = [_trap_from_dict(cfg, fleet, d, i) for i, d in enumerate(cfg.traps or ())]
    traps.sort(key=lambda x: (x.start, x.id))
    return traps


def _auto_traps(cfg: SimConfig, fleet: Fleet, incidents: Sequence[Incident],
                drift_keys: Set[int]) -> List[TrafficTrap]:
    rng = seeded(cfg.seed, 4)
    out: List[TrafficTrap] = []
    keys = fleet.keys
    # a cold start: a key the fleet never used starts taking traffic
    svc, model, err = COLD_START_KEYS[int(rng.random() * len(COLD_START_KEYS))]
    offset = rng.uniform(2.0, 4.0) * 3600.0 if cfg.hours >= 8.0 else (cfg.hours / 2.0 - 0.5) * 3600.0
    start = float(math.floor((cfg.start + offset) / 60.0) * 60.0)
    out.append(TrafficTrap(
        f"trap-{cfg.seed}-cold-start", "cold_start", Key(len(keys), svc, model, COLD_START_SHARE, err),
        start, start + COLD_START_WINDOW_S, 1.0,
        f"new key {svc}/{model} starts taking traffic (about {COLD_START_SHARE:.0%} of the fleet's "
        f"requests, normal distributions); its first hour must not alert"))
    # a planned ramp: a launch doubles one key's traffic, away from its incidents
    lo, hi = cfg.start + 2.0 * 3600.0, cfg.end - RAMP_S - 3600.0
    for _ in range(1000):
        key = keys[int(rng.random() * len(keys))]
        s = float(math.floor(rng.uniform(lo, max(lo, hi)) / 60.0) * 60.0)
        if key.index in drift_keys or key_busy(incidents, key.index, s - TRAP_CLEARANCE_S,
                                               s + RAMP_S + TRAP_CLEARANCE_S):
            continue
        out.append(TrafficTrap(
            f"trap-{cfg.seed}-planned-ramp", "planned_ramp", key, s, s + RAMP_S, RAMP_FACTOR,
            f"planned launch: traffic x{RAMP_FACTOR:g} over {RAMP_S / 60.0:.0f} min (cosine ramp), "
            f"then stays there; latency, tokens and errors unchanged"))
        break
    return out


def _trap_from_dict(cfg: SimConfig, fleet: Fleet, d: Dict[str, Any], i: int) -> TrafficTrap:
    kind = d.get("kind")
    trap_id = str(d.get("id") or f"trap-{cfg.seed}-{i + 1:02d}-{kind}")
    svc, model = d.get("service"), d.get("model")
    if kind in ("diurnal", "extreme_request"):
        msg = f"trap {trap_id}: {kind} traps are always in the data and listed automatically"
        raise ValueError(msg)
    start = to_epoch(d["start"])
    if kind == "planned_ramp":
        key = fleet.key(svc, model)
        if key is None:
            msg = f"trap {trap_id}: unknown key {svc}/{model}; known: {fleet.known_keys()}"
            raise ValueError(msg)
        end = to_epoch(d["end"]) if d.get("end") is not None else start + RAMP_S
        mag = d.get("magnitude")
        factor = float(RAMP_FACTOR if mag is None else mag)
        if factor < 1.0:
            msg = f"trap {trap_id}: a planned ramp's magnitude must be >= 1, got {factor}"
            raise ValueError(msg)
        detail = d.get("detail") or (f"planned launch: traffic x{factor:g} over "
                                     f"{(end - start) / 60.0:.0f} min (cosine ramp), then stays there")
    elif kind == "cold_start":
        if svc not in SERVICES or model not in MODELS:
            msg = f"trap {trap_id}: a cold start needs a known service and model, got {svc}/{model}"
            raise ValueError(msg)
        if fleet.key(svc, model) is not None:
            msg = f"trap {trap_id}: {svc}/{model} is already in the fleet; a cold start needs a new key"
            raise ValueError(msg)
        share = float(d.get("share", COLD_START_SHARE))
        key = Key(len(fleet.keys) + i, svc, model, share, float(d.get("error_rate", 0.01)))
        end = to_epoch(d["end"]) if d.get("end") is not None else start + COLD_START_WINDOW_S
        factor = 1.0
        detail = d.get("detail") or f"new key {svc}/{model} starts taking traffic"
    else:
        msg = f"trap {trap_id}: unknown kind {kind!r}; expected planned_ramp or cold_start"
        raise ValueError(msg)
    if end <= start:
        msg = f"trap {trap_id}: end must be after start"
        raise ValueError(msg)
    return TrafficTrap(trap_id, kind, key, start, end, factor, detail)


def schedule_extremes(cfg: SimConfig, fleet: Fleet, curve: RateCurve) -> List[Extreme]:
    """Isolated extreme requests, fixed up front (Poisson, thinned to follow the diurnal rate)."""
    rng = seeded(cfg.seed, 14)
    out: List[Extreme] = []
    lam_max = cfg.rate * TRAP_PROBABILITY * (1.0 + DIURNAL_AMPLITUDE) / curve.mean_diurnal
    if lam_max <= 0.0:
        return out
    rand, gauss = rng.random, rng.gauss
    t = cfg.start
    while True:
        t += rng.expovariate(lam_max)
        if t >= cfg.end:
            break
        accept = rand() * lam_max < curve.at(t) * TRAP_PROBABILITY
        ki = bisect.bisect_right(fleet.key_cum, rand())
        ui = bisect.bisect_right(fleet.user_cum, rand())
        kind = EXTREME_LATENCY if rand() < 0.5 else EXTREME_TOKENS
        v = rand()
        z1, z2, z3, z4 = gauss(), gauss(), gauss(), gauss()
        if accept:
            out.append(Extreme(t, ki, ui, kind, v, z1, z2, z3, z4))
    return out


def trap_records(cfg: SimConfig, fleet: Fleet, curve: RateCurve, traffic_traps: Sequence[TrafficTrap],
                 extremes: Sequence[Extreme], incidents: Sequence[Incident]) -> List[Dict[str, Any]]:
    """Every trap of the run as a record (see :attr:`simulator.Simulator.traps`), by start time."""
    mults = [diurnal(cfg.start + x * (cfg.end - cfg.start) / 200.0) / curve.mean_diurnal for x in range(201)]
    recs: List[Dict[str, Any]] = [{
        "id": f"trap-{cfg.seed}-diurnal",
        "kind": "diurnal",
        "service": None,
        "model": None,
        "start": format_time(cfg.start),
        "end": format_time(cfg.end),
        "types": ["traffic"],
        "magnitude": round(max(mults) / min(mults), 3),
        "detail": (f"fleet traffic between x{min(mults):.2f} and x{max(mults):.2f} of the run's mean rate "
                   f"(daily cycle: trough 00:00 UTC, peak 12:00 UTC)"),
    }]
    recs += [tr.record() for tr in traffic_traps]
    n = 0
    for x in extremes:
        k = fleet.keys[x.key]
        if key_busy(incidents, x.key, x.t - TRAP_AFTER_S, x.t + TRAP_AFTER_S):
            continue  # inside an incident on its key: the label covers that stretch
        n += 1
        if x.kind == EXTREME_LATENCY:
            detail = f"one request with {(25000.0 + x.value * 15000.0) / 1000.0:.1f} s latency (a stuck stream)"
        else:
            detail = (f"one response of {min(int(15000 + x.value * 10000), k.max_out)} output tokens "
                      f"(a runaway answer)")
        recs.append({
            "id": f"trap-{cfg.seed}-extreme-{n:04d}",
            "kind": "extreme_request",
            "service": k.service,
            "model": k.model,
            "start": format_time(x.t),
            "end": format_time(x.t),
            "types": None,
            "magnitude": None,
            "detail": detail,
        })
    recs.sort(key=lambda r: (r["start"], TRAP_KINDS.index(r["kind"]), r["id"]))
    return recs
