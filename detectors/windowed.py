"""Per-key detector set over closed event-time windows.

One :class:`KeyDetectors` lives per service/model key. It receives the
features of each closed window in event-time order, scores every metric
against its own robust baseline (score first, then learn), and turns windows
that stay anomalous for ``persistence`` consecutive windows into one
:class:`Finding` per episode: a lone outlier never fires, a 3-minute spike
does, and an ongoing anomaly is reported once, not every window.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

from detectors.drift import DriftDetector
from detectors.episode import Episode
from detectors.hints import HINTS, OTHER, hints_for
from detectors.multivariate import MultivariateDetector, squash
from detectors.priors import ParentPriors
from detectors.robust import PooledLogMean, RobustBaseline, poisson_sf, score_to_z, z_to_score
from detectors.seasonal import HourProfile, PeriodMemory, SeasonalProfile


LogStats = Tuple[int, float, float]


def log_stats(xs, offset: float) -> Optional[LogStats]:
    """``(n, sum, sumsq)`` of ``log(x + offset)`` over ``xs``: their count, sum and sum of squared
    deviations from their mean (None when empty). ``exp(sum / n) - offset`` is their geometric
    mean, what a window reports as its tokens or cost per request: one 20k-token answer among
    thirty moves it by a few percent, not by a factor."""
    n = len(xs)
    if n == 0:
        return None
    log = math.log
    ys = [log(x + offset) if x > 0 else log(offset) for x in xs]
    s = sum(ys)
    m = s / n
    return n, s, sum((y - m) * (y - m) for y in ys)


def _requests_per_user(f: "WindowFeatures") -> Optional[float]:
    """A window's successful requests over their users (a request without a known user counts as
    one user), or None when it had none."""
    ok = f.count - f.errors
    if ok <= 0:
        return None
    cl = f.clusters
    if not cl:
        return 1.0
    return ok / (len(cl) + max(0, ok - sum(cl.values())))


class WindowFeatures:
    __slots__ = (
        "start", "end", "count", "errors", "lat_p50", "lat_p95", "ttft_p95",
        "in_tokens", "out_tokens", "cost", "cost_total", "tokens_total", "error_types",
        "in_log", "out_log", "cost_log", "lat_gmean", "ttft_gmean", "lat_log", "ttft_log", "clusters",
        "rest",
    )
    _PICKLED = __slots__[:-1]  # ``rest`` is the window's own and is never kept

    def __init__(self, start: float, end: float, count: int = 0, errors: int = 0,
                 lat_p50: Optional[float] = None, lat_p95: Optional[float] = None,
                 ttft_p95: Optional[float] = None, in_tokens: Optional[float] = None,
                 out_tokens: Optional[float] = None, cost: Optional[float] = None,
                 cost_total: float = 0.0, tokens_total: int = 0,
                 error_types: Optional[Dict[Optional[str], int]] = None,
                 in_log: Optional[LogStats] = None, out_log: Optional[LogStats] = None,
                 cost_log: Optional[LogStats] = None, lat_gmean: Optional[float] = None,
                 ttft_gmean: Optional[float] = None, lat_log: Optional[LogStats] = None,
                 ttft_log: Optional[LogStats] = None,
                 clusters: Optional[Dict[str, int]] = None,
                 rest: Optional[Tuple[int, Optional[float], Optional[float], Optional[float]]] = None) -> None:
        self.start = start
        self.end = end
        self.count = count
        self.errors = errors
        self.lat_p50 = lat_p50
        self.lat_p95 = lat_p95
        self.ttft_p95 = ttft_p95
        self.in_tokens = in_tokens  # per request: the geometric mean (see log_stats)
        self.out_tokens = out_tokens
        self.cost = cost
        self.cost_total = cost_total
        self.tokens_total = tokens_total
        self.error_types = error_types  # error_type -> count; None when the window had no error
        # (n, sum, sumsq) of log(x + offset) per request (log_stats); None: not measured (the
        # metric is then judged on the window's value alone, as a hand-made window's).
        self.in_log = in_log
        self.out_log = out_log
        self.cost_log = cost_log
        # Latency and ttft per request, as geometric means with their log statistics: a slow
        # model on a key of a few requests a minute is judged by what its count says.
        self.lat_gmean = lat_gmean
        self.ttft_gmean = ttft_gmean
        self.lat_log = lat_log
        self.ttft_log = ttft_log
        # {user: requests} of the users with more than one request: one user's requests may move
        # together (PooledLogMean.push); None: every request stood alone, or not measured.
        self.clusters = clusters
        # (requests, latency p50, latency p95, ttft p95) of the window without its busiest user,
        # when that user sent enough of it to make its tail alone; None: no one user could.
        self.rest = rest

    def as_dict(self) -> Dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __getstate__(self):
        return tuple(getattr(self, k) for k in self._PICKLED)

    def __setstate__(self, state) -> None:
        self.rest = None
        self.error_types = None  # states from before error types were counted
        self.in_log = self.out_log = self.cost_log = None  # and before log statistics
        self.lat_gmean = self.ttft_gmean = self.lat_log = self.ttft_log = None
        self.clusters = None  # and before requests were grouped by user
        if len(state) == len(self._PICKLED) + 1:
            state = state[:-2] + state[-1:]  # with the by-user ANOVA a version kept before the clusters
        for k, v in zip(self._PICKLED, state):
            setattr(self, k, v)


class Finding:
    """A lifecycle transition of an anomaly episode on a key: what the flow turns into an alert.

    ``status`` is ``firing`` (a new episode), ``escalated`` (it grew a
    severity step) or ``resolved`` (back to normal for the quiet period).
    ``hints`` are root-cause hints (:mod:`detectors.hints`) from the window
    that fired or escalated; a resolve carries its episode's.
    """

    __slots__ = ("type", "metric", "observed", "expected", "score", "z", "event_time",
                 "window_end", "severity", "evidence", "direction", "status", "hints")

    def __init__(self, type: str, metric: str, observed: float, expected: float, score: float,
                 z: float, event_time: float, window_end: float, severity: str,
                 evidence: dict, direction: str, status: str = "firing",
                 hints: Optional[List[str]] = None) -> None:
        self.type = type
        self.metric = metric
        self.observed = observed
        self.expected = expected
        self.score = score
        self.z = z
        self.event_time = event_time
        self.window_end = window_end
        self.severity = severity
        self.evidence = evidence
        self.direction = direction
        self.status = status
        self.hints = hints if hints is not None else []

    def __repr__(self) -> str:
        return (f"Finding({self.status} {self.type}, {self.metric}, observed={self.observed:.4g}, "
                f"expected={self.expected:.4g}, score={self.score:.3f})")


def severity_for(ratio: float, score: float) -> str:
    """Severity from the size of the deviation (ratio to expected, >= 1)."""
    if ratio >= 8 or (ratio >= 5 and score >= 0.99):
        return "critical"
    if ratio >= 3:
        return "high"
    if ratio >= 1.8:
        return "medium"
    return "low"


def _ratio(value: float, expected: float) -> float:
    if expected > 0 and value > 0:
        return max(value / expected, expected / value)
    return 1.0


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
    "request_count": ("traffic", "count", 0),
}
# Per-request metrics judged on the mean of their logs, pooled over windows (PooledLogMean):
# metric -> (feature with its log statistics, offset added before the log).
POOLED: Dict[str, Tuple[str, float]] = {
    "output_tokens_mean": ("out_log", 1.0),
    "input_tokens_mean": ("in_log", 1.0),
    "cost_per_request_usd": ("cost_log", 1e-6),
    "latency_gmean_ms": ("lat_log", 1.0),
    "ttft_gmean_ms": ("ttft_log", 1.0),
}
# Quantile metrics -> their place in WindowFeatures.rest (the window without its busiest user).
REST_OF = {"latency_p50_ms": 1, "latency_p95_ms": 2, "ttft_p95_ms": 3}
# Metrics that follow the tokens, and the token metrics that move them: where one alerts, a
# smaller rise of those is its cause (_confirm_cause). A request's cost is its input and output
# tokens at their prices; its time after the first token is decoding, the output tokens'.
EFFECTS: Dict[str, Tuple[str, ...]] = {
    "cost_per_request_usd": ("output_tokens_mean", "input_tokens_mean"),
    "latency_gmean_ms": ("output_tokens_mean",),
    "latency_p50_ms": ("output_tokens_mean",),
    "latency_p95_ms": ("output_tokens_mean",),
}
# Metrics also watched for slow drift (type ``drift``).
DRIFT_METRICS = ("output_tokens_mean", "input_tokens_mean", "cost_per_request_usd")
# Spike episodes that explain a change in the drift metrics (a token spike moves the cost per request too).
SUDDEN_TYPES = ("tokens", "cost")
# Windows by which the usual error rate lags (see KeyDetectors._error_rate).
ERR_GUARD = 10
# Learning rate of the count's burst statistics, and the Poisson tail a rise in traffic must pass
# once counted in bursts (KeyDetectors._burst_beyond_noise).
BURST_ALPHA = 0.02
BURST_P = 1e-3
# Requests per window at which a window is learned into the usual error rate at full weight.
ERR_MEMORY = 30.0
ALL_TYPES = ("latency", "ttft", "tokens", "cost", "error_rate", "traffic", "drift")  # multivariate: opt-in


class KeyDetectors:
    """All window-level detectors of one service/model key.

    Layers: a robust baseline per metric (spikes and steps, with persistence; tokens and
    cost per request on the mean of their logs, pooled over windows on a sparse key),
    a time-of-day profile for traffic (and a minute-of-hour one for scheduled batches), the same time on the days (and, for
    traffic, weeks) before for patterns that recur (:meth:`_recurring`), a
    CUSUM drift detector on tokens and cost, and a binomial test for the
    error rate. During the key's first
    ``cold_windows`` windows after warm-up a window must deviate a third further
    to count: a new model's young baseline does not page on its own noise.
    """

    def __init__(self, types: Tuple[str, ...] = ALL_TYPES,
                 warmup_windows: int = 30, min_requests: int = 8, threshold: float = 0.9,
                 persistence: int = 2, quiet_windows: int = 5, relearn_after: int = 30,
                 seasonality: bool = True, cold_windows: int = 60,
                 drift_min_change: float = 0.25, cause_z: float = 3.0) -> None:
        self.types = tuple(types)
        self.warmup_windows = warmup_windows
        self.min_requests = min_requests
        self.threshold = threshold
        self.persistence = persistence
        self.quiet_windows = quiet_windows
        self.relearn_after = relearn_after
        self.seasonality = seasonality
        self.cold_windows = cold_windows
        # With parents' scales borrowed, a new key is judged from this window on.
        self.borrowed_warmup = 10
        # A drift episode ends after this many windows without a new alarm.
        self.drift_quiet = 120
        # A drift builds up over at least this many windows and changes the level by at least this much.
        self.drift_min_windows = 15
        self.drift_min_change = drift_min_change
        # A token rise this many standard errors up is the cause of an alerting cost or latency (_confirm_cause).
        self.cause_z = cause_z
        self._cause_only = False  # the tokens' current run is of windows confirmed by an effect only
        self._drift_metric = DRIFT_METRICS[0]
        self._drift_obs = None  # the last alarm of the metric that opened the drift episode
        self._drift_held: Dict[str, int] = {}
        # Per drift metric, the key's own wander: [mean |log fast level - log slow reference|, windows].
        self._drift_wander: Dict[str, list] = {}
        # Metrics whose drift detector was rebased for an alerted step since it last accepted a level.
        self._drift_stepped: Dict[str, bool] = {}
        # Calibrated Half-Space Trees score (rank among recent windows) that counts as anomalous.
        self.mv_threshold = 0.998
        self._metric_of: Dict[str, str] = {}
        self._metrics = [m for m, (t, _, _) in METRICS.items() if t in self.types]
        # Traffic keeps the plain scale (no dev_guard): with the guard, the scale of request
        # counts came out narrow enough for a dip of 30 to 15 requests to page.
        self._base: Dict[str, RobustBaseline] = {m: self._new_base(m) for m in self._metrics}
        self._season = SeasonalProfile() if seasonality and "request_count" in self._metrics else None
        # Each metric's values at each time of day on the days before (see _recurring),
        # and for traffic at each hour of the week on the weeks before: metric ->
        # (daily, weekly or None). A metric gets its memory the first time a window of it would
        # alert; most never do, and a calm key carries none.
        self._memory: Optional[Dict[str, Tuple[PeriodMemory, Optional[PeriodMemory]]]] = {} if seasonality else None
        self.daily_tolerance = 3.0  # in noise levels (see PeriodMemory)
        # Traffic's minute-of-hour profile (scheduled batches several times an hour): made the
        # first time a traffic window would alert or the counts' scale passes hourly_scale,
        # judged by only while adopted (HourProfile); a calm key carries none.
        self._hourly: Optional[HourProfile] = None
        # [count level, window-to-window variance, last count, requests per user] (_burst_beyond_noise).
        self._bursts: Optional[List[float]] = None
        self.hourly_scale = 0.7
        self._drift: Dict[str, DriftDetector] = {}
        if "drift" in self.types:
            self._drift = {m: DriftDetector(offset=1e-6 if m == "cost_per_request_usd" else 1.0)
                           for m in DRIFT_METRICS}
        # One episode per alert type: the strongest of its metrics speaks for it,
        # so a slow model (p50 and p95 both up) is one latency anomaly, not two.
        self._mv = MultivariateDetector() if "multivariate" in self.types else None
        names = sorted({METRICS[m][0] for m in self._metrics} | {"error_rate"} | ({"drift"} if self._drift else set())
                       | ({"multivariate"} if self._mv is not None else set()))
        self._ep: Dict[str, Episode] = {t: Episode() for t in names}
        # (errors, requests, flag), last ERR_GUARD windows; flag: False, True (anomalous), 2 or 3 (an
        # anomalous or a normal window of an episode that has resolved: spent for the pooled test)
        self._err_pending: List[Tuple[int, int, Any]] = []
        self._err_sums: Optional[Tuple[float, float]] = None  # decayed (errors, requests) behind the usual rate
        self._err_learned = 0  # windows learned into _err_sums
        self._err_pool_rate = 0.0  # the error rate of the pool that spoke last (see _err_pooled_z)
        # Bernoulli CUSUM of the error rate against `err_shift` times its usual
        # level: a few errors too many in each of several windows of a quiet
        # key add up, where no single window is significant on its own.
        self.err_shift = 3.0
        self._err_cusum = 0.0
        # Error types of the error-rate episode's anomalous windows (for its hints).
        self._err_types: Dict[Optional[str], int] = {}
        # Root-cause hints of each open episode, by type: what its resolve repeats.
        self._hints: Dict[str, List[str]] = {}
        self._windows = 0

    def _new_base(self, m: str) -> RobustBaseline:
        if m in POOLED:
            return PooledLogMean(alpha=0.05, min_scale=0.05, warmup=self.warmup_windows // 2,
                                 offset=POOLED[m][1])
        return RobustBaseline(alpha=0.05, log=True, min_scale=0.05 if m != "request_count" else 0.1,
                              warmup=self.warmup_windows // 2, offset=1.0,
                              dev_guard=math.inf if m == "request_count" else 2.0)

    @property
    def windows_seen(self) -> int:
        return self._windows

    def update(self, f: WindowFeatures, priors: Optional[ParentPriors] = None,
               parents: Tuple[Tuple[str, ...], ...] = (), key: str = "") -> List[Finding]:
        """Score one closed window, then learn it; return lifecycle transitions.

        With ``priors``, a young key borrows its parents' noise levels and may
        be judged after ``borrowed_warmup`` windows; once warm, it reports its
        own to them every 30 windows.
        """
        out: List[Finding] = []
        warm = self._windows >= self.warmup_windows
        if priors is not None and parents:
            if not warm:
                borrowed = {m: priors.scale(parents, m) for m in self._metrics}
                for m, s in borrowed.items():
                    self._base[m].borrow_scale(s)
                warm = (self._windows >= self.borrowed_warmup
                        and all(borrowed.get(m) is not None for m in ("latency_p95_ms", "request_count")
                                if m in borrowed))
            elif self._windows % 30 == 0:
                for m in self._metrics:
                    if not self._ep[METRICS[m][0]].active:
                        priors.observe(key, parents, m, self._base[m].scale)
        cold = self._windows < self.warmup_windows + self.cold_windows
        busy = f.count >= self.min_requests
        # A window with a small share of its usual traffic has no reliable
        # quantiles (a p95 of eight requests is their maximum): only traffic
        # and errors are judged on it.
        if busy and "request_count" in self._base:
            usual = self._base["request_count"].expected()
            if self._hourly is not None and self._hourly.adopted:
                usual = math.exp(self._hourly.expect((f.start + f.end) / 2.0)[0]) - 1.0
            if usual is not None and self._windows >= self.warmup_windows and f.count < 0.3 * usual:
                busy = False
        mid = (f.start + f.end) / 2.0
        pattern: Dict[str, str] = {}  # metric -> "daily" / "weekly": where it was at this time before
        best: Dict[str, Tuple[float, str, tuple]] = {}
        values: Dict[str, Tuple[float, float, float, float, float]] = {}  # metric -> (value, adjusted, score, z, expected)
        # metric -> (windows pooled, this window's own value, the standard error of that value)
        pooled: Dict[str, Tuple[int, float, float]] = {}
        for m in self._metrics:
            typ, attr, direction = METRICS[m]
            best.setdefault(typ, (-1.0, m, None))
            value = getattr(f, attr)
            stats = getattr(f, POOLED[m][0]) if m in POOLED else None
            if value is None or (stats is None and not busy and m != "request_count"):
                continue
            base = self._base[m]
            value = float(value)
            season = 0.0
            noise = None
            if stats is not None:
                # Judged on the mean of its logs, over as many windows as it takes (PooledLogMean):
                # a key of five requests a minute is judged too, by what its count says.
                base.push(stats, clusters=f.clusters)
                z, mlog, k, noise = base.judge()
                pooled[m] = (k, value, base.window_se)
                value = adj = math.exp(mlog) - base.offset
            elif m == "request_count" and self._hourly is not None and self._hourly.adopted:
                # The key's hour has a schedule (batches at set minutes): that is what it expects.
                z, lp, noise = self._hourly.judge(mid, math.log(value + 1.0))
                adj = value
                hourly_exp = math.exp(lp) - 1.0
            else:
                # Traffic is compared with its level plus the offset usual for this time of day.
                season = self._season.offset(mid) if (self._season is not None and m == "request_count") else 0.0
                adj = value if season == 0.0 else (value + base.offset) * math.exp(-season) - base.offset
                z = base.z(adj)
            z_eff = 0.0 if (direction > 0 and z < 0) else abs(z)
            if cold:
                z_eff *= 0.75
            score = z_to_score(z_eff)
            if score >= self.threshold and m in REST_OF and f.rest is not None:
                # A quantile that one user's requests could make alone must hold without them.
                own = f.rest[REST_OF[m]]
                if f.rest[0] < self.min_requests:
                    score = 0.0
                elif own is not None:
                    score = min(score, z_to_score(max(base.z(own), 0.0) * (0.75 if cold else 1.0)))
            if (m == "request_count" and self._hourly is None and self.seasonality and base.n >= base.warmup
                    and (score >= self.threshold or base.scale > self.hourly_scale)):
                # Counts that would alert, or that vary far beyond a Poisson count's noise (scale
                # 0.7 is a factor of two between windows; a key of one request a minute has 0.5).
                self._hourly = HourProfile()
            if self._memory is not None and (score >= self.threshold or (abs(z) >= 2.0 and m in self._memory)):
                score = self._recurring(m, mid, value, z, base, score, pattern, noise)
            exp = base.expected()
            exp = value if exp is None else (exp + base.offset) * math.exp(season) - base.offset
            if noise is not None and m == "request_count":
                exp = hourly_exp
            if m == "request_count" and z > 0 and score >= self.threshold and not self._burst_beyond_noise(value, exp):
                score = 0.0  # more requests than usual, but no more than the key's own bursts give
            values[m] = (value, adj, score, z, exp)
            if score > best[typ][0]:
                best[typ] = (score, m, (value, exp, score, z, severity_for(_ratio(value, exp), score)))
        confirmed = False
        if self.cause_z > 0 and best.get("tokens", (1.0,))[0] < self.threshold:
            causes = {c for m, cs in EFFECTS.items() if m in values and values[m][2] >= self.threshold for c in cs}
            confirmed = bool(causes) and self._confirm_cause(values, best, causes)
        for typ, (score, m, obs) in best.items():
            # Borrowed noise levels speed up the per-request metrics; a key's traffic level and
            # rhythm are its own (ten windows may all be one scheduled batch): traffic waits for
            # the key's own warm-up.
            ready = warm if typ != "traffic" else self._windows >= self.warmup_windows
            self._step(typ, m, f, obs if obs is not None and score >= self.threshold else None, out, ready)
        if "tokens" in self._ep:
            ep = self._ep["tokens"]
            # Whether the tokens' run so far is of windows confirmed by their effect alone.
            self._cause_only = ep.run > 0 and not ep.active and confirmed and (ep.run == 1 or self._cause_only)
        if self._mv is not None:
            self._multivariate(f, values, best, out, warm)
        for m, (value, adj, score, _z, _exp) in values.items():
            base = self._base[m]
            ep = self._ep[METRICS[m][0]]
            if ep.active and ep.run >= self.relearn_after and score >= self.threshold:
                # A lasting level shift that was alerted: it is the new normal.
                base.relearn(adj)
            if m in self._drift:
                # The drift CUSUM follows each window's own value, in units of the window's own noise
                # where its requests say more than the windows' scale (one agent task's window moves
                # further than a window of many users' requests: PooledLogMean.judge).
                if m in pooled:
                    _, own, se = pooled[m]
                    self._drift_step(m, f, own, max(base.scale, se), base, out, warm, m in pattern)
                else:
                    self._drift_step(m, f, value, base.scale, base, out, warm, m in pattern)
            mems = self._memory.get(m) if self._memory is not None else None
            hp = self._hourly if m == "request_count" else None
            if hp is not None and base.n > 0:
                plain = base._loc + (self._season.offset(mid) if self._season is not None else 0.0)
                hp.learn(mid, math.log(value + 1.0), plain, level=not (hp.adopted and score >= self.threshold))
            season_learns = (self._season is not None and m == "request_count" and score < self.threshold
                             and base.n > 0 and pattern.get(m) != "weekly")
            if mems is not None or season_learns:
                lv = math.log(value + base.offset)
                if mems is not None:
                    mems[0].learn(mid, lv)
                    if mems[1] is not None:
                        mems[1].learn(mid, lv)
                if season_learns:
                    self._season.learn(mid, lv - base._loc)
            if pattern.get(m) == "daily":
                # The day's pattern is not the level's or the scale's (for traffic, it is the
                # profile's): a peak would otherwise widen the scale for hours, and a metric's
                # nightly batch mix would be learned into its daytime level and back every day.
                if m in pooled:
                    base.mark(1, 2)
                continue
            if m in pooled:
                if score >= self.threshold:
                    base.mark(pooled[m][0], 1)  # the pool that was anomalous is learned slowly
                continue  # learned when it leaves the pool
            base.learn_one(adj)
        for typ, (_, _, _) in best.items():
            ep = self._ep[typ]
            if ep.active and ep.run >= self.relearn_after:
                ep.run = 0
        if self._drift:
            # Drift windows with no value (a quiet window) count as quiet for the drift episode.
            if not any(m in values for m in self._drift):
                self._drift_quiet_step(f, out, warm)
        self._learn_bursts(f.count, _requests_per_user(f))
        if "error_rate" in self.types:
            self._error_rate(f, out, warm)
        if out:
            self._attach_hints(out, values)
        self._windows += 1
        return out

    def _confirm_cause(self, values, best, causes) -> bool:
        """A window whose cost alerts, and whose input or output tokens per request rose ``cause_z``
        standard errors too, or whose latency alerts and whose output tokens rose so (``causes``:
        EFFECTS), has its token rise for a cause: the tokens count as
        anomalous in it. Cost and decoding time follow the tokens, and the window's cost or latency
        mean may stand out before its token mean does (a cost per request mixes input and output
        tokens; latency grows with the answer's length): the page then names the effect and the
        cause only joins the incident windows later. Only the tokens episode hears of it: the
        baseline learns the window as its own score says, and windows confirmed so, until the
        episode fires, do not stop a slow drift's count (a ramp in the answers' length lifts the
        latency of single windows on its way)."""
        for m in ("output_tokens_mean", "input_tokens_mean"):
            v = values.get(m)
            if v is None or m not in causes or v[3] < self.cause_z:
                continue
            value, _, _, z, exp = v
            if best["tokens"][0] < self.threshold or z > best["tokens"][2][3]:
                score = self.threshold
                best["tokens"] = (score, m, (value, exp, score, z, severity_for(_ratio(value, exp), score)))
        return best["tokens"][0] >= self.threshold

    def _learn_bursts(self, count: int, per_user: Optional[float] = None) -> None:
        """Learn the key's count level, its window-to-window variance (half the mean squared
        difference of consecutive counts: slow swings such as the day's do not count, bursts do)
        and its requests per user in a window (an agent's task is a dozen calls a window for
        several windows: its calls come together, in no window-to-window difference)."""
        b = self._bursts
        if b is None:
            self._bursts = [float(count), 0.0, float(count), per_user or 1.0]
            return
        if len(b) < 4:
            b.append(1.0)  # states from before requests were counted per user
        a = BURST_ALPHA
        d = count - b[2]
        b[0] += a * (count - b[0])
        b[1] += a * (0.5 * d * d - b[1])
        b[2] = float(count)
        if per_user is not None:
            b[3] += a * (per_user - b[3])

    def _burst_beyond_noise(self, count: float, expected: float) -> bool:
        """Whether ``count`` is beyond doubt above ``expected`` once requests are counted in the key's
        own bursts: with a dispersion ``phi`` (the larger of the window-to-window variance over the
        mean and the requests a user sends in a window; 1 for requests that come one by one, the
        size of a burst for an agent that sends its calls in tasks), ``count / phi`` bursts
        against ``expected / phi`` (a Poisson tail under ``BURST_P``). A canary that gets one agent task now and then is not a traffic spike."""
        b = self._bursts
        if b is None or b[0] <= 0.0:
            return True
        phi = max(1.0, b[1] / b[0], b[3] if len(b) > 3 else 1.0)
        # Against the larger of the baseline's expectation and the plain mean count (a log-scale
        # level of a mostly idle key is near zero; its mean is what its bursts add up to).
        return poisson_sf(int(count / phi), max(expected, b[0], 1e-3) / phi) < BURST_P

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
            count = m == "request_count"
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

    def _attach_hints(self, out: List[Finding], values) -> None:
        """Root-cause hints on the findings of this window (rare: only when something fires)."""
        levels = None
        for fd in out:
            if fd.type not in HINTS:
                continue
            if fd.status == "resolved":
                fd.hints = self._hints.pop(fd.type, [])
                continue
            if levels is None:
                levels = {m: (v[0], v[4], v[3]) for m, v in values.items()}
            hints = hints_for(fd.type, fd.metric, levels, self._err_types)
            if hints or fd.status == "firing":
                self._hints[fd.type] = hints  # an escalation the window does not explain keeps the earlier
            fd.hints = list(self._hints.get(fd.type, []))

    def _multivariate(self, f: WindowFeatures, values, best, out: List[Finding], warm: bool) -> None:
        """Half-Space Trees on the window's z-scores, for windows no single metric flags."""
        if len(values) < 3:
            self._step("multivariate", "feature_vector", f, None, out, warm)
            return
        x = {m: squash(v[3]) for m, v in values.items()}
        score = self._mv.score_learn(x)
        single = any(b[0] >= self.threshold for b in best.values())
        if score >= self.mv_threshold and not single:
            top = max(values, key=lambda m: abs(values[m][3]))
            z = values[top][3]
            obs = (score, self.mv_threshold, score, z, "low")
            self._step("multivariate", "feature_vector", f, obs, out, warm)
            if out and out[-1].type == "multivariate" and out[-1].status == "firing":
                out[-1].evidence["z_by_metric"] = {m: round(v[3], 2) for m, v in values.items()}
        else:
            self._step("multivariate", "feature_vector", f, None, out, warm)

    def _drift_quiet_step(self, f: WindowFeatures, out: List[Finding], warm: bool) -> None:
        dep = self._ep["drift"]
        # The resolved message speaks of the metric that opened the episode, with its own values
        # (other metrics' alarms keep the episode open and update it, but are not its numbers).
        last, severity, first, metric = self._drift_obs or dep.last_obs, dep.severity, dep.first_start, self._drift_metric
        if dep.step(f.start, None, 1, self.drift_quiet, warm) == "resolved":
            fd = self._finding("drift", metric, f, last, dep, "resolved")
            fd.severity, fd.event_time = severity, first
            out.append(fd)
            # A drift stays (that is what makes it one): its level is the new normal of every
            # drift metric. An alarm is accepted while the ramp still climbs, so what came
            # after it would otherwise add up, hours later, to a second drift of the same change.
            for mm, det in self._drift.items():
                level = self._base[mm].current()
                if level is not None:
                    det.accept(level)

    # A lasting change must stand out of the key's own wander: this many of its standard deviations
    # (a mean absolute deviation is 0.8 of one).
    DRIFT_WANDER_SDS = 3.0

    def _drift_bar(self, m: str) -> float:
        """The least lasting change that is a drift on this key: ``drift_min_change``, or more where
        the key's fast level wanders further than that from its slow level in ordinary hours (a
        real trace's mix that comes and goes within the hour)."""
        w = self._drift_wander.get(m)
        if w is None or w[1] < 120:
            return self.drift_min_change
        return max(self.drift_min_change, math.exp(self.DRIFT_WANDER_SDS * w[0] / 0.8) - 1.0)

    def _learn_wander(self, m: str, now: float, det: DriftDetector) -> None:
        """How far the key's fast level (what a drift's change is measured with) usually is from the
        drift detector's slow reference: a mean absolute log distance over about ten hours, learned
        while no drift is open (a ramp adds little before it pages: an hour of it moves the mean by
        about a tenth of its size), as a plain average over the first windows."""
        d = det.distance(now)
        if d is None or self._ep["drift"].active:
            return
        w = self._drift_wander.get(m)
        if w is None:
            w = self._drift_wander[m] = [0.0, 0]
        w[1] += 1
        w[0] += max(1.0 / 600.0, 1.0 / w[1]) * (d - w[0])

    def _drift_step(self, m: str, f: WindowFeatures, value: float, noise: float, base: RobustBaseline,
                    out: List[Finding], warm: bool, recurring: bool = False) -> None:
        det = self._drift[m]
        dep = self._ep["drift"]
        # Where a change is accepted, the new reference is the key's fast level, not this
        # window's value: the window that completes an alarm is an outlier in the alarm's
        # direction, and a reference set from it starts the next false drift from there.
        now = base.current()
        now = value if now is None else now
        self._learn_wander(m, now, det)
        if recurring or any(self._ep[t].active or (self._ep[t].run > 0 and not (t == "tokens" and self._cause_only))
                            for t in SUDDEN_TYPES if t in self._ep):
            # A sudden change is the spike detector's; do not count it twice as drift
            # (a spike in tokens moves the cost per request too). Nor is a daily pattern a drift.
            det.rebase()
            self._drift_stepped[m] = True
            alarm = None
        else:
            alarm = det.update(value, noise)
            if det.idle:
                self._drift_stepped[m] = False  # nothing accumulating: an old step no longer explains it
                # Nor is an earlier small change still growing: the time a change is given to
                # reach drift_min_change counts from its own start (counted across unrelated
                # changes, it ran out halfway up a real drift, which was then taken as the level).
                self._drift_held[m] = 0
        if alarm is not None and alarm[0] < 0:
            det.accept(now)  # usage and cost falling is not an incident: the reference moves down
            self._drift_stepped[m] = False
            alarm = None
        if alarm is not None:
            direction, length, mean_log, ref = alarm
            change = now / ref - 1.0 if ref > 0 else math.exp(mean_log) - 1.0
            if length < self.drift_min_windows:
                if self._drift_stepped.get(m):
                    # Accumulated fast right after a step the spike detector alerted: the
                    # new level is that step's, not a drift.
                    det.accept(now)
                    self._drift_stepped[m] = False
                # Otherwise a fast climb (or a burst from one actor): it must last
                # drift_min_windows to be a drift; a burst that ends falls back below
                # drift_min_change against the key's fast level and is accepted later.
                alarm = None
            elif change < self._drift_bar(m):
                # Real but still small: let it grow, for a while.
                held = self._drift_held.get(m, 0) + 1
                self._drift_held[m] = held
                if held >= self.drift_quiet:
                    det.accept(now)
                    self._drift_held[m] = 0
                    self._drift_stepped[m] = False
                alarm = None
            else:
                det.accept(now)
                self._drift_held[m] = 0
                self._drift_stepped[m] = False
        if alarm is None:
            if m == self._drift_metric or not dep.active:
                self._drift_quiet_step(f, out, warm)
            return
        # Where the change began (the CUSUM's estimate) goes in the evidence; the alert's event
        # time is the window that made it a drift: a ramp starts too gently for its start to be
        # placed within minutes, and a drift is one from the window it reached drift_min_change.
        start = f.end - length * (f.end - f.start)
        obs = (value, ref, 0.95, mean_log / max(base.scale, 1e-6), "medium" if abs(change) < 1.0 else "high")
        if not dep.active:
            self._drift_metric = m
        if m == self._drift_metric:
            self._drift_obs = obs
        t = dep.step(f.start, obs, 1, self.drift_quiet, warm)
        if t is not None:
            fd = self._finding("drift", m, f, obs, dep, t)
            fd.evidence.update({"change": round(change, 3), "change_start": start,
                                "windows_accumulated": length})
            out.append(fd)

    def _error_rate(self, f: WindowFeatures, out: List[Finding], warm: bool) -> None:
        n, k = f.count, f.errors
        sums = self._err_sums
        usual = sums[0] / sums[1] if sums is not None else None  # the usual rate (see below)
        if n == 0 or (n < self.min_requests and usual is None):
            if self._step("error_rate", "error_rate", f, None, out, warm) == "resolved":
                self._err_cusum = 0.0  # an episode that ends in a quiet window ends its evidence too
                self._spend_pending()
            if self._err_types and not self._ep["error_rate"].active:
                self._err_types = {}
            return
        rate = k / n
        p = usual if usual is not None else rate
        p_eff = min(max(p, 0.005), 0.5)
        busy = n >= self.min_requests
        z = (k - n * p_eff) / math.sqrt(n * p_eff * (1 - p_eff)) if busy else 0.0
        if not (k >= 3 and rate >= 2 * p_eff):
            z = min(z, 0.0)
        # A window where the usual rate expects less than one error is judged together with
        # the windows before it as well (see _err_pooled_z): an error storm on a key of a few
        # requests a minute pages.
        z_pool = self._err_pooled_z(k, n, p_eff) if usual is not None and n * p_eff < 1.0 else 0.0
        # The CUSUM's log-likelihood ratio S speaks as z = sqrt(2 S), so that a
        # score means the same tail probability as the one-window test.
        z_acc = 0.0
        if warm and usual is not None and busy:
            p1 = min(self.err_shift * p_eff, 0.9)
            llr = k * math.log(p1 / p_eff) + (n - k) * math.log((1.0 - p1) / (1.0 - p_eff))
            # Capped: it falls back within a few windows once the errors stop.
            cap = 0.75 * score_to_z(self.threshold) ** 2
            self._err_cusum = min(max(0.0, self._err_cusum + llr), cap)
            if k >= 1:
                z_acc = math.sqrt(2.0 * self._err_cusum)
        z_eff = max(z, z_acc, z_pool)
        if z_pool > max(z, z_acc):
            rate = self._err_pool_rate  # the pool's rate speaks
        score = z_to_score(z_eff)
        ratio = (rate + 1e-9) / p_eff
        sev = "critical" if rate >= 0.5 else "high" if rate >= 0.2 else "medium" if rate >= 0.05 else "low"
        obs = (rate, p, score, z_eff, sev if ratio >= 2 else "low")
        anomalous = score >= self.threshold
        if anomalous and f.error_types:
            self._count_error_types(f.error_types)
        t = self._step("error_rate", "error_rate", f, obs if anomalous else None, out, warm)
        if t == "resolved":
            self._err_cusum = 0.0
        if self._err_types and not anomalous and not self._ep["error_rate"].active:
            self._err_types = {}
        # The usual rate learns each window ERR_GUARD windows late: errors that add
        # up over several windows are judged against the rate from before they
        # began, while a usual rate that is off still corrects itself. Windows of
        # an episode (and the guard windows before it fired) are learned slowly.
        # It is a ratio of decayed sums (errors / requests), so a window of few
        # requests (a traffic drop) weighs little.
        pending = self._err_pending
        if t == "firing":
            pending[:] = [(pk, pn, True) for pk, pn, _ in pending]
        elif t == "resolved":
            self._spend_pending()
        pending.append((k, n, anomalous))
        if len(pending) > ERR_GUARD:
            pk, pn, was_anomalous = pending.pop(0)
            learned = self._err_learned
            self._err_learned = learned + 1
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
            ek, en = self._err_sums if self._err_sums is not None else (0.0, 0.0)
            self._err_sums = (ek + a * (pk - ek), en + a * (pn - en))

    def _spend_pending(self) -> None:
        """An error-rate episode resolved: its windows are spent, the pooled test starts after them
        (their errors paged once; pooled with the quiet windows after the episode, they paged again)."""
        self._err_pending[:] = [(pk, pn, 2 if a in (1, 2) else 3) for pk, pn, a in self._err_pending]

    def _err_pooled_z(self, k: int, n: int, p: float) -> float:
        """The largest z of the error count of the pools ending with this window: it and the
        windows before it (the last ERR_GUARD with requests, whose rate is not learned yet; not
        those of an episode that has resolved). A pool's z is the root of
        twice its binomial log-likelihood ratio (upper side; right for counts of a few), its window with the
        most errors counted as far as the next one only (one window's burst of failures does not
        make the pools after it anomalous, as a lone window does not page), and it needs three
        such errors at twice the usual rate. Sets ``_err_pool_rate`` to the speaking pool's rate."""
        best, K, N = 0.0, k, n
        e1, e2 = k, -1  # the two largest error counts of the pool's windows
        self._err_pool_rate = k / n
        pending = self._err_pending
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
                self._err_pool_rate = K / N
        return best

    def _count_error_types(self, types: Dict[Optional[str], int]) -> None:
        acc = self._err_types
        for name, c in types.items():
            if name in acc:
                acc[name] += c
            elif len(acc) < 32:
                acc[name] = c
            else:
                acc[OTHER] = acc.get(OTHER, 0) + c

    def _step(self, typ: str, metric: str, f: WindowFeatures, obs, out: List[Finding], warm: bool) -> Optional[str]:
        ep = self._ep[typ]
        last, severity, first = ep.last_obs, ep.severity, ep.first_start
        t = ep.step(f.start, obs, self.persistence, self.quiet_windows, warm)
        if t == "firing":
            self._metric_of[typ] = metric
        if t is not None:
            fd = self._finding(typ, self._metric_of.get(typ, metric), f, obs if obs is not None else last, ep, t)
            if t == "resolved":
                fd.severity, fd.event_time = severity, first
            out.append(fd)
        return t

    def _finding(self, typ: str, metric: str, f: WindowFeatures, obs, ep: Episode, status: str) -> Finding:
        value, expected, score, z, severity = obs
        ratio = (value + 1e-9) / max(expected, 0.005) if typ == "error_rate" else _ratio(value, expected)
        evidence = {
            "z": round(z, 2),
            "ratio": round(ratio, 3),
            "windows_anomalous": ep.run,
            "first_window_start": ep.first_start,
            "window_seconds": f.end - f.start,
            "requests_in_window": f.count,
        }
        if status == "resolved":
            evidence["resolved_after_windows"] = self.quiet_windows if typ != "drift" else self.drift_quiet
        return Finding(typ, metric, value, expected, max(score, ep.peak), z, ep.first_start, f.end,
                       ep.severity if status != "firing" else severity, evidence,
                       "up" if z >= 0 else "down", status)

    def __getstate__(self):
        return self.__dict__.copy()

    def __setstate__(self, s) -> None:
        self.__dict__.update(s)
        self.__dict__.setdefault("cause_z", 3.0)  # snapshots from before causes were confirmed by effects
        self.__dict__.setdefault("_cause_only", False)
        self.__dict__.setdefault("err_shift", 3.0)  # snapshots from before the error-rate CUSUM
        self.__dict__.setdefault("_err_cusum", 0.0)
        self.__dict__.setdefault("_err_learned", 1000)  # snapshots from before the usual rate's memory in requests
        self.__dict__.setdefault("_err_pool_rate", 0.0)
        self.__dict__.setdefault("_drift_stepped", {})
        self.__dict__.setdefault("_drift_wander", {})  # snapshots from before the drift's wander bar
        self.__dict__.setdefault("_err_types", {})  # snapshots from before root-cause hints
        pending = self.__dict__.setdefault("_err_pending", [])  # snapshots from before the error-rate guard
        if pending and len(pending[0]) != 3:
            self._err_pending = []  # (rate, anomalous) pairs of an earlier format: relearned within ERR_GUARD windows
        rate = self.__dict__.pop("_err_rate", None)  # kept before the usual rate was derived from _err_sums
        if "_err_sums" not in self.__dict__:
            self._err_sums = None if rate is None else (rate * 100.0, 100.0)
        self.__dict__.setdefault("_hints", {})
        self.__dict__.setdefault("_drift_obs", None)  # snapshots from before it was kept
        self.__dict__.setdefault("_hourly", None)  # snapshots from before the minute-of-hour profile
        self.__dict__.setdefault("_bursts", None)  # and before traffic was counted in bursts
        self.__dict__.setdefault("hourly_scale", 0.7)
        for m in POOLED:
            if m not in self._base and METRICS[m][0] in self.types:
                # Snapshots from before latency and ttft were judged on their geometric means too.
                self._metrics.append(m)
                self._base[m] = self._new_base(m)
            if m in self._base and not isinstance(self._base[m], PooledLogMean):
                # Snapshots from before the geometric means: the baseline of trimmed means (another
                # quantity) is started afresh and learns again within its warm-up.
                self._base[m] = self._new_base(m)
        if "_memory" not in self.__dict__:  # snapshots from before the memories of days and weeks before
            self._memory = {} if self.__dict__.get("seasonality", True) else None
            self.daily_tolerance = 3.0
