"""Per-source security events (``coordinated_attack``).

More than ``threshold`` security events from one source within ``window``
seconds of event time is an attack; one alert per episode, which ends when
the source has been quiet for a whole window.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from bytewax.operators import StatefulLogic

from operators.alerts import make_alert, resolved
from operators.model_windows import _utc_in
from operators.windowing import frozen
from sentinel import shutdown
from sentinel.config import FlowConfig
from sentinel.core.times import iso
from sentinel.core.types import Alert
from sentinel.events import SecurityEvent
from sentinel.metrics import get_metrics


@dataclass
class AttackState:
    source: str
    times: List[float] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)
    services: Counter = field(default_factory=Counter)
    active_until: float = float("-inf")
    last_wall: float = 0.0
    last_ingest: float = 0.0
    firing: Optional[Alert] = None  # the open episode's alert (a dict in older snapshots)


class AttackLogic(StatefulLogic[Tuple[str, str, List[SecurityEvent], float, int], Alert, AttackState]):
    def __init__(self, cfg: FlowConfig, state: Optional[AttackState]) -> None:
        self.cfg = cfg
        self.ac = cfg.detection.coordinated_attack
        self.state = state
        m = get_metrics()
        self._metrics = m
        self._keys = m.keys_active.labels(kind="source")
        self._keys.inc()

    def on_item(self, value):
        source, _part, events, ingested_at, _nparts = value
        if self.state is None:
            self.state = AttackState(source)
        st = self.state
        st.last_wall = time.monotonic()
        st.last_ingest = ingested_at
        win = self.ac.window
        out: List[Alert] = []
        times = st.times
        for ev in events:
            if st.firing is not None and ev.ts > st.active_until:
                out.append(resolved(st.firing, st.active_until))
                st.firing = None
            bisect.insort(times, ev.ts)
            st.kinds[ev.kind] += 1
            if ev.service:
                st.services[(ev.service, ev.model)] += 1
            lo = bisect.bisect_left(times, ev.ts - win)
            hi = bisect.bisect_right(times, ev.ts + win)
            # The densest window containing this event, in either direction.
            first = lo
            count = 0
            for i in range(lo, hi):
                j = bisect.bisect_right(times, times[i] + win, i, hi)
                if j - i > count:
                    count, first = j - i, i
            if count > self.ac.threshold and times[first] > st.active_until:
                st.active_until = times[first + count - 1] + win
                st.firing = self._alert(times[first], count, ev.ts)
                out.append(st.firing)
            elif count > self.ac.threshold:
                st.active_until = max(st.active_until, ev.ts + win)
        # Keep two windows of history behind the newest event.
        cut = bisect.bisect_left(times, times[-1] - 2 * win) if times else 0
        if cut:
            del times[:cut]
        return out, StatefulLogic.RETAIN

    def on_notify(self):
        st = self.state
        if st is not None and time.monotonic() - st.last_wall >= min(self.cfg.state.key_idle_evict,
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
        if st is None or st.firing is None:
            return []
        out = [resolved(st.firing, st.active_until)]
        st.firing = None
        return out

    def notify_at(self):
        if self.state is None:
            return None
        return _utc_in(min(self.cfg.state.key_idle_evict, 2 * self.ac.window))

    def snapshot(self) -> AttackState:
        return frozen(self.state)

    def _alert(self, first_ts: float, count: int, fired: float) -> Alert:
        st = self.state
        sev = "critical" if count > 3 * self.ac.threshold else "high"
        service, model = st.services.most_common(1)[0][0] if st.services else (None, None)
        kinds = dict(st.kinds.most_common(5))
        self._metrics.anomaly("coordinated_attack", sev, service, model)
        return make_alert(
            "coordinated_attack", "security_events", count, self.ac.threshold,
            min(1.0, 0.9 + 0.1 * min(1.0, count / (4.0 * self.ac.threshold))), sev, "security_rate",
            first_ts, service, model, subject=st.source,
            evidence={"events_in_window": count, "window_seconds": self.ac.window, "kinds": kinds,
                      "fired_event_time": iso(fired)},
            summary=f"{count} security events from {st.source} within {self.ac.window / 60:.0f} minutes "
                    f"({', '.join(kinds)}).",
            ingested_at=st.last_ingest,
        )
