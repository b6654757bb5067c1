"""Coordinated attacks from one source: its security events in a sliding event-time window.

One :class:`SourceAttacks` lives per security source. It is fed the
source's events batch by batch (anything with ``ts``, ``kind``, ``service``
and ``model`` attributes: a :class:`sentinel.events.SecurityEvent`) and
counts them in a sliding window of ``window`` seconds of event time: more
than ``threshold`` events within one window is an attack.

The episode is :class:`detectors.episode.Episode`'s, with a persistence of
one and a quiet period of one: the first window over the threshold opens it
(``firing``; a window that starts before the open episode's end belongs to
it and moves that end to one window after its event), and the first event
after the source has been quiet for a whole window closes it
(``resolved``, at the episode's end). An attack is not escalated: one page
per attack, with the severity it fired with (``critical`` above three times
the threshold, else ``high``).

The tuning values are constructor arguments and public attributes; the
learned state (the event times of the last two windows, the kinds and
services seen, the open episode) is in the underscored ones. :meth:`clone`
is a new detector with the same tuning and nothing learned.

Examples
--------
>>> from collections import namedtuple
>>> Ev = namedtuple("Ev", "ts kind service model")
>>> d = SourceAttacks(window=300.0, threshold=10)
>>> [(f.status, f.count) for f in d.update([Ev(1000.0 + 20 * i, "jailbreak", "chat", "m") for i in range(11)])]
[('firing', 11)]
>>> [(f.status, f.end) for f in d.update([Ev(2000.0, "jailbreak", "chat", "m")])]
[('resolved', 1500.0)]
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Dict, Iterable, List, Optional, Tuple

from detectors.episode import Episode


class AttackFinding:
    """An episode transition of one source: ``firing`` or ``resolved``.

    ``first`` is the time of the first event of the window that fired (the
    episode's start), ``count`` the events in it, ``fired`` the time of the
    event that made it fire, ``end`` the episode's end as known then (one
    window after its last window over the threshold; for a resolve, the time
    it resolved at). ``kinds`` (the five most frequent) and ``service`` and
    ``model`` (the most frequent pair) are of the source's events so far.
    """

    __slots__ = ("status", "count", "threshold", "window", "first", "fired", "end", "severity", "score", "kinds",
                 "service", "model")

    def __init__(self, status: str, count: int, threshold: int, window: float, first: float, fired: float,
                 end: float, severity: str, score: float, kinds: Dict[str, int], service: Optional[str],
                 model: Optional[str]) -> None:
        self.status = status
        self.count = count
        self.threshold = threshold
        self.window = window
        self.first = first
        self.fired = fired
        self.end = end
        self.severity = severity
        self.score = score
        self.kinds = kinds
        self.service = service
        self.model = model

    def __repr__(self) -> str:
        return f"AttackFinding({self.status}, count={self.count}, first={self.first:.0f}, end={self.end:.0f})"


class SourceAttacks:
    """Per-source coordinated-attack detector (see the module docstring)."""

    def __init__(self, window: float = 300.0, threshold: int = 10) -> None:
        self.window = window
        self.threshold = threshold
        self._times: List[float] = []  # sorted event times, two windows behind the newest
        self._kinds: Counter = Counter()
        self._services: Counter = Counter()  # (service, model) -> events
        self._until = float("-inf")  # the open (or last) episode's end
        self._episode = Episode()

    def clone(self) -> "SourceAttacks":
        """A new detector with the same tuning values and nothing learned."""
        return SourceAttacks(self.window, self.threshold)

    @property
    def active(self) -> bool:
        """Whether an episode is open."""
        return self._episode.active

    def update(self, events: Iterable) -> List[AttackFinding]:
        """Count one batch of the source's events (in arrival order); the episode transitions they make."""
        out: List[AttackFinding] = []
        win = self.window
        threshold = self.threshold
        times = self._times
        kinds = self._kinds
        services = self._services
        ep = self._episode
        for ev in events:
            ts = ev.ts
            if ep.active and ts > self._until:
                out.append(self._resolve(ts))
            bisect.insort(times, ts)
            kinds[ev.kind] += 1
            if ev.service:
                services[(ev.service, ev.model)] += 1
            lo = bisect.bisect_left(times, ts - win)
            hi = bisect.bisect_right(times, ts + win)
            # The densest window within one window of this event, in either direction.
            first = lo
            count = 0
            for i in range(lo, hi):
                j = bisect.bisect_right(times, times[i] + win, i, hi)
                if j - i > count:
                    count, first = j - i, i
            if count <= threshold:
                continue
            start = times[first]
            if start > self._until:
                if ep.active:
                    # A window wholly after the open episode's end, reached by an event from before
                    # that end: a new episode takes the open one's place (no resolve is sent for it).
                    ep.reset()
                self._until = times[first + count - 1] + win
                sev = "critical" if count > 3 * threshold else "high"
                score = min(1.0, 0.9 + 0.1 * min(1.0, count / (4.0 * threshold)))
                ep.step(start, (float(count), float(threshold), score, 0.0, sev), 1, 1, True)
                out.append(self._finding("firing", count, start, ts, sev, score))
            else:
                self._until = max(self._until, ts + win)
        # Two windows of history behind the newest event are kept.
        cut = bisect.bisect_left(times, times[-1] - 2 * win) if times else 0
        if cut:
            del times[:cut]
        return out

    def close(self) -> Optional[AttackFinding]:
        """The source's stream ends here (end of input, or the source is forgotten): the open episode, if any,
        resolves at its end."""
        if not self._episode.active:
            return None
        return self._resolve(self._until)

    def _resolve(self, ts: float) -> AttackFinding:
        ep = self._episode
        first, obs, severity = ep.first_start, ep.last_obs, ep.severity
        ep.step(ts, None, 1, 1, True)  # one quiet step ends it
        f = self._finding("resolved", int(obs[0]) if obs is not None else 0, first, ts, severity,
                          obs[2] if obs is not None else 1.0)
        f.end = self._until
        return f

    def _finding(self, status: str, count: int, first: float, fired: float, severity: str,
                 score: float) -> AttackFinding:
        service, model = self._services.most_common(1)[0][0] if self._services else (None, None)
        return AttackFinding(status, count, self.threshold, self.window, first, fired, self._until, severity,
                             score, dict(self._kinds.most_common(5)), service, model)

    def restore(self, times: List[float], kinds: Counter, services: Counter, until: float,
                open_episode: Optional[Tuple[float, int, str, float]]) -> None:
        """Take over learned state kept elsewhere (a snapshot of an earlier version): ``open_episode`` is
        ``(first, count, severity, score)`` of the firing of the episode still open, None when none is."""
        self._times = sorted(times)
        self._kinds = Counter(kinds)
        self._services = Counter(services)
        self._until = until
        ep = self._episode = Episode()
        if open_episode is not None:
            first, count, severity, score = open_episode
            ep.step(first, (float(count), float(self.threshold), score, 0.0, severity), 1, 1, True)
