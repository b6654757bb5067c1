"""The default per-metric streaming detector (SPEC section 4).

Each point gets a *surprise* ``-log10 p`` from three calibrated, distribution-free
tail probabilities, each the empirical rank of a statistic among its own last
``window`` values (sorted with ``bisect``), with an exponential tail past the
observed extremes (scale from the 90th-99th percentile spread):

* **level**: the value itself, two-sided (spikes and dips against recent history);
* **season**: the absolute residual against a time-of-day profile learned online
  (buckets over ``period`` seconds, linear interpolation between bucket
  centres, so irregular timestamps are fine); a series without a daily pattern
  just has wide residuals, and the rank calibrates that away;
* **drift**: an exponentially weighted mean, two-sided (short-term vs long-term
  distribution change: slow shifts, bursts of spikes).

The season and drift channels are each measured at several scales at once and
their surprises averaged (a geometric mean of the tail probabilities): one
profile per entry of ``bins`` (48 and 96 buckets a day: 30- and 15-minute
resolution) and one drift mean per entry of ``drift_span`` (32 and 64 points).
So no single resolution or span has to be chosen for a series: a residual or a
drift counts in proportion to how many scales find it surprising, and one
scale's chance extreme counts about half. (On the NAB subset, picking one
``bins`` or ``drift_span`` per category overfits; the average scores at least
as well as the single scale 48 / 64 on every category of the standard profile,
see ``benchmarks/NAB_NOTES.md``.)

The surprise is the maximum of the three, and ``score = min(1, surprise / smax)``,
so a threshold means the same tail probability on every series (0.5 is
``p = 1e-4`` with the defaults). Alert de-duplication: a point whose surprise is
no higher than the highest of the previous ``rest`` points is scored
``damp`` times that (an incident is loud at its onset and when it worsens, not on
every point of it). Rank windows make level shifts the new normal as they fill:
the surprise of a lasting shift falls roughly like ``log10(window / k)`` after
``k`` points.

Pure Python, deterministic, picklable, no clock reads; ``update`` is O(window)
per rank window in the worst case (list insert/delete; one for the level and
one per season and drift scale, five with the defaults).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections import deque

_LN10 = math.log(10.0)


class _RankWindow:
    """The last ``size`` values, also kept sorted: empirical tail probabilities."""

    __slots__ = ("size", "fifo", "sorted")

    def __init__(self, size: int) -> None:
        self.size = size
        self.fifo: deque = deque()
        self.sorted: list = []

    def __len__(self) -> int:
        return len(self.fifo)

    def add(self, v: float) -> None:
        self.fifo.append(v)
        insort(self.sorted, v)
        if len(self.fifo) > self.size:
            del self.sorted[bisect_left(self.sorted, self.fifo.popleft())]

    def _upper_scale(self, floor: float) -> float:
        s, n = self.sorted, len(self.sorted)
        return max((s[int(0.99 * (n - 1))] - s[int(0.9 * (n - 1))]) / _LN10, floor)

    def _lower_scale(self, floor: float) -> float:
        s, n = self.sorted, len(self.sorted)
        return max((s[int(0.1 * (n - 1))] - s[int(0.01 * (n - 1))]) / _LN10, floor)

    def surprise_upper(self, v: float, floor: float) -> float:
        """``-log10 P(X >= v)``; past the maximum, an exponential tail."""
        s = self.sorted
        n = len(s)
        if v <= s[-1]:
            return math.log10((n + 1) / (n - bisect_left(s, v) + 1))
        return math.log10(n + 1) + (v - s[-1]) / self._upper_scale(floor) / _LN10

    def surprise_two_sided(self, v: float, floor: float) -> float:
        """``-log10`` of the two-sided tail probability of ``v`` (ties count)."""
        s = self.sorted
        n = len(s)
        if v > s[-1]:
            return math.log10((n + 1) / 2) + (v - s[-1]) / self._upper_scale(floor) / _LN10
        if v < s[0]:
            return math.log10((n + 1) / 2) + (s[0] - v) / self._lower_scale(floor) / _LN10
        k = min(bisect_right(s, v), n - bisect_left(s, v))
        return max(0.0, math.log10((n + 1) / (2 * k + 1)))


class UnivariateDetector:
    """Score a point of an irregular series, then learn it.

    Parameters
    ----------
    window
        Points of history behind each tail probability.
    warmup
        Points learned before anything but 0 is returned.
    period, bins, season_alpha
        Time-of-day profiles: one per entry of ``bins`` (an int or a sequence
        of ints), each with that many buckets over ``period`` seconds, each
        bucket an exponentially weighted mean (weight ``season_alpha`` per
        visit). The season surprise is the mean over the profiles that can
        predict the point.
    drift_span
        Span (points) of the exponentially weighted mean behind the drift
        surprise; a sequence gives one mean per span, surprises averaged.
    smax
        Surprise (``-log10 p``) that maps to score 1.
    rest, damp
        Alert de-duplication, see the module docstring (``rest=0`` turns it off).

    Examples
    --------
    >>> d = UnivariateDetector()
    >>> scores = [d.update(60.0 * t, 10.0 + (t % 3)) for t in range(3000)]
    >>> max(scores[500:]) < 0.5
    True
    >>> d.update(60.0 * 3000, 60.0) > 0.9
    True
    """

    def __init__(
        self,
        window: int = 2000,
        warmup: int = 50,
        period: float = 86400.0,
        bins: int | tuple = (48, 96),
        season_alpha: float = 0.1,
        drift_span: float | tuple = (32.0, 64.0),
        smax: float = 8.0,
        rest: int = 50,
        damp: float = 0.5,
    ) -> None:
        self.window = window
        self.warmup = warmup
        self.period = period
        self.bins = bins
        self.season_alpha = season_alpha
        self.drift_span = drift_span
        self.smax = smax
        self.rest = rest
        self.damp = damp
        self._bins = _scales(bins, int, "bins")
        self._spans = _scales(drift_span, float, "drift_span")
        self._n = 0
        self._values = _RankWindow(window)
        # per time-of-day scale: the profile's buckets and the rank window of its residuals
        self._season: list = [[None] * b for b in self._bins]
        self._residuals = [_RankWindow(window) for _ in self._bins]
        # per drift span: the current mean and the rank window of past means
        self._drift: list = [None] * len(self._spans)
        self._drifts = [_RankWindow(window) for _ in self._spans]
        self._recent: deque = deque()

    # ------------------------------------------------------------------ #
    def _season_slot(self, k: int, ts: float):
        """Profile ``k``: lower bucket index, interpolation weight, and its prediction."""
        bins, prof = self._bins[k], self._season[k]
        pos = (ts % self.period) / self.period * bins - 0.5
        i = math.floor(pos)
        f = pos - i
        a = prof[i % bins]
        b = prof[(i + 1) % bins]
        pred = None if a is None or b is None else a + f * (b - a)
        return i, f, pred

    def _learn_season(self, k: int, i: int, f: float, x: float) -> None:
        bins, prof = self._bins[k], self._season[k]
        for j, w in ((i % bins, 1.0 - f), ((i + 1) % bins, f)):
            cur = prof[j]
            prof[j] = x if cur is None else cur + self.season_alpha * w * (x - cur)

    def _dedup(self, s: float) -> float:
        if self.rest <= 0:
            return s
        recent = self._recent
        prev = max(recent) if recent else 0.0
        recent.append(s)
        if len(recent) > self.rest:
            recent.popleft()
        return s if s > prev else self.damp * s

    # ------------------------------------------------------------------ #
    def update(self, timestamp: float, value: float) -> float:
        """Score ``value`` at ``timestamp`` (epoch seconds) in [0, 1], then learn it.

        A non-finite value scores 0 and is not learned; a non-finite timestamp
        only skips the time-of-day profile.
        """
        try:
            x = float(value)
            ts = float(timestamp)
        except (TypeError, ValueError):
            return 0.0
        if not math.isfinite(x):
            return 0.0
        floor = 1e-9 * (1.0 + abs(x))
        slots = ()                      # per profile: (bucket, weight, |residual| or None)
        if math.isfinite(ts):
            slots = [self._season_slot(k, ts) for k in range(len(self._bins))]
        warm = self._n >= self.warmup
        drifts = None
        if warm:                        # the drift means start once the level is known
            drifts = [x if m is None else m + (x - m) / span
                      for m, span in zip(self._drift, self._spans)]

        score = 0.0
        if warm:
            s = self._values.surprise_two_sided(x, floor)
            total = count = 0
            for (_, _, pred), r in zip(slots, self._residuals):
                if pred is not None and len(r) >= self.warmup:
                    total += r.surprise_upper(abs(x - pred), floor)
                    count += 1
            if count:
                s = max(s, total / count)
            if len(self._drifts[0]) >= self.warmup:
                total = 0.0
                for d, r in zip(drifts, self._drifts):
                    total += r.surprise_two_sided(d, floor)
                s = max(s, total / len(drifts))
            s = self._dedup(min(s, self.smax))
            score = min(1.0, s / self.smax)

        self._values.add(x)
        if drifts is not None:
            for d, r in zip(drifts, self._drifts):
                r.add(d)
            self._drift = drifts
        for k, (i, f, pred) in enumerate(slots):
            if pred is not None:
                self._residuals[k].add(abs(x - pred))
            self._learn_season(k, i, f, x)
        self._n += 1
        return score

def _scales(value, kind, name: str) -> tuple:
    """One scale or several: ``48`` or ``(48, 96)`` -> a non-empty tuple of ``kind``."""
    scales = tuple(kind(v) for v in value) if isinstance(value, (tuple, list)) else (kind(value),)
    if not scales or any(v <= 0 for v in scales):
        msg = f"{name} must be a positive number or a non-empty sequence of them, got {value!r}"
        raise ValueError(msg)
    return scales
