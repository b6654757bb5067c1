"""Replay throughput side by side: this checkout against another commit, alternating, on one telemetry file.

The telemetry is written once (a world of ``benchmarks/world.py``, or the
project's simulator) and replayed with ``sentinel run -c <file flow>`` (file
source, jsonl alert sink, metrics port 0, jsonl dead letters) in this
checkout and in a ``git worktree`` of ``--old``, alternating A B A B ... for
``--rounds`` rounds, each run under ``/usr/bin/time``. Both sides use this
interpreter; the old side runs with its worktree as working directory and
``PYTHONPATH`` (checked before the runs: ``operators.actors`` must come from
the worktree). Printed per run: wall seconds, events/s, user and system CPU
seconds, peak RSS, alerts written.

    python benchmarks/replay_compare.py --family saas-chat --seed 1 --hours 24 --old 821ef73
    python benchmarks/replay_compare.py --simulate --hours 6 --seed 7 --old 821ef73

``--new COMMIT`` runs a clean worktree of that commit instead of this
checkout's working tree. The worktrees are removed at the end (``--keep-worktree`` to keep it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)


def write_events(args) -> str:
    os.makedirs(args.workdir, exist_ok=True)
    if args.simulate:
        path = os.path.join(args.workdir, f"sim-s{args.seed}-h{args.hours:g}.jsonl")
        if not os.path.exists(path):
            subprocess.run([sys.executable, "-m", "sentinel.cli", "simulate", "--out", path, "--hours",
                            str(args.hours), "--seed", str(args.seed), "--labels", path + ".labels"],
                           check=True, cwd=ROOT)
        return path
    import world
    path = os.path.join(args.workdir, f"{args.family}-s{args.seed}-h{args.hours:g}.jsonl")
    if not os.path.exists(path):
        world.World(args.family, args.seed, args.hours).write(path, path + ".labels")
    return path


def write_flow(workdir: str, side: str, events: str) -> Dict[str, str]:
    alerts = os.path.join(workdir, f"alerts-{side}.jsonl")
    dlq = os.path.join(workdir, f"dlq-{side}.jsonl")
    flow = os.path.join(workdir, f"flow-{side}.yaml")
    with open(flow, "w") as f:
        yaml.safe_dump({"name": "replay-compare", "source": {"kind": "file", "path": events},
                        "sinks": [{"kind": "jsonl", "path": alerts}], "metrics": {"port": 0},
                        "dead_letters": {"kind": "jsonl", "path": dlq}}, f, sort_keys=False)
    return {"flow": flow, "alerts": alerts, "dlq": dlq}


def side_env(root: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=root, SENTINEL_LOG_LEVEL="WARNING")
    return env


def check_side(root: str) -> str:
    out = subprocess.run([sys.executable, "-c", "import operators.actors as a; print(a.__file__)"],
                         cwd=root, env=side_env(root), check=True, capture_output=True, text=True).stdout.strip()
    if not os.path.realpath(out).startswith(os.path.realpath(root) + os.sep):
        sys.exit(f"{root}: operators.actors comes from {out}")
    return out


def run_once(root: str, paths: Dict[str, str], n_events: int) -> Dict[str, float]:
    for p in (paths["alerts"], paths["dlq"]):
        if os.path.exists(p):
            os.remove(p)
    tfile = paths["flow"] + ".time"
    t0 = time.monotonic()
    subprocess.run(["/usr/bin/time", "-o", tfile, "-f", "%U %S %M", sys.executable, "-m", "sentinel.cli", "run",
                    "-c", paths["flow"]], cwd=root, env=side_env(root), check=True)
    wall = time.monotonic() - t0
    with open(tfile) as f:
        user, sys_s, rss_kb = f.read().split()[-3:]
    alerts = 0
    if os.path.exists(paths["alerts"]):
        with open(paths["alerts"], "rb") as f:
            alerts = sum(1 for _ in f)
    return {"wall": wall, "eps": n_events / wall, "user": float(user), "sys": float(sys_s),
            "rss_mb": int(rss_kb) / 1024.0, "alerts": alerts}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="saas-chat")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--simulate", action="store_true", help="the project's simulator instead of a world")
    ap.add_argument("--old", default="821ef73", help="commit to compare against")
    ap.add_argument("--new", help="run this commit (a worktree of it) instead of this checkout's working tree")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/replay-compare")
    ap.add_argument("--keep-worktree", action="store_true")
    args = ap.parse_args()

    events = write_events(args)
    with open(events, "rb") as f:
        n_events = sum(1 for _ in f)
    trees = [f"/tmp/wt-{c}" for c in (args.old, args.new) if c]
    for c, wt in zip([c for c in (args.old, args.new) if c], trees):
        if not os.path.isdir(wt):
            subprocess.run(["git", "worktree", "add", "--detach", wt, c], cwd=ROOT, check=True,
                           capture_output=True)
    try:
        new_root = trees[1] if args.new else ROOT
        sides = {"new": new_root, args.old: trees[0]}
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=new_root, capture_output=True,
                              text=True).stdout.strip()
        if not args.new and subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                           capture_output=True, text=True).stdout.strip():
            head += "+uncommitted"
        for name, root in sides.items():
            print(f"{name}: operators.actors from {check_side(root)}", flush=True)
        paths = {name: write_flow(args.workdir, name, events) for name in sides}
        runs: Dict[str, List[Dict[str, float]]] = {name: [] for name in sides}
        print(f"{n_events:,} events from {events}; {head} against {args.old}", flush=True)
        for r in range(args.rounds):
            for name, root in sides.items():
                res = run_once(root, paths[name], n_events)
                runs[name].append(res)
                print(f"round {r + 1} {name:>8}: {res['wall']:6.1f} s wall, {res['eps']:9,.0f} events/s, "
                      f"CPU {res['user']:.2f} user + {res['sys']:.2f} sys, peak RSS {res['rss_mb']:.0f} MB, "
                      f"{res['alerts']} alerts", flush=True)
        print()
        print("| side | events/s (per round) | CPU s, user + sys (per round) | peak RSS MB | alerts |")
        print("|---|---|---|---|---|")
        for name in sides:
            rs = runs[name]
            label = head if name == "new" else args.old
            eps = " / ".join(f"{x['eps']:,.0f}" for x in rs)
            cpu = " / ".join(f"{x['user'] + x['sys']:.1f}" for x in rs)
            rss = " / ".join(f"{x['rss_mb']:.0f}" for x in rs)
            alerts = " / ".join(str(x["alerts"]) for x in rs)
            med = statistics.median(x["eps"] for x in rs)
            print(f"| {label} | {eps} (median {med:,.0f}) | {cpu} | {rss} | {alerts} |")
    finally:
        if not args.keep_worktree:
            for wt in trees:
                subprocess.run(["git", "worktree", "remove", "--force", wt], cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
