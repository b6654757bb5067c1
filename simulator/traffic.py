"""The events themselves: background requests, incident and trap traffic, security events, in event-time order.

One request is built in two steps: :func:`incident_effects` (what the
incidents active on its key do to it at that moment, or that it is dropped)
and :func:`request_event` (the event, from the key's distributions, the
request's random draws and those effects).
"""

from __future__ import annotations

import bisect
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from simulator.config import SimConfig
from simulator.fleet import SECURITY_CAP, SECURITY_RATE, SERVICES, Fleet, Key, RateCurve, User, diurnal, pick, seeded
from simulator.schedule import Incident
from simulator.traps import EXTREME_LATENCY, EXTREME_TOKENS, Extreme, TrafficTrap

MAX_INPUT_TOKENS = 120_000
ABUSE_INPUT_TOKENS = 40_000.0  # median input of an abusive request
CHUNK_S = 60.0  # events are generated a minute of event time at a time
_BASE_ERRORS = ((0.45, "rate_limit"), (0.80, "server_error"), (1.0, "timeout"))
_SECURITY_KINDS = (
    (0.35, "rate_limited", "low"),
    (0.55, "auth_failure", "low"),
    (0.70, "prompt_injection", "medium"),
    (0.85, "policy_violation", "medium"),
    (0.93, "jailbreak", "high"),
    (1.0, "pii_leak", "high"),
)

Timed = Tuple[float, Dict[str, Any]]


class Draw(NamedTuple):
    """The random draws of one request: ``u`` (uniform: error or not, and which) and four normals
    (``z1`` ttft, ``z2`` decode speed, ``z3`` input tokens, ``z4`` output tokens)."""

    u: float
    z1: float
    z2: float
    z3: float
    z4: float


@dataclass
class Effects:
    """What the incidents active on a key do to one request: an error rate (None: the key's own) and type,
    and multipliers."""

    err_p: Optional[float] = None
    err_type: Optional[str] = None
    lat_x: float = 1.0
    ttft_x: float = 1.0
    tok_x: float = 1.0
    cost_x: float = 1.0
    in_x: float = 1.0


NO_EFFECTS = Effects()


def incident_effects(incs: Optional[List[Incident]], t: float, irng: random.Random) -> Optional[Effects]:
    """The effects at ``t`` of the incidents active on a key, or None when a traffic drop removes the request.

    A drift keeps its level after its ramp; the others act in ``[start, end)``.
    """
    if not incs:
        return NO_EFFECTS
    fx = None
    for inc in incs:
        if inc.start <= t:
            typ = inc.type
            if fx is None:
                fx = Effects()
            if typ == "drift":
                m = inc.magnitude
                f = m if t >= inc.end else 1.0 + (m - 1.0) * (t - inc.start) / (inc.end - inc.start)
                metric = inc.metric
                if metric == "output_tokens":
                    fx.tok_x *= f
                elif metric == "input_tokens":
                    fx.in_x *= f
                else:
                    fx.cost_x *= f
            elif t < inc.end:
                if typ == "traffic":
                    if irng.random() >= inc.magnitude:
                        return None
                elif typ == "error_rate":
                    fx.err_p = inc.magnitude
                    fx.err_type = inc.error_type
                elif typ == "latency":
                    fx.lat_x *= inc.magnitude
                elif typ == "ttft":
                    fx.ttft_x *= inc.magnitude
                elif typ == "tokens":
                    fx.tok_x *= inc.magnitude
                elif typ == "cost":
                    fx.cost_x *= inc.magnitude
    return fx or NO_EFFECTS


