"""Family benchmark: scenario families (benchmarks/world.py), a tune/test split, scored as the receiver counts.

Each family is a mix of service archetypes (chat, RAG, document pipelines,
agents, scheduled batch, sparse keys, canary models, the real Azure code
trace) with thousands of heavy-tailed users and labelled incidents. Two
families are for tuning (seeds 1,2,3), three for testing (seeds 101,102,103);
the table shows the two splits side by side, so a change tuned on one can be
read on the other. A third split, ``cross``, replays the worlds of
``benchmarks/crossworld.py``: a second generator written on its own
assumptions (session arrivals, tenants, batches of two to eight minutes,
provider weather, marketing pushes), with incidents (family ``cross``) and the
same world without them (``cross-clean``, where every notification is false).
Nothing is chosen on it: it shows how far the other splits' figures carry.

For every (family, seed) the telemetry is written once and cached in
``--workdir`` (keyed by the generator's source hash, family, seed and hours),
replayed through ``sentinel run -c`` (file source, jsonl alert sink, metrics
off, jsonl dead letters) and scored with ``scoring.score(count="all")``:
every message that is not ``resolved`` (firing, escalated, updated) is a
notification. Reported per split:

* recall per incident type (detected/total);
* precision over all notifications, and over first pages only (``firing``
  messages that are not repeats);
* false notifications per simulated day (all keys), and by alert type;
* median detection delay in one-minute windows;
* notifications per detected incident (true notifications / detected labels);
* events/s of the replay (events / wall time of the ``sentinel run`` process;
  with ``--jobs 2`` two replays share the machine).

Then the false notifications by type and kind of trap, recall by how long the
watch had run when each incident started (first 3 h, 3-12 h, after 12 h: the
flow starts cold, and a 6-hour run is judged mostly on young baselines), and
the missed labels.

    python benchmarks/families.py --split tune                      # 2 families x seeds 1,2,3 x 24 h
    python benchmarks/families.py --split both --json fam.json
    python benchmarks/families.py --split tune --families saas-chat --seeds 1 --hours 6
    python benchmarks/families.py --split tune --flow-extra ablation.yaml
    python benchmarks/families.py --split cross --seeds 1,2,3         # crossworld, with and without incidents

``--flow-extra FILE`` is a YAML mapping merged into every generated flow
definition (as in ``benchmarks/scenarios.py``). The replay runs the code of
the checkout this script is in (``python -m sentinel.cli`` from its root):
to measure another commit, run the script from a worktree of it. The real trace is read from
``--data-dir`` (default ``../shared/data`` beside the repository).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Dict, List, Optional, Tuple


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

import world  # noqa: E402
from scenarios import check_flow, flow_definition, load_flow_extra, prune_stale, replay  # noqa: E402
from scoring import alert_body, load_jsonl, matches, median, score, to_epoch  # noqa: E402

WINDOW_S = 60.0
SPLITS = ("tune", "test", "cross")
# The "cross" split: worlds of benchmarks/crossworld.py, a second generator with its own
# assumptions; "cross-clean" is the same world with no incident (every notification is false).
CROSS_FAMILIES = ("cross", "cross-clean")
CROSS_SEEDS = (1, 2, 3)


# ------------------------------------------------------------------ data


def world_fingerprint(path: str = world.__file__) -> str:
    """Short hash of a generator's source: cached telemetry is reused only for the same generator."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:10]


CROSS_GENERATOR = os.path.join(HERE, "crossworld.py")


def family_fingerprint(family: str) -> str:
    """:func:`world_fingerprint` of the generator that writes ``family``'s worlds."""
    return world_fingerprint(CROSS_GENERATOR if family in CROSS_FAMILIES else world.__file__)


def data_base(workdir: str, fp: str, family: str, seed: int, hours: float) -> str:
    prefix = "xw" if family in CROSS_FAMILIES else "fam"
    return os.path.join(workdir, "data", f"{prefix}-{fp}-{family}-s{seed}-h{hours:g}")


