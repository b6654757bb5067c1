"""Per-actor token use (``token_abuse``): where a user's own baseline lives.

Input per actor key (``user:<id>`` or ``tenant:<id>``): ``(actor, partition, [LLMEvent], ingested_at, partitions)``.
An actor's window is abusive when its tokens exceed an absolute floor,
``ratio`` times the actor's own typical busy window, and what the
population's heavy users send in a window (the ``heavy_quantile`` of busy
actor-windows), for ``persistence`` consecutive windows. A new actor, with
no history yet, must exceed four times the heavy users' level (at most
``new_actor_min_tokens``).
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from bytewax.operators import StatefulLogic

from detectors.population import DecayingQuantiles
from detectors.robust import RobustBaseline
from operators.alerts import iso, make_alert, resolved
from operators.model_windows import _utc_in
from operators.windowing import KeyWindows
from sentinel import shutdown
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


@dataclass
class ActorState:
    actor: str
    windows: KeyWindows
    baseline: RobustBaseline
    run: int = 0
    run_start: float = 0.0
    active: bool = False
    quiet: int = 0
    last_ingest: float = 0.0
    firing: Optional[Dict[str, Any]] = None  # the open episode's alert


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
                RobustBaseline(alpha=0.1, log=True, warmup=self.ta.history_windows),
            )
        now = time.monotonic()
        win = self.state.windows
        late = 0
        for ev in events:
            agg = win.agg_for(part, ev.ts, now, nparts)
            if agg is None:
                late += 1
                continue
            agg.tokens += (ev.input_tokens or 0) + (ev.output_tokens or 0)
            agg.requests += 1
            agg.keys[ev.service + KEY_SEP + ev.model] += 1
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
        return copy.deepcopy(self.state)

    def _close(self, closed) -> List[Dict[str, Any]]:
        out: List[Dict[str, Any]] = []
        st = self.state
        ta = self.ta
        for start, agg in closed:
            if agg is None or agg.requests == 0:
                continue  # an actor's idle windows are neither normal nor abusive
            tokens = agg.tokens
            base = st.baseline
            warm = base.n >= base.warmup
            expected = base.expected() if warm else None
            heavy = POPULATION.quantile(ta.heavy_quantile) if POPULATION.n >= MIN_POPULATION else None
            if expected is not None:
                # Far above its own habit, and above what the population's heavy users send.
                abusive = (tokens >= ta.min_tokens and tokens >= ta.ratio * max(expected, 1.0)
                           and (heavy is None or tokens >= heavy))
            else:
                # No history yet: only far above the heavy users counts.
                # (While the population itself is young, every actor is new: then nobody is judged.)
                abusive = heavy is not None and tokens >= max(min(ta.new_actor_min_tokens, 4 * heavy), ta.min_tokens)
            POPULATION.update(tokens)
            if abusive:
                if st.run == 0:
                    st.run_start = start
                st.run += 1
                st.quiet = 0
                if not st.active and st.run >= ta.persistence:
                    st.active = True
                    st.firing = self._alert(agg, tokens, expected, st, start + self.ta.window)
                    out.append(st.firing)
                base.learn_one(tokens) if not warm else None
            else:
                if st.active:
                    st.quiet += 1
                    if st.quiet >= self.cfg.detection.quiet_windows:
                        st.active = False
                        st.run = 0
                        if st.firing is not None:
                            out.append(resolved(st.firing, start + self.ta.window))
                            st.firing = None
                else:
                    st.run = 0
                base.learn_one(tokens)
        return out

    def _alert(self, agg: ActorAgg, tokens: int, expected: Optional[float], st: ActorState,
               fired: float) -> Dict[str, Any]:
        key, _ = agg.keys.most_common(1)[0]
        service, _, model = key.partition(KEY_SEP)
        exp = expected if expected is not None else float(self.ta.min_tokens)
        ratio = tokens / max(exp, 1.0)
        severity = "critical" if ratio >= 50 else "high" if ratio >= 15 else "medium"
        score = min(1.0, 0.9 + 0.1 * min(1.0, ratio / 50.0))
        self._anomalies.labels(type="token_abuse", severity=severity).inc()
        return make_alert(
            "token_abuse", "tokens_per_window", tokens, exp, score, severity, "actor_tokens",
            st.run_start, service, model, subject=st.actor,
            evidence={"ratio": round(ratio, 2), "requests_in_window": agg.requests,
                      "window_seconds": self.ta.window, "windows_abusive": st.run,
                      "history_windows": st.baseline.n, "fired_event_time": iso(fired)},
            summary=f"{st.actor} used {tokens:,} tokens in one {self.ta.window:.0f}s window on "
                    f"{service}/{model}, {ratio:.1f}x its usual {exp:,.0f}.",
            ingested_at=st.last_ingest,
        )
