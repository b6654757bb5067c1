"""Sharp daily traffic patterns: traffic alerts per day, and real drops on top of them.

The scenario simulator's daily swing is a smooth cosine. Real keys also have
sharp patterns that come back every day at the same time: a lunch peak, an
evening lull, a nightly batch. This benchmark feeds one key's one-minute
windows (Poisson request counts around a level of 60 a minute, steady latency
and tokens) straight into :class:`detectors.windowed.KeyDetectors` for
``--days`` days with one such pattern, and counts the traffic alerts that fire
on each day. On the third day (the second with ``--days 2``) a real drop (a tenth of the
traffic for 15 minutes) is added twice: at a quiet hour, and in the middle of the pattern. Those must page.

    python benchmarks/daily_patterns.py [--days 5] [--seeds 1,...,10]

Prints, per pattern, the traffic alerts per day summed over the seeds (the
pattern's own) and how many of the real drops paged.
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


def run(pattern, days: int, seed: int):
    """Traffic alerts (firing) per day, and whether each real drop paged."""
    rng = random.Random(seed)
    drop_day = min(2, days - 1)
    # A quiet hour (eight hours after the pattern starts), and the middle of the pattern.
    drops = [
        drop_day * 1440 + (pattern[1] + 480) % 1440,
        drop_day * 1440 + pattern[1] + max(0, pattern[2] // 2 - 7),
    ]
    det = KeyDetectors()
    per_day = [0] * days
    paged = [False, False]
    for i in range(days * 1440):
        lam = LEVEL * _factor(i % 1440, pattern)
        if any(d <= i < d + 15 for d in drops):
            lam *= 0.1
        n = _poisson(rng, lam)
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
                per_day[start // 1440] += 1
    return per_day, paged


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--seeds", default="1,2,3,4,5,6,7,8,9,10")
    args = ap.parse_args(argv)
    if args.days < 2:
        ap.error("--days must be at least 2")
    seeds = [int(s) for s in args.seeds.split(",")]
    head = " | ".join(f"day {d + 1}" for d in range(args.days))
    print(f"{len(seeds)} seeds; traffic alerts of the pattern per day (summed over seeds); real drops paged")
    print(f"pattern                          | {head} | drop at a quiet hour | drop inside the pattern")
    for name, pattern in PATTERNS.items():
        tot = [0] * args.days
        quiet = inside = 0
        for s in seeds:
            per_day, paged = run(pattern, args.days, s)
            tot = [a + b for a, b in zip(tot, per_day)]
            quiet += paged[0]
            inside += paged[1]
        cells = " | ".join(f"{x:5d}" for x in tot)
        print(f"{name:32s} | {cells} | {quiet}/{len(seeds)} | {inside}/{len(seeds)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