def generate(job: Tuple[str, str, int, float, str]) -> Dict[str, Any]:
    """Write events, labels and traps of one (family, seed, hours) unless already cached."""
    base, family, seed, hours, data_dir = job
    meta_path = base + ".meta.json"
    if os.path.exists(meta_path) and os.path.exists(base + ".jsonl"):
        with open(meta_path) as f:
            meta = json.load(f)
        meta["cached"] = True
        return meta
    t0 = time.monotonic()
    tmp = base + ".tmp"
    if family in CROSS_FAMILIES:
        import crossworld

        described = crossworld.generate(seed, hours, tmp, clean=family == "cross-clean", data_dir=data_dir)
        n = described["events"]
    else:
        w = world.World(family, seed=seed, hours=hours, data_dir=data_dir)
        n = w.write(tmp + ".jsonl", tmp + ".labels.jsonl", tmp + ".traps.jsonl")
        described = w.describe()
    for suffix in (".labels.jsonl", ".traps.jsonl", ".jsonl"):
        os.replace(tmp + suffix, base + suffix)
    meta = {**described, "family": family, "events": n, "generate_s": round(time.monotonic() - t0, 2)}
    with open(meta_path, "w") as f:  # written last: marks the set complete
        json.dump(meta, f)
    meta["cached"] = False
    return meta


# ------------------------------------------------------------------ replay


# ------------------------------------------------------------- aggregate


def named_only_in_resolves(alerts: List[Dict[str, Any]], missed: List[Dict[str, Any]], grace_s: float) -> List[str]:
    """Ids of missed labels that a resolve message names as a grouped member.

    The flow saw these incidents, folded them into another one, and never
    announced them before the resolve: the receiver was not told in time.
    """
    members = []
    for a in map(alert_body, alerts):
        if a.get("status") == "resolved":
            members += [m for m in (a.get("evidence") or {}).get("grouped") or ()
                        if isinstance(m, dict) and m.get("event_time") is not None]
    return [lab.get("id") for lab in missed if any(matches(m, lab, grace_s) for m in members)]


# How long the watch had run when an incident started: recall in each span (a watch that starts
# cold learns schedules, wander and habits in its first hours).
AGE_BUCKETS = ((0.0, 3.0, "first 3 h"), (3.0, 12.0, "3-12 h"), (12.0, float("inf"), "after 12 h"))


def detected_by_age(labels: List[Dict[str, Any]], missed: List[Dict[str, Any]],
                    start: float) -> Dict[str, List[int]]:
    """``{bucket: [detected, labels]}`` over AGE_BUCKETS, by the hours from the world's ``start``
    (epoch seconds) to each label's start.

    >>> labs = [{"id": "a", "start": "2026-03-02T01:00:00Z"}, {"id": "b", "start": "2026-03-02T05:00:00Z"}]
    >>> detected_by_age(labs, [labs[1]], to_epoch("2026-03-02T00:00:00Z"))
    {'first 3 h': [1, 1], '3-12 h': [0, 1], 'after 12 h': [0, 0]}
    """
    out = {name: [0, 0] for _, _, name in AGE_BUCKETS}
    gone = {lab.get("id") for lab in missed}
    for lab in labels:
        age = (to_epoch(lab["start"]) - start) / 3600.0
        for lo, hi, name in AGE_BUCKETS:
            if lo <= age < hi:
                out[name][1] += 1
                out[name][0] += lab.get("id") not in gone
                break
    return out


