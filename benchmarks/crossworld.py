"""Crossworld: a second world generator with its own assumptions, independent of world.py's.

It takes only where the real trace lies from world.py (``../shared/data`` beside the repository).

A seeded day (or more) of LLM-application telemetry from 5-8 services drawn from
archetypes (consumer chat, voice assistant, RAG search, contract pipeline, agent
runner, scheduled batch, sparse internal tool, guardrail classifier, and a code
assistant whose normal traffic is the real Azure 2023 code trace, tiled and thinned
to a daily curve). Users come from heavy-tailed populations grouped into tenants of
very different sizes; arrivals are sessions (bursty, not Poisson); token counts are
lognormal mixtures with per-user scale; latency and ttft follow from tokens through
per-model prefill and decode speeds with load, provider weather and slow outliers;
cost follows per-model prices with prompt-cache discounts; a small baseline of
errors comes with client retries and tiny benign clusters; guardrail security
events arrive from many sources, scattered. Normal one-offs (a marketing spike, a
late batch, a gradual model rollout) are listed as traps, never labelled.
Unless ``--clean``, 20-30 incidents a day of nine types are injected on random keys
at random times (after a 90-minute warm-up) and written as labels.

    python benchmarks/crossworld.py --seed 1 --hours 24 --out /tmp/cw/s1 [--clean]

writes ``BASE.jsonl`` (events), ``BASE.labels.jsonl``, ``BASE.traps.jsonl`` and
``BASE.meta.json``. A seed gives the same services, users, traps, arrivals and
token counts with and without ``--clean``; only the incidents differ (per-request
noise in latency and errors is redrawn).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Tuple

import numpy as np

from world import DEFAULT_DATA_DIR, TRACE_FILE  # where the real trace lies beside the repository

BASE_DATE = datetime(2026, 3, 2, tzinfo=timezone.utc)  # a Monday; the seed picks the weekday
WARMUP_S = 90 * 60  # no incident starts before this (detectors need a baseline)
PAD_S = 20 * 60  # quiet gap between two incidents / traps on the same key

ERROR_TYPES = ("rate_limit", "timeout", "server_error", "content_filter")
ERR_CODE = {name: i + 1 for i, name in enumerate(ERROR_TYPES)}  # 0 = ok


# --------------------------------------------------------------------------------------
# Models: prices in USD per million tokens, speeds in milliseconds
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    name: str
    provider: str
    price_in: float
    price_out: float
    ttft_base: float  # queueing + network + first decode step
    prefill_ms: float  # per input token
    tpot_ms: float  # per output token
    max_out: int
    context: int
    cache_price: float  # price factor of cached input tokens (1.0: no prompt cache)
    load_alpha: float  # latency rise at the service's daily peak


CATALOG: Dict[str, Model] = {
    m.name: m
    for m in [
        Model("gpt-4o", "openai", 2.50, 10.00, 300, 0.022, 11.0, 16384, 128000, 0.50, 0.10),
        Model("gpt-4o-mini", "openai", 0.15, 0.60, 230, 0.012, 7.0, 16384, 128000, 0.50, 0.08),
        Model("gpt-4.1", "openai", 2.00, 8.00, 320, 0.020, 10.0, 32768, 1000000, 0.25, 0.10),
        Model("gpt-4.1-mini", "openai", 0.40, 1.60, 240, 0.012, 6.0, 32768, 1000000, 0.25, 0.08),
        Model("o3-mini", "openai", 1.10, 4.40, 1400, 0.020, 6.5, 65536, 200000, 0.50, 0.10),
        Model("claude-sonnet-4", "anthropic", 3.00, 15.00, 650, 0.025, 15.0, 64000, 200000, 0.10, 0.12),
        Model("claude-3-5-haiku", "anthropic", 0.80, 4.00, 420, 0.015, 9.0, 8192, 200000, 0.10, 0.10),
        Model("gemini-2.0-flash", "google", 0.10, 0.40, 320, 0.008, 4.5, 8192, 1000000, 0.25, 0.08),
        Model("gemini-2.5-pro", "google", 1.25, 10.00, 1300, 0.020, 9.0, 65536, 1000000, 0.25, 0.10),
        Model("mistral-large-2411", "mistral", 2.00, 6.00, 380, 0.020, 14.0, 8192, 128000, 1.00, 0.10),
        Model("codestral-2501", "mistral", 0.30, 0.90, 190, 0.008, 5.0, 8192, 256000, 1.00, 0.10),
        Model("llama-3.1-70b-instruct", "self-hosted", 0.60, 0.60, 160, 0.050, 22.0, 8192, 128000, 1.00, 0.35),
        Model("llama-3.1-8b-instruct", "self-hosted", 0.05, 0.08, 70, 0.010, 8.0, 8192, 128000, 1.00, 0.25),
        Model("llama-guard-3-8b", "self-hosted", 0.05, 0.05, 45, 0.008, 8.0, 64, 8192, 1.00, 0.25),
    ]
}


# --------------------------------------------------------------------------------------
# Archetypes
# --------------------------------------------------------------------------------------

# Daily curves as (local hour, level) control points, interpolated periodically.
CURVES = {
    "consumer": [(0, 0.34), (2, 0.11), (4, 0.055), (6, 0.085), (8, 0.40), (10, 0.60), (12, 0.72),
                 (13.5, 0.68), (15.5, 0.64), (17.5, 0.72), (19.5, 0.88), (21, 1.00), (22.3, 0.90),
                 (23.3, 0.62)],
    "business": [(0, 0.07), (5, 0.06), (7, 0.14), (8, 0.42), (9, 0.80), (10.3, 1.00), (11.5, 0.97),
                 (12.5, 0.78), (13.4, 0.86), (14.5, 0.96), (16, 0.88), (17, 0.64), (18, 0.40),
                 (19.5, 0.24), (21, 0.16), (22.5, 0.10)],
}
WEEKEND = {"consumer": 1.08, "business": 0.28}  # factor on the active part of the curve

ARCHETYPES = {
    "chat": dict(
        names=["chat-web", "companion-app", "support-chat"], streaming=True, curve="consumer",
        rpm=(140, 320), session=(4.0, 35.0, 0.8), population="consumer", user_sigma=2.1,
        models=[[("gpt-4o", 0.90), ("gpt-4o-mini", 0.10)],
                [("claude-sonnet-4", 0.86), ("claude-3-5-haiku", 0.14)],
                [("gpt-4.1", 0.74), ("gpt-4.1-mini", 0.19), ("gpt-4o", 0.07)]],
        errors=(0.003, 0.012), error_mix=(0.35, 0.10, 0.30, 0.25), timeout_ms=60000),
    "voice": dict(
        names=["voice-assistant", "in-car-assistant"], streaming=True, curve="consumer",
        rpm=(30, 90), session=(6.0, 9.0, 0.6), population="consumer", user_sigma=1.8,
        models=[[("gpt-4o-mini", 0.91), ("gemini-2.0-flash", 0.09)],
                [("gemini-2.0-flash", 0.93), ("gpt-4.1-mini", 0.07)]],
        errors=(0.002, 0.008), error_mix=(0.30, 0.30, 0.35, 0.05), timeout_ms=15000),
    "rag": dict(
        names=["kb-search", "help-center-answers", "policy-search"], streaming=True, curve="business",
        rpm=(50, 160), session=(1.8, 50.0, 0.9), population="enterprise", share=0.6, user_sigma=1.8,
        models=[[("gpt-4o-mini", 0.90), ("gpt-4o", 0.10)],
                [("gemini-2.0-flash", 0.92), ("gemini-2.5-pro", 0.08)],
                [("claude-3-5-haiku", 0.88), ("claude-sonnet-4", 0.12)]],
        errors=(0.002, 0.010), error_mix=(0.40, 0.15, 0.40, 0.05), timeout_ms=45000),
    "docs": dict(
        names=["contract-review", "doc-intake"], streaming=False, curve="business",
        rpm=(2, 8), session=(6.0, 14.0, 0.6), population="docs", user_sigma=1.2,
        models=[[("claude-sonnet-4", 0.90), ("claude-3-5-haiku", 0.10)],
                [("gpt-4.1", 0.92), ("gpt-4.1-mini", 0.08)],
                [("gemini-2.5-pro", 0.85), ("gemini-2.0-flash", 0.15)]],
        errors=(0.004, 0.020), error_mix=(0.25, 0.35, 0.35, 0.05), timeout_ms=300000),
    "agent": dict(
        names=["agent-runner", "ops-agent", "research-agent"], streaming=False, curve="business",
        rpm=(15, 50), population="enterprise", share=0.25, user_sigma=1.6,
        models=[[("claude-sonnet-4", 0.80), ("claude-3-5-haiku", 0.20)],
                [("gpt-4.1", 0.75), ("gpt-4.1-mini", 0.25)],
                [("o3-mini", 0.62), ("gpt-4o-mini", 0.38)]],
        errors=(0.004, 0.015), error_mix=(0.45, 0.20, 0.33, 0.02), timeout_ms=120000),
    "batch": dict(
        names=["catalog-tagger", "nightly-enrichment", "ticket-summarizer", "review-digest"],
        streaming=False, curve=None, rpm=(8, 40), population="service",
        models=[[("gpt-4o-mini", 1.0)], [("llama-3.1-8b-instruct", 1.0)],
                [("gemini-2.0-flash", 1.0)], [("claude-3-5-haiku", 1.0)]],
        errors=(0.002, 0.010), error_mix=(0.55, 0.15, 0.30, 0.00), timeout_ms=60000),
    "internal": dict(
        names=["sql-helper", "hr-assistant", "sales-notes"], streaming=True, curve="business",
        rpm=(0.5, 4), session=(2.5, 60.0, 0.9), population="internal", user_sigma=1.3,
        models=[[("gpt-4.1", 0.70), ("gpt-4.1-mini", 0.30)],
                [("llama-3.1-70b-instruct", 1.0)],
                [("mistral-large-2411", 0.80), ("codestral-2501", 0.20)]],
        errors=(0.002, 0.015), error_mix=(0.20, 0.25, 0.45, 0.10), timeout_ms=60000),
    "classifier": dict(
        names=["guardrail-classifier", "intent-router"], streaming=False, curve="consumer",
        rpm=(60, 200), session=(1.4, 3.0, 0.7), population="consumer", user_sigma=2.1,
        models=[[("llama-guard-3-8b", 1.0)], [("gpt-4o-mini", 0.95), ("gpt-4.1-mini", 0.05)]],
        errors=(0.002, 0.006), error_mix=(0.35, 0.25, 0.40, 0.00), timeout_ms=10000),
    "code": dict(
        names=["code-assist"], streaming=True, curve="business",
        rpm=(40, 70), population="enterprise", share=0.4, user_sigma=1.7,
        models=[[("codestral-2501", 0.82), ("gpt-4o-mini", 0.18)],
                [("gpt-4o-mini", 0.91), ("gpt-4.1-mini", 0.09)],
                [("claude-3-5-haiku", 0.86), ("claude-sonnet-4", 0.14)]],
        errors=(0.002, 0.008), error_mix=(0.45, 0.15, 0.40, 0.00), timeout_ms=30000),
}
REQUIRED = ["code", "chat", "batch"]
OPTIONAL = {"rag": 3.0, "classifier": 2.0, "agent": 2.0, "docs": 1.5, "internal": 1.5,
            "voice": 1.0, "batch": 0.7}


@dataclass
class Service:
    idx: int
    name: str
    archetype: str
    streaming: bool
    models: List[Tuple[str, float]]
    mean_rpm: float
    tz: List[Tuple[float, float]]  # population mix of (UTC offset hours, weight)
    users: np.ndarray  # global user indices
    user_w: np.ndarray  # activity weights, sum 1
    error_rate: float
    error_mix: Tuple[float, ...]
    timeout_ms: float
    shape: np.ndarray = field(default=None)  # per minute, mean 1
    keys: List[int] = field(default_factory=list)  # global key indices, parallel to models
    rollout: Optional[Tuple[int, float, float, float]] = None  # (key, t0, t1, final share)
    bursts: List[Tuple[float, float]] = field(default_factory=list)  # batch schedule
    late: Optional[Tuple[int, float]] = None  # batch: (burst number, delay s)
    spec: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def rfc3339(epoch: float) -> str:
    ms = int(math.floor(epoch * 1000.0 + 1e-6))
    sec, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%03dZ" % frac


def group_cumsum(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at every group of ``sizes`` consecutive values."""
    cs = np.cumsum(values)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return cs - np.repeat(cs[starts] - values[starts], sizes)


