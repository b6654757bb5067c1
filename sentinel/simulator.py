"""Seeded, deterministic LLM telemetry with labelled incidents and traps (SPEC section 3).

:class:`Simulator` generates the canonical events of SPEC section 1 for a small
fleet (four services calling ten service/model keys), in non-decreasing event
time, together with

* ``labels``: one dict per injected incident, the ground truth that
  :mod:`benchmarks.scoring` matches alerts against, and
* ``traps``: one dict per change in the data that is *not* an incident and must
  not raise an alert (scored separately as trap alerts).

Everything comes from ``random.Random`` instances derived from ``seed``; no
wall clock is read, so the same arguments always give byte-identical output.

What the background looks like:

* Poisson arrivals with a diurnal swing (rate x ``1 - 0.4 cos(2 pi h / 24)``,
  h = UTC hour: trough at 00:00, peak at 12:00), normalised so the run's mean
  rate is ``rate`` events/s.
* Per key: log-normal input / output tokens, ttft = log-normal base plus a
  prefill term, latency = ttft + output tokens / decode speed (so latency is
  proportional to output tokens and heavy-tailed), cost = tokens x the model's
  price, a 0.5-2 % error rate (``rate_limit``, ``server_error``, ``timeout``;
  error events carry no ttft, tokens or cost; timeouts take 30 s).
  ``doc-summarizer`` does not stream, so its events carry no ``ttft_ms``.
* 200 users in 24 tenants with Zipf-like activity, each with a home region and
  a source IP.
* Security events at about 0.02/s spread over ~1,700 sources, never more than
  three from one source within five minutes.

Traps (:attr:`Simulator.traps`, written to ``<base>.traps.jsonl``):

* ``diurnal``: the swing above, recorded as one trap over the whole run (it
  concerns ``traffic`` alerts only, on any key).
* ``extreme_request``: roughly one isolated extreme request per 12,000 (a 25-40
  s latency or a 15-25k token response, capped at the model's maximum output),
  each recorded with its key and time. They are generated whatever the
  incidents are; those within 10 minutes of an incident on the same key are
  not listed.
* ``planned_ramp`` (auto, ``hours >= 6``): the traffic of one key doubles
  along a 45 minute cosine ramp and stays doubled (a launch); nothing else of
  the key changes.
* ``cold_start`` (auto, ``hours >= 6``): a service/model key absent until then
  (for example ``support-bot/gpt-5-mini``) starts receiving traffic mid-run
  with its own normal distributions; its first hour is the trap.

Injected traps never overlap an incident on the same key (30 minutes apart at
least) and avoid keys that drift.

Incidents (``incidents="auto"``): after a 60 minute warm-up, about one per 40
simulated minutes (at least one of each of the nine types when ``hours >= 6``),
each in its own slot of the run so no two overlap, each 5-20 minutes long
(``coordinated_attack`` exactly 5; a ``drift`` ramp 60 minutes and two slots),
ending at least 7 minutes before the next slot. See :data:`INCIDENT_TYPES` and
:meth:`Simulator._build` for what each does. ``magnitude_scale`` weakens (< 1)
or strengthens (> 1) every auto incident in log terms without changing the
schedule: a latency x5 at scale 0.5 is a latency x5**0.5 = x2.24.
"""

from __future__ import annotations

import bisect
import calendar
import math
import random
import time
from datetime import datetime
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

try:
    import orjson

    def _dumps_line(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)

except ImportError:  # pragma: no cover - orjson is a dependency, json is the fallback
    import json

    def _dumps_line(obj: Any) -> bytes:
        return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


DEFAULT_START = float(calendar.timegm((2026, 1, 5, 0, 0, 0)))  # 2026-01-05T00:00:00Z

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

TRAP_KINDS = ("diurnal", "planned_ramp", "cold_start", "extreme_request")
RAMP_S = 2700.0  # planned ramp: 45 minute cosine ramp ...
RAMP_FACTOR = 2.0  # ... to twice the key's traffic, which then stays
COLD_START_SHARE = 0.05  # a new key's traffic, as a share of the fleet rate
COLD_START_WINDOW_S = 3600.0  # the first hour of a new key must not alert
TRAP_AFTER_S = 600.0  # scoring looks this long past a trap's end
TRAP_CLEARANCE_S = 1800.0  # injected traps stay this far from incidents on their key

# model: provider, model_version, $ per 1M input tokens, $ per 1M output tokens,
#        median ttft ms, prefill ms per 1k input tokens, decode tokens/s, max output tokens
MODELS: Dict[str, Tuple[str, str, float, float, float, float, float, int]] = {
    "gpt-4o": ("openai", "gpt-4o-2024-11-20", 2.50, 10.00, 450.0, 25.0, 85.0, 16384),
    "gpt-4o-mini": ("openai", "gpt-4o-mini-2024-07-18", 0.15, 0.60, 320.0, 15.0, 95.0, 16384),
    "gpt-5-mini": ("openai", "gpt-5-mini-2025-08-07", 0.25, 2.00, 520.0, 12.0, 110.0, 128000),
    "claude-sonnet-4": ("anthropic", "claude-sonnet-4-20250514", 3.00, 15.00, 650.0, 30.0, 75.0, 64000),
    "claude-3-5-haiku": ("anthropic", "claude-3-5-haiku-20241022", 0.80, 4.00, 380.0, 15.0, 120.0, 8192),
    "gemini-2.0-flash": ("google", "gemini-2.0-flash-001", 0.10, 0.40, 260.0, 10.0, 170.0, 8192),
}

# service: operation, streams (emits ttft), (input median, sigma), (output median, sigma)
SERVICES: Dict[str, Tuple[str, bool, Tuple[float, float], Tuple[float, float]]] = {
    "support-bot": ("chat", True, (900.0, 0.55), (170.0, 0.60)),
    "code-assist": ("chat", True, (2600.0, 0.70), (260.0, 0.65)),
    "search-rag": ("chat", True, (3800.0, 0.45), (160.0, 0.50)),
    "doc-summarizer": ("chat", False, (7000.0, 0.80), (220.0, 0.45)),
}

