"""Where a service/model key's windows and baselines live.

Input per key: ``(key, partition, Requests, ingested_at, partitions)``
groups made by the parse step (:class:`sentinel.events.Requests`: the key's
requests of one source batch, as columns). A group is folded into its
windows a window at a time (:func:`fold_windows`), not a request at a time. Output: alert dicts (SPEC section 2).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from functools import reduce
from itertools import compress
from operator import add
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

from detectors.hints import OTHER
from detectors.windowed import POOLED, KeyDetectors, WindowFeatures, log_stats
from operators.alerts import make_alert
from operators.guard import StepFailure, guarded, outcome_dead_letters
from operators.stateful import stateful, step_name
from operators.windowing import KeyWindows, frozen
from sentinel import shutdown
from sentinel.config import FlowConfig
from sentinel.core.times import iso
from sentinel.core.types import Alert, KeyGroup
from sentinel.crosskey import CrossKey
from sentinel.events import KEY_SEP, LLMEvent, Requests
from sentinel.metrics import get_metrics

Group = Tuple[str, str, Requests, float, int]

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
# Users with more than one request kept per window for the pools' user component (the largest).
MAX_CLUSTERS = 256


def _count_error_type(types: Dict[Optional[str], int], name: Optional[str]) -> None:
    """Count one failed request under its error type (under OTHER past MAX_ERROR_TYPES types)."""
    if name in types:
        types[name] += 1
    elif len(types) < MAX_ERROR_TYPES:
        types[name] = 1
    else:
        types[OTHER] = types.get(OTHER, 0) + 1


def _tpot(latency: float, ttft: Optional[float], out: int) -> float:
    """A request's time per output token: its time after the first token over its output tokens
    (its whole latency without a ttft, or with one above it)."""
    if ttft is not None and ttft < latency:
        latency -= ttft
    return latency / out


# Successful requests whose values a window keeps (MAX_WINDOW_SAMPLES at most, half as many after
# a thinning): past them, a window keeps every ``stride``-th request, its counts and totals exact.
MAX_WINDOW_SAMPLES = 4096
_VALUE_COLUMNS = ("lat", "ttft", "in_tok", "out_tok", "cost", "users", "unit", "tpot")


class WindowAgg:
    """Running aggregate of one window of one key.

    Counts, errors and totals are exact. The per-request values (latency, tokens, cost, users)
    are every request's up to ``MAX_WINDOW_SAMPLES`` of them; past that the window thins them to
    every second one and from then on keeps every ``stride``-th successful request (the stride
    doubling whenever the cap is reached again), so a key of a million requests a minute holds a
    few thousand values, not a million. Quantiles and geometric means come from that systematic
    sample, with its own size as their ``n``."""

    __slots__ = ("start", "count", "errors", "lat", "ttft", "in_tok", "out_tok", "cost", "tok_total", "cost_total",
                 "err_types", "users", "unit", "tpot", "stride", "seen")

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
        self.unit: List[float] = []  # what a million tokens cost, per request with cost and tokens
        self.tpot: List[float] = []  # time per output token, per request with latency and output tokens
        self.stride = 1  # every stride-th successful request's values are kept
        self.seen = 0  # successful requests folded so far

    def add(self, ev: LLMEvent) -> None:
        self.count += 1
        if ev.is_error:
            # A failed call's latency (a 30 s timeout) and usage say nothing
            # about the model's speed or cost: error_rate covers it.
            self.errors += 1
            types = self.err_types
            if types is None:
                types = self.err_types = {}
            _count_error_type(types, ev.error_type)
            return
        if ev.input_tokens is not None:
            self.tok_total += ev.input_tokens
        if ev.output_tokens is not None:
            self.tok_total += ev.output_tokens
        if ev.cost_usd is not None:
            self.cost_total += ev.cost_usd
        seen = self.seen
        self.seen = seen + 1
        if seen % self.stride:  # not sampled: counted in the totals only
            return
        self.users.append(ev.user_id)
        if ev.latency_ms is not None:
            self.lat.append(ev.latency_ms)
        if ev.ttft_ms is not None:
            self.ttft.append(ev.ttft_ms)
        if ev.input_tokens is not None:
            self.in_tok.append(ev.input_tokens)
        if ev.output_tokens is not None:
            self.out_tok.append(ev.output_tokens)
            if ev.latency_ms is not None and ev.output_tokens > 0:
                self.tpot.append(_tpot(ev.latency_ms, ev.ttft_ms, ev.output_tokens))
        if ev.cost_usd is not None:
            self.cost.append(ev.cost_usd)
            if ev.input_tokens is not None and ev.output_tokens is not None:
                tokens = ev.input_tokens + ev.output_tokens
                if tokens > 0:
                    self.unit.append(ev.cost_usd * 1e6 / tokens)
        if len(self.users) > MAX_WINDOW_SAMPLES:
            self._thin()

    def _thin(self) -> None:
        """Keep every second kept request's values (those of the successful requests at multiples
        of twice the stride) and double the stride."""
        for name in _VALUE_COLUMNS:
            setattr(self, name, getattr(self, name)[::2])
        self.stride *= 2

    def fold(self, reqs: Requests, sel: Any = None) -> None:
        """:meth:`add` of the requests of ``reqs`` at ``sel`` (a slice or a list of positions; all when
        None), in order, column by column: the same lists, counts and sums as one :meth:`add` per request."""
        is_error = _take(reqs.is_error, sel)
        n = len(is_error)
        if not n:
            return
        self.count += n
        users = _take(reqs.user_id, sel)
        lat = _take(reqs.latency_ms, sel)
        ttft = _take(reqs.ttft_ms, sel)
        in_tok = _take(reqs.input_tokens, sel)
        out_tok = _take(reqs.output_tokens, sel)
        cost = _take(reqs.cost_usd, sel)
        if True in is_error:
            self.errors += is_error.count(True)
            types = self.err_types
            if types is None:
                types = self.err_types = {}
            for name in compress(_take(reqs.error_type, sel), is_error):
                _count_error_type(types, name)
            ok = [not e for e in is_error]
            users = list(compress(users, ok))
            lat = list(compress(lat, ok))
            ttft = list(compress(ttft, ok))
            in_tok = list(compress(in_tok, ok))
            out_tok = list(compress(out_tok, ok))
            cost = list(compress(cost, ok))
        if self.stride == 1 and len(self.users) + len(users) <= MAX_WINDOW_SAMPLES:
            self.seen += len(users)
            in_tok, out_tok, cost = self._append(users, lat, ttft, in_tok, out_tok, cost)
            self.tok_total += sum(in_tok) + sum(out_tok)  # integers: any order gives the same total
            # One addition after another, as add() does: the same float to the last bit.
            self.cost_total = reduce(add, cost, self.cost_total)
            return
        # Totals from every request; values from every stride-th (counted from the window's first
        # successful request), thinned at the request where one add() after another would thin.
        self.tok_total += sum([x for x in in_tok if x is not None]) + sum([x for x in out_tok if x is not None])
        self.cost_total = reduce(add, [x for x in cost if x is not None], self.cost_total)
        seen = self.seen
        m = len(users)
        i = 0
        while i < m:
            stride = self.stride
            first = i + (-(seen + i)) % stride
            # Up to the request whose value fills the window past the cap.
            end = min(m, first + (MAX_WINDOW_SAMPLES - len(self.users)) * stride + 1)
            sl = slice(first, end, stride)
            self._append(users[sl], lat[sl], ttft[sl], in_tok[sl], out_tok[sl], cost[sl])
            i = end
            if len(self.users) > MAX_WINDOW_SAMPLES:
                self._thin()
        self.seen = seen + m

    def _append(self, users, lat, ttft, in_tok, out_tok, cost) -> Tuple[List[int], List[int], List[float]]:
        """Keep the values of some successful requests (columns; None where a request has no such
        value); return their input tokens, output tokens and costs without the Nones."""
        self.users.extend(users)
        self.unit.extend([c * 1e6 / (i + o) for c, i, o in zip(cost, in_tok, out_tok)
                          if c is not None and i is not None and o is not None and i + o > 0])
        self.tpot.extend([_tpot(x, f, o) for x, f, o in zip(lat, ttft, out_tok)
                          if x is not None and o is not None and o > 0])
        self.lat.extend([x for x in lat if x is not None])
        self.ttft.extend([x for x in ttft if x is not None])
        in_tok = [x for x in in_tok if x is not None]
        out_tok = [x for x in out_tok if x is not None]
        self.in_tok.extend(in_tok)
        self.out_tok.extend(out_tok)
        cost = [x for x in cost if x is not None]
        self.cost.extend(cost)
        return in_tok, out_tok, cost

    def features(self, size: float) -> WindowFeatures:
        lat = sorted(self.lat)
        ttft = sorted(self.ttft)
        logs = {}
        users = self.users
        grouped = len(users) > 1 and any(users)
        many = None
        rest = None
        top = None
        for attr, m, xs in (
                ("in_log", "input_tokens_mean", self.in_tok), ("out_log", "output_tokens_mean", self.out_tok),
                ("cost_log", "cost_per_request_usd", self.cost), ("lat_log", "latency_gmean_ms", self.lat),
                ("ttft_log", "ttft_gmean_ms", self.ttft), ("unit_log", "cost_per_million_tokens_usd", self.unit),
                ("tpot_log", "latency_per_output_token_ms", self.tpot)):
            logs[attr] = log_stats(xs, POOLED[m][1])
        if grouped:
            counts: Dict[str, int] = {}
            for u in users:
                if u:
                    counts[u] = counts.get(u, 0) + 1
            many = {u: c for u, c in counts.items() if c > 1}
            busiest = max(counts.items(), key=lambda uc: uc[1]) if counts else None
            rest = _without_busiest(users, busiest, self.lat, self.ttft, self.seen, self.stride)
            top = _busiest_logs(users, busiest, (
                ("in_log", self.in_tok, POOLED["input_tokens_mean"][1], logs["in_log"]),
                ("out_log", self.out_tok, POOLED["output_tokens_mean"][1], logs["out_log"]),
                ("cost_log", self.cost, POOLED["cost_per_request_usd"][1], logs["cost_log"])))
            if len(many) > MAX_CLUSTERS:
                many = dict(sorted(many.items(), key=lambda uc: -uc[1])[:MAX_CLUSTERS])
            many = many or None
        # The tail quantiles without the window's largest request: one slow request is not a slow model.
        n = len(lat)
        lat_top = lat[min(int(0.95 * (n - 1)), n - 2)] if n > 1 else None
        n = len(ttft)
        ttft_top = ttft[min(int(0.95 * (n - 1)), n - 2)] if n > 1 else None
        rest = (rest or (self.count, None, None, None)) + (lat_top, ttft_top)
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
            rest=rest,
            unit_cost=_geometric_mean(logs["unit_log"], POOLED["cost_per_million_tokens_usd"][1]),
            tpot=_geometric_mean(logs["tpot_log"], POOLED["latency_per_output_token_ms"][1]),
            top=top,
            stride=self.stride,
            **logs,
        )

    def __getstate__(self):
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, s) -> None:
        self.err_types = None  # states from before error types were counted
        self.users = []  # and before users were
        # And before the cost of a million tokens and the time per output token: a window open at
        # the snapshot judges them on the requests it gets from here on.
        self.unit = []
        self.tpot = []
        self.stride = 1  # and before a window's values were thinned
        for k, v in zip(self.__slots__, s):
            setattr(self, k, v)
        if len(s) < len(self.__slots__):
            self.seen = len(self.users)


def _without_busiest(users: List[Optional[str]], busiest: Optional[Tuple[str, int]], lat: List[float],
                     ttft: List[float], seen: int, stride: int,
                     ) -> Optional[Tuple[int, Optional[float], Optional[float], Optional[float]]]:
    """The window's quantiles without its busiest user (``busiest``: ``(user, requests)``, None
    when no request named a user): ``(requests, latency p50, latency p95,
    ttft p95)`` (:meth:`WindowAgg.features` adds the p95s without the largest request), or None
    when that user sent too little of the window to make its tail alone (fewer than 2 requests,
    or under 5% of them: a p95 is the top 5%). One agent task's slow calls are then told from a
    slow model: the rest of the window is where it always was. ``users``, ``lat`` and ``ttft`` are
    the kept values of every ``stride``-th of the window's ``seen`` successful requests, so the
    requests left are ``seen`` less ``stride`` for each of the user's kept ones."""
    if busiest is None:
        return None
    top, c = busiest
    n = len(users)
    if c < 2 or c < 0.05 * n:
        return None
    keep = [u != top for u in users]
    lat_r = sorted(compress(lat, keep)) if len(lat) == n else None
    ttft_r = sorted(compress(ttft, keep)) if len(ttft) == n else None
    return (max(0, seen - c * stride), _q(lat_r, 0.5) if lat_r else None, _q(lat_r, 0.95) if lat_r else None,
            _q(ttft_r, 0.95) if ttft_r else None)


