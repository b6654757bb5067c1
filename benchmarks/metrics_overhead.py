"""Metrics overhead: the same file replay with Prometheus metrics on, on and scraped, and off, in one process.

Rounds alternate the modes (on, scraped, off, on, scraped, off, ...) so that
the machine's load falls on all of them alike; each round replays the same
simulated telemetry file through ``build_flow`` (one worker, alerts to a
JSON-lines file). "off" turns every metric update into a no-op
(prometheus_client's inc/dec/set/observe and the flow's own metric helpers);
"scraped" serves the metrics port and reads /metrics once a second.

The machine is shared, so besides events per wall-clock second it reports
events per CPU second of the process (``time.process_time``, every thread):
the cost of the metrics themselves, less disturbed by other processes.
Last, one more replay counts the metric updates it makes, and each kind of
update is timed alone: calls per event times the cost of a call bounds the
metrics' share of the work without the noise of whole runs.

    python benchmarks/metrics_overhead.py --hours 6 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bytewax.testing import run_main  # noqa: E402
from prometheus_client.metrics import Counter, Gauge, Histogram  # noqa: E402

from flows import build_flow  # noqa: E402
from sentinel import health, metrics  # noqa: E402
from sentinel.config import load_config_dict  # noqa: E402
from devtools.tansu import free_port  # noqa: E402


@contextmanager
def metrics_off():
    """Every metric update a no-op for the duration."""
    saved = [(Counter, "inc"), (Gauge, "inc"), (Gauge, "dec"), (Gauge, "set"), (Histogram, "observe"),
             (metrics.Metrics, "event_batch"), (metrics.Metrics, "windows_closed_at"), (metrics.Metrics, "anomaly")]
    originals = [(cls, name, getattr(cls, name)) for cls, name in saved]
    for cls, name in saved:
        setattr(cls, name, lambda *a, **k: None)
    try:
        yield
    finally:
        for cls, name, fn in originals:
            setattr(cls, name, fn)


@contextmanager
def counted(calls: dict):
    """Count every metric update (by class and method) for the duration."""
    names = [(Counter, "inc"), (Gauge, "inc"), (Gauge, "dec"), (Gauge, "set"), (Histogram, "observe")]
    originals = [(cls, name, getattr(cls, name)) for cls, name in names]
    for cls, name, fn in originals:
        key = f"{cls.__name__}.{name}"

        def wrapper(*a, _fn=fn, _key=key, **k):
            calls[_key] = calls.get(_key, 0) + 1
            return _fn(*a, **k)

        setattr(cls, name, wrapper)
    try:
        yield
    finally:
        for cls, name, fn in originals:
            setattr(cls, name, fn)


def per_call_seconds() -> dict:
    """Seconds per update of each kind, on a fresh registry."""
    import timeit

    from prometheus_client import CollectorRegistry

    r = CollectorRegistry()
    c = Counter("bench_c", "c", ["k"], registry=r).labels(k="a")
    g = Gauge("bench_g", "g", registry=r)
    h = Histogram("bench_h", "h", buckets=(0.1, 1.0, 10.0, 100.0, 1000.0, 3600.0, 86400.0), registry=r)
    n = 200_000
    return {"Counter.inc": timeit.timeit(c.inc, number=n) / n, "Gauge.inc": timeit.timeit(g.inc, number=n) / n,
            "Gauge.dec": timeit.timeit(g.dec, number=n) / n,
            "Gauge.set": timeit.timeit(lambda: g.set(1.0), number=n) / n,
            "Histogram.observe": timeit.timeit(lambda: h.observe(5.0), number=n) / n}


@contextmanager
def scraped(port: int):
    stop = threading.Event()

    def scrape():
        while not stop.wait(1.0):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()

    t = threading.Thread(target=scrape, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def replay(events: str, workdir: str):
    alerts = os.path.join(workdir, "alerts.jsonl")
    if os.path.exists(alerts):
        os.remove(alerts)
    cfg = load_config_dict({"name": "overhead", "source": {"kind": "file", "path": events},
                            "sinks": [{"kind": "jsonl", "path": alerts}], "metrics": {"port": 0}})
    flow = build_flow(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    run_main(flow)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        events = os.path.join(d, "events.jsonl")
        subprocess.run([sys.executable, "-m", "sentinel.cli", "simulate", "--out", events, "--hours", str(args.hours),
                        "--seed", str(args.seed)], check=True)
        with open(events, "rb") as f:
            n = sum(1 for _ in f)
        port = free_port()
        health.serve(port)
        replay(events, d)  # warm-up round: imports, caches
        wall = {"on": [], "scraped": [], "off": []}
        cpu = {"on": [], "scraped": [], "off": []}

        def one(mode: str) -> None:
            w, c = replay(events, d)
            wall[mode].append(n / w)
            cpu[mode].append(n / c)

        for r in range(args.rounds):
            one("on")
            with scraped(port):
                one("scraped")
            with metrics_off():
                one("off")
            print(f"round {r + 1}: " + ", ".join(f"{k} {wall[k][-1]:,.0f} events/s ({cpu[k][-1]:,.0f} per CPU s)"
                                                 for k in wall), flush=True)
        calls: dict = {}
        with counted(calls):
            _, c = replay(events, d)
    cost = per_call_seconds()
    spent = sum(calls[k] * cost[k] for k in calls)
    print("metric updates in one replay: " + ", ".join(f"{k} {v:,}" for k, v in sorted(calls.items()))
          + f" ({sum(calls.values()) / n:.3f} per event); per call: "
          + ", ".join(f"{k} {v * 1e6:.2f} us" for k, v in cost.items())
          + f"; {spent * 1e3:.1f} ms of {c:.1f} CPU s: {spent / c * 100:.2f}% of the replay")
    for name, rates in (("wall clock", wall), ("CPU", cpu)):
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(f"{n:,} events, {args.rounds} rounds, median events per {name} second: on {med['on']:,.0f}, on and "
              f"scraped {med['scraped']:,.0f}, off {med['off']:,.0f}; cost of the metrics (on vs off) "
              f"{(med['off'] - med['on']) / med['off'] * 100:+.1f}%, scraped vs off "
              f"{(med['off'] - med['scraped']) / med['off'] * 100:+.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
