"""Robust exponentially weighted baseline for one series.

River protocol: ``score_one(x)`` then ``learn_one(x)``. The location is an
exponentially weighted mean, the scale an exponentially weighted mean absolute
deviation; both learn from a winsorised value, and points that score as
anomalous are learned with a tenth of the weight, so an incident does not
become the new normal within a few windows while a lasting level shift still
does (after it has been scored as anomalous for a while).
"""

from __future__ import annotations

import math
from typing import Optional


def z_to_score(z: float, z0: float = 3.5, k: float = 1.5) -> float:
    """Map a robust z (>= 0) to [0, 1]; 0.5 at ``z0``, 0.9 at about ``z0 + 1.5``."""
    if z <= 0.0:
        return 0.0
    e = -(z - z0) * k
    if e > 700.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(e))


def score_to_z(score: float, z0: float = 3.5, k: float = 1.5) -> float:
    """The z that :func:`z_to_score` maps to ``score`` (0 < score < 1)."""
    return z0 + math.log(score / (1.0 - score)) / k


class RobustBaseline:
    """Robust running location and scale of a (possibly log-transformed) value.

    Parameters
    ----------
    alpha
        Weight of a new normal point (about ``2 / alpha`` points of memory).
    log
        Work on ``log(x + offset)``: right for heavy-tailed latency, tokens and cost.
    offset
        Added before the log; small against typical values (1 for milliseconds
        and tokens, 1e-6 for dollars per request).
    min_scale
        Floor of the scale, in transformed units: a perfectly flat series does
        not turn a tiny wiggle into an incident.
    clip
        Robust z beyond which a point is winsorised before it is learned.
    protect_z
        Robust z beyond which a point counts as anomalous and is learned with
        ``alpha / 10``.
    dev_guard
        Robust z beyond which a point moves the scale at ``alpha / 4``.
    warmup
        Points learned before ``score_one`` returns anything but 0.

    Examples
    --------
    >>> b = RobustBaseline(log=True)
    >>> for v in [100, 110, 95, 105, 98, 102, 101, 99, 104, 97] * 3:
    ...     b.learn_one(v)
    >>> b.z(100) < 1.0, b.z(400) > 5.0
    (True, True)
    """

    dev_guard = 2.0  # for snapshots from before it was a parameter

    def __init__(
        self,
        alpha: float = 0.05,
        log: bool = True,
        min_scale: float = 0.02,
        clip: float = 3.0,
        protect_z: float = 4.0,
        warmup: int = 10,
        offset: float = 1.0,
        dev_guard: float = 2.0,
    ) -> None:
        self.alpha = alpha
        self.log = log
        self.min_scale = min_scale
        self.clip = clip
        self.protect_z = protect_z
        self.dev_guard = dev_guard
        self.warmup = warmup
        self.offset = offset
        self._n = 0
        self._loc = 0.0
        self._dev = 0.0
        self._prior_scale: Optional[float] = None

    def _t(self, x: float) -> float:
        return math.log(x + self.offset) if self.log else x

    @property
    def n(self) -> int:
        return self._n

    @property
    def scale(self) -> float:
        return max(self._dev * 1.2533, self.min_scale)

    def expected(self) -> Optional[float]:
        if self._n == 0:
            return None
        return math.exp(self._loc) - self.offset if self.log else self._loc

    def z(self, x: float) -> float:
        """Signed robust z of ``x`` against the baseline (0 during warm-up, unless a
        scale was borrowed: then from the fifth point, against the larger of the two scales)."""
        if self._n < self.warmup:
            if self._prior_scale is None or self._n < 5:
                return 0.0
            return (self._t(x) - self._loc) / max(self.scale, self._prior_scale)
        return (self._t(x) - self._loc) / self.scale

    def borrow_scale(self, scale: Optional[float]) -> None:
        """Use ``scale`` (a parent's typical one) until this baseline's warm-up is over."""
        self._prior_scale = scale

    def score_one(self, x: float) -> float:
        return z_to_score(abs(self.z(x)))

    def learn_one(self, x: float) -> None:
        t = self._t(x)
        n = self._n
        if n == 0:
            self._loc = t
            self._dev = 0.0
            self._n = 1
            return
        if n < self.warmup:
            # Plain running estimates until the baseline has seen enough.
            a = 1.0 / (n + 1)
            d = t - self._loc
            self._loc += a * d
            self._dev += a * (abs(d) - self._dev)
            self._n = n + 1
            return
        s = self.scale
        d = t - self._loc
        z = d / s
        a = self.alpha if abs(z) < self.protect_z else self.alpha * 0.1
        if z > self.clip:
            d = self.clip * s
        elif z < -self.clip:
            d = -self.clip * s
        self._loc += a * d
        # A window far off (|z| > dev_guard) moves the scale at a quarter of the rate: a
        # shift held just under the alert level would otherwise widen the scale by about
        # 14% a window (each one learned at the clip) and hide itself within minutes.
        b = a if -self.dev_guard <= z <= self.dev_guard else 0.25 * a
        self._dev += b * (abs(d) - self._dev)
        self._n = n + 1

    def relearn(self, x: float) -> None:
        """Accept ``x`` as the new level (after a lasting shift was alerted)."""
        self._loc = self._t(x)
