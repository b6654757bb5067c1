"""Shared builders for tests: synthetic telemetry and flow runs on Bytewax's testing connectors."""

from __future__ import annotations

import math
import random
from typing import Dict, Iterable, List, Optional, Tuple

import orjson
from bytewax.testing import TestingSink, TestingSource, run_main

from flows import build_flow
from sentinel.config import load_config_dict
from sentinel.events import RawBatch, RawRecord

T0 = 1767571200.0  # 2026-01-05T00:00:00Z


def poisson(rng: random.Random, lam: float, normal_above: float = math.inf) -> int:
    """A Poisson count of mean ``lam`` (Knuth's product of uniforms; a rounded normal above ``normal_above``)."""
    if lam > normal_above:
        return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
    n, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return n
        n += 1


def request(ts: float, service: str = "svc", model: str = "m1", latency: float = 800.0, **kw) -> Dict:
    ev = {"timestamp": ts, "service": service, "model": model, "latency_ms": latency,
          "ttft_ms": latency / 5, "input_tokens": 500, "output_tokens": 200, "cost_usd": 0.002}
    ev.update(kw)
    return ev


def steady(minutes: int, per_minute: int = 60, seed: int = 1, start: float = T0, service: str = "svc",
           model: str = "m1", latency_fn=None) -> List[Dict]:
    """Normal traffic: log-normal latency around 800 ms, ``per_minute`` requests a minute."""
    rng = random.Random(seed)
    out = []
    for m in range(minutes):
        for i in range(per_minute):
            ts = start + m * 60 + (i + rng.random()) * 60.0 / per_minute
            lat = rng.lognormvariate(6.68, 0.3)
            if latency_fn is not None:
                lat = latency_fn(ts, lat)
            out.append(request(ts, service, model, lat, input_tokens=int(rng.lognormvariate(6.2, 0.3)),
                               output_tokens=int(rng.lognormvariate(5.3, 0.3)),
                               cost_usd=0.000004 * 500 + rng.random() * 1e-4,
                               status="error" if rng.random() < 0.01 else "ok"))
    return out


def batches(events: Iterable, partition: str = "p0", size: int = 500, partitions: int = 1) -> List[RawBatch]:
    lines = [e if isinstance(e, bytes) else orjson.dumps(e) for e in events]
    out = []
    for i in range(0, len(lines), size):
        recs = [RawRecord(line, (partition, 0, i + j)) for j, line in enumerate(lines[i:i + size])]
        out.append(RawBatch(partition, recs, 0.0, partitions))
    return out


def run_flow(items: List, config: Optional[dict] = None, controls=None) -> Tuple[List[dict], List]:
    """The alerts (SPEC JSON objects) and dead letters of a flow of ``config`` over ``items``; ``controls``:
    silences and feedback shared with other runs (the flow's own when None)."""
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0},
                            **(config or {})})
    alerts: List[dict] = []
    dead: List = []
    flow = build_flow(cfg, source=TestingSource(items), alert_sinks=[TestingSink(alerts)],
                      dead_letter_sink=TestingSink(dead), controls=controls)
    run_main(flow)
    # What a sink publishes: each alert's SPEC section 2 object.
    return [a.to_json() for a in alerts], [d for group in dead for d in group]