def _busiest_logs(users: List[Optional[str]], busiest: Optional[Tuple[str, int]],
                  columns: Sequence[Tuple[str, Sequence[float], float, Optional[Tuple[int, float, float]]]],
                  ) -> Optional[Tuple[str, Dict[str, Tuple[int, float]]]]:
    """The window's busiest user (``busiest``, as for :func:`_without_busiest`) and, per pooled
    metric whose values line up with the users
    (``(attr, values, offset, the window's log_stats)``), that user's ``(requests, sum of
    log(x + offset))``; None when no user sent two requests. A pooled mean's rise must hold
    without that user (:meth:`detectors.robust.PooledLogMean.judge`). The smaller side is summed:
    the user's requests, or the others' (taken from the window's sum)."""
    if busiest is None:
        return None
    top, c = busiest
    if c < 2:
        return None
    n = len(users)
    mine = 2 * c <= n
    at = [i for i, u in enumerate(users) if (u == top) is mine] if c < n else []
    log = math.log
    sums = {}
    for attr, xs, off, stats in columns:
        if len(xs) == n and stats is not None:
            part = sum(log(xs[i] + off) if xs[i] > 0 else log(off) for i in at)
            sums[attr] = (c, part if mine else stats[1] - part)
    return top, sums


def _take(col: Sequence[Any], sel: Any) -> Sequence[Any]:
    """The items of a column at ``sel``: all (None), a slice, or a list of positions."""
    if sel is None:
        return col
    if sel.__class__ is slice:
        return col[sel]
    return [col[i] for i in sel]


