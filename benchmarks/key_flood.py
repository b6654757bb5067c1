"""Key flood: a file of events each with a service name and a user never seen before, through ``sentinel run``.

Measures what the key caps (flow key ``limits``) hold: the run's resident
memory, sampled from /proc every half second, should level off once the caps
are full instead of growing with the number of distinct keys, and the replay
should keep its pace.

    python benchmarks/key_flood.py                      # 1,000,000 events, 1,000,000 services and users
    python benchmarks/key_flood.py --events 200000 --workers 2

Prints events/s (process start to exit), the resident memory at each tenth of
the run and its peak, and the folded-event and dead-letter counts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import orjson

T0 = 1767571200.0  # 2026-01-05T00:00:00Z


def write_events(path: str, n: int, hours: float) -> None:
    step = hours * 3600.0 / n
    with open(path, "wb") as f:
        buf = []
        for i in range(n):
            buf.append(orjson.dumps({
                "timestamp": round(T0 + i * step, 3), "service": f"flood-{i}", "model": "m",
                "latency_ms": 800.0 + (i % 97), "input_tokens": 500, "output_tokens": 200 + (i % 31),
                "cost_usd": 0.002, "user_id": f"user-{i}"}))
            if len(buf) == 10000:
                f.write(b"\n".join(buf) + b"\n")
                buf = []
        if buf:
            f.write(b"\n".join(buf) + b"\n")


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (bytewax runs in the same process)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--hours", type=float, default=2.0, help="event time the file spans")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = args.dir or tmp
        events = os.path.join(work, "flood.jsonl")
        alerts = os.path.join(work, "alerts.jsonl")
        dlq = os.path.join(work, "dlq.jsonl")
        flow = os.path.join(work, "flood.yaml")
        t0 = time.monotonic()
        write_events(events, args.events, args.hours)
        print(f"wrote {args.events:,} events ({os.path.getsize(events) / 1e6:.0f} MB) in {time.monotonic() - t0:.1f} s",
              flush=True)
        with open(flow, "w") as f:
            f.write(f"name: flood\nsource: {{kind: file, path: {events}}}\n"
                    f"sinks:\n  - {{kind: jsonl, path: {alerts}}}\n"
                    f"metrics: {{port: 0}}\ndead_letters: {{kind: jsonl, path: {dlq}}}\n")
        env = {**os.environ, "SENTINEL_LOG_LEVEL": "WARNING"}
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "sentinel.cli", "run", "-c", flow, "-w", str(args.workers)],
                                env=env)
        samples = []
        while proc.poll() is None:
            samples.append((time.monotonic() - t0, rss_kib(proc.pid)))
            time.sleep(0.5)
        run_s = time.monotonic() - t0
        if proc.returncode != 0:
            print(f"run failed: exit {proc.returncode}", file=sys.stderr)
            return 1
        dead = sum(1 for _ in open(dlq, "rb")) if os.path.exists(dlq) else 0
        n_alerts = sum(1 for _ in open(alerts, "rb")) if os.path.exists(alerts) else 0
    samples = [s for s in samples if s[1]]
    print(f"{args.events:,} events, {args.events:,} distinct services and users, {args.workers} worker(s): "
          f"{run_s:.1f} s, {args.events / run_s:,.0f} events/s; {dead} dead letters, {n_alerts} alerts")
    if samples:
        marks = []
        for tenth in range(1, 11):
            t = run_s * tenth / 10
            near = min(samples, key=lambda s: abs(s[0] - t))
            marks.append(f"{near[1] / 1024:.0f}")
        print("RSS (MB) at each tenth of the run: " + " ".join(marks))
        print(f"peak RSS {max(s[1] for s in samples) / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
