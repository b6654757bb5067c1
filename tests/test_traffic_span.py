"""Traffic judged on a quarter hour's sum too (TrafficDetector._span_score).

A key whose requests come in tasks (an agent's calls, a developer's session of completions) swings
by a factor of three from minute to minute: a surge to four times its usual rate for a quarter of an
hour, or a fall to a sixth, hides in any one window and shows in the sum of fifteen."""

import math
import random
from typing import List, Optional, Tuple

import pytest

from detectors.windowed import KeyDetectors, WindowFeatures

T0 = 1767571200.0  # 2026-01-05T00:00:00Z
DAYS = 2
SEEDS = range(10)
SPAN = (2000, 2015)  # the windows of the incident


def task_windows(seed: int, lift: Optional[float] = None) -> List[WindowFeatures]:
    """Two days of a key of three tasks a minute (half as many at night), each task a user's
    15 calls on average (exponentially many) spread over one to six minutes; ``lift`` multiplies
    the rate of tasks in SPAN."""
    rng = random.Random(seed)
    n = DAYS * 1440
    per: List[dict] = [dict() for _ in range(n)]
    t, task = 0.0, 0
    while True:
        rate = 3.0 * (1.0 + 0.5 * math.sin(2 * math.pi * t / 1440.0))
        if lift is not None and SPAN[0] <= t < SPAN[1]:
            rate *= lift
        t += rng.expovariate(rate)
        if t >= n:
            break
        task += 1
        calls, lasts = 1 + int(rng.expovariate(1 / 15.0)), rng.uniform(1.0, 6.0)
        for _ in range(calls):
            w = int(t + rng.uniform(0.0, lasts))
            if w < n:
                per[w][f"u{task}"] = per[w].get(f"u{task}", 0) + 1
    return [WindowFeatures(T0 + 60 * i, T0 + 60 * i + 60, sum(c.values()), 0, clusters=c or None)
            for i, c in enumerate(per)]


def pages(ws: List[WindowFeatures], span_windows: int) -> List[int]:
    det = KeyDetectors(types=("traffic",), span_windows=span_windows)
    return [i for i, f in enumerate(ws) for fd in det.update(f) if fd.status == "firing"]


def caught(ws: List[WindowFeatures], span_windows: int) -> bool:
    return any(SPAN[0] <= i <= SPAN[1] + 3 for i in pages(ws, span_windows))


@pytest.mark.parametrize("lift, with_span, without", [(4.0, 7, 1), (1 / 6, 7, 4)], ids=["surge", "fall"])
def test_a_quarter_hour_surge_or_fall_on_a_key_of_tasks_is_caught(lift: float, with_span: int,
                                                                  without: int) -> None:
    runs = [task_windows(seed, lift) for seed in SEEDS]
    on = sum(caught(ws, 15) for ws in runs)
    off = sum(caught(ws, 0) for ws in runs)
    assert on >= with_span, (on, off)
    assert off <= without, (on, off)


def test_twenty_calm_days_of_tasks_page_at_most_four_times_and_the_span_adds_at_most_three() -> None:
    """A window's fall counts in the key's bursts (below_bursts), so the minutes between tasks do
    not page on their own; the few lulls long enough to page at all show in the quarter hour's sum
    too, and the span may speak for them first: its share is bounded along with the total. The
    span's level is learned a span late (a surge's own sums do not lift it): 4 pages where it
    learned at once paged 3, all in the day's falling half, for 8 surges and 8 falls caught of 10
    each where it caught 6 and 7."""
    with_span = without = 0
    for seed in SEEDS:
        ws = task_windows(seed)
        with_span += len(pages(ws, 15))
        without += len(pages(ws, 0))
    assert with_span <= 4, (with_span, without)
    assert with_span - without <= 3, (with_span, without)


def agent_counts(seed: int) -> List[int]:
    """A day of a key of two tasks a minute, each fifteen calls within a minute or a minute and a
    half: thirty requests a minute, and minutes with a handful."""
    rng = random.Random(seed)
    counts = [0] * 1440
    t = 0.0
    while t < len(counts):
        t += rng.expovariate(2.0)
        lasts = rng.uniform(1.0, 1.5)
        for _ in range(15):
            w = int(t + rng.uniform(0.0, lasts))
            if w < len(counts):
                counts[w] += 1
    return counts


def test_the_minutes_between_an_agent_s_tasks_do_not_page_but_its_outage_does() -> None:
    """The run of windows that fell is judged in the key's bursts: a lull of a minute or two is
    no outage, and twenty minutes without a request are one within a few windows."""
    outage = range(1200, 1220)
    calm_pages, caught = 0, 0
    for seed in range(5):
        counts = agent_counts(seed)
        assert min(counts[300:1200]) <= 5  # the lulls are there
        calm = [WindowFeatures(T0 + 60 * i, T0 + 60 * i + 60, c, 0) for i, c in enumerate(counts)]
        down = [WindowFeatures(f.start, f.end, 0 if i in outage else f.count, 0) for i, f in enumerate(calm)]
        calm_pages += len(pages(calm, 15))
        caught += any(outage[0] <= i <= outage[0] + 3 for i in pages(down, 15))
    # 3 with the span's level learned a span late, 2 before (over 20 seeds: 6 and 5).
    assert calm_pages <= 3, calm_pages
    assert caught >= 4, caught


def test_a_span_alert_reports_the_span_s_requests_per_window() -> None:
    ws = task_windows(4, 4.0)
    det = KeyDetectors(types=("traffic",))
    fired: List[Tuple[int, float, float]] = []
    for i, f in enumerate(ws):
        fired += [(i, fd.observed, fd.expected) for fd in det.update(f) if fd.status == "firing"]
    i, observed, expected = next(x for x in fired if SPAN[0] <= x[0] <= SPAN[1])
    window_sums = sum(f.count for f in ws[i - 14:i + 1]) / 15.0
    assert observed == pytest.approx(window_sums)
    assert observed > 2.0 * expected


def test_a_state_from_before_the_span_starts_it_afresh() -> None:
    import pickle

    det = KeyDetectors(types=("traffic",))
    ws = task_windows(1)
    for f in ws[:100]:
        det.update(f)
    tr = det._traffic
    for name in ("_recent", "_span_base", "_span_sum", "_own", "_sums", "_span_bursts", "span_windows"):
        del tr.__dict__[name]
    state = pickle.loads(pickle.dumps(det))
    for f in ws[100:200]:
        state.update(f)
    assert len(state._traffic._recent) == 14 and state._traffic._span_base.n > 0
