"""A day of one key's closed windows, with incidents, for KeyDetectors tests (and the snapshot fixture
tests/data/key_detectors_flat.pickle, made from it with the detectors of commit 2037dc9)."""

from __future__ import annotations

import math
import random
from typing import List

from detectors.windowed import WindowFeatures, log_stats

T0 = 1767571200.0  # 2026-01-05T00:00:00Z


def _q(xs: List[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


def key_windows(seed: int = 5, n: int = 1440) -> List[WindowFeatures]:
    """``n`` one-minute windows of a chat key (about 40 requests a minute with a daily swing, 15
    users) with an output-token spike (300-329), an error storm (500-519), slow latency (700-759),
    a traffic burst (1100-1109) and a slow rise of the input tokens from window 900 on."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lam = 40.0 * (1.0 + 0.3 * math.sin(2 * math.pi * i / 1440.0)) * (4.0 if 1100 <= i < 1110 else 1.0)
        count = max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
        tok_out = 4.0 if 300 <= i < 330 else 1.0
        tok_in = 1.0 + 0.6 * min(1.0, max(0, i - 900) / 400.0)
        slow = 3.0 if 700 <= i < 760 else 1.0
        err_p = 0.3 if 500 <= i < 520 else 0.02
        ins, outs, costs, lats, ttfts, users = [], [], [], [], [], {}
        errors, types = 0, {}
        for _ in range(count):
            if rng.random() < err_p:
                errors += 1
                t = "timeout" if rng.random() < 0.7 else "rate_limit"
                types[t] = types.get(t, 0) + 1
                continue
            u = "u%d" % rng.randrange(15)
            users[u] = users.get(u, 0) + 1
            a = 800.0 * tok_in * math.exp(rng.gauss(0, 0.4))
            b = 300.0 * tok_out * math.exp(rng.gauss(0, 0.5))
            ins.append(a)
            outs.append(b)
            costs.append(a * 1e-6 + b * 4e-6)
            lats.append(slow * (200.0 + 8.0 * b) * math.exp(rng.gauss(0, 0.2)))
            ttfts.append(slow * 150.0 * math.exp(rng.gauss(0, 0.3)))
        start = T0 + 60.0 * i
        if not lats:
            out.append(WindowFeatures(start, start + 60.0, count, errors, error_types=types or None))
            continue
        in_log, out_log, cost_log = log_stats(ins, 1.0), log_stats(outs, 1.0), log_stats(costs, 1e-6)
        lat_log, ttft_log = log_stats(lats, 1.0), log_stats(ttfts, 1.0)
        gm = lambda st, off: math.exp(st[1] / st[0]) - off  # noqa: E731
        out.append(WindowFeatures(
            start, start + 60.0, count, errors, _q(lats, 0.5), _q(lats, 0.95), _q(ttfts, 0.95),
            gm(in_log, 1.0), gm(out_log, 1.0), gm(cost_log, 1e-6), sum(costs), int(sum(ins) + sum(outs)),
            types or None, in_log, out_log, cost_log, gm(lat_log, 1.0), gm(ttft_log, 1.0), lat_log, ttft_log,
            {u: c for u, c in users.items() if c > 1} or None))
    return out


def flat_state(det) -> dict:
    """``det``'s state in the layout before the per-type detectors (every part's learned state in
    KeyDetectors' own attributes), as such a snapshot held it: for tests of older snapshots."""
    s = det.__getstate__()
    tr, pooled, quant, er, dw = (s.pop(k) for k in ("_traffic", "_pooled", "_quantiles", "_errors", "_drifts"))
    parts = (tr, pooled, quant)
    s["_base"] = {m: p._base[m] for m in s["_metrics"] for p in parts if m in p._base}
    s["_memory"] = None if tr._memory is None else {
        m: v for p in parts for m, v in p._memory.items()}
    s["_season"], s["_hourly"], s["_bursts"] = tr._season, tr._hourly, tr._bursts
    s["_err_pending"], s["_err_sums"], s["_err_learned"] = er._pending, er._sums, er._learned
    s["_err_pool_rate"], s["_err_cusum"], s["_err_types"] = er._pool_rate, er._cusum, er._types
    s["_drift"], s["_drift_held"], s["_drift_wander"], s["_drift_stepped"] = (
        dw._detectors, dw._held, dw._wander, dw._stepped)
    return s
