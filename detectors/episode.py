"""Persistence and lifecycle of one anomaly on one key and metric.

A window is anomalous or not; ``persistence`` anomalous windows in a row
open an episode (``firing``), a bigger deviation while it lasts raises it
(``escalated``, at most once per severity step), and ``quiet`` normal windows
in a row close it (``resolved``). Everything in between folds into the open
episode, so one incident is one page.
"""

from __future__ import annotations

from typing import Optional, Tuple

from sentinel.core.types import SEVERITY_RANK as RANK

# (observed, expected, score, z, severity)
Obs = Tuple[float, float, float, float, str]


class Episode:
    __slots__ = ("run", "first_start", "first_obs", "active", "quiet", "peak", "severity", "windows",
                 "last_obs")

    def __init__(self) -> None:
        self.run = 0
        self.first_start = 0.0
        self.first_obs: Optional[Obs] = None
        self.active = False
        self.quiet = 0
        self.peak = 0.0
        self.severity = "info"
        self.windows = 0
        self.last_obs: Optional[Obs] = None

    def step(self, start: float, obs: Optional[Obs], persistence: int, quiet_windows: int,
             may_fire: bool) -> Optional[str]:
        """Feed one window (``obs`` None when normal); return a transition or None."""
        if obs is not None:
            if self.run == 0:
                self.first_start = start
                self.first_obs = obs
            self.run += 1
            self.quiet = 0
            self.peak = max(self.peak, obs[2])
            self.last_obs = obs
            if self.active:
                self.windows += 1
                if RANK[obs[4]] > RANK[self.severity]:
                    self.severity = obs[4]
                    return "escalated"
                return None
            if self.run >= persistence and may_fire:
                self.active = True
                self.windows = self.run
                self.severity = obs[4]
                return "firing"
            return None
        if self.active:
            self.quiet += 1
            self.windows += 1
            if self.quiet >= quiet_windows:
                self.reset()
                return "resolved"
            return None
        self.reset()
        return None

    def reset(self) -> None:
        self.run = 0
        self.active = False
        self.quiet = 0
        self.peak = 0.0
        self.severity = "info"
        self.windows = 0

    def __getstate__(self):
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, s) -> None:
        for k, v in zip(self.__slots__, s):
            setattr(self, k, v)
