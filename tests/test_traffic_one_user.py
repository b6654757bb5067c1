"""A traffic rise must hold without the window's busiest user (TrafficDetector._rise_of_users).

A key that sees a few manual calls an hour gets a batch job's first run: one service account
sends 300 requests a minute for twelve minutes. That is one user's volume (judged as that user's,
by token abuse), not the key's traffic. A surge spread over the key's users still pages."""

import random
from typing import Dict, List, Optional

from detectors.windowed import KeyDetectors, WindowFeatures
from operators.model_windows import WindowAgg
from sentinel.events import LLMEvent

T0 = 1767571200.0  # 2026-01-05T00:00:00Z
WINDOWS = 8 * 60
RUN = (400, 412)  # the windows of the rise


def window(i: int, users: Dict[str, int], attributed: bool) -> WindowFeatures:
    """A window of ``users`` ({user: requests}) as the flow makes it (WindowAgg); without
    ``attributed`` its requests name no user."""
    agg = WindowAgg(T0 + 60 * i)
    for u, c in users.items():
        for k in range(c):
            agg.add(LLMEvent(T0 + 60 * i + k * 59.0 / c, "svc", "m", latency_ms=800.0, input_tokens=500,
                             output_tokens=200, cost_usd=0.001, user_id=u if attributed else None))
    return agg.features(60.0)


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