def request_event(
    k: Key, user: User, draw: Draw, fx: Effects,
    input_tokens: Optional[int] = None, extreme: int = 0, extreme_value: float = 0.0,
) -> Dict[str, Any]:
    """One ``llm.request`` event (``timestamp`` and ``event_id`` are filled in when it is emitted).

    ``input_tokens`` overrides the key's input distribution (an abuser's
    large inputs); ``extreme`` (:data:`~simulator.traps.EXTREME_LATENCY` or
    ``EXTREME_TOKENS``) makes it an isolated extreme request, ``extreme_value``
    (0-1) placing it in the extreme range.
    """
    err_p = k.err if fx.err_p is None else fx.err_p
    err_type = fx.err_type
    u, z1, z2, z3, z4 = draw
    ev: Dict[str, Any] = {
        "timestamp": None,
        "event_type": "llm.request",
        "event_id": None,
        "service": k.service,
        "model": k.model,
        "provider": k.provider,
        "model_version": k.version,
        "operation": k.operation,
        "region": user.region,
    }
    if u < err_p:
        if err_type is None:
            err_type = pick(_BASE_ERRORS, u / err_p)[1]
        if err_type == "rate_limit":
            lat = 90.0 * math.exp(0.4 * z1)
        elif err_type == "timeout":
            lat = 30000.0 + 40.0 * abs(z1)
        else:
            lat = 800.0 * math.exp(0.6 * z1)
        ev["latency_ms"] = round(lat, 1)
        ev["status"] = "error"
        ev["error_type"] = err_type
    else:
        if input_tokens is None:
            it = int(k.in_med * math.exp(k.in_sig * z3) * fx.in_x) + 1
            if it > MAX_INPUT_TOKENS:
                it = MAX_INPUT_TOKENS
        else:
            it = input_tokens
        ot = int(k.out_med * math.exp(k.out_sig * z4)) + 1
        if ot > k.max_out:
            ot = k.max_out
        if fx.tok_x != 1.0:
            ot = min(int(ot * fx.tok_x), k.max_out)
        if extreme == EXTREME_TOKENS:
            ot = min(int(15000 + extreme_value * 10000), k.max_out)
        ttft = k.ttft_med * math.exp(0.35 * z1) + it * k.prefill
        decode = ot * k.ms_per_tok * math.exp(0.25 * z2)
        lat = ttft + decode + 15.0
        if fx.ttft_x != 1.0:
            # a slow first chunk, then the rest of the stream in a burst:
            # latency grows by a quarter of the added ttft, never below ttft
            slow = ttft * fx.ttft_x
            lat = max(lat + 0.25 * (slow - ttft), slow + 0.25 * decode + 15.0)
            ttft = slow
        if fx.lat_x != 1.0:
            lat *= fx.lat_x
        if extreme == EXTREME_LATENCY:
            lat = 25000.0 + extreme_value * 15000.0
        cost = (it * k.p_in + ot * k.p_out) * fx.cost_x
        ev["latency_ms"] = round(lat, 1)
        if k.streams:
            ev["ttft_ms"] = round(ttft, 1)
        ev["input_tokens"] = it
        ev["output_tokens"] = ot
        ev["cost_usd"] = round(cost, 8)
        ev["status"] = "ok"
    ev["user_id"] = user.user_id
    ev["tenant_id"] = user.tenant_id
    ev["source_ip"] = user.source_ip
    return ev


