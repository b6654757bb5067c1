"""How many labelled incidents of the family worlds could any detector catch at the false-alarm budget?

Recall of 95% for every type is only reachable where the labelled change stands
out of its key's own noise. This script asks that of each label with the
advantage no streaming detector has: it is told the incident's key, metric,
start and end, and compares the incident's span with the key's own hour
before it (an oracle two-sample test). A label that this oracle cannot tell
from noise at the budget's significance cannot be caught by Sentinel either
without paging for noise as often elsewhere.

The budget: at most 2 false notifications a day over all keys of a world
(about 20 service/model keys, 1,440 one-minute windows each, 7 window-based
types) is about one false alarm per 100,000 tests, z = 4.3 one-sided. A label
is *detectable* when the oracle's z reaches that.

The oracle, per type (baseline: the key's events in the 60 minutes before the
start that are inside no other label on the key):

* latency, ttft, tokens (input or output, by the label's metric), cost per
  request, drift (the last third of the ramp): Welch's z of the mean log value
  per request of the span against the baseline;
* error_rate: binomial likelihood-ratio z of the span's errors against the
  baseline's rate (at least 0.2%);
* traffic: the span's request count against the baseline's rate scaled to
  the span, its variance inflated by the baseline's overdispersion (variance
  over mean of its one-minute counts); a missed scheduled batch against the
  same minutes of the three hours before.

token_abuse, an actor among thousands, gets an oracle of its own: it is told
each user's average rate over the day (its requests outside the label, per
minute) and the abuser's span, and compares the abuser's requests in the span
with that rate (Poisson likelihood-ratio z). Its budget is the service's own
normal users: the largest such z of any other user in any 15-minute window of
the day on that service. A label above it is detectable with no false page
that day; one below it looks no stranger than some ordinary user's quarter
hour (a long agent task, a session). coordinated_attack is left out (caught
every time).

    python benchmarks/families.py --split test --json fam.json       # writes the worlds (cached) and the alerts
    python benchmarks/detectability.py --json fam.json               # per type: labels, detectable, caught

With ``--json`` the labels Sentinel caught come from that families run (its
``detections``); without it only the oracle's side is printed.
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import sys
from collections import defaultdict
from statistics import median
from typing import Any, Dict, List, Optional, Tuple

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from scoring import to_epoch as parse_time  # noqa: E402

Z_BUDGET = 4.3
TYPES = ("latency", "ttft", "tokens", "cost", "error_rate", "traffic", "drift")
BASELINE_S = 3600.0


def _field(label: Dict[str, Any]) -> str:
    t, m = label["type"], label.get("metric")
    if t == "latency":
        return "latency_ms"
    if t == "ttft":
        return "ttft_ms"
    if t == "cost":
        return "cost_per_token"
    if t in ("tokens", "drift"):
        return "input_tokens" if m == "input_tokens" else "output_tokens"
    return ""


def _value(ev: Dict[str, Any], field: str) -> Optional[float]:
    if ev.get("status") == "error":
        return None
    if field == "cost_per_token":
        c, n = ev.get("cost_usd"), (ev.get("input_tokens") or 0) + (ev.get("output_tokens") or 0)
        return c / n if c and n else None
    v = ev.get(field)
    return float(v) if v else None


def welch_z(a: List[float], b: List[float]) -> float:
    """z of mean(log a) - mean(log b) (Welch), 0 when either side has fewer than 3 values."""
    if len(a) < 3 or len(b) < 3:
        return 0.0
    la, lb = [math.log(x) for x in a], [math.log(x) for x in b]
    ma, mb = sum(la) / len(la), sum(lb) / len(lb)
    va = sum((x - ma) ** 2 for x in la) / (len(la) - 1)
    vb = sum((x - mb) ** 2 for x in lb) / (len(lb) - 1)
    se = math.sqrt(va / len(la) + vb / len(lb))
    return (ma - mb) / se if se > 0 else 0.0


def binomial_z(k: int, n: int, p: float) -> float:
    """Upper-side likelihood-ratio z of k errors in n requests at usual rate p."""
    if n == 0 or k <= n * p:
        return 0.0
    q = k / n
    llr = k * math.log(q / p) + ((n - k) * math.log((1 - q) / (1 - p)) if k < n else 0.0)
    return math.sqrt(max(2.0 * llr, 0.0))


def count_z(count: int, rate_per_min: float, minutes: float, dispersion: float) -> float:
    """|z| of a span's request count against a rate, variance inflated by the dispersion."""
    mu = rate_per_min * minutes
    if mu <= 0:
        return 0.0
    return abs(count - mu) / math.sqrt(mu * max(1.0, dispersion))


