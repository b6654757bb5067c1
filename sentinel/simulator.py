"""Seeded, deterministic LLM telemetry with labelled incidents (SPEC section 3).

:class:`Simulator` generates the canonical events of SPEC section 1 for a small
fleet (four services calling ten service/model keys), in non-decreasing event
time, together with ``labels``: one dict per injected incident, the ground
truth that :mod:`benchmarks.scoring` matches alerts against.

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
* Roughly one isolated extreme request per 12,000 (a 25-40 s latency or a
  15-25k token response): traps that are *not* incidents.
* Security events at about 0.02/s spread over ~1,700 sources, never more than
  three from one source within five minutes.

Incidents (``incidents="auto"``): after a 60 minute warm-up, about one per 40
simulated minutes (at least one of each of the eight types when ``hours >= 6``),
each in its own slot of the run so no two overlap, each 5-20 minutes long
(``coordinated_attack`` exactly 5), ending at least 5 minutes before the next
slot. See :data:`INCIDENT_TYPES` and :meth:`Simulator._apply` for what each does.
"""

from __future__ import annotations

import bisect
import calendar
import math
import random
import time
from datetime import datetime
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

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
    "token_abuse": 30.0,
    "coordinated_attack": 45.0,
}

# Metrics that move along with an incident's own, as they would in production
# (reported in the label as ``effects`` for diagnosis; scoring ignores them).
_EFFECTS = {
    "latency": [],
    "ttft": ["latency"],
    "tokens": ["latency", "cost"],
    "cost": [],
    "error_rate": [],
    "traffic": [],
    "token_abuse": ["tokens", "cost"],
    "coordinated_attack": [],
}

