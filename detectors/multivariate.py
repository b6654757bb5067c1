"""Combinations no single metric flags: Half-Space Trees on a key's standardised window features.

Each window becomes a vector of the per-metric robust z-scores (squashed to
[0, 1], as Half-Space Trees want), scored by River's ``HalfSpaceTrees`` and
then learned, unless it is anomalous (protected learning). The raw mass
score is calibrated by its rank among the key's recent scores, so the
score means "rarer than this share of recent windows".
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import Dict


def squash(z: float) -> float:
    """A robust z onto [0, 1] (0.5 at 0, about 0.98 at +6)."""
    return 0.5 + 0.5 * math.tanh(z / 4.0)


class MultivariateDetector:
    """Rank-calibrated Half-Space Trees over feature dicts.

    Parameters
    ----------
    n_trees, height, window_size, seed
        As in ``river.anomaly.HalfSpaceTrees``.
    history
        How many recent scores calibrate a new one.
    warmup
        Vectors learned before anything scores above 0.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(3)
    >>> d = MultivariateDetector(warmup=100)
    >>> for _ in range(400):
    ...     a = rng.gauss(0, 1)
    ...     _ = d.score_learn({"a": squash(a), "b": squash(a + rng.gauss(0, 0.2))})
    >>> d.score_learn({"a": squash(3.0), "b": squash(-3.0)}) > 0.99   # a and b disagree
    True
    """

    def __init__(self, n_trees: int = 25, height: int = 8, window_size: int = 120, seed: int = 42,
                 history: int = 1000, warmup: int = 240) -> None:
        from river.anomaly import HalfSpaceTrees

        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.history = history
        self.warmup = warmup
        self._hst = HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed)
        self._recent: deque = deque()
        self._sorted: list = []
        self._n = 0

    def score_learn(self, x: Dict[str, float]) -> float:
        raw = self._hst.score_one(x)
        if self._n < self.warmup or not self._sorted:
            score = 0.0
        else:
            score = bisect.bisect_left(self._sorted, raw) / len(self._sorted)
        if score < 0.99:
            self._hst.learn_one(x)
        self._recent.append(raw)
        bisect.insort(self._sorted, raw)
        if len(self._recent) > self.history:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._n += 1
        return score
