"""Token abuse within one service: its actors judged against its own heavy users.

One :class:`ServiceActors` lives per service. It is fed each closed event-time
window as ``{actor: [tokens, requests, model, model_weight]}`` and judges every
actor that was busy in it on its tokens over the last ``horizon`` windows
(abuse is a sustained rise, not one request). An actor's horizon is abusive
when all of these hold:

* at least ``min_tokens`` tokens and ``min_requests`` requests (two requests
  are not a pattern), no window holding more than ``max_share`` of them (one
  huge request is not abuse);
* at least ``heavy_ratio`` times the service's heavy users: the
  ``heavy_quantile`` of the busy actor-horizons of *this* service, so a
  document pipeline's normal users are judged on a document pipeline's scale,
  not a chat service's;
* at least ``ratio`` times the actor's own habit: what it usually sends in
  a horizon *when it is busy* (a user who works in sessions is judged
  against its sessions, not against a day's average that the idle hours
  dilute), so the service's biggest regular user is judged against itself.
  An actor with fewer than about three busy horizons behind it has no habit
  yet and must be ``ratio * heavy_ratio`` times the heavy users' level.

``persistence`` abusive windows in a row open an episode; ``quiet_windows``
normal busy windows of that actor (or a horizon without it) close it.
Nobody is judged during the service's first ``history_windows`` windows, or
while it has seen fewer than ``min_population`` busy actor-horizons.

Memory is bounded whatever the number of distinct actors: habits live in a
Count-Min sketch (``width x depth`` cells, decayed lazily), the population
in a fixed log-scale histogram, and per-actor detail only for the actors
busy within the horizon and the few under suspicion.

Examples
--------
>>> s = ServiceActors(min_population=10, history_windows=5)
>>> out = []
>>> for w in range(60):
...     actors = {f"user:{i}": [1000 + 10 * i, 2, "m", 1] for i in range(20)}
...     if w >= 40:
...         actors["user:3"] = [60000, 12, "m", 1]   # user 3 goes to ~60x its habit
...     out += s.close_window(60.0 * w, actors)
>>> [(f.status, f.actor) for f in out]
[('firing', 'user:3')]
"""

from __future__ import annotations

import math
import zlib
from collections import deque
from typing import Deque, Dict, List, Optional, Tuple

from detectors.population import DecayingQuantiles

# [tokens, requests, model, model_weight]: the window's use by one actor. The
# model is a one-counter majority vote of where its tokens went.
ActorWindow = list


class HabitSketch:
    """Count-Min sketch of each actor's usual tokens per horizon when it is busy.

    Each of ``depth`` rows hashes an actor to one of ``width`` cells holding a
    decayed sum of the actor's busy horizons' tokens and a decayed count of
    them; ``habit(actor)`` is ``(sum / count, count)`` from the actor's least
    shared cell (collisions can only make an actor look heavier and older,
    never lighter). ``advance(n)`` ages everything by ``n`` windows at rate
    ``alpha`` (one multiplication of a global scale, not of the cells).
    Memory: ``2 * width * depth`` floats, whatever the number of actors.
    """

    __slots__ = ("width", "depth", "alpha", "_sums", "_counts", "_scale")

    def __init__(self, width: int = 4096, depth: int = 3, alpha: float = 1.0 / 360.0) -> None:
        self.width = width
        self.depth = depth
        self.alpha = alpha
        self._sums = [[0.0] * width for _ in range(depth)]
        self._counts = [[0.0] * width for _ in range(depth)]
        self._scale = 1.0  # stored cells are true values times this

    def _cells(self, actor: str) -> List[int]:
        b = actor.encode()
        h = zlib.crc32(b)
        h2 = zlib.adler32(b) | 1
        w = self.width
        return [(h + i * h2) % w for i in range(self.depth)]

    def advance(self, windows: int) -> None:
        if windows <= 0:
            return
        log_scale = math.log(self._scale) - windows * math.log1p(-self.alpha)
        if log_scale < 230.0:
            self._scale = math.exp(log_scale)
        else:  # renormalise before the floats overflow (what decayed below 1e-100 becomes 0)
            inv = math.exp(-log_scale)
            self._sums = [[c * inv for c in row] for row in self._sums]
            self._counts = [[c * inv for c in row] for row in self._counts]
            self._scale = 1.0

    def add(self, actor: str, tokens: float) -> None:
        sc = self._scale
        for r, i in enumerate(self._cells(actor)):
            self._sums[r][i] += tokens * sc
            self._counts[r][i] += sc

    def habit(self, actor: str) -> Tuple[float, float]:
        """(usual tokens per busy horizon, decayed number of busy horizons behind it)."""
        best_n, best_s = math.inf, 0.0
        for r, i in enumerate(self._cells(actor)):
            n = self._counts[r][i]
            if n < best_n:
                best_n, best_s = n, self._sums[r][i]
        if best_n <= 0:
            return 0.0, 0.0
        return best_s / best_n, best_n / self._scale

    def __getstate__(self):
        return (self.width, self.depth, self.alpha, self._sums, self._counts, self._scale)

    def __setstate__(self, s) -> None:
        self.width, self.depth, self.alpha, self._sums, self._counts, self._scale = s


