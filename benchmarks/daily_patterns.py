"""Sharp daily and weekly patterns: alerts per day, and real incidents on top of them.

The scenario simulator's daily swing is a smooth cosine. Real keys also have
sharp patterns that come back every day at the same time: a lunch peak, an
evening lull, a nightly batch. This benchmark feeds one key's one-minute
windows (Poisson request counts around a level of 60 a minute, steady latency
and tokens) straight into :class:`detectors.windowed.KeyDetectors` for
``--days`` days with one such pattern, and counts the traffic alerts that
fire on each day. On the third day (the second with ``--days 2``) a real drop
(a tenth of the traffic for 15 minutes) is added twice: at a quiet hour, and
in the middle of the pattern. Those must page.

    python benchmarks/daily_patterns.py [--days 5] [--weeks 3] [--seeds 1,...,10]

A nightly batch is run too (02:00-04:00: answers twice and latency three
times as long; latency, tokens, cost and drift alerts are counted), with
real latency incidents (x3 for 15 minutes) on the third day at 14:00 and in
the batch. And a weekly pattern (``--weeks``, default 3): a daily swing of
+-50% and a weekend at 35% of a weekday's traffic, with real drops on the
last Wednesday and the last Saturday.

Prints, per pattern, the alerts of the pattern per day (per week for the
weekly one) summed over the seeds, and how many of the real incidents paged.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from detectors.windowed import KeyDetectors, WindowFeatures  # noqa: E402

T0 = 1767571200.0  # a midnight, UTC
LEVEL = 60.0

# name -> (factor, first minute of the day, minutes, ramp minutes either side)
PATTERNS = {
    "lunch peak x3, 12:00-13:00": (3.0, 720, 60, 5),
    "morning wave x4, 09:00-09:30": (4.0, 540, 30, 3),
    "evening lull x0.25, 18:00-20:00": (0.25, 1080, 120, 5),
    "night lull x0.25, 23:00-24:00": (0.25, 1380, 60, 5),
    "batch x2.5, 02:00-05:00": (2.5, 120, 180, 10),
}


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 30:
        return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
    n, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return n
        n += 1


def _factor(minute_of_day: int, pattern) -> float:
    factor, first, width, ramp = pattern
    m = minute_of_day
    if not first <= m < first + width:
        return 1.0
    k = min(1.0, (m - first + 1) / ramp, (first + width - m) / ramp)
    return 1.0 + (factor - 1.0) * k


def _daily(pattern, days: int):
    """Rate per minute index, and the two real drops (first minutes) of a daily pattern."""
    drop_day = min(2, days - 1)
    # A quiet hour (eight hours after the pattern starts), and the middle of the pattern.
    drops = [
        drop_day * 1440 + (pattern[1] + 480) % 1440,
        drop_day * 1440 + pattern[1] + max(0, pattern[2] // 2 - 7),
    ]
    return (lambda i: LEVEL * _factor(i % 1440, pattern)), drops


def _weekly(days: int):
    """A daily swing of +-50% and a weekend at 35% of a weekday (T0 is a Monday); drops on
    the last Wednesday and the last Saturday, at 14:00."""
    last_week = (days // 7 - 1) * 7

    def lam(i: int) -> float:
        d, m = divmod(i, 1440)
        return LEVEL * (1 + 0.5 * math.sin(2 * math.pi * (m - 360) / 1440)) * (0.35 if d % 7 in (5, 6) else 1.0)
    return lam, [(last_week + 2) * 1440 + 840, (last_week + 5) * 1440 + 840]


def _batch(days: int):
    """Steady traffic; from 02:00 to 04:00 every night a batch job's requests make answers
    twice and latency three times as long. The real incidents: latency x3 on top of that (in
    the batch) and latency x3 at 14:00, for 15 minutes each on the third day."""
    drop_day = min(2, days - 1)

    def mix(i: int, incident: bool):
        batch = 120 <= i % 1440 < 240
        lat = (3.0 if batch else 1.0) * (3.0 if incident else 1.0)
        return lat, 2.0 if batch else 1.0
    return (lambda i: LEVEL), [drop_day * 1440 + 840, drop_day * 1440 + 150], mix


def run(lam, drops, days: int, seed: int, per: int = 1440, mix=None, types=("traffic",)):
    """Alerts of ``types`` (firing) per ``per`` minutes, and whether each real incident paged.

    Without ``mix`` the incidents are drops (a tenth of the traffic); with it, ``mix(i,
    incident)`` gives the window's latency and output-token factors."""
    rng = random.Random(seed)
    det = KeyDetectors()
    counts = [0] * ((days * 1440 + per - 1) // per)
    paged = [False] * len(drops)
    for i in range(days * 1440):
        rate = lam(i)
        incident = any(d <= i < d + 15 for d in drops)
        lat_x, tok_x = 1.0, 1.0
        if mix is not None:
            lat_x, tok_x = mix(i, incident)
        elif incident:
            rate *= 0.1
        n = _poisson(rng, rate)
        j = lambda: math.exp(rng.gauss(0.0, 0.06))  # noqa: E731
        f = WindowFeatures(T0 + 60 * i, T0 + 60 * (i + 1), n, min(n, 1), 500 * lat_x * j(), 1000 * lat_x * j(),
                           300 * j(), 800 * j(), 200 * tok_x * j(), 0.002 * j(), 0.002 * n, 1000 * n)
        for fd in det.update(f):
            if fd.type not in types or fd.status != "firing":
                continue
            start = int((fd.event_time - T0) // 60)
            hit = [k for k, d in enumerate(drops) if d - 1 <= start < d + 15]
            if hit:
                paged[hit[0]] = True
            else:
                counts[start // per] += 1
    return counts, paged


def _table(rows, seeds, periods: int, what: str, drops: str, mix=None, types=("traffic",)) -> None:
    head = " | ".join(f"{what} {d + 1}" for d in range(periods))
    print(f"pattern                          | {head} | {drops}")
    for name, (lam, dr, days, per) in rows.items():
        tot = [0] * periods
        paged = [0] * len(dr)
        for s in seeds:
            counts, hit = run(lam, dr, days, s, per, mix, types)
            tot = [a + b for a, b in zip(tot, counts)]
            paged = [a + b for a, b in zip(paged, hit)]
        cells = " | ".join(f"{x:5d}" for x in tot)
        print(f"{name:32s} | {cells} | " + " | ".join(f"{p}/{len(seeds)}" for p in paged), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--weeks", type=int, default=3, help="weeks of the weekly pattern (0: skip it)")
    ap.add_argument("--seeds", default="1,2,3,4,5,6,7,8,9,10")
    args = ap.parse_args(argv)
    if args.days < 2:
        ap.error("--days must be at least 2")
    if args.weeks == 1:
        ap.error("--weeks must be 0 or at least 2")
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{len(seeds)} seeds; alerts of the pattern (summed over seeds); real incidents paged")
    rows = {}
    for name, pattern in PATTERNS.items():
        lam, drops = _daily(pattern, args.days)
        rows[name] = (lam, drops, args.days, 1440)
    _table(rows, seeds, args.days, "day", "drop at a quiet hour | drop inside the pattern")
    lam, incidents, mix = _batch(args.days)
    print()
    _table({"batch: answers x2, latency x3": (lam, incidents, args.days, 1440)}, seeds, args.days, "day",
           "latency x3 at 14:00 | latency x3 in the batch", mix, ("latency", "tokens", "cost", "drift"))
    if args.weeks:
        lam, drops = _weekly(args.weeks * 7)
        print()
        _table({"weekend x0.35, daily swing": (lam, drops, args.weeks * 7, 7 * 1440)}, seeds, args.weeks, "week",
               "drop on a Wednesday | drop on a Saturday")
    return 0


if __name__ == "__main__":
    sys.exit(main())