def fold_windows(win: KeyWindows, part: str, ts: Sequence[float], now: float, nparts: int, data: Any,
                 fold: Callable[[Any, Any, Any], None], idx: Optional[List[int]] = None) -> Tuple[int, float]:
    """Fold a batch's events (those at positions ``idx``, else all) into ``win``, a window at a time:
    ``fold(agg, data, sel)`` once per open window they fall in, ``sel`` their positions (None: all;
    a slice; a list), in order.

    The same as ``win.agg_for(part, ts[i], now, nparts)`` and a fold per event, in order: the windows'
    partition clocks only keep maxima, so one call per window with its latest event time leaves them
    as the per-event calls do. Returns (events in windows already closed, latest event time folded;
    0.0 when none)."""
    size = win.size
    if idx is None:
        if not ts:
            return 0, 0.0
        lo, hi = min(ts), max(ts)
    else:
        if not idx:
            return 0, 0.0
        sel = [ts[i] for i in idx]
        lo, hi = min(sel), max(sel)
    if lo - lo % size == hi - hi % size:  # one window
        agg = win.agg_for(part, hi, now, nparts)
        if agg is None:
            return len(ts) if idx is None else len(idx), 0.0
        fold(agg, data, idx)
        return 0, hi
    late = 0
    max_ts = 0.0
    if idx is None and (ts[0] == lo and ts[-1] == hi and list(ts) == sorted(ts)):
        # In time order (a partition read in order): each window's events are a slice.
        def start_of(t: float) -> float:
            return t - t % size

        i, n = 0, len(ts)
        while i < n:
            t = ts[i]
            j = bisect_right(ts, t - t % size, i, n, key=start_of)
            top = ts[j - 1]
            agg = win.agg_for(part, top, now, nparts)
            if agg is None:
                late += j - i
            else:
                fold(agg, data, slice(i, j))
                if top > max_ts:
                    max_ts = top
            i = j
        return late, max_ts
    by_start: Dict[float, List[int]] = {}
    for i in (range(len(ts)) if idx is None else idx):
        t = ts[i]
        start = t - t % size
        g = by_start.get(start)
        if g is None:
            by_start[start] = [i]
        else:
            g.append(i)
    for g in by_start.values():
        top = max([ts[i] for i in g])
        agg = win.agg_for(part, top, now, nparts)
        if agg is None:
            late += len(g)
            continue
        fold(agg, data, g)
        if top > max_ts:
            max_ts = top
    return late, max_ts


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


