"""Token abuse within one service: its actors judged against their own habits and its heavy users.

One :class:`ServiceActors` lives per service. It is fed each closed event-time
window as ``{actor: [tokens, requests, model, model_weight]}`` and judges every
actor that was busy in it on its tokens and requests over the last
``horizon`` (abuse is a sustained rise, not one request). An actor's horizon
is abusive when all of these hold:

* a pattern, not an accident: at least ``min_requests`` requests and
  ``min_tokens`` tokens, no window holding more than ``max_share`` of the
  tokens (one huge request is not abuse);
* far above its own habit: at least ``ratio`` times the tokens it usually
  sends in a horizon *when it is busy* (a user who works in sessions, or an
  agent that sends its calls in bursts, is judged against its sessions and
  bursts, not against an average that its idle hours dilute), from more
  requests than ``ratio`` times its usual number could give (a Poisson tail
  below ``p_value``: a few requests more than usual are no pattern),
  counted in bursts (:meth:`ServiceActors.burst_size`: an agent's task of a
  dozen calls a minute is one burst, so its one long task is no pattern
  either). The habit scales with the service's own traffic when that is above usual (a
  busy hour or a traffic surge lifts everyone), or with the traffic of the model the
  actor uses when that has risen more (a retry storm on one model multiplies the
  requests of each of its users), or with the requests of a busy actor-window of
  the model's other users against their usual (the same storm in a quiet hour,
  where the model's traffic is no more than its day's average). An actor known
  to the service must also rise beyond the service's ordinary sessions
  (:meth:`ServiceActors.rise_floor`: the ``rise_quantile`` of how far its ended
  busy stretches rose above their actors' habits); a rise within them is an
  ordinary session and is learned as one;
* among the service's heavy users: at least the ``heavy_quantile`` of *this*
  service's busy actor-horizons, so a light user's first busy session on a
  chat service is no abuse, and a document pipeline's users are judged on a
  document pipeline's scale. An actor busy in fewer than ``known_after``
  windows so far (or forgotten) must also send ``heavy_ratio`` times that
  level; if it has any habit at all, it must rise above that habit too (a
  new agent user's first tasks are a habit of one session, and its second,
  larger task is no abuse: the count test is what makes few counts no
  pattern).

``persistence`` abusive windows in a row open an episode, once the actor's
busy stretch (its busy windows, none more than a horizon after the one
before) has lasted ``sustain`` seconds: abuse outlasts a long session, such
as a voice user's sixty turns in ten minutes, each resending the
conversation. ``quiet_windows`` busy windows of that actor that are not
abusive (or a horizon without it) close it. Nobody is judged during the service's first ``history_windows``
windows, or while it has seen fewer than ``min_population`` busy
actor-horizons.

Memory is bounded whatever the number of distinct actors: habits (decayed
over about ``1 / habit_alpha`` windows) are kept for the ``max_actors`` most
recently busy actors (one forgotten comes back as a stranger); the
population lives in a fixed log-scale histogram; per-window detail only for
the actors busy within the horizon, the few under suspicion, and the busy
stretches of the actors judged (at most ``MAX_STRETCHES``).

Examples
--------
>>> s = ServiceActors(min_population=10, history_windows=5, min_tokens=1000)
>>> out = []
>>> for w in range(120):
...     actors = {f"user:{i}": [500 + 10 * i, 1, "m", 1] for i in range(20) if (w + i) % 2}
...     if w >= 100:
...         actors["user:3"] = [20000, 20, "m", 1]   # user 3 goes to ~40x its habit
...     out += s.close_window(60.0 * w, actors)
>>> [(f.status, f.actor) for f in out]
[('firing', 'user:3')]
"""

from __future__ import annotations

import math
from collections import deque
from typing import Deque, Dict, List, Optional, Tuple

from detectors.population import DecayingQuantiles
from detectors.robust import poisson_sf

