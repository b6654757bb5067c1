"""What a new key borrows from its parents until it has its own history.

Keys report the noise level (robust scale, in log units) of each metric's
baseline to their parents: their service, their provider and the fleet. A new
key, a model just added to a service, starts with its own level (learned from
its first windows) but with the scale its parents typically show, so it can
be judged after ``borrowed_warmup`` windows instead of a full warm-up. The
level is never borrowed: a new model's latency need not be its siblings'.
"""

from __future__ import annotations

import threading
from typing import Dict, Iterable, Optional, Tuple

Parent = Tuple[str, ...]


class ParentPriors:
    """Exponentially weighted scales per (parent, metric), from several keys.

    Examples
    --------
    >>> p = ParentPriors(min_keys=2)
    >>> p.observe("a", [("service", "s")], "latency", 0.2)
    >>> p.scale([("service", "s")], "latency") is None   # one key is not a population
    True
    >>> p.observe("b", [("service", "s")], "latency", 0.4)
    >>> round(p.scale([("service", "s"), ("fleet",)], "latency"), 2)
    0.3
    """

    def __init__(self, alpha: float = 0.2, min_keys: int = 2, max_keys: int = 64) -> None:
        self.alpha = alpha
        self.min_keys = min_keys
        self.max_keys = max_keys
        self._lock = threading.Lock()
        # (parent, metric) -> [scale, {key: last scale}]
        self._scales: Dict[Tuple[Parent, str], Dict[str, float]] = {}

    def observe(self, key: str, parents: Iterable[Parent], metric: str, scale: float) -> None:
        with self._lock:
            for parent in parents:
                by_key = self._scales.setdefault((parent, metric), {})
                if key not in by_key and len(by_key) >= self.max_keys:
                    by_key.pop(next(iter(by_key)))
                old = by_key.get(key)
                by_key[key] = scale if old is None else old + self.alpha * (scale - old)

    def scale(self, parents: Iterable[Parent], metric: str) -> Optional[float]:
        """The most specific parent's typical scale (median over its keys), or None."""
        with self._lock:
            for parent in parents:
                by_key = self._scales.get((parent, metric))
                if by_key and len(by_key) >= self.min_keys:
                    vals = sorted(by_key.values())
                    mid = len(vals) // 2
                    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2.0
        return None

    def __len__(self) -> int:
        return len(self._scales)

    def __getstate__(self):
        with self._lock:
            return {"alpha": self.alpha, "min_keys": self.min_keys, "max_keys": self.max_keys,
                    "_scales": {k: dict(v) for k, v in self._scales.items()}}

    def __setstate__(self, s) -> None:
        lock = self.__dict__.get("_lock") or threading.Lock()
        with lock:
            self.__dict__.update(s)
            self._lock = lock
