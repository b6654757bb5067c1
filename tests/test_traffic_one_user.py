"""A traffic rise must hold without the window's busiest user (TrafficDetector._rise_of_users).

A key that sees a few manual calls an hour gets a batch job's first run: one service account
sends 300 requests a minute for twelve minutes. That is one user's volume (judged as that user's,
by token abuse), not the key's traffic. A surge spread over the key's users still pages."""

import random
from typing import Dict, List, Optional

from detectors.windowed import KeyDetectors, WindowFeatures

T0 = 1767571200.0  # 2026-01-05T00:00:00Z
WINDOWS = 8 * 60
RUN = (400, 412)  # the windows of the rise


def window(i: int, users: Dict[str, int], attributed: bool) -> WindowFeatures:
    """A window of ``users`` ({user: requests}); ``rest`` as WindowAgg.features makes it (the
    requests without the busiest user, when it sent two and 5% of them)."""
    n = sum(users.values())
    rest = None
    if attributed and users:
        top = max(users.values())
        if top >= 2 and top >= 0.05 * n:
            rest = (n - top, None, None, None, None, None)
    many = {u: c for u, c in users.items() if c > 1} or None
    return WindowFeatures(T0 + 60 * i, T0 + 60 * i + 60, n, 0, clusters=many, rest=rest)


def key(seed: int, rate: float, rise: Optional[str], attributed: bool = True) -> List[WindowFeatures]:
    """``rate`` requests a minute from 400 users (Poisson); in RUN, ``rise``: "one" adds one account's
    300 a minute, "many" triples the rate of the key's users."""
    rng = random.Random(seed)
    out = []
    for i in range(WINDOWS):
        r = rate * (3.0 if rise == "many" and RUN[0] <= i < RUN[1] else 1.0)
        users: Dict[str, int] = {}
        t = rng.expovariate(r)
        while t < 1.0:
            u = f"u{int(rng.paretovariate(1.2)) % 400}"
            users[u] = users.get(u, 0) + 1
            t += rng.expovariate(r)
        if rise == "one" and RUN[0] <= i < RUN[1]:
            users["svc-batch"] = 300
        out.append(window(i, users, attributed))
    return out


def traffic_pages(ws: List[WindowFeatures]) -> List[int]:
    det = KeyDetectors(types=("traffic",))
    return [i for i, f in enumerate(ws) for fd in det.update(f) if fd.status == "firing" and fd.type == "traffic"]


def in_run(pages: List[int]) -> bool:
    return any(RUN[0] <= i <= RUN[1] + 3 for i in pages)


def test_one_accounts_first_run_on_a_quiet_key_does_not_page_traffic() -> None:
    seeds = range(6)
    assert not any(in_run(traffic_pages(key(s, 0.2, "one"))) for s in seeds)
    # The same windows without knowing who sent them page on every seed: the rule is what holds them.
    assert all(in_run(traffic_pages(key(s, 0.2, "one", attributed=False))) for s in seeds)


def test_a_surge_of_the_key_s_users_still_pages() -> None:
    assert all(in_run(traffic_pages(key(s, 20.0, "many"))) for s in range(6))