# service, model, share of traffic, baseline error rate
FLEET: Tuple[Tuple[str, str, float, float], ...] = (
    ("support-bot", "gpt-4o-mini", 0.22, 0.008),
    ("support-bot", "claude-3-5-haiku", 0.10, 0.012),
    ("support-bot", "gpt-4o", 0.05, 0.010),
    ("code-assist", "claude-sonnet-4", 0.14, 0.015),
    ("code-assist", "gpt-4o", 0.07, 0.010),
    ("code-assist", "gpt-4o-mini", 0.04, 0.006),
    ("search-rag", "gemini-2.0-flash", 0.17, 0.020),
    ("search-rag", "gpt-4o-mini", 0.09, 0.007),
    ("doc-summarizer", "claude-sonnet-4", 0.06, 0.018),
    ("doc-summarizer", "gemini-2.0-flash", 0.06, 0.005),
)

# Keys an auto cold start may bring up (none is in FLEET), with their error rate.
COLD_START_KEYS: Tuple[Tuple[str, str, float], ...] = (
    ("support-bot", "gpt-5-mini", 0.010),
    ("code-assist", "gpt-5-mini", 0.012),
    ("search-rag", "gpt-5-mini", 0.010),
    ("search-rag", "claude-3-5-haiku", 0.012),
    ("doc-summarizer", "gpt-4o-mini", 0.008),
)

DIURNAL_AMPLITUDE = 0.4
MAX_INPUT_TOKENS = 120_000
TRAP_PROBABILITY = 1.0 / 12_000  # isolated extreme requests per background request
WARMUP_S = 3600.0
INCIDENT_SPACING_S = 2400.0  # about one incident per 40 simulated minutes
SECURITY_RATE = 0.02  # background security events per second
SECURITY_CAP = 3  # at most this many background events per source per 5 minutes
N_USERS = 200
ABUSER_RANKS = (30, 120)  # token_abuse picks a user of moderate activity (rank 1 = busiest)
ABUSE_INPUT_TOKENS = 40_000.0  # median input of an abusive request
N_TENANTS = 24
_CHUNK_S = 60.0
_BASE_ERRORS = ((0.45, "rate_limit"), (0.80, "server_error"), (1.0, "timeout"))
_REGIONS = ((0.6, "us-east-1"), (0.9, "eu-west-1"), (1.0, "ap-southeast-1"))
_SECURITY_KINDS = (
    (0.35, "rate_limited", "low"),
    (0.55, "auth_failure", "low"),
    (0.70, "prompt_injection", "medium"),
    (0.85, "policy_violation", "medium"),
    (0.93, "jailbreak", "high"),
    (1.0, "pii_leak", "high"),
)
_ATTACK_KINDS = (
    (0.50, "prompt_injection", "high"),
    (0.80, "jailbreak", "high"),
    (0.90, "policy_violation", "medium"),
    (1.0, "auth_failure", "low"),
)
_EXTREME_LATENCY, _EXTREME_TOKENS = 1, 2

Incidents = Union[str, Sequence[Dict[str, Any]]]
Traps = Union[str, None, Sequence[Dict[str, Any]]]


def to_epoch(value: Union[str, int, float]) -> float:
    """Epoch seconds from an RFC 3339 string (with offset) or a number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            msg = f"timestamp {value!r} has no UTC offset"
            raise ValueError(msg)
        return dt.timestamp()
    msg = f"not a timestamp: {value!r}"
    raise TypeError(msg)


def format_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-01-05T00:00:00.000Z``."""
    sec, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%03dZ" % frac


def format_time(ts: float) -> str:
    return format_ms(int(math.floor(ts * 1000.0 + 1e-6)))


def companion_paths(path: str) -> Tuple[str, str]:
    """The labels and traps files that go with an events file: ``<base>.labels.jsonl``, ``<base>.traps.jsonl``."""
    base = path[: -len(".jsonl")] if path.endswith(".jsonl") else path
    return base + ".labels.jsonl", base + ".traps.jsonl"


def _pick(table: Sequence[tuple], x: float) -> tuple:
    for row in table:
        if x < row[0]:
            return row
    return table[-1]


def _cosine_ramp(x: float) -> float:
    """0 at x <= 0, 1 at x >= 1, half a cosine in between."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    return 0.5 - 0.5 * math.cos(math.pi * x)


class _Key:
    __slots__ = (
        "index", "service", "model", "provider", "version", "operation", "streams",
        "share", "err", "in_med", "in_sig", "out_med", "out_sig", "max_out",
        "ttft_med", "prefill", "ms_per_tok", "p_in", "p_out", "mean_tokens",
    )

    def __init__(self, index: int, service: str, model: str, share: float, err: float) -> None:
        provider, version, p_in, p_out, ttft, prefill, tps, max_out = MODELS[model]
        operation, streams, (in_med, in_sig), (out_med, out_sig) = SERVICES[service]
        self.index = index
        self.service = service
        self.model = model
        self.provider = provider
        self.version = version
        self.operation = operation
        self.streams = streams
        self.share = share
        self.err = err
        self.in_med, self.in_sig = in_med, in_sig
        self.out_med, self.out_sig = out_med, out_sig
        self.max_out = max_out
        self.ttft_med = ttft
        self.prefill = prefill / 1000.0
        self.ms_per_tok = 1000.0 / tps
        self.p_in = p_in / 1e6
        self.p_out = p_out / 1e6
        self.mean_tokens = in_med * math.exp(in_sig * in_sig / 2) + out_med * math.exp(out_sig * out_sig / 2)


class _User:
    __slots__ = ("user_id", "tenant_id", "source_ip", "region", "share")

    def __init__(self, user_id: str, tenant_id: str, source_ip: str, region: str, share: float) -> None:
        self.user_id = user_id
        self.tenant_id = tenant_id
        self.source_ip = source_ip
        self.region = region
        self.share = share


class _Incident:
    __slots__ = (
        "id", "type", "key", "service", "model", "subject", "user", "start", "end",
        "magnitude", "error_type", "attack", "detail", "metric", "effects",
    )

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


class _TrafficTrap:
    """Extra traffic on one key: a planned ramp (existing key) or a cold start (new key)."""

    __slots__ = ("id", "kind", "key", "start", "end", "factor", "detail")

    def extra(self, t: float) -> float:
        """The extra traffic at ``t``, as a multiple of the key's base rate."""
        if t < self.start:
            return 0.0
        if self.kind == "cold_start":
            return 1.0
        return (self.factor - 1.0) * _cosine_ramp((t - self.start) / (self.end - self.start))

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