# [tokens, requests, model, model_weight]: the window's use by one actor. The
# model is a one-counter majority vote of where its tokens went.
ActorWindow = list


class ActorHabits:
    """What each actor usually sends in a horizon when it is busy, for at most ``capacity`` actors.

    An entry is ``[last window, tokens, requests, busy windows]``: sums over
    the windows the actor was busy in, of its horizon's tokens and requests,
    decayed at rate ``alpha`` per window and aged lazily when read. The
    habit is their ratio: a user who works in sessions, or an agent that
    sends its calls in bursts, is judged against its sessions and bursts,
    not against an average that its idle hours dilute. The least recently
    busy actor is forgotten first when the table is full (it comes back as
    a stranger).
    """

    __slots__ = ("alpha", "capacity", "_log_keep", "_table")

    def __init__(self, alpha: float = 1.0 / 360.0, capacity: int = 20000) -> None:
        self.alpha = alpha
        self.capacity = capacity
        self._log_keep = math.log1p(-alpha)
        self._table: Dict[str, list] = {}

    def __len__(self) -> int:
        return len(self._table)

    def habit(self, actor: str, now: int) -> Optional[Tuple[float, float, float]]:
        """(tokens, requests per busy horizon, decayed number of busy windows), or None for a stranger."""
        e = self._table.get(actor)
        if e is None:
            return None
        keep = math.exp((now - e[0]) * self._log_keep)
        return e[1] / e[3], e[2] / e[3], e[3] * keep

    def learn(self, actor: str, now: int, tokens: float, requests: float,
              known_after: Optional[float] = None) -> None:
        """Count one busy window of ``actor`` with its horizon's totals (its entry moves to the young end).

        With ``known_after``: a window that is no abuse, winsorised at twice the habit once the
        actor has been busy that many (decayed) windows, as :meth:`ServiceActors.close_window`
        learns it (the same as :meth:`habit` first, then ``learn`` of the capped totals)."""
        t = self._table
        e = t.pop(actor, None)
        if e is None:
            if len(t) >= self.capacity:
                del t[next(iter(t))]  # the least recently busy actor
            e = [now, 0.0, 0.0, 0.0]
        else:
            keep = math.exp((now - e[0]) * self._log_keep)
            if known_after is not None and e[3] * keep >= known_after:
                tokens = min(tokens, 2.0 * (e[1] / e[3]))
                requests = min(requests, 2.0 * (e[2] / e[3]))
            e[1] *= keep
            e[2] *= keep
            e[3] *= keep
            e[0] = now
        e[1] += tokens
        e[2] += requests
        e[3] += 1.0
        t[actor] = e

    def __getstate__(self):
        return (self.alpha, self.capacity, self._table)

    def __setstate__(self, s) -> None:
        self.alpha, self.capacity, self._table = s
        self._log_keep = math.log1p(-self.alpha)


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
# Busy stretches kept at most per service.
MAX_STRETCHES = 4096
# Models of one service whose traffic is followed (the busiest are kept).
MAX_MODELS = 64
# Requests per busy window told apart when measuring bursts (burst_size); more count as this many.
BURST_CAP = 64
# Busy actor-windows of a model's other users over a horizon that its requests per busy actor-window
# are judged on (the model lift in ServiceActors.close_window).
MIN_PEER_WINDOWS = 10


