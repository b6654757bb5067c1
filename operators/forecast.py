"""Predictive warnings: a key's latency, error rate or cost per request heading for its alert level.

Keyed by service/model, fed by the parse step's groups (the same events as
``model_windows``), on tumbling windows of event time of the same size. For
each closed window three values are kept, each on a scale where its noise is
about even:

- latency: the log of the geometric mean of the window's successful calls;
- cost: the log of the geometric mean cost per successful call;
- error rate: ``asin(sqrt(errors / requests))`` (the binomial's variance
  stabiliser: its spread is ``1 / (2 sqrt(n))`` whatever the rate).

The key's alert level of a value is learned from the key's own windows
before the trend (at most ``HISTORY`` of them): their median plus the z at
which the key's detectors alert (``detection.threshold`` through
:func:`detectors.robust.score_to_z`, about 5) times their robust spread
(1.4826 MAD, at least a floor). Over the last ``forecast.windows`` windows a
least-squares line is fitted; its slope counts when it is at least
``min_slope_z`` standard errors above zero (the standard error from the
larger of the fit's residual spread and the learned spread, so a flat key's
tiny wiggles or a run of correlated windows do not make a trend), and the
line (or a line that starts at one of the windows, flat before it: a
trend's onset) must fit the windows better than any single step does (a
step is an incident that has begun, which the key's detectors page, not a
trend). When the
latest window is still below the level and the line reaches it within
``horizon``, an alert of the value's type goes out with severity ``info``,
detector ``trend_forecast`` and ``evidence.forecast`` true, the projected
crossing time, the slope and the level. One warning per episode: the
episode resolves when the level is reached (the key's detectors take over)
or when no trend has been seen for ``horizon``; another warning of that
value needs ``horizon`` of event time after the resolve.

Windows need ``detection.min_requests`` requests (successful ones for
latency and cost) to count, and a value needs ``detection.warmup_windows``
windows before the trend to have a level. No wall clock enters the
forecast: the wall time only closes the windows of a quiet key, as in
``model_windows``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

from detectors.robust import score_to_z
from operators.alerts import alert_id, fingerprint, make_alert, resolved
from operators.guard import StepFailure, guarded
from operators.model_windows import _utc_in
from operators.stateful import stateful, step_name
from operators.windowing import KeyWindows
from sentinel import shutdown
from sentinel.config import FlowConfig
from sentinel.core.times import iso
from sentinel.core.types import Alert, KeyGroup
from sentinel.events import KEY_SEP
from sentinel.metrics import get_metrics

DETECTOR = "trend_forecast"
HISTORY = 60          # windows before the trend that the level is learned from
COST_OFFSET = 1e-6    # dollars added before the log (as the cost detector does)

# value -> (alert type, metric, floor of the robust spread on the value's scale)
VALUES: Dict[str, Tuple[str, str, float]] = {
    "latency": ("latency", "latency_gmean_ms", 0.02),
    "error_rate": ("error_rate", "error_rate", 0.01),
    "cost": ("cost", "cost_per_request_usd", 0.02),
}
WHAT = {"latency": "Typical latency", "error_rate": "Error rate", "cost": "Cost per request"}


class ForecastAgg:
    """What one window of one key needs for the trends: counts and sums of logs."""

    __slots__ = ("start", "count", "errors", "lat_n", "lat_sum", "cost_n", "cost_sum")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0
        self.errors = 0
        self.lat_n = 0
        self.lat_sum = 0.0
        self.cost_n = 0
        self.cost_sum = 0.0

    def add(self, ev: Any) -> None:
        self.count += 1
        if ev.is_error:
            self.errors += 1
            return
        if ev.latency_ms is not None:
            self.lat_n += 1
            self.lat_sum += math.log(ev.latency_ms + 1.0)
        if ev.cost_usd is not None:
            self.cost_n += 1
            self.cost_sum += math.log(ev.cost_usd + COST_OFFSET)

    def values(self, min_requests: int) -> Dict[str, Optional[float]]:
        """Each value of the window on its own scale, None where the window has too few requests."""
        return {
            "latency": self.lat_sum / self.lat_n if self.lat_n >= min_requests else None,
            "cost": self.cost_sum / self.cost_n if self.cost_n >= min_requests else None,
            "error_rate": math.asin(math.sqrt(self.errors / self.count)) if self.count >= min_requests else None,
        }

    def __getstate__(self):
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, s) -> None:
        for k, v in zip(self.__slots__, s):
            setattr(self, k, v)


def to_natural(value: str, y: float) -> float:
    """A value back from its scale: milliseconds, dollars per request, a rate."""
    if value == "latency":
        return math.exp(y) - 1.0
    if value == "cost":
        return math.exp(y) - COST_OFFSET
    return math.sin(min(max(y, 0.0), math.pi / 2)) ** 2


def _median(xs: List[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


@dataclass
class Trend:
    """A significant rise towards the level: what a warning says."""

    slope: float          # per minute, on the value's scale
    slope_z: float        # slope / its standard error
    fitted: float         # the line at the latest window
    latest: float         # the latest window's value
    location: float       # the learned level of normal
    level: float          # the alert level
    minutes: float        # from the latest window's end to the projected crossing


def fit_trend(points: List[Tuple[float, float]], location: float, spread: float, level: float,
              min_slope_z: float) -> Optional[Trend]:
    """The least-squares line through ``points`` ((minute, value), oldest first), if its slope is
    significantly positive and the latest value is still below ``level``; else None."""
    n = len(points)
    if n < 4:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx <= 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    if slope <= 0:
        return None
    x_last, latest = points[-1]
    fitted = my + slope * (x_last - mx)
    if latest >= level or fitted >= level:
        return None
    resid = sum((y - (my + slope * (x - mx))) ** 2 for x, y in points)
    if step_fits_better(points, min(resid, hinge_ss(points))):
        return None
    sd = max(math.sqrt(resid / (n - 2)), spread)
    z = slope / (sd / math.sqrt(sxx))
    if z < min_slope_z:
        return None
    return Trend(slope, z, fitted, latest, location, level, (level - fitted) / slope)


def hinge_ss(points: List[Tuple[float, float]]) -> float:
    """Least squared error of a line that starts at one of the windows (flat before it): a trend's onset."""
    n = len(points)
    ys = [y for _, y in points]
    my = sum(ys) / n
    syy = sum((y - my) ** 2 for y in ys)
    best = syy
    for j in range(1, n - 2):
        xj = points[j][0]
        us = [max(0.0, x - xj) for x, _ in points]
        mu = sum(us) / n
        suu = sum((u - mu) ** 2 for u in us)
        if suu <= 0:
            continue
        suy = sum((u - mu) * (y - my) for u, y in zip(us, ys))
        best = min(best, syy - suy * suy / suu)
    return best