def ou_noise(rng: np.random.Generator, n: int, sigma: float, tau: float) -> np.ndarray:
    """A stationary Ornstein-Uhlenbeck series (step 1, correlation time tau)."""
    a = math.exp(-1.0 / tau)
    b = sigma * math.sqrt(1 - a * a)
    eps = rng.standard_normal(n)
    out = np.empty(n)
    x = rng.standard_normal() * sigma
    for i in range(n):
        x = a * x + b * eps[i]
        out[i] = x
    return out


def lognormal(rng, median, sigma, n):
    return rng.lognormal(math.log(median), sigma, n)


def pick_shares(rng, models):
    w = np.array([s for _, s in models]) * rng.lognormal(0, 0.12, len(models))
    w = w / w.sum()
    return [(m, float(x)) for (m, _), x in zip(models, w)]


# --------------------------------------------------------------------------------------
# The world: services, users, daily curves
# --------------------------------------------------------------------------------------


class World:
    def __init__(self, seed: int, hours: float, data_dir: str):
        self.seed = seed
        self.hours = hours
        self.horizon = hours * 3600.0
        self.minutes = int(math.ceil(self.horizon / 60.0))
        streams = np.random.SeedSequence(seed).spawn(6)
        self.rng_world, self.rng_traffic, self.rng_inc, self.rng_obs, self.rng_sec, self.rng_trap = (
            np.random.default_rng(s) for s in streams)
        rng = self.rng_world
        day = int(rng.integers(0, 7))
        self.start_dt = BASE_DATE + timedelta(days=day)
        self.t0 = self.start_dt.timestamp()
        self.weekday0 = self.start_dt.weekday()
        self.data_dir = data_dir
        self.keys: List[Tuple[int, str]] = []  # (service idx, model name)
        self._build_users()
        self._build_services()

    # ---- users and tenants ---------------------------------------------------------

    def _build_users(self):
        rng = self.rng_world
        n_consumer = int(rng.integers(3000, 13000))
        n_enterprise = int(rng.integers(1000, 5000))
        n_tenants = int(rng.integers(25, 120))
        n_internal = int(rng.integers(150, 450))
        ids: List[str] = []
        tenants: List[Optional[str]] = []
        numbers = rng.choice(np.arange(100000, 1000000), n_consumer + n_enterprise + n_internal,
                             replace=False)
        tenant_names = ["tn-%04x" % x for x in rng.choice(np.arange(4096, 65536), n_tenants, replace=False)]
        tenant_w = 1.0 / np.arange(1, n_tenants + 1) ** 1.1  # Zipf tenant sizes
        tenant_w /= tenant_w.sum()
        tenant_of = rng.choice(n_tenants, n_enterprise, p=tenant_w)
        for i in range(n_consumer):
            ids.append("u%d" % numbers[i])
            tenants.append(None)
        for i in range(n_enterprise):
            ids.append("u%d" % numbers[n_consumer + i])
            tenants.append(tenant_names[tenant_of[i]])
        for i in range(n_internal):
            ids.append("u%d" % numbers[n_consumer + n_enterprise + i])
            tenants.append("tn-internal")
        self.consumer = np.arange(0, n_consumer)
        self.enterprise = np.arange(n_consumer, n_consumer + n_enterprise)
        self.internal = np.arange(n_consumer + n_enterprise, len(ids))
        self.tenant_of_enterprise = tenant_of
        self.user_ids = ids
        self.user_tenant = tenants
        self.tenant_names = tenant_names
        # A personal habit: some users write long prompts, some short ones.
        self.user_scale = rng.lognormal(0, 0.35, len(ids))

    def add_user(self, uid: str, tenant: Optional[str], scale: float = 1.0) -> int:
        self.user_ids.append(uid)
        self.user_tenant.append(tenant)
        self.user_scale = np.append(self.user_scale, scale)
        return len(self.user_ids) - 1

    def new_user_id(self, rng) -> str:
        while True:
            uid = "u%d" % int(rng.integers(1000000, 9999999))
            if uid not in self._id_set:
                self._id_set.add(uid)
                return uid

    # ---- services --------------------------------------------------------------------

    def _build_services(self):
        rng = self.rng_world
        n = int(rng.integers(5, 9))
        kinds = list(REQUIRED)
        pool = dict(OPTIONAL)
        while len(kinds) < n:
            names = list(pool)
            w = np.array([pool[k] for k in names])
            k = names[int(rng.choice(len(names), p=w / w.sum()))]
            kinds.append(k)
            del pool[k]
        used_names = set()
        self.services: List[Service] = []
        for arch in kinds:
            spec = ARCHETYPES[arch]
            name = next(x for x in rng.permutation(spec["names"]) if x not in used_names)
            used_names.add(str(name))
            models = pick_shares(rng, spec["models"][int(rng.integers(len(spec["models"])))])
            rpm = float(math.exp(rng.uniform(*np.log(spec["rpm"]))))
            err = float(math.exp(rng.uniform(*np.log(spec["errors"]))))
            tz = self._draw_tz(rng, spec)
            users, w = self._draw_population(rng, arch, spec, str(name))
            svc = Service(len(self.services), str(name), arch, spec["streaming"], models, rpm, tz,
                          users, w, err, spec["error_mix"], spec["timeout_ms"], spec=spec)
            self.services.append(svc)
        # Scale so that the whole world runs at 700-1000 requests a minute on average, no
        # key above ~300 a minute: what a capped service cannot take goes to the others.
        target = float(rng.uniform(700, 1000))
        cap = {"agent": 120.0, "batch": 60.0}
        limit = {s.idx: cap.get(s.archetype, 300.0) / max(sh for _, sh in s.models) for s in self.services}
        flex = [s for s in self.services if s.archetype not in ("code", "docs", "internal")]
        for _ in range(4):
            fixed = sum(s.mean_rpm for s in self.services if s not in flex)
            f = max(0.6, min(2.5, (target - fixed) / max(1.0, sum(s.mean_rpm for s in flex))))
            for s in flex:
                s.mean_rpm = min(s.mean_rpm * f, limit[s.idx])
            flex = [s for s in flex if s.mean_rpm < limit[s.idx] * 0.999]
            if not flex:
                break
        for s in self.services:
            for m, _ in s.models:
                s.keys.append(len(self.keys))
                self.keys.append((s.idx, m))
            s.shape = self._daily_shape(rng, s)
        self._id_set = set(self.user_ids)

    @staticmethod
    def _draw_tz(rng, spec):
        if spec["curve"] is None:
            return [(0.0, 1.0)]
        regions = [-5.0, -8.0, 1.0, 0.0, -6.0, 5.5]
        main = float(rng.choice(regions))
        second = float(rng.choice([r for r in regions if r != main]))
        minor = float(rng.uniform(0.03, 0.12) if spec["curve"] == "consumer" else rng.uniform(0.05, 0.2))
        return [(main, 1 - minor), (second, minor)]

    def _draw_population(self, rng, arch, spec, name):
        pop = spec["population"]
        if pop == "consumer":
            users = self.consumer
        elif pop == "enterprise":
            users = rng.choice(self.enterprise, int(len(self.enterprise) * spec["share"]), replace=False)
        elif pop == "internal":
            users = self.internal
        elif pop == "docs":  # a handful of firms with a few heavy reviewers each
            firms = rng.choice(len(self.tenant_names), int(rng.integers(3, 9)), replace=False)
            cand = self.enterprise[np.isin(self.tenant_of_enterprise, firms)]
            users = rng.choice(cand, min(len(cand), int(rng.integers(20, 80))), replace=False)
        else:  # batch service accounts
            k = int(rng.integers(1, 4))
            users = np.array([self.add_user("svc-%s-%d" % (name, i + 1), "tn-internal", 1.0)
                              for i in range(k)])
            return users, np.full(k, 1.0 / k)
        users = np.sort(users)
        w = rng.lognormal(0, spec.get("user_sigma", 1.5), len(users))
        for _ in range(3):  # even a power user (an integration key) is capped at 1.5% of a service
            w = np.minimum(w / w.sum(), 0.015)
        return users, w / w.sum()

    def _daily_shape(self, rng, svc: Service) -> np.ndarray:
        """Per-minute traffic level of a service, mean 1 over the world."""
        if svc.archetype == "batch":
            return np.ones(self.minutes)
        if svc.archetype == "classifier":  # guards the consumer traffic: follows the chat curve
            chat = next(s for s in self.services if s.archetype == "chat")
            svc.tz = chat.tz
        pts = CURVES[svc.spec["curve"]]
        hours = np.array([h for h, _ in pts]) + rng.normal(0, 0.3, len(pts))
        level = np.array([v for _, v in pts]) * rng.lognormal(0, 0.07, len(pts))
        order = np.argsort(hours)
        hours, level = hours[order], level[order]
        floor = level.min()
        tmin = np.arange(self.minutes) * 60.0 + 30.0
        total = np.zeros(self.minutes)
        for offset, weight in svc.tz:
            local_h = tmin / 3600.0 + offset
            hod = np.mod(local_h, 24.0)
            # The curve's points a day either side, in order: with the hours' jitter, the last point
            # of one day can fall after the first of the next, and np.interp needs increasing hours.
            xp = np.concatenate((hours - 24, hours, hours + 24))
            o = np.argsort(xp, kind="stable")
            base = np.interp(hod, xp[o], np.tile(level, 3)[o])
            day = np.floor(local_h / 24.0).astype(int)
            weekday = (self.weekday0 + day) % 7
            dayfac = np.where(weekday >= 5, WEEKEND[svc.spec["curve"]], 1.0)
            amp = rng.lognormal(0, 0.08, day.max() - day.min() + 1)[day - day.min()]
            total += weight * (floor + (base - floor) * dayfac * amp)
        total *= np.exp(ou_noise(rng, self.minutes, 0.07, 25.0))
        return total / total.mean()

    # ---- convenience -------------------------------------------------------------------

    def model_shares_at(self, svc: Service, t: np.ndarray) -> np.ndarray:
        """Per-event probabilities of each of the service's models at times t."""
        shares = np.tile(np.array([s for _, s in svc.models]), (len(t), 1))
        if svc.rollout is not None:
            key, t0, t1, final = svc.rollout
            j = svc.keys.index(key)
            new = final * np.clip((t - t0) / (t1 - t0), 0.0, 1.0)
            shares[:, j] = 0.0
            shares = shares / shares.sum(axis=1, keepdims=True) * (1 - new)[:, None]
            shares[:, j] = new
        return shares

    def assign_keys(self, svc: Service, t: np.ndarray, rng) -> np.ndarray:
        keys = np.array(svc.keys)
        if len(keys) == 1:
            return np.full(len(t), keys[0])
        cum = np.cumsum(self.model_shares_at(svc, t), axis=1)
        u = rng.random(len(t))[:, None]
        j = (u > cum).sum(axis=1)
        return keys[np.minimum(j, len(keys) - 1)]