class Simulator:
    """Deterministic telemetry for one run of ``hours`` from ``start``.

    Parameters
    ----------
    seed
        Everything random derives from it.
    start
        Event time of the run's start, epoch seconds (or an RFC 3339 string).
    hours
        Length of the run in event time.
    rate
        Mean number of background ``llm.request`` events per second over the
        run (planned-ramp and cold-start traffic come on top).
    incidents
        ``"auto"`` for the seed's schedule, or a list of dicts shaped like
        :attr:`labels` (``type``, ``service``, ``model``, optional ``subject``,
        ``start``, ``end``, optional ``magnitude``; for ``drift`` optional
        ``metric``, one of :data:`DRIFT_METRICS`); ``[]`` for none.
    traps
        ``"auto"``: with ``incidents="auto"`` and ``hours >= 6``, one planned
        ramp and one cold start on the seed's schedule, else none. Or a list of
        dicts: ``{"kind": "planned_ramp", "service", "model", "start",
        optional "end" (default start + 45 min), optional "magnitude" (default
        2.0)}`` or ``{"kind": "cold_start", "service", "model" (a pair not in
        the fleet), "start", optional "end" (default start + 1 h), optional
        "share" (default 0.05), optional "error_rate"}``. ``None`` or ``[]``
        for none. The diurnal swing and the isolated extreme requests are
        always in the data and always listed in :attr:`traps`.
    magnitude_scale
        Scales every *auto* incident's magnitude in log terms (``m ** scale``
        for factors; ``base * (m / base) ** scale`` for an error rate against
        the key's own; ``3 * (m / 3) ** scale`` attack events against the
        background's cap of 3). Types, keys and times stay the same, so runs
        at different scales are comparable.

    Examples
    --------
    >>> sim = Simulator(seed=1, hours=0.05, rate=5.0, incidents=[])
    >>> evs = list(sim.events())
    >>> evs[0]["timestamp"] <= evs[-1]["timestamp"]
    True
    >>> sim.labels
    []
    >>> [t["kind"] for t in sim.traps]
    ['diurnal']
    """

    def __init__(
        self,
        seed: int = 7,
        start: Union[float, str] = DEFAULT_START,
        hours: float = 6.0,
        rate: float = 18.5,
        incidents: Incidents = "auto",
        traps: Traps = "auto",
        magnitude_scale: float = 1.0,
    ) -> None:
        if hours <= 0:
            msg = f"hours must be > 0, got {hours!r}"
            raise ValueError(msg)
        if rate < 0:
            msg = f"rate must be >= 0, got {rate!r}"
            raise ValueError(msg)
        if not magnitude_scale > 0:
            msg = f"magnitude_scale must be > 0, got {magnitude_scale!r}"
            raise ValueError(msg)
        self.seed = int(seed)
        self.start = to_epoch(start)
        self.hours = float(hours)
        self.rate = float(rate)
        self.magnitude_scale = float(magnitude_scale)
        self.end = self.start + self.hours * 3600.0
        self._keys = [_Key(i, s, m, sh, e) for i, (s, m, sh, e) in enumerate(FLEET)]
        total = sum(k.share for k in self._keys)
        acc = 0.0
        self._key_cum: List[float] = []
        for k in self._keys:
            k.share /= total
            acc += k.share
            self._key_cum.append(acc)
        self._key_cum[-1] = 1.0
        self._key_index = {(k.service, k.model): k for k in self._keys}
        self._mean_tokens = sum(k.share * k.mean_tokens for k in self._keys)
        self._mean_diurnal = self._diurnal_mean(self.start, self.end)
        self._build_users()
        self._build_security_sources()
        self._drift_keys: Set[int] = set()
        auto = isinstance(incidents, str)
        if auto:
            if incidents != "auto":
                msg = f"incidents must be 'auto' or a list of dicts, got {incidents!r}"
                raise ValueError(msg)
            self._incidents = self._auto_schedule()
        else:
            self._incidents = [self._from_dict(d, i) for i, d in enumerate(incidents)]
        self._incidents.sort(key=lambda x: (x.start, x.id))
        for inc in self._incidents:
            if inc.type == "coordinated_attack":
                inc.attack = self._attack_events(inc)
        if isinstance(traps, str):
            if traps != "auto":
                msg = f"traps must be 'auto', None or a list of dicts, got {traps!r}"
                raise ValueError(msg)
            self._traffic_traps = self._auto_traps() if auto and self.hours >= 6.0 else []
        else:
            self._traffic_traps = [self._trap_from_dict(d, i) for i, d in enumerate(traps or ())]
        self._traffic_traps.sort(key=lambda x: (x.start, x.id))
        self._extremes = self._schedule_extremes()
        self._trap_list = self._trap_records()

    # ------------------------------------------------------------------ setup

    def _rng(self, stream: int) -> random.Random:
        return random.Random(self.seed * 1_000_003 + stream)

    def _build_users(self) -> None:
        rng = self._rng(1)
        tenants = [f"t{n:03d}" for n in range(1, N_TENANTS + 1)]
        ips: List[str] = []
        seen = set()
        while len(ips) < N_USERS:
            ip = f"{rng.choice(('198.51.100', '192.0.2'))}.{rng.randint(1, 254)}"
            if ip not in seen:
                seen.add(ip)
                ips.append(ip)
        ranks = list(range(1, N_USERS + 1))
        rng.shuffle(ranks)
        weights = [1.0 / r for r in ranks]  # Zipf, exponent 1
        total = sum(weights)
        self._users: List[_User] = []
        self._user_rank: List[int] = ranks
        for n in range(N_USERS):
            # every tenant has users; a few big tenants hold most of them
            t_index = n if n < N_TENANTS else min(int(rng.paretovariate(1.2)) - 1, N_TENANTS - 1)
            tenant = tenants[t_index]
            region = _pick(_REGIONS, rng.random())[1]
            self._users.append(_User(f"u{n + 1:04d}", tenant, ips[n], region, weights[n] / total))
        acc = 0.0
        self._user_cum: List[float] = []
        for u in self._users:
            acc += u.share
            self._user_cum.append(acc)
        self._user_cum[-1] = 1.0
        self._user_by_id = {u.user_id: i for i, u in enumerate(self._users)}

    def _build_security_sources(self) -> None:
        rng = self._rng(2)
        sources = [u.source_ip for u in self._users]
        sources += [f"100.{rng.randint(64, 127)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(1200)]
        sources += [f"key:{rng.getrandbits(40):010x}" for _ in range(300)]
        self._sec_sources = sources

    # ------------------------------------------------------------- traffic

    @staticmethod
    def _diurnal(t: float) -> float:
        return 1.0 - DIURNAL_AMPLITUDE * math.cos(2.0 * math.pi * (t % 86400.0) / 86400.0)

    @staticmethod
    def _diurnal_mean(t0: float, t1: float) -> float:
        w = 2.0 * math.pi / 86400.0
        if t1 - t0 < 1e-9:
            return Simulator._diurnal(t0)
        return 1.0 - DIURNAL_AMPLITUDE * (math.sin(w * t1) - math.sin(w * t0)) / (w * (t1 - t0))

    def rate_at(self, t: float, service: Optional[str] = None, model: Optional[str] = None) -> float:
        """Expected background ``llm.request`` rate (events/s) at event time ``t``, fleet-wide or for one key.

        Background only: planned-ramp and cold-start traffic (:attr:`traps`) come on top.
        """
        lam = self.rate * self._diurnal(t) / self._mean_diurnal
        if service is not None:
            lam *= self._key_index[(service, model)].share
        return lam

    @property
    def keys(self) -> List[Dict[str, Any]]:
        """The fleet: one dict per service/model key (a cold-start key is listed in :attr:`traps`)."""
        return [
            {"service": k.service, "model": k.model, "provider": k.provider, "share": k.share,
             "streams": k.streams, "error_rate": k.err}
            for k in self._keys
        ]

    @property
    def expected_events(self) -> float:
        """Expected number of ``llm.request`` events: background plus planned-ramp and cold-start traffic.

        (Incidents and the few extreme requests are not counted.)
        """
        n = self.rate * self.hours * 3600.0
        for tr in self._traffic_traps:
            t = max(self.start, tr.start)
            while t < self.end:
                t1 = min(t + _CHUNK_S, self.end)
                mid = 0.5 * (t + t1)
                n += self.rate_at(mid) * tr.key.share * tr.extra(mid) * (t1 - t)
                t = t1
        return n

    # ------------------------------------------------------------ incidents

    @property
    def labels(self) -> List[Dict[str, Any]]:
        """One dict per injected incident.

        Fields: id, type, service, model, subject, start, end, magnitude,
        metric (what it moves first), effects (alert types it can legitimately
        raise besides its own), detail; a drift also has ``grace_s`` (how long
        past ``end`` an alert still detects it: the drifted level stays).
        """
        return [inc.label() for inc in self._incidents]

    def _auto_schedule(self) -> List[_Incident]:
        rng = self._rng(3)
        avail = self.end - self.start - WARMUP_S
        if avail <= 0:
            return []

        def weight(typ: str) -> int:
            return 2 if typ == "drift" else 1  # a drift ramp needs two slots

        n = int(round(avail / INCIDENT_SPACING_S))  # slots
        if self.hours >= 6.0:
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
        out: List[_Incident] = []
        if not types:
            return out
        unit = avail / used
        lead, tail = 120.0, 420.0  # quiet before; room for a late alert and recovery after
        cursor = self.start + WARMUP_S
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
                out.append(self._make_auto(rng, i, typ, start, start + dur))
            cursor += span
        return out

    def _make_auto(self, rng: random.Random, i: int, typ: str, start: float, end: float) -> _Incident:
        inc = _Incident()
        inc.id = f"inc-{self.seed}-{i + 1:02d}-{typ}"
        inc.type = typ
        inc.start, inc.end = start, end
        inc.subject = None
        inc.user = None
        inc.error_type = None
        inc.attack = None
        inc.metric = _PRIMARY_METRIC.get(typ)
        # keys with >= 1 event/s both now and over the hour before (the baseline)
        lam = min(self.rate_at(start), self.rate_at(start - 3600.0))
        busy = [k for k in self._keys if lam * k.share >= 1.0]
        if not busy:
            busy = [max(self._keys, key=lambda k: k.share)]
        if typ == "latency":
            key = rng.choice(self._keys)
            inc.magnitude = round(rng.uniform(3.0, 6.0), 1)
        elif typ == "ttft":
            key = rng.choice([k for k in self._keys if k.streams])
            inc.magnitude = DEFAULT_MAGNITUDE["ttft"]
        elif typ == "tokens":
            key = rng.choice(self._keys)
            inc.magnitude = DEFAULT_MAGNITUDE["tokens"]
        elif typ == "cost":
            key = rng.choice(self._keys)
            inc.magnitude = DEFAULT_MAGNITUDE["cost"]
        elif typ == "error_rate":
            key = rng.choice(self._keys)
            inc.magnitude = round(rng.uniform(0.2, 0.4), 2)
            inc.error_type = rng.choice(("rate_limit", "server_error"))
        elif typ == "traffic":
            key = rng.choice(busy)
            inc.magnitude = DEFAULT_MAGNITUDE["traffic"]
        elif typ == "drift":
            fresh = [k for k in self._keys if k.index not in self._drift_keys]
            key = rng.choice(fresh or self._keys)
            inc.metric = rng.choice(("output_tokens", "output_tokens", "input_tokens", "cost_usd"))
            inc.magnitude = DEFAULT_MAGNITUDE["drift"]
        elif typ == "token_abuse":
            key = rng.choice(busy)
            inc.magnitude = float(rng.randint(20, 50))
            mid_ranks = [n for n, r in enumerate(self._user_rank) if ABUSER_RANKS[0] <= r <= ABUSER_RANKS[1]]
            inc.user = rng.choice(mid_ranks)
            inc.subject = "user:" + self._users[inc.user].user_id
        else:  # coordinated_attack
            key = None
            inc.magnitude = float(rng.randint(30, 60))
            inc.subject = f"203.0.113.{rng.randint(2, 250)}"
            inc.service = rng.choice(sorted(SERVICES))
            inc.model = None
        if key is not None:
            inc.key = key.index
            inc.service, inc.model = key.service, key.model
        else:
            inc.key = None
        inc.magnitude = self._scaled(typ, inc.magnitude, key)
        self._finish(inc, key)
        inc.detail = self._detail(inc)
        return inc

    def _scaled(self, typ: str, m: float, key: Optional[_Key]) -> float:
        """``m`` weakened (scale < 1) or strengthened (> 1) in log terms, toward the normal level."""
        s = self.magnitude_scale
        if s == 1.0:
            return m
        if typ == "error_rate":
            base = key.err if key is not None else 0.01
            return round(min(0.95, base * (m / base) ** s), 4)
        if typ == "coordinated_attack":
            return float(max(1, round(SECURITY_CAP * (m / SECURITY_CAP) ** s)))
        return round(m ** s, 3)

    def _finish(self, inc: _Incident, key: Optional[_Key]) -> None:
        """Effects (and drift bookkeeping) once type, key and metric are known."""
        effects = list(_DRIFT_EFFECTS[inc.metric] if inc.type == "drift" else _EFFECTS[inc.type])
        if key is not None and not key.streams and "ttft" in effects:
            effects.remove("ttft")
        inc.effects = effects
        if inc.type == "drift" and key is not None:
            self._drift_keys.add(key.index)

    def _from_dict(self, d: Dict[str, Any], i: int) -> _Incident:
        typ = d.get("type")
        if typ not in INCIDENT_TYPES:
            msg = f"incident {i}: unknown type {typ!r}; expected one of {', '.join(INCIDENT_TYPES)}"
            raise ValueError(msg)
        inc = _Incident()
        inc.type = typ
        inc.id = str(d.get("id") or f"inc-{self.seed}-{i + 1:02d}-{typ}")
        inc.start, inc.end = to_epoch(d["start"]), to_epoch(d["end"])
        if inc.end <= inc.start:
            msg = f"incident {inc.id}: end must be after start"
            raise ValueError(msg)
        mag = d.get("magnitude")
        inc.magnitude = float(DEFAULT_MAGNITUDE[typ] if mag is None else mag)
        inc.error_type = d.get("error_type") or ("server_error" if typ == "error_rate" else None)
        inc.subject = d.get("subject")
        inc.user = None
        inc.attack = None
        inc.metric = _PRIMARY_METRIC.get(typ)
        if typ == "drift":
            inc.metric = d.get("metric") or "output_tokens"
            if inc.metric not in DRIFT_METRICS:
                msg = f"incident {inc.id}: drift metric {inc.metric!r}; expected one of {', '.join(DRIFT_METRICS)}"
                raise ValueError(msg)
        key: Optional[_Key] = None
        if typ == "coordinated_attack":
            inc.key = None
            inc.service, inc.model = d.get("service"), d.get("model")
            inc.subject = inc.subject or "203.0.113.66"
        else:
            key = self._key_index.get((d.get("service"), d.get("model")))
            if key is None:
                known = ", ".join(f"{k.service}/{k.model}" for k in self._keys)
                msg = f"incident {inc.id}: unknown key {d.get('service')}/{d.get('model')}; known: {known}"
                raise ValueError(msg)
            if typ == "ttft" and not key.streams:
                msg = f"incident {inc.id}: {key.service}/{key.model} does not stream, it has no ttft"
                raise ValueError(msg)
            inc.key = key.index
            inc.service, inc.model = key.service, key.model
        if typ == "token_abuse":
            if inc.subject:
                uid = inc.subject[5:] if inc.subject.startswith("user:") else inc.subject
                if uid not in self._user_by_id:
                    msg = f"incident {inc.id}: unknown user {uid!r} (users are u0001..u{N_USERS:04d})"
                    raise ValueError(msg)
                inc.user = self._user_by_id[uid]
            else:
                inc.user = next(n for n, r in enumerate(self._user_rank) if r == 50)
            inc.subject = "user:" + self._users[inc.user].user_id
        self._finish(inc, key)
        inc.detail = d.get("detail") or self._detail(inc)
        return inc

    def _detail(self, inc: _Incident) -> str:
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

    def _attack_events(self, inc: _Incident) -> List[Tuple[float, Dict[str, Any]]]:
        rng = random.Random(f"{self.seed}:attack:{inc.id}:{inc.start}")
        n = max(1, int(round(inc.magnitude)))
        dur = inc.end - inc.start
        times = sorted(inc.start + rng.random() * dur for _ in range(n))
        services = sorted(SERVICES)
        out = []
        for t in times:
            _, kind, severity = _pick(_ATTACK_KINDS, rng.random())
            svc = inc.service or rng.choice(services)
            ev = {"timestamp": None, "event_type": "security", "event_id": None, "source": inc.subject,
                  "kind": kind, "severity": severity, "service": svc}
            if inc.model:
                ev["model"] = inc.model
            out.append((t, ev))
        return out

    # ---------------------------------------------------------------- traps

    @property
    def traps(self) -> List[Dict[str, Any]]:
        """One dict per trap (a change that is not an incident and must not alert), by start time.

        Fields: id, kind (one of :data:`TRAP_KINDS`), service, model (None for
        ``diurnal``: every key), start, end, types (the alert types it
        concerns; None for any), magnitude, detail.
        """
        return [dict(t) for t in self._trap_list]

    def _key_busy(self, key: int, a: float, b: float) -> bool:
        """Whether an incident on ``key`` may be alerting somewhere in ``[a, b]``."""
        return any(inc.key == key and inc.start < b and inc.busy_until() > a for inc in self._incidents)

    def _auto_traps(self) -> List[_TrafficTrap]:
        rng = self._rng(4)
        out: List[_TrafficTrap] = []
        # a cold start: a key the fleet never used starts taking traffic
        svc, model, err = COLD_START_KEYS[int(rng.random() * len(COLD_START_KEYS))]
        offset = rng.uniform(2.0, 4.0) * 3600.0 if self.hours >= 8.0 else (self.hours / 2.0 - 0.5) * 3600.0
        tr = _TrafficTrap()
        tr.id = f"trap-{self.seed}-cold-start"
        tr.kind = "cold_start"
        tr.key = _Key(len(self._keys), svc, model, COLD_START_SHARE, err)
        tr.start = float(math.floor((self.start + offset) / 60.0) * 60.0)
        tr.end = tr.start + COLD_START_WINDOW_S
        tr.factor = 1.0
        tr.detail = (f"new key {svc}/{model} starts taking traffic (about {COLD_START_SHARE:.0%} of the fleet's "
                     f"requests, normal distributions); its first hour must not alert")
        out.append(tr)
        # a planned ramp: a launch doubles one key's traffic, away from its incidents
        lo, hi = self.start + 2.0 * 3600.0, self.end - RAMP_S - 3600.0
        for _ in range(1000):
            key = self._keys[int(rng.random() * len(self._keys))]
            s = float(math.floor(rng.uniform(lo, max(lo, hi)) / 60.0) * 60.0)
            if key.index in self._drift_keys or self._key_busy(key.index, s - TRAP_CLEARANCE_S,
                                                               s + RAMP_S + TRAP_CLEARANCE_S):
                continue
            tr = _TrafficTrap()
            tr.id = f"trap-{self.seed}-planned-ramp"
            tr.kind = "planned_ramp"
            tr.key = key
            tr.start, tr.end = s, s + RAMP_S
            tr.factor = RAMP_FACTOR
            tr.detail = (f"planned launch: traffic x{RAMP_FACTOR:g} over {RAMP_S / 60.0:.0f} min (cosine ramp), "
                         f"then stays there; latency, tokens and errors unchanged")
            out.append(tr)
            break
        return out

    def _trap_from_dict(self, d: Dict[str, Any], i: int) -> _TrafficTrap:
        kind = d.get("kind")
        tr = _TrafficTrap()
        tr.kind = kind
        tr.id = str(d.get("id") or f"trap-{self.seed}-{i + 1:02d}-{kind}")
        svc, model = d.get("service"), d.get("model")
        if kind in ("diurnal", "extreme_request"):
            msg = f"trap {tr.id}: {kind} traps are always in the data and listed automatically"
            raise ValueError(msg)
        tr.start = to_epoch(d["start"])
        if kind == "planned_ramp":
            key = self._key_index.get((svc, model))
            if key is None:
                known = ", ".join(f"{k.service}/{k.model}" for k in self._keys)
                msg = f"trap {tr.id}: unknown key {svc}/{model}; known: {known}"
                raise ValueError(msg)
            tr.key = key
            tr.end = to_epoch(d["end"]) if d.get("end") is not None else tr.start + RAMP_S
            mag = d.get("magnitude")
            tr.factor = float(RAMP_FACTOR if mag is None else mag)
            if tr.factor < 1.0:
                msg = f"trap {tr.id}: a planned ramp's magnitude must be >= 1, got {tr.factor}"
                raise ValueError(msg)
            tr.detail = d.get("detail") or (f"planned launch: traffic x{tr.factor:g} over "
                                            f"{(tr.end - tr.start) / 60.0:.0f} min (cosine ramp), then stays there")
        elif kind == "cold_start":
            if svc not in SERVICES or model not in MODELS:
                msg = f"trap {tr.id}: a cold start needs a known service and model, got {svc}/{model}"
                raise ValueError(msg)
            if (svc, model) in self._key_index:
                msg = f"trap {tr.id}: {svc}/{model} is already in the fleet; a cold start needs a new key"
                raise ValueError(msg)
            share = float(d.get("share", COLD_START_SHARE))
            tr.key = _Key(len(self._keys) + i, svc, model, share, float(d.get("error_rate", 0.01)))
            tr.end = to_epoch(d["end"]) if d.get("end") is not None else tr.start + COLD_START_WINDOW_S
            tr.factor = 1.0
            tr.detail = d.get("detail") or f"new key {svc}/{model} starts taking traffic"
        else:
            msg = f"trap {tr.id}: unknown kind {kind!r}; expected planned_ramp or cold_start"
            raise ValueError(msg)
        if tr.end <= tr.start:
            msg = f"trap {tr.id}: end must be after start"
            raise ValueError(msg)
        return tr

    def _schedule_extremes(self) -> List[Tuple[float, int, int, int, float, float, float, float, float]]:
        """Isolated extreme requests, fixed up front (Poisson, thinned to follow the diurnal rate)."""
        rng = self._rng(14)
        out: List[Tuple[float, int, int, int, float, float, float, float, float]] = []
        lam_max = self.rate * TRAP_PROBABILITY * (1.0 + DIURNAL_AMPLITUDE) / self._mean_diurnal
        if lam_max <= 0.0:
            return out
        rand, gauss = rng.random, rng.gauss
        t = self.start
        while True:
            t += rng.expovariate(lam_max)
            if t >= self.end:
                break
            accept = rand() * lam_max < self.rate_at(t) * TRAP_PROBABILITY
            ki = bisect.bisect_right(self._key_cum, rand())
            ui = bisect.bisect_right(self._user_cum, rand())
            kind = _EXTREME_LATENCY if rand() < 0.5 else _EXTREME_TOKENS
            v = rand()
            z1, z2, z3, z4 = gauss(), gauss(), gauss(), gauss()
            if accept:
                out.append((t, ki, ui, kind, v, z1, z2, z3, z4))
        return out

    def _trap_records(self) -> List[Dict[str, Any]]:
        mults = [self._diurnal(self.start + x * (self.end - self.start) / 200.0) / self._mean_diurnal
                 for x in range(201)]
        recs: List[Dict[str, Any]] = [{
            "id": f"trap-{self.seed}-diurnal",
            "kind": "diurnal",
            "service": None,
            "model": None,
            "start": format_time(self.start),
            "end": format_time(self.end),
            "types": ["traffic"],
            "magnitude": round(max(mults) / min(mults), 3),
            "detail": (f"fleet traffic between x{min(mults):.2f} and x{max(mults):.2f} of the run's mean rate "
                       f"(daily cycle: trough 00:00 UTC, peak 12:00 UTC)"),
        }]
        recs += [tr.record() for tr in self._traffic_traps]
        n = 0
        for t, ki, _ui, kind, v, *_ in self._extremes:
            k = self._keys[ki]
            if self._key_busy(ki, t - TRAP_AFTER_S, t + TRAP_AFTER_S):
                continue  # inside an incident on its key: the label covers that stretch
            n += 1
            if kind == _EXTREME_LATENCY:
                detail = f"one request with {(25000.0 + v * 15000.0) / 1000.0:.1f} s latency (a stuck stream)"
            else:
                detail = f"one response of {min(int(15000 + v * 10000), k.max_out)} output tokens (a runaway answer)"
            recs.append({
                "id": f"trap-{self.seed}-extreme-{n:04d}",
                "kind": "extreme_request",
                "service": k.service,
                "model": k.model,
                "start": format_time(t),
                "end": format_time(t),
                "types": None,
                "magnitude": None,
                "detail": detail,
            })
        recs.sort(key=lambda r: (r["start"], TRAP_KINDS.index(r["kind"]), r["id"]))
        return recs

    # --------------------------------------------------------------- events

    def events(self) -> Iterator[Dict[str, Any]]:
        """Every event of the run in non-decreasing event time (a fresh, identical pass each call)."""
        rng = self._rng(10)  # background requests
        irng = self._rng(11)  # incident side effects (dropped events, abuse traffic)
        srng = self._rng(12)  # background security events
        trng = self._rng(13)  # trap traffic (planned ramp, cold start) and extreme requests
        recent: Dict[str, List[float]] = {}
        prefix = f"evt-{self.seed}-"
        n = 0
        last_sec = -1
        sec_text = ""
        extremes = self._extremes
        xi = 0
        t0 = self.start
        while t0 < self.end:
            t1 = min(t0 + _CHUNK_S, self.end)
            active = self._active(t0, t1)
            batch = self._requests(rng, irng, t0, t1, active)
            extra: List[Tuple[float, Dict[str, Any]]] = []
            self._abuse(irng, t0, t1, extra)
            self._security(srng, recent, t0, t1, extra)
            for inc in self._incidents:
                if inc.attack and inc.start < t1 and inc.end >= t0:
                    extra.extend((t, dict(ev)) for t, ev in inc.attack if t0 <= t < t1)
            if self._traffic_traps:
                self._trap_traffic(trng, t0, t1, active, extra)
            while xi < len(extremes) and extremes[xi][0] < t1:
                t, ki, ui, kind, v, z1, z2, z3, z4 = extremes[xi]
                xi += 1
                k = self._keys[ki]
                ev = self._build(k, t, self._users[ui], 1.0, z1, z2, z3, z4, active.get(ki), trng, None, kind, v)
                if ev is not None:
                    extra.append((t, ev))
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

    def iter_lines(self) -> Iterator[bytes]:
        """The events as JSON lines (bytes, each ending in ``\\n``)."""
        dumps = _dumps_line
        for ev in self.events():
            yield dumps(ev)

    def write(self, path: str, labels_path: Optional[str] = None, traps_path: Optional[str] = None) -> Tuple[int, str]:
        """Write events to ``path`` (JSON lines), labels to ``labels_path``, traps to ``traps_path``.

        ``labels_path`` and ``traps_path`` default to ``path`` with
        ``.labels.jsonl`` / ``.traps.jsonl`` in place of its extension (see
        :func:`companion_paths`). Returns the number of events and the labels path.
        """
        default_labels, default_traps = companion_paths(path)
        labels_path = labels_path or default_labels
        traps_path = traps_path or default_traps
        n = 0
        with open(path, "wb") as f:
            buf: List[bytes] = []
            for line in self.iter_lines():
                buf.append(line)
                if len(buf) >= 4096:
                    f.write(b"".join(buf))
                    n += len(buf)
                    buf.clear()
            f.write(b"".join(buf))
            n += len(buf)
        with open(labels_path, "wb") as f:
            for label in self.labels:
                f.write(_dumps_line(label))
        with open(traps_path, "wb") as f:
            for trap in self._trap_list:
                f.write(_dumps_line(trap))
        return n, labels_path

    # ---------------------------------------------------------- generation

    def _active(self, t0: float, t1: float) -> Dict[int, List[_Incident]]:
        active: Dict[int, List[_Incident]] = {}
        for inc in self._incidents:
            if (inc.key is not None and inc.type != "token_abuse" and inc.start < t1
                    and (inc.end > t0 or inc.type == "drift")):  # a drifted level stays
                active.setdefault(inc.key, []).append(inc)
        return active

    def _requests(
        self, rng: random.Random, irng: random.Random, t0: float, t1: float, active: Dict[int, List[_Incident]],
    ) -> List[Tuple[float, Dict]]:
        lam = self.rate_at(0.5 * (t0 + t1))
        out: List[Tuple[float, Dict]] = []
        if lam <= 0.0:
            return out
        rand, gauss, expo = rng.random, rng.gauss, rng.expovariate
        key_cum, user_cum, keys, users = self._key_cum, self._user_cum, self._keys, self._users
        bis = bisect.bisect_right
        build = self._build
        append = out.append
        t = t0
        while True:
            t += expo(lam)
            if t >= t1:
                break
            key = keys[bis(key_cum, rand())]
            user = users[bis(user_cum, rand())]
            u = rand()
            z1, z2, z3, z4 = gauss(), gauss(), gauss(), gauss()
            incs = active.get(key.index) if active else None
            ev = build(key, t, user, u, z1, z2, z3, z4, incs, irng, None)
            if ev is not None:
                append((t, ev))
        return out

    def _trap_traffic(
        self, trng: random.Random, t0: float, t1: float, active: Dict[int, List[_Incident]],
        out: List[Tuple[float, Dict]],
    ) -> None:
        """Planned-ramp and cold-start requests on top of the background (thinned to follow the ramp)."""
        lam = self.rate_at(0.5 * (t0 + t1))
        users, user_cum = self._users, self._user_cum
        bis = bisect.bisect_right
        rand, gauss = trng.random, trng.gauss
        for tr in self._traffic_traps:
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
                u = rand()
                z1, z2, z3, z4 = gauss(), gauss(), gauss(), gauss()
                if not keep:
                    continue
                ev = self._build(k, t, user, u, z1, z2, z3, z4, incs, trng, None)
                if ev is not None:
                    out.append((t, ev))

    def _build(
        self, k: _Key, t: float, user: _User, u: float,
        z1: float, z2: float, z3: float, z4: float,
        incs: Optional[List[_Incident]], irng: random.Random, input_tokens: Optional[int],
        extreme: int = 0, xv: float = 0.0,
    ) -> Optional[Dict[str, Any]]:
        err_p = k.err
        err_type = None
        lat_x = ttft_x = tok_x = cost_x = in_x = 1.0
        if incs:
            for inc in incs:
                if inc.start <= t:
                    typ = inc.type
                    if typ == "drift":
                        m = inc.magnitude
                        f = m if t >= inc.end else 1.0 + (m - 1.0) * (t - inc.start) / (inc.end - inc.start)
                        metric = inc.metric
                        if metric == "output_tokens":
                            tok_x *= f
                        elif metric == "input_tokens":
                            in_x *= f
                        else:
                            cost_x *= f
                    elif t < inc.end:
                        if typ == "traffic":
                            if irng.random() >= inc.magnitude:
                                return None
                        elif typ == "error_rate":
                            err_p = inc.magnitude
                            err_type = inc.error_type
                        elif typ == "latency":
                            lat_x *= inc.magnitude
                        elif typ == "ttft":
                            ttft_x *= inc.magnitude
                        elif typ == "tokens":
                            tok_x *= inc.magnitude
                        elif typ == "cost":
                            cost_x *= inc.magnitude
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
                err_type = _pick(_BASE_ERRORS, u / err_p)[1]
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
                it = int(k.in_med * math.exp(k.in_sig * z3) * in_x) + 1
                if it > MAX_INPUT_TOKENS:
                    it = MAX_INPUT_TOKENS
            else:
                it = input_tokens
            ot = int(k.out_med * math.exp(k.out_sig * z4)) + 1
            if ot > k.max_out:
                ot = k.max_out
            if tok_x != 1.0:
                ot = min(int(ot * tok_x), k.max_out)
            if extreme == _EXTREME_TOKENS:
                ot = min(int(15000 + xv * 10000), k.max_out)
            ttft = k.ttft_med * math.exp(0.35 * z1) + it * k.prefill
            decode = ot * k.ms_per_tok * math.exp(0.25 * z2)
            lat = ttft + decode + 15.0
            if ttft_x != 1.0:
                # a slow first chunk, then the rest of the stream in a burst:
                # latency grows by a quarter of the added ttft, never below ttft
                slow = ttft * ttft_x
                lat = max(lat + 0.25 * (slow - ttft), slow + 0.25 * decode + 15.0)
                ttft = slow
            if lat_x != 1.0:
                lat *= lat_x
            if extreme == _EXTREME_LATENCY:
                lat = 25000.0 + xv * 15000.0
            cost = (it * k.p_in + ot * k.p_out) * cost_x
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

    def _abuse(self, irng: random.Random, t0: float, t1: float, out: List[Tuple[float, Dict]]) -> None:
        for inc in self._incidents:
            if inc.type != "token_abuse" or inc.start >= t1 or inc.end <= t0:
                continue
            k = self._keys[inc.key]
            user = self._users[inc.user]
            a, b = max(t0, inc.start), min(t1, inc.end)
            usual = user.share * self.rate_at(0.5 * (a + b)) * self._mean_tokens  # tokens/s
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
                ev = self._build(k, t, user, rand(), z1, z2, 0.0, z4, None, irng, it)
                if ev is not None:
                    out.append((t, ev))

    def _security(
        self, srng: random.Random, recent: Dict[str, List[float]], t0: float, t1: float,
        out: List[Tuple[float, Dict]],
    ) -> None:
        lam = SECURITY_RATE * self._diurnal(0.5 * (t0 + t1)) / self._mean_diurnal
        sources = self._sec_sources
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
            _, kind, severity = _pick(_SECURITY_KINDS, srng.random())
            ev: Dict[str, Any] = {"timestamp": None, "event_type": "security", "event_id": None,
                                  "source": src, "kind": kind, "severity": severity}
            if kind in ("prompt_injection", "jailbreak", "pii_leak", "policy_violation"):
                k = self._keys[bisect.bisect_right(self._key_cum, srng.random())]
                ev["service"], ev["model"] = k.service, k.model
            else:
                ev["service"] = services[int(srng.random() * len(services))]
            out.append((t, ev))
        if len(recent) > 4096:  # forget sources quiet for five minutes
            for src in [s for s, h in recent.items() if not h or h[-1] <= t1 - 300.0]:
                del recent[src]


def _first(pair: Tuple[float, Any]) -> float:
    return pair[0]
