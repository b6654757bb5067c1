"""Time-of-day profile of a log-scale series (additive in log space).

Learns the typical offset of each hour of the (UTC) day from the series'
level, once a full day has been seen, so a daily traffic swing or a lunch
peak is expected rather than alerted, and a drop that is unusual for that
hour still stands out. Offsets are interpolated between hour centres.
"""

from __future__ import annotations

import math
from typing import List


class SeasonalProfile:
    """Hour-of-day offsets, learned from residuals ``log(x) - level``.

    Examples
    --------
    >>> p = SeasonalProfile()
    >>> for minute in range(3 * 1440):
    ...     ts = minute * 60.0
    ...     p.learn(ts, 0.4 * math.sin(2 * math.pi * ts / 86400))
    >>> round(p.offset(6 * 3600.0), 1), round(p.offset(18 * 3600.0), 1)
    (0.4, -0.4)
    """

    def __init__(self, bins: int = 24, alpha: float = 0.05, min_days: float = 1.0) -> None:
        self.bins = bins
        self.alpha = alpha
        self.min_days = min_days
        self._off: List[float] = [0.0] * bins
        self._seen: List[int] = [0] * bins
        self._first_ts = None
        self._last_ts = None

    @property
    def ready(self) -> bool:
        if self._first_ts is None:
            return False
        return (self._last_ts - self._first_ts) >= self.min_days * 86400.0 and min(self._seen) > 0

    def _pos(self, ts: float) -> float:
        return ((ts % 86400.0) / 86400.0) * self.bins - 0.5

    def offset(self, ts: float) -> float:
        """Expected log offset at ``ts`` (0 until a day has been learned)."""
        if not self.ready:
            return 0.0
        pos = self._pos(ts)
        i = math.floor(pos)
        w = pos - i
        return (1 - w) * self._off[i % self.bins] + w * self._off[(i + 1) % self.bins]

    def learn(self, ts: float, residual: float) -> None:
        """Learn ``residual`` (log value minus deseasonalised level) at ``ts``."""
        if self._first_ts is None:
            self._first_ts = ts
        self._last_ts = ts
        pos = self._pos(ts)
        i = math.floor(pos)
        w = pos - i
        for j, wt in ((i % self.bins, 1 - w), ((i + 1) % self.bins, w)):
            if wt <= 0:
                continue
            a = self.alpha * wt
            if self._seen[j] == 0:
                self._off[j] = residual
            else:
                self._off[j] += a * (residual - self._off[j])
            self._seen[j] += 1
        # Keep the offsets centred so the level carries the mean.
        mean = sum(self._off) / self.bins
        if abs(mean) > 1e-9:
            self._off = [o - mean for o in self._off]

    def __getstate__(self):
        return self.__dict__.copy()

    def __setstate__(self, s) -> None:
        self.__dict__.update(s)
