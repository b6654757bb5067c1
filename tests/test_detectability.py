"""The oracle of benchmarks/detectability.py on made-up keys whose answer is known."""

from __future__ import annotations

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import detectability as d  # noqa: E402

T0 = 1767571200.0


def iso(t: float) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def key_events(seed, minutes, per_minute, latency=lambda t: 1000.0, error=lambda t: 0.01):
    rng = random.Random(seed)
    out = []
    for i in range(minutes * per_minute):
        t = T0 + i * 60.0 / per_minute
        ok = rng.random() >= error(t)
        out.append((t, {"status": "ok" if ok else "error", "latency_ms": latency(t) * rng.lognormvariate(0, 0.3)}))
    return out


def label(typ, a, b, **kw):
    return dict({"type": typ, "start": iso(T0 + 60 * a), "end": iso(T0 + 60 * b), "metric": None}, **kw)


def test_a_latency_tripling_is_detectable_and_noise_is_not():
    ev = key_events(1, 120, 20, latency=lambda t: 3000.0 if t >= T0 + 60 * 90 else 1000.0)
    z, _ = d.oracle_z(label("latency", 90, 105), ev, [])
    assert z >= d.Z_BUDGET
    z, _ = d.oracle_z(label("latency", 70, 85), ev, [])  # nothing happened there
    assert abs(z) < d.Z_BUDGET


def test_three_errors_on_a_sparse_key_are_not_detectable():
    ev = key_events(2, 120, 1, error=lambda t: 0.2 if t >= T0 + 60 * 90 else 0.01)
    z, what = d.oracle_z(label("error_rate", 90, 105), ev, [])
    assert z < d.Z_BUDGET, what


def test_poisson_and_binomial_z_grow_with_the_excess():
    assert d.poisson_z(5, 5.0) == 0.0 and d.poisson_z(20, 5.0) > d.poisson_z(10, 5.0) > 0
    assert d.binomial_z(1, 100, 0.01) == 0.0 and d.binomial_z(20, 100, 0.01) > d.binomial_z(5, 100, 0.01) > 0


def test_an_abuser_is_judged_against_the_services_most_unusual_ordinary_user():
    rng = random.Random(3)
    day = (T0, T0 + 86400.0)
    users = {f"u{i}": sorted(rng.uniform(*day) for _ in range(48)) for i in range(50)}
    users["u0"] += [T0 + 3600.0 + k * 20.0 for k in range(45)]  # 45 requests in 15 minutes
    z, worst, _ = d.abuse_z(label("token_abuse", 60, 75, subject="user:u0"), users, day, {"u0"})
    assert z > worst
    users["u1"] += [T0 + 7200.0 + k * 15.0 for k in range(60)]  # an ordinary user did more, once
    z, worst, _ = d.abuse_z(label("token_abuse", 60, 75, subject="user:u0"), users, day, {"u0"})
    assert z <= worst
