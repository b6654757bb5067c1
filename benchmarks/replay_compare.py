"""Replay throughput side by side: this checkout against another commit, alternating, on one telemetry file.

The telemetry is written once (a world of ``benchmarks/world.py``, or the
project's simulator) and replayed with ``sentinel run -c <file flow>`` (file
source, jsonl alert sink, metrics port 0, jsonl dead letters) in this
checkout and in a ``git worktree`` of ``--old``, alternating A B A B ... for
``--rounds`` rounds, each run under ``/usr/bin/time``. Both sides use this
interpreter; the old side runs with its worktree as working directory and
``PYTHONPATH`` (checked before the runs: ``operators.actors`` must come from
the worktree). Printed per run: wall seconds, events/s, user and system CPU
seconds, peak RSS, alerts written; at the end, whether every run wrote the
same alerts (compared line by line without the wall-clock fields ``time``
and ``detected_at``).

    python benchmarks/replay_compare.py --family saas-chat --seed 1 --hours 24 --old 821ef73
    python benchmarks/replay_compare.py --simulate --hours 6 --seed 7 --old 821ef73
    python benchmarks/replay_compare.py --family enterprise-mix --seed 3701 --squeeze 60 --copies 3 --old 0ef5bf5

``--squeeze SECONDS`` replays the world's whole span squeezed into that many seconds of event time
(``--copies N`` times in a row, event ids made unique per copy): the same users and keys at the
rate of a far busier deployment, so each one-minute window holds what an hour or a day of the world
holds (24 h in 60 s: about 11,000 events/s of event time for enterprise-mix). That is what a
window's memory and its close cost see live at such rates; the detectors' baselines do not warm
up in a few minutes, so such a replay pages little. ``--restamp RATE`` instead sends the world's
first ``--pool`` events over and over, RATE a second of event time for ``--minutes``, as
``sustained_load.py`` does live: the peak RSS of 10 and of 20 minutes tells state that fills up
from state that keeps growing.

``--new COMMIT`` runs a clean worktree of that commit instead of this
checkout's working tree. The worktrees are removed at the end (``--keep-worktree`` to keep it).
"""

from __future__ import annotations

import argparse
import json
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
    if args.restamp:
        live = path[:-len(".jsonl")] + f"-pool{args.pool}-at{args.restamp:g}-m{args.minutes:g}.jsonl"
        if not os.path.exists(live):
            restamp(path, live, args.pool, args.restamp, args.minutes)
        return live
    if args.squeeze:
        dense = path[:-len(".jsonl")] + f"-in{args.squeeze:g}s-x{args.copies}.jsonl"
        if not os.path.exists(dense):
            squeeze(path, dense, args.hours * 3600.0, args.squeeze, args.copies)
        return dense
    return path


