"""Where a service/model key's windows and baselines live.

Input per key: ``(key, partition, [LLMEvent, ...], ingested_at, partitions)``
groups made by the parse step. Output: alert dicts (SPEC section 2).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterable, List, Optional, Tuple

from bytewax.operators import StatefulLogic

from detectors.hints import OTHER
from detectors.priors import ParentPriors
from detectors.windowed import POOLED, KeyDetectors, WindowFeatures, log_stats
from operators.alerts import iso, make_alert
from operators.windowing import KeyWindows
from sentinel import crosskey, shutdown
from sentinel.config import FlowConfig
from sentinel.events import KEY_SEP, LLMEvent
from sentinel.metrics import get_metrics

Group = Tuple[str, str, List[LLMEvent], float, int]

# Noise levels of this process's keys, by service, provider and fleet: what a
# new key borrows until it has its own history (not snapshotted: keys report
# again within minutes of a restart).
PRIORS = ParentPriors()

# When one window opens several episodes on a key, the likely cause goes out first, so the
# incident it starts is paged under it (a prompt change: tokens, then the latency it causes).
CAUSE_ORDER = {"traffic": 0, "tokens": 1, "cost": 2, "error_rate": 3, "latency": 4, "ttft": 5}
TTFT_LEADS = 1.2


def cause_first(findings: List[Any]) -> List[Any]:
    """``findings`` with the likely cause first (CAUSE_ORDER). Time to first token is part of a
    call's latency: when both open and ttft rose by the larger factor, the rise is in the time to
    first token (a queue, a longer prompt's prefill) and ttft goes before the latency it moves;
    when the whole call slowed alike (the two factors within TTFT_LEADS of each other), latency
    leads. A ttft x3 that is a fifth of the latency moves it x1.4: far apart."""
    if len(findings) < 2:
        return findings
    ratio = {fd.type: fd.observed / fd.expected for fd in findings
             if fd.status == "firing" and fd.type in ("latency", "ttft") and fd.expected}
    ttft_leads = len(ratio) == 2 and ratio["ttft"] > TTFT_LEADS * ratio["latency"]
    order = dict(CAUSE_ORDER, ttft=3.5) if ttft_leads else CAUSE_ORDER
    return sorted(findings, key=lambda fd: order.get(fd.type, len(order)))


DETECTOR_NAMES = {"drift": "cusum_drift", "multivariate": "half_space_trees", "error_rate": "binomial_rate"}
# Distinct error types counted per window; the rest count under OTHER.
MAX_ERROR_TYPES = 16
# Users with more than one request kept per window for the pools' design effect (the largest).
MAX_CLUSTERS = 256


class WindowAgg:
    """Running aggregate of one window of one key."""

    __slots__ = ("start", "count", "errors", "lat", "ttft", "in_tok", "out_tok", "cost", "tok_total", "cost_total",
                 "err_types", "users")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0
        self.errors = 0
        self.lat: List[float] = []
        self.ttft: List[float] = []
        self.in_tok: List[int] = []
        self.out_tok: List[int] = []
        self.cost: List[float] = []
        self.tok_total = 0
        self.cost_total = 0.0
        self.err_types: Optional[Dict[Optional[str], int]] = None  # made at the window's first error
        self.users: List[Optional[str]] = []  # the user of each successful request, in order

    def add(self, ev: LLMEvent) -> None:
        self.count += 1
        if ev.is_error:
            # A failed call's latency (a 30 s timeout) and usage say nothing
            # about the model's speed or cost: error_rate covers it.
            self.errors += 1
            types = self.err_types
            if types is None:
                types = self.err_types = {}
            name = ev.error_type
            if name in types:
                types[name] += 1
            elif len(types) < MAX_ERROR_TYPES:
                types[name] = 1
            else:
                types[OTHER] = types.get(OTHER, 0) + 1
            return
        self.users.append(ev.user_id)
        if ev.latency_ms is not None:
            self.lat.append(ev.latency_ms)
        if ev.ttft_ms is not None:
            self.ttft.append(ev.ttft_ms)
        if ev.input_tokens is not None:
            self.in_tok.append(ev.input_tokens)
            self.tok_total += ev.input_tokens
        if ev.output_tokens is not None:
            self.out_tok.append(ev.output_tokens)
            self.tok_total += ev.output_tokens
        if ev.cost_usd is not None:
            self.cost.append(ev.cost_usd)
            self.cost_total += ev.cost_usd

    def features(self, size: float) -> WindowFeatures:
        lat = sorted(self.lat)
        ttft = sorted(self.ttft)
        logs = {}
        users = self.users
        grouped = len(users) > 1 and any(users)
        many = None
        if grouped:
            counts: Dict[str, int] = {}
            for u in users:
                if u:
                    counts[u] = counts.get(u, 0) + 1
            many = {u: c for u, c in counts.items() if c > 1}
            if len(many) > MAX_CLUSTERS:
                many = dict(sorted(many.items(), key=lambda uc: -uc[1])[:MAX_CLUSTERS])
            many = many or None
        for attr, m, xs in (
                ("in_log", "input_tokens_mean", self.in_tok), ("out_log", "output_tokens_mean", self.out_tok),
                ("cost_log", "cost_per_request_usd", self.cost), ("lat_log", "latency_gmean_ms", self.lat),
                ("ttft_log", "ttft_gmean_ms", self.ttft)):
            logs[attr] = log_stats(xs, POOLED[m][1])
        return WindowFeatures(
            self.start,
            self.start + size,
            self.count,
            self.errors,
            _q(lat, 0.5),
            _q(lat, 0.95),
            _q(ttft, 0.95),
            _geometric_mean(logs["in_log"], POOLED["input_tokens_mean"][1]),
            _geometric_mean(logs["out_log"], POOLED["output_tokens_mean"][1]),
            _geometric_mean(logs["cost_log"], POOLED["cost_per_request_usd"][1]),
            self.cost_total,
            self.tok_total,
            self.err_types,
            lat_gmean=_geometric_mean(logs["lat_log"], POOLED["latency_gmean_ms"][1]),
            ttft_gmean=_geometric_mean(logs["ttft_log"], POOLED["ttft_gmean_ms"][1]),
            clusters=many,
            **logs,
        )

    def __getstate__(self):
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, s) -> None:
        self.err_types = None  # states from before error types were counted
        self.users = []  # and before users were
        for k, v in zip(self.__slots__, s):
            setattr(self, k, v)


def _q(xs: List[float], q: float) -> Optional[float]:
    """Nearest-rank quantile of a sorted list."""
    if not xs:
        return None
    i = int(q * len(xs))
    return xs[i if i < len(xs) else -1]


def _geometric_mean(stats, offset: float) -> Optional[float]:
    """The per-request value a window reports: ``exp(mean of log(x + offset)) - offset``
    (see :func:`detectors.windowed.log_stats`)."""
    if stats is None:
        return None
    return math.exp(stats[1] / stats[0]) - offset


@dataclass
class ModelKeyState:
    key: str
    windows: KeyWindows
    detectors: KeyDetectors
    provider: Optional[str] = None
    last_ingest: float = 0.0


def _utc_in(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


class ModelWindowLogic(StatefulLogic[Group, Dict[str, Any], ModelKeyState]):
    """Per service/model key: windows -> features -> detectors -> alerts."""

    def __init__(self, cfg: FlowConfig, state: Optional[ModelKeyState]) -> None:
        self.cfg = cfg
        self.state = state
        if state is not None:
            self.service, _, self.model = state.key.partition(KEY_SEP)
        m = get_metrics()
        self._late = m.events.labels(outcome="late")
        self._ok = m.events.labels(outcome="ok")  # every event of a key ends here as ok or late
        self._metrics = m
        self._windows_closed = m.windows_closed
        self._keys = m.keys_active.labels(kind="model")
        self._keys.inc()
        self._warming = m.keys_warming.labels(kind="model")
        self._is_warming = False
        self._track_warmup()

    def _new_state(self, key: str) -> ModelKeyState:
        w, d = self.cfg.windows, self.cfg.detection
        self.service, _, self.model = key.partition(KEY_SEP)
        return ModelKeyState(
            key,
            KeyWindows(w.size, w.allowed_lateness, w.idle_partition, w.max_open_windows, WindowAgg),
            KeyDetectors(tuple(d.metrics), d.warmup_windows, d.min_requests, d.threshold,
                         d.persistence, d.quiet_windows, seasonality=d.seasonality, cold_windows=d.cold_windows,
                         drift_min_change=d.drift_min_change),
        )

    def on_item(self, value: Group) -> Tuple[Iterable[Dict[str, Any]], bool]:
        key, part, events, ingested_at, nparts = value
        st = self.state
        if st is None:
            st = self.state = self._new_state(key)
            self._track_warmup()
        now = time.monotonic()
        win = st.windows
        late = 0
        max_ts = 0.0
        for ev in events:
            agg = win.agg_for(part, ev.ts, now, nparts)
            if agg is None:
                late += 1
                continue
            agg.add(ev)
            if ev.ts > max_ts:
                max_ts = ev.ts
        if late:
            self._late.inc(late)
        if len(events) > late:
            self._ok.inc(len(events) - late)
        if st.provider is None and events:
            st.provider = events[0].provider
        st.last_ingest = ingested_at
        if max_ts:
            self._metrics.event_batch(max_ts, events[0].ts)
        return self._close(win.close_ready(now), ingested_at), StatefulLogic.RETAIN

    def on_notify(self) -> Tuple[Iterable[Dict[str, Any]], bool]:
        st = self.state
        now = time.monotonic()
        idle = now - st.windows.last_wall
        if idle >= self.cfg.state.key_idle_evict:
            out = self._close(st.windows.close_all(), None)
            self._keys.dec()
            self._track_warmup(evicted=True)
            return out, StatefulLogic.DISCARD
        st.windows.forget_idle_partitions(now, self.cfg.state.key_idle_evict)
        return self._close(st.windows.close_ready(now), None), StatefulLogic.RETAIN

    def on_eof(self) -> Tuple[Iterable[Dict[str, Any]], bool]:
        if self.state is None or not shutdown.flush_on_eof():
            return [], StatefulLogic.RETAIN
        return self._close(self.state.windows.close_all(), None), StatefulLogic.RETAIN

    def notify_at(self) -> Optional[datetime]:
        st = self.state
        if self.state is None:
            return None
        if st.windows.open_count:
            return _utc_in(self.cfg.state.idle_flush)
        return _utc_in(self.cfg.state.key_idle_evict)

    def _parents(self):
        p = self.state.provider
        return (("service", self.service),) + ((("provider", p),) if p else ()) + (("fleet",),)

    def snapshot(self) -> ModelKeyState:
        crosskey.maybe_save()
        return copy.deepcopy(self.state)

    def _close(self, closed, ingested_at: Optional[float]) -> List[Dict[str, Any]]:
        if not closed:
            return []
        size = self.cfg.windows.size
        det = self.state.detectors
        out: List[Dict[str, Any]] = []
        for start, agg in closed:
            f = agg.features(size) if agg is not None else WindowFeatures(start, start + size)
            findings = det.update(f, PRIORS if self.cfg.detection.borrow_from_parents else None,
                                  self._parents(), self.state.key)
            findings = cause_first(findings)
            for fd in findings:
                ev = dict(fd.evidence)
                ev["provider"] = self.state.provider
                ev["fired_event_time"] = iso(fd.window_end)
                if "change_start" in ev:
                    ev["change_start"] = iso(ev["change_start"])
                ev["first_window_start"] = iso(ev["first_window_start"])
                alert = make_alert(
                    fd.type, fd.metric, fd.observed, fd.expected, fd.score, fd.severity,
                    DETECTOR_NAMES.get(fd.type, "robust_baseline"), fd.event_time,
                    self.service, self.model, evidence=ev,
                    # Only alerts born of a batch have an ingest time to measure from
                    # (a window closed by the idle timer has none).
                    ingested_at=ingested_at,
                    status=fd.status,
                    root_cause_hints=fd.hints,
                )
                if fd.status == "firing":
                    self._metrics.anomaly(fd.type, fd.severity, self.service, self.model)
                out.append(alert)
        self._windows_closed.inc(len(closed))
        self._metrics.windows_closed_at([start + size for start, _ in closed])
        self._track_warmup()
        return out

    def _track_warmup(self, evicted: bool = False) -> None:
        """``sentinel_keys_warming``: the key counts while its detectors have seen fewer windows than the warm-up."""
        det = self.state.detectors if self.state is not None else None
        warming = not evicted and det is not None and det.windows_seen < det.warmup_windows
        if warming != self._is_warming:
            self._is_warming = warming
            if warming:
                self._warming.inc()
            else:
                self._warming.dec()
