"""Per-service token use (``token_abuse``): where a service's actors are watched.

Input per service key: ``(service, partition, ActorRequests, ingested_at, partitions)`` (the
service's requests of one source batch, as the four columns this step reads).
Actors (``user:<id>``, else ``tenant:<id>``) are not Bytewax keys: each
service's keyed state counts its actors' tokens per event-time window and
hands every closed window to :class:`detectors.actor_tokens.ServiceActors`,
which judges an actor against the same service's heavy users and its own
habit. Memory grows with the actors busy within the horizon, not with the
number of distinct actors ever seen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

from detectors.actor_tokens import ActorFinding, ServiceActors, add_request, score_for_ratio, severity_for_ratio
from operators.alerts import make_alert, resolved
from operators.guard import StepFailure, guarded
from operators.model_windows import _take, _utc_in, fold_windows
from operators.stateful import stateful, step_name
from operators.windowing import KeyWindows, frozen
from sentinel import shutdown
from sentinel.config import FlowConfig
from sentinel.core.times import iso
from sentinel.core.types import Alert, KeyGroup
from sentinel.events import ActorRequests, LLMEvent, Requests
from sentinel.metrics import get_metrics

log = logging.getLogger("sentinel.actors")

# A request's tokens count up to this much (a record claiming 1e308 tokens is one very big request, not an overflow).
MAX_REQUEST_TOKENS = 10 ** 9


class ActorsAgg:
    """One window of one service: ``{actor: [tokens, requests, model, model_weight]}``."""

    __slots__ = ("start", "actors")

    def __init__(self, start: float) -> None:
        self.start = start
        self.actors: Dict[str, list] = {}

    def __getstate__(self):
        return (self.start, self.actors)

    def __setstate__(self, s) -> None:
        self.start, self.actors = s


def _fold_actors(agg: ActorsAgg, reqs: ActorRequests, sel) -> None:
    """Count the requests at ``sel`` (all when None; a slice; a list of positions) into a window's actors,
    in order."""
    into = agg.actors
    for actor, tok, model in zip(_take(reqs.actor, sel), _take(reqs.tokens, sel), _take(reqs.model, sel)):
        add_request(into, actor, tok if tok < MAX_REQUEST_TOKENS else MAX_REQUEST_TOKENS, model)


@dataclass
class ServiceActorsState:
    service: str
    windows: KeyWindows
    detector: ServiceActors
    last_ingest: float = 0.0
    firing: Optional[Dict[str, Alert]] = None  # actor -> its open episode's alert (dicts in older snapshots)


def make_detector(cfg: FlowConfig) -> ServiceActors:
    ta = cfg.detection.token_abuse
    return ServiceActors(
        window=ta.window, horizon=ta.horizon, min_tokens=ta.min_tokens, min_requests=ta.min_requests,
        ratio=ta.ratio, p_value=ta.p_value, heavy_quantile=ta.heavy_quantile, heavy_ratio=ta.heavy_ratio,
        max_share=ta.max_share, persistence=ta.persistence, quiet_windows=cfg.detection.quiet_windows,
        history_windows=ta.history_windows, min_population=ta.min_population, max_actors=ta.max_actors,
        sustain=ta.sustain, rise_quantile=ta.rise_quantile)


class ActorLogic(StatefulLogic[Tuple[str, str, List[LLMEvent], float, int], Alert, ServiceActorsState]):
    def __init__(self, cfg: FlowConfig, state: Optional[ServiceActorsState],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        # The wall clock (monotonic seconds) of quiet windows and idle eviction; tests pass a fake one.
        self.clock = clock
        self.ta = cfg.detection.token_abuse
        if state is not None and not isinstance(state, ServiceActorsState):
            # A snapshot from when actors were keys of their own: its key gets no more items.
            log.info("token abuse: dropping a per-actor state of an earlier version from the snapshot")
            state = None
        self.state = state
        m = get_metrics()
        self._metrics = m
        self._keys = m.keys_active.labels(kind="service_actors")
        self._keys.inc()

    def on_item(self, value):
        service, part, reqs, ingested_at, nparts = value
        st = self.state
        if reqs is None:  # the partition's source has read all there is: it holds the windows no more
            if st is None:  # an evicted service: nothing to close, and no key to count
                self._keys.dec()
                return [], StatefulLogic.DISCARD
            st.windows.quiet(part)
            return self._close(st.windows.close_ready(self.clock())), StatefulLogic.RETAIN
        if st is None:
            w = self.cfg.windows
            st = self.state = ServiceActorsState(
                service, KeyWindows(self.ta.window, w.allowed_lateness, w.idle_partition, w.max_open_windows,
                                    ActorsAgg),
                make_detector(self.cfg), firing={})
        if reqs.__class__ is not ActorRequests:  # all the columns, or a list of events (tests, older callers)
            reqs = ActorRequests.of_requests(reqs if reqs.__class__ is Requests else Requests.of_events(reqs))
        now = self.clock()
        win = st.windows
        # Requests of neither a user nor a tenant are not counted.
        actors = reqs.actor
        idx = None if None not in actors else [i for i, a in enumerate(actors) if a is not None]
        fold_windows(win, part, reqs.ts, now, nparts, reqs, _fold_actors, idx)
        st.last_ingest = ingested_at
        return self._close(win.close_ready(now)), StatefulLogic.RETAIN

    def on_notify(self):
        st = self.state
        if st is None:
            return [], StatefulLogic.DISCARD
        now = self.clock()
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

    def snapshot(self) -> ServiceActorsState:
        return frozen(self.state)

    def _close(self, closed) -> List[Alert]:
        out: List[Alert] = []
        st = self.state
        for start, agg in closed:
            for f in st.detector.close_window(start, agg.actors if agg is not None else {}):
                if f.status == "firing":
                    st.firing[f.actor] = self._alert(f)
                    out.append(st.firing[f.actor])
                else:
                    alert = st.firing.pop(f.actor, None)
                    if alert is not None:
                        out.append(resolved(alert, f.window_end))
        return out

    def _alert(self, f: ActorFinding) -> Alert:
        service = self.state.service
        ratio = f.tokens / max(f.expected, 1.0)
        severity = severity_for_ratio(ratio)
        self._metrics.anomaly("token_abuse", severity, service, f.model)
        minutes = self.ta.horizon / 60.0
        own = f"{f.tokens / f.habit:.1f}x its own usual {f.habit:,.0f}" if f.habit >= 1 else "no usual use of its own"
        return make_alert(
            "token_abuse", "tokens_per_horizon", f.tokens, f.expected, score_for_ratio(ratio), severity,
            "actor_tokens", f.run_start, service, f.model, subject=f.actor,
            evidence={"ratio": round(ratio, 2), "heavy_users_tokens": round(f.heavy),
                      "own_usual_tokens": round(f.habit), "horizon_seconds": self.ta.horizon,
                      "requests_in_horizon": f.requests, "busy_windows_in_horizon": f.busy_windows,
                      "window_seconds": self.ta.window, "windows_abusive": f.windows,
                      "fired_event_time": iso(f.window_end)},
            summary=f"{f.actor} used {f.tokens:,} tokens in {minutes:g} minutes on {service} "
                    f"({f.requests} requests, mostly {f.model}): {ratio:.1f}x what the service's heavy users "
                    f"send, {own}.",
            ingested_at=self.state.last_ingest,
        )


@operator
def actor_windows(
    step_id: str,
    up: KeyedStream[KeyGroup],
    cfg: FlowConfig,
    clock: Callable[[], float] = time.monotonic,
    refresh: Optional[Callable[[FlowConfig, Optional[ServiceActorsState]], Optional[ServiceActorsState]]] = None,
) -> KeyedStream[Union[Alert, StepFailure]]:
    """Per service: its actors' token use over the horizon, ``token_abuse`` alerts; a group that raises
    is a :class:`StepFailure`. ``refresh(cfg, state)`` adapts a restored key's state to ``cfg``."""

    def build(st: Optional[ServiceActorsState]) -> ActorLogic:
        return ActorLogic(cfg, refresh(cfg, st) if refresh is not None else st, clock)

    return stateful(up, guarded(step_name(step_id), build, clock=clock))