def step_fits_better(points: List[Tuple[float, float]], line_ss: float) -> bool:
    """Whether two flat segments (the best split, each of two windows at least) leave less squared
    error than the line's ``line_ss``: the values jumped rather than climbed."""
    ys = [y for _, y in points]
    n = len(ys)
    total, total_sq = sum(ys), sum(y * y for y in ys)
    left = left_sq = 0.0
    for k in range(1, n - 1):
        left += ys[k - 1]
        left_sq += ys[k - 1] * ys[k - 1]
        if k < 2:
            continue
        right, right_sq = total - left, total_sq - left_sq
        ss = (left_sq - left * left / k) + (right_sq - right * right / (n - k))
        if ss < line_ss:
            return True
    return False


@dataclass
class _Series:
    """One value of one key: its windows (end, value or None), newest last, and its warning episode."""

    points: List[Tuple[float, Optional[float]]] = field(default_factory=list)
    firing: Optional[Alert] = None  # a dict in older snapshots
    last_support: float = float("-inf")   # window end at which the trend was last seen
    quiet_until: float = float("-inf")    # no new warning before this event time


@dataclass
class ForecastState:
    key: str
    windows: KeyWindows
    series: Dict[str, _Series] = field(default_factory=dict)
    last_ingest: float = 0.0


