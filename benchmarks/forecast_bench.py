"""Forecast benchmark: lead time and precision of the predictive warnings (``detection.forecast``).

Replays the family worlds of ``benchmarks/families.py`` (same cache, same
``sentinel run -c`` replay) with forecasts on, then reads the warnings
(detector ``trend_forecast``, status ``firing``) against the labels:

* precision: a warning is true when a labelled incident on its service/model
  key is under way at the warning or begins within ``horizon`` after it
  (its end plus the scorer's grace); ``typed`` also asks that the incident
  moves the warning's value (the label's type or one of its effects: a drift
  of output tokens moves the cost per request);
* lead time: for each incident a true warning came for, minutes from the
  warning to the first regular alert of that incident (``scoring.matches``:
  its type, key and window; else any regular alert on the key in the
  incident's window), both at the end of the window that made them
  (``evidence.fired_event_time``): positive when the warning came first;
* coverage: incidents of the trend-prone types (latency, error_rate, cost,
  drift) with a warning before their regular alert.

    python benchmarks/forecast_bench.py --split test --seeds 101 --hours 24
    python benchmarks/forecast_bench.py --split tune --flow-extra my_forecast.yaml

Without ``--flow-extra`` the flow gets ``detection.forecast`` enabled with its
defaults. With one, it must enable forecasts itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Dict, List, Optional, Tuple

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

import world  # noqa: E402
from families import _ints, data_base, generate, plan, world_fingerprint  # noqa: E402
from scenarios import check_flow, flow_definition, load_flow_extra, replay  # noqa: E402
from scoring import EARLY_S, alert_body, load_jsonl, matches, median, to_epoch  # noqa: E402

DETECTOR = "trend_forecast"
TREND_TYPES = ("latency", "error_rate", "cost", "drift")
DEFAULT_EXTRA = {"detection": {"forecast": {"enabled": True}}}


def fired_at(alert: Dict[str, Any]) -> float:
    """End of the window that made the alert (its event_time when it does not say)."""
    ev = alert.get("evidence") or {}
    return to_epoch(ev.get("fired_event_time") or alert["event_time"])


def same_key(alert: Dict[str, Any], label: Dict[str, Any]) -> bool:
    return (label.get("service") is not None and alert.get("service") == label.get("service")
            and (label.get("model") is None or alert.get("model") == label.get("model")))


def judge(alerts: List[Dict[str, Any]], labels: List[Dict[str, Any]], horizon_s: float,
          grace_s: float) -> Dict[str, Any]:
    """Warnings against labels: precision, lead times, coverage (see the module docstring)."""
    alerts = [alert_body(a) for a in alerts]
    warnings = sorted((a for a in alerts if a.get("detector") == DETECTOR and a.get("status") == "firing"),
                      key=fired_at)
    regular = [a for a in alerts if a.get("detector") != DETECTOR and a.get("status") != "resolved"]
    true_n = typed_n = 0
    warned: Dict[str, float] = {}          # label id -> first true warning
    false: List[str] = []
    for w in warnings:
        t = fired_at(w)
        hits = [lb for lb in labels if same_key(w, lb)
                and to_epoch(lb["start"]) - EARLY_S <= t + horizon_s
                and t <= to_epoch(lb["end"]) + max(grace_s, float(lb.get("grace_s") or 0.0))]
        if not hits:
            false.append(f"{w['type']} {w['service']}/{w['model']} at {w['evidence'].get('fired_event_time')}")
            continue
        true_n += 1
        if any(w["type"] == lb["type"] or w["type"] in (lb.get("effects") or []) for lb in hits):
            typed_n += 1
        for lb in hits:
            warned.setdefault(lb["id"], t)
    leads: List[float] = []
    by_type: Dict[str, List[float]] = {}
    for lb in labels:
        if lb["id"] not in warned:
            continue
        own = [a for a in regular if matches(a, lb, grace_s)]
        if not own:  # the incident paged under another type (a drift's tokens, a grouped member)
            own = [a for a in regular if same_key(a, lb)
                   and to_epoch(lb["start"]) - EARLY_S <= to_epoch(a["event_time"]) <= to_epoch(lb["end"]) + grace_s]
        if not own:
            continue
        lead = (min(fired_at(a) for a in own) - warned[lb["id"]]) / 60.0
        leads.append(lead)
        by_type.setdefault(lb["type"], []).append(lead)
    prone = [lb for lb in labels if lb["type"] in TREND_TYPES]
    early = [lb for lb in prone if lb["id"] in warned]
    return {"warnings": len(warnings), "true": true_n, "typed": typed_n, "false": false, "leads": leads,
            "leads_by_type": by_type, "trend_labels": len(prone), "trend_labels_warned": len(early)}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=("tune", "test", "both"), default="test", help="which families (default test)")
    ap.add_argument("--families", help="comma-separated family names (default: every family of the split)")
    ap.add_argument("--seeds", help="comma-separated seeds (default: the split's)")
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours per run (default 24)")
    ap.add_argument("--flow-extra", help="YAML mapping merged into every flow definition (must enable forecasts)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sentinel-families"),
                    help="cache of generated telemetry and run outputs (default: %(default)s)")
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data"),
                    help="where the real trace is (default: ../shared/data beside the repository)")
    ap.add_argument("--jobs", type=int, default=2, help="generations and replays run in parallel (default 2)")
    ap.add_argument("--grace", type=float, default=300.0, help="seconds after a label's end a warning still counts")
    ap.add_argument("--show-false", type=int, default=20, help="false warnings listed (default 20)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    if args.flow_extra:
        extra, tag = load_flow_extra(args.flow_extra)
    else:
        extra = DEFAULT_EXTRA
        tag = "forecast-default-" + hashlib.sha256(json.dumps(extra).encode()).hexdigest()[:8]
    probe = flow_definition("x.jsonl", "a.jsonl", "d.jsonl", extra)
    check_flow(probe, args.flow_extra or "<forecast flow>")
    from sentinel.config import load_config_dict

    fc = load_config_dict(probe).detection.forecast
    if not fc.enabled:
        sys.exit("the flow-extra leaves detection.forecast disabled: nothing to measure")
    runs_plan = plan(args.split, args.families.split(",") if args.families else None, _ints(args.seeds))
    workdir = os.path.abspath(args.workdir)
    os.makedirs(os.path.join(workdir, "data"), exist_ok=True)
    out_dir = os.path.join(workdir, "runs", tag)
    os.makedirs(out_dir, exist_ok=True)
    fp = world_fingerprint()
    gen_jobs = [(data_base(workdir, fp, fam, seed, args.hours), fam, seed, args.hours, os.path.abspath(args.data_dir))
                for _, fam, seed in runs_plan]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(generate, gen_jobs))
    flows: List[Tuple[Dict[str, Any], str, int]] = []
    for (_, fam, seed), job in zip(runs_plan, gen_jobs):
        name = f"{fam}-s{seed}-h{args.hours:g}"
        flow = flow_definition(job[0] + ".jsonl", os.path.join(out_dir, f"alerts-{name}.jsonl"),
                               os.path.join(out_dir, f"dlq-{name}.jsonl"), extra, "forecast")
        flows.append((flow, os.path.join(out_dir, f"flow-{name}.yaml"), 1))
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(replay, *zip(*flows)))

    runs = []
    for (sp, fam, seed), job, flow, (run_s, rc, err) in zip(runs_plan, gen_jobs, flows, results):
        if rc != 0:
            sys.exit(f"sentinel run -c {flow[1]} failed with exit code {rc}:\n{err}")
        r = judge(load_jsonl(flow[0]["sinks"][0]["path"]), load_jsonl(job[0] + ".labels.jsonl"), fc.horizon,
                  args.grace)
        r.update(split=sp, family=fam, seed=seed, run_s=round(run_s, 1))
        runs.append(r)

    print(f"forecast benchmark: {args.hours:g} h per run, horizon {fc.horizon / 60:g} min, windows {fc.windows}, "
          f"min_slope_z {fc.min_slope_z:g}; flow-extra: {args.flow_extra or 'forecast enabled, defaults'}")
    print(f"{'run':34} {'warnings':>8} {'true':>5} {'typed':>5} {'lead med':>8} {'trend incidents warned':>22}")
    for r in runs:
        lead = median(r["leads"])
        print(f"{r['family'] + ' s' + str(r['seed']):34} {r['warnings']:8d} {r['true']:5d} {r['typed']:5d} "
              f"{'-' if lead is None else f'{lead:.1f}':>8} {r['trend_labels_warned']:>10d}/{r['trend_labels']}")
    n = sum(r["warnings"] for r in runs)
    true_n = sum(r["true"] for r in runs)
    typed = sum(r["typed"] for r in runs)
    leads = [x for r in runs for x in r["leads"]]
    by_type: Dict[str, List[float]] = {}
    for r in runs:
        for t, xs in r["leads_by_type"].items():
            by_type.setdefault(t, []).extend(xs)
    print()
    print(f"warnings {n}; precision {true_n}/{n} = {true_n / n:.2f}; typed {typed}/{n} = {typed / n:.2f}" if n
          else "no warnings")
    if leads:
        ahead = [x for x in leads if x > 0]
        print(f"lead time (minutes before the incident's regular alert): median {median(leads):.1f}, "
              f"ahead in {len(ahead)}/{len(leads)}, median of those ahead {median(ahead) or 0:.1f}")
        for t, xs in sorted(by_type.items()):
            print(f"  {t:12} n={len(xs):3d} median {median(xs):6.1f}  min {min(xs):6.1f}  max {max(xs):6.1f}")
    print(f"trend-prone incidents ({', '.join(TREND_TYPES)}) warned: "
          f"{sum(r['trend_labels_warned'] for r in runs)}/{sum(r['trend_labels'] for r in runs)}")
    false = [f for r in runs for f in r["false"]]
    if false:
        print(f"false warnings ({len(false)}):")
        for f in false[:args.show_false]:
            print("  " + f)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"forecast": fc.model_dump(), "runs": runs}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
