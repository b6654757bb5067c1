"""Per-source security events (``coordinated_attack``): where each source's events are counted.

Input per security source: ``(source, partition, [SecurityEvent], ingested_at, partitions)``.
Each source's keyed state hands its events, batch by batch, to
:class:`detectors.attacks.SourceAttacks` (more than ``threshold`` events
within ``window`` seconds of event time is an attack; one alert per episode,
which ends when the source has been quiet for a whole window) and turns its
findings into alerts. A source idle for ``min(state.key_idle_evict, 2 *
window)`` of wall time is forgotten (its open episode resolved).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Union

from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

from detectors.attacks import AttackFinding, SourceAttacks
from operators.alerts import make_alert, resolved
from operators.guard import StepFailure, guarded
from operators.model_windows import _utc_in
from operators.stateful import stateful, step_name
from operators.windowing import frozen
from sentinel import shutdown
from sentinel.config import FlowConfig
from sentinel.core.times import iso
from sentinel.core.types import Alert, KeyGroup
from sentinel.events import SecurityEvent
from sentinel.metrics import get_metrics


def make_detector(cfg: FlowConfig) -> SourceAttacks:
    ac = cfg.detection.coordinated_attack
    return SourceAttacks(window=ac.window, threshold=ac.threshold)


@dataclass
class AttackState:
    source: str
    detector: SourceAttacks
    last_wall: float = 0.0
    last_ingest: float = 0.0
    firing: Optional[Alert] = None  # the open episode's alert (a dict in older snapshots)

    def __setstate__(self, s) -> None:
        if "detector" not in s:
            # A snapshot from before the detector was its own: the counts it kept are the detector's
            # learned state (the tuning values are the flow's, set when the state is restored).
            firing = s.get("firing")
            det = SourceAttacks()
            opened: Optional[Tuple[float, int, str, float]] = None
            if firing is not None:
                a = Alert.of(firing)
                opened = (a.event_ts, int(a.observed), str(a.severity), a.score)
            det.restore(s.get("times", []), s.get("kinds", Counter()), s.get("services", Counter()),
                        s.get("active_until", float("-inf")), opened)
            s = {"source": s["source"], "detector": det, "last_wall": s.get("last_wall", 0.0),
                 "last_ingest": s.get("last_ingest", 0.0), "firing": firing}
        self.__dict__.update(s)


class AttackLogic(StatefulLogic[Tuple[str, str, List[SecurityEvent], float, int], Alert, AttackState]):
    def __init__(self, cfg: FlowConfig, state: Optional[AttackState],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock  # the wall clock (monotonic seconds) of idle eviction; tests pass a fake one
        self.ac = cfg.detection.coordinated_attack
        self.state = state
        m = get_metrics()
        self._metrics = m
        self._keys = m.keys_active.labels(kind="source")
        self._keys.inc()

    def on_item(self, value):
        source, _part, events, ingested_at, _nparts = value
        st = self.state
        if st is None:
            st = self.state = AttackState(source, make_detector(self.cfg))
        st.last_wall = self.clock()
        st.last_ingest = ingested_at
        return self._route(st.detector.update(events)), StatefulLogic.RETAIN

    def on_notify(self):
        st = self.state
        if st is not None and self.clock() - st.last_wall >= min(self.cfg.state.key_idle_evict,
                                                                 2 * self.ac.window):
            self._keys.dec()
            return self._resolve_open(), StatefulLogic.DISCARD
        return [], StatefulLogic.RETAIN

    def on_eof(self):
        if not shutdown.flush_on_eof():
            return [], StatefulLogic.RETAIN
        return self._resolve_open(), StatefulLogic.RETAIN

    def _resolve_open(self) -> List[Alert]:
        st = self.state
        if st is None:
            return []
        f = st.detector.close()
        return self._route([f] if f is not None else [])

    def notify_at(self):
        if self.state is None:
            return None
        return _utc_in(min(self.cfg.state.key_idle_evict, 2 * self.ac.window))

    def snapshot(self) -> AttackState:
        return frozen(self.state)

    def _route(self, findings: List[AttackFinding]) -> List[Alert]:
        st = self.state
        out: List[Alert] = []
        for f in findings:
            if f.status == "firing":
                st.firing = self._alert(f)
                out.append(st.firing)
            elif st.firing is not None:
                out.append(resolved(st.firing, f.end))
                st.firing = None
        return out

    def _alert(self, f: AttackFinding) -> Alert:
        source = self.state.source
        self._metrics.anomaly("coordinated_attack", f.severity, f.service, f.model)
        return make_alert(
            "coordinated_attack", "security_events", f.count, f.threshold, f.score, f.severity, "security_rate",
            f.first, f.service, f.model, subject=source,
            evidence={"events_in_window": f.count, "window_seconds": f.window, "kinds": f.kinds,
                      "fired_event_time": iso(f.fired)},
            summary=f"{f.count} security events from {source} within {f.window / 60:.0f} minutes "
                    f"({', '.join(f.kinds)}).",
            ingested_at=self.state.last_ingest,
        )


@operator
def attack_counter(
    step_id: str,
    up: KeyedStream[KeyGroup],
    cfg: FlowConfig,
    clock: Callable[[], float] = time.monotonic,
    refresh: Optional[Callable[[FlowConfig, Optional[AttackState]], Optional[AttackState]]] = None,
) -> KeyedStream[Union[Alert, StepFailure]]:
    """Per security source: its events in a sliding window, ``coordinated_attack`` alerts; a group that
    raises is a :class:`StepFailure`. ``refresh(cfg, state)`` adapts a restored key's state to ``cfg``."""

    def build(st: Optional[AttackState]) -> AttackLogic:
        return AttackLogic(cfg, refresh(cfg, st) if refresh is not None else st, clock)

    return stateful(up, guarded(step_name(step_id), build, clock=clock))