# --------------------------------------------------------------------------------------
# Token samplers: (rng, n, step within session, user scale) -> (input, output)
# --------------------------------------------------------------------------------------


def tokens_chat(rng, n, step, scale):
    sys_prompt = lognormal(rng, 420, 0.25, n)
    msg = lognormal(rng, 60, 1.0, n) * scale
    long_paste = rng.random(n) < 0.03
    msg[long_paste] = lognormal(rng, 6000, 0.8, long_paste.sum())
    history = step * lognormal(rng, 330, 0.4, n)
    inp = sys_prompt + msg + history
    out = lognormal(rng, 230, 0.75, n) * np.sqrt(scale)
    essay = rng.random(n) < 0.02
    out[essay] = lognormal(rng, 1300, 0.5, essay.sum())
    return inp, out


def tokens_voice(rng, n, step, scale):
    inp = lognormal(rng, 380, 0.2, n) + lognormal(rng, 25, 0.6, n) * scale + step * lognormal(rng, 90, 0.4, n)
    out = lognormal(rng, 70, 0.55, n)
    return inp, out


def tokens_rag(rng, n, step, scale):
    chunks = rng.integers(4, 11, n)
    inp = 60 + chunks * lognormal(rng, 480, 0.35, n) + lognormal(rng, 25, 0.7, n) * scale
    deep = rng.random(n) < 0.05
    inp[deep] = lognormal(rng, 14000, 0.4, deep.sum())
    out = lognormal(rng, 170, 0.6, n)
    return inp, out


def tokens_docs(rng, n, step, scale):
    inp = lognormal(rng, 20000, 0.75, n) * scale
    out = lognormal(rng, 1400, 0.6, n)
    meta = rng.random(n) < 0.12  # metadata extraction passes
    inp[meta] = lognormal(rng, 2200, 0.5, meta.sum())
    out[meta] = lognormal(rng, 180, 0.5, meta.sum())
    return np.minimum(inp, 180000), out


def tokens_batch(rng, n, step, scale, median_in=1500.0, median_out=220.0):
    return lognormal(rng, median_in, 0.45, n), lognormal(rng, median_out, 0.5, n)


def tokens_internal(rng, n, step, scale):
    inp = lognormal(rng, 800, 1.1, n) * scale + step * lognormal(rng, 300, 0.5, n)
    return np.minimum(inp, 60000), lognormal(rng, 350, 0.9, n)


def tokens_classifier(rng, n, step, scale):
    return lognormal(rng, 320, 0.8, n) * scale, lognormal(rng, 6, 0.4, n)


TOKEN_SAMPLERS = {"chat": tokens_chat, "voice": tokens_voice, "rag": tokens_rag, "docs": tokens_docs,
                  "internal": tokens_internal, "classifier": tokens_classifier}


# --------------------------------------------------------------------------------------
# Traffic generators. Each returns columns t, key, user, inp, out (unsorted).
# --------------------------------------------------------------------------------------


def _columns(t, key, user, inp, out, flag=0):
    return {"t": np.asarray(t, float), "key": np.asarray(key, np.int32), "user": np.asarray(user, np.int64),
            "inp": np.asarray(inp, float), "out": np.asarray(out, float),
            "flag": np.full(len(t), flag, np.int8)}


def gen_sessions(world: World, svc: Service, rng) -> dict:
    """Users open sessions; each session is a run of requests separated by think time."""
    mean_size, gap_median, gap_sigma = svc.spec["session"]
    per_min = svc.mean_rpm * svc.shape / mean_size
    counts = rng.poisson(per_min)
    n = int(counts.sum())
    starts = np.repeat(np.arange(world.minutes) * 60.0, counts) + rng.uniform(0, 60, n)
    # Heavy-tailed session lengths with the requested mean.
    mu = (mean_size - 1) * rng.lognormal(-0.5, 1.0, n)
    sizes = 1 + rng.poisson(mu)
    total = int(sizes.sum())
    gaps = lognormal(rng, gap_median, gap_sigma, total)
    first = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    gaps[first] = 0.0
    sess = np.repeat(np.arange(n), sizes)
    t = starts[sess] + group_cumsum(gaps, sizes)
    step = np.arange(total) - np.repeat(first, sizes)
    user_of_session = svc.users[rng.choice(len(svc.users), n, p=svc.user_w)]
    key_of_session = world.assign_keys(svc, starts, rng)
    user = user_of_session[sess]
    inp, out = TOKEN_SAMPLERS[svc.archetype](rng, total, step, world.user_scale[user])
    keep = t < world.horizon
    return _columns(t[keep], key_of_session[sess][keep], user[keep], inp[keep], out[keep])