class KeyForecaster:
    """The forecasts of one key over its closed windows (no Bytewax, no wall clock)."""

    def __init__(self, horizon: float, windows: int, min_slope_z: float, warmup: int, threshold: float) -> None:
        self.horizon = horizon
        self.windows = windows
        self.min_slope_z = min_slope_z
        self.warmup = warmup
        self.z_alert = score_to_z(threshold)

    def step(self, value: str, s: _Series, end: float, y: Optional[float]) -> Tuple[Optional[Trend], Optional[str]]:
        """Add a window's value: (the trend if a new warning is due, why an open warning resolves:
        ``reached`` or ``faded``, else None)."""
        s.points.append((end, y))
        if len(s.points) > HISTORY + self.windows:
            del s.points[:len(s.points) - HISTORY - self.windows]
        recent = [(e / 60.0, v) for e, v in s.points[-self.windows:] if v is not None]
        before = [v for _, v in s.points[:-self.windows] if v is not None]
        trend = None
        reached = False
        if len(before) >= self.warmup and y is not None and len(recent) >= max(4, math.ceil(0.7 * self.windows)):
            loc = _median(before)
            spread = max(1.4826 * _median([abs(v - loc) for v in before]), VALUES[value][2])
            level = loc + self.z_alert * spread
            reached = y >= level
            trend = fit_trend(recent, loc, spread, level, self.min_slope_z)
            if trend is not None and trend.minutes * 60.0 > self.horizon:
                trend = None
        if trend is not None:
            s.last_support = end
        if s.firing is not None:
            if reached:
                return None, "reached"
            return None, "faded" if end - s.last_support >= self.horizon else None
        if trend is not None and end >= s.quiet_until:
            return trend, None
        return None, None


