"""Token-abuse state against the number of distinct users: one ServiceActors, a million users.

One :class:`detectors.actor_tokens.ServiceActors` (default settings: one-minute
windows, a ten-minute horizon, habits for at most ``max_actors`` = 20,000
actors) is fed synthetic one-minute windows, as ``operators/actors.py`` hands
them to it:

* a steady population of ``--steady`` recurring users with heavy-tailed
  activity (Zipf: the first users are busy nearly every minute with many
  requests, most rarely) and per-user request sizes (log-normal);
* ``--new`` users arriving per window, each for a session of a few windows
  (geometric, mean 2) of one to three requests a window. With ``--pool N``
  the arrivals are drawn from N returning users instead of fresh ones, so the
  same traffic comes from a bounded number of distinct users.

Run A (fresh arrivals) lets 1,000,000 distinct users through in 500 windows;
run B (a pool) has the same traffic from 10,000 distinct users. At the
windows where run A passes 10k, 100k, 200k, 500k and 1,000,000 distinct users
the table shows, for both runs:

* ``traced MB``: memory held by the process, traced by ``tracemalloc``
  (from just before the detector is built; the generator's own state, a few
  thousand open sessions, is included and is constant);
* ``restored MB``: memory of the detector alone, as a restored copy of its
  pickle (what recovery from a Bytewax snapshot rebuilds);
* ``pickle MB``: the pickled detector (what a snapshot stores);
* per-actor entries held: habits, actor-windows of the horizon, suspects
  (bounded at 256 plus open episodes), and the episodes opened since the
  previous row (long sessions of large requests from strangers: the traffic
  is synthetic, not a detection test);
* time per window close (mean and worst over the windows since the previous
  row), from a separate pass without tracemalloc on the same windows.

Seeded and deterministic (``--seed``).

    python benchmarks/actor_memory.py                       # 500 windows, 2,000 new users a window
    python benchmarks/actor_memory.py --windows 50 --new 200   # quick
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import pickle
import random
import sys
import time
import tracemalloc
from typing import Dict, Iterator, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from detectors.actor_tokens import ServiceActors, add_request  # noqa: E402

MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-haiku")
THRESHOLDS = (10_000, 100_000, 200_000, 500_000, 1_000_000)


class Traffic:
    """Windows of ``{actor: ActorWindow}``: a recurring heavy-tailed population plus sessions of arrivals."""

    def __init__(self, seed: int, steady: int, new: int, pool: Optional[int]) -> None:
        self.rng = random.Random(seed)
        self.new = new
        self.pool = pool
        rng = random.Random(seed + 1)
        # Recurring users: busy with probability falling as 1/rank, more requests the busier.
        self.steady: List[Tuple[str, float, float, float]] = []
        for rank in range(1, steady + 1):
            busy = min(0.95, 20.0 / rank ** 0.7)
            rate = 1.0 + 20.0 / rank ** 0.7
            size = math.exp(rng.gauss(math.log(800.0), 0.9))
            self.steady.append((f"user:s{rank}", busy, rate, size))
        self.sessions: Dict[str, List[float]] = {}  # actor -> [windows left, size]
        self._seen: set = set()  # recurring and pool users seen
        self._next = 0  # fresh users so far

    @property
    def distinct(self) -> int:
        return len(self._seen) + self._next

    def _requests(self, actors: Dict[str, list], actor: str, n: int, size: float) -> None:
        rng = self.rng
        model = MODELS[len(actor) % 3]
        for _ in range(n):
            add_request(actors, actor, max(1, int(size * math.exp(rng.gauss(0.0, 0.5)))), model)

    def window(self) -> Dict[str, list]:
        rng = self.rng
        actors: Dict[str, list] = {}
        for actor, busy, rate, size in self.steady:
            if rng.random() < busy:
                self._seen.add(actor)
                self._requests(actors, actor, 1 + int(rng.expovariate(1.0 / rate)), size)
        for _ in range(self.new):
            if self.pool is None:
                actor = f"user:n{self._next}"
                self._next += 1
            else:  # a returning user not in a session already (the same traffic as fresh arrivals)
                for _ in range(20):
                    actor = f"user:p{rng.randrange(self.pool)}"
                    if actor not in self.sessions:
                        break
                self._seen.add(actor)
            if actor not in self.sessions:
                left = 1
                while rng.random() < 0.5:
                    left += 1
                self.sessions[actor] = [left, math.exp(rng.gauss(math.log(500.0), 0.8))]
        done = []
        for actor, s in self.sessions.items():
            self._requests(actors, actor, rng.randint(1, 3), s[1])
            s[0] -= 1
            if s[0] <= 0:
                done.append(actor)
        for actor in done:
            del self.sessions[actor]
        return actors


def checkpoints(args) -> List[int]:
    """Window indices (0-based) after which fresh arrivals (run A) have passed each threshold of distinct users."""
    traffic = Traffic(args.seed, args.steady, args.new, None)
    out: List[int] = []
    todo = list(THRESHOLDS)
    for w in range(args.windows):
        traffic.window()
        while todo and traffic.distinct >= todo[0]:
            todo.pop(0)
            if w not in out:
                out.append(w)
    if not out or out[-1] < args.windows - 10:
        out.append(args.windows - 1)
    return out


def run(args, pool: Optional[int], marks: List[int], trace: bool) -> Iterator[dict]:
    traffic = Traffic(args.seed, args.steady, args.new, pool)
    gc.collect()
    if trace:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    det = ServiceActors()
    times: List[float] = []
    busy: List[int] = []
    fired = 0
    for w in range(args.windows):
        actors = traffic.window()
        busy.append(len(actors))
        t0 = time.perf_counter()
        fired += sum(f.status == "firing" for f in det.close_window(60.0 * w, actors))
        times.append(time.perf_counter() - t0)
        del actors
        if w not in marks:
            continue
        row = {"window": w + 1, "distinct": traffic.distinct, "busy": sum(busy) / len(busy),
               "habits": len(det._habits), "horizon": sum(len(a) for _, a, _n in det._recent),
               "suspects": len(det._suspects), "fired": fired, "close_ms": 1000.0 * sum(times) / len(times),
               "close_max_ms": 1000.0 * max(times)}
        if trace:
            gc.collect()
            row["traced"] = tracemalloc.get_traced_memory()[0] - base
            blob = pickle.dumps(det, protocol=pickle.HIGHEST_PROTOCOL)
            row["pickle"] = len(blob)
            gc.collect()
            m0 = tracemalloc.get_traced_memory()[0]
            copy = pickle.loads(blob)
            row["restored"] = tracemalloc.get_traced_memory()[0] - m0
            del copy, blob
        times, busy, fired = [], [], 0
        yield row
    if trace:
        tracemalloc.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=500)
    ap.add_argument("--new", type=int, default=2000, help="arrivals per window")
    ap.add_argument("--steady", type=int, default=3000, help="recurring users")
    ap.add_argument("--pool", type=int, default=10000,
                    help="distinct users of run B (its arrivals are drawn from pool - steady returning users)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    marks = checkpoints(args)
    d = ServiceActors()
    print(f"ServiceActors defaults: window {d.window:g} s, horizon {d.horizon:g} s, max_actors {d.max_actors:,}; "
          f"{args.windows} windows, {args.steady:,} recurring users, {args.new:,} arrivals a window, seed {args.seed}")
    print()
    print("| run | windows | distinct users | busy actors / window | habits | horizon actor-windows | suspects "
          "| episodes opened | traced MB | restored MB | pickle MB | close ms, mean (worst) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, pool in (("A: fresh users", None), (f"B: a pool of {args.pool:,}", args.pool - args.steady)):
        timed = list(run(args, pool, marks, trace=False))
        for row, t in zip(run(args, pool, marks, trace=True), timed):
            assert (row["distinct"], row["habits"], row["horizon"]) == (t["distinct"], t["habits"], t["horizon"])
            print(f"| {name} | {row['window']} | {row['distinct']:,} | {row['busy']:,.0f} | {row['habits']:,} "
                  f"| {row['horizon']:,} | {row['suspects']} | {row['fired']} | {row['traced'] / 2**20:.1f} "
                  f"| {row['restored'] / 2**20:.1f} | {row['pickle'] / 2**20:.1f} "
                  f"| {t['close_ms']:.1f} ({t['close_max_ms']:.0f}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