def gen_agent(world: World, svc: Service, rng) -> dict:
    """Tasks: chains of 5-40 calls from one user, context growing with every tool result."""
    calls_median = 11.0
    mean_calls = calls_median * math.exp(0.55 ** 2 / 2)
    counts = rng.poisson(svc.mean_rpm * svc.shape / mean_calls)
    n = int(counts.sum())
    starts = np.repeat(np.arange(world.minutes) * 60.0, counts) + rng.uniform(0, 60, n)
    sizes = np.clip(np.round(lognormal(rng, calls_median, 0.55, n)), 5, 40).astype(int)
    total = int(sizes.sum())
    first = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    last = first + sizes - 1
    task = np.repeat(np.arange(n), sizes)
    user = svc.users[rng.choice(len(svc.users), n, p=svc.user_w)][task]
    key = world.assign_keys(svc, np.repeat(starts, sizes), rng)
    out = lognormal(rng, 320, 0.9, total)
    out[last] = lognormal(rng, 1500, 0.5, n)
    tool = lognormal(rng, 450, 1.0, total)
    grow = out + tool
    grow[last] = 0.0
    context = group_cumsum(grow, sizes) - grow  # what earlier steps added
    inp = np.repeat(lognormal(rng, 2400, 0.3, n), sizes) * world.user_scale[user] ** 0.3 + context
    inp = np.minimum(inp, 150000)
    m = [CATALOG[world.keys[k][1]] for k in svc.keys]
    kpos = np.searchsorted(np.array(svc.keys), key)
    ttft = np.array([x.ttft_base for x in m])[kpos] + np.array([x.prefill_ms for x in m])[kpos] * inp
    est = (ttft + np.array([x.tpot_ms for x in m])[kpos] * out) / 1000.0
    gap = np.concatenate(([0.0], est[:-1])) + lognormal(rng, 1.5, 1.0, total)
    gap[first] = 0.0
    t = starts[task] + group_cumsum(gap, sizes)
    keep = t < world.horizon
    return _columns(t[keep], key[keep], user[keep], inp[keep], out[keep])


def plan_batch(world: World, svc: Service, rng):
    """A fixed schedule: a burst of D minutes every P minutes, maybe only in a nightly window."""
    period = int(rng.choice([10, 15, 20, 30, 60]))
    nightly = rng.random() < 0.35
    active_frac = 7.0 / 24.0 if nightly else 1.0
    duration = float(rng.uniform(2.0, min(8.0, period / 2.0)))
    rate = svc.mean_rpm * period / duration / active_frac
    if rate > 300:
        duration = min(period / 2.0, duration * rate / 300.0)
        rate = min(300.0, svc.mean_rpm * period / duration / active_frac)
    svc.mean_rpm = rate * duration / period * active_frac
    offset = int(rng.integers(0, period))
    window_start = float(rng.uniform(0, 4)) if nightly else 0.0
    svc.spec = dict(svc.spec, period=period, duration=duration, burst_rpm=rate, nightly=nightly,
                    offset=offset, med_in=float(rng.uniform(600, 2500)), med_out=float(rng.uniform(80, 400)))
    bursts = []
    s = offset * 60.0
    while s < world.horizon:
        hod = (s / 3600.0) % 24.0
        if not nightly or window_start <= hod < window_start + 7.0:
            bursts.append((s, s + duration * 60.0))
        s += period * 60.0
    svc.bursts = bursts


def gen_batch(world: World, svc: Service, rng) -> dict:
    sp = svc.spec
    ts = []
    users = []
    for b, (s, e) in enumerate(svc.bursts):
        if svc.late is not None and svc.late[0] == b:
            s, e = s + svc.late[1], e + svc.late[1]
        n = rng.poisson(sp["burst_rpm"] * (e - s) / 60.0 * rng.lognormal(0, 0.12))
        ts.append(s + (e - s) * rng.random(n) ** 1.15)  # front-loaded queue drain
        users.append(np.full(n, svc.users[rng.integers(len(svc.users))]))
    trickle = rng.poisson(rng.uniform(0.05, 0.3) * world.horizon / 60.0)  # manual reruns
    ts.append(rng.uniform(0, world.horizon, trickle))
    users.append(svc.users[rng.integers(len(svc.users), size=trickle)])
    t = np.concatenate(ts)
    user = np.concatenate(users)
    inp, out = tokens_batch(rng, len(t), None, None, sp["med_in"], sp["med_out"])
    keep = t < world.horizon
    return _columns(t[keep], np.full(keep.sum(), svc.keys[0]), user[keep], inp[keep], out[keep])


def load_trace(data_dir: str):
    path = os.path.join(data_dir, TRACE_FILE)
    with gzip.open(path, "rt") as f:
        rows = list(csv.DictReader(f))
    t = np.array([datetime.fromisoformat(r["TIMESTAMP"][:26]).timestamp() for r in rows])
    t -= t.min()
    return (t, np.array([int(r["ContextTokens"]) for r in rows], float),
            np.array([int(r["GeneratedTokens"]) for r in rows], float))