def poisson_z(k: int, mu: float) -> float:
    """Upper-side likelihood-ratio z of a count k against a Poisson mean mu."""
    if mu <= 0 or k <= mu:
        return 0.0
    return math.sqrt(max(2.0 * (k * math.log(k / mu) - (k - mu)), 0.0))


def abuse_z(label: Dict[str, Any], users: Dict[str, List[float]], day: Tuple[float, float],
            labelled: set) -> Tuple[float, float, str]:
    """(the abuser's z, the largest z of any other user's 15-minute window, what was compared)."""
    t0, t1 = parse_time(label["start"]), parse_time(label["end"])
    lo, hi = day
    user = (label.get("subject") or "").split(":", 1)[-1]
    ts = users.get(user, [])
    inside = sum(1 for t in ts if t0 <= t < t1)
    rate = (len(ts) - inside) / max(1.0, (hi - lo) - (t1 - t0))
    z = poisson_z(inside, rate * (t1 - t0))
    worst = 0.0
    for u, uts in users.items():
        if u in labelled or len(uts) < 2:
            continue
        mu = len(uts) / (hi - lo) * 900.0
        buckets: Dict[int, int] = defaultdict(int)
        for t in uts:
            buckets[int((t - lo) // 900)] += 1
        worst = max(worst, poisson_z(max(buckets.values()), mu))
    return z, worst, f"{inside} requests in the span against {rate * (t1 - t0):.1f} at its day's rate"


def oracle_z(label: Dict[str, Any], events: List[Tuple[float, Dict[str, Any]]],
             excluded: List[Tuple[float, float]]) -> Tuple[float, str]:
    """The oracle's z for one label from its key's events (sorted by time), and what it compared."""
    t0, t1 = parse_time(label["start"]), parse_time(label["end"])
    typ = label["type"]
    if typ == "drift":
        t0 = t0 + (t1 - t0) * 2 / 3  # the last third of the ramp: the change at its fullest
        base_lo, base_hi = parse_time(label["start"]) - BASELINE_S, parse_time(label["start"])
    else:
        base_lo, base_hi = t0 - BASELINE_S, t0

    def clean(t: float) -> bool:
        return not any(a <= t < b for a, b in excluded)

    span = [e for t, e in events if t0 <= t < t1]
    base = [e for t, e in events if base_lo <= t < base_hi and clean(t)]
    if typ == "error_rate":
        nb, kb = len(base), sum(1 for e in base if e.get("status") == "error")
        p = max(kb / nb if nb else 0.0, 0.002)
        k = sum(1 for e in span if e.get("status") == "error")
        return binomial_z(k, len(span), p), f"{k}/{len(span)} errors against {p:.2%}"
    if typ == "traffic":
        minutes = (t1 - t0) / 60.0
        if label.get("magnitude") == 0.0:  # a scheduled batch that did not run: the same minutes of earlier hours
            same = [sum(1 for t, _ in events if t0 - h * 3600 <= t < t1 - h * 3600) for h in (1, 2, 3)]
            mu = sum(same) / 3.0
            sd = max(math.sqrt(mu), (max(same) - min(same)) / 2.0)
            return (mu - len(span)) / sd if sd > 0 else 0.0, f"{len(span)} requests against {mu:.0f} at the same minutes before"
        per_min: Dict[int, int] = defaultdict(int)
        for t, e in events:
            if base_lo <= t < base_hi and clean(t):
                per_min[int(t // 60)] += 1
        counts = [per_min.get(m, 0) for m in range(int(base_lo // 60), int(base_hi // 60))]
        mean = sum(counts) / len(counts) if counts else 0.0
        var = sum((c - mean) ** 2 for c in counts) / max(1, len(counts) - 1)
        disp = var / mean if mean > 0 else 1.0
        return count_z(len(span), mean, minutes, disp), (f"{len(span)} requests against {mean * minutes:.0f}, "
                                                         f"dispersion {disp:.1f}")
    field = _field(label)
    a = [v for v in (_value(e, field) for e in span) if v]
    b = [v for v in (_value(e, field) for e in base) if v]
    return welch_z(a, b), f"{len(a)} requests' {field} against {len(b)}"


World = Tuple[List[Dict[str, Any]], Dict[Tuple[str, str], List[Tuple[float, Dict[str, Any]]]],
              Dict[str, Dict[str, List[float]]], Tuple[float, float]]


def load_world(path: str) -> World:
    """Labels, the events of labelled keys, each abused service's users' request times, the day's span."""
    labels = [orjson.loads(line) for line in open(path[:-len(".jsonl")] + ".labels.jsonl", "rb") if line.strip()]
    wanted = {(lb["service"], lb["model"]) for lb in labels if lb["type"] in TYPES}
    abused = {lb["service"] for lb in labels if lb["type"] == "token_abuse"}
    events: Dict[Tuple[str, str], List[Tuple[float, Dict[str, Any]]]] = defaultdict(list)
    users: Dict[str, Dict[str, List[float]]] = {s: defaultdict(list) for s in abused}
    lo, hi = math.inf, -math.inf
    with open(path, "rb") as f:
        for line in f:
            e = orjson.loads(line)
            if e.get("event_type") != "llm.request":
                continue
            t = parse_time(e["timestamp"])
            lo, hi = min(lo, t), max(hi, t)
            svc = e.get("service")
            k = (svc, e.get("model"))
            if k in wanted:
                events[k].append((t, e))
            if svc in users and e.get("user_id"):
                users[svc][e["user_id"]].append(t)
    for v in events.values():
        v.sort(key=lambda x: x[0])
    return labels, events, users, (lo, hi)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--workdir", default=os.path.join("/tmp", "sentinel-families"))
    ap.add_argument("--json", help="a families.py --json file: which labels Sentinel caught")
    ap.add_argument("--worlds", help="comma-separated family-seed names (e.g. ops-batch-s101); default: those of --json, else all")
    ap.add_argument("--show", type=int, default=40, help="list up to this many detectable labels Sentinel missed")
    args = ap.parse_args(argv)

    missed: Optional[set] = None  # "world:label id" of the labels the families run missed
    names: Optional[List[str]] = None
    if args.json:
        fam = orjson.loads(open(args.json, "rb").read())
        missed = set()
        names = []
        for r in fam["runs"]:
            names.append(f"{r['family']}-s{r['seed']}")
            missed |= {f"{r['family']}-s{r['seed']}:{m['id']}" for m in r["missed_labels"]}
    if args.worlds:
        names = args.worlds.split(",")
    paths = sorted(glob.glob(os.path.join(args.workdir, "data", "fam-*-h*.jsonl")))
    paths = [p for p in paths if not p.endswith((".labels.jsonl", ".traps.jsonl"))]
    if names is not None:
        paths = [p for p in paths if any(f"-{n}-h" in os.path.basename(p) for n in names)]
    if not paths:
        print("no worlds found: run benchmarks/families.py first", file=sys.stderr)
        return 1

    rows: Dict[str, List[int]] = defaultdict(lambda: [0, 0, 0, 0])  # labels, detectable, caught, caught of detectable
    missed_detectable: List[str] = []
    undetectable: Dict[str, List[float]] = defaultdict(list)

    def count(world: str, lb: Dict[str, Any], ok: bool, shortfall: float, line: str) -> None:
        """One label into its type's row; a detectable one Sentinel missed is listed with ``line``."""
        row = rows[lb["type"]]
        row[0] += 1
        row[1] += ok
        if missed is not None:
            was_caught = f"{world}:{lb['id']}" not in missed
            row[2] += was_caught
            row[3] += was_caught and ok
            if ok and not was_caught:
                missed_detectable.append(line)
        if not ok:
            undetectable[lb["type"]].append(shortfall)

    for path in paths:
        world_name = os.path.basename(path).split("-", 2)[2].rsplit("-h", 1)[0]
        labels, events, users, day = load_world(path)
        abusers = {(lb["service"], (lb.get("subject") or "").split(":", 1)[-1]) for lb in labels
                   if lb["type"] == "token_abuse"}
        by_key: Dict[Tuple[str, str], List[Tuple[float, float]]] = defaultdict(list)
        for lb in labels:
            by_key[(lb["service"], lb["model"])].append((parse_time(lb["start"]) - 300, parse_time(lb["end"]) + 900))
        for lb in labels:
            if lb["type"] == "token_abuse":
                svc = lb["service"]
                z, worst, what = abuse_z(lb, users[svc], day, {u for s, u in abusers if s == svc})
                count(world_name, lb, z > worst, z - worst,
                      f"  {lb['id']} {svc} z={z:.1f} (others up to {worst:.1f}): {lb['detail']}; {what}")
            elif lb["type"] in TYPES:
                key = (lb["service"], lb["model"])
                others = [w for w in by_key[key] if abs(w[0] + 300 - parse_time(lb["start"])) > 1e-6]
                z, what = oracle_z(lb, events.get(key, []), others)
                count(world_name, lb, abs(z) >= Z_BUDGET, abs(z),
                      f"  {lb['id']} {lb['service']}/{lb['model']} z={z:.1f}: {lb['detail']}; {what}")

    print(f"oracle two-sample test per label, detectable at z >= {Z_BUDGET} "
          f"(about 2 false alarms a day over 20 keys x 1,440 windows x 7 types); {len(paths)} worlds")
    head = "| type | labels | detectable by the oracle | ceiling | caught by Sentinel | caught of the detectable |"
    print(head)
    print("|---|---|---|---|---|---|")
    tot = [0, 0, 0, 0]
    for t in TYPES + ("token_abuse",):
        if t not in rows:
            continue
        n, d, c, cd = rows[t]
        tot = [a + b for a, b in zip(tot, rows[t])]
        cs = f"{c}/{n}" if missed is not None else "-"
        cds = f"{cd}/{d}" if missed is not None else "-"
        print(f"| {t} | {n} | {d} | {d / n:.2f} | {cs} | {cds} |")
    n, d, c, cd = tot
    print(f"| all | {n} | {d} | {d / n:.2f} | {c if missed is not None else '-'}/{n} | "
          f"{cd if missed is not None else '-'}/{d} |")
    for t, zs in sorted(undetectable.items()):
        if t == "token_abuse":
            print(f"{t}: {len(zs)} not detectable: the abuser's z is that far under the service's most unusual "
                  f"ordinary user-quarter-hour, median {median(zs):.1f}, closest {max(zs):.1f}")
        else:
            print(f"{t}: {len(zs)} not detectable, their oracle z median {median(zs):.1f}, max {max(zs):.1f}")
    if missed_detectable:
        print(f"detectable labels Sentinel missed: {len(missed_detectable)}")
        print("\n".join(missed_detectable[:args.show]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
