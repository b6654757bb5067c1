"""The parameters of one simulated run."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from typing import Any, Dict, Sequence, Union

from simulator.io import to_epoch

DEFAULT_START = float(calendar.timegm((2026, 1, 5, 0, 0, 0)))  # 2026-01-05T00:00:00Z

Incidents = Union[str, Sequence[Dict[str, Any]]]
Traps = Union[str, None, Sequence[Dict[str, Any]]]


@dataclass(frozen=True, eq=False)
class SimConfig:
    """What a run is made of; see :class:`simulator.Simulator` for each field.

    ``start`` may be given as an RFC 3339 string; it is kept as epoch seconds.

    >>> SimConfig(seed=3, start="2026-01-05T06:00:00Z", hours=2).end - DEFAULT_START
    28800.0
    >>> SimConfig(hours=0)
    Traceback (most recent call last):
    ...
    ValueError: hours must be > 0, got 0
    """

    seed: int = 7
    start: Union[float, str] = DEFAULT_START
    hours: float = 6.0
    rate: float = 18.5
    incidents: Incidents = "auto"
    traps: Traps = "auto"
    magnitude_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.hours <= 0:
            msg = f"hours must be > 0, got {self.hours!r}"
            raise ValueError(msg)
        if self.rate < 0:
            msg = f"rate must be >= 0, got {self.rate!r}"
            raise ValueError(msg)
        if not self.magnitude_scale > 0:
            msg = f"magnitude_scale must be > 0, got {self.magnitude_scale!r}"
            raise ValueError(msg)
        if isinstance(self.incidents, str) and self.incidents != "auto":
            msg = f"incidents must be 'auto' or a list of dicts, got {self.incidents!r}"
            raise ValueError(msg)
        if isinstance(self.traps, str) and self.traps != "auto":
            msg = f"traps must be 'auto', None or a list of dicts, got {self.traps!r}"
            raise ValueError(msg)
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "start", to_epoch(self.start))
        object.__setattr__(self, "hours", float(self.hours))
        object.__setattr__(self, "rate", float(self.rate))
        object.__setattr__(self, "magnitude_scale", float(self.magnitude_scale))

    @property
    def end(self) -> float:
        """Event time of the run's end, epoch seconds."""
        return self.start + self.hours * 3600.0

    @property
    def auto_incidents(self) -> bool:
        return isinstance(self.incidents, str)
