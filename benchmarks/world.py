"""Scenario families: seeded LLM telemetry of many service archetypes, with labelled incidents.

A *family* is a mix of service archetypes, a user population and its
parameters; a *seed* draws the concrete services (names, models, rates, token
sizes), users, normal variation and incidents. :class:`World` writes

* events: JSON lines in the SPEC section 1 format (requests and security
  events, time-ordered, RFC 3339 UTC timestamps with milliseconds);
* labels: one JSON line per injected incident, in the format of
  ``simulator`` (``id``, ``type``, ``service``, ``model``,
  ``subject``, ``start``, ``end``, ``magnitude``, ``metric``, ``effects``,
  ``detail``; a drift also ``grace_s``), which ``benchmarks/scoring.py`` scores;
* traps: normal behaviour that looks like an incident (a heavy user's
  session, two huge requests in a minute, a batch schedule), never labelled;
  alerts there are false, the traps say which behaviour provoked them.

Archetypes: ``chat`` (moderate tokens, diurnal), ``rag`` (3-8k inputs, small
outputs), ``doc`` (document and legal pipelines: 20k-100k inputs, few
requests per user), ``agent`` (tool loops: long outputs, bursts of calls per
user), ``batch`` (requests only in scheduled bursts at fixed minutes of the
hour), ``sparse`` (3-8 requests a minute) and ``trace`` (the real Azure LLM
code trace of ``data/azure_llm_code_2023.csv.gz``, tiled over the day and
thinned to a daily curve). Any service may run a canary model on 5% of its
traffic.

Only ``random.Random`` streams seeded from (family, seed, purpose) are used,
and only event time: the same family, seed and hours give the same bytes.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import math
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

try:
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj) + b"\n"
except ImportError:  # pragma: no cover - orjson is a project dependency
    import json

    def _dumps(obj: Any) -> bytes:
        return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_DIR = os.path.join(ROOT, "..", "shared", "data")
TRACE_FILE = "azure_llm_code_2023.csv.gz"

START = 1772409600.0  # 2026-03-02T00:00:00Z, a Monday
CHUNK_S = 60.0
DRIFT_GRACE_S = 1800.0
CLEARANCE_S = 1800.0  # incidents on one key stay this far apart
WARMUP_S = 7200.0  # no incident in the first two hours (or fifth of a short run)

# model: provider, $ per 1M input, $ per 1M output, ttft base ms,
#        prefill ms per 1k input tokens, decode ms per output token, max input, max output
MODELS: Dict[str, Tuple[str, float, float, float, float, float, int, int]] = {
    "gpt-4o": ("openai", 2.50, 10.00, 420.0, 22.0, 11.0, 128_000, 16_384),
    "gpt-4o-mini": ("openai", 0.15, 0.60, 300.0, 12.0, 9.0, 128_000, 16_384),
    "gpt-4.1": ("openai", 2.00, 8.00, 450.0, 18.0, 12.0, 1_000_000, 32_768),
    "claude-sonnet-4": ("anthropic", 3.00, 15.00, 600.0, 26.0, 13.0, 200_000, 64_000),
    "claude-3-5-haiku": ("anthropic", 0.80, 4.00, 350.0, 14.0, 8.0, 200_000, 8_192),
    "gemini-2.0-flash": ("google", 0.10, 0.40, 250.0, 8.0, 6.0, 1_000_000, 8_192),
    "gemini-2.5-pro": ("google", 1.25, 10.00, 700.0, 16.0, 10.0, 1_000_000, 65_536),
    "llama-3.1-70b": ("self-hosted", 0.60, 0.60, 380.0, 30.0, 25.0, 128_000, 8_192),
}

SERVICE_NAMES: Dict[str, Tuple[str, ...]] = {
    "chat": ("support-chat", "sales-assistant", "helpdesk-bot", "tutor-chat"),
    "rag": ("kb-search", "docs-qa", "policy-rag", "wiki-answers"),
    "doc": ("contract-review", "legal-summarizer", "filings-extract", "due-diligence"),
    "agent": ("code-agent", "ops-agent", "research-agent"),
    "batch": ("ticket-triage-batch", "nightly-enrich", "catalog-tagger"),
    "sparse": ("hr-faq", "finance-insights", "travel-desk", "legal-intake"),
    "trace": ("code-complete", "ide-assist"),
}

# Per archetype: the models a seed picks from, and whether it streams (ttft).
ARCHETYPE_MODELS: Dict[str, Tuple[Tuple[str, ...], bool]] = {
    "chat": (("gpt-4o-mini", "claude-3-5-haiku", "gemini-2.0-flash", "gpt-4o"), True),
    "rag": (("gemini-2.0-flash", "gpt-4o-mini", "claude-3-5-haiku"), True),
    "doc": (("claude-sonnet-4", "gemini-2.5-pro", "gpt-4.1"), False),
    "agent": (("claude-sonnet-4", "gpt-4.1", "gpt-4o"), True),
    "batch": (("gpt-4o-mini", "llama-3.1-70b", "gemini-2.0-flash"), False),
    "sparse": (("gpt-4o", "claude-3-5-haiku", "gpt-4o-mini"), True),
    "trace": (("gpt-4o", "llama-3.1-70b", "claude-sonnet-4"), True),
}

ERROR_TYPES = (("rate_limit", 0.40), ("server_error", 0.30), ("timeout", 0.20), ("context_length_exceeded", 0.10))
STORM_ERROR_TYPES = ("rate_limit", "server_error", "timeout", "overloaded", "content_filter")
SECURITY_KINDS = (("rate_limited", "low", 0.35), ("auth_failure", "low", 0.20), ("prompt_injection", "medium", 0.15),
                  ("policy_violation", "medium", 0.15), ("jailbreak", "high", 0.08), ("pii_leak", "high", 0.07))
ATTACK_KINDS = (("prompt_injection", "high", 0.5), ("jailbreak", "high", 0.3), ("policy_violation", "medium", 0.1),
                ("auth_failure", "low", 0.1))
BACKGROUND_CAP = 4  # background security events per source per 5 minutes, at most

# What an incident also moves (alert types scoring accepts on its key, in its window).
EFFECTS: Dict[str, List[str]] = {
    "latency": [],
    "ttft": ["latency"],
    "tokens": ["latency", "cost"],
    "tokens_input": ["latency", "cost", "ttft"],
    "cost": [],
    "error_rate": [],
    "traffic": [],
    "drift": ["tokens", "cost", "latency"],
    "token_abuse": ["tokens", "cost", "latency", "ttft"],
    "coordinated_attack": [],
}
PRIMARY_METRIC = {
    "latency": "latency_ms", "ttft": "ttft_ms", "tokens": "output_tokens", "cost": "cost_usd",
    "error_rate": "error_rate", "traffic": "request_rate", "drift": "output_tokens",
    "token_abuse": "tokens_per_user", "coordinated_attack": "security_events",
}
INCIDENT_TYPES = ("latency", "ttft", "tokens", "cost", "error_rate", "traffic", "drift",
                  "token_abuse", "coordinated_attack")
# Incidents per type per 24 h (scaled down for shorter runs, at least one when it fits).
PER_DAY = {"latency": 3, "ttft": 3, "tokens": 4, "cost": 3, "error_rate": 3, "traffic": 3, "drift": 2,
           "token_abuse": 4, "coordinated_attack": 3}
MISSING_BATCHES_PER_DAY = 2
TRAFFIC_MIN_RATE = 0.5  # requests/s a key needs for a traffic drop or spike


# ------------------------------------------------------------------ helpers


def format_time(ts: float) -> str:
    """RFC 3339 UTC with milliseconds, from epoch seconds."""
    ms = int(round(ts * 1000.0))
    sec, ms = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{ms:03d}Z"


def _weighted(rng: random.Random, table: Sequence[tuple]) -> tuple:
    """An entry of ``table`` whose last element is its weight."""
    x = rng.random() * sum(t[-1] for t in table)
    for t in table:
        x -= t[-1]
        if x < 0:
            return t
    return table[-1]


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(sigma * rng.gauss(0.0, 1.0))


def _poisson_times(rng: random.Random, a: float, b: float, lam: float) -> List[float]:
    """Arrival times of a Poisson process of rate ``lam`` (per second) in ``[a, b)``."""
    out: List[float] = []
    if lam <= 0.0 or b <= a:
        return out
    t = a
    while True:
        t += rng.expovariate(lam)
        if t >= b:
            return out
        out.append(t)


def _zipf_cum(n: int, s: float) -> List[float]:
    """Cumulative Zipf weights of ranks 1..n (normalised to end at 1)."""
    cum, total = [], 0.0
    for r in range(1, n + 1):
        total += r ** -s
        cum.append(total)
    return [c / total for c in cum]


# ------------------------------------------------------------------ the real trace


_TRACE_CACHE: Dict[str, List[Tuple[float, int, int]]] = {}


def load_trace(data_dir: str = DEFAULT_DATA_DIR) -> List[Tuple[float, int, int]]:
    """The Azure LLM code trace as ``(seconds since its first request, input tokens, output tokens)``."""
    path = os.path.abspath(os.path.join(data_dir, TRACE_FILE))
    if path not in _TRACE_CACHE:
        rows = []
        with gzip.open(path, "rt", newline="") as f:
            for rec in csv.DictReader(f):
                clock = rec["TIMESTAMP"].split(" ")[1]
                h, m, s = clock.split(":")
                rows.append((int(h) * 3600 + int(m) * 60 + float(s), int(rec["ContextTokens"]),
                             int(rec["GeneratedTokens"])))
        rows.sort()
        t0 = rows[0][0]
        _TRACE_CACHE[path] = [(t - t0, i, o) for t, i, o in rows]
    return _TRACE_CACHE[path]


# ------------------------------------------------------------------ specs


@dataclass
class Service:
    """One service of a world: archetype, models (with traffic shares) and the shape of its traffic."""

    name: str
    archetype: str
    models: List[Tuple[str, float]]
    streams: bool
    rate: float  # mean requests/s (batch: during a burst; agent: tasks/s)
    in_tok: Tuple[float, float]  # median, sigma (log)
    out_tok: Tuple[float, float]
    error_rate: float
    diurnal_amp: float = 0.0
    peak_hour: float = 14.0
    users: List[int] = field(default_factory=list)  # user indices, busiest first
    user_cum: List[float] = field(default_factory=list)
    batch_minutes: Tuple[int, ...] = ()
    batch_len_s: float = 0.0
    calls_per_task: float = 1.0
    call_gap_s: float = 5.0
    trace_slice: Tuple[float, float] = (0.0, 1.0)
    trace_thin: float = 1.0
    trace_shift_s: float = 0.0
    heavy: bool = False  # heavy users' sessions are part of its normal traffic

    @property
    def main_model(self) -> str:
        return self.models[0][0]

    def diurnal(self, t: float) -> float:
        """Traffic multiplier at ``t`` (mean 1 over a day)."""
        hour = ((t - START) / 3600.0) % 24.0
        return 1.0 + self.diurnal_amp * math.cos(2.0 * math.pi * (hour - self.peak_hour) / 24.0)

    def bursts(self, t0: float, t1: float) -> List[Tuple[float, float]]:
        """The scheduled bursts of a batch service overlapping ``[t0, t1)``."""
        out = []
        hour0 = START + math.floor((t0 - START) / 3600.0) * 3600.0
        h = hour0 - 3600.0
        while h < t1:
            for m in self.batch_minutes:
                a = h + 60.0 * m
                b = a + self.batch_len_s
                if b > t0 and a < t1:
                    out.append((a, b))
            h += 3600.0
        return out

    def rate_at(self, t: float) -> float:
        """Requests/s at ``t`` (agents: calls/s; the trace: after thinning)."""
        if self.archetype == "batch":
            return self.rate if any(a <= t < b for a, b in self.bursts(t, t + 1e-9)) else 0.0
        if self.archetype == "agent":
            return self.rate * self.calls_per_task * self.diurnal(t)
        if self.archetype == "trace":
            return self.rate * self.trace_thin * self.diurnal(t) / (1.0 + self.diurnal_amp)
        return self.rate * self.diurnal(t)


@dataclass
class Family:
    """A mix of archetypes and a population, from which each seed draws a world."""

    name: str
    split: str  # tune | test
    archetypes: Tuple[str, ...]
    users: Tuple[int, int]  # population size range
    canaries: int = 1  # services given a canary model
    security_per_min: float = 3.0
    trace_slice: Tuple[float, float] = (0.0, 1.0)
    trace_thin: Tuple[float, float] = (0.6, 0.9)
    rate_scale: float = 1.0
    zipf: Tuple[float, float] = (0.95, 1.15)
    description: str = ""


FAMILIES: Dict[str, Family] = {
    f.name: f
    for f in (
        Family("saas-chat", "tune", ("chat", "chat", "rag", "agent", "sparse"), (3000, 6000), canaries=1,
               security_per_min=3.0, description="consumer chat, a RAG helper, a coding agent, a sparse key"),
        Family("legal-docs", "tune", ("doc", "doc", "rag", "batch", "trace", "sparse"), (2000, 4000), canaries=1,
               security_per_min=2.0, rate_scale=1.4, trace_slice=(0.0, 0.5), trace_thin=(0.3, 0.45),
               description="document pipelines, nightly-style batch, a real-trace slice thinned hard"),
        Family("dev-platform", "test", ("trace", "agent", "chat", "sparse", "sparse"), (8000, 14000), canaries=1,
               security_per_min=4.0, trace_slice=(0.0, 1.0), trace_thin=(0.7, 0.9),
               description="the real code trace as the main service, agents, chat, two sparse keys"),
        Family("enterprise-mix", "test", ("chat", "rag", "doc", "batch", "agent", "sparse"), (15000, 20000),
               canaries=2, security_per_min=5.0,
               description="every synthetic archetype, a large population, two canaries"),
        Family("ops-batch", "test", ("batch", "batch", "rag", "trace", "doc", "sparse"), (4000, 8000), canaries=1,
               security_per_min=2.5, trace_slice=(0.5, 1.0), trace_thin=(0.4, 0.6),
               description="two batch schedules, RAG, the trace's second half, a document pipeline"),
    )
}
TUNE_SEEDS = (1, 2, 3)
TEST_SEEDS = (101, 102, 103)


@dataclass
class Incident:
    """An injected incident (its label) and what it does to the traffic."""

    id: str
    type: str
    service: str
    model: Optional[str]
    start: float
    end: float
    magnitude: float
    metric: str
    effects: List[str]
    detail: str
    subject: Optional[str] = None
    user: Optional[int] = None
    error_type: Optional[str] = None
    grace_s: Optional[float] = None
    events: int = 0  # coordinated_attack: how many

    def label(self) -> Dict[str, Any]:
        out = {"id": self.id, "type": self.type, "service": self.service, "model": self.model,
               "subject": self.subject, "start": format_time(self.start), "end": format_time(self.end),
               "magnitude": self.magnitude, "metric": self.metric, "effects": list(self.effects),
               "detail": self.detail}
        if self.grace_s:
            out["grace_s"] = self.grace_s
        return out

    def busy_until(self) -> float:
        return self.end + (self.grace_s or 0.0)


@dataclass
class Trap:
    """Normal behaviour that resembles an incident: alerts there are false."""

    id: str
    kind: str
    service: str
    model: Optional[str]
    start: float
    end: float
    types: List[str]
    detail: str
    user: Optional[int] = None
    magnitude: float = 1.0

    def record(self) -> Dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "service": self.service, "model": self.model,
                "types": list(self.types), "start": format_time(self.start), "end": format_time(self.end),
                "detail": self.detail}


# ------------------------------------------------------------------ the world


class World:
    """One family drawn with one seed over ``hours`` of event time.

    >>> w = World("saas-chat", seed=1, hours=0.25)
    >>> [s.archetype for s in w.services]
    ['chat', 'chat', 'rag', 'agent', 'sparse']
    >>> sum(1 for _ in w.events()) > 1000
    True
    """

    def __init__(self, family: str, seed: int, hours: float = 24.0, data_dir: Optional[str] = None) -> None:
        if family not in FAMILIES:
            msg = f"unknown family {family!r} (known: {', '.join(FAMILIES)})"
            raise ValueError(msg)
        self.family = FAMILIES[family]
        self.seed = seed
        self.hours = hours
        self.start = START
        self.end = START + hours * 3600.0
        self.data_dir = data_dir or DEFAULT_DATA_DIR
        self._trace: Optional[List[Tuple[float, int, int]]] = None
        if "trace" in self.family.archetypes:
            self._trace = load_trace(self.data_dir)
        self._build_population()
        self._build_services()
        self._build_security_sources()
        self.traps: List[Trap] = []
        self._schedule_traps()
        self.incidents: List[Incident] = []
        self._stratum = (0, 1)
        self._schedule_incidents()

    def rng(self, purpose: str) -> random.Random:
        """A random stream of its own for ``purpose``: adding one never shifts another."""
        return random.Random(f"{self.family.name}|{self.seed}|{purpose}")

    # ---------------------------------------------------------- population

    def _build_population(self) -> None:
        rng = self.rng("population")
        lo, hi = self.family.users
        self.n_users = rng.randint(lo, hi)
        self.n_tenants = max(20, self.n_users // 60)
        tenant_cum = _zipf_cum(self.n_tenants, 0.9)
        self.user_ids = [f"u{i:05d}" for i in range(self.n_users)]
        self.user_tenant = [f"t{bisect.bisect_left(tenant_cum, rng.random()):04d}" for _ in range(self.n_users)]
        self.user_ip = [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(self.n_users)]

    def _assign_users(self, rng: random.Random, svc: Service, share: float, cap: Optional[int] = None) -> None:
        """Give ``svc`` a random part of the population, busiest first, with Zipf shares."""
        n = max(3, int(self.n_users * share))
        if cap:
            n = min(n, cap)
        svc.users = rng.sample(range(self.n_users), n)
        svc.user_cum = _zipf_cum(n, rng.uniform(*self.family.zipf))

    def user_share(self, svc: Service, rank: int) -> float:
        """Share of ``svc``'s requests (tasks) that its ``rank``-th busiest user sends (rank 0 = busiest)."""
        prev = svc.user_cum[rank - 1] if rank else 0.0
        return svc.user_cum[rank] - prev

    def _pick_user(self, rng: random.Random, svc: Service) -> int:
        return svc.users[bisect.bisect_left(svc.user_cum, rng.random())]

    # ---------------------------------------------------------- services

    def _build_services(self) -> None:
        rng = self.rng("services")
        fam = self.family
        self.services: List[Service] = []
        used_names: set = set()
        for arch in fam.archetypes:
            names = [n for n in SERVICE_NAMES[arch] if n not in used_names]
            name = rng.choice(names)
            used_names.add(name)
            choices, streams = ARCHETYPE_MODELS[arch]
            svc = self._make_service(rng, arch, name, rng.choice(choices), streams)
            self.services.append(svc)
        canary_pool = [s for s in self.services if s.archetype not in ("batch", "sparse")]
        for svc in rng.sample(canary_pool, min(fam.canaries, len(canary_pool))):
            choices = [m for m in ARCHETYPE_MODELS[svc.archetype][0] + ("gpt-4.1", "gemini-2.5-pro")
                       if m != svc.main_model]
            svc.models = [(svc.main_model, 0.95), (rng.choice(choices), 0.05)]

    def _make_service(self, rng: random.Random, arch: str, name: str, model: str, streams: bool) -> Service:
        """Concrete parameters of one archetype for this seed."""
        u = rng.uniform
        k = self.family.rate_scale
        err = round(u(0.002, 0.02), 4)
        common = dict(name=name, archetype=arch, models=[(model, 1.0)], streams=streams, error_rate=err,
                      peak_hour=u(10.0, 20.0))
        if arch == "chat":
            svc = Service(rate=u(2.0, 3.5) * k, in_tok=(u(500, 1500), 0.6), out_tok=(u(150, 350), 0.6),
                          diurnal_amp=u(0.4, 0.6), **common)
            self._assign_users(rng, svc, 0.6)
        elif arch == "rag":
            svc = Service(rate=u(1.5, 2.8) * k, in_tok=(u(4000, 6000), 0.25), out_tok=(u(120, 250), 0.5),
                          diurnal_amp=u(0.35, 0.55), heavy=True, **common)
            self._assign_users(rng, svc, 0.4)
        elif arch == "doc":
            svc = Service(rate=u(0.15, 0.35) * k, in_tok=(u(38000, 50000), 0.4), out_tok=(u(700, 1500), 0.5),
                          diurnal_amp=u(0.2, 0.4), heavy=True, **common)
            self._assign_users(rng, svc, 0.15)
        elif arch == "agent":
            svc = Service(rate=u(0.06, 0.14) * k, in_tok=(u(3000, 6000), 0.5), out_tok=(u(600, 1200), 0.7),
                          diurnal_amp=u(0.3, 0.5), calls_per_task=u(8.0, 16.0), call_gap_s=u(3.0, 8.0),
                          heavy=True, **common)
            self._assign_users(rng, svc, 0.1)
        elif arch == "batch":
            n = rng.choice((2, 3, 4))
            first = rng.randrange(0, 60 // n)
            svc = Service(rate=u(2.0, 4.0) * k, in_tok=(u(1000, 2500), 0.4), out_tok=(u(200, 400), 0.5),
                          batch_minutes=tuple(first + i * (60 // n) for i in range(n)),
                          batch_len_s=60.0 * rng.randint(5, 10), **common)
            self._assign_users(rng, svc, 0.0, cap=rng.randint(3, 8))  # a few service accounts
        elif arch == "sparse":
            svc = Service(rate=u(3.0, 8.0) / 60.0, in_tok=(u(600, 2000), 0.5), out_tok=(u(200, 500), 0.5),
                          diurnal_amp=u(0.3, 0.5), **common)
            self._assign_users(rng, svc, 0.03)
        elif arch == "trace":
            assert self._trace is not None
            a, b = self.family.trace_slice
            span = self._trace[-1][0]
            n = sum(1 for t, _, _ in self._trace if a * span <= t < b * span)
            svc = Service(rate=n / ((b - a) * span), in_tok=(0.0, 0.0), out_tok=(0.0, 0.0),
                          diurnal_amp=u(0.3, 0.5), trace_slice=(a, b), trace_thin=u(*self.family.trace_thin),
                          trace_shift_s=u(0.0, (b - a) * span), heavy=True, **common)
            self._assign_users(rng, svc, 0.3)
        else:  # pragma: no cover - families only name known archetypes
            raise ValueError(arch)
        return svc

    def keys(self) -> List[Tuple[Service, str, float]]:
        """Every (service, model, requests/s averaged over a day) of the world."""
        out = []
        for svc in self.services:
            mean = self._mean_rate(svc)
            for model, share in svc.models:
                out.append((svc, model, mean * share))
        return out

    def _mean_rate(self, svc: Service) -> float:
        if svc.archetype == "batch":
            return svc.rate * len(svc.batch_minutes) * svc.batch_len_s / 3600.0
        if svc.archetype == "agent":
            return svc.rate * svc.calls_per_task
        if svc.archetype == "trace":
            return svc.rate * svc.trace_thin / (1.0 + svc.diurnal_amp)
        return svc.rate

    # ---------------------------------------------------------- security sources

    def _build_security_sources(self) -> None:
        rng = self.rng("security-sources")
        pool = [f"203.0.113.{i}" for i in range(1, 255)] + [f"key-{rng.getrandbits(32):08x}" for _ in range(120)]
        pool += [f"user:{self.user_ids[rng.randrange(self.n_users)]}" for _ in range(120)]
        self.security_sources = pool

    # ---------------------------------------------------------- traps

    def _schedule_traps(self) -> None:
        """Heavy users' sessions and double big requests on heavy-token services; batch schedules."""
        rng = self.rng("traps")
        n = 0
        day = self.hours / 24.0
        for svc in self.services:
            if svc.archetype == "batch":
                n += 1
                self.traps.append(Trap(f"trap-{self.seed}-{n:03d}-batch", "batch_schedule", svc.name, None,
                                       self.start, self.end, ["traffic"],
                                       f"bursts at minutes {list(svc.batch_minutes)} for {svc.batch_len_s / 60:g} min"))
            if not svc.heavy:
                continue
            for _ in range(self._count(rng, 8.0 * day)):
                rank = rng.randrange(min(20, len(svc.users)))
                start = rng.uniform(self.start, self.end - 600.0)
                dur = 60.0 * rng.uniform(10.0, 30.0)
                mult = rng.uniform(3.0, 4.0)
                n += 1
                self.traps.append(Trap(f"trap-{self.seed}-{n:03d}-session", "heavy_session", svc.name,
                                       svc.main_model, start, min(start + dur, self.end),
                                       ["token_abuse", "tokens", "cost"],
                                       f"user {self.user_ids[svc.users[rank]]} (rank {rank + 1}) at x{mult:.1f} "
                                       f"its habit", user=svc.users[rank], magnitude=mult))
            for _ in range(self._count(rng, 10.0 * day)):
                rank = rng.randrange(min(50, len(svc.users)))
                start = rng.uniform(self.start, self.end - 60.0)
                n += 1
                self.traps.append(Trap(f"trap-{self.seed}-{n:03d}-double", "double_request", svc.name,
                                       svc.main_model, start, start + rng.uniform(5.0, 55.0),
                                       ["token_abuse", "tokens", "cost"],
                                       f"user {self.user_ids[svc.users[rank]]} sends two large requests",
                                       user=svc.users[rank]))
        self.traps.sort(key=lambda tr: (tr.start, tr.id))

    @staticmethod
    def _count(rng: random.Random, mean: float) -> int:
        """A Poisson count of mean ``mean``."""
        n, p, limit = 0, 1.0, math.exp(-mean)
        while True:
            p *= rng.random()
            if p <= limit:
                return n
            n += 1

    # ---------------------------------------------------------- incidents

    def _schedule_incidents(self) -> None:
        """Place incidents of every type, never two on one key within ``CLEARANCE_S``."""
        rng = self.rng("incidents")
        warm = min(WARMUP_S, 0.2 * self.hours * 3600.0)
        self._lo, self._hi = self.start + warm, self.end - 300.0
        busy: Dict[Tuple[str, str], List[Tuple[float, float]]] = {}
        plan: List[str] = []
        for typ in INCIDENT_TYPES:
            plan += [typ] * max(1, round(PER_DAY[typ] * self.hours / 24.0))
        plan += ["missing_batch"] * sum(max(1, round(MISSING_BATCHES_PER_DAY * self.hours / 24.0))
                                        for s in self.services if s.archetype == "batch")
        rng.shuffle(plan)
        plan.sort(key=lambda t: t == "coordinated_attack")  # attacks last: some join an open incident
        counts: Dict[str, int] = {}
        planned = Counter(plan)
        seen: Counter = Counter()
        for typ in plan:
            # The i-th of n incidents of a type starts in the i-th n-th of the run when it
            # fits there (so they spread over the day), else anywhere.
            self._stratum = (seen[typ], planned[typ])
            seen[typ] += 1
            for attempt in range(60):
                if attempt == 30:
                    self._stratum = (0, 1)
                inc = self._draw(rng, typ)
                if inc is None:
                    break
                if inc.type == "coordinated_attack" or self._free(busy, inc):
                    if inc.type != "coordinated_attack":
                        busy.setdefault((inc.service, inc.model or ""), []).append((inc.start, inc.busy_until()))
                    counts[inc.type] = counts.get(inc.type, 0) + 1
                    inc.id = f"{self.family.name}-{self.seed}-{len(self.incidents) + 1:02d}-{inc.type}"
                    self.incidents.append(inc)
                    break
        self.incidents.sort(key=lambda i: (i.start, i.id))

    @staticmethod
    def _free(busy: Dict[Tuple[str, str], List[Tuple[float, float]]], inc: Incident) -> bool:
        for a, b in busy.get((inc.service, inc.model or ""), ()):
            if inc.start < b + CLEARANCE_S and a < inc.busy_until() + CLEARANCE_S:
                return False
        return True

    def _eligible(self, typ: str) -> List[Tuple[Service, str, float]]:
        keys = self.keys()
        if typ == "missing_batch":
            return [k for k in keys if k[0].archetype == "batch"]
        keys = [k for k in keys if k[0].archetype != "batch"]
        if typ == "ttft":
            return [k for k in keys if k[0].streams]
        if typ == "traffic":
            return [k for k in keys if k[2] >= TRAFFIC_MIN_RATE]
        if typ in ("token_abuse", "coordinated_attack"):
            return [k for k in keys if k[1] == k[0].main_model and k[0].archetype != "sparse"]
        return keys

    def _window(self, rng: random.Random, dur: float) -> Optional[float]:
        """A start for an incident of ``dur`` seconds: in the current stratum of the run when it fits."""
        if self._hi - self._lo < dur:
            return None
        i, n = self._stratum
        width = (self._hi - self._lo) / n
        lo = self._lo + i * width
        hi = min(lo + width, self._hi - dur)
        if hi <= lo:
            lo, hi = self._lo, self._hi - dur
        return rng.uniform(lo, hi)

    def _draw(self, rng: random.Random, typ: str) -> Optional[Incident]:
        """One candidate incident of ``typ`` (None when none fits this run)."""
        keys = self._eligible(typ)
        if not keys:
            return None
        if typ == "token_abuse":
            return self._draw_abuse(rng, keys)
        if typ == "coordinated_attack":
            return self._draw_attack(rng, keys)
        svc, model, _ = rng.choice(keys)
        if typ == "missing_batch":
            bursts = [b for b in svc.bursts(self._lo, self._hi) if self._lo <= b[0] and b[1] <= self._hi]
            if not bursts:
                return None
            a, b = rng.choice(bursts)
            return Incident("", "traffic", svc.name, model, a, b, 0.0, "request_rate", [],
                            f"the scheduled batch at {format_time(a)[11:16]} did not run")
        dur = 60.0 * (rng.uniform(60.0, 120.0) if typ == "drift" else
                      rng.uniform(10.0, 20.0) if typ in ("latency", "ttft", "error_rate") else 15.0)
        start = self._window(rng, dur)
        if start is None:
            return None
        u = rng.uniform
        if typ in ("latency", "ttft"):
            m = round(u(2.5, 3.5), 2)
            return Incident("", typ, svc.name, model, start, start + dur, m, PRIMARY_METRIC[typ],
                            list(EFFECTS[typ]) if svc.streams else [], f"{typ} x{m} on {svc.name}/{model}")
        if typ == "tokens":
            if rng.random() < 0.35:
                m = round(u(2.5, 3.5), 2)
                effects = [e for e in EFFECTS["tokens_input"] if svc.streams or e != "ttft"]
                return Incident("", typ, svc.name, model, start, start + dur, m, "input_tokens", effects,
                                f"input tokens x{m} (a larger prompt template)")
            m = round(u(2.0, 4.0), 2)
            return Incident("", typ, svc.name, model, start, start + dur, m, "output_tokens",
                            list(EFFECTS["tokens"]), f"output tokens x{m} (a prompt change)")
        if typ == "cost":
            m = round(u(1.8, 2.5), 2)
            return Incident("", typ, svc.name, model, start, start + dur, m, "cost_usd", [],
                            f"cost per request x{m} at the same tokens (a price or routing bug)")
        if typ == "error_rate":
            m = round(u(0.10, 0.30), 3)
            et = rng.choice(STORM_ERROR_TYPES)
            return Incident("", typ, svc.name, model, start, start + dur, m, "error_rate", [],
                            f"{m:.0%} of requests fail with {et}", error_type=et)
        if typ == "traffic":
            if rng.random() < 0.5:
                m = round(u(0.1, 0.3), 2)
                what = f"traffic falls to {m:.0%}"
            else:
                m = 4.0
                what = "traffic x4"
            return Incident("", typ, svc.name, model, start, start + dur, m, "request_rate", [], what)
        if typ == "drift":
            m = round(u(1.4, 1.6), 2)
            return Incident("", typ, svc.name, model, start, start + dur, m, "output_tokens",
                            list(EFFECTS["drift"]),
                            f"output tokens ramp to x{m} over {dur / 60:.0f} min, then stay",
                            grace_s=DRIFT_GRACE_S)
        raise ValueError(typ)  # pragma: no cover

    def _draw_abuse(self, rng: random.Random, keys: List[Tuple[Service, str, float]]) -> Optional[Incident]:
        """One user at 10-50x its habit for 15-30 minutes (the real-trace service first when there is one)."""
        trace_keys = [k for k in keys if k[0].archetype == "trace"]
        taken = sum(1 for i in self.incidents if i.type == "token_abuse" and i.service in {k[0].name for k in trace_keys})
        svc, model, _ = rng.choice(trace_keys if trace_keys and not taken else keys)
        dur = 60.0 * rng.uniform(15.0, 30.0)
        start = self._window(rng, dur)
        if start is None:
            return None
        m = round(rng.uniform(10.0, 50.0), 1)
        # A user busy enough that (m - 1) times its habit is at least ~10 requests in the window.
        mean_rate = self._mean_rate(svc) / (svc.calls_per_task if svc.archetype == "agent" else 1.0)
        ranks = [r for r in range(min(300, len(svc.users)))
                 if (m - 1.0) * self.user_share(svc, r) * mean_rate * dur >= 10.0 / svc.calls_per_task]
        ranks = [r for r in ranks if r >= 3] or ranks or [0]
        rank = rng.choice(ranks)
        user = svc.users[rank]
        return Incident("", "token_abuse", svc.name, model, start, start + dur, m, "tokens_per_user",
                        [e for e in EFFECTS["token_abuse"] if svc.streams or e != "ttft"],
                        f"user {self.user_ids[user]} (rank {rank + 1} of {len(svc.users)}) at x{m} its habit",
                        subject="user:" + self.user_ids[user], user=user)

    def _draw_attack(self, rng: random.Random, keys: List[Tuple[Service, str, float]]) -> Optional[Incident]:
        """One source, 12-30 security events within about two minutes; sometimes during an open incident."""
        span = rng.uniform(60.0, 130.0)
        open_ = [i for i in self.incidents if i.type not in ("coordinated_attack", "token_abuse")
                 and i.end - i.start > span and any(k[0].name == i.service for k in keys)]
        if open_ and rng.random() < 0.4:
            host = rng.choice(open_)
            svc = next(k[0] for k in keys if k[0].name == host.service)
            start = rng.uniform(host.start, host.end - span)
        else:
            svc = rng.choice(keys)[0]
            start = self._window(rng, span)
            if start is None:
                return None
        n = rng.randint(12, 30)
        source = rng.choice((f"198.51.100.{rng.randint(1, 254)}", f"key-{rng.getrandbits(32):08x}"))
        if any(i.subject == source for i in self.incidents):
            return None
        return Incident("", "coordinated_attack", svc.name, svc.main_model, start, start + span, float(n),
                        "security_events", [], f"{n} guardrail events from {source} in {span:.0f} s",
                        subject=source, events=n)

    # ---------------------------------------------------------- labels

    @property
    def labels(self) -> List[Dict[str, Any]]:
        return [inc.label() for inc in self.incidents]

    def trap_records(self) -> List[Dict[str, Any]]:
        return [tr.record() for tr in self.traps]

    # ---------------------------------------------------------- events

    def events(self) -> Iterator[Dict[str, Any]]:
        """Every event of the world in time order (requests and security events)."""
        gens = {svc.name: _ServiceStream(self, svc) for svc in self.services}
        sec = _SecurityStream(self)
        pending: List[Tuple[float, int, Dict[str, Any]]] = []
        seq = 0
        n = 0
        t0 = self.start
        while t0 < self.end:
            t1 = min(t0 + CHUNK_S, self.end)
            fresh: List[Tuple[float, Dict[str, Any]]] = []
            for svc in self.services:
                gens[svc.name].chunk(t0, t1, fresh)
            sec.chunk(t0, t1, fresh)
            for t, ev in fresh:
                if t < self.end:
                    pending.append((t, seq, ev))
                    seq += 1
            pending.sort(key=_first2)
            cut = bisect.bisect_left(pending, (t1, -1))
            for t, _, ev in pending[:cut]:
                n += 1
                ev["timestamp"] = format_time(t)
                ev["event_id"] = f"{self.family.name}-{self.seed}-{n:08d}"
                yield ev
            del pending[:cut]
            t0 = t1

    def write(self, path: str, labels_path: Optional[str] = None, traps_path: Optional[str] = None) -> int:
        """Write events, labels and traps (default ``<base>.labels.jsonl``, ``<base>.traps.jsonl``); the event count."""
        base = path[:-len(".jsonl")] if path.endswith(".jsonl") else path
        n = 0
        with open(path, "wb") as f:
            buf = []
            for ev in self.events():
                buf.append(_dumps(ev))
                n += 1
                if len(buf) >= 4096:
                    f.write(b"".join(buf))
                    buf.clear()
            f.write(b"".join(buf))
        with open(labels_path or base + ".labels.jsonl", "wb") as f:
            for label in self.labels:
                f.write(_dumps(label))
        with open(traps_path or base + ".traps.jsonl", "wb") as f:
            for rec in self.trap_records():
                f.write(_dumps(rec))
        return n

    def describe(self) -> Dict[str, Any]:
        """The drawn services and population, for the run's metadata."""
        return {
            "family": self.family.name, "split": self.family.split, "seed": self.seed, "hours": self.hours,
            "users": self.n_users, "tenants": self.n_tenants,
            "services": [{"name": s.name, "archetype": s.archetype, "models": s.models,
                          "mean_rate": round(self._mean_rate(s), 3), "users": len(s.users),
                          "batch_minutes": list(s.batch_minutes) or None} for s in self.services],
            "incidents": len(self.incidents), "traps": len(self.traps),
        }


def _first2(item: Tuple[float, int, Dict[str, Any]]) -> Tuple[float, int]:
    return item[0], item[1]


# ------------------------------------------------------------------ streams


class _ServiceStream:
    """The requests of one service, chunk by chunk, with the incidents and traps on it applied."""

    def __init__(self, world: World, svc: Service) -> None:
        self.w = world
        self.svc = svc
        self.rng = world.rng(f"svc:{svc.name}")
        self.extra_rng = world.rng(f"extra:{svc.name}")
        self.incidents = [i for i in world.incidents if i.service == svc.name and i.type != "coordinated_attack"]
        self.traps = [tr for tr in world.traps if tr.service == svc.name and tr.user is not None]
        self.model_cum: List[float] = []
        acc = 0.0
        for _, share in svc.models:
            acc += share
            self.model_cum.append(acc)
        if svc.archetype == "trace":
            trace = world._trace or []
            span = trace[-1][0]
            a, b = svc.trace_slice
            self.trace = [(t - a * span, i, o) for t, i, o in trace if a * span <= t < b * span]
            self.period = (b - a) * span
            self.trace_t = [r[0] for r in self.trace]

    # --- arrivals: (time, user index, model, input tokens, output tokens, forced)

    def chunk(self, t0: float, t1: float, out: List[Tuple[float, Dict[str, Any]]]) -> None:
        svc, rng = self.svc, self.rng
        arrivals = self._arrivals(rng, t0, t1, 1.0, None)
        for inc in self.incidents:
            a, b = max(t0, inc.start), min(t1, inc.end)
            if a >= b:
                continue
            if inc.type == "traffic" and inc.magnitude > 1.0:
                arrivals += self._arrivals(self.extra_rng, a, b, inc.magnitude - 1.0, None, model=inc.model)
            elif inc.type == "token_abuse":
                arrivals += self._arrivals(self.extra_rng, a, b, inc.magnitude - 1.0, inc.user, model=inc.model)
        for tr in self.traps:
            a, b = max(t0, tr.start), min(t1, tr.end)
            if a >= b:
                continue
            if tr.kind == "heavy_session":
                arrivals += self._arrivals(self.extra_rng, a, b, tr.magnitude - 1.0, tr.user, model=svc.main_model)
            elif tr.kind == "double_request" and t0 <= tr.start < t1:
                for t in (tr.start, tr.end):
                    it, ot = self._tokens(self.extra_rng, big=True)
                    arrivals.append((t, tr.user, svc.main_model, it, ot))
        for t, user, model, it, ot in arrivals:
            ev = self._event(t, user, model, it, ot)
            if ev is not None:
                out.append((t, ev))

    def _model(self, rng: random.Random) -> str:
        return self.svc.models[bisect.bisect_left(self.model_cum, rng.random() * self.model_cum[-1])][0]

    def _user_share(self, user: int) -> float:
        rank = self.svc.users.index(user)
        return self.w.user_share(self.svc, rank)

    def _arrivals(self, rng: random.Random, a: float, b: float, mult: float, user: Optional[int],
                  model: Optional[str] = None) -> List[Tuple[float, int, str, int, int]]:
        """Requests in ``[a, b)`` at ``mult`` times the service's rate (of ``user``'s share when given)."""
        svc = self.svc
        arch = svc.archetype
        share = self._user_share(user) if user is not None else 1.0
        out: List[Tuple[float, int, str, int, int]] = []
        if arch == "trace" and user is None and mult == 1.0:
            return self._trace_arrivals(rng, a, b)
        if arch == "agent":
            lam = svc.rate * svc.diurnal(0.5 * (a + b)) * mult * share
            for t in _poisson_times(rng, a, b, lam):
                u = user if user is not None else self.w._pick_user(rng, svc)
                m = model or self._model(rng)
                calls = 1 + int(rng.expovariate(1.0 / max(svc.calls_per_task - 1.0, 0.1)))
                ctx = 0.0
                for step in range(calls):
                    it, ot = self._tokens(rng)
                    ctx += 0.3 * ot
                    out.append((t, u, m, int(it + ctx), ot))
                    t += _lognormal(rng, svc.call_gap_s, 0.5)
            return out
        if arch == "batch":
            lam_t = [(x, y) for x, y in svc.bursts(a, b)]
            times: List[float] = []
            for x, y in lam_t:
                times += _poisson_times(rng, max(a, x), min(b, y), svc.rate * mult * share)
        else:
            lam = (svc.rate_at(0.5 * (a + b))) * mult * share
            times = _poisson_times(rng, a, b, lam)
        for t in times:
            u = user if user is not None else self.w._pick_user(rng, svc)
            it, ot = self._tokens(rng)
            out.append((t, u, model or self._model(rng), it, ot))
        return out

    def _trace_arrivals(self, rng: random.Random, a: float, b: float) -> List[Tuple[float, int, str, int, int]]:
        """The real trace's requests that fall in ``[a, b)`` (tiled, shifted), thinned to the daily curve."""
        svc = self.svc
        out: List[Tuple[float, int, str, int, int]] = []
        keep = svc.trace_thin * svc.diurnal(0.5 * (a + b)) / (1.0 + svc.diurnal_amp)
        p = self.period
        base = a - ((a - self.w.start + svc.trace_shift_s) % p)  # run time where the current tile began
        while base < b:
            lo = bisect.bisect_left(self.trace_t, a - base)
            hi = bisect.bisect_left(self.trace_t, b - base)
            for off, it, ot in self.trace[lo:hi]:
                if rng.random() < keep:
                    out.append((base + off, self.w._pick_user(rng, svc), self._model(rng), it, ot))
            base += p
        return out

    def _tokens(self, rng: random.Random, big: bool = False) -> Tuple[int, int]:
        """Input and output tokens of one request of this service (``big``: from its upper tail)."""
        svc = self.svc
        if svc.archetype == "trace":
            _, it, ot = self.trace[int(rng.random() * len(self.trace))]
            if big:
                it = max(it, max(self.trace[int(rng.random() * len(self.trace))][1] for _ in range(8)))
            return it, ot
        z = abs(rng.gauss(0.0, 1.0)) + 1.0 if big else rng.gauss(0.0, 1.0)
        it = svc.in_tok[0] * math.exp(svc.in_tok[1] * z)
        if svc.archetype == "doc":
            it = min(max(it, 20_000.0), 100_000.0)
        elif svc.archetype == "rag":
            it = min(max(it, 3_000.0), 8_000.0)
        ot = _lognormal(rng, *svc.out_tok)
        return int(it) + 1, int(ot) + 1

    def _event(self, t: float, user: int, model: str, it: int, ot: int) -> Optional[Dict[str, Any]]:
        """One request event, with the incidents active on its key at ``t`` applied."""
        svc, rng, w = self.svc, self.rng, self.w
        provider, p_in, p_out, ttft_base, prefill, ms_tok, max_in, max_out = MODELS[model]
        err_p, err_type = svc.error_rate, None
        lat_x = ttft_x = cost_x = 1.0
        for inc in self.incidents:
            if inc.model != model or t < inc.start:
                continue
            typ = inc.type
            if typ == "drift":
                ramp = min(1.0, (t - inc.start) / (inc.end - inc.start))
                ot = int(ot * (1.0 + (inc.magnitude - 1.0) * ramp))
                continue
            if t >= inc.end:
                continue
            if typ == "traffic" and inc.magnitude < 1.0 and rng.random() >= inc.magnitude:
                return None
            if typ == "error_rate":
                err_p, err_type = inc.magnitude, inc.error_type
            elif typ == "latency":
                lat_x *= inc.magnitude
            elif typ == "ttft":
                ttft_x *= inc.magnitude
            elif typ == "tokens":
                if inc.metric == "input_tokens":
                    it = int(it * inc.magnitude)
                else:
                    ot = int(ot * inc.magnitude)
            elif typ == "cost":
                cost_x *= inc.magnitude
        ev: Dict[str, Any] = {"timestamp": None, "event_id": None, "event_type": "llm.request",
                              "service": svc.name, "model": model, "provider": provider}
        u = rng.random()
        if u < err_p:
            et = err_type or _weighted(rng, ERROR_TYPES)[0]
            lat = {"rate_limit": 80.0, "timeout": 30_000.0, "context_length_exceeded": 120.0}.get(et, 900.0)
            ev.update(latency_ms=round(lat * math.exp(0.3 * rng.gauss(0.0, 1.0)), 1), status="error", error_type=et)
        else:
            it, ot = min(it, max_in), min(max(ot, 1), max_out)
            ttft = ttft_base * math.exp(0.3 * rng.gauss(0.0, 1.0)) + prefill * it / 1000.0
            decode = ot * ms_tok * math.exp(0.2 * rng.gauss(0.0, 1.0))
            lat = ttft + decode + 20.0
            if ttft_x != 1.0:
                lat += ttft * (ttft_x - 1.0)
                ttft *= ttft_x
            lat *= lat_x
            ev["latency_ms"] = round(lat, 1)
            if svc.streams:
                ev["ttft_ms"] = round(ttft, 1)
            ev.update(input_tokens=it, output_tokens=ot,
                      cost_usd=round((it * p_in + ot * p_out) / 1e6 * cost_x, 8), status="ok")
        ev.update(user_id=w.user_ids[user], tenant_id=w.user_tenant[user], source_ip=w.user_ip[user])
        return ev


class _SecurityStream:
    """Background guardrail events (capped per source) and the coordinated attacks."""

    def __init__(self, world: World) -> None:
        self.w = world
        self.rng = world.rng("security")
        self.recent: Dict[str, List[float]] = {}
        self.attacks = [i for i in world.incidents if i.type == "coordinated_attack"]
        self.attack_rng = world.rng("attacks")

    def chunk(self, t0: float, t1: float, out: List[Tuple[float, Dict[str, Any]]]) -> None:
        w, rng = self.w, self.rng
        lam = w.family.security_per_min / 60.0
        for t in _poisson_times(rng, t0, t1, lam):
            src = None
            for _ in range(20):
                cand = rng.choice(w.security_sources)
                if sum(1 for x in self.recent.get(cand, ()) if x > t - 300.0) < BACKGROUND_CAP:
                    src = cand
                    break
            if src is None:
                continue
            self.recent[src] = [x for x in self.recent.get(src, ()) if x > t - 300.0] + [t]
            kind, severity, _ = _weighted(rng, SECURITY_KINDS)
            svc = rng.choice(w.services)
            out.append((t, self._event(src, kind, severity, svc.name, self._model(rng, svc))))
        for inc in self.attacks:
            if t0 <= inc.start < t1:
                times = sorted(self.attack_rng.uniform(inc.start, inc.end) for _ in range(inc.events))
                for t in times:
                    kind, severity, _ = _weighted(self.attack_rng, ATTACK_KINDS)
                    out.append((t, self._event(inc.subject or "", kind, severity, inc.service, inc.model)))

    @staticmethod
    def _model(rng: random.Random, svc: Service) -> str:
        return rng.choice(svc.models)[0]

    @staticmethod
    def _event(source: str, kind: str, severity: str, service: str, model: Optional[str]) -> Dict[str, Any]:
        return {"timestamp": None, "event_id": None, "event_type": "security", "source": source, "kind": kind,
                "service": service, "model": model, "severity": severity}


def list_families(split: str = "both") -> List[str]:
    """Names of the families of ``split`` (tune, test or both)."""
    return [f.name for f in FAMILIES.values() if split in ("both", f.split)]


def seeds_of(split: str) -> Tuple[int, ...]:
    return TUNE_SEEDS if split == "tune" else TEST_SEEDS
