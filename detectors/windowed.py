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

from detectors.episode import Episode
from detectors.hints import HINTS, hints_for
from detectors.key_metrics import (
    DRIFT_METRICS, METRICS, POOLED, DriftWatch, ErrorRateDetector, MetricDetector, PooledDetector,
    QuantileDetector, TrafficDetector, new_base,
)
from detectors.multivariate import MultivariateDetector, squash
from detectors.priors import ParentPriors
from detectors.robust import PooledLogMean, RobustBaseline

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
    if ok <= 0 or f.stride > 1:  # a sample's users say little of how many requests each sent
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
        "unit_cost", "unit_log", "tpot", "tpot_log", "rest", "top", "stride",
    )
    _PICKLED = __slots__[:-3]  # ``rest``, ``top`` and ``stride`` are the window's own and are never kept
    # Slots added after ``clusters`` (the cost of a million tokens, the time per output token).
    _SINCE_CLUSTERS = ("unit_cost", "unit_log", "tpot", "tpot_log")

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
                 rest: Optional[Tuple[Any, ...]] = None,
                 unit_cost: Optional[float] = None, unit_log: Optional[LogStats] = None,
                 tpot: Optional[float] = None, tpot_log: Optional[LogStats] = None,
                 top: Optional[Tuple[str, Dict[str, Tuple[int, float]]]] = None, stride: int = 1) -> None:
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
        # when that user sent enough of it to make its tail alone (else the window's requests and
        # None), then (latency p95, ttft p95) without its largest request; None: not measured.
        self.rest = rest
        # What a million tokens cost, over the requests with cost and tokens (a geometric mean), and
        # its log statistics.
        self.unit_cost = unit_cost
        self.unit_log = unit_log
        # Time per output token (a geometric mean over the requests with latency and output tokens),
        # and its log statistics.
        self.tpot = tpot
        self.tpot_log = tpot_log
        # The window's busiest user (two requests or more) and its (requests, sum of logs) per
        # pooled metric (``in_log`` ...): a pooled mean's rise must hold without it. None: no
        # user sent two, or not measured.
        self.top = top
        # 1: the per-request statistics (quantiles, log statistics, clusters, top) are over every
        # successful request; n: over every n-th (a window past MAX_WINDOW_SAMPLES requests keeps
        # a systematic sample; counts and totals stay exact).
        self.stride = stride

    def as_dict(self) -> Dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __getstate__(self):
        return tuple(getattr(self, k) for k in self._PICKLED)

    def __setstate__(self, state) -> None:
        self.rest = None
        self.top = None
        self.stride = 1
        self.error_types = None  # states from before error types were counted
        self.in_log = self.out_log = self.cost_log = None  # and before log statistics
        self.lat_gmean = self.ttft_gmean = self.lat_log = self.ttft_log = None
        self.clusters = None  # and before requests were grouped by user
        self.unit_cost = self.unit_log = None  # and before the cost of a million tokens
        self.tpot = self.tpot_log = None  # and before the time per output token
        if len(state) == len(self._PICKLED) - len(self._SINCE_CLUSTERS) + 1:
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


# Metrics that follow the tokens, and the token metrics that move them: where one alerts, a
# smaller rise of those is its cause (_confirm_cause). A request's cost is its input and output
# tokens at their prices; its time after the first token is decoding, the output tokens'.
EFFECTS: Dict[str, Tuple[str, ...]] = {
    "cost_per_request_usd": ("output_tokens_mean", "input_tokens_mean"),
    # Output tokens cost more than input tokens: more of them raise what a million tokens cost.
    "cost_per_million_tokens_usd": ("output_tokens_mean",),
    "latency_gmean_ms": ("output_tokens_mean",),
    # Without a ttft, the time per output token holds the prompt's too.
    "latency_per_output_token_ms": ("input_tokens_mean",),
    "latency_p50_ms": ("output_tokens_mean",),
    "latency_p95_ms": ("output_tokens_mean",),
}
# Per-token metrics and the token metrics they are divided by: a per-token metric that is up while
# one of these fell ``FELL_Z`` standard errors is the tokens falling (shorter answers over a fixed
# overhead, a price with a per-request part), not a slower model or a dearer token (KeyDetectors.update).
PER_TOKEN: Dict[str, Tuple[str, ...]] = {
    "latency_per_output_token_ms": ("output_tokens_mean",),
    "cost_per_million_tokens_usd": ("output_tokens_mean", "input_tokens_mean"),
}
FELL_Z = 2.0
if any(list(METRICS).index(d) > list(METRICS).index(m) for m, ds in PER_TOKEN.items() for d in ds):
    raise RuntimeError("METRICS must list the token metrics before the per-token metrics (KeyDetectors.update)")
