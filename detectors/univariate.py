"""The default per-metric streaming detector (SPEC section 4).

Each point gets a *surprise* ``-log10 p`` from three calibrated, distribution-free
tail probabilities, each the empirical rank of a statistic among its own last
``window`` values (sorted with ``bisect``), with an exponential tail past the
observed extremes (scale from the 90th-99th percentile spread):

* **level**: the value itself, two-sided (spikes and dips against recent history);
* **season**: the absolute residual against a time-of-day profile learned online
  (``bins`` buckets over ``period`` seconds, linear interpolation between bucket
  centres, so irregular timestamps are fine); a series without a daily pattern
  just has wide residuals, and the rank calibrates that away;
* **drift**: an exponentially weighted mean over ``drift_span`` points, two-sided
  (short-term vs long-term distribution change: slow shifts, bursts of spikes).

The surprise is the maximum of the three, and ``score = min(1, surprise / smax)``,
so a threshold means the same tail probability on every series (0.5 is
``p = 1e-4`` with the defaults). Alert de-duplication: a point whose surprise is
no higher than the highest of the previous ``rest`` points is scored
``damp`` times that (an incident is loud at its onset and when it worsens, not on
every point of it). Rank windows make level shifts the new normal as they fill:
the surprise of a lasting shift falls roughly like ``log10(window / k)`` after
``k`` points.

Pure Python, deterministic, picklable, no clock reads; ``update`` is O(window)
in the worst case (list insert/delete), about 4 microseconds a point in practice.
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
        Time-of-day profile: ``bins`` buckets over ``period`` seconds, each an
        exponentially weighted mean (weight ``season_alpha`` per visit).
    drift_span
        Span (points) of the exponentially weighted mean behind the drift surprise.
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
        bins: int = 48,
        season_alpha: float = 0.1,
        drift_span: float = 64.0,
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
        self._n = 0
        self._values = _RankWindow(window)
        self._residuals = _RankWindow(window)
        self._drifts = _RankWindow(window)
        self._season: list = [None] * bins
        self._drift = None
        self._recent: deque = deque()

    # ------------------------------------------------------------------ #
    def _season_slot(self, ts: float):
        """Lower bucket index, interpolation weight, and the profile's prediction."""
        pos = (ts % self.period) / self.period * self.bins - 0.5
        i = math.floor(pos)
        f = pos - i
        a = self._season[i % self.bins]
        b = self._season[(i + 1) % self.bins]
        pred = None if a is None or b is None else a + f * (b - a)
        return i, f, pred

    def _learn_season(self, i: int, f: float, x: float) -> None:
        for j, w in ((i % self.bins, 1.0 - f), ((i + 1) % self.bins, f)):
            cur = self._season[j]
            self._season[j] = x if cur is None else cur + self.season_alpha * w * (x - cur)

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
        i = f = pred = None
        if math.isfinite(ts):
            i, f, pred = self._season_slot(ts)
        resid = abs(x - pred) if pred is not None else None
        drift = None
        if self._n >= self.warmup:      # the drift mean starts once the level is known
            drift = x if self._drift is None else self._drift + (x - self._drift) / self.drift_span

        score = 0.0
        if self._n >= self.warmup:
            s = self._values.surprise_two_sided(x, floor)
            if resid is not None and len(self._residuals) >= self.warmup:
                s = max(s, self._residuals.surprise_upper(resid, floor))
            if len(self._drifts) >= self.warmup:
                s = max(s, self._drifts.surprise_two_sided(drift, floor))
            s = self._dedup(min(s, self.smax))
            score = min(1.0, s / self.smax)

        self._values.add(x)
        if drift is not None:
            self._drifts.add(drift)
            self._drift = drift
        if resid is not None:
            self._residuals.add(resid)
        if i is not None:
            self._learn_season(i, f, x)
        self._n += 1
        return score