class ServiceActors:
    """Per-service token-abuse detector (see the module docstring)."""

    def __init__(self, window: float = 60.0, horizon: float = 600.0, min_tokens: int = 20000,
                 min_requests: int = 5, ratio: float = 4.0, p_value: float = 1e-4,
                 heavy_quantile: float = 0.75, heavy_ratio: float = 5.0, max_share: float = 0.6,
                 persistence: int = 2, quiet_windows: int = 5, history_windows: int = 60,
                 min_population: int = 1000, habit_alpha: float = 1.0 / 360.0,
                 max_actors: int = 20000, sustain: float = 720.0, rise_quantile: float = 0.99) -> None:
        self.window = window
        self.horizon = horizon
        self.min_tokens = min_tokens
        self.min_requests = min_requests
        self.ratio = ratio
        self.p_value = p_value
        self.heavy_quantile = heavy_quantile
        self.heavy_ratio = heavy_ratio
        self.max_share = max_share
        self.persistence = persistence
        self.quiet_windows = quiet_windows
        self.history_windows = history_windows
        self.min_population = min_population
        self.habit_alpha = habit_alpha
        self.max_actors = max_actors
        self.sustain = sustain
        self.rise_quantile = rise_quantile
        # Per candidate actor (see close_window), while it stays busy: [start of its busy stretch,
        # its last busy window's start, the most its horizon's tokens rose above its habit in the
        # stretch (0 until judged against a habit)]. A stretch goes on while no horizon passes
        # without the actor.
        self._stretch: Dict[str, List[float]] = {}
        # The service's busy stretches by how far they rose above their actor's habit (one value a
        # stretch, once it has ended): the service's own spread of session lengths (rise_floor).
        self._rises = DecayingQuantiles()
        # Busy windows (decayed) after which an actor's own habit is its reference.
        self.known_after = 5.0
        self._span = horizon / window
        self._recent: Deque[Tuple[float, Dict[str, ActorWindow], int]] = deque()
        # Per actor over the windows of _recent: [tokens, requests, busy windows] (kept as they
        # come and go; not snapshotted, made again from _recent).
        self._sums: Dict[str, List[int]] = {}
        self._population = DecayingQuantiles()
        self._habits = ActorHabits(habit_alpha, max_actors)
        self._service_rate: Optional[float] = None  # the service's requests per window (EW)
        # Per model of the service: requests per window (EW), and over the windows of _recent
        # (the latter made again from _recent, as _sums is). An actor window counts under its model.
        self._model_rate: Dict[str, float] = {}
        self._model_sums: Dict[str, int] = {}
        # Per model: its busy actor-windows over the windows of _recent (made again from _recent), and
        # the requests of a busy actor-window (EW): how many requests each of its users sends at once.
        self._model_busy: Dict[str, int] = {}
        self._model_per: Dict[str, float] = {}
        # Busy actor-windows by their requests (1 .. BURST_CAP, the last for that many or more),
        # decayed: their median is how many requests an actor's burst holds (burst_size).
        self._bursts = [0.0] * BURST_CAP
        self._suspects: Dict[str, _Suspect] = {}
        self._first: Optional[float] = None
        self._last: Optional[float] = None

    @property
    def population(self) -> DecayingQuantiles:
        return self._population

    def burst_size(self) -> float:
        """Requests an actor sends together: the median of the requests in a busy window over
        the service's busy actor-windows (decayed), at least 1. One where users send a request
        now and then, however busy the heaviest of them; a dozen where an agent's task sends a
        dozen calls within the minute. Each actor-window counts once, and a median moves
        little for a few of them, so no single actor, an abuser least of all, sets it."""
        bursts = self._bursts
        half = 0.5 * sum(bursts)
        if half <= 0.0:
            return 1.0
        seen = 0.0
        for i, w in enumerate(bursts):
            seen += w
            if seen >= half:
                return float(i + 1)
        return float(BURST_CAP)

    def rise_floor(self) -> float:
        """How far above its own habit an actor's horizon must rise, in tokens: ``ratio``, or the
        ``rise_quantile`` of this service's ended busy stretches' highest rise above their actors'
        habits when that is higher. Where users' sessions are heavy-tailed (a voice assistant whose
        long conversations resend their context each turn), ordinary sessions rise tens of times
        above their users' habits, and only a rise beyond theirs is abuse. Each stretch counts once,
        so an abuse's own windows do not lift the floor it is judged against."""
        q = self._rises.quantile(self.rise_quantile) if self.rise_quantile > 0.0 else None
        return self.ratio if q is None else max(self.ratio, q)

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
        gap = 1 if self._last is None else max(1, int(round((start - self._last) / self.window)))
        self._last = start
        now = int(start // self.window)
        n_requests = 0
        a = self.habit_alpha
        bursts = self._bursts
        for i in range(BURST_CAP):
            bursts[i] *= 1.0 - a
        for aw in actors.values():
            n_requests += aw[1]
            bursts[min(aw[1], BURST_CAP) - 1] += a
        burst = self.burst_size()
        recent = self._recent
        recent.append((start, actors, n_requests))
        sums = self._sums
        model_sums = self._model_sums
        model_busy = self._model_busy
        by_model, busy_by_model = _count_window(sums, actors, model_sums, model_busy)
        while recent[0][0] <= start - self.horizon:
            for actor, aw in recent.popleft()[1].items():
                model_sums[aw[2]] -= aw[1]
                model_busy[aw[2]] -= 1
                c = sums[actor]
                if c[2] == 1:
                    del sums[actor]
                else:
                    c[0] -= aw[0]
                    c[1] -= aw[1]
                    c[2] -= 1
        svc_requests = sum(r[2] for r in recent)
        heavy = self.heavy_level()
        judged = heavy is not None and start - self._first >= self.history_windows * self.window
        usual = self._service_rate
        model_rate = self._model_rate
        end = start + self.window
        suspects = self._suspects
        span = self._span
        habits = self._habits
        min_requests, min_tokens, known_after = self.min_requests, self.min_tokens, self.known_after
        floor = self.rise_floor()
        totals = []
        for actor in actors:
            total, requests, busy = sums[actor]
            totals.append(total)
            if actor not in suspects and not (judged and requests >= min_requests and total >= min_tokens
                                              and total >= heavy):
                # Neither under suspicion nor a candidate (most actors): learned, winsorised once known.
                habits.learn(actor, now, total, requests, known_after)
                continue
            habit = habits.habit(actor, now)
            stretch = self._busy_since(actor, start)
            abusive = held = climbing = False
            lift = 1.0
            if (judged and requests >= self.min_requests and total >= self.min_tokens and total >= heavy
                    and self._top(actor) <= self.max_share * total):
                # An actor with little or no habit yet must pass the stranger's bar; one with any
                # habit must also rise above it (a young habit is one session: its counts are few,
                # and the count test below is what makes few counts no pattern). A young actor's
                # window beyond the bar teaches no habit (held): an abuse's first minutes would
                # otherwise become the habit it is judged against.
                young = habit is None or habit[2] < self.known_after
                held = young and total >= self.heavy_ratio * heavy
                abusive = held or not young
                if abusive and habit is not None:
                    # Everyone is busier when the service is, or the model the actor uses (a retry
                    # storm on one model multiplies each of its users' requests): the habit scales
                    # with the busier of the two, the actor's own requests left out.
                    if usual:
                        lift = max(1.0, (svc_requests - requests) / (usual * span))
                    model = self._model(actor)
                    m_usual = model_rate.get(model)
                    others_requests = model_sums.get(model, 0) - requests
                    if m_usual:
                        lift = max(lift, others_requests / (m_usual * span))
                    # A retry storm multiplies the requests each user of the model sends at once;
                    # a busy hour brings more users, each as busy as ever. Against the model's
                    # usual requests per busy actor-window, the others' windows now tell the
                    # storm even where the model is quieter than its day's average.
                    per = self._model_per.get(model)
                    others = model_busy.get(model, 0) - sums[actor][2]
                    if per and others >= MIN_PEER_WINDOWS:
                        lift = max(lift, others_requests / others / per)
                    # Requests come in bursts (an agent's task is a dozen calls): the tail is
                    # that of the number of bursts, not of calls.
                    # A known actor must rise beyond the service's ordinary sessions (rise_floor); a
                    # rise within theirs is an ordinary session, learned as one. A young actor, past
                    # the stranger's bar already, must rise ``ratio`` times above its one session.
                    # Only known actors' rises are the service's.
                    rise = total / (habit[0] * lift)
                    if young:
                        climbing = rise >= self.ratio
                    else:
                        climbing = rise >= floor
                        if rise > stretch[2]:
                            stretch[2] = rise
                    abusive = (climbing
                               and poisson_sf(int(requests / burst), self.ratio * habit[1] * lift / burst)
                               < self.p_value)
            s = suspects.get(actor)
            if abusive:
                if s is None:
                    s = suspects[actor] = _Suspect()
                if s.run == 0:
                    s.run_start = start
                s.run += 1
                s.quiet = 0
                s.last = start
                if not s.active and s.run >= self.persistence and end - stretch[0] >= self.sustain:
                    s.active = True
                    own = habit[0] * lift if habit is not None else 0.0
                    expected = max(heavy, own)  # what a heavy user, or this actor, usually sends
                    s.firing = ActorFinding("firing", actor, self._model(actor), total, requests, expected,
                                            heavy, own, s.run_start, end, s.run, busy)
                    out.append(s.firing)
            else:
                # Learned only when not abusive, and winsorised at twice the habit; a horizon
                # already ``ratio`` times the habit in tokens is not learned at all: the climb of
                # an abuse that is not yet beyond doubt in its count does not become the habit.
                if not held and not climbing:
                    habits.learn(actor, now, total, requests, known_after)
                if s is not None:
                    s.run = 0
                    if s.active:
                        s.quiet += 1
                        if s.quiet >= self.quiet_windows:
                            out.append(self._resolve(s, end))
                            del suspects[actor]
                    else:
                        del suspects[actor]
        self._population.update_many(totals)  # after the judging: this window's heavy level is as before it
        a = self.habit_alpha
        self._service_rate = float(n_requests) if usual is None else usual + a * (n_requests - usual)
        model_per = self._model_per
        for model, n in by_model.items():
            per = model_per.get(model)
            now_per = n / busy_by_model[model]
            model_per[model] = now_per if per is None else per + a * (now_per - per)
        for model, rate in model_rate.items():
            model_rate[model] = rate + a * (by_model.pop(model, 0) - rate)
        for model, n in by_model.items():  # a model first seen
            model_rate[model] = float(n)
        if len(model_rate) > MAX_MODELS:  # bounded: the least used models are forgotten
            for model in sorted(model_rate, key=model_rate.get)[:len(model_rate) - MAX_MODELS]:
                del model_rate[model]
                model_per.pop(model, None)
        for model in [m for m, n in model_sums.items() if n <= 0]:
            del model_sums[model]
            self._model_busy.pop(model, None)

        for _ in range(gap - 1):  # idle windows of the whole service count as zero
            self._service_rate *= 1.0 - a
            for model in model_rate:
                model_rate[model] *= 1.0 - a
        # An abuser that went quiet altogether resolves too.
        for actor in [a for a, s in suspects.items() if a not in actors and start - s.last >= self.horizon]:
            s = suspects.pop(actor)
            if s.active:
                out.append(self._resolve(s, end))
        if self._stretch and now % self._span == 0:  # stretches that ended, once a horizon
            stretch = self._stretch
            ended = [a for a, st in stretch.items() if start - st[1] > self.horizon]
            if len(stretch) - len(ended) > MAX_STRETCHES:  # bounded: the longest idle go first
                ended = sorted(stretch, key=lambda a: stretch[a][1])[:len(stretch) - MAX_STRETCHES]
            self._rises.update_many([stretch.pop(a)[2] for a in ended])
        if len(suspects) > MAX_SUSPECTS:  # bounded: forget the oldest inactive ones
            for actor in sorted((a for a, s in suspects.items() if not s.active),
                                key=lambda a: suspects[a].last)[:len(suspects) - MAX_SUSPECTS]:
                del suspects[actor]
        return out

    def _busy_since(self, actor: str, start: float) -> List[float]:
        """The busy stretch of ``actor`` that goes on in the window at ``start`` (``[start, last busy
        window, highest rise]``, see ``_stretch``): its busy windows, none more than a horizon after
        the one before (a script that sleeps between its bursts is one stretch). Read off the
        horizon's windows, and carried on from the stretch kept for it while it was a candidate
        before. A stretch that ended is counted in the service's rises."""
        reach = self.horizon
        st = self._stretch.get(actor)
        if st is not None and start - st[1] <= reach:
            # Its stretch went on to now; the horizon's windows hold nothing older than its start.
            st[1] = start
            return st
        since = start
        for w_start, seen, _n in reversed(self._recent):
            if since - w_start > reach:
                break
            if actor in seen:
                since = w_start
        peak = 0.0
        if st is not None:
            if since - st[1] <= reach:
                since, peak = min(since, st[0]), st[2]
            else:
                self._rises.update(st[2])
        st = self._stretch[actor] = [since, start, peak]
        return st

    def _top(self, actor: str) -> int:
        """The actor's most tokens in one window of the horizon."""
        top = 0
        for _, seen, _n in self._recent:
            w = seen.get(actor)
            if w is not None and w[0] > top:
                top = w[0]
        return top

    def _model(self, actor: str) -> str:
        """The model most of the actor's horizon tokens went to (majority vote over its windows)."""
        votes: Dict[str, float] = {}
        for _, seen, _n in self._recent:
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
        """Per-actor entries held now (habits, windows of the horizon, suspects): what grows with actors."""
        return (len(self._habits) + sum(len(a) for _, a, _n in self._recent) + len(self._suspects)
                + len(self._stretch))

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_recent"] = list(self._recent)
        d.pop("_sums", None)
        d.pop("_model_sums", None)
        d.pop("_model_busy", None)
        return d

    def __setstate__(self, s) -> None:
        self._bursts = [0.0] * BURST_CAP  # states from before bursts were measured
        self._model_rate = {}  # states from before models were counted
        self.sustain = 0.0  # states from before abuse had to last
        self._stretch = {}
        self.rise_quantile = 0.0  # states from before the service's rises were learned
        self._rises = DecayingQuantiles()
        self._model_per = {}  # states from before the requests of a busy actor-window were counted
        self.__dict__.update(s)
        for st in self._stretch.values():
            if len(st) == 2:
                st.append(0.0)
        self._recent = deque(s["_recent"])
        self._sums = {}
        self._model_sums = {}
        self._model_busy = {}
        for _, seen, _n in self._recent:
            _count_window(self._sums, seen, self._model_sums, self._model_busy)


def _count_window(sums: Dict[str, List[int]], actors: Dict[str, ActorWindow], model_sums: Dict[str, int],
                  model_busy: Dict[str, int]) -> Tuple[Dict[str, int], Dict[str, int]]:
    """Add a window's actors to the per-actor ``[tokens, requests, busy windows]`` of a horizon, and
    their requests and busy actor-windows to the per-model sums; return the window's requests and
    busy actors per model."""
    by_model: Dict[str, int] = {}
    busy: Dict[str, int] = {}
    for actor, aw in actors.items():
        by_model[aw[2]] = by_model.get(aw[2], 0) + aw[1]
        busy[aw[2]] = busy.get(aw[2], 0) + 1
        c = sums.get(actor)
        if c is None:
            sums[actor] = [aw[0], aw[1], 1]
        else:
            c[0] += aw[0]
            c[1] += aw[1]
            c[2] += 1
    for model, n in by_model.items():
        model_sums[model] = model_sums.get(model, 0) + n
        model_busy[model] = model_busy.get(model, 0) + busy[model]
    return by_model, busy


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
