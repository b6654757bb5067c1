"""Slow drift of a level: a two-sided CUSUM (Page-Hinkley style) on log values.

The reference is a slow, protected level: it learns only while no change is
accumulating, so a drift of +50% over an hour (which a fast baseline follows
and never flags) builds up here until it crosses ``h``. Deviations are
measured in units of the series' window-to-window noise (``scale``, given by
the caller's fast baseline), so one threshold serves every metric.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple


class DriftDetector:
    """CUSUM of standardised log deviations from a slow reference.

    Parameters
    ----------
    k
        Allowance per window, in noise units: smaller changes never accumulate.
    h
        Decision threshold, in noise units.
    alpha
        Learning rate of the reference while nothing accumulates.
    warmup
        Points before the reference is trusted.

    Examples
    --------
    >>> import math, random
    >>> rng = random.Random(1)
    >>> d = DriftDetector()
    >>> xs = [100 * math.exp(rng.gauss(0, 0.05)) for _ in range(200)]
    >>> xs += [100 * (1 + 0.5 * i / 60) * math.exp(rng.gauss(0, 0.05)) for i in range(60)]
    >>> hits = [i for i, x in enumerate(xs) if d.update(x, 0.05) is not None]
    >>> 200 < hits[0] < 240
    True
    >>> d.accept(xs[-1]); d.update(xs[-1], 0.05) is None
    True
    """

    def __init__(self, k: float = 0.75, h: float = 14.0, alpha: float = 0.01, warmup: int = 60,
                 offset: float = 1.0) -> None:
        self.k = k
        self.h = h
        self.alpha = alpha
        self.warmup = warmup
        self.offset = offset
        self._ref: Optional[float] = None
        self._n = 0
        self._up = 0.0
        self._down = 0.0
        self._up_len = 0
        self._down_len = 0
        self._up_sum = 0.0
        self._down_sum = 0.0

    @property
    def idle(self) -> bool:
        """Nothing is accumulating in either direction."""
        return self._up == 0.0 and self._down == 0.0

    @property
    def reference(self) -> Optional[float]:
        return None if self._ref is None else math.exp(self._ref) - self.offset

    def distance(self, x: float) -> Optional[float]:
        """How far ``x`` is from the reference, as a log ratio; None before the reference is trusted."""
        if self._ref is None or self._n <= self.warmup or x <= -self.offset:
            return None
        return abs(math.log(x + self.offset) - self._ref)

    def update(self, x: float, scale: float) -> Optional[Tuple[int, int, float, float]]:
        """Feed one window value; on alarm return ``(direction, windows since the change began,
        mean log change over them, the reference level before the change)``."""
        t = math.log(x + self.offset)
        if self._ref is None:
            self._ref = t
            self._n = 1
            return None
        self._n += 1
        if self._n <= self.warmup:
            self._ref += (t - self._ref) / self._n
            return None
        d = t - self._ref
        s = max(scale, 1e-6)
        u = d / s
        self._up = max(0.0, self._up + u - self.k)
        self._down = max(0.0, self._down - u - self.k)
        self._up_len = self._up_len + 1 if self._up > 0 else 0
        self._up_sum = self._up_sum + d if self._up > 0 else 0.0
        self._down_len = self._down_len + 1 if self._down > 0 else 0
        self._down_sum = self._down_sum + d if self._down > 0 else 0.0
        if self._up == 0.0 and self._down == 0.0:
            self._ref += self.alpha * d
        if self._up > self.h or self._down > self.h:
            ref = math.exp(self._ref) - self.offset
            if self._up > self.h:
                return (1, self._up_len, self._up_sum / max(1, self._up_len), ref)
            return (-1, self._down_len, self._down_sum / max(1, self._down_len), ref)
        return None

    def accept(self, x: float) -> None:
        """Take ``x`` as the new reference level and start accumulating afresh.

        An alarm stands (``update`` keeps returning it) until the caller accepts
        the change or rebases: it may want the change to grow first."""
        self.rebase(math.log(x + self.offset))

    def rebase(self, t: Optional[float] = None) -> None:
        """Forget accumulated change (after an alarm, or when a sudden change was alerted elsewhere)."""
        if t is not None:
            self._ref = t
        self._up = self._down = 0.0
        self._up_len = self._down_len = 0
        self._up_sum = self._down_sum = 0.0

    def __getstate__(self):
        return self.__dict__.copy()

    def __setstate__(self, s) -> None:
        self.__dict__.update(s)