def gen_trace(world: World, svc: Service, rng, trace) -> dict:
    """The real code trace, tiled over the day (each tile rotated), thinned by the daily curve."""
    tt, tin, tout = trace
    span = float(tt.max()) + 1.0
    trace_rpm = len(tt) / (span / 60.0)
    cap = 0.92 * trace_rpm * svc.shape.mean() / svc.shape.max()
    svc.mean_rpm = min(svc.mean_rpm, cap)
    keep_p = svc.mean_rpm / trace_rpm * svc.shape
    parts_t, parts_i = [], []
    cursor = 0.0
    while cursor < world.horizon:
        rot = rng.uniform(0, span)
        t = cursor + np.mod(tt + rot, span)
        parts_t.append(t)
        parts_i.append(np.arange(len(tt)))
        cursor += span + rng.uniform(20, 160)
    t = np.concatenate(parts_t)
    idx = np.concatenate(parts_i)
    minute = np.minimum((t // 60).astype(int), world.minutes - 1)
    keep = (t < world.horizon) & (rng.random(len(t)) < keep_p[minute])
    t, idx = t[keep], idx[keep]
    user = svc.users[rng.choice(len(svc.users), len(t), p=svc.user_w)]
    key = world.assign_keys(svc, t, rng)
    return _columns(t, key, user, tin[idx], tout[idx])


# --------------------------------------------------------------------------------------
# Event table
# --------------------------------------------------------------------------------------


def concat(parts: List[dict]) -> dict:
    return {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}


def take(cols: dict, idx) -> dict:
    return {c: v[idx] for c, v in cols.items()}


def key_window(ev: dict, key: int, s: float, e: float) -> np.ndarray:
    return np.flatnonzero((ev["key"] == key) & (ev["t"] >= s) & (ev["t"] < e))


def resample_window(ev, rng, key_mask, s, e, n_extra, times, users, flag):
    """Extra requests whose tokens and keys are drawn from the existing ones in a window."""
    src = np.flatnonzero(key_mask & (ev["t"] >= s) & (ev["t"] < e))
    if n_extra <= 0 or len(src) == 0:
        return None
    pick = rng.choice(src, n_extra)
    return _columns(times, ev["key"][pick], users if users is not None else ev["user"][pick],
                    ev["inp"][pick], ev["out"][pick], flag)


# --------------------------------------------------------------------------------------
# Traps: legitimate one-offs, never labelled
# --------------------------------------------------------------------------------------


def plan_traps(world: World) -> List[dict]:
    rng = world.rng_trap
    H = world.horizon
    traps = []
    # A gradual rollout of a new model on one service (planned before traffic is drawn).
    cands = [s for s in world.services if s.archetype in ("chat", "rag", "agent", "code", "internal")]
    if cands and rng.random() < 0.7 and H > 6 * 3600:
        svc = cands[int(rng.integers(len(cands)))]
        have = {m for m, _ in svc.models}
        fresh = [m for m in CATALOG if m not in have and m != "llama-guard-3-8b"]
        new = str(rng.choice(fresh))
        t0 = float(rng.uniform(0.15, 0.55) * H)
        t1 = min(H, t0 + rng.uniform(2, 6) * 3600)
        final = float(rng.uniform(0.10, 0.30))
        svc.models.append((new, 0.0))
        svc.keys.append(len(world.keys))
        world.keys.append((svc.idx, new))
        svc.rollout = (svc.keys[-1], t0, t1, final)
        traps.append(dict(kind="model_rollout", service=svc.name, model=None, types=["traffic", "cost", "latency"],
                          start=t0, end=t1, detail="%s rolled out gradually to %.0f%% of %s traffic"
                          % (new, final * 100, svc.name), keys=[svc.keys[-1]]))
    # A batch run that starts a few minutes late.
    for svc in world.services:
        if svc.archetype == "batch" and svc.bursts and rng.random() < 0.8:
            ok = [b for b, (s, e) in enumerate(svc.bursts) if s > 3600 and e < H - 1800]
            if ok:
                b = int(rng.choice(ok))
                delay = float(rng.uniform(3, 8) * 60)
                svc.late = (b, delay)
                s, e = svc.bursts[b]
                traps.append(dict(kind="late_batch", service=svc.name, model=None, types=["traffic"],
                                  start=s, end=e + delay, detail="scheduled run started %.1f min late"
                                  % (delay / 60), keys=list(svc.keys), burst=b))
    # A marketing push on the consumer chat (drawn after the base traffic exists).
    for svc in world.services:
        if svc.archetype == "chat":
            dur = float(rng.uniform(20, 40) * 60)
            s = float(rng.uniform(0.1 * H, H - dur - 600))
            lift = float(rng.uniform(0.5, 0.8))
            traps.append(dict(kind="marketing_spike", service=svc.name, model=None, types=["traffic", "cost"],
                              start=s, end=s + dur, detail="push campaign: +%.0f%% sessions" % (lift * 100),
                              keys=list(svc.keys), lift=lift))
    return traps


def apply_marketing(world: World, ev: dict, trap: dict) -> Optional[dict]:
    rng = world.rng_trap
    s, e = trap["start"], trap["end"]
    mask = np.isin(ev["key"], trap["keys"])
    base = int((mask & (ev["t"] >= s) & (ev["t"] < e)).sum())
    n = int(rng.poisson(base * trap["lift"]))
    # Fast rise, plateau, slow fade: a trapezoid in time.
    u = rng.random(n)
    x = np.where(u < 0.1, np.sqrt(u / 0.1) * 0.1, np.where(u < 0.6, u, 1 - np.sqrt((1 - u) / 0.4) * 0.4))
    times = s + x * (e - s)
    svc = world.services[world.keys[trap["keys"][0]][0]]
    flat = svc.user_w ** 0.3
    users = svc.users[rng.choice(len(svc.users), n, p=flat / flat.sum())]
    return resample_window(ev, rng, mask, s, e, n, times, users, 4)


# --------------------------------------------------------------------------------------
# Incidents
# --------------------------------------------------------------------------------------

TYPE_WEIGHTS = {"latency": 3, "ttft": 2, "tokens": 3, "cost": 2, "error_rate": 4, "traffic": 4, "drift": 2,
                "token_abuse": 3, "coordinated_attack": 3}
MIN_EVENTS = {"latency": 20, "ttft": 20, "tokens": 20, "cost": 20, "error_rate": 40, "traffic": 40,
              "drift": 80, "token_abuse": 1}


@dataclass
class Incident:
    type: str
    service: Service
    key: Optional[int]
    start: float
    end: float
    magnitude: float
    detail: str
    params: dict
    subject: Optional[str] = None
    effects: List[str] = field(default_factory=list)
    id: str = ""


class Planner:
    def __init__(self, world: World, ev: dict, traps: List[dict]):
        self.world = world
        self.rng = world.rng_inc
        self.busy: Dict[object, List[Tuple[float, float]]] = {}
        order = np.lexsort((ev["t"], ev["key"]))
        keys_sorted = ev["key"][order]
        self.times = {}
        for k in range(len(world.keys)):
            lo, hi = np.searchsorted(keys_sorted, [k, k + 1])
            self.times[k] = ev["t"][order[lo:hi]]
        for tr in traps:
            for k in tr["keys"]:
                self.reserve(k, tr["start"], tr["end"])

    def count(self, key, s, e) -> int:
        t = self.times[key]
        return int(np.searchsorted(t, e) - np.searchsorted(t, s))

    def free(self, key, s, e) -> bool:
        return all(e + PAD_S <= a or s - PAD_S >= b for a, b in self.busy.get(key, []))

    def reserve(self, key, s, e):
        self.busy.setdefault(key, []).append((s, e))

    def draw_key(self, services: List[Service]) -> Tuple[Service, int]:
        svc = services[int(self.rng.integers(len(services)))]
        shares = np.array([max(sh, 0.02) for _, sh in svc.models[: len(svc.keys)]]) ** 0.5
        if svc.rollout is not None:  # the key being rolled out is not a target
            shares[svc.keys.index(svc.rollout[0])] = 0.0
        return svc, svc.keys[int(self.rng.choice(len(shares), p=shares / shares.sum()))]

    def plan(self) -> List[Incident]:
        w = self.world
        rng = self.rng
        n = max(1, int(round(rng.uniform(20, 30) * w.hours / 24.0)))
        types = list(TYPE_WEIGHTS)[: min(n, len(TYPE_WEIGHTS))]
        p = np.array(list(TYPE_WEIGHTS.values()), float)
        types += list(rng.choice(list(TYPE_WEIGHTS), n - len(types), p=p / p.sum()))
        rng.shuffle(types)
        out = []
        for typ in types:
            for _ in range(300):
                inc = self._try(str(typ))
                if inc is not None:
                    out.append(inc)
                    break
        out.sort(key=lambda i: i.start)
        for i, inc in enumerate(out):
            inc.id = "cw%d-%02d" % (w.seed, i + 1)
        return out

    def _window(self, lo_min, hi_min, tail=600.0):
        dur = float(self.rng.uniform(lo_min, hi_min)) * 60.0
        latest = self.world.horizon - dur - tail
        if latest <= WARMUP_S:
            return None
        s = float(np.round(self.rng.uniform(WARMUP_S, latest)))
        return s, s + round(dur)

    def _try(self, typ) -> Optional[Incident]:
        w, rng = self.world, self.rng
        svcs = w.services
        if typ == "ttft":
            svcs = [s for s in svcs if s.streaming]
        if typ in ("drift",):
            svcs = [s for s in svcs if s.archetype != "batch"]
        if typ == "token_abuse":
            svcs = [s for s in svcs if s.archetype not in ("batch", "classifier")]
        if typ == "coordinated_attack":
            svcs = [s for s in svcs if s.archetype not in ("batch",)]
            svc = svcs[int(rng.integers(len(svcs)))]
            win = self._window(1, 5)
            if win is None or not self.free(("attack", svc.idx), *win):
                return None
            self.reserve(("attack", svc.idx), *win)
            n = int(rng.integers(12, 41))
            return Incident(typ, svc, None, win[0], win[1], float(n),
                            "%d prompt-injection/jailbreak events from one source" % n, {"n": n})
        if not svcs:
            return None
        svc, key = self.draw_key(svcs)
        streaming = svc.streaming
        if typ == "traffic" and svc.archetype == "batch":
            cand = [b for b in svc.bursts if b[0] >= WARMUP_S and b[1] < w.horizon - 600]
            if not cand:
                return None
            s, e = cand[int(rng.integers(len(cand)))]
            if not self.free(key, s, e) or self.count(key, s, e) < 10:
                return None
            self.reserve(key, s, e)
            return Incident(typ, svc, key, s, e, 0.0, "scheduled batch run did not happen",
                            {"mode": "missing"}, effects=["cost"])
        dur = {"latency": (10, 40), "ttft": (10, 30), "tokens": (15, 30), "cost": (15, 60),
               "error_rate": (10, 30), "traffic": (10, 30), "token_abuse": (20, 60)}.get(typ)
        ramp = None
        if typ == "drift":
            ramp = float(rng.uniform(60, 120)) * 60
            win = self._window(ramp / 60 + 60, ramp / 60 + 180)
        else:
            win = self._window(*dur)
        if win is None:
            return None
        s, e = win
        if not self.free(key, s, e) or self.count(key, s, e) < MIN_EVENTS[typ]:
            return None
        inc = self._make(typ, svc, key, s, e, streaming, ramp)
        if inc is not None:
            self.reserve(key, s, e)
        return inc

    def _make(self, typ, svc, key, s, e, streaming, ramp) -> Optional[Incident]:
        rng = self.rng
        if typ == "latency":
            m = float(rng.uniform(2, 5))
            return Incident(typ, svc, key, s, e, m, "provider slowdown: latency x%.1f" % m, {},
                            effects=["ttft"] if streaming else [])
        if typ == "ttft":
            m = float(rng.uniform(3, 6))
            return Incident(typ, svc, key, s, e, m, "queueing before first token: ttft x%.1f" % m, {},
                            effects=["latency"])
        if typ == "tokens":
            if rng.random() < 0.75:
                m = float(rng.uniform(2, 4))
                return Incident(typ, svc, key, s, e, m, "prompt change: output tokens x%.1f" % m,
                                {"field": "out"}, effects=["latency", "cost"])
            m = float(rng.uniform(2.5, 3.5))
            return Incident(typ, svc, key, s, e, m, "context bloat: input tokens x%.1f" % m, {"field": "inp"},
                            effects=["latency", "cost"] + (["ttft"] if streaming else []))
        if typ == "cost":
            m = float(rng.uniform(2, 3))
            return Incident(typ, svc, key, s, e, m, "routed to a dearer model version: cost/request x%.1f" % m, {})
        if typ == "error_rate":
            p = float(rng.uniform(0.08, 0.40))
            et = str(rng.choice(ERROR_TYPES, p=[0.3, 0.25, 0.35, 0.1]))
            eff = []
            if et != "content_filter" and p * 0.55 >= 0.15:
                eff.append("traffic")
            if et == "timeout" or p >= 0.25:
                eff.append("latency")
            if p >= 0.2:
                eff += ["tokens", "cost"]
            return Incident(typ, svc, key, s, e, p, "%.0f%% %s errors" % (p * 100, et), {"error_type": et},
                            effects=eff)
        if typ == "traffic":
            if rng.random() < 0.6:
                m = float(rng.uniform(3, 6))
                mode = "retry_storm" if rng.random() < 0.5 else "bot"
                what = "client retry storm" if mode == "retry_storm" else "bot traffic from rotating keys"
                return Incident(typ, svc, key, s, e, m, "%s: requests x%.1f" % (what, m), {"mode": mode},
                                effects=["cost"])
            m = float(rng.uniform(0.0, 0.2))
            return Incident(typ, svc, key, s, e, m, "upstream outage: traffic down to %.0f%%" % (m * 100),
                            {"mode": "drop"}, effects=["cost"])
        if typ == "drift":
            m = float(rng.uniform(1.8, 2.5))
            if rng.random() < 0.5:
                return Incident(typ, svc, key, s, e, m, "latency creeping to x%.1f over %.0f min" % (m, ramp / 60),
                                {"field": "latency", "ramp": ramp},
                                effects=["latency"] + (["ttft"] if streaming else []))
            return Incident(typ, svc, key, s, e, m, "output tokens creeping to x%.1f over %.0f min" % (m, ramp / 60),
                            {"field": "out", "ramp": ramp}, effects=["tokens", "latency", "cost"])
        if typ == "token_abuse":
            v = float(rng.uniform(5, 20))
            return Incident(typ, svc, key, s, e, v, "", {"new_user": bool(rng.random() < 0.3)})
        raise ValueError(typ)


def window_factor(t: np.ndarray, inc: Incident) -> np.ndarray:
    """Multiplier of an incident at times t (drift ramps up, then holds)."""
    if inc.type == "drift":
        ramp = inc.params["ramp"]
        return 1.0 + (inc.magnitude - 1.0) * np.clip((t - inc.start) / ramp, 0.0, 1.0)
    return np.full(len(t), inc.magnitude)


def apply_traffic(world: World, ev: dict, incs: List[Incident]) -> dict:
    rng = world.rng_inc
    extra = []
    drop = np.zeros(len(ev["t"]), bool)
    for inc in incs:
        if inc.type != "traffic":
            continue
        s, e = inc.start, inc.end
        idx = key_window(ev, inc.key, s, e)
        mode = inc.params["mode"]
        if mode == "missing":
            drop[idx] = True
        elif mode == "drop":
            drop[idx[rng.random(len(idx)) >= inc.magnitude]] = True
        else:
            n = int(rng.poisson((inc.magnitude - 1) * len(idx)))
            pick = rng.choice(idx, n)
            if mode == "retry_storm":
                times = ev["t"][pick] + lognormal(rng, 4.0, 1.0, n)
                users = ev["user"][pick]
            else:
                times = rng.uniform(s, e, n)
                bots = [world.add_user(world.new_user_id(rng), None, 1.0) for _ in range(int(rng.integers(60, 300)))]
                users = np.array(bots)[rng.integers(len(bots), size=n)]
            times = np.where(times < e, times, s + (times - s) % (e - s))
            extra.append(_columns(times, ev["key"][pick], users, ev["inp"][pick], ev["out"][pick], 1))
    ev = take(ev, ~drop)
    return concat([ev] + extra) if extra else ev


def apply_token_abuse(world: World, ev: dict, incs: List[Incident]) -> dict:
    """A single user (existing or brand new) runs a scripted loop with big prompts."""
    rng = world.rng_inc
    extra = []
    for inc in incs:
        if inc.type != "token_abuse":
            continue
        svc = inc.service
        on_svc = np.isin(ev["key"], svc.keys) & (ev["flag"] == 0)
        users, inv = np.unique(ev["user"][on_svc], return_inverse=True)
        vol = np.bincount(inv, weights=ev["inp"][on_svc] + ev["out"][on_svc])
        reqs = np.bincount(inv)
        minutes = world.horizon / 60.0
        # Candidates: regular users, active but not the service's top power users.
        order = np.argsort(-vol)
        cands = [i for i in order[3:] if reqs[i] / minutes * 60 >= 2.0]
        new_user = inc.params["new_user"] or not cands
        if new_user:
            uid = world.new_user_id(rng)
            tenant = None if svc.spec["population"] == "consumer" else world.user_tenant[int(svc.users[0])]
            user = world.add_user(uid, tenant, 1.0)
            ref = np.percentile(vol / minutes, 90) if len(vol) else 1000.0
            usual_tok, usual_req = ref, max(0.2, np.percentile(reqs / minutes, 90))
        else:
            i = int(cands[int(rng.integers(min(len(cands), 400)))])
            user = int(users[i])
            usual_tok, usual_req = vol[i] / minutes, reqs[i] / minutes
        uid = world.user_ids[user]
        target_tok = inc.magnitude * usual_tok  # tokens a minute during the abuse
        rate = float(np.clip(usual_req * rng.uniform(2, 5), 0.5, 30.0))
        per_req = target_tok / rate
        model = CATALOG[world.keys[inc.key][1]]
        if per_req > 0.6 * model.context:
            per_req = 0.6 * model.context
            rate = target_tok / per_req
        n = max(3, int(round(rate * (inc.end - inc.start) / 60.0)))
        gaps = lognormal(rng, (inc.end - inc.start) / n, 0.25, n)
        t = inc.start + np.cumsum(gaps) - gaps[0] * rng.random()
        t = t[t < inc.end]
        n = len(t)
        share_out = rng.uniform(0.15, 0.45)
        inp = per_req * (1 - share_out) * rng.lognormal(0, 0.15, n)
        out = np.minimum(per_req * share_out * rng.lognormal(0, 0.15, n), model.max_out)
        extra.append(_columns(t, np.full(n, inc.key), np.full(n, user), inp, out, 2))
        inc.subject = "user:" + uid  # the actor as alerts name it (a user's id behind "user:")
        inc.params.update(user=user, rate=rate)
        inc.detail = ("%s user %s: scripted loop, %.0f req/min, token volume x%.1f of %s"
                      % ("new" if new_user else "existing", uid, rate, inc.magnitude,
                         "a heavy user's usual" if new_user else "own usual"))
    return concat([ev] + extra) if extra else ev


# --------------------------------------------------------------------------------------
# Observables: latency, ttft, errors, retries, cost
# --------------------------------------------------------------------------------------


class KeyTable:
    """Per-key constants as arrays, indexable by the key column."""

    def __init__(self, world: World):
        ms = [CATALOG[m] for _, m in world.keys]
        svcs = [world.services[s] for s, _ in world.keys]
        self.ttft_base = np.array([m.ttft_base for m in ms])
        self.prefill = np.array([m.prefill_ms for m in ms])
        self.tpot = np.array([m.tpot_ms for m in ms])
        self.price_in = np.array([m.price_in for m in ms])
        self.price_out = np.array([m.price_out for m in ms])
        self.cache_price = np.array([m.cache_price for m in ms])
        self.max_out = np.array([m.max_out for m in ms], float)
        self.context = np.array([m.context for m in ms], float)
        self.alpha = np.array([m.load_alpha for m in ms])
        self.svc = np.array([s for s, _ in world.keys])
        self.streaming = np.array([s.streaming for s in svcs])
        self.err_rate = np.array([s.error_rate for s in svcs])
        self.err_mix = np.array([s.error_mix for s in svcs])
        self.timeout = np.array([s.timeout_ms for s in svcs], float)
        self.caching = np.array([s.archetype in ("chat", "voice", "rag", "agent", "code", "classifier")
                                 for s in svcs])


def compute_latency(world: World, ev: dict, kt: KeyTable, rng) -> None:
    n = len(ev["t"])
    k = ev["key"]
    minute = np.minimum((ev["t"] // 60).astype(int), world.minutes - 1)
    peak = np.stack([s.shape / s.shape.max() for s in world.services])  # (services, minutes)
    load = 1.0 + kt.alpha[k] * peak[kt.svc[k], minute] ** 2
    # Provider weather: each model drifts a little faster or slower over the day.
    models = sorted({m for _, m in world.keys})
    weather = {m: np.exp(ou_noise(rng, world.minutes, 0.06, 30.0)) for m in models}
    wk = np.stack([weather[m] for _, m in world.keys])
    speed = load * wk[k, minute]
    ttft = (kt.ttft_base[k] + kt.prefill[k] * ev["inp"]) * rng.lognormal(0, 0.28, n) * speed
    decode = kt.tpot[k] * ev["out"] * rng.lognormal(0, 0.18, n) * speed
    slow = rng.random(n) < 0.005  # queueing / cold starts: mostly before the first token
    ttft[slow] *= rng.uniform(2.5, 10, slow.sum())
    ev["ttft"] = ttft
    ev["decode"] = decode
    ev["lat"] = ttft + decode + lognormal(rng, 25, 0.5, n)


def apply_token_incidents(ev: dict, kt: KeyTable, incs: List[Incident]) -> None:
    originals = []
    for inc in incs:
        fld = inc.params.get("field")
        if inc.type not in ("tokens", "drift") or fld not in ("inp", "out"):
            continue
        idx = key_window(ev, inc.key, inc.start, inc.end)
        originals.append((inc, idx, ev["inp"][idx].copy(), ev["out"][idx].copy()))
        ev[fld][idx] *= window_factor(ev["t"][idx], inc)
    ev["inp"] = np.minimum(np.round(ev["inp"]), kt.context[ev["key"]]).astype(np.int64)
    ev["out"] = np.clip(np.round(ev["out"]), 1, kt.max_out[ev["key"]]).astype(np.int64)
    for inc, idx, inp, out in originals:  # kept to measure what the change did downstream
        k = ev["key"][idx]
        inc.params["before"] = (idx, np.minimum(np.round(inp), kt.context[k]),
                                np.clip(np.round(out), 1, kt.max_out[k]))


def apply_latency_incidents(ev: dict, incs: List[Incident]) -> None:
    for inc in incs:
        if inc.type == "latency" or (inc.type == "drift" and inc.params["field"] == "latency"):
            idx = key_window(ev, inc.key, inc.start, inc.end)
            f = window_factor(ev["t"][idx], inc)
            ev["ttft"][idx] *= f
            ev["lat"][idx] *= f
        elif inc.type == "ttft":
            idx = key_window(ev, inc.key, inc.start, inc.end)
            added = ev["ttft"][idx] * (inc.magnitude - 1.0)
            ev["ttft"][idx] += added
            ev["lat"][idx] += added


def draw_errors(world: World, ev: dict, kt: KeyTable, incs: List[Incident], rng, idx=None) -> np.ndarray:
    """Error code per event (0 ok): a load-dependent baseline plus incident windows."""
    t, k = ev["t"], ev["key"]
    if idx is not None:
        t, k = t[idx], k[idx]
    n = len(t)
    minute = np.minimum((t // 60).astype(int), world.minutes - 1)
    peak = np.stack([s.shape / s.shape.max() for s in world.services])[kt.svc[k], minute]
    p = kt.err_rate[k] * (0.7 + 0.6 * peak)
    err = rng.random(n) < p
    cum = np.cumsum(kt.err_mix[k], axis=1)
    etype = 1 + (rng.random(n)[:, None] > cum).sum(axis=1)
    code = np.where(err, np.minimum(etype, len(ERROR_TYPES)), 0).astype(np.int8)
    for inc in incs:
        if inc.type != "error_rate":
            continue
        m = np.flatnonzero((k == inc.key) & (t >= inc.start) & (t < inc.end))
        hit = m[rng.random(len(m)) < inc.magnitude]
        code[hit] = ERR_CODE[inc.params["error_type"]]
    return code


def benign_clusters(world: World, ev: dict, code: np.ndarray, rng) -> None:
    """A few times a day 2-3 errors land in the same minute on one key: normal life."""
    n = int(round(rng.uniform(4, 12) * world.hours / 24.0))
    busy = np.bincount(ev["key"], minlength=len(world.keys)) / (world.horizon / 60.0)
    cands = np.flatnonzero(busy >= 3.0)
    for _ in range(n):
        if len(cands) == 0:
            return
        k = int(rng.choice(cands))
        s = float(rng.uniform(0, world.horizon - 60))
        idx = key_window(ev, k, s, s + 60)
        if len(idx) >= 4:
            hit = rng.choice(idx, int(rng.integers(2, 4)), replace=False)
            code[hit] = ERR_CODE[str(rng.choice(["server_error", "timeout"]))]


def errors_and_retries(world: World, ev: dict, kt: KeyTable, incs: List[Incident], rng) -> dict:
    code = draw_errors(world, ev, kt, incs, rng)
    benign_clusters(world, ev, code, rng)
    ev["code"] = code
    # Clients retry rate limits, server errors and timeouts, after a backoff.
    retryable = np.isin(code, [ERR_CODE["rate_limit"], ERR_CODE["server_error"], ERR_CODE["timeout"]])
    src = np.flatnonzero(retryable & (rng.random(len(code)) < 0.55))
    fail_ms = error_latency(ev, kt, code, src, rng)
    backoff = np.where(code[src] == ERR_CODE["rate_limit"], lognormal(rng, 2.5, 0.7, len(src)),
                       lognormal(rng, 1.0, 0.6, len(src)))
    r = take(ev, src)
    r["t"] = ev["t"][src] + fail_ms / 1000.0 + backoff
    r["flag"] = np.full(len(src), 3, np.int8)
    r["lat"] = ev["lat"][src] * rng.lognormal(0, 0.15, len(src))
    keep = r["t"] < world.horizon
    r = take(r, keep)
    r["code"] = draw_errors(world, r, kt, incs, rng)
    ev = concat([ev, r])
    finalize_errors(ev, kt, rng)
    return ev


def error_latency(ev, kt, code, idx, rng):
    c = code[idx]
    lat = ev["lat"][idx].copy()
    rl = c == ERR_CODE["rate_limit"]
    lat[rl] = lognormal(rng, 120, 0.6, rl.sum())
    to = c == ERR_CODE["timeout"]
    lat[to] = kt.timeout[ev["key"][idx][to]] * rng.uniform(1.0, 1.02, to.sum())
    se = c == ERR_CODE["server_error"]
    lat[se] *= rng.uniform(0.1, 0.8, se.sum())
    cf = c == ERR_CODE["content_filter"]
    lat[cf] = ev["ttft"][idx][cf] * rng.uniform(0.5, 1.0, cf.sum())
    return lat


def finalize_errors(ev, kt, rng):
    err = np.flatnonzero(ev["code"] > 0)
    ev["lat"][err] = error_latency(ev, kt, ev["code"], err, rng)
    ev["out"][err] = 0


def compute_cost(ev: dict, kt: KeyTable, incs: List[Incident], rng) -> None:
    k = ev["key"]
    n = len(k)
    cached = np.where(kt.caching[k] & (rng.random(n) < 0.6), rng.uniform(0.2, 0.8, n), 0.0) * ev["inp"]
    cost = ((ev["inp"] - cached) * kt.price_in[k] + cached * kt.price_in[k] * kt.cache_price[k]
            + ev["out"] * kt.price_out[k]) / 1e6
    code = ev["code"]
    cost[(code > 0) & (code != ERR_CODE["content_filter"])] = 0.0
    for inc in incs:
        if inc.type == "cost":
            cost[key_window(ev, inc.key, inc.start, inc.end)] *= inc.magnitude
    ev["cost"] = cost


def _visible(ratios: Dict[str, float], threshold: float = 1.2) -> List[str]:
    return [name for name, r in ratios.items() if r >= threshold or r <= 1.0 / threshold]


def measured_effects(ev: dict, kt: KeyTable, incs: List[Incident]) -> None:
    """Effects of token changes and scripted loops, measured against what would have been.

    A token change moves latency, ttft and cost only as much as prefill, decode and prices
    make it: tripling a 1,000-token prompt barely moves a 2-second answer.
    """
    for inc in incs:
        if "before" in inc.params:
            idx, inp0, out0 = inc.params.pop("before")
            ok = ev["code"][idx] == 0
            if inc.type == "drift":  # judge the plateau, not the ramp
                ok &= ev["t"][idx] >= inc.start + inc.params["ramp"]
            idx, inp0, out0 = idx[ok], inp0[ok], out0[ok]
            if len(idx) == 0:
                continue
            k = ev["key"][idx]
            inp, out = ev["inp"][idx], ev["out"][idx]
            base = kt.ttft_base[k]
            ttft0 = ev["ttft"][idx] * (base + kt.prefill[k] * inp0) / (base + kt.prefill[k] * inp)
            dec0 = ev["decode"][idx] * out0 / np.maximum(out, 1)
            lat0 = ev["lat"][idx] - (ev["ttft"][idx] - ttft0) - (ev["decode"][idx] - dec0)
            price0 = kt.price_in[k] * inp0 + kt.price_out[k] * out0
            price1 = kt.price_in[k] * inp + kt.price_out[k] * out
            ratios = {"latency": ev["lat"][idx].mean() / lat0.mean(),
                      "cost": price1.sum() / price0.sum()}
            if kt.streaming[inc.key]:
                ratios["ttft"] = ev["ttft"][idx].mean() / ttft0.mean()
            eff = _visible(ratios)
            inc.effects = (["tokens"] if inc.type == "drift" else []) + [
                x for x in ("latency", "ttft", "cost") if x in eff]
        elif inc.type == "token_abuse":
            idx = key_window(ev, inc.key, inc.start, inc.end)
            base = idx[ev["flag"][idx] != 2]
            if len(base) == 0:
                inc.effects = ["traffic", "tokens", "latency", "cost"]
                continue
            ratios = {"traffic": len(idx) / len(base),
                      "latency": ev["lat"][idx].mean() / ev["lat"][base].mean(),
                      "cost": ev["cost"][idx].sum() / max(1e-9, ev["cost"][base].sum())}
            tok = max(ev["inp"][idx].mean() / ev["inp"][base].mean(),
                      ev["out"][idx].mean() / max(1.0, ev["out"][base].mean()))
            eff = _visible(ratios, 1.25)
            inc.effects = [x for x in ("traffic",) if x in eff] + (["tokens"] if tok >= 1.25 else []) + [
                x for x in ("latency", "cost") if x in eff]


# --------------------------------------------------------------------------------------
# Security events
# --------------------------------------------------------------------------------------

SEC_KINDS = ["auth_failure", "rate_limited", "policy_violation", "pii_leak", "prompt_injection", "jailbreak"]
SEC_KIND_W = [0.30, 0.25, 0.15, 0.10, 0.12, 0.08]
SEVERITY = {"auth_failure": (0.85, 0.13, 0.02), "rate_limited": (0.90, 0.10, 0.0),
            "policy_violation": (0.65, 0.30, 0.05), "pii_leak": (0.45, 0.40, 0.15),
            "prompt_injection": (0.60, 0.32, 0.08), "jailbreak": (0.55, 0.35, 0.10)}
LEVELS = ("low", "medium", "high")
IP_FIRST = [23, 34, 45, 52, 66, 73, 81, 91, 102, 109, 142, 176, 185, 188, 194, 203, 213]


def random_ip(rng) -> str:
    return "%d.%d.%d.%d" % (int(rng.choice(IP_FIRST)), rng.integers(0, 256), rng.integers(0, 256),
                            rng.integers(1, 255))


def gen_security(world: World, incs: List[Incident]) -> Tuple[list, list, list, list, list]:
    rng = world.rng_sec
    svcs = [s for s in world.services if s.archetype != "batch"]
    w = np.array([{"chat": 4, "voice": 2, "rag": 2, "code": 1.5, "agent": 1.5, "docs": 0.7,
                   "internal": 0.5, "classifier": 1.0}[s.archetype] for s in svcs])
    rate = float(rng.uniform(1.5, 4.0))
    level = np.mean(np.stack([s.shape for s in svcs]), axis=0)
    counts = rng.poisson(rate * (0.4 + 0.6 * level / level.mean()))
    n = int(counts.sum())
    t = np.repeat(np.arange(world.minutes) * 60.0, counts) + rng.uniform(0, 60, n)
    kind = rng.choice(len(SEC_KINDS), n, p=SEC_KIND_W)
    svc_i = rng.choice(len(svcs), n, p=w / w.sum())
    ip_pool = list(dict.fromkeys(random_ip(rng) for _ in range(4000)))
    ip_w = rng.lognormal(0, 1.0, len(ip_pool))
    ip_w /= ip_w.sum()
    ips = rng.choice(len(ip_pool), n, p=ip_w)
    use_ip = np.isin(kind, [0, 1]) | ((kind >= 4) & (rng.random(n) < 0.4))
    rows = []
    for i in np.argsort(t, kind="stable"):
        svc = svcs[svc_i[i]]
        k = SEC_KINDS[kind[i]]
        if use_ip[i]:
            src = ip_pool[ips[i]]
        else:
            src = world.user_ids[int(svc.users[rng.choice(len(svc.users), p=svc.user_w)])]
        sev = LEVELS[int(rng.choice(3, p=SEVERITY[k]))]
        rows.append((float(t[i]), src, k, svc.name, sev))
    # Background never looks coordinated: at most 3 events of one source in 10 minutes.
    recent: Dict[str, List[float]] = {}
    kept = []
    for row in rows:
        h = [x for x in recent.get(row[1], []) if row[0] - x < 600]
        if len(h) < 3:
            h.append(row[0])
            kept.append(row)
        recent[row[1]] = h
    # Coordinated attacks.
    used = set(r[1] for r in kept)
    for inc in incs:
        if inc.type != "coordinated_attack":
            continue
        svc = inc.service
        if rng.random() < 0.6:
            src = random_ip(rng)
            while src in used:
                src = random_ip(rng)
        elif rng.random() < 0.5:
            src = world.user_ids[int(svc.users[rng.choice(len(svc.users), p=svc.user_w)])]
        else:
            src = world.new_user_id(rng)
        used.add(src)
        n_ev = int(inc.magnitude)
        span = inc.end - inc.start
        times = inc.start + np.sort(rng.random(n_ev)) * span
        times[0], times[-1] = inc.start, inc.end - 0.001
        mix = float(rng.choice([0.0, 0.5, 0.8, 1.0]))
        for x in times:
            k = "prompt_injection" if rng.random() < mix else "jailbreak"
            sev = LEVELS[int(rng.choice(3, p=(0.15, 0.5, 0.35)))]
            kept.append((float(x), src, k, svc.name, sev))
        inc.subject = src
        inc.detail = "%d %s events from %s in %.1f min" % (
            n_ev, "prompt_injection/jailbreak", src, span / 60.0)
    kept.sort(key=lambda r: r[0])
    return ([r[0] for r in kept], [r[1] for r in kept], [r[2] for r in kept], [r[3] for r in kept],
            [r[4] for r in kept])


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


class Stamp:
    """Fast RFC 3339 formatting with a per-second cache."""

    def __init__(self, t0: float):
        self.t0_ms = int(round(t0 * 1000))
        self.cache: Dict[int, str] = {}

    def __call__(self, rel_ms: int) -> str:
        sec, frac = divmod(self.t0_ms + rel_ms, 1000)
        head = self.cache.get(sec)
        if head is None:
            head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            self.cache[sec] = head
        return "%s.%03dZ" % (head, frac)


def write_events(world: World, ev: dict, sec, path: str) -> int:
    rng = world.rng_obs
    n_req = len(ev["t"])
    sec_t = np.array(sec[0], float)
    # Events reach the log when written, not when started: up to ~2 s of local disorder.
    emit = np.concatenate((ev["t"] + rng.random(n_req) * np.minimum(ev["lat"] / 1000.0, 2.0),
                           sec_t + rng.random(len(sec_t)) * 0.5))
    order = np.argsort(emit, kind="stable")
    t_ms = np.floor(np.concatenate((ev["t"], sec_t)) * 1000.0).astype(np.int64).tolist()
    stamp = Stamp(world.t0)
    key_svc = [json.dumps(world.services[s].name) for s, _ in world.keys]
    key_model = [json.dumps(m) for _, m in world.keys]
    key_prov = [json.dumps(CATALOG[m].provider) for _, m in world.keys]
    key_stream = [world.services[s].streaming for s, _ in world.keys]
    user_json = [json.dumps(u) for u in world.user_ids]
    tenant_part = ["" if tn is None else ',"tenant_id":' + json.dumps(tn) for tn in world.user_tenant]
    err_part = [',"status":"ok"'] + [',"status":"error","error_type":"%s"' % e for e in ERROR_TYPES]
    keys = ev["key"].tolist()
    users = ev["user"].tolist()
    lat = ev["lat"].tolist()
    ttft = ev["ttft"].tolist()
    inp = ev["inp"].tolist()
    out = ev["out"].tolist()
    cost = ev["cost"].tolist()
    code = ev["code"].tolist()
    prefix = "cw%d-" % world.seed
    lines = []
    with open(path, "w") as f:
        for j, i in enumerate(order.tolist()):
            ts = stamp(t_ms[i])
            eid = "%s%07x" % (prefix, j)
            if i < n_req:
                k = keys[i]
                c = code[i]
                tt = ',"ttft_ms":%.1f' % ttft[i] if key_stream[k] and c == 0 else ""
                lines.append(
                    '{"timestamp":"%s","event_type":"llm.request","event_id":"%s","service":%s,"model":%s,'
                    '"provider":%s,"latency_ms":%.1f%s,"input_tokens":%d,"output_tokens":%d,"cost_usd":%s%s,'
                    '"user_id":%s%s}\n'
                    % (ts, eid, key_svc[k], key_model[k], key_prov[k], lat[i], tt, inp[i], out[i],
                       repr(round(cost[i], 8)), err_part[c], user_json[users[i]], tenant_part[users[i]]))
            else:
                s = i - n_req
                lines.append('{"timestamp":"%s","event_type":"security","event_id":"%s","source":%s,"kind":"%s",'
                             '"service":%s,"severity":"%s"}\n'
                             % (ts, eid, json.dumps(sec[1][s]), sec[2][s], json.dumps(sec[3][s]), sec[4][s]))
            if len(lines) >= 20000:
                f.write("".join(lines))
                lines.clear()
        f.write("".join(lines))
    return len(order)


def write_jsonl(path: str, rows: List[dict]) -> None:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


def generate(seed: int, hours: float, out_base: str, clean: bool = False,
             data_dir: str = DEFAULT_DATA_DIR) -> dict:
    """Write ``out_base``.jsonl, .labels.jsonl and .traps.jsonl; return the world's description."""
    world = World(seed, hours, data_dir)
    for svc in world.services:
        if svc.archetype == "batch":
            plan_batch(world, svc, world.rng_world)
    traps = plan_traps(world)

    # Normal traffic.
    trace = load_trace(data_dir)
    parts = []
    for svc in world.services:
        rng = world.rng_traffic
        if svc.archetype == "code":
            parts.append(gen_trace(world, svc, rng, trace))
        elif svc.archetype == "batch":
            parts.append(gen_batch(world, svc, rng))
        elif svc.archetype == "agent":
            parts.append(gen_agent(world, svc, rng))
        else:
            parts.append(gen_sessions(world, svc, rng))
    ev = concat(parts)
    for tr in traps:
        if tr["kind"] == "marketing_spike":
            more = apply_marketing(world, ev, tr)
            if more is not None:
                ev = concat([ev, more])

    # Incidents.
    incs: List[Incident] = [] if clean else Planner(world, ev, traps).plan()
    ev = apply_traffic(world, ev, incs)
    ev = apply_token_abuse(world, ev, incs)

    kt = KeyTable(world)
    rng = world.rng_obs
    apply_token_incidents(ev, kt, incs)
    compute_latency(world, ev, kt, rng)
    apply_latency_incidents(ev, incs)
    ev = errors_and_retries(world, ev, kt, incs, rng)
    compute_cost(ev, kt, incs, rng)
    measured_effects(ev, kt, incs)
    sec = gen_security(world, incs)

    os.makedirs(os.path.dirname(os.path.abspath(out_base)), exist_ok=True)
    n_events = write_events(world, ev, sec, out_base + ".jsonl")

    def ts(x):
        return rfc3339(world.t0 + x)

    labels = []
    for inc in incs:
        row = {"id": inc.id, "type": inc.type, "service": inc.service.name,
               "model": world.keys[inc.key][1] if inc.key is not None else None,
               "subject": inc.subject, "start": ts(inc.start), "end": ts(inc.end),
               "magnitude": round(inc.magnitude, 3), "detail": inc.detail, "effects": inc.effects}
        if inc.type == "drift":
            row["grace_s"] = 1800
        labels.append(row)
    write_jsonl(out_base + ".labels.jsonl", labels)
    write_jsonl(out_base + ".traps.jsonl", [
        {"id": "cw%d-trap%02d" % (seed, i + 1), "kind": tr["kind"], "service": tr["service"],
         "model": tr["model"], "types": tr["types"], "start": ts(tr["start"]), "end": ts(tr["end"]),
         "detail": tr["detail"]} for i, tr in enumerate(sorted(traps, key=lambda x: x["start"]))])

    minutes = world.horizon / 60.0
    per_svc = np.bincount(kt.svc[ev["key"]], minlength=len(world.services))
    meta = {
        "seed": seed, "hours": hours, "start": rfc3339(world.t0), "end": rfc3339(world.t0 + world.horizon),
        "events": n_events, "requests": int(len(ev["t"])), "security_events": len(sec[0]),
        "users": len(world.user_ids), "tenants": len(world.tenant_names) + 1,
        "services": [{"name": s.name, "archetype": s.archetype, "models": [m for m, _ in s.models],
                      "model_shares": [round(x, 3) for _, x in s.models], "streaming": s.streaming,
                      "mean_rpm": round(float(per_svc[s.idx]) / minutes, 2),
                      **({"rollout": {"model": world.keys[s.rollout[0]][1], "start": ts(s.rollout[1]),
                                      "end": ts(s.rollout[2]), "final_share": round(s.rollout[3], 3)}}
                         if s.rollout else {})} for s in world.services],
        "incidents": len(labels), "traps": len(traps), "clean": clean, "warmup_s": WARMUP_S,
        "generator": "crossworld",
    }
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--out", required=True, help="output base path (writes BASE.jsonl, .labels.jsonl, ...)")
    ap.add_argument("--clean", action="store_true", help="normal traffic only, no incidents")
    ap.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    meta = generate(args.seed, args.hours, args.out, args.clean, args.data_dir)
    with open(args.out + ".meta.json", "w") as f:
        json.dump(meta, f, indent=1)
    print("%d events, %d incidents, %d services in %.1f s -> %s.jsonl"
          % (meta["events"], meta["incidents"], len(meta["services"]), time.perf_counter() - t, args.out),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
