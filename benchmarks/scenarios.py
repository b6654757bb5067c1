"""Scenario benchmark (issue 3): recall, precision, delay and traps per incident type.

For every seed and magnitude scale, simulated telemetry (``hours`` of it, with
the simulator's auto incidents and traps: diurnal swing, a planned ramp, a new
model's cold start, isolated extreme requests) is written once and cached, then
``sentinel run -c`` replays it through a file flow (jsonl alert sink, metrics
off) and the alerts are scored against the labels and traps
(:func:`scoring.score`). The table shows, per magnitude scale over all seeds:

* per incident type: recall (detected/total), precision of the alerts of that
  type, median detection delay in one-minute windows, and (``+grp``) how many
  missed labels an alert of another type did report as a grouped member;
* overall recall and precision, false alerts per simulated day (all keys);
* trap alerts per trap kind (false alerts inside a trap) and how many of the
  traps of that kind fired;
* events/s of the flow (events / wall time of the ``sentinel run`` process).

    python benchmarks/scenarios.py                          # seeds 1,2,3 x 24 h x scales 1.0, 0.6
    python benchmarks/scenarios.py --seeds 1 --scales 1.0
    python benchmarks/scenarios.py --flow-extra no_drift.yaml --json ablation.json

``--flow-extra FILE`` is a YAML mapping merged (recursively) into every
generated flow definition, e.g. a ``detection:`` block, so an ablation can
switch detector layers without editing code. Generated telemetry is cached in
``--workdir`` by (simulator source, seed, hours, rate, scale); alerts of each
flow-extra variant go to their own directory there.
"""

from __future__ import annotations

import argparse
import copy
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Dict, List, Optional, Tuple

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

from scoring import load_jsonl, median, score  # noqa: E402

from simulator import INCIDENT_TYPES, TRAP_KINDS, Simulator  # noqa: E402

WINDOW_S = 60.0
_FORBIDDEN_EXTRA = ("source", "sinks")


# ------------------------------------------------------------------ data


def simulator_fingerprint() -> str:
    """Short hash of the simulator's source (every module of the package): cached telemetry is only
    reused for the same simulator."""
    import simulator as pkg

    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(os.path.dirname(pkg.__file__), "*.py"))):
        h.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:10]


def data_base(workdir: str, fp: str, seed: int, hours: float, rate: float, scale: float) -> str:
    return os.path.join(workdir, "data", f"sim-{fp}-s{seed}-h{hours:g}-r{rate:g}-x{scale:g}")


def generate(job: Tuple[str, int, float, float, float]) -> Dict[str, Any]:
    """Write events, labels and traps for one (seed, hours, rate, scale) unless already cached."""
    base, seed, hours, rate, scale = job
    meta_path = base + ".meta.json"
    if os.path.exists(meta_path) and os.path.exists(base + ".jsonl"):
        with open(meta_path) as f:
            meta = json.load(f)
        meta["cached"] = True
        return meta
    t0 = time.monotonic()
    sim = Simulator(seed=seed, hours=hours, rate=rate, magnitude_scale=scale)
    tmp = base + ".tmp"
    n, _ = sim.write(tmp + ".jsonl", tmp + ".labels.jsonl", tmp + ".traps.jsonl")
    for suffix in (".labels.jsonl", ".traps.jsonl", ".jsonl"):
        os.replace(tmp + suffix, base + suffix)
    meta = {"seed": seed, "hours": hours, "rate": rate, "scale": scale, "events": n,
            "simulate_s": round(time.monotonic() - t0, 2)}
    with open(meta_path, "w") as f:  # written last: marks the set complete
        json.dump(meta, f)
    meta["cached"] = False
    return meta


def prune_stale(workdir: str, fp: str, prefix: str = "sim") -> List[str]:
    """Remove cached telemetry (``<prefix>-<fingerprint>-...``) written by another version of its
    generator (it is large)."""
    data = os.path.join(workdir, "data")
    removed = []
    if not os.path.isdir(data):
        return removed
    for name in sorted(os.listdir(data)):
        m = re.match(rf"^{re.escape(prefix)}-([0-9a-f]{{10}})-", name)
        if m and m.group(1) != fp:
            os.remove(os.path.join(data, name))
            removed.append(name)
    return removed


# ------------------------------------------------------------------ flows


