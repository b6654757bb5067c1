"""Sharp daily traffic patterns: traffic alerts per day, and real drops on top of them.

The scenario simulator's daily swing is a smooth cosine. Real keys also have
sharp patterns that come back every day at the same time: a lunch peak, an
evening lull, a nightly batch. This benchmark feeds one key's one-minute
windows (Poisson request counts around a level of 60 a minute, steady latency
and tokens) straight into :class:`detectors.windowed.KeyDetectors` for
``--days`` days with one such pattern, and counts the traffic alerts that fire
on each day. On the third day (the second with ``--days 2``) a real drop (a tenth of the
traffic for 15 minutes) is added twice: at a quiet hour, and in the middle of the pattern. Those must page.

    python benchmarks/daily_patterns.py [--days 5] [--weeks 3] [--seeds 1,...,10]

A weekly pattern is run too (``--weeks``, default 3): a daily swing of
+-50% and a weekend at 35% of a weekday's traffic, with real drops on the
last Wednesday and the last Saturday.

Prints, per pattern, the traffic alerts per day (per week for the weekly
one) summed over the seeds (the pattern's own) and how many of the real
drops paged.
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


def run(lam, drops, days: int, seed: int, per: int = 1440):
    """Traffic alerts (firing) per ``per`` minutes, and whether each real drop paged."""
    rng = random.Random(seed)
    det = KeyDetectors()
    counts = [0] * ((days * 1440 + per - 1) // per)
    paged = [False] * len(drops)
    for i in range(days * 1440):
        rate = lam(i)
        if any(d <= i < d + 15 for d in drops):
            rate *= 0.1
        n = _poisson(rng, rate)
        j = lambda: math.exp(rng.gauss(0.0, 0.06))  # noqa: E731
        f = WindowFeatures(T0 + 60 * i, T0 + 60 * (i + 1), n, min(n, 1), 500 * j(), 1000 * j(), 300 * j(),
                           800 * j(), 200 * j(), 0.002 * j(), 0.002 * n, 1000 * n)
        for fd in det.update(f):
            if fd.type != "traffic" or fd.status != "firing":
                continue
            start = int((fd.event_time - T0) // 60)
            hit = [k for k, d in enumerate(drops) if d - 1 <= start < d + 15]
            if hit:
                paged[hit[0]] = True
            else:
                counts[start // per] += 1
    return counts, paged


def _table(rows, seeds, periods: int, what: str, drops: str) -> None:
    head = " | ".join(f"{what} {d + 1}" for d in range(periods))
    print(f"pattern                          | {head} | {drops}")
    for name, (lam, dr, days, per) in rows.items():
        tot = [0] * periods
        paged = [0] * len(dr)
        for s in seeds:
            counts, hit = run(lam, dr, days, s, per)
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
    print(f"{len(seeds)} seeds; traffic alerts of the pattern (summed over seeds); real drops paged")
    rows = {}
    for name, pattern in PATTERNS.items():
        lam, drops = _daily(pattern, args.days)
        rows[name] = (lam, drops, args.days, 1440)
    _table(rows, seeds, args.days, "day", "drop at a quiet hour | drop inside the pattern")
    if args.weeks:
        lam, drops = _weekly(args.weeks * 7)
        print()
        _table({"weekend x0.35, daily swing": (lam, drops, args.weeks * 7, 7 * 1440)}, seeds, args.weeks, "week",
               "drop on a Wednesday | drop on a Saturday")
    return 0


if __name__ == "__main__":
    sys.exit(main())
