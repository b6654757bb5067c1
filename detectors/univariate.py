"""The default per-metric streaming detector (SPEC section 4)."""

from __future__ import annotations

import math

from detectors.robust import RobustBaseline, z_to_score


class UnivariateDetector:
    """Score a point of an irregular series, then learn it.

    Parameters
    ----------
    alpha, warmup, protect_z, clip
        As in :class:`detectors.robust.RobustBaseline`.

    Examples
    --------
    >>> d = UnivariateDetector()
    >>> scores = [d.update(float(t), 10.0 + (t % 3)) for t in range(200)]
    >>> max(scores[50:]) < 0.5
    True
    >>> d.update(200.0, 60.0) > 0.9
    True
    """

    def __init__(self, alpha: float = 0.02, warmup: int = 30, protect_z: float = 4.0, clip: float = 3.0) -> None:
        self.alpha = alpha
        self.warmup = warmup
        self.protect_z = protect_z
        self.clip = clip
        self._base = RobustBaseline(alpha=alpha, log=False, min_scale=1e-9, clip=clip,
                                    protect_z=protect_z, warmup=warmup)
        self._last_ts = None

    def update(self, timestamp: float, value: float) -> float:
        if value != value or value in (math.inf, -math.inf):
            return 0.0
        z = self._base.z(value)
        score = z_to_score(abs(z))
        self._base.learn_one(value)
        self._last_ts = timestamp
        return score