# Spike episodes that explain a change in the drift metrics (a token spike moves the cost per request too).
SUDDEN_TYPES = ("tokens", "cost")
# Episodes that explain a change in a drift metric beside SUDDEN_TYPES, once they page: a latency
# spike moves the speed's drift reference. Not their single windows: a ramp's steepest minutes
# stand out as the windows of a spike do, and taking each as a step would follow the ramp up. While
# such a window may be a spike's first, the drift's alarm waits for the next window.
SUDDEN_ONCE_PAGED = {"latency_per_output_token_ms": ("latency", "ttft")}
ALL_TYPES = ("latency", "ttft", "tokens", "cost", "error_rate", "traffic", "drift")  # multivariate: opt-in


class KeyDetectors:
    """All window-level detectors of one service/model key.

    Composed of the per-type detectors of :mod:`detectors.key_metrics`: traffic
    (a time-of-day profile, a minute-of-hour one for scheduled batches, the key's
    own bursts, a quarter hour's sum), per-request metrics pooled over windows on a sparse key (tokens
    and cost per request, latency and ttft geometric means, on the mean of their
    logs), latency and ttft quantiles, the error rate (binomial test and CUSUM)
    and a CUSUM drift detector on tokens, cost and the time per output token;
    each metric is compared with the same time on the days (and, for traffic,
    weeks) before for patterns that recur. KeyDetectors keeps what combines
    types: one episode per alert type (with persistence), a token rise confirmed
    by its effects (:meth:`_confirm_cause`), drift rebased while a sudden tokens
    or cost episode runs (the time per token's while a latency or ttft one
    pages), and the root-cause hints. During the key's first ``cold_windows``
    windows after warm-up a window must deviate a third further to count: a new
    model's young baseline does not page on its own noise.
    """

    def __init__(self, types: Tuple[str, ...] = ALL_TYPES,
                 warmup_windows: int = 30, min_requests: int = 8, threshold: float = 0.9,
                 persistence: int = 2, quiet_windows: int = 5, relearn_after: int = 30,
                 seasonality: bool = True, cold_windows: int = 60,
                 drift_min_change: float = 0.25, cause_z: float = 3.0, span_windows: int = 15) -> None:
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
        # Traffic is judged on the sum of this many windows too (TrafficDetector._span_score; 0: not).
        self.span_windows = span_windows
        # Calibrated Half-Space Trees score (rank among recent windows) that counts as anomalous.
        self.mv_threshold = 0.998
        self.daily_tolerance = 3.0  # in noise levels (see PeriodMemory)
        self.hourly_scale = 0.7  # see TrafficDetector
        self.err_shift = 3.0  # see ErrorRateDetector
        self._metrics = [m for m, (t, _, _) in METRICS.items() if t in self.types]
        self._make_parts()
        self._cause_only = False  # the tokens' current run is of windows confirmed by an effect only
        self._drift_metric = DRIFT_METRICS[0]
        self._drift_obs = None  # the last alarm of the metric that opened the drift episode
        self._metric_of: Dict[str, str] = {}
        self._mv = MultivariateDetector() if "multivariate" in self.types else None
        # One episode per alert type: the strongest of its metrics speaks for it,
        # so a slow model (p50 and p95 both up) is one latency anomaly, not two.
        names = sorted({METRICS[m][0] for m in self._metrics} | {"error_rate"}
                       | ({"drift"} if self._drifts.metrics else set())
                       | ({"multivariate"} if self._mv is not None else set()))
        self._ep: Dict[str, Episode] = {t: Episode() for t in names}
        # Root-cause hints of each open episode, by type: what its resolve repeats.
        self._hints: Dict[str, List[str]] = {}
        self._windows = 0

    def _make_parts(self) -> None:
        """The per-type detectors, from this set's tuning values (nothing learned)."""
        ms = self._metrics
        common = (self.warmup_windows, self.min_requests, self.threshold, self.seasonality, self.daily_tolerance)
        self._traffic = TrafficDetector(tuple(m for m in ms if m == "request_count"), *common, self.hourly_scale,
                                       self.span_windows)
        self._traffic.persistence = self.persistence
        self._pooled = PooledDetector(tuple(m for m in ms if m in POOLED), *common)
        self._quantiles = QuantileDetector(tuple(m for m in ms if m != "request_count" and m not in POOLED), *common)
        self._errors = ErrorRateDetector(self.min_requests, self.threshold, self.err_shift)
        self._drifts = DriftWatch(DRIFT_METRICS if "drift" in self.types else (), self.drift_min_windows,
                                  self.drift_min_change, self.drift_quiet)

    def _part(self, m: str) -> MetricDetector:
        """The detector that judges metric ``m``."""
        if m == "request_count":
            return self._traffic
        return self._pooled if m in POOLED else self._quantiles

    def _base_of(self, m: str) -> RobustBaseline:
        return self._part(m)._base[m]

    @property
    def _base(self) -> Dict[str, RobustBaseline]:
        """Every judged metric's baseline (a view)."""
        return {m: self._base_of(m) for m in self._metrics}

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
                    self._base_of(m).borrow_scale(s)
                warm = (self._windows >= self.borrowed_warmup
                        and all(borrowed.get(m) is not None for m in ("latency_p95_ms", "request_count")
                                if m in borrowed))
            elif self._windows % 30 == 0:
                for m in self._metrics:
                    if not self._ep[METRICS[m][0]].active:
                        priors.observe(key, parents, m, self._base_of(m).scale)
        cold = self._windows < self.warmup_windows + self.cold_windows
        busy = f.count >= self.min_requests
        mid = (f.start + f.end) / 2.0
        # A window with a small share of its usual traffic has no reliable
        # quantiles (a p95 of eight requests is their maximum): only traffic
        # and errors are judged on it.
        if busy and "request_count" in self._traffic._base:
            usual = self._traffic.usual(mid)
            if usual is not None and self._windows >= self.warmup_windows and f.count < 0.3 * usual:
                busy = False
        pattern: Dict[str, str] = {}  # metric -> "daily" / "weekly": where it was at this time before
        best: Dict[str, Tuple[float, str, tuple]] = {}
        values: Dict[str, Tuple[float, float, float, float, float]] = {}  # metric -> (value, adjusted, score, z, expected)
        # metric -> (windows pooled, this window's own value, the standard error of that value)
        pooled: Dict[str, Tuple[int, float, float]] = {}
        for m in self._metrics:
            typ = METRICS[m][0]
            best.setdefault(typ, (-1.0, m, None))
            r = self._part(m).score(m, f, mid, busy, cold, pattern)
            if r is None:
                continue
            value, adj, score, z, exp, pool = r
            if pool is not None:
                pooled[m] = pool
            if score >= self.threshold and any(values.get(d, (0.0,) * 4)[3] <= -FELL_Z for d in PER_TOKEN.get(m, ())):
                # Fewer tokens per request sharing its fixed time or price make each token dearer or
                # slower, though nothing got slower or dearer: a per-token metric does not alert on
                # a fall of the tokens it divides by (scored before it: METRICS lists them first).
                score = 0.0
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
            # the key's own warm-up, and a missed batch's page for the next run.
            if typ != "traffic":
                ready = warm
            else:
                ready = self._windows >= self.warmup_windows and self._traffic.may_page(mid)
            obs = obs if obs is not None and score >= self.threshold else None
            if typ == "traffic" and obs is None and self._ep[typ].active and self._ep[typ].last_obs[3] < 0.0 \
                    and self._traffic.between_batches(f.count):
                # A schedule that stopped is one incident until a batch comes, not one per batch it misses.
                continue
            self._step(typ, m, f, obs, out, ready)
        if "tokens" in self._ep:
            ep = self._ep["tokens"]
            # Whether the tokens' run so far is of windows confirmed by their effect alone.
            self._cause_only = ep.run > 0 and not ep.active and confirmed and (ep.run == 1 or self._cause_only)
        if self._mv is not None:
            self._multivariate(f, values, best, out, warm)
        drifts = self._drifts
        for m, (value, adj, score, _z, _exp) in values.items():
            part = self._part(m)
            base = part._base[m]
            ep = self._ep[METRICS[m][0]]
            if ep.active and ep.run >= self.relearn_after and score >= self.threshold:
                # A lasting level shift that was alerted: it is the new normal.
                base.relearn(adj)
                if m == "request_count":
                    self._traffic.relearn_span()
            if drifts.watches(m):
                # The drift CUSUM follows each window's own value, in units of the window's own noise
                # where its requests say more than the windows' scale (one agent task's window moves
                # further than a window of many users' requests: PooledLogMean.judge). A per-token
                # metric up while its tokens fell is a step the tokens explain, not a drift.
                sudden = m in pattern or any(values.get(d, (0.0,) * 4)[3] <= -FELL_Z
                                             for d in PER_TOKEN.get(m, ()))
                if m in pooled:
                    # (A window that was only the busiest user's, on a key of many, says nothing of
                    # the key's level: PooledLogMean.window_own.)
                    _, own, se = pooled[m]
                    if own is not None:
                        # A drift adds up windows: on a key whose windows' wander carries over
                        # (a chat key's long conversations), in units of the sum's own noise.
                        noise = max(base.scale, se) * math.sqrt(base.long_run())
                        self._drift_step(m, f, own, noise, base, out, warm, sudden)
                else:
                    self._drift_step(m, f, value, base.scale, base, out, warm, sudden)
            part.learn(m, mid, value, adj, score, pattern.get(m), pooled.get(m))
        for typ, (_, _, _) in best.items():
            ep = self._ep[typ]
            if ep.active and ep.run >= self.relearn_after:
                ep.run = 0
        if drifts.metrics:
            # Drift windows with no value (a quiet window) count as quiet for the drift episode.
            if not any(m in values for m in drifts.metrics):
                self._drift_quiet_step(f, out, warm)
        score, _, obs = best.get("traffic", (-1.0, "", None))
        fell = score >= self.threshold and obs[3] < 0.0  # obs: (value, expected, score, z, severity)
        self._traffic.learn_bursts(f.count, _requests_per_user(f), anomalous=fell)
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
            hints = hints_for(fd.type, fd.metric, levels, self._errors.error_types)
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
            for mm in self._drifts.metrics:
                level = self._base_of(mm).current()
                if level is not None:
                    self._drifts.accept(mm, level)

    def _drift_step(self, m: str, f: WindowFeatures, value: float, noise: float, base: RobustBaseline,
                    out: List[Finding], warm: bool, explained: bool = False) -> None:
        dep = self._ep["drift"]
        # Where a change is accepted, the new reference is the key's fast level, not this
        # window's value (see DriftWatch.update).
        now = base.current()
        now = value if now is None else now
        # A sudden change is the spike detector's; do not count it twice as drift
        # (a spike in tokens moves the cost per request too). Nor is a daily pattern a drift.
        ep = self._ep
        sudden = (explained or any(ep[t].active or (ep[t].run > 0 and not (t == "tokens" and self._cause_only))
                                   for t in SUDDEN_TYPES if t in ep)
                  or any(ep[t].active for t in SUDDEN_ONCE_PAGED.get(m, ()) if t in ep))
        wait = any(ep[t].run > 0 for t in SUDDEN_ONCE_PAGED.get(m, ()) if t in ep)
        alarm = self._drifts.update(m, value, now, noise, sudden, dep.active, wait)
        if alarm is None:
            if m == self._drift_metric or not dep.active:
                self._drift_quiet_step(f, out, warm)
            return
        length, mean_log, ref, change = alarm
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
        er = self._errors
        judged = er.score(f, warm)
        if judged is None:
            t = self._step("error_rate", "error_rate", f, None, out, warm)
            er.quiet(t, self._ep["error_rate"].active)
            if f.count:
                # Too few requests to judge before a usual rate is known, but they teach it: a key
                # that never has min_requests in a window would otherwise never be judged.
                er.learn(f, False, t, self._ep["error_rate"].active)
            return
        obs, anomalous = judged
        t = self._step("error_rate", "error_rate", f, obs if anomalous else None, out, warm)
        er.learn(f, anomalous, t, self._ep["error_rate"].active)

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
                # The incident's windows have spoken: the pools after it judge what came since.
                for m in self._metrics:
                    spend = getattr(self._pooled._base.get(m), "spend", None) if METRICS[m][0] == typ else None
                    if spend is not None:
                        spend()
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
        self.__dict__.setdefault("span_windows", TrafficDetector.span_windows)  # states from before the span
        if "_traffic" not in s:
            self._from_flat()
            return
        self._traffic.persistence = self.persistence  # states from before a missed batch was held
        if "drift" in self.types:
            self._drifts.watch_too(DRIFT_METRICS)  # states from before the time per token was watched for drift
        pooled = self._pooled
        for m in POOLED:
            if m not in self._metrics and METRICS[m][0] in self.types:
                # Snapshots from before the cost per million tokens and the time per output token:
                # the key judges them from its next windows, after their warm-up.
                self._metrics.append(m)
                pooled.metrics += (m,)
                pooled._base[m] = new_base(m, self.warmup_windows)

    def _from_flat(self) -> None:
        """A state of the layout before the per-type detectors (every part's learned state in this
        object's own attributes), with the backfills of the states before it, split into the parts."""
        d = self.__dict__
        d.setdefault("cause_z", 3.0)  # snapshots from before causes were confirmed by effects
        d.setdefault("_cause_only", False)
        d.setdefault("err_shift", 3.0)  # snapshots from before the error-rate CUSUM
        d.setdefault("_err_cusum", 0.0)
        d.setdefault("_err_learned", 1000)  # snapshots from before the usual rate's memory in requests
        d.setdefault("_err_pool_rate", 0.0)
        d.setdefault("_drift_stepped", {})
        d.setdefault("_drift_wander", {})  # snapshots from before the drift's wander bar
        d.setdefault("_err_types", {})  # snapshots from before root-cause hints
        pending = d.setdefault("_err_pending", [])  # snapshots from before the error-rate guard
        if pending and len(pending[0]) != 3:
            d["_err_pending"] = []  # (rate, anomalous) pairs of an earlier format: relearned within ERR_GUARD windows
        rate = d.pop("_err_rate", None)  # kept before the usual rate was derived from _err_sums
        if "_err_sums" not in d:
            d["_err_sums"] = None if rate is None else (rate * 100.0, 100.0)
        d.setdefault("_hints", {})
        d.setdefault("_drift_obs", None)  # snapshots from before it was kept
        d.setdefault("_hourly", None)  # snapshots from before the minute-of-hour profile
        d.setdefault("_bursts", None)  # and before traffic was counted in bursts
        d.setdefault("hourly_scale", 0.7)
        bases = d.pop("_base")
        for m in POOLED:
            if m not in bases and METRICS[m][0] in self.types:
                # Snapshots from before latency and ttft were judged on their geometric means too.
                self._metrics.append(m)
                bases[m] = new_base(m, self.warmup_windows)
            if m in bases and not isinstance(bases[m], PooledLogMean):
                # Snapshots from before the geometric means: the baseline of trimmed means (another
                # quantity) is started afresh and learns again within its warm-up.
                bases[m] = new_base(m, self.warmup_windows)
        if "_memory" not in d:  # snapshots from before the memories of days and weeks before
            d["_memory"] = {} if d.get("seasonality", True) else None
            d["daily_tolerance"] = 3.0
        memory = d.pop("_memory")
        season = d.pop("_season")
        drift = d.pop("_drift")
        self._make_parts()
        for part in (self._traffic, self._pooled, self._quantiles):
            part._base = {m: bases[m] for m in part.metrics}
            part._memory = None if memory is None else {m: v for m, v in memory.items() if m in part._base}
        tr = self._traffic
        tr._season, tr._hourly, tr._bursts = season, d.pop("_hourly"), d.pop("_bursts")
        er = self._errors
        er._pending, er._sums, er._learned = d.pop("_err_pending"), d.pop("_err_sums"), d.pop("_err_learned")
        er._pool_rate, er._cusum, er._types = d.pop("_err_pool_rate"), d.pop("_err_cusum"), d.pop("_err_types")
        dw = self._drifts
        dw.metrics = tuple(drift)
        dw._detectors, dw._held = drift, d.pop("_drift_held")
        dw._wander, dw._stepped = d.pop("_drift_wander"), d.pop("_drift_stepped")
        if "drift" in self.types:
            dw.watch_too(DRIFT_METRICS)