def aggregate(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Sums over the runs of one split."""
    detected: Dict[str, List[int]] = {t: [0, 0] for t in world.INCIDENT_TYPES}
    by_age: Dict[str, List[int]] = {name: [0, 0] for _, _, name in AGE_BUCKETS}
    false_by_type: Dict[str, int] = {}
    trap_by_kind: Dict[str, int] = {}
    delays: List[float] = []
    for r in runs:
        for t, (hit, total) in r["detected_by_type"].items():
            c = detected.setdefault(t, [0, 0])
            c[0] += hit
            c[1] += total
        for name, (hit, total) in (r.get("detected_by_age") or {}).items():
            by_age[name][0] += hit
            by_age[name][1] += total
        for t, n in r["false_alerts_by_type"].items():
            false_by_type[t] = false_by_type.get(t, 0) + n
        for k, n in r["trap_alerts_by_kind"].items():
            trap_by_kind[k] = trap_by_kind.get(k, 0) + n
        delays += [d["delay_s"] for d in r["detections"]]
    n_labels = sum(c[1] for c in detected.values())
    n_detected = sum(c[0] for c in detected.values())
    n_alerts = sum(r["n_alerts"] for r in runs)
    n_true = sum(r["true_alerts"] for r in runs)
    first = sum(r["first_pages"] for r in runs)
    first_true = sum(r["true_first_pages"] for r in runs)
    false = sum(r["false_alerts"] for r in runs)
    days = sum(r["hours"] for r in runs) / 24.0
    events = sum(r["events"] for r in runs)
    run_s = sum(r["run_s"] for r in runs)
    return {
        "runs": len(runs),
        "days": days,
        "detected_by_type": detected,
        "detected_by_age": by_age,
        "n_labels": n_labels,
        "detected": n_detected,
        "recall": n_detected / n_labels if n_labels else 1.0,
        "notifications": n_alerts,
        "true_notifications": n_true,
        "precision": n_true / n_alerts if n_alerts else 1.0,
        "first_pages": first,
        "true_first_pages": first_true,
        "precision_first_pages": first_true / first if first else 1.0,
        "false_notifications": false,
        "false_per_day": false / days if days else 0.0,
        "false_by_type": dict(sorted(false_by_type.items())),
        "collateral": sum(r["collateral_false_alerts"] for r in runs),
        "trap_notifications_by_kind": dict(sorted(trap_by_kind.items())),
        "median_delay_windows": None if not delays else median(delays) / WINDOW_S,
        "notifications_per_detected": n_true / n_detected if n_detected else None,
        "missed_named_in_resolve": sum(len(r.get("missed_named_in_resolve", ())) for r in runs),
        "events": events,
        "run_s": run_s,
        "events_per_s": events / run_s if run_s else 0.0,
    }


def _cell(a: Optional[Dict[str, Any]], fn) -> str:
    return "-" if a is None else fn(a)


def format_table(aggs: Dict[str, Optional[Dict[str, Any]]], title: str) -> str:
    """Tune and test side by side."""
    col = 26
    lines = [title, f"{'':26s}" + "".join(f"| {s:{col - 2}s}" for s in aggs), "-" * (26 + col * len(aggs))]

    def row(name: str, fn) -> None:
        lines.append(f"{name:26s}" + "".join(f"| {_cell(a, fn):{col - 2}s}" for a in aggs.values()))

    for t in world.INCIDENT_TYPES:
        def rec(a, t=t):
            hit, total = a["detected_by_type"].get(t, [0, 0])
            return f"{hit}/{total}" + (f" {hit / total:.2f}" if total else "")
        row(f"recall {t}", rec)
    row("recall ALL", lambda a: f"{a['detected']}/{a['n_labels']} {a['recall']:.2f}")
    row("precision (all notif.)", lambda a: f"{a['precision']:.2f} ({a['true_notifications']}/{a['notifications']})")
    row("precision (first pages)",
        lambda a: f"{a['precision_first_pages']:.2f} ({a['true_first_pages']}/{a['first_pages']})")
    row("false notif. / day", lambda a: f"{a['false_per_day']:.1f} ({a['false_notifications']} in {a['days']:g} d)")
    row("median delay (windows)",
        lambda a: "-" if a["median_delay_windows"] is None else f"{a['median_delay_windows']:.1f}")
    row("notif. per detected inc.",
        lambda a: "-" if a["notifications_per_detected"] is None else f"{a['notifications_per_detected']:.2f}")
    row("events/s (replay)", lambda a: f"{a['events_per_s']:,.0f} ({a['events']:,} ev)")
    return "\n".join(lines)


def format_diagnosis(split: str, runs: List[Dict[str, Any]], agg: Dict[str, Any], limit: int) -> str:
    """False notifications by type and trap kind, per-family lines, and the missed labels."""
    lines = [f"[{split}] false notifications by alert type: "
             + (", ".join(f"{t} {n}" for t, n in agg["false_by_type"].items()) or "none")]
    lines.append(f"[{split}] of them on the key of a labelled incident, in its window (collateral): "
                 f"{agg['collateral']}")
    trapped = {k: n for k, n in agg["trap_notifications_by_kind"].items() if n}
    lines.append(f"[{split}] of them inside normal-behaviour traps: "
                 + (", ".join(f"{k} {n}" for k, n in trapped.items()) or "none"))
    lines.append(f"[{split}] recall by how long the watch had run when the incident started: "
                 + ", ".join(f"{name} {hit}/{total}" for name, (hit, total) in agg["detected_by_age"].items()
                             if total))
    for r in runs:
        lines.append(f"[{split}] {r['family']} s{r['seed']}: recall {r['recall']:.2f} "
                     f"({sum(c[0] for c in r['detected_by_type'].values())}/{r['n_labels']}), "
                     f"precision {r['precision']:.2f}, false {r['false_alerts']} "
                     f"({', '.join(f'{t} {n}' for t, n in r['false_alerts_by_type'].items()) or '-'}), "
                     f"{r['events']:,} events in {r['run_s']:.0f} s")
    missed = [(r["family"], r["seed"], lab) for r in runs for lab in r["missed_labels"]]
    in_resolve = {i for r in runs for i in r["missed_named_in_resolve"]}
    lines.append(f"[{split}] missed labels: {len(missed)} ({len(in_resolve)} of them folded into another "
                 f"incident and named only in its resolve: marked *)")
    for fam, seed, lab in missed[:limit]:
        mark = "*" if lab["id"] in in_resolve else " "
        lines.append(f"{mark} {lab['id']} {lab['type']} {lab['service']}/{lab['model']} {lab.get('subject') or ''} "
                     f"{lab['start'][11:19]}..{lab['end'][11:19]}: {lab.get('detail')}")
    if len(missed) > limit:
        lines.append(f"  ... {len(missed) - limit} more (see --json)")
    return "\n".join(lines)


# ------------------------------------------------------------------ main


def _ints(text: Optional[str]) -> Optional[List[int]]:
    return None if text is None else [int(s) for s in text.split(",") if s.strip()]


def plan(split: str, families: Optional[List[str]], seeds: Optional[List[int]]) -> List[Tuple[str, str, int]]:
    """(split, family, seed) of every run asked for."""
    out = []
    for sp in ("tune", "test") if split == "both" else (split,):
        for fam in CROSS_FAMILIES if sp == "cross" else world.list_families(sp):
            if families and fam not in families:
                continue
            for seed in seeds or (CROSS_SEEDS if sp == "cross" else world.seeds_of(sp)):
                out.append((sp, fam, seed))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=("tune", "test", "both", "cross"), default="tune",
                    help="which families (default tune; cross: the worlds of crossworld.py, "
                         "with and without incidents)")
    ap.add_argument("--families", help="comma-separated family names (default: every family of the split)")
    ap.add_argument("--seeds", help="comma-separated seeds (default: 1,2,3 for tune, 101,102,103 for test, "
                    "1,2,3 for cross)")
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours per run (default 24)")
    ap.add_argument("--flow-extra", help="YAML mapping merged into every flow definition")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sentinel-families"),
                    help="cache of generated telemetry and run outputs (default: %(default)s)")
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data"),
                    help="where the real trace is (default: ../shared/data beside the repository)")
    ap.add_argument("--workers", type=int, default=1, help="worker threads of sentinel run (default 1)")
    ap.add_argument("--jobs", type=int, default=2, help="generations and replays run in parallel (default 2)")
    ap.add_argument("--grace", type=float, default=300.0, help="seconds after a label's end an alert still matches")
    ap.add_argument("--show-missed", type=int, default=40, help="missed labels printed per split (default 40)")
    ap.add_argument("--json", help="write aggregates and per-run results here")
    args = ap.parse_args(argv)

    families = args.families.split(",") if args.families else None
    for fam in families or ():
        if fam not in world.FAMILIES and fam not in CROSS_FAMILIES:
            sys.exit(f"unknown family {fam!r} (known: {', '.join((*world.FAMILIES, *CROSS_FAMILIES))})")
    runs_plan = plan(args.split, families, _ints(args.seeds))
    if not runs_plan:
        sys.exit("nothing to run: no family of that split matches --families")
    extra, tag = load_flow_extra(args.flow_extra)
    check_flow(flow_definition("x.jsonl", "a.jsonl", "d.jsonl", extra), args.flow_extra or "<flow>")
    workdir = os.path.abspath(args.workdir)
    os.makedirs(os.path.join(workdir, "data"), exist_ok=True)
    out_dir = os.path.join(workdir, "runs", tag)
    os.makedirs(out_dir, exist_ok=True)
    data_dir = os.path.abspath(args.data_dir)

    fp = world_fingerprint()
    fp_cross = world_fingerprint(CROSS_GENERATOR)
    for name in prune_stale(workdir, fp, "fam") + prune_stale(workdir, fp_cross, "xw"):
        print(f"removed stale cache {name}", file=sys.stderr)
    gen_jobs = [(data_base(workdir, family_fingerprint(fam), fam, seed, args.hours), fam, seed, args.hours, data_dir)
                for _, fam, seed in runs_plan]
    t0 = time.monotonic()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        metas = list(pool.map(generate, gen_jobs))
    fresh = [m for m in metas if not m["cached"]]
    print(f"telemetry: {len(metas) - len(fresh)} cached, {len(fresh)} generated "
          f"({time.monotonic() - t0:.0f} s wall) in {os.path.join(workdir, 'data')}", file=sys.stderr)

    flows = []
    for (sp, fam, seed), job in zip(runs_plan, gen_jobs):
        name = f"{fam}-s{seed}-h{args.hours:g}"
        alerts = os.path.join(out_dir, f"alerts-{name}.jsonl")
        flow = flow_definition(job[0] + ".jsonl", alerts, os.path.join(out_dir, f"dlq-{name}.jsonl"), extra,
                               "families")
        flows.append((flow, os.path.join(out_dir, f"flow-{name}.yaml"), args.workers))
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(replay, *zip(*flows))) if flows else []

    runs: List[Dict[str, Any]] = []
    for (sp, fam, seed), job, meta, flow, (run_s, rc, err) in zip(runs_plan, gen_jobs, metas, flows, results):
        if rc != 0:
            sys.exit(f"sentinel run -c {flow[1]} failed with exit code {rc}:\n{err}")
        alerts_path = flow[0]["sinks"][0]["path"]
        alerts = load_jsonl(alerts_path) if os.path.exists(alerts_path) else []
        labels = load_jsonl(job[0] + ".labels.jsonl")
        r = score(alerts, labels, duration_s=args.hours * 3600.0,
                  grace_s=args.grace, traps=load_jsonl(job[0] + ".traps.jsonl"), count="all")
        r["missed_named_in_resolve"] = named_only_in_resolves(alerts, r["missed_labels"], args.grace)
        r["detected_by_age"] = detected_by_age(labels, r["missed_labels"],
                                               to_epoch(meta["start"]) if meta.get("start") else world.START)
        r.update(split=sp, family=fam, seed=seed, hours=args.hours, events=meta["events"], run_s=round(run_s, 2),
                 alerts_path=alerts_path)
        runs.append(r)

    aggs = {sp: (aggregate([r for r in runs if r["split"] == sp]) if any(r["split"] == sp for r in runs) else None)
            for sp in SPLITS}
    title = (f"family benchmark: {args.hours:g} h per run, flow-extra: {args.flow_extra or 'none'} ({tag}); "
             f"tune = {', '.join(world.list_families('tune'))}; test = {', '.join(world.list_families('test'))}\n"
             f"every non-resolve message (firing, escalated, updated) is a notification; first pages = firing, "
             f"not repeats; delay in {WINDOW_S:g} s windows")
    print(format_table(aggs, title))
    for sp in SPLITS:
        if aggs[sp] is not None:
            print()
            print(format_diagnosis(sp, [r for r in runs if r["split"] == sp], aggs[sp], args.show_missed))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"hours": args.hours, "flow_extra": extra, "tag": tag, "generator": fp,
                       "by_split": aggs, "runs": runs, "worlds": metas}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