def _write_retimed(dst: str, events) -> None:
    """Write ``(event, new time, pass)`` into ``dst`` (through a temporary file): each event at its new
    time, its ``event_id`` made unique per pass."""
    import orjson

    with open(dst + ".part", "wb") as out:
        for ev, at, k in events:
            ev = dict(ev, timestamp=at.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
            if ev.get("event_id"):
                ev["event_id"] = f"{ev['event_id']}-{k}"
            out.write(orjson.dumps(ev) + b"\n")
    os.replace(dst + ".part", dst)


def restamp(src: str, dst: str, pool: int, rate: float, minutes: float) -> None:
    """Write the first ``pool`` events of ``src`` over and over into ``dst``, ``rate`` a second of
    event time for ``minutes`` from the first one's time (event ids made unique per pass), as
    ``sustained_load.py`` sends them live."""
    import orjson
    from datetime import datetime, timedelta

    lines = []
    with open(src, "rb") as f:
        for line in f:
            lines.append(orjson.loads(line))
            if len(lines) >= pool:
                break
    t0 = datetime.fromisoformat(lines[0]["timestamp"])
    n = len(lines)
    _write_retimed(dst, ((lines[i % n], t0 + timedelta(seconds=i / rate), i // n)
                         for i in range(int(rate * minutes * 60))))


def squeeze(src: str, dst: str, span: float, seconds: float, copies: int) -> None:
    """Write ``src`` (events in time order over ``span`` seconds) ``copies`` times into ``dst``, each
    copy's event times squeezed into ``seconds`` and following the one before."""
    import orjson
    from datetime import datetime, timedelta

    def squeezed():
        t0 = None
        for c in range(copies):
            with open(src, "rb") as f:
                for line in f:
                    ev = orjson.loads(line)
                    ts = datetime.fromisoformat(ev["timestamp"])
                    if t0 is None:
                        t0 = ts
                    yield ev, t0 + timedelta(seconds=c * seconds + (ts - t0).total_seconds() * seconds / span), c

    _write_retimed(dst, squeezed())


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


# Fields that carry the wall-clock time of detection: they differ between any two runs.
WALL_CLOCK_FIELDS = ("time", "detected_at")


def read_alerts(path: str) -> List[str]:
    """The alerts written to ``path``, one canonical JSON line each, without the wall-clock fields."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path, "rb") as f:
        for line in f:
            a = json.loads(line)
            for k in WALL_CLOCK_FIELDS:
                a.pop(k, None)
                if isinstance(a.get("data"), dict):
                    a["data"].pop(k, None)
            out.append(json.dumps(a, sort_keys=True))
    return out


def compare_alerts(alerts: Dict[str, List[str]]) -> str:
    """One line: whether every run wrote the same alerts, else where the first one differs."""
    (ref_name, ref), *rest = alerts.items()
    for name, got in rest:
        if got != ref:
            at = next((i for i, (x, y) in enumerate(zip(ref, got)) if x != y), min(len(ref), len(got)))
            return (f"alerts differ: {name} wrote {len(got)}, {ref_name} {len(ref)}; first difference at "
                    f"alert {at + 1}")
    return f"alerts identical: {len(ref)} alerts in each of {len(alerts)} runs (without {', '.join(WALL_CLOCK_FIELDS)})"


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
    written = read_alerts(paths["alerts"])
    return {"wall": wall, "eps": n_events / wall, "user": float(user), "sys": float(sys_s),
            "rss_mb": int(rss_kb) / 1024.0, "alerts": len(written), "written": written}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="saas-chat")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--simulate", action="store_true", help="the project's simulator instead of a world")
    ap.add_argument("--squeeze", type=float, default=0.0,
                    help="replay the world's span squeezed into this many seconds of event time (0: as it is)")
    ap.add_argument("--copies", type=int, default=1, help="with --squeeze: this many squeezed copies in a row")
    ap.add_argument("--restamp", type=float, default=0.0,
                    help="replay the world's first --pool events over and over at this many events a second of "
                         "event time, for --minutes (0: as it is)")
    ap.add_argument("--pool", type=int, default=300_000, help="with --restamp: distinct events (default 300000)")
    ap.add_argument("--minutes", type=float, default=10.0, help="with --restamp: minutes of event time (default 10)")
    ap.add_argument("--old", default="821ef73", help="commit to compare against")
    ap.add_argument("--new", help="run this commit (a worktree of it) instead of this checkout's working tree")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/replay-compare")
    ap.add_argument("--keep-worktree", action="store_true")
    args = ap.parse_args()
    if (args.squeeze or args.restamp) and args.simulate:
        ap.error("--squeeze and --restamp rewrite a world (--family): not the simulator's output")
    if args.squeeze and args.restamp:
        ap.error("--squeeze or --restamp, not both")
    if args.restamp and (args.pool < 1 or args.minutes <= 0):
        ap.error("--pool must be at least 1 and --minutes more than 0")
    if args.copies < 1 or args.squeeze < 0:
        ap.error("--copies must be at least 1 and --squeeze at least 0")

    events = write_events(args)
    with open(events, "rb") as f:
        n_events = sum(1 for _ in f)
    # Named by this process too: two comparisons against one commit at once each have their own.
    trees = [f"/tmp/wt-{c}-{os.getpid()}" for c in (args.old, args.new) if c]
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
        print()
        print(compare_alerts({f"{name} round {r + 1}": x["written"] for name in sides
                              for r, x in enumerate(runs[name])}))
    finally:
        if not args.keep_worktree:
            for wt in trees:
                subprocess.run(["git", "worktree", "remove", "--force", wt], cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
