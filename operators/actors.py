"""Per-actor token use (``token_abuse``): where a user's own baseline lives.

Input per actor key (``user:<id>`` or ``tenant:<id>``): ``(actor, partition, [LLMEvent], ingested_at, partitions)``.
Abuse is a sustained rise in volume, so an actor is judged on its tokens over
the last ``horizon`` of event time (summed over its windows), each time one
of its busy windows closes. That sum is abusive when it exceeds an absolute
floor, ``ratio`` times what the actor usually sends in a ``horizon`` (its
habit: tokens per window, idle windows counting as zero), and what the
population's heavy users send in a ``horizon`` (the ``heavy_quantile`` of
busy actor-horizons; an actor at k times ``ratio`` over its habit needs only
1/k of that level, and never less than half of it), without one window carrying more than ``max_share`` of
it (one huge request is not abuse), for ``persistence`` busy windows in a
row. An actor seen for less than ``history_windows`` has no habit yet: only
four times the heavy users' level counts (at most ``new_actor_min_tokens``).
Until the population is a reference, nobody is judged: a young actor's burst
and a heavy user's habit look alike.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from bytewax.operators import StatefulLogic

from detectors.population import DecayingQuantiles
from operators.alerts import iso, make_alert, resolved
from operators.model_windows import _utc_in
from operators.windowing import KeyWindows
from sentinel import crosskey, shutdown
from sentinel.config import FlowConfig
from sentinel.events import KEY_SEP, LLMEvent
from sentinel.metrics import get_metrics


# Busy actor-windows seen by this process: where the heavy users are. Shared by
# the actors of all workers of the process (each worker sees a hash sample of
# the population); rebuilt within minutes after a restart, so not snapshotted.
POPULATION = DecayingQuantiles()
MIN_POPULATION = 5000  # busy actor-windows before the population is a reference


class ActorAgg:
    __slots__ = ("start", "tokens", "requests", "keys")

    def __init__(self, start: float) -> None:
        self.start = start
        self.tokens = 0
        self.requests = 0
        self.keys: Counter = Counter()

    def __getstate__(self):
        return (self.start, self.tokens, self.requests, self.keys)

    def __setstate__(self, s) -> None:
        self.start, self.tokens, self.requests, self.keys = s


# An actor far above its own habit needs only part of the heavy users' level, down to this share of it.
HEAVY_FLOOR = 0.5
HABIT_ALPHA = 1.0 / 60.0  # weight of a window in the actor's habit (about an hour of memory at 1-minute windows)


@dataclass
class ActorState:
    actor: str
    windows: KeyWindows
    run: int = 0
    run_start: float = 0.0
    active: bool = False
    quiet: int = 0
    last_ingest: float = 0.0
    firing: Optional[Dict[str, Any]] = None  # the open episode's alert
    rate: Optional[float] = None  # habit: tokens per window, idle windows counting as zero
    first_start: Optional[float] = None
    last_start: Optional[float] = None
    # Busy windows within the horizon: (start, tokens, tokens by service/model key).
    recent: List[Tuple[float, int, Counter]] = field(default_factory=list)

    def __setstate__(self, s) -> None:
        self.__dict__.update(s)
        self.__dict__.setdefault("recent", [])  # snapshots from before the horizon


class ActorLogic(StatefulLogic[Tuple[str, str, List[LLMEvent], float, int], Dict[str, Any], ActorState]):
    def __init__(self, cfg: FlowConfig, state: Optional[ActorState]) -> None:
        self.cfg = cfg
        self.ta = cfg.detection.token_abuse
        self.state = state
        m = get_metrics()
        self._anomalies = m.anomalies
        self._late = m.events.labels(outcome="late")
        self._keys = m.keys_active.labels(kind="actor")
        self._keys.inc()

    def on_item(self, value):
        actor, part, events, ingested_at, nparts = value
        if self.state is None:
            w = self.cfg.windows
            self.state = ActorState(
                actor,
                KeyWindows(self.ta.window, w.allowed_lateness, w.idle_partition, w.max_open_windows, ActorAgg),
            )
        now = time.monotonic()
        win = self.state.windows
        late = 0
        for ev in events:
            agg = win.agg_for(part, ev.ts, now, nparts)
            if agg is None:
                late += 1
                continue
            tok = (ev.input_tokens or 0) + (ev.output_tokens or 0)
            agg.tokens += tok
            agg.requests += 1
            agg.keys[ev.service + KEY_SEP + ev.model] += tok + 1  # the alert names the key most tokens went to
        if late:
            self._late.inc(late)
        self.state.last_ingest = ingested_at
        return self._close(win.close_ready(now)), StatefulLogic.RETAIN

    def on_notify(self):
        st = self.state
        now = time.monotonic()
        if now - st.windows.last_wall >= self.cfg.state.key_idle_evict:
            out = self._close(st.windows.close_all())
            self._keys.dec()
            return out, StatefulLogic.DISCARD
        return self._close(st.windows.close_ready(now)), StatefulLogic.RETAIN

    def on_eof(self):
        if self.state is None or not shutdown.flush_on_eof():
            return [], StatefulLogic.RETAIN
        return self._close(self.state.windows.close_all()), StatefulLogic.RETAIN

    def notify_at(self):
        if self.state is None:
            return None
        if self.state.windows.open_count:
            return _utc_in(self.cfg.state.idle_flush)
        return _utc_in(self.cfg.state.key_idle_evict)

    def snapshot(self) -> ActorState:
        crosskey.maybe_save()
        return copy.deepcopy(self.state)

    def _close(self, closed) -> List[Dict[str, Any]]:
        out: List[Dict[str, Any]] = []
        st = self.state
        ta = self.ta
        span = ta.horizon / ta.window  # windows per horizon
        for start, agg in closed:
            if agg is None or agg.requests == 0:
                continue  # an actor's idle windows are neither normal nor abusive (their zeros reach the habit below)
            tokens = agg.tokens
            if st.rate is not None and st.last_start is not None:
                idle = min(int(round((start - st.last_start) / ta.window)) - 1, 100_000)
                if idle > 0:
                    st.rate *= (1.0 - HABIT_ALPHA) ** idle
            recent = st.recent
            recent.append((start, tokens, agg.keys))
            while recent[0][0] <= start - ta.horizon:
                recent.pop(0)
            total = 0
            top = 0
            for _, t, _k in recent:
                total += t
                top = t if t > top else top
            warm = st.rate is not None and start - st.first_start >= ta.history_windows * ta.window
            expected = st.rate * span if warm else None
            heavy = POPULATION.quantile(ta.heavy_quantile) if POPULATION.n >= MIN_POPULATION else None
            if heavy is None or top > ta.max_share * total:
                abusive = False  # the population is young (nobody is judged yet), or one window is most of it
            elif expected is not None:
                # Far above its own habit, and up among what the population's heavy users
                # send: the further above its habit, the less of the heavy level it needs
                # (at 2 x ratio, half of it; never less than HEAVY_FLOOR of it).
                own = total / max(expected, 1.0)
                abusive = (total >= ta.min_tokens and own >= ta.ratio
                           and total >= heavy * max(HEAVY_FLOOR, ta.ratio / own))
            else:
                # No history yet: only far above the heavy users counts.
                abusive = total >= max(min(ta.new_actor_min_tokens, 4 * heavy), ta.min_tokens)
            POPULATION.update(total)
            if abusive:
                if st.run == 0:
                    st.run_start = start
                st.run += 1
                st.quiet = 0
                if not st.active and st.run >= ta.persistence:
                    st.active = True
                    st.firing = self._alert(agg, total, expected, st, start + ta.window)
                    out.append(st.firing)
            else:
                if st.active:
                    st.quiet += 1
                    if st.quiet >= self.cfg.detection.quiet_windows:
                        st.active = False
                        if st.firing is not None:
                            out.append(resolved(st.firing, start + ta.window))
                            st.firing = None
                st.run = 0
                # Learned only when not abusive, and winsorised: a burst does not become the habit.
                if st.rate is None:
                    st.rate = float(tokens)
                else:
                    st.rate += HABIT_ALPHA * (min(tokens, 10.0 * st.rate + ta.min_tokens) - st.rate)
            if st.first_start is None:
                st.first_start = start
            st.last_start = start
        return out

    def _alert(self, agg: ActorAgg, tokens: int, expected: Optional[float], st: ActorState,
               fired: float) -> Dict[str, Any]:
        by_key: Counter = Counter()
        for _, _t, keys in st.recent:
            by_key.update(keys)
        key, _ = by_key.most_common(1)[0]  # the key the horizon's tokens went to
        service, _, model = key.partition(KEY_SEP)
        exp = expected if expected is not None else float(self.ta.min_tokens)
        horizon = self.ta.horizon
        ratio = tokens / max(exp, 1.0)
        severity = "critical" if ratio >= 50 else "high" if ratio >= 15 else "medium"
        score = min(1.0, 0.9 + 0.1 * min(1.0, ratio / 50.0))
        self._anomalies.labels(type="token_abuse", severity=severity).inc()
        history = (st.last_start - st.first_start) / self.ta.window + 1 if st.first_start is not None else 0
        minutes = horizon / 60.0
        usual = f"{ratio:.1f}x its usual {exp:,.0f}" if expected is not None else "a new actor, far above the heavy users"
        return make_alert(
            "token_abuse", "tokens_per_horizon", tokens, exp, score, severity, "actor_tokens",
            st.run_start, service, model, subject=st.actor,
            evidence={"ratio": round(ratio, 2), "horizon_seconds": horizon,
                      "busy_windows_in_horizon": len(st.recent), "requests_in_window": agg.requests,
                      "window_seconds": self.ta.window, "windows_abusive": st.run,
                      "history_windows": int(history), "fired_event_time": iso(fired)},
            summary=f"{st.actor} used {tokens:,} tokens in {minutes:g} minutes, mostly on "
                    f"{service}/{model}: {usual}.",
            ingested_at=st.last_ingest,
        )
