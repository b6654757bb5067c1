"""Who calls what, and how often: the models, services and keys, the users, the daily swing of the rate.

Everything random here comes from :func:`seeded` streams 1 (users) and 2
(security sources), so a fleet depends on the seed alone.
"""

from __future__ import annotations

import math
import random
from typing import Dict, List, Optional, Sequence, Tuple

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
N_USERS = 200
N_TENANTS = 24
SECURITY_RATE = 0.02  # background security events per second
SECURITY_CAP = 3  # at most this many background events per source per 5 minutes
_REGIONS = ((0.6, "us-east-1"), (0.9, "eu-west-1"), (1.0, "ap-southeast-1"))


def seeded(seed: int, stream: int) -> random.Random:
    """The random stream ``stream`` of a run: independent streams, each fixed by the seed."""
    return random.Random(seed * 1_000_003 + stream)


def pick(table: Sequence[tuple], x: float) -> tuple:
    """The first row whose cumulative bound (first item) exceeds ``x`` (the last row otherwise).

    >>> pick(((0.5, "a"), (1.0, "b")), 0.7)
    (1.0, 'b')
    """
    for row in table:
        if x < row[0]:
            return row
    return table[-1]


def diurnal(t: float) -> float:
    """The daily swing of the rate at event time ``t``: trough x0.6 at 00:00 UTC, peak x1.4 at 12:00.

    >>> round(diurnal(0.0), 3), round(diurnal(43200.0), 3)
    (0.6, 1.4)
    """
    return 1.0 - DIURNAL_AMPLITUDE * math.cos(2.0 * math.pi * (t % 86400.0) / 86400.0)


def diurnal_mean(t0: float, t1: float) -> float:
    """The mean of :func:`diurnal` over ``[t0, t1]``."""
    w = 2.0 * math.pi / 86400.0
    if t1 - t0 < 1e-9:
        return diurnal(t0)
    return 1.0 - DIURNAL_AMPLITUDE * (math.sin(w * t1) - math.sin(w * t0)) / (w * (t1 - t0))


class RateCurve:
    """The fleet's background request rate over a run: ``rate`` on average, following :func:`diurnal`."""

    __slots__ = ("start", "end", "rate", "mean_diurnal")

    def __init__(self, start: float, end: float, rate: float) -> None:
        self.start = start
        self.end = end
        self.rate = rate
        self.mean_diurnal = diurnal_mean(start, end)

    def at(self, t: float) -> float:
        """Expected fleet-wide ``llm.request`` events per second at ``t``."""
        return self.rate * diurnal(t) / self.mean_diurnal


class Key:
    """A service/model pair and the distributions of its requests."""

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


class User:
    __slots__ = ("user_id", "tenant_id", "source_ip", "region", "share")

    def __init__(self, user_id: str, tenant_id: str, source_ip: str, region: str, share: float) -> None:
        self.user_id = user_id
        self.tenant_id = tenant_id
        self.source_ip = source_ip
        self.region = region
        self.share = share


class Fleet:
    """The keys of :data:`FLEET` (shares normalised), :data:`N_USERS` users in :data:`N_TENANTS` tenants,
    and the sources of background security events.

    >>> f = Fleet(seed=1)
    >>> len(f.keys), len(f.users), f.users[0].user_id
    (10, 200, 'u0001')
    """

    def __init__(self, seed: int) -> None:
        self.keys = [Key(i, s, m, sh, e) for i, (s, m, sh, e) in enumerate(FLEET)]
        total = sum(k.share for k in self.keys)
        acc = 0.0
        self.key_cum: List[float] = []
        for k in self.keys:
            k.share /= total
            acc += k.share
            self.key_cum.append(acc)
        self.key_cum[-1] = 1.0
        self.key_index = {(k.service, k.model): k for k in self.keys}
        self.mean_tokens = sum(k.share * k.mean_tokens for k in self.keys)
        self._build_users(seeded(seed, 1))
        self._build_security_sources(seeded(seed, 2))

    def _build_users(self, rng: random.Random) -> None:
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
        self.users: List[User] = []
        self.user_rank: List[int] = ranks  # activity rank of each user (1 = busiest)
        for n in range(N_USERS):
            # every tenant has users; a few big tenants hold most of them
            t_index = n if n < N_TENANTS else min(int(rng.paretovariate(1.2)) - 1, N_TENANTS - 1)
            tenant = tenants[t_index]
            region = pick(_REGIONS, rng.random())[1]
            self.users.append(User(f"u{n + 1:04d}", tenant, ips[n], region, weights[n] / total))
        acc = 0.0
        self.user_cum: List[float] = []
        for u in self.users:
            acc += u.share
            self.user_cum.append(acc)
        self.user_cum[-1] = 1.0
        self.user_by_id = {u.user_id: i for i, u in enumerate(self.users)}

    def _build_security_sources(self, rng: random.Random) -> None:
        sources = [u.source_ip for u in self.users]
        sources += [f"100.{rng.randint(64, 127)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(1200)]
        sources += [f"key:{rng.getrandbits(40):010x}" for _ in range(300)]
        self.security_sources = sources

    def key(self, service: Optional[str], model: Optional[str]) -> Optional[Key]:
        """The fleet's key for a service/model pair, or None."""
        return self.key_index.get((service, model))

    def known_keys(self) -> str:
        """Every key as ``service/model``, for error messages."""
        return ", ".join(f"{k.service}/{k.model}" for k in self.keys)