class ForecastLogic(StatefulLogic[Tuple[str, str, list, float, int], Alert, ForecastState]):
    """Per service/model key: windows -> trends -> info warnings (and their resolves)."""

    def __init__(self, cfg: FlowConfig, state: Optional[ForecastState], now: Any = time.time,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.state = state
        self._now = now  # the alerts' timestamps (epoch seconds)
        # The wall clock (monotonic seconds) of idle partitions, quiet windows and key eviction; tests pass a fake one.
        self.clock = clock
        d = cfg.detection
        f = d.forecast
        self.forecaster = KeyForecaster(f.horizon, f.windows, f.min_slope_z, d.warmup_windows, d.threshold)
        self._metrics = get_metrics()

    def on_item(self, value: Tuple[str, str, list, float, int]) -> Tuple[Iterable[Alert], bool]:
        key, part, events, ingested_at, nparts = value[:5]
        st = self.state
        if events is None:  # the partition's source has read all there is: it holds the windows no more
            if st is None:
                return [], StatefulLogic.DISCARD
            st.windows.quiet(part)
            return self._close(st.windows.close_ready(self.clock()), None), StatefulLogic.RETAIN
        if st is None:
            w = self.cfg.windows
            st = self.state = ForecastState(key, KeyWindows(w.size, w.allowed_lateness, w.idle_partition,
                                                            w.max_open_windows, ForecastAgg))
        now = self.clock()
        for ev in events:
            agg = st.windows.agg_for(part, ev.ts, now, nparts)
            if agg is not None:
                agg.add(ev)
        st.last_ingest = ingested_at
        return self._close(st.windows.close_ready(now), ingested_at), StatefulLogic.RETAIN

    def on_notify(self) -> Tuple[Iterable[Alert], bool]:
        st = self.state
        now = self.clock()
        if now - st.windows.last_wall >= self.cfg.state.key_idle_evict:
            return self._close(st.windows.close_all(), None), StatefulLogic.DISCARD
        st.windows.forget_idle_partitions(now, self.cfg.state.key_idle_evict)
        return self._close(st.windows.close_ready(now), None), StatefulLogic.RETAIN

    def on_eof(self) -> Tuple[Iterable[Alert], bool]:
        if self.state is None or not shutdown.flush_on_eof():
            return [], StatefulLogic.RETAIN
        return self._close(self.state.windows.close_all(), None), StatefulLogic.RETAIN

    def notify_at(self) -> Optional[datetime]:
        if self.state is None:
            return None
        if self.state.windows.open_count:
            return _utc_in(self.cfg.state.idle_flush)
        return _utc_in(self.cfg.state.key_idle_evict)

    def snapshot(self) -> ForecastState:
        return copy.deepcopy(self.state)

    def _close(self, closed, ingested_at: Optional[float]) -> List[Alert]:
        out: List[Alert] = []
        size = self.cfg.windows.size
        min_requests = self.cfg.detection.min_requests
        st = self.state
        for start, agg in closed:
            end = start + size
            values = agg.values(min_requests) if agg is not None else {}
            for value in VALUES:
                s = st.series.get(value)
                if s is None:
                    s = st.series[value] = _Series()
                trend, resolve = self.forecaster.step(value, s, end, values.get(value))
                if resolve is not None:
                    r = resolved(s.firing, end)
                    r.evidence["outcome"] = resolve
                    out.append(r)
                    s.firing = None
                    s.quiet_until = end + self.forecaster.horizon
                elif trend is not None:
                    s.firing = self._warning(value, trend, start, end, ingested_at)
                    out.append(s.firing)
        return out

    def _warning(self, value: str, t: Trend, start: float, end: float,
                 ingested_at: Optional[float]) -> Alert:
        service, _, model = self.state.key.partition(KEY_SEP)
        type_, metric, _ = VALUES[value]
        crossing = end + t.minutes * 60.0
        level = to_natural(value, t.level)
        observed = to_natural(value, t.latest)
        expected = to_natural(value, t.location)
        # Per minute, relative for the logged values (a rate's slope is in its own scale's units).
        rel = math.exp(t.slope) - 1.0 if value != "error_rate" else None
        evidence = {
            "forecast": True,
            "projected_crossing": iso(crossing),
            "minutes_to_crossing": round(t.minutes, 1),
            "level": level,
            "slope_per_minute": round(t.slope, 6),
            "slope_scale": "asin_sqrt" if value == "error_rate" else "log",
            "slope_z": round(t.slope_z, 2),
            "fitted": to_natural(value, t.fitted),
            "windows": self.forecaster.windows,
            "horizon_seconds": self.forecaster.horizon,
            "first_window_start": iso(end - self.forecaster.windows * self.cfg.windows.size),
            "fired_event_time": iso(end),
        }
        if rel is not None:
            evidence["relative_change_per_minute"] = round(rel, 5)
        when = datetime.fromtimestamp(crossing, timezone.utc).strftime("%H:%M")
        # A rate's slope in points a minute: d(sin^2 y)/dy = sin(2y).
        pace = f"{rel:+.1%} a minute" if rel is not None else \
            f"{100 * math.sin(2 * t.fitted) * t.slope:+.2f} points a minute"
        fmt = (lambda v: f"{v:,.0f} ms") if value == "latency" else \
              (lambda v: f"${v:.4g}") if value == "cost" else (lambda v: f"{v:.1%}")
        summary = (f"Forecast: {WHAT[value].lower()} of {service}/{model} is rising ({pace}; now {fmt(observed)}, "
                   f"usual {fmt(expected)}): at this rate it crosses its alert level {fmt(level)} by {when} UTC, "
                   f"in about {max(1, round(t.minutes))} minutes.")
        score = min(1.0, t.slope_z / (2.0 * self.forecaster.min_slope_z))
        alert = make_alert(type_, metric, observed, expected, round(score, 4), "info", DETECTOR, start,
                           service, model, evidence=evidence, summary=summary, ingested_at=ingested_at,
                           now=self._now())
        # A warning is an episode of its own, apart from the regular alerts of the key and type.
        alert.fingerprint = fingerprint(type_, service, model, f"forecast:{metric}")
        alert.alert_id = alert_id(alert.fingerprint, start)
        self._metrics.anomaly(type_, "info", service, model)
        return alert


@operator
def forecast(
    step_id: str,
    up: KeyedStream[KeyGroup],
    cfg: FlowConfig,
    clock: Callable[[], float] = time.monotonic,
) -> KeyedStream[Union[Alert, StepFailure]]:
    """Per service/model key (the parse step's groups): info warnings of trends towards the alert level,
    and their resolves; a group that raises is a :class:`StepFailure`. ``clock`` is the step's wall
    clock (monotonic seconds)."""
    return stateful(up, guarded(step_name(step_id), lambda st: ForecastLogic(cfg, st, clock=clock), clock=clock))