class ActorFinding:
    """An episode transition of one actor: ``firing`` or ``resolved``."""

    __slots__ = ("status", "actor", "model", "tokens", "requests", "expected", "heavy", "habit",
                 "run_start", "window_end", "windows", "busy_windows")

    def __init__(self, status: str, actor: str, model: str, tokens: int, requests: int, expected: float,
                 heavy: float, habit: float, run_start: float, window_end: float, windows: int,
                 busy_windows: int) -> None:
        self.status = status
        self.actor = actor
        self.model = model
        self.tokens = tokens
        self.requests = requests
        self.expected = expected
        self.heavy = heavy
        self.habit = habit
        self.run_start = run_start
        self.window_end = window_end
        self.windows = windows
        self.busy_windows = busy_windows

    def __repr__(self) -> str:
        return f"ActorFinding({self.status} {self.actor}, tokens={self.tokens}, expected={self.expected:.0f})"


class _Suspect:
    __slots__ = ("run", "run_start", "active", "quiet", "last", "firing")

    def __init__(self) -> None:
        self.run = 0
        self.run_start = 0.0
        self.active = False
        self.quiet = 0
        self.last = 0.0
        self.firing: Optional[ActorFinding] = None

    def __getstate__(self):
        return (self.run, self.run_start, self.active, self.quiet, self.last, self.firing)

    def __setstate__(self, s) -> None:
        self.run, self.run_start, self.active, self.quiet, self.last, self.firing = s


MAX_SUSPECTS = 256


