"""The per-type detectors of one service/model key, composed by :class:`detectors.windowed.KeyDetectors`.

Each judges one kind of metric of a key's closed windows against what it has
learned, score first, then learn:

* :class:`TrafficDetector`: the request count, with its time-of-day profile,
  its minute-of-hour profile (scheduled batches), the key's own bursts and the
  sum of its last 15 windows;
* :class:`PooledDetector`: per-request metrics judged on the mean of their
  logs, pooled over windows (tokens and cost per request, latency and ttft
  geometric means);
* :class:`QuantileDetector`: latency and ttft quantiles, which must hold
  without the window's busiest user;
* :class:`ErrorRateDetector`: the error rate (binomial test, CUSUM, pooled
  test over the last windows);
* :class:`DriftWatch`: slow drift of tokens and cost per request (CUSUM).

What combines types (the episodes and their findings, a token rise confirmed
by its effects, drift rebased on a sudden episode, the order of likely
causes) is ``KeyDetectors``'s. As every detector in ``detectors/``: the
tuning values are constructor arguments and public attributes, the learned
state is in the underscored ones, and :meth:`clone` is a new detector with
the same tuning and nothing learned.

Examples
--------
>>> d = QuantileDetector(("latency_p95_ms",), warmup_windows=4)
>>> class W:  # a window's features: only what the detector reads
...     lat_p95 = 100.0
...     rest = None
>>> d.score("latency_p95_ms", W(), 0.0, True, False, {}) is not None
True
>>> d.clone().metrics
('latency_p95_ms',)
"""

from __future__ import annotations

import math
from array import array
from typing import Any, Dict, List, Optional, Tuple

from detectors.drift import DriftDetector
from detectors.hints import OTHER
from detectors.robust import PooledLogMean, RobustBaseline, poisson_sf, score_to_z, z_to_score
from detectors.seasonal import HourProfile, PeriodMemory, SeasonalProfile


# metric name -> (alert type, feature attribute, direction: +1 high side, 0 both sides)
METRICS: Dict[str, Tuple[str, str, int]] = {
    "latency_p95_ms": ("latency", "lat_p95", +1),
    # The median moves with the whole distribution and is far steadier than a
    # p95 of thirty requests: it catches a slow model on a quiet key.
    "latency_p50_ms": ("latency", "lat_p50", +1),
    # The geometric mean of the requests' latencies, pooled over windows where a key has few
    # requests (PooledLogMean): a slow model on a sparse key or a canary is judged too.
    "latency_gmean_ms": ("latency", "lat_gmean", +1),
    "ttft_p95_ms": ("ttft", "ttft_p95", +1),
    "ttft_gmean_ms": ("ttft", "ttft_gmean", +1),
    "output_tokens_mean": ("tokens", "out_tokens", +1),
    "input_tokens_mean": ("tokens", "in_tokens", +1),
    "cost_per_request_usd": ("cost", "cost", +1),
    # What a million tokens cost, request by request: a price or routing change at the same tokens
    # moves it as much as the cost per request, but the size of the requests, most of that one's
    # spread, does not.
    "cost_per_million_tokens_usd": ("cost", "unit_cost", +1),
    # Time per output token, request by request: its time after the first token over its output
    # tokens (its whole latency where no ttft is reported). A slower model moves it as much as the
    # latency, but the length of the answers, most of the latency's spread, does not.
    "latency_per_output_token_ms": ("latency", "tpot", +1),
    "request_count": ("traffic", "count", 0),
}
# Per-request metrics judged on the mean of their logs, pooled over windows (PooledLogMean):
# metric -> (feature with its log statistics, offset added before the log).
POOLED: Dict[str, Tuple[str, float]] = {
    "output_tokens_mean": ("out_log", 1.0),
    "input_tokens_mean": ("in_log", 1.0),
    "cost_per_request_usd": ("cost_log", 1e-6),
    "cost_per_million_tokens_usd": ("unit_log", 1e-4),
    "latency_per_output_token_ms": ("tpot_log", 1e-3),
    "latency_gmean_ms": ("lat_log", 1.0),
    "ttft_gmean_ms": ("ttft_log", 1.0),
}
# Quantile metrics -> their place in WindowFeatures.rest (the window without its busiest user).
REST_OF = {"latency_p50_ms": 1, "latency_p95_ms": 2, "ttft_p95_ms": 3}
# Where the same quantiles without the window's largest request are (WindowFeatures.rest).
TOP_OF = {"latency_p95_ms": 4, "ttft_p95_ms": 5}
# Metrics also watched for slow drift (type ``drift``): what the requests use and cost, and how fast
# the model answers (a provider or a serving stack that slows down over hours). The speed is the time
# per output token: the latency itself also moves with the answers' length and the day's mix.
DRIFT_METRICS = ("output_tokens_mean", "input_tokens_mean", "cost_per_request_usd",
                 "latency_per_output_token_ms")
# Windows by which the usual error rate lags (see ErrorRateDetector.learn).
ERR_GUARD = 10
# Learning rate of the count's burst statistics, and the Poisson tail a rise in traffic must pass
# once counted in bursts (TrafficDetector.beyond_bursts).
BURST_ALPHA = 0.02
BURST_P = 1e-3
# The least rise in traffic that pages: twice the usual count. A marketing push or a model rollout
# lifts a chat key's traffic x1.5-x2 beyond any doubt in counts; a traffic incident (a retry storm,
# a bot) moves it by a factor of three and more.
TRAFFIC_FACTOR = 2.0
# The least fall that pages: to 40% of the usual count. An outage takes most of a key's traffic away
# at once; a quarter hour's sum over a fall to 30% that lasts 15 minutes comes to 0.3-0.4 of its
# usual, as a window or two of the minutes before are in it. The evening on a key's first day,
# before the key knows its day, halves the count within a few minutes: a step, and twice the usual.
FALL_FACTOR = 2.5
# A traffic incident is a step: the count must also be that far (far_enough) from the key's own
# count of a few minutes before (the mean of the windows STEP_GAP to span_windows - 1 back, and
# for a quarter hour's sum, the sum of the quarter hour before it) when it starts to alert; the
# windows of a run that alerts are not held to it again until STEP_GAP in a row did not alert.
# The day's climb, x5 in 80 minutes on a consumer app's first morning, moves a quarter hour by
# a third.
STEP_GAP = 5
# Periods without a batch after which a key's schedule has stopped, not missed a batch
# (TrafficDetector._held): a missed batch is confirmed by the next run, and a job whose runs end
# for the night (or for good) sends no next run.
STOP_PERIODS = 2.0
# The slots of the day in which a key with a schedule notes that its batches ran (seconds).
RAN_SLOT = 600.0
# Requests per window at which a window is learned into the usual error rate at full weight.
ERR_MEMORY = 30.0

# What a metric detector's score gives for one metric of a window:
# (value, adjusted value, score, z, expected, (windows pooled, own value, its standard error) or None)
Scored = Tuple[float, float, float, float, float, Optional[Tuple[int, float, float]]]