def deep_merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` with ``extra`` merged in: mappings recursively, anything else replaced."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_flow_extra(path: Optional[str]) -> Tuple[Dict[str, Any], str]:
    """The flow-extra mapping and a tag naming it (``default`` when none)."""
    if not path:
        return {}, "default"
    with open(path, "rb") as f:
        raw = f.read()
    extra = yaml.safe_load(raw) or {}
    if not isinstance(extra, dict):
        sys.exit(f"{path}: --flow-extra must hold a YAML mapping, got {type(extra).__name__}")
    bad = [k for k in _FORBIDDEN_EXTRA if k in extra]
    if bad:
        sys.exit(f"{path}: --flow-extra may not set {', '.join(bad)} (the benchmark owns its source and sink)")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(os.path.basename(path))[0])
    return extra, f"{stem}-{hashlib.sha256(raw).hexdigest()[:8]}"


def flow_definition(events: str, alerts: str, dlq: str, extra: Dict[str, Any],
                    name: str = "scenarios") -> Dict[str, Any]:
    flow = {
        "name": name,
        "source": {"kind": "file", "path": events},
        "sinks": [{"kind": "jsonl", "path": alerts}],
        "metrics": {"port": 0},
        "dead_letters": {"kind": "jsonl", "path": dlq},
    }
    return deep_merge(flow, extra)


def check_flow(flow: Dict[str, Any], origin: str) -> None:
    from sentinel.config import ConfigError, load_config_dict

    try:
        load_config_dict(flow, origin)
    except ConfigError as ex:
        sys.exit(str(ex))


def replay(flow: Dict[str, Any], flow_path: str, workers: int) -> Tuple[float, int, str]:
    """Run one flow definition with ``sentinel run -c`` from this checkout's root (so its code runs):
    (wall seconds, exit code, the end of its stderr)."""
    for p in (flow["sinks"][0]["path"], flow["dead_letters"]["path"]):
        if os.path.exists(p):
            os.remove(p)
    with open(flow_path, "w") as f:
        yaml.safe_dump(flow, f, sort_keys=False)
    env = {**os.environ, "SENTINEL_LOG_LEVEL": "WARNING"}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", "-c", flow_path, "-w", str(workers)],
                          env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    return time.monotonic() - t0, proc.returncode, proc.stderr[-2000:]


def run_flow(flow: Dict[str, Any], flow_path: str, workers: int) -> float:
    run_s, rc, err = replay(flow, flow_path, workers)
    if rc != 0:
        sys.exit(f"sentinel run -c {flow_path} failed with exit code {rc}:\n{err}")
    return run_s


# ------------------------------------------------------------- aggregate


def aggregate(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Sums over the runs of one magnitude scale."""
    detected: Dict[str, List[int]] = {t: [0, 0] for t in INCIDENT_TYPES}
    grouped: Dict[str, int] = {}
    alerts: Dict[str, List[int]] = {}
    delays: Dict[str, List[float]] = {}
    trap_alerts = {k: 0 for k in TRAP_KINDS}
    traps = {k: 0 for k in TRAP_KINDS}
    fired = {k: 0 for k in TRAP_KINDS}
    for r in runs:
        for t, (hit, total) in r["detected_by_type"].items():
            c = detected.setdefault(t, [0, 0])
            c[0] += hit
            c[1] += total
        for t, (true, total) in r["alerts_by_type"].items():
            c = alerts.setdefault(t, [0, 0])
            c[0] += true
            c[1] += total
        for t, n in r.get("detected_grouped_only_by_type", {}).items():
            grouped[t] = grouped.get(t, 0) + n
        for d in r["detections"]:
            delays.setdefault(d["type"], []).append(d["delay_s"])
        for k, n in r["trap_alerts_by_kind"].items():
            trap_alerts[k] = trap_alerts.get(k, 0) + n
        for k, n in r["traps_by_kind"].items():
            traps[k] = traps.get(k, 0) + n
        for k, n in r["traps_fired_by_kind"].items():
            fired[k] = fired.get(k, 0) + n
    n_labels = sum(c[1] for c in detected.values())
    n_detected = sum(c[0] for c in detected.values())
    n_alerts = sum(r["n_alerts"] for r in runs)
    n_true = sum(r["true_alerts"] for r in runs)
    false = sum(r["false_alerts"] for r in runs)
    days = sum(r["hours"] for r in runs) / 24.0
    events = sum(r["events"] for r in runs)
    run_s = sum(r["run_s"] for r in runs)
    all_delays = [d for ds in delays.values() for d in ds]
    return {
        "runs": len(runs),
        "days": days,
        "detected_by_type": detected,
        "recall_by_type": {t: (c[0] / c[1] if c[1] else None) for t, c in detected.items()},
        "detected_grouped_only_by_type": grouped,
        "alerts_by_type": alerts,
        "precision_by_type": {t: c[0] / c[1] for t, c in alerts.items() if c[1]},
        "median_delay_windows_by_type": {t: (None if not ds else median(ds) / WINDOW_S) for t, ds in delays.items()},
        "n_labels": n_labels,
        "detected": n_detected,
        "recall": n_detected / n_labels if n_labels else 1.0,
        "n_alerts": n_alerts,
        "true_alerts": n_true,
        "precision": n_true / n_alerts if n_alerts else 1.0,
        "false_alerts": false,
        "false_alerts_per_day": false / days if days else 0.0,
        "median_delay_windows": None if not all_delays else median(all_delays) / WINDOW_S,
        "trap_alerts": sum(r["trap_alerts"] for r in runs),
        "trap_alerts_by_kind": trap_alerts,
        "traps_by_kind": traps,
        "traps_fired_by_kind": fired,
        "events": events,
        "run_s": run_s,
        "events_per_s": events / run_s if run_s else 0.0,
    }


def _fmt(x: Optional[float], width: int, spec: str) -> str:
    return f"{'-':>{width}s}" if x is None else format(x, f"{width}{spec}")


def format_table(aggs: Dict[str, Dict[str, Any]], title: str) -> str:
    scales = list(aggs)
    col = 35
    lines = [title]
    head = f"{'':22s}" + "".join(f"| {'scale ' + s:{col - 2}s}" for s in scales)
    sub = f"{'type':22s}" + "".join(f"| {'recall':11s}{'prec':>6s}{'delay(w)':>10s}{'+grp':>5s} " for _ in scales)
    lines += [head, sub, "-" * len(sub)]
    types = list(INCIDENT_TYPES)
    for a in aggs.values():
        types += [t for t in a["alerts_by_type"] if t not in types]
    for t in types:
        row = f"{t:22s}"
        for a in aggs.values():
            hit, total = a["detected_by_type"].get(t, [0, 0])
            rec = f"{hit}/{total}" + (f" {hit / total:.2f}" if total else "")
            grp = a["detected_grouped_only_by_type"].get(t)
            row += (f"| {rec:11s}{_fmt(a['precision_by_type'].get(t), 6, '.2f')}"
                    f"{_fmt(a['median_delay_windows_by_type'].get(t), 10, '.1f')}"
                    f"{'+' + str(grp) if grp else '':>5s} ")
        lines.append(row)
    lines.append("-" * len(sub))
    row = f"{'ALL':22s}"
    for a in aggs.values():
        rec = f"{a['detected']}/{a['n_labels']} {a['recall']:.2f}"
        grp = sum(a["detected_grouped_only_by_type"].values())
        row += (f"| {rec:11s}{a['precision']:6.2f}{_fmt(a['median_delay_windows'], 10, '.1f')}"
                f"{'+' + str(grp) if grp else '':>5s} ")
    lines.append(row)

    def line(name: str, cell) -> None:
        lines.append(f"{name:22s}" + "".join(f"| {cell(a):{col - 2}s}" for a in aggs.values()))

    line("alerts (true/all)", lambda a: f"{a['true_alerts']}/{a['n_alerts']}")
    line("false alerts / day", lambda a: f"{a['false_alerts_per_day']:.1f} ({a['false_alerts']} in {a['days']:g} d)")
    for k in TRAP_KINDS:
        line(f"trap {k}", lambda a, k=k: (f"{a['trap_alerts_by_kind'].get(k, 0)} alerts, "
                                          f"{a['traps_fired_by_kind'].get(k, 0)}/{a['traps_by_kind'].get(k, 0)} fired"))
    line("events/s", lambda a: f"{a['events_per_s']:,.0f} ({a['events']:,} ev)")
    return "\n".join(lines)


# ------------------------------------------------------------------ main


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default 1,2,3)")
    ap.add_argument("--scales", default="1.0,0.6", help="comma-separated magnitude scales (default 1.0,0.6)")
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours per run (default 24)")
    ap.add_argument("--rate", type=float, default=18.5, help="mean background requests/s (default 18.5)")
    ap.add_argument("--flow-extra", help="YAML mapping merged into every flow definition (e.g. a detection: block)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sentinel-scenarios"),
                    help="cache of generated telemetry and run outputs (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=1, help="worker threads of sentinel run (default 1)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="parallel simulator processes for uncached telemetry (default: up to 2)")
    ap.add_argument("--grace", type=float, default=300.0, help="seconds after a label's end an alert still matches")
    ap.add_argument("--json", help="write aggregates and per-run results here")
    args = ap.parse_args(argv)

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    scales = [float(s) for s in args.scales.split(",") if s.strip()]
    extra, tag = load_flow_extra(args.flow_extra)
    check_flow(flow_definition("x.jsonl", "a.jsonl", "d.jsonl", extra), args.flow_extra or "<flow>")
    workdir = os.path.abspath(args.workdir)
    os.makedirs(os.path.join(workdir, "data"), exist_ok=True)
    out_dir = os.path.join(workdir, "runs", tag)
    os.makedirs(out_dir, exist_ok=True)

    fp = simulator_fingerprint()
    for name in prune_stale(workdir, fp):
        print(f"removed stale cache {name}", file=sys.stderr)
    jobs = [(data_base(workdir, fp, seed, args.hours, args.rate, scale), seed, args.hours, args.rate, scale)
            for scale in scales for seed in seeds]
    t0 = time.monotonic()
    if args.jobs > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            metas = list(pool.map(generate, jobs))
    else:
        metas = [generate(j) for j in jobs]
    fresh = [m for m in metas if not m["cached"]]
    print(f"telemetry: {len(metas) - len(fresh)} cached, {len(fresh)} generated "
          f"({sum(m['simulate_s'] for m in fresh):.0f} s of simulation, {time.monotonic() - t0:.0f} s wall) "
          f"in {os.path.join(workdir, 'data')}", file=sys.stderr)

    runs: List[Dict[str, Any]] = []
    for (base, seed, hours, rate, scale), meta in zip(jobs, metas):
        name = f"s{seed}-h{hours:g}-x{scale:g}"
        alerts_path = os.path.join(out_dir, f"alerts-{name}.jsonl")
        flow = flow_definition(base + ".jsonl", alerts_path, os.path.join(out_dir, f"dlq-{name}.jsonl"), extra)
        run_s = run_flow(flow, os.path.join(out_dir, f"flow-{name}.yaml"), args.workers)
        alerts = load_jsonl(alerts_path) if os.path.exists(alerts_path) else []
        r = score(alerts, load_jsonl(base + ".labels.jsonl"), duration_s=hours * 3600.0, grace_s=args.grace,
                  traps=load_jsonl(base + ".traps.jsonl"))
        r.update(seed=seed, hours=hours, scale=scale, events=meta["events"], run_s=round(run_s, 2),
                 events_per_s=round(meta["events"] / run_s), alerts_path=alerts_path)
        runs.append(r)
        print(f"seed {seed} scale {scale:g}: {meta['events']:,} events in {run_s:.1f} s "
              f"({r['events_per_s']:,}/s); recall {r['recall']:.2f}, precision {r['precision']:.2f}, "
              f"{r['false_alerts']} false alerts, {r['trap_alerts']} in traps", file=sys.stderr)

    aggs = {str(s): aggregate([r for r in runs if r["scale"] == s]) for s in scales}
    title = (f"scenario benchmark: seeds {','.join(map(str, seeds))} x {args.hours:g} h, "
             f"flow-extra: {args.flow_extra or 'none'} ({tag})\n"
             f"recall = labels paged under their own type; prec = true share of the alerts of that type "
             f"(effects count as true); delay(w) = median first-detection delay in {WINDOW_S:g} s windows; "
             f"+grp = missed labels reported only as a grouped member of another alert")
    print(format_table(aggs, title))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seeds": seeds, "scales": scales, "hours": args.hours, "rate": args.rate,
                       "flow_extra": extra, "tag": tag, "simulator": fp, "by_scale": aggs, "runs": runs},
                      f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