# model: provider, model_version, $ per 1M input tokens, $ per 1M output tokens,
#        median ttft ms, prefill ms per 1k input tokens, decode tokens/s, max output tokens
MODELS: Dict[str, Tuple[str, str, float, float, float, float, float, int]] = {
    "gpt-4o": ("openai", "gpt-4o-2024-11-20", 2.50, 10.00, 450.0, 25.0, 85.0, 16384),
    "gpt-4o-mini": ("openai", "gpt-4o-mini-2024-07-18", 0.15, 0.60, 320.0, 15.0, 95.0, 16384),
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

DIURNAL_AMPLITUDE = 0.4
MAX_INPUT_TOKENS = 120_000
TRAP_PROBABILITY = 1.0 / 12_000  # isolated extreme requests, never labelled
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

Incidents = Union[str, Sequence[Dict[str, Any]]]


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


def _pick(table: Sequence[tuple], x: float) -> tuple:
    for row in table:
        if x < row[0]:
            return row
    return table[-1]


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
        "magnitude", "error_type", "attack", "detail",
    )

    def label(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "service": self.service,
            "model": self.model,
            "subject": self.subject,
            "start": format_time(self.start),
            "end": format_time(self.end),
            "magnitude": self.magnitude,
            "effects": list(_EFFECTS[self.type]),
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
        Mean number of ``llm.request`` events per second over the run.
    incidents
        ``"auto"`` for the seed's schedule, or a list of dicts shaped like
        :attr:`labels` (``type``, ``service``, ``model``, optional ``subject``,
        ``start``, ``end``, optional ``magnitude``); ``[]`` for none.

    Examples
    --------
    >>> sim = Simulator(seed=1, hours=0.05, rate=5.0, incidents=[])
    >>> evs = list(sim.events())
    >>> evs[0]["timestamp"] <= evs[-1]["timestamp"]
    True
    >>> sim.labels
    []
    """

    def __init__(
        self,
        seed: int = 7,
        start: Union[float, str] = DEFAULT_START,
        hours: float = 6.0,
        rate: float = 18.5,
        incidents: Incidents = "auto",
    ) -> None:
        if hours <= 0:
            msg = f"hours must be > 0, got {hours!r}"
            raise ValueError(msg)
        if rate < 0:
            msg = f"rate must be >= 0, got {rate!r}"
            raise ValueError(msg)
        self.seed = int(seed)
        self.start = to_epoch(start)
        self.hours = float(hours)
        self.rate = float(rate)
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
        if isinstance(incidents, str):
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
        """Expected ``llm.request`` rate (events/s) at event time ``t``, fleet-wide or for one key."""
        lam = self.rate * self._diurnal(t) / self._mean_diurnal
        if service is not None:
            lam *= self._key_index[(service, model)].share
        return lam

    @property
    def keys(self) -> List[Dict[str, Any]]:
        """The fleet: one dict per service/model key."""
        return [
            {"service": k.service, "model": k.model, "provider": k.provider, "share": k.share,
             "streams": k.streams, "error_rate": k.err}
            for k in self._keys
        ]

    @property
    def expected_events(self) -> float:
        return self.rate * self.hours * 3600.0

    # ------------------------------------------------------------ incidents

    @property
    def labels(self) -> List[Dict[str, Any]]:
        """One dict per injected incident: id, type, service, model, subject, start, end, magnitude."""
        return [inc.label() for inc in self._incidents]

    def _auto_schedule(self) -> List[_Incident]:
        rng = self._rng(3)
        avail = self.end - self.start - WARMUP_S
        if avail <= 0:
            return []
        n = int(round(avail / INCIDENT_SPACING_S))
        if self.hours >= 6.0:
            n = max(n, len(INCIDENT_TYPES))
        types = list(INCIDENT_TYPES)
        rng.shuffle(types)
        while len(types) < n:
            types.append(rng.choice(INCIDENT_TYPES))
        types = types[:n]
        out: List[_Incident] = []
        if not n:
            return out
        slot = avail / n
        lead, tail = 120.0, 420.0  # quiet before; room for a late alert and recovery after
        for i, typ in enumerate(types):
            room = slot - lead - tail
            if room < 300.0:
                continue
            dur = 300.0 if typ == "coordinated_attack" else float(rng.randint(5, 20) * 60)
            dur = min(dur, math.floor(room / 60.0) * 60.0)
            s0 = self.start + WARMUP_S + i * slot + lead
            start = float(math.floor(s0 + rng.uniform(0.0, room - dur)))
            out.append(self._make_auto(rng, i, typ, start, start + dur))
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
        inc.detail = self._detail(inc)
        return inc

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
        inc.detail = d.get("detail") or self._detail(inc)
        return inc

    def _detail(self, inc: _Incident) -> str:
        m = inc.magnitude
        return {
            "latency": f"latency x{m:g} (slow decode at the provider)",
            "ttft": f"time to first token x{m:g} (prefill queueing)",
            "tokens": f"output tokens x{m:g} (verbose prompt regression)",
            "cost": f"cost per request x{m:g} (price table / routing bug, tokens unchanged)",
            "error_rate": f"error rate {m:.0%} ({inc.error_type})",
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

    # --------------------------------------------------------------- events

    def events(self) -> Iterator[Dict[str, Any]]:
        """Every event of the run in non-decreasing event time (a fresh, identical pass each call)."""
        rng = self._rng(10)  # background requests
        irng = self._rng(11)  # incident side effects (dropped events, abuse traffic)
        srng = self._rng(12)  # background security events
        recent: Dict[str, List[float]] = {}
        prefix = f"evt-{self.seed}-"
        n = 0
        last_sec = -1
        sec_text = ""
        t0 = self.start
        while t0 < self.end:
            t1 = min(t0 + _CHUNK_S, self.end)
            batch = self._requests(rng, irng, t0, t1)
            extra: List[Tuple[float, Dict[str, Any]]] = []
            self._abuse(irng, t0, t1, extra)
            self._security(srng, recent, t0, t1, extra)
            for inc in self._incidents:
                if inc.attack and inc.start < t1 and inc.end >= t0:
                    extra.extend((t, dict(ev)) for t, ev in inc.attack if t0 <= t < t1)
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

    def write(self, path: str, labels_path: Optional[str] = None) -> Tuple[int, str]:
        """Write events to ``path`` (JSON lines) and labels to ``labels_path``.

        ``labels_path`` defaults to ``path`` with ``.labels.jsonl`` in place of
        its extension. Returns the number of events and the labels path.
        """
        if labels_path is None:
            base = path[: -len(".jsonl")] if path.endswith(".jsonl") else path
            labels_path = base + ".labels.jsonl"
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
        return n, labels_path

    # ---------------------------------------------------------- generation

    def _active(self, t0: float, t1: float) -> Dict[int, List[_Incident]]:
        active: Dict[int, List[_Incident]] = {}
        for inc in self._incidents:
            if inc.key is not None and inc.type != "token_abuse" and inc.start < t1 and inc.end > t0:
                active.setdefault(inc.key, []).append(inc)
        return active

    def _requests(self, rng: random.Random, irng: random.Random, t0: float, t1: float) -> List[Tuple[float, Dict]]:
        lam = self.rate_at(0.5 * (t0 + t1))
        out: List[Tuple[float, Dict]] = []
        if lam <= 0.0:
            return out
        active = self._active(t0, t1)
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

    def _build(
        self, k: _Key, t: float, user: _User, u: float,
        z1: float, z2: float, z3: float, z4: float,
        incs: Optional[List[_Incident]], irng: random.Random, input_tokens: Optional[int],
    ) -> Optional[Dict[str, Any]]:
        err_p = k.err
        err_type = None
        lat_x = ttft_x = tok_x = cost_x = 1.0
        if incs:
            for inc in incs:
                if inc.start <= t < inc.end:
                    typ = inc.type
                    if typ == "traffic":
                        if irng.random() >= inc.magnitude:
                            return None
                    elif typ == "error_rate":
                        err_p = inc.magnitude
                        err_type = inc.error_type
                    elif typ == "latency":
                        lat_x = inc.magnitude
                    elif typ == "ttft":
                        ttft_x = inc.magnitude
                    elif typ == "tokens":
                        tok_x = inc.magnitude
                    elif typ == "cost":
                        cost_x = inc.magnitude
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
                it = int(k.in_med * math.exp(k.in_sig * z3)) + 1
                if it > MAX_INPUT_TOKENS:
                    it = MAX_INPUT_TOKENS
            else:
                it = input_tokens
            ot = int(k.out_med * math.exp(k.out_sig * z4)) + 1
            if ot > k.max_out:
                ot = k.max_out
            trap = 0
            if u > 1.0 - TRAP_PROBABILITY:
                w = (1.0 - u) / TRAP_PROBABILITY
                if w < 0.5:
                    trap = 1
                else:
                    ot = int(15000 + (w - 0.5) * 20000)
            if tok_x != 1.0:
                ot = min(int(ot * tok_x), k.max_out)
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
            if trap:
                lat = 25000.0 + w * 30000.0
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
