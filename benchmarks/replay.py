"""Replay benchmark: simulated telemetry -> ``sentinel run`` on a file flow.

Prints events/s of the whole run (process start to exit, as a user times it)
and, against the simulator's labels, recall, precision, false alerts per
simulated day and detection delay.

    python benchmarks/replay.py --hours 6 --seeds 7
    python benchmarks/replay.py --hours 24 --seeds 1,2,3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from scoring import format_report, load_jsonl, score  # noqa: E402


def run_one(hours: float, seed: int, workdir: str, workers: int = 1) -> dict:
    events = os.path.join(workdir, f"events-{seed}.jsonl")
    labels = os.path.join(workdir, f"events-{seed}.labels.jsonl")
    alerts = os.path.join(workdir, f"alerts-{seed}.jsonl")
    dlq = os.path.join(workdir, f"dlq-{seed}.jsonl")
    flow = os.path.join(workdir, f"flow-{seed}.yaml")
    for p in (alerts, dlq):
        if os.path.exists(p):
            os.remove(p)
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "sentinel.cli", "simulate", "--out", events, "--hours", str(hours),
                    "--seed", str(seed), "--labels", labels], check=True)
    sim_s = time.monotonic() - t0
    with open(events, "rb") as f:
        n_events = sum(1 for _ in f)
    with open(flow, "w") as f:
        f.write(f"name: replay\nsource: {{kind: file, path: {events}}}\n"
                f"sinks:\n  - {{kind: jsonl, path: {alerts}}}\n"
                f"metrics: {{port: 0}}\ndead_letters: {{kind: jsonl, path: {dlq}}}\n")
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "sentinel.cli", "run", "-c", flow, "-w", str(workers)], check=True,
                   env={**os.environ, "SENTINEL_LOG_LEVEL": "WARNING"})
    run_s = time.monotonic() - t0
    got = load_jsonl(alerts) if os.path.exists(alerts) else []
    result = score(got, load_jsonl(labels), duration_s=hours * 3600.0)
    result.update(seed=seed, hours=hours, events=n_events, simulate_s=round(sim_s, 2), run_s=round(run_s, 2),
                  events_per_s=round(n_events / run_s))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=6.0)
    ap.add_argument("--seeds", default="7", help="comma-separated seeds")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--workdir", help="keep files here (default: a temporary directory)")
    ap.add_argument("--json", help="write the full results here")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    workdir = args.workdir or tempfile.mkdtemp(prefix="sentinel-replay-")
    os.makedirs(workdir, exist_ok=True)
    results = []
    for seed in seeds:
        r = run_one(args.hours, seed, workdir, args.workers)
        results.append(r)
        print(f"seed {seed}: {r['events']} events in {r['run_s']:.1f}s = {r['events_per_s']:,} events/s "
              f"(simulate {r['simulate_s']:.1f}s)")
        print(format_report(r))
    n_labels = sum(r["n_labels"] for r in results)
    detected = sum(sum(c[0] for c in r["detected_by_type"].values()) for r in results)
    n_alerts = sum(r["n_alerts"] for r in results)
    false = sum(r["false_alerts"] for r in results)
    days = sum(r["hours"] for r in results) / 24.0
    delays = sorted(d["delay_s"] for r in results for d in r["detections"])
    print(f"TOTAL {len(seeds)} seed(s) x {args.hours:g} h: recall {detected}/{n_labels} = "
          f"{detected / max(1, n_labels):.3f}, precision {(n_alerts - false) / max(1, n_alerts):.3f} "
          f"({n_alerts} alerts), false alerts/day {false / days:.2f}, "
          f"median delay {delays[len(delays) // 2] if delays else None} s, "
          f"events/s {sum(r['events'] for r in results) / sum(r['run_s'] for r in results):,.0f}")
    if args.json:
        slim = [{k: v for k, v in r.items() if k not in ("false_alert_list",)} for r in results]
        with open(args.json, "w") as f:
            json.dump(slim, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