class ModelWindowLogic(StatefulLogic[Group, Alert, ModelKeyState]):
    """Per service/model key: windows -> features -> detectors -> alerts."""

    def __init__(self, cfg: FlowConfig, state: Optional[ModelKeyState], crosskey: CrossKey,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.state = state
        # The wall clock (monotonic seconds) of idle partitions, quiet windows and key eviction; never
        # of detection, which runs on event time. Tests pass a fake one.
        self.clock = clock
        # The flow's cross-key references: the parents' noise levels a key borrows, and feeds.
        self._crosskey = crosskey
        self._priors = crosskey.priors if cfg.detection.borrow_from_parents else None
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

    def on_item(self, value: Group) -> Tuple[Iterable[Alert], bool]:
        key, part, reqs, ingested_at, nparts = value
        st = self.state
        if reqs is None:  # the partition's source has read all there is: it holds the windows no more
            if st is None:  # an evicted key: nothing to close, and no key to count
                self._keys.dec()
                return [], StatefulLogic.DISCARD
            st.windows.quiet(part)
            return self._close(st.windows.close_ready(self.clock()), None), StatefulLogic.RETAIN
        if st is None:
            st = self.state = self._new_state(key)
            self._track_warmup()
        if reqs.__class__ is not Requests:  # a list of events (tests, older callers)
            reqs = Requests.of_events(reqs)
        now = self.clock()
        win = st.windows
        n = len(reqs)
        late, max_ts = fold_windows(win, part, reqs.ts, now, nparts, reqs, WindowAgg.fold)
        if late:
            self._late.inc(late)
        if n > late:
            self._ok.inc(n - late)
        if st.provider is None and n:
            st.provider = reqs.provider[0]
        st.last_ingest = ingested_at
        if max_ts:
            self._metrics.event_batch(max_ts, reqs.ts[0])
        return self._close(win.close_ready(now), ingested_at), StatefulLogic.RETAIN

    def on_notify(self) -> Tuple[Iterable[Alert], bool]:
        st = self.state
        now = self.clock()
        idle = now - st.windows.last_wall
        if idle >= self.cfg.state.key_idle_evict:
            out = self._close(st.windows.close_all(), None)
            self._keys.dec()
            self._track_warmup(evicted=True)
            return out, StatefulLogic.DISCARD
        st.windows.forget_idle_partitions(now, self.cfg.state.key_idle_evict)
        return self._close(st.windows.close_ready(now), None), StatefulLogic.RETAIN

    def on_eof(self) -> Tuple[Iterable[Alert], bool]:
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
        self._crosskey.maybe_save()
        return frozen(self.state)

    def _close(self, closed, ingested_at: Optional[float]) -> List[Alert]:
        if not closed:
            return []
        size = self.cfg.windows.size
        det = self.state.detectors
        out: List[Alert] = []
        for start, agg in closed:
            f = agg.features(size) if agg is not None else WindowFeatures(start, start + size)
            findings = det.update(f, self._priors, self._parents(), self.state.key)
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


@operator
def model_windows(
    step_id: str,
    up: KeyedStream[KeyGroup],
    cfg: FlowConfig,
    crosskey: CrossKey,
    clock: Callable[[], float] = time.monotonic,
    refresh: Optional[Callable[[FlowConfig, Optional[ModelKeyState]], Optional[ModelKeyState]]] = None,
) -> KeyedStream[Union[Alert, StepFailure]]:
    """Per service/model key: windows, features, detectors, alerts; a group that raises is a
    :class:`StepFailure` (its events counted as dead letters). ``refresh(cfg, state)`` adapts a
    restored key's state to ``cfg``; ``clock`` is the step's wall clock (monotonic seconds)."""

    def build(st: Optional[ModelKeyState]) -> ModelWindowLogic:
        return ModelWindowLogic(cfg, refresh(cfg, st) if refresh is not None else st, crosskey, clock)

    return stateful(up, guarded(step_name(step_id), build, outcome_dead_letters, clock))
