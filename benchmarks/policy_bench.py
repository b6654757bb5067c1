"""Budget alerts on families of simulated service-days: forecast lead time and precision.

    python benchmarks/policy_bench.py [DAYS_PER_FAMILY]

Each day is one service's cost over 24 hours of event time (six calls a
minute, a diurnal swing of 1:3 between night and the afternoon, the flow's
``budgets`` step through the whole flow on Bytewax's testing source):

- ``heavy``: legitimate heavy use that ends the day at 50-97% of its budget,
  with a half-hour burst of 2-4x somewhere between 08:00 and 18:00. A
  forecast or a "spent" page is a false alert; the 80% warning is right when
  80% is spent.
- ``overspend``: from a random hour between 01:00 and 14:00, a routing or
  prompt change multiplies the cost by 1.5-4, so the budget is gone before
  the day ends. The forecast should come well before the budget is spent.
- ``steady``: a flat rate that spends the budget by 12:00-22:00.

Prints, per family, the days, the alerts by level, the false ones, and for
the days whose budget ran out, the forecast's lead time before it did.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from datetime import datetime
from typing import Dict, List

sys.path.insert(0, ".")

from tests.helpers import T0, batches, request, run_flow  # noqa: E402

CONFIG = {"alerting": {"group_interval": 0, "repeat_interval": "2d"}}


def day(cost_fn, seed: int) -> List[Dict]:
    rng = random.Random(seed)
    out = []
    for m in range(24 * 60):
        for i in range(6):
            ts = T0 + m * 60 + (i + rng.random()) * 10.0
            out.append(request(ts, "svc", "m1", rng.lognormvariate(6.68, 0.2), cost_usd=cost_fn(ts)))
    return out


def diurnal(ts: float) -> float:
    h = (ts - T0) / 3600
    return 0.01 * (1 + 0.5 * math.sin((h - 9) / 24 * 2 * math.pi)) ** 2


def _t(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def run(family: str, seed: int) -> Dict:
    rng = random.Random(seed * 7919 + len(family))
    if family == "heavy":
        burst, factor = rng.uniform(8, 18) * 3600, rng.uniform(2, 4)

        def cost(ts: float) -> float:
            return diurnal(ts) * (factor if burst <= ts - T0 < burst + 1800 else 1.0)

        evs = day(cost, seed)
        budget = sum(e["cost_usd"] for e in evs) / rng.uniform(0.5, 0.97)
    elif family == "overspend":
        onset, factor = rng.uniform(1, 14) * 3600, rng.uniform(1.5, 4)

        def cost(ts: float) -> float:
            return diurnal(ts) * (factor if ts - T0 >= onset else 1.0)

        evs = day(cost, seed)
        normal = sum(diurnal(e["timestamp"]) for e in evs)
        budget = normal * rng.uniform(1.05, 1.3)   # a budget the normal day fits in, the changed one does not
    else:
        evs = day(lambda ts: 0.01, seed)
        budget = 0.06 * 60 * rng.uniform(12, 22)
    total = sum(e["cost_usd"] for e in evs)
    alerts, _ = run_flow(batches(evs), {**CONFIG, "policies": {"budgets": [
        {"service": "svc", "window": "1d", "cost_usd": budget}]}})
    pol = [a for a in alerts if a["type"] == "policy_violation" and a["status"] != "resolved"]
    levels = {a["evidence"]["level"]: _t(a["evidence"]["fired_event_time"]) for a in pol if "level" in a["evidence"]}
    # The time the budget really ran out, from the events.
    spent, out_at = 0.0, None
    for e in evs:
        spent += e["cost_usd"]
        if spent >= budget:
            out_at = e["timestamp"]
            break
    return {"levels": levels, "out_at": out_at, "share": total / budget}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    t0 = time.time()
    print("| family | days | budget spent | forecasts | warnings (80%) | spent pages | false alerts | "
          "forecast lead time before the budget ran out (median, min) |")
    print("|---|---|---|---|---|---|---|---|")
    total_alerts = total_false = 0
    for family in ("heavy", "overspend", "steady"):
        rows = [run(family, s) for s in range(1, n + 1)]
        forecasts = sum("forecast" in r["levels"] for r in rows)
        warns = sum("warn" in r["levels"] for r in rows)
        pages = sum("exceeded" in r["levels"] for r in rows)
        false = 0
        leads = []
        for r in rows:
            lv = r["levels"]
            if r["out_at"] is None:
                false += ("forecast" in lv) + ("exceeded" in lv)
                false += "warn" in lv and r["share"] < 0.8
            elif "forecast" in lv:
                leads.append((r["out_at"] - lv["forecast"]) / 60)
            elif "warn" in lv:
                leads.append((r["out_at"] - lv["warn"]) / 60)
        ran_out = sum(r["out_at"] is not None for r in rows)
        total_alerts += forecasts + warns + pages
        total_false += false
        lead = (f"{statistics.median(leads):.0f} min, {min(leads):.0f} min ({len(leads)} of {ran_out} days)"
                if leads else "-")
        spent = f"{min(r['share'] for r in rows):.0%}-{max(r['share'] for r in rows):.0%}"
        print(f"| {family} | {n} | {spent} | {forecasts} | {warns} | {pages} | {false} | {lead} |")
    precision = 1 - total_false / max(total_alerts, 1)
    print(f"\nprecision of budget alerts: {precision:.1%} ({total_alerts - total_false} of {total_alerts}); "
          f"{time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