class ServiceActors:
    """Per-service token-abuse detector (see the module docstring)."""

    def __init__(self, window: float = 60.0, horizon: float = 600.0, min_tokens: int = 20000,
                 min_requests: int = 5, ratio: float = 3.0, heavy_quantile: float = 0.99,
                 heavy_ratio: float = 2.0, max_share: float = 0.6, persistence: int = 2,
                 quiet_windows: int = 5, history_windows: int = 60, min_population: int = 1000) -> None:
        self.window = window
        self.horizon = horizon
        self.min_tokens = min_tokens
        self.min_requests = min_requests
        self.ratio = ratio
        self.heavy_quantile = heavy_quantile
        self.heavy_ratio = heavy_ratio
        self.max_share = max_share
        self.persistence = persistence
        self.quiet_windows = quiet_windows
        self.history_windows = history_windows
        self.min_population = min_population
        # Busy horizons (decayed) after which an actor's own habit is its reference.
        self.known_after = 3.0
        self._recent: Deque[Tuple[float, Dict[str, ActorWindow]]] = deque()
        self._population = DecayingQuantiles()
        self._habits = HabitSketch()
        self._suspects: Dict[str, _Suspect] = {}
        self._first: Optional[float] = None
        self._last: Optional[float] = None

    @property
    def population(self) -> DecayingQuantiles:
        return self._population

    def heavy_level(self) -> Optional[float]:
        """The service's heavy users' tokens per horizon, once it is a reference."""
        if self._population.n < self.min_population:
            return None
        return self._population.quantile(self.heavy_quantile)

    def close_window(self, start: float, actors: Dict[str, ActorWindow]) -> List[ActorFinding]:
        """Judge the actors busy in the window that starts at ``start``, then learn from them."""
        out: List[ActorFinding] = []
        if self._first is None:
            self._first = start
        gap = 1 if self._last is None else int(round((start - self._last) / self.window))
        self._habits.advance(gap)
        self._last = start
        recent = self._recent
        recent.append((start, actors))
        while recent[0][0] <= start - self.horizon:
            recent.popleft()
        heavy = self.heavy_level()
        judged = heavy is not None and start - self._first >= self.history_windows * self.window
        end = start + self.window
        suspects = self._suspects
        for actor, aw in actors.items():
            total = 0
            requests = 0
            top = 0
            busy = 0
            for _, seen in recent:
                w = seen.get(actor)
                if w is not None:
                    t = w[0]
                    total += t
                    requests += w[1]
                    busy += 1
                    if t > top:
                        top = t
            habit, seen = self._habits.habit(actor)
            if seen >= self.known_after:
                # Far above what it usually sends when busy, and among the service's heaviest.
                over = total >= self.ratio * habit and total >= self.heavy_ratio * heavy if judged else False
            else:
                # Nothing usual of its own yet: only far above the heaviest counts.
                over = judged and total >= self.ratio * self.heavy_ratio * heavy
            abusive = (over and total >= self.min_tokens and requests >= self.min_requests
                       and top <= self.max_share * total)
            self._population.update(total)
            s = suspects.get(actor)
            if abusive:
                if s is None:
                    s = suspects[actor] = _Suspect()
                if s.run == 0:
                    s.run_start = start
                s.run += 1
                s.quiet = 0
                s.last = start
                if not s.active and s.run >= self.persistence:
                    s.active = True
                    expected = max(heavy, habit)  # what a heavy user, or this actor, usually sends
                    s.firing = ActorFinding("firing", actor, self._model(actor), total, requests, expected,
                                            heavy, habit, s.run_start, end, s.run, busy)
                    out.append(s.firing)
            else:
                # Learned only when not abusive, and winsorised: a burst does not become the habit.
                cap = 10.0 * habit + self.min_tokens
                self._habits.add(actor, total if total < cap else cap)
                if s is not None:
                    s.run = 0
                    if s.active:
                        s.quiet += 1
                        if s.quiet >= self.quiet_windows:
                            out.append(self._resolve(s, end))
                            del suspects[actor]
                    else:
                        del suspects[actor]
        # An abuser that went quiet altogether resolves too.
        for actor in [a for a, s in suspects.items() if a not in actors and start - s.last >= self.horizon]:
            s = suspects.pop(actor)
            if s.active:
                out.append(self._resolve(s, end))
        if len(suspects) > MAX_SUSPECTS:  # bounded: forget the oldest inactive ones
            for actor in sorted((a for a, s in suspects.items() if not s.active),
                                key=lambda a: suspects[a].last)[:len(suspects) - MAX_SUSPECTS]:
                del suspects[actor]
        return out

    def _model(self, actor: str) -> str:
        """The model most of the actor's horizon tokens went to (majority vote over its windows)."""
        votes: Dict[str, float] = {}
        for _, seen in self._recent:
            w = seen.get(actor)
            if w is not None:
                votes[w[2]] = votes.get(w[2], 0.0) + w[3]
        return max(votes.items(), key=lambda kv: kv[1])[0]

    @staticmethod
    def _resolve(s: _Suspect, end: float) -> ActorFinding:
        f = s.firing
        return ActorFinding("resolved", f.actor, f.model, f.tokens, f.requests, f.expected, f.heavy, f.habit,
                            f.run_start, end, f.windows, f.busy_windows)

    def memory_items(self) -> int:
        """Per-actor entries held now (windows of the horizon and suspects): what grows with actors."""
        return sum(len(a) for _, a in self._recent) + len(self._suspects)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_recent"] = list(self._recent)
        return d

    def __setstate__(self, s) -> None:
        self.__dict__.update(s)
        self._recent = deque(s["_recent"])


def add_request(actors: Dict[str, ActorWindow], actor: str, tokens: int, model: str) -> None:
    """Count one request of ``actor`` into a window's ``actors`` map (the per-event step)."""
    w = actors.get(actor)
    if w is None:
        actors[actor] = [tokens, 1, model, tokens + 1]
        return
    w[0] += tokens
    w[1] += 1
    if w[2] == model:
        w[3] += tokens + 1
    elif w[3] > tokens + 1:
        w[3] -= tokens + 1
    else:
        w[2] = model
        w[3] = tokens + 1 - w[3]


def severity_for_ratio(ratio: float) -> str:
    return "critical" if ratio >= 10 else "high" if ratio >= 4 else "medium"


def score_for_ratio(ratio: float) -> float:
    return min(1.0, 0.9 + 0.1 * min(1.0, math.log(max(ratio, 1.0)) / math.log(20.0)))
