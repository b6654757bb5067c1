"""Latency of ``GET /api/v1/incidents`` with 100,000 stored incidents, over real HTTP to ``sentinel api``.

    python benchmarks/api_latency.py [--incidents 100000] [--requests 400] [--backend sqlite|postgresql|both]

Fills an incident store (SQLite file, or PostgreSQL at 127.0.0.1:5432 database
``test`` under a table prefix dropped afterwards) through ``Store.store_alerts``
(the sink's own path, audit included), starts ``sentinel api`` (uvicorn) on it
and times sequential requests from one client: the first page of all
incidents, one service's open incidents, a time range, a deep page, and one
incident's detail. Prints p50/p99 in milliseconds per query.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sentinel.auth import make_token  # noqa: E402
from sentinel.store import Store  # noqa: E402
from devtools.tansu import free_port  # noqa: E402

SERVICES = [f"svc-{i:02d}" for i in range(40)]
TYPES = ["latency", "ttft", "tokens", "cost", "error_rate", "traffic", "drift"]
SEVS = ["info", "low", "medium", "high", "critical"]
T0 = 1767225600.0  # 2026-01-01


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))


def fill(store: Store, n: int) -> float:
    t = time.perf_counter()
    batch = []
    for i in range(n):
        at = T0 + i * 30.0
        a = {"alert_id": f"a{i}", "fingerprint": f"fp{i}", "type": TYPES[i % 7], "severity": SEVS[i % 5],
             "service": SERVICES[i % 40], "model": f"model-{i % 6}", "subject": None, "metric": "latency_p50_ms",
             "observed": 100.0 + i % 50, "expected": 50.0, "score": 0.95, "detector": "robust_zscore",
             "event_time": iso(at), "detected_at": iso(at + 60), "summary": f"incident {i}",
             "evidence": {"window_s": 60}, "root_cause_hints": [], "similar_incidents": [],
             "status": "resolved" if i % 10 else "firing"}
        batch.append(a)
        if len(batch) == 2000:
            store.store_alerts(batch)
            batch = []
    if batch:
        store.store_alerts(batch)
    return time.perf_counter() - t


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run(backend: str, n: int, requests: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sentinel-api-bench-"))
    prefix = "bench%s_" % uuid.uuid4().hex[:8]
    url = str(tmp / "incidents.db") if backend == "sqlite" else "postgresql://postgres@127.0.0.1:5432/test"
    store = Store(url, table_prefix=prefix)
    proc = None
    try:
        took = fill(store, n)
        print(f"[{backend}] stored {n} incidents in {took:.1f}s ({n / took:,.0f} alerts/s, audit included)")
        port = free_port()
        flow = {"source": {"kind": "file", "path": "unused.jsonl"},
                "sinks": [{"kind": "incident_store", "url": url, "table_prefix": prefix}],
                "api": {"port": port, "auth": {"secret_env": "BENCH_API_SECRET"}}}
        (tmp / "flow.yaml").write_text(yaml.safe_dump(flow))
        secret = "bench-secret-" + "b" * 40
        env = dict(os.environ, BENCH_API_SECRET=secret)
        proc = subprocess.Popen([sys.executable, "-m", "sentinel.cli", "api", "-c", str(tmp / "flow.yaml")],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                         headers={"Authorization": "Bearer " + make_token(secret.encode(), "bench", "viewer", 3600)})
        for _ in range(100):
            try:
                if c.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        queries = {
            "first page (50), all": "/api/v1/incidents",
            "service=svc-07&status=open": "/api/v1/incidents?service=svc-07&status=open",
            "time range (1 day)": "/api/v1/incidents?since=2026-01-10T00:00:00Z&until=2026-01-11T00:00:00Z",
            "severity=critical,high&type=latency": "/api/v1/incidents?severity=critical,high&type=latency",
            "offset=90000": "/api/v1/incidents?offset=90000",
            "detail of one": "/api/v1/incidents/" + c.get("/api/v1/incidents?limit=1").json()["items"][0][
                "incident_id"],
        }
        for name, path in queries.items():
            for _ in range(10):
                assert c.get(path).status_code == 200
            lat = []
            for _ in range(requests):
                t = time.perf_counter()
                r = c.get(path)
                lat.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200
            print(f"[{backend}] {name:40s} p50 {statistics.median(lat):7.1f} ms   p99 {pct(lat, 0.99):7.1f} ms")
        c.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        store.drop()
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--incidents", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = ap.parse_args()
    for b in (("sqlite", "postgresql") if args.backend == "both" else (args.backend,)):
        run(b, args.incidents, args.requests)


if __name__ == "__main__":
    main()
