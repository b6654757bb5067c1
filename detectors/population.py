"""A decaying log-scale histogram: quantiles of a population's values.

Used for the population of actors: how many tokens the heavy users (say the
99th percentile of busy actor-windows) send, so that an actor's burst is
judged against heavy users, not against the median user.
"""

from __future__ import annotations

import math
from typing import List, Optional


class DecayingQuantiles:
    """Approximate quantiles of positive values, recent values weighing more.

    Values fall in bins of ``1/per_octave`` octaves (about 9% wide with 8);
    every ``decay_every`` values all counts are multiplied by ``decay``.

    Examples
    --------
    >>> q = DecayingQuantiles()
    >>> for i in range(1, 10001):
    ...     q.update(float(i))
    >>> 9000 < q.quantile(0.95) < 10500
    True
    """

    def __init__(self, per_octave: int = 8, octaves: int = 48, decay: float = 0.5, decay_every: int = 20000) -> None:
        self.per_octave = per_octave
        self.octaves = octaves
        self.decay = decay
        self.decay_every = decay_every
        self._counts: List[float] = [0.0] * (per_octave * octaves)
        self._total = 0.0
        self._n = 0

    @property
    def n(self) -> int:
        return self._n

    def update(self, x: float) -> None:
        self.update_many((x,))

    def update_many(self, xs) -> None:
        """:meth:`update` of each value of ``xs`` in turn (the counts decay at the same values)."""
        counts = self._counts
        last = len(counts) - 1
        per_octave = self.per_octave
        every = self.decay_every
        total = self._total
        n = self._n
        log2 = math.log2
        for x in xs:
            if not x > 0:
                continue
            i = int(log2(x) * per_octave)
            counts[0 if i < 0 else i if i < last else last] += 1.0
            total += 1.0
            n += 1
            if n % every == 0:
                counts = [c * self.decay for c in counts]
                total *= self.decay
        self._counts = counts
        self._total = total
        self._n = n

    def quantile(self, q: float) -> Optional[float]:
        if self._total <= 0:
            return None
        target = q * self._total
        acc = 0.0
        for i, c in enumerate(self._counts):
            acc += c
            if acc >= target:
                return 2.0 ** ((i + 1) / self.per_octave)
        return 2.0 ** (len(self._counts) / self.per_octave)

    def __getstate__(self):
        return {"per_octave": self.per_octave, "octaves": self.octaves, "decay": self.decay,
                "decay_every": self.decay_every, "_counts": list(self._counts), "_total": self._total, "_n": self._n}

    def __setstate__(self, s) -> None:
        self.__dict__.update(s)