def new_base(m: str, warmup_windows: int) -> RobustBaseline:
    """A fresh baseline of metric ``m``. Traffic keeps the plain scale (no dev_guard): with the
    guard, the scale of request counts came out narrow enough for a dip of 30 to 15 requests to page."""
    if m in POOLED:
        return PooledLogMean(alpha=0.05, min_scale=0.05, warmup=warmup_windows // 2, offset=POOLED[m][1])
    return RobustBaseline(alpha=0.05, log=True, min_scale=0.05 if m != "request_count" else 0.1,
                          warmup=warmup_windows // 2, offset=1.0,
                          dev_guard=math.inf if m == "request_count" else 2.0)


# The memories of days and weeks before (MetricDetector._recurring) of a key's span sums, in requests per window.
SPAN_MEMORY = "request_count_span"
# Windows whose sum a key with a schedule is judged on besides each window's own count: the
# window and one either side, as the minute-of-hour profile's tolerance of a batch a minute off.
SCHEDULE_SPAN = 3


def span_base(span_windows: int) -> RobustBaseline:
    """The baseline of a key's span sums (TrafficDetector._span_score). Consecutive sums share all
    but one window, so its scale needs several spans' worth of them: it judges after four spans.
    Unlike a window's count (:func:`new_base`), a sum far off moves the scale slowly (``dev_guard``):
    the fifteen sums of one surge would otherwise widen it as fifteen surges."""
    return RobustBaseline(log=True, min_scale=0.1, warmup=4 * span_windows, offset=1.0)


class MetricDetector:
    """What the metric detectors share: a robust baseline per metric and, with ``seasonality``,
    the metric's values at each time of day on the days before (:meth:`_recurring`). A metric
    gets its memory the first time a window of it would alert; most never do."""

    def __init__(self, metrics: Tuple[str, ...] = (), warmup_windows: int = 30, min_requests: int = 8,
                 threshold: float = 0.9, seasonality: bool = True, daily_tolerance: float = 3.0) -> None:
        self.metrics = tuple(metrics)
        self.warmup_windows = warmup_windows
        self.min_requests = min_requests
        self.threshold = threshold
        self.seasonality = seasonality
        self.daily_tolerance = daily_tolerance  # in noise levels (see PeriodMemory)
        self._base: Dict[str, RobustBaseline] = {m: new_base(m, warmup_windows) for m in self.metrics}
        # metric -> (daily, weekly or None) memory; None: seasonality is off.
        self._memory: Optional[Dict[str, Tuple[PeriodMemory, Optional[PeriodMemory]]]] = {} if seasonality else None

    def clone(self) -> "MetricDetector":
        """A new detector with the same tuning values and nothing learned."""
        return type(self)(self.metrics, self.warmup_windows, self.min_requests, self.threshold,
                          self.seasonality, self.daily_tolerance)

    def base(self, m: str) -> RobustBaseline:
        """Metric ``m``'s baseline."""
        return self._base[m]

    def _finish(self, m: str, value: float, adj: float, z: float, z_eff: float, cold: bool, season: float,
                mid: float, pattern: Dict[str, str], noise: Optional[float], f) -> Tuple[float, float]:
        """The score of a judged value (the cold discount, the metric's own rules, the day's
        pattern) and its expectation."""
        base = self._base[m]
        if cold:
            z_eff *= 0.75
        score = self._own_rules(m, z, z_to_score(z_eff), base, cold, f)
        if self._memory is not None and (score >= self.threshold or (abs(z) >= 2.0 and m in self._memory)):
            score = self._recurring(m, mid, value, z, base, score, pattern, noise)
        exp = base.expected()
        exp = value if exp is None else (exp + base.offset) * math.exp(season) - base.offset
        return score, exp

    def _own_rules(self, m: str, z: float, score: float, base: RobustBaseline, cold: bool, f) -> float:
        return score

    def _recurring(self, m: str, ts: float, value: float, z: float, base: RobustBaseline, score: float,
                   pattern: Dict[str, str], noise: Optional[float] = None) -> float:
        """The window's score, or 0 where its value is where it was at this time before.

        A value that is off its level (|z| >= 2) but within ``daily_tolerance`` noise levels of
        where it was at the same time (5 minutes either way, 10 for metrics other than traffic)
        on two of the three days before, and less than half as far from it as from its
        expectation, is the day's pattern: a lunch peak, a nightly batch with other prompts, a
        morning login wave. It does not count as anomalous, and it is not learned into the level
        (``pattern[m] = "daily"``). For traffic, a window that would alert but is where it was
        at the same hour of the week (an hour either way) on two of the three weeks before is the
        week's pattern (a quiet weekend): it does not count either, but the level follows it as
        any lasting change (``"weekly"``).
        """
        mems = self._memory.get(m)
        if mems is None:
            # The first window of this metric that would alert: from now on its values are kept.
            count = m in ("request_count", SPAN_MEMORY)
            self._memory[m] = (PeriodMemory(86400.0, 300.0 if count else 600.0, poisson=count),
                               PeriodMemory(7 * 86400.0, 3600.0) if count else None)
            return score
        lv = math.log(value + base.offset)
        # Where it was before must explain the value much better than the expectation does (a
        # window just off its level is as near the level's usual value then as the level itself;
        # not learning it would narrow the scale).
        scale = base.scale if noise is None else noise  # noise: the standard error z was measured in
        closer = 0.5 * abs(z) * scale
        if mems[0].seen_before(ts, lv, self.daily_tolerance, scale, closer):
            pattern[m] = "daily"
            return 0.0
        if (mems[1] is not None and score >= self.threshold
                and mems[1].seen_before(ts, lv, self.daily_tolerance, scale, closer)):
            pattern[m] = "weekly"
            return 0.0
        return score

    def learn(self, m: str, mid: float, value: float, adj: float, score: float, kind: Optional[str],
              pooled: Optional[Tuple[int, float, float]]) -> None:
        """Learn metric ``m``'s window (after it was scored): ``kind`` is where the window's value
        was at this time before ("daily", "weekly" or None), ``pooled`` the score's pool."""
        base = self._base[m]
        mems = self._memory.get(m) if self._memory is not None else None
        if mems is not None:
            lv = math.log(value + base.offset)
            mems[0].learn(mid, lv)
            if mems[1] is not None:
                mems[1].learn(mid, lv)
        if kind == "daily":
            # The day's pattern is not the level's or the scale's (for traffic, it is the
            # profile's): a peak would otherwise widen the scale for hours, and a metric's
            # nightly batch mix would be learned into its daytime level and back every day.
            if pooled is not None:
                base.mark(1, 2)
            return
        if pooled is not None:
            if score >= self.threshold:
                base.mark(pooled[0], 1)  # the pool that was anomalous is learned slowly
            return  # learned when it leaves the pool
        base.learn_one(adj)


class PooledDetector(MetricDetector):
    """Per-request metrics (POOLED) on the mean of their logs, over as many windows as it takes
    (PooledLogMean): a key of five requests a minute is judged too, by what its count says. A
    window without log statistics (a hand-made one) is judged on its value alone, when busy."""

    def score(self, m: str, f, mid: float, busy: bool, cold: bool, pattern: Dict[str, str]) -> Optional[Scored]:
        """Score metric ``m`` of window ``f`` (None: not judged in this window)."""
        value = getattr(f, METRICS[m][1])
        stats = getattr(f, POOLED[m][0])
        if value is None or (stats is None and not busy):
            return None
        base = self._base[m]
        value = float(value)
        noise = None
        pooled = None
        if stats is not None:
            top = getattr(f, "top", None)
            base.push(stats, clusters=f.clusters,
                      top=(top[0],) + top[1][POOLED[m][0]] if top is not None and POOLED[m][0] in top[1] else None)
            z, mlog, k, noise = base.judge()
            own = base.window_own
            pooled = (k, value, base.window_se) if own is None else (k, own[0], own[1])
            value = adj = math.exp(mlog) - base.offset
        else:
            adj = value
            z = base.z(adj)
        z_eff = 0.0 if z < 0 else abs(z)
        score, exp = self._finish(m, value, adj, z, z_eff, cold, 0.0, mid, pattern, noise, f)
        return value, adj, score, z, exp, pooled


class QuantileDetector(MetricDetector):
    """Latency and ttft quantiles of busy windows. A quantile that one user's requests could make
    alone must hold without them, and a p95 without the window's largest request
    (``WindowFeatures.rest``): in a window of a dozen requests the p95 is its slowest, and one
    request with a huge prompt or a cold start is not a slow model."""

    def score(self, m: str, f, mid: float, busy: bool, cold: bool, pattern: Dict[str, str]) -> Optional[Scored]:
        """Score metric ``m`` of window ``f`` (None: not judged in this window)."""
        value = getattr(f, METRICS[m][1])
        if value is None or not busy:
            return None
        value = float(value)
        adj = value
        z = self._base[m].z(adj)
        z_eff = 0.0 if z < 0 else abs(z)
        score, exp = self._finish(m, value, adj, z, z_eff, cold, 0.0, mid, pattern, None, f)
        return value, adj, score, z, exp, None

    def _own_rules(self, m: str, z: float, score: float, base: RobustBaseline, cold: bool, f) -> float:
        if score >= self.threshold and m in REST_OF and f.rest is not None:
            rest = f.rest
            own = rest[REST_OF[m]]
            if rest[0] < self.min_requests:
                return 0.0
            top = rest[TOP_OF[m]] if m in TOP_OF and len(rest) > TOP_OF[m] else None
            for held in (own, top):
                if held is not None:
                    score = min(score, z_to_score(max(base.z(held), 0.0) * (0.75 if cold else 1.0)))
        return score


def far_enough(count: float, expected: float) -> bool:
    """Whether ``count`` requests per window are at least ``TRAFFIC_FACTOR`` times ``expected``, or
    at most ``1 / FALL_FACTOR`` of it: a change in traffic large enough to page."""
    return count >= TRAFFIC_FACTOR * expected or FALL_FACTOR * count <= expected


def _ran_slot(ts: float) -> int:
    """The ``RAN_SLOT`` of the day ``ts`` falls in (TrafficDetector._ran)."""
    return int((ts % 86400.0) // RAN_SLOT)


def _day_mark(ts: float) -> int:
    """The day of ``ts`` as TrafficDetector._ran keeps it: modulo 65,535, plus one (0: never)."""
    return int(ts // 86400.0) % 65535 + 1


def without_busiest(f) -> float:
    """A window's requests without its busiest user's (all of them when no user sent two requests
    and 5% of the window: ``WindowFeatures.rest``). Its errors name no user: they count in the
    same share as its successful requests."""
    rest = f.rest
    ok = f.count - f.errors
    if rest is None or rest[0] >= ok or ok <= 0:
        return float(f.count)
    return rest[0] * f.count / ok


class TrafficDetector(MetricDetector):
    """The request count: compared with its level plus the offset usual for this time of day
    (SeasonalProfile), or, once the key's hour shows a schedule, with its minute-of-hour profile
    (HourProfile, made the first time a window would alert or the counts' scale passes
    ``hourly_scale``); a rise must also pass the key's own bursts (:meth:`beyond_bursts`), and so
    must a fall, except against a schedule (:meth:`below_bursts`). The sum
    of the last ``span_windows`` windows is judged too (:meth:`_span_score`)."""

    # States from before the span was judged start it afresh (see _span_score).
    span_windows = 15
    _recent: Optional[List[int]] = None
    _span_base: Optional[RobustBaseline] = None
    _span_sum: Optional[int] = None
    _own: Optional[float] = None
    _sums: Optional[List[int]] = None
    _span_bursts: Optional[List[float]] = None
    _fall: Tuple[float, float] = (0.0, 0.0)
    # Windows since the last that alerted, up to STEP_GAP: a run that started with a step is not
    # held to the step rule again (stepped) until STEP_GAP windows in a row did not alert.
    _cool: int = STEP_GAP
    # Span sums not learned yet, with whether each alerted: a sum is learned span_windows windows
    # late (states from before the lag: an empty queue).
    _span_pending: Optional[List[Tuple[int, bool]]] = None
    # A batch the schedule expected and that has not come (_held): (mid of the window it fell
    # short at, score, z, requests per window, expected, whether it was paged, the windows in a row
    # that fell); None otherwise.
    _missed: Optional[Tuple[float, float, float, float, float, bool, int]] = None
    # Per RAN_SLOT of the day, the last day (modulo 65,535, plus one) a batch ran there, for keys
    # with a schedule (_ran_the_day_before); None otherwise, and in states from before it.
    _ran: Optional[array] = None
    # Whether a batch (a window of min_requests) came since the schedule last fell short (_held).
    _back = False
    # Anomalous windows in a row that make a page (KeyDetectors.persistence).
    persistence = 2
    # Whether the windows now are a batch that came late (its requests at minutes the schedule
    # expects none of): not a rise.
    _late = False

    def __init__(self, metrics: Tuple[str, ...] = ("request_count",), warmup_windows: int = 30,
                 min_requests: int = 8, threshold: float = 0.9, seasonality: bool = True,
                 daily_tolerance: float = 3.0, hourly_scale: float = 0.7, span_windows: int = 15) -> None:
        super().__init__(metrics, warmup_windows, min_requests, threshold, seasonality, daily_tolerance)
        self.hourly_scale = hourly_scale
        self.span_windows = span_windows
        self._season = SeasonalProfile() if seasonality and "request_count" in self.metrics else None
        self._hourly: Optional[HourProfile] = None
        # [count level, window-to-window variance, last count (NaN after a window that alerted as a
        # fall), requests per user] (beyond_bursts).
        self._bursts: Optional[List[float]] = None
        # The counts of the last span_windows - 1 windows, and the baseline of span sums (_span_score).
        self._recent = []
        self._span_base = span_base(span_windows)
        self._span_sum = None  # the sum of the span that ends at the window being judged
        # The sums of the last span_windows spans, and [their level, half the mean squared difference
        # of sums a span apart]: how many requests a burst holds when bursts last for minutes.
        self._sums: Optional[List[int]] = []
        self._span_bursts: Optional[List[float]] = None
        self._own: Optional[float] = None  # the count of the window being judged
        # The requests and their expectation over the run of windows that fell so far (score).
        self._fall: Tuple[float, float] = (0.0, 0.0)

    def clone(self) -> "TrafficDetector":
        return TrafficDetector(self.metrics, self.warmup_windows, self.min_requests, self.threshold,
                               self.seasonality, self.daily_tolerance, self.hourly_scale, self.span_windows)

    def usual(self, mid: float) -> Optional[float]:
        """The count expected of the window at ``mid`` (None before any was learned)."""
        usual = self._base["request_count"].expected()
        if self._hourly is not None and self._hourly.adopted:
            usual = math.exp(self._hourly.expect(mid)[0]) - 1.0
        return usual

    def score(self, m: str, f, mid: float, busy: bool, cold: bool, pattern: Dict[str, str]) -> Optional[Scored]:
        """Score the window's request count (every window is judged)."""
        value = f.count
        if value is None:
            return None
        base = self._base[m]
        value = float(value)
        season = 0.0
        noise = None
        if self._hourly is not None and self._hourly.adopted:
            # The key's hour has a schedule (batches at set minutes): that is what it expects.
            z, lp, noise = self._hourly.judge(mid, math.log(value + 1.0))
            adj = value
            hourly_exp = math.exp(lp) - 1.0
        else:
            season = self._season.offset(mid) if self._season is not None else 0.0
            adj = value if season == 0.0 else (value + base.offset) * math.exp(-season) - base.offset
            z = base.z(adj)
        score, exp = self._finish(m, value, adj, z, abs(z), cold, season, mid, pattern, noise, f)
        if noise is not None:
            exp = hourly_exp
        if score >= self.threshold and not far_enough(value, exp):
            score = 0.0
        if score >= self.threshold and noise is None and self._cool >= STEP_GAP and not self.stepped(value):
            score = 0.0  # as far from the usual as a step, but the key came here gradually
        if z > 0 and score >= self.threshold and not self.beyond_bursts(value, exp):
            score = 0.0  # more requests than usual, but no more than the key's own bursts give
        if z > 0 and score >= self.threshold and not self._rise_of_users(f, value, exp):
            # More requests, but one user sent the rise (a batch job's first run, one client's loop):
            # the key's traffic is its users'; one user's volume is judged as that user's (token abuse).
            score = 0.0
        if z < 0 and score >= self.threshold and noise is None:
            # Fewer, but a key of tasks has minutes without any: the run of such windows must be
            # beyond doubt in bursts (a schedule expects its batches, and is left out).
            count, expected = self._fall
            self._fall = count, expected = count + value, expected + exp
            if not self.below_bursts(count, expected, mean=False):
                score = 0.0
        else:
            self._fall = (0.0, 0.0)
        self._own = value
        span = self._span_score(int(value), cold, score < self.threshold and m not in pattern and noise is None,
                                mid, pattern)
        if span is not None and far_enough(span[2], span[3]):
            # The span speaks: its requests per window against their usual (learn takes the window's own).
            score, z, value, exp = span
        elif noise is not None and score < self.threshold:
            fall = self._schedule_fall(int(value), cold, mid, pattern)
            if fall is not None and far_enough(fall[2], fall[3]):
                score, z, value, exp = fall
        if noise is not None:
            score, z, value, exp = self._held(f.count, mid, score, z, value, exp)
        elif self._missed is not None or self._late:
            # The schedule was given up; a missed batch held for its next run is not paged.
            held = self._holding()
            self._missed, self._late = None, False
            if held:
                score, z = 0.0, 0.0
        return value, adj, score, z, exp, None

    def _held(self, count: int, mid: float, score: float, z: float, value: float,
              exp: float) -> Tuple[float, float, float, float]:
        """A batch the schedule expected and that did not come is confirmed missed only when the
        schedule's next batch comes on time without it: the score, z, value and expectation of a
        window on a key with a schedule, with the windows of a missed batch held as one run from
        the minute it fell short (:meth:`may_page` holds their page, and the quiet minutes after it
        carry the fall so far). A batch that comes between the schedule's runs is the missed one,
        late, not a rise; no batch for ``STOP_PERIODS`` periods is a schedule that stopped: a
        nightly job's last run of the night, or a job that died. It pages only where the schedule
        still ran at that hour the day before (:meth:`_ran_the_day_before`): on its first day, a
        key cannot tell the two apart."""
        missed = self._missed
        if count >= self.min_requests:
            self._back = True
            if missed is not None:
                if self._holding() and self._next_run(missed, mid):
                    # The next run came on time, without the missed one: the run of windows pages now.
                    self._missed = missed[:5] + (True, missed[6])
                    return missed[1:5]
                # A batch came: the missed one, late, unless its page went out already.
                self._missed, self._late = None, not missed[5]
            if self._late:
                return 0.0, 0.0, value, exp
            return score, z, value, exp
        self._late = False
        if missed is not None and not missed[5] and self._stopped(missed, mid):
            # No run for STOP_PERIODS periods: the schedule stopped. Where it still ran at this hour
            # the day before, that pages (once); otherwise the window breaks the held run.
            if self._holding() and self._ran_the_day_before(mid):
                self._missed = missed[:5] + (True, missed[6])
                return missed[1:5]
            self._missed = None
            return 0.0, 0.0, value, exp
        if score >= self.threshold and z < 0.0:
            self._back = False
            if missed is None:
                self._missed = missed = (mid, score, z, value, exp, False, 1)
            elif not missed[5]:
                self._missed = missed = missed[:6] + (missed[6] + 1,)
            return score, z, value, exp
        if self._holding():
            return missed[1:5]  # the quiet minutes after a missed batch carry it
        if missed is not None and not missed[5]:
            self._missed = None  # a fall too short to page: no batch was missed
        return score, z, value, exp

    def may_page(self, mid: float) -> bool:
        """Whether the key's traffic may page at ``mid``: not while a missed batch (:meth:`_held`)
        that has fallen for ``persistence`` windows waits for the schedule's next run."""
        return not self._holding()

    def _holding(self) -> bool:
        """Whether a missed batch (:meth:`_held`) has fallen for ``persistence`` windows and waits,
        not paged yet, for the schedule's next run."""
        missed = self._missed
        return missed is not None and not missed[5] and missed[6] >= self.persistence

    def _next_run(self, missed: tuple, mid: float) -> bool:
        """Whether a batch at ``mid`` is the schedule's next run after the missed one: at least
        half a period after it, at a minute (or a minute either side) the schedule expects a batch
        at. Sooner, or between runs, it is the missed batch come late."""
        hourly = self._hourly
        if hourly is None or not hourly.adopted:
            return False
        half = hourly.half_period(self.min_requests)
        if half <= 0.0 or mid - missed[0] < half:
            return False
        at = math.log(self.min_requests + 1.0)
        return any(hourly.expect(mid + d)[0] >= at for d in (0.0, -60.0, 60.0))

    def _ran_the_day_before(self, ts: float) -> bool:
        """Whether a batch came within ``RAN_SLOT`` of the time of day of ``ts`` on the day before
        (``_ran``: per ``RAN_SLOT`` of the day, the last day a window there had ``min_requests``).
        Asked ``STOP_PERIODS`` periods after the last batch: a nightly job that ends a little earlier
        than the night before is not a job that died."""
        ran = self._ran
        if ran is None:
            return False
        day = _day_mark(ts - 86400.0)
        return any(ran[_ran_slot(ts + d)] == day for d in (-RAN_SLOT, 0.0, RAN_SLOT))

    def _learn_ran(self, mid: float) -> None:
        """Note that a batch ran at ``mid`` (see :meth:`_ran_the_day_before`); kept for keys with a schedule only."""
        if self._ran is None:
            self._ran = array("H", [0]) * int(86400.0 // RAN_SLOT)
        self._ran[_ran_slot(mid)] = _day_mark(mid)

    def _stopped(self, missed: tuple, mid: float) -> bool:
        """Whether no batch has come for ``STOP_PERIODS`` of the schedule's periods since ``missed``."""
        hourly = self._hourly
        half = hourly.half_period(self.min_requests) if hourly is not None else 0.0
        return half > 0.0 and mid - missed[0] > 2.0 * STOP_PERIODS * half

    def _rise_of_users(self, f, count: float, expected: float) -> bool:
        """Whether a rise to ``count`` requests holds without the window's busiest user: the
        others' requests still far enough from ``expected`` and beyond the key's bursts."""
        others = without_busiest(f)
        return others >= count or (far_enough(others, expected) and self.beyond_bursts(others, expected))

    def stepped(self, count: float) -> bool:
        """Whether ``count`` is far enough (:func:`far_enough`) from the mean count of the windows
        ``STEP_GAP`` to ``span_windows - 1`` back (True while fewer are known): a traffic
        incident moves the count in a minute, the day's curve over hours."""
        recent = self._recent
        if recent is None or len(recent) < max(STEP_GAP, self.span_windows - 1):
            return True
        before = recent[:len(recent) - (STEP_GAP - 1)]
        return far_enough(count, sum(before) / len(before))

    def between_batches(self, count: int) -> bool:
        """Whether a window of ``count`` requests on a key with a schedule (its minute-of-hour
        profile adopted) has fewer than ``min_requests`` and no batch came since the schedule
        last fell short: after batches that did not come, such a window is not the schedule back
        (the minutes between batches, or another empty batch). Once a batch came, the minutes
        after it count towards the fall's resolve, and a batch missed later is an incident of
        its own."""
        return (count < self.min_requests and not self._back and self._hourly is not None
                and self._hourly.adopted)

    def _schedule_fall(self, count: int, cold: bool, mid: float,
                       pattern: Dict[str, str]) -> Optional[Tuple[float, float, float, float]]:
        """The score, z, requests per window and their expectation of the last ``SCHEDULE_SPAN``
        windows of a key with a schedule, when their sum fell short of what the schedule expects
        of them (else None): a batch of two or three minutes that did not come, which the
        window's own judgement, tolerant of a batch a minute early or late, explains away
        (:meth:`HourProfile.judge_span`). A span the schedule expects fewer than
        ``min_requests`` of says nothing."""
        recent = self._recent
        if recent is None or len(recent) < SCHEDULE_SPAN - 1:
            return None
        counts = recent[len(recent) - (SCHEDULE_SPAN - 1):] + [count]
        z, expected, noise = self._hourly.judge_span(mid, counts)
        if z >= 0.0 or expected < self.min_requests:
            return None
        score = z_to_score(-z * (0.75 if cold else 1.0))
        if score < self.threshold:
            return None
        total = sum(counts)
        if self._memory is not None:
            score = self._recurring("request_count", mid, total / SCHEDULE_SPAN, z, self._base["request_count"],
                                    score, pattern, noise)
            if score < self.threshold:
                return None
        return score, z, total / SCHEDULE_SPAN, expected / SCHEDULE_SPAN

    def _span_score(self, count: int, cold: bool, judge: bool, mid: float,
                    pattern: Dict[str, str]) -> Optional[Tuple[float, float, float, float]]:
        """The score, z, requests per window and their usual of the sum of the last ``span_windows``
        windows' counts (this one's included) against the baseline of such sums, when it alerts
        (else None).

        A key whose requests come in tasks (an agent's calls, a developer's session of
        completions) has per-window counts that swing by a factor of ten, and a window's count
        says little: a surge to four times the usual for a quarter of an hour, or a fall to a
        fifth, hides in it. The sum over a quarter of an hour swings far less and shows it. The
        sum must also be beyond doubt once counted in the key's bursts (:meth:`beyond_bursts`),
        and the key must usually have ``min_requests`` a window (on a key of one request a
        minute, a quarter hour of two requests says more about its level's lag in the evening
        than about an outage).
        Keys with a schedule (the minute-of-hour profile) are judged by it instead, and a window
        already judged (``judge`` False) only has its span kept for learning. A span where the
        key's spans were at this time on the days or weeks before (a quiet weekend) is the
        pattern, as for a window (:meth:`_recurring`, with a memory of the spans)."""
        if self._recent is None:
            self._recent, self._span_base = [], span_base(self.span_windows)
            self._span_pending = []
            self._sums = []
        self._span_sum = None
        if self.span_windows < 2 or len(self._recent) < self.span_windows - 1:
            return None
        total = count + sum(self._recent)
        self._span_sum = total
        if not judge:
            return None
        base = self._span_base
        z = base.z(total)
        score = z_to_score(abs(z) * (0.75 if cold else 1.0))
        if score < self.threshold:
            return None
        usual = base.expected()
        span = self.span_windows
        if usual is None or usual < span * self.min_requests:
            return None  # a key of a few requests a window: the span's level is too uncertain to page on
        sb = self._span_bursts
        phi = max(self._phi(), sb[1] / sb[0] if sb is not None and sb[0] > 0.0 else 1.0)
        if z > 0 and not self.beyond_bursts(total, usual, span, phi):
            return None
        sums = self._sums
        if sums and len(sums) >= span and self._cool >= STEP_GAP and not far_enough(total, sums[0]):
            return None  # the quarter hour before was as far from the usual: no step
        if z < 0 and not self.below_bursts(total, usual, span, phi):
            return None
        if self._memory is not None:
            score = self._recurring(SPAN_MEMORY, mid, total / span, z, base, score, pattern)
            if score < self.threshold:
                return None
        return score, z, total / span, usual / span

    def _own_rules(self, m: str, z: float, score: float, base: RobustBaseline, cold: bool, f) -> float:
        if (self._hourly is None and self.seasonality and base.n >= base.warmup
                and (score >= self.threshold or base.scale > self.hourly_scale)):
            # Counts that would alert, or that vary far beyond a Poisson count's noise (scale
            # 0.7 is a factor of two between windows; a key of one request a minute has 0.5).
            self._hourly = HourProfile()
        return score

    def learn(self, m: str, mid: float, value: float, adj: float, score: float, kind: Optional[str],
              pooled: Optional[Tuple[int, float, float]]) -> None:
        base = self._base[m]
        hp = self._hourly
        self._cool = 0 if score >= self.threshold else min(self._cool + 1, STEP_GAP)
        if self._own is not None:
            value = self._own  # the window's own count (score may have reported its span's)
        total = self._span_sum
        if total is not None:
            # Learned a span late, as the error rate is: consecutive sums share all but one
            # window, and a surge's first sums, learned at once, had lifted the level halfway
            # to it by the time its whole quarter hour was in the sum.
            pending = self._span_pending
            if pending is None:
                pending = self._span_pending = []
            pending.append((total, score >= self.threshold))
            if len(pending) > self.span_windows:
                old_total, damp = pending.pop(0)
                self._span_base.learn_one(old_total, damp=damp)
            mems = self._memory.get(SPAN_MEMORY) if self._memory is not None else None
            if mems is not None:
                lv = math.log(total / self.span_windows + 1.0)
                mems[0].learn(mid, lv)
                mems[1].learn(mid, lv)
            sums = self._sums
            if len(sums) >= self.span_windows:
                d = total - sums.pop(0)
                sb = self._span_bursts
                if sb is None:
                    self._span_bursts = [float(total), 0.5 * d * d]
                else:
                    sb[0] += BURST_ALPHA * (total - sb[0])
                    sb[1] += BURST_ALPHA * (0.5 * d * d - sb[1])
            sums.append(total)
        self._recent.append(int(value))
        if len(self._recent) >= self.span_windows:
            del self._recent[0]
        if hp is not None and value >= self.min_requests:
            self._learn_ran(mid)
        if hp is not None and base.n > 0:
            plain = base._loc + (self._season.offset(mid) if self._season is not None else 0.0)
            hp.learn(mid, math.log(value + 1.0), plain, level=not (hp.adopted and score >= self.threshold))
        if self._season is not None and score < self.threshold and base.n > 0 and kind != "weekly":
            self._season.learn(mid, math.log(value + base.offset) - base._loc)
        super().learn(m, mid, value, adj, score, kind, pooled)

    def learn_bursts(self, count: int, per_user: Optional[float] = None, anomalous: bool = False) -> None:
        """Learn the key's count level, its window-to-window variance (half the mean squared
        difference of consecutive counts: slow swings such as the day's do not count, bursts do)
        and its requests per user in a window (an agent's task is a dozen calls a window for
        several windows: its calls come together, in no window-to-window difference).

        An ``anomalous`` window (its count alerts as a fall) teaches none of them, nor does the
        step from it to the next window: an outage's first minute would otherwise make its second
        look like the lull between two of the key's bursts. A rise that alerts is learned: that
        is how an agent key learns the size of its tasks."""
        b = self._bursts
        if b is None:
            if not anomalous:
                self._bursts = [float(count), 0.0, float(count), per_user or 1.0]
            return
        if len(b) < 4:
            b.append(1.0)  # states from before requests were counted per user
        if anomalous:
            b[2] = math.nan  # no step from this window to the next
            return
        a = BURST_ALPHA
        if not math.isnan(b[2]):
            d = count - b[2]
            b[1] += a * (0.5 * d * d - b[1])
        b[0] += a * (count - b[0])
        b[2] = float(count)
        if per_user is not None:
            b[3] += a * (per_user - b[3])

    def relearn_span(self) -> None:
        """Accept the current span sum as the new level (after a lasting shift was alerted)."""
        if self._span_sum is not None:
            self._span_base.relearn(self._span_sum)
            self._span_pending = []  # the sums from before the shift are not the level any more

    def beyond_bursts(self, count: float, expected: float, windows: int = 1, phi: Optional[float] = None) -> bool:
        """Whether ``count`` is beyond doubt above ``expected`` once requests are counted in the key's
        own bursts: with a dispersion ``phi`` (the larger of the window-to-window variance over the
        mean and the requests a user sends in a window; 1 for requests that come one by one, the
        size of a burst for an agent that sends its calls in tasks), ``count / phi`` bursts
        against ``expected / phi`` (a Poisson tail under ``BURST_P``). A canary that gets one agent
        task now and then is not a traffic spike."""
        b = self._bursts
        if b is None or b[0] <= 0.0:
            return True
        phi = phi or self._phi()
        # Against the larger of the baseline's expectation and the plain mean count (a log-scale
        # level of a mostly idle key is near zero; its mean is what its bursts add up to), over
        # ``windows`` windows.
        return poisson_sf(int(count / phi), max(expected, windows * b[0], 1e-3) / phi) < BURST_P

    def below_bursts(self, count: float, expected: float, windows: int = 1, phi: Optional[float] = None,
                     mean: bool = True) -> bool:
        """Whether ``count`` is beyond doubt below ``expected``, counted in the key's bursts as in
        :meth:`beyond_bursts` (a key of a few tasks a quarter hour that sees none is not down).
        With ``mean``, against the smaller of ``expected`` and the plain mean count (a span's sum);
        without, against ``expected`` alone (a window, whose expectation knows the day's peaks)."""
        b = self._bursts
        if b is None:
            return False
        phi = phi or self._phi()
        if mean:
            expected = min(expected, windows * b[0])
        return 1.0 - poisson_sf(int(count / phi) + 1, max(expected, 1e-3) / phi) < BURST_P

    def _phi(self) -> float:
        """How many requests a burst of the key holds (see :meth:`beyond_bursts`)."""
        b = self._bursts
        return max(1.0, b[1] / b[0] if b[0] > 0.0 else 1.0, b[3] if len(b) > 3 else 1.0)


class ErrorRateDetector:
    """The error rate of a key's windows: a binomial test of each window against the usual rate,
    a Bernoulli CUSUM against ``shift`` times it (a few errors too many in each of several windows
    of a quiet key add up, where no single window is significant on its own), and a pooled test of
    the window with the ones before it where the usual rate expects less than one error.

    The usual rate learns each window ERR_GUARD windows late: errors that add up over several
    windows are judged against the rate from before they began, while a usual rate that is off
    still corrects itself. Windows of an episode (and the guard windows before it fired) are
    learned slowly. It is a ratio of decayed sums (errors / requests), so a window of few requests
    (a traffic drop) weighs little."""

    # The CUSUM spoke over the bar in the last window judged (states from before it: not).
    _acc_spoke = False
    _acc_rate = 0.0

    def __init__(self, min_requests: int = 8, threshold: float = 0.9, shift: float = 3.0) -> None:
        self.min_requests = min_requests
        self.threshold = threshold
        self.shift = shift
        # (errors, requests, flag), last ERR_GUARD windows; flag: False, True (anomalous), 2 or 3 (an
        # anomalous or a normal window of an episode that has resolved: spent for the pooled test)
        self._pending: List[Tuple[int, int, Any]] = []
        self._sums: Optional[Tuple[float, float]] = None  # decayed (errors, requests) behind the usual rate
        self._learned = 0  # windows learned into _sums
        self._pool_rate = 0.0  # the error rate of the pool that spoke last (see _pooled_z)
        self._cusum = 0.0
        # Error types of the error-rate episode's anomalous windows (for its hints).
        self._types: Dict[Optional[str], int] = {}

    def clone(self) -> "ErrorRateDetector":
        """A new detector with the same tuning values and nothing learned."""
        return ErrorRateDetector(self.min_requests, self.threshold, self.shift)

    @property
    def error_types(self) -> Dict[Optional[str], int]:
        return self._types

    def score(self, f, warm: bool) -> Optional[Tuple[Tuple[float, float, float, float, str], bool]]:
        """The window's observation (rate, usual rate, score, z, severity) and whether it is
        anomalous; None where the window is not judged (no requests, or too few before a usual
        rate is known)."""
        n, k = f.count, f.errors
        sums = self._sums
        usual = sums[0] / sums[1] if sums is not None else None
        if n == 0 or (n < self.min_requests and usual is None):
            return None
        rate = k / n
        p = usual if usual is not None else rate
        p_eff = min(max(p, 0.005), 0.5)
        busy = n >= self.min_requests
        z = (k - n * p_eff) / math.sqrt(n * p_eff * (1 - p_eff)) if busy else 0.0
        if not (k >= 3 and rate >= 2 * p_eff):
            z = min(z, 0.0)
        # A window where the usual rate expects less than one error is judged together with
        # the windows before it as well (see _pooled_z): an error storm on a key of a few
        # requests a minute pages.
        z_pool = self._pooled_z(k, n, p_eff) if usual is not None and n * p_eff < 1.0 else 0.0
        # The CUSUM's log-likelihood ratio S speaks as z = sqrt(2 S), so that a
        # score means the same tail probability as the one-window test.
        z_acc = 0.0
        if warm and usual is not None:
            p1 = min(self.shift * p_eff, 0.9)
            llr = k * math.log(p1 / p_eff) + (n - k) * math.log((1.0 - p1) / (1.0 - p_eff))
            # Capped: it falls back within a few windows once the errors stop.
            cap = 0.75 * score_to_z(self.threshold) ** 2
            self._cusum = min(max(0.0, self._cusum + llr), cap)
            # It speaks in a window with errors, and in the one after a window where it spoke
            # over the bar: a key of a few requests a minute has windows without an error in
            # the middle of a storm, and the sum, still over the bar, confirms itself.
            if k >= 1 or self._acc_spoke:
                z_acc = math.sqrt(2.0 * self._cusum)
        confirms = k == 0 and z_acc > 0.0
        self._acc_spoke = k >= 1 and z_acc >= score_to_z(self.threshold)
        z_eff = max(z, z_acc, z_pool)
        if z_pool > max(z, z_acc):
            rate = self._pool_rate  # the pool's rate speaks
        elif confirms:
            rate = self._acc_rate  # the rate of the window it confirms
        if self._acc_spoke:
            self._acc_rate = rate
        score = z_to_score(z_eff)
        ratio = (rate + 1e-9) / p_eff
        sev = "critical" if rate >= 0.5 else "high" if rate >= 0.2 else "medium" if rate >= 0.05 else "low"
        obs = (rate, p, score, z_eff, sev if ratio >= 2 else "low")
        anomalous = score >= self.threshold
        if anomalous and f.error_types:
            self._count_types(f.error_types)
        return obs, anomalous

    def quiet(self, transition: Optional[str], active: bool) -> None:
        """After a window that was not judged, and its episode's ``transition``."""
        if transition == "resolved":
            self._cusum = 0.0  # an episode that ends in a quiet window ends its evidence too
            self._spend_pending()
        if self._types and not active:
            self._types = {}

    def learn(self, f, anomalous: bool, transition: Optional[str], active: bool) -> None:
        """Learn a window with requests, after its episode made ``transition`` (``active``: the episode is
        open): every judged one, and those too few to judge while no usual rate is known."""
        k, n = f.errors, f.count
        if transition == "resolved":
            self._cusum = 0.0
        if self._types and not anomalous and not active:
            self._types = {}
        pending = self._pending
        if transition == "firing":
            pending[:] = [(pk, pn, True) for pk, pn, _ in pending]
        elif transition == "resolved":
            self._spend_pending()
        pending.append((k, n, anomalous))
        if len(pending) > ERR_GUARD:
            pk, pn, was_anomalous = pending.pop(0)
            learned = self._learned
            self._learned = learned + 1
            # The usual rate's memory is at least ERR_MEMORY requests: a key of five requests a
            # minute learns a window at a sixth of the weight of one of thirty (its first
            # windows at the busy weight), so one error does not make its usual rate 1%.
            a = 0.05 * min(1.0, pn / ERR_MEMORY)
            if a < 0.05:
                a = max(a, min(0.05, 1.0 / (learned + 1)))
            if was_anomalous in (1, 2):  # anomalous, or anomalous and spent
                a *= 0.1
            # Decayed sums from zero: the first window weighs what any later one does (taken
            # whole, its few errors were the usual rate for the next twenty windows).
            ek, en = self._sums if self._sums is not None else (0.0, 0.0)
            self._sums = (ek + a * (pk - ek), en + a * (pn - en))

    def _spend_pending(self) -> None:
        """An error-rate episode resolved: its windows are spent, the pooled test starts after them
        (their errors paged once; pooled with the quiet windows after the episode, they paged again)."""
        self._pending[:] = [(pk, pn, 2 if a in (1, 2) else 3) for pk, pn, a in self._pending]

    def _pooled_z(self, k: int, n: int, p: float) -> float:
        """The largest z of the error count of the pools ending with this window: it and the
        windows before it (the last ERR_GUARD with requests, whose rate is not learned yet; not
        those of an episode that has resolved). A pool's z is the root of
        twice its binomial log-likelihood ratio (upper side; right for counts of a few), its window with the
        most errors counted as far as the next one only (one window's burst of failures does not
        make the pools after it anomalous, as a lone window does not page), and it needs three
        such errors at twice the usual rate. Sets ``_pool_rate`` to the speaking pool's rate."""
        best, K, N = 0.0, k, n
        e1, e2 = k, -1  # the two largest error counts of the pool's windows
        self._pool_rate = k / n
        pending = self._pending
        for j in range(len(pending) - 1, -1, -1):
            pk, pn, flag = pending[j]
            if flag in (2, 3):
                break
            K += pk
            N += pn
            if pk > e1:
                e1, e2 = pk, e1
            elif pk > e2:
                e2 = pk
            kk = K - (e1 - e2)
            if kk < 3 or kk < 2.0 * p * N:
                continue
            llr = kk * math.log(kk / (N * p)) + ((N - kk) * math.log((N - kk) / (N * (1.0 - p))) if N > kk else 0.0)
            zz = math.sqrt(max(2.0 * llr, 0.0))
            if zz > best:
                best = zz
                self._pool_rate = K / N
        return best

    def _count_types(self, types: Dict[Optional[str], int]) -> None:
        acc = self._types
        for name, c in types.items():
            if name in acc:
                acc[name] += c
            elif len(acc) < 32:
                acc[name] = c
            else:
                acc[OTHER] = acc.get(OTHER, 0) + c


class DriftWatch:
    """Slow drift of the drift metrics: a CUSUM per metric (DriftDetector) against a slow
    reference. A change is a drift once it has built up over at least ``min_windows`` windows and
    moved the level by at least ``min_change`` (or by more, where the key's fast level wanders
    further than that in ordinary hours: :meth:`bar`); a change still too small is given
    ``max_hold`` windows to grow. Falling usage and cost is no incident: the reference moves down."""

    # A lasting change must stand out of the key's own wander: this many of its standard deviations
    # (a mean absolute deviation is 0.8 of one).
    WANDER_SDS = 3.0

    def __init__(self, metrics: Tuple[str, ...] = DRIFT_METRICS, min_windows: int = 15,
                 min_change: float = 0.25, max_hold: int = 120) -> None:
        self.min_windows = min_windows
        self.min_change = min_change
        self.max_hold = max_hold
        self._detectors: Dict[str, DriftDetector] = {}
        self.metrics = ()
        self.watch_too(tuple(metrics))
        self._held: Dict[str, int] = {}
        # Per metric, the key's own wander: [mean |log fast level - log slow reference|, windows].
        self._wander: Dict[str, list] = {}
        # Metrics whose detector was rebased for an alerted step since it last accepted a level.
        self._stepped: Dict[str, bool] = {}

    def clone(self) -> "DriftWatch":
        """A new detector with the same tuning values and nothing learned."""
        return DriftWatch(self.metrics, self.min_windows, self.min_change, self.max_hold)

    def watch_too(self, metrics: Tuple[str, ...]) -> None:
        """Watch ``metrics`` as well, each from nothing learned (a state from before they were watched)."""
        for m in metrics:
            if m not in self._detectors:
                self._detectors[m] = DriftDetector(offset=POOLED[m][1] if m in POOLED else 1.0)
                self.metrics += (m,)

    def watches(self, m: str) -> bool:
        return m in self._detectors

    def accept(self, m: str, level: float) -> None:
        """Metric ``m``'s level is the new normal."""
        self._detectors[m].accept(level)

    def update(self, m: str, value: float, now: float, noise: float, sudden: bool,
               open_episode: bool, wait: bool = False) -> Optional[Tuple[int, float, float, float]]:
        """Follow one window's ``value`` of metric ``m`` (``now``: the key's fast level, ``noise``:
        the window's noise) and return its drift as (windows accumulated, mean log change,
        reference, change), or None. ``sudden``: a sudden change explains the window (the spike
        detector's, or a daily pattern): the detector is rebased, nothing counted twice.
        ``open_episode``: a drift episode is open (the wander is not learned). ``wait``: a spike
        may be starting; a rise's alarm stands over to the next window, which tells."""
        det = self._detectors[m]
        # Where a change is accepted, the new reference is the key's fast level, not this
        # window's value: the window that completes an alarm is an outlier in the alarm's
        # direction, and a reference set from it starts the next false drift from there.
        self._learn_wander(m, now, det, open_episode)
        if sudden:
            det.rebase()
            self._stepped[m] = True
            alarm = None
        else:
            alarm = det.update(value, noise)
            if det.idle:
                self._stepped[m] = False  # nothing accumulating: an old step no longer explains it
                # Nor is an earlier small change still growing: the time a change is given to
                # reach min_change counts from its own start (counted across unrelated
                # changes, it ran out halfway up a real drift, which was then taken as the level).
                self._held[m] = 0
        if wait and alarm is not None and alarm[0] > 0:
            return None  # the detector keeps the alarm until it is accepted or rebased
        if alarm is not None and alarm[0] < 0:
            det.accept(now)  # usage and cost falling is not an incident: the reference moves down
            self._stepped[m] = False
            alarm = None
        if alarm is None:
            return None
        direction, length, mean_log, ref = alarm
        change = now / ref - 1.0 if ref > 0 else math.exp(mean_log) - 1.0
        if length < self.min_windows:
            if self._stepped.get(m):
                # Accumulated fast right after a step the spike detector alerted: the
                # new level is that step's, not a drift.
                det.accept(now)
                self._stepped[m] = False
            # Otherwise a fast climb (or a burst from one actor): it must last
            # min_windows to be a drift; a burst that ends falls back below
            # min_change against the key's fast level and is accepted later.
            return None
        if change < self.bar(m):
            # Real but still small: let it grow, for a while.
            held = self._held.get(m, 0) + 1
            self._held[m] = held
            if held >= self.max_hold:
                det.accept(now)
                self._held[m] = 0
                self._stepped[m] = False
            return None
        det.accept(now)
        self._held[m] = 0
        self._stepped[m] = False
        return length, mean_log, ref, change

    def bar(self, m: str) -> float:
        """The least lasting change that is a drift on this key: ``min_change``, or more where
        the key's fast level wanders further than that from its slow level in ordinary hours (a
        real trace's mix that comes and goes within the hour)."""
        w = self._wander.get(m)
        if w is None or w[1] < 120:
            return self.min_change
        return max(self.min_change, math.exp(self.WANDER_SDS * w[0] / 0.8) - 1.0)

    def _learn_wander(self, m: str, now: float, det: DriftDetector, open_episode: bool) -> None:
        """How far the key's fast level (what a drift's change is measured with) usually is from the
        drift detector's slow reference: a mean absolute log distance over about ten hours, learned
        while no drift is open (a ramp adds little before it pages: an hour of it moves the mean by
        about a tenth of its size), as a plain average over the first windows."""
        d = det.distance(now)
        if d is None or open_episode:
            return
        w = self._wander.get(m)
        if w is None:
            w = self._wander[m] = [0.0, 0]
        w[1] += 1
        w[0] += max(1.0 / 600.0, 1.0 / w[1]) * (d - w[0])