class Traffic:
    """Generates a run's events from its fleet, rate curve, incidents and traps."""

    def __init__(self, cfg: SimConfig, fleet: Fleet, curve: RateCurve, incidents: Sequence[Incident],
                 traffic_traps: Sequence[TrafficTrap], extremes: Sequence[Extreme]) -> None:
        self.cfg = cfg
        self.fleet = fleet
        self.curve = curve
        self.incidents = incidents
        self.traffic_traps = traffic_traps
        self.extremes = extremes

    def events(self) -> Iterator[Dict[str, Any]]:
        """Every event of the run in non-decreasing event time (a fresh, identical pass each call)."""
        seed = self.cfg.seed
        rng = seeded(seed, 10)  # background requests
        irng = seeded(seed, 11)  # incident side effects (dropped events, abuse traffic)
        srng = seeded(seed, 12)  # background security events
        trng = seeded(seed, 13)  # trap traffic (planned ramp, cold start) and extreme requests
        recent: Dict[str, List[float]] = {}
        prefix = f"evt-{seed}-"
        n = 0
        last_sec = -1
        sec_text = ""
        extremes = self.extremes
        xi = 0
        t0, end = self.cfg.start, self.cfg.end
        while t0 < end:
            t1 = min(t0 + CHUNK_S, end)
            active = self._active(t0, t1)
            batch = self._requests(rng, irng, t0, t1, active)
            extra: List[Timed] = []
            self._abuse(irng, t0, t1, extra)
            self._security(srng, recent, t0, t1, extra)
            for inc in self.incidents:
                if inc.attack and inc.start < t1 and inc.end >= t0:
                    extra.extend((t, dict(ev)) for t, ev in inc.attack if t0 <= t < t1)
            if self.traffic_traps:
                self._trap_traffic(trng, t0, t1, active, extra)
            while xi < len(extremes) and extremes[xi].t < t1:
                x = extremes[xi]
                xi += 1
                fx = incident_effects(active.get(x.key), x.t, trng)
                if fx is not None:
                    draw = Draw(1.0, x.z1, x.z2, x.z3, x.z4)
                    extra.append((x.t, request_event(self.fleet.keys[x.key], self.fleet.users[x.user], draw, fx,
                                                     None, x.kind, x.value)))
            if extra:
                batch.extend(extra)
                batch.sort(key=_first)
            for t, ev in batch:
                ms = int(t * 1000.0)
                sec = ms // 1000
                if sec != last_sec:
                    last_sec = sec
                    sec_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
                ev["timestamp"] = "%s.%03dZ" % (sec_text, ms - sec * 1000)
                n += 1
                ev["event_id"] = prefix + str(n)
                yield ev
            t0 = t1

    def _active(self, t0: float, t1: float) -> Dict[int, List[Incident]]:
        """The incidents acting on each key's requests in ``[t0, t1)`` (token abuse adds requests instead)."""
        active: Dict[int, List[Incident]] = {}
        for inc in self.incidents:
            if (inc.key is not None and inc.type != "token_abuse" and inc.start < t1
                    and (inc.end > t0 or inc.type == "drift")):  # a drifted level stays
                active.setdefault(inc.key, []).append(inc)
        return active

    def _requests(
        self, rng: random.Random, irng: random.Random, t0: float, t1: float, active: Dict[int, List[Incident]],
    ) -> List[Timed]:
        """Background requests in ``[t0, t1)``: Poisson at the curve's rate, keys and users by their shares."""
        lam = self.curve.at(0.5 * (t0 + t1))
        out: List[Timed] = []
        if lam <= 0.0:
            return out
        rand, gauss, expo = rng.random, rng.gauss, rng.expovariate
        fleet = self.fleet
        key_cum, user_cum, keys, users = fleet.key_cum, fleet.user_cum, fleet.keys, fleet.users
        bis = bisect.bisect_right
        append = out.append
        t = t0
        while True:
            t += expo(lam)
            if t >= t1:
                break
            key = keys[bis(key_cum, rand())]
            user = users[bis(user_cum, rand())]
            draw = Draw(rand(), gauss(), gauss(), gauss(), gauss())
            if active:
                incs = active.get(key.index)
                if incs:
                    fx = incident_effects(incs, t, irng)
                    if fx is None:
                        continue
                    append((t, request_event(key, user, draw, fx)))
                    continue
            append((t, request_event(key, user, draw, NO_EFFECTS)))
        return out

    def _trap_traffic(
        self, trng: random.Random, t0: float, t1: float, active: Dict[int, List[Incident]], out: List[Timed],
    ) -> None:
        """Planned-ramp and cold-start requests on top of the background (thinned to follow the ramp)."""
        lam = self.curve.at(0.5 * (t0 + t1))
        users, user_cum = self.fleet.users, self.fleet.user_cum
        bis = bisect.bisect_right
        rand, gauss = trng.random, trng.gauss
        for tr in self.traffic_traps:
            if tr.start >= t1:
                continue
            gmax = tr.extra(t1)  # the extra traffic never decreases
            if gmax <= 0.0:
                continue
            k = tr.key
            rate = lam * k.share * gmax
            incs = active.get(k.index)
            t = max(t0, tr.start)
            while True:
                t += trng.expovariate(rate)
                if t >= t1:
                    break
                keep = rand() * gmax < tr.extra(t)
                user = users[bis(user_cum, rand())]
                draw = Draw(rand(), gauss(), gauss(), gauss(), gauss())
                if not keep:
                    continue
                fx = incident_effects(incs, t, trng)
                if fx is not None:
                    out.append((t, request_event(k, user, draw, fx)))

    def _abuse(self, irng: random.Random, t0: float, t1: float, out: List[Timed]) -> None:
        """The abuser's extra requests (large inputs) of every token-abuse incident in ``[t0, t1)``."""
        fleet = self.fleet
        for inc in self.incidents:
            if inc.type != "token_abuse" or inc.start >= t1 or inc.end <= t0:
                continue
            k = fleet.keys[inc.key]
            user = fleet.users[inc.user]
            a, b = max(t0, inc.start), min(t1, inc.end)
            usual = user.share * self.curve.at(0.5 * (a + b)) * fleet.mean_tokens  # tokens/s
            per_request = ABUSE_INPUT_TOKENS * math.exp(0.3 * 0.3 / 2) + k.out_med * math.exp(k.out_sig * k.out_sig / 2)
            lam = (inc.magnitude - 1.0) * usual / per_request
            if lam <= 0.0:
                continue
            rand, gauss = irng.random, irng.gauss
            t = a
            while True:
                t += irng.expovariate(lam)
                if t >= b:
                    break
                it = min(int(ABUSE_INPUT_TOKENS * math.exp(0.3 * gauss())), MAX_INPUT_TOKENS)
                z1, z2, z4 = gauss(), gauss(), gauss()
                out.append((t, request_event(k, user, Draw(rand(), z1, z2, 0.0, z4), NO_EFFECTS, it)))

    def _security(
        self, srng: random.Random, recent: Dict[str, List[float]], t0: float, t1: float, out: List[Timed],
    ) -> None:
        """Background security events in ``[t0, t1)``, at most :data:`SECURITY_CAP` per source per 5 minutes."""
        lam = SECURITY_RATE * diurnal(0.5 * (t0 + t1)) / self.curve.mean_diurnal
        fleet = self.fleet
        sources = fleet.security_sources
        services = sorted(SERVICES)
        t = t0
        while True:
            t += srng.expovariate(lam)
            if t >= t1:
                break
            for _ in range(20):
                src = sources[int(srng.random() * len(sources))]
                hist = [x for x in recent.get(src, ()) if x > t - 300.0]
                if len(hist) < SECURITY_CAP:
                    break
            hist.append(t)
            recent[src] = hist
            _, kind, severity = pick(_SECURITY_KINDS, srng.random())
            ev: Dict[str, Any] = {"timestamp": None, "event_type": "security", "event_id": None,
                                  "source": src, "kind": kind, "severity": severity}
            if kind in ("prompt_injection", "jailbreak", "pii_leak", "policy_violation"):
                k = fleet.keys[bisect.bisect_right(fleet.key_cum, srng.random())]
                ev["service"], ev["model"] = k.service, k.model
            else:
                ev["service"] = services[int(srng.random() * len(services))]
            out.append((t, ev))
        if len(recent) > 4096:  # forget sources quiet for five minutes
            for src in [s for s, h in recent.items() if not h or h[-1] <= t1 - 300.0]:
                del recent[src]


def _first(pair: Timed) -> float:
    return pair[0]
