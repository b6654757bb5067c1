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
from typing import Dict, List, Optional, Tuple

from detectors.robust import RobustBaseline, z_to_score


class WindowFeatures:
    __slots__ = (
        "start", "end", "count", "errors", "lat_p50", "lat_p95", "ttft_p95",
        "in_tokens", "out_tokens", "cost", "cost_total", "tokens_total",
    )

    def __init__(self, start: float, end: float, count: int = 0, errors: int = 0,
                 lat_p50: Optional[float] = None, lat_p95: Optional[float] = None,
                 ttft_p95: Optional[float] = None, in_tokens: Optional[float] = None,
                 out_tokens: Optional[float] = None, cost: Optional[float] = None,
                 cost_total: float = 0.0, tokens_total: int = 0) -> None:
        self.start = start
        self.end = end
        self.count = count
        self.errors = errors
        self.lat_p50 = lat_p50
        self.lat_p95 = lat_p95
        self.ttft_p95 = ttft_p95
        self.in_tokens = in_tokens  # mean per request
        self.out_tokens = out_tokens  # mean per request
        self.cost = cost  # mean per request
        self.cost_total = cost_total
        self.tokens_total = tokens_total

    def as_dict(self) -> Dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __getstate__(self):
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, state) -> None:
        for k, v in zip(self.__slots__, state):
            setattr(self, k, v)


class Finding:
    """A new anomaly episode on a key: what the flow turns into an alert."""

    __slots__ = ("type", "metric", "observed", "expected", "score", "z", "event_time",
                 "window_end", "severity", "evidence", "direction")

    def __init__(self, type: str, metric: str, observed: float, expected: float, score: float,
                 z: float, event_time: float, window_end: float, severity: str,
                 evidence: dict, direction: str) -> None:
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

    def __repr__(self) -> str:
        return f"Finding({self.type}, {self.metric}, observed={self.observed:.4g}, expected={self.expected:.4g}, score={self.score:.3f})"


SEVERITIES = ("info", "low", "medium", "high", "critical")


def severity_for(ratio: float, score: float) -> str:
    """Severity from the size of the deviation (ratio to expected, >= 1)."""
    if ratio >= 8 or (ratio >= 5 and score >= 0.99):
        return "critical"
    if ratio >= 3:
        return "high"
    if ratio >= 1.8:
        return "medium"
    return "low"


class _Episode:
    """Persistence and episode state of one metric on one key."""

    __slots__ = ("run", "first_start", "first_obs", "active", "quiet", "peak")

    def __init__(self) -> None:
        self.run = 0
        self.first_start = 0.0
        self.first_obs: Optional[Tuple[float, float, float, float]] = None
        self.active = False
        self.quiet = 0
        self.peak = 0.0

    def __getstate__(self):
        return (self.run, self.first_start, self.first_obs, self.active, self.quiet, self.peak)

    def __setstate__(self, s) -> None:
        self.run, self.first_start, self.first_obs, self.active, self.quiet, self.peak = s


# metric name -> (alert type, feature attribute, direction: +1 high side, 0 both sides)
METRICS: Dict[str, Tuple[str, str, int]] = {
    "latency_p95_ms": ("latency", "lat_p95", +1),
    "ttft_p95_ms": ("ttft", "ttft_p95", +1),
    "output_tokens_mean": ("tokens", "out_tokens", +1),
    "input_tokens_mean": ("tokens", "in_tokens", +1),
    "cost_per_request_usd": ("cost", "cost", +1),
    "request_count": ("traffic", "count", 0),
}


class KeyDetectors:
    """All window-level detectors of one service/model key."""

    def __init__(self, types: Tuple[str, ...] = ("latency", "ttft", "tokens", "cost", "error_rate", "traffic"),
                 warmup_windows: int = 30, min_requests: int = 8, threshold: float = 0.9,
                 persistence: int = 2, quiet_windows: int = 5, relearn_after: int = 30) -> None:
        self.types = tuple(types)
        self.warmup_windows = warmup_windows
        self.min_requests = min_requests
        self.threshold = threshold
        self.persistence = persistence
        self.quiet_windows = quiet_windows
        self.relearn_after = relearn_after
        self._metrics = [m for m, (t, _, _) in METRICS.items() if t in self.types]
        self._base: Dict[str, RobustBaseline] = {
            m: RobustBaseline(alpha=0.05, log=True, min_scale=0.05 if m != "request_count" else 0.1,
                              warmup=warmup_windows // 2, offset=1e-6 if m == "cost_per_request_usd" else 1.0)
            for m in self._metrics
        }
        self._ep: Dict[str, _Episode] = {m: _Episode() for m in self._metrics + ["error_rate"]}
        self._err_rate: Optional[float] = None
        self._err_n = 0
        self._windows = 0

    @property
    def windows_seen(self) -> int:
        return self._windows

    def update(self, f: WindowFeatures) -> List[Finding]:
        """Score one closed window, then learn it; return new episodes."""
        out: List[Finding] = []
        warm = self._windows >= self.warmup_windows
        busy = f.count >= self.min_requests
        for m in self._metrics:
            typ, attr, direction = METRICS[m]
            value = getattr(f, attr)
            base = self._base[m]
            if value is None or (not busy and m != "request_count"):
                self._step(m, f, None, out, warm)
                continue
            value = float(value)
            z = base.z(value)
            if direction > 0 and z < 0:
                z_eff = 0.0
            else:
                z_eff = abs(z)
            score = z_to_score(z_eff)
            exp = base.expected()
            obs = (value, exp if exp is not None else value, score, z)
            self._step(m, f, obs if score >= self.threshold else None, out, warm, obs)
            ep = self._ep[m]
            if ep.active and ep.run >= self.relearn_after:
                # A lasting level shift that was alerted: it is the new normal.
                base.relearn(value)
                ep.run = 0
            base.learn_one(value)
        if "error_rate" in self.types:
            self._error_rate(f, out, warm)
        self._windows += 1
        return out

    def _error_rate(self, f: WindowFeatures, out: List[Finding], warm: bool) -> None:
        n, k = f.count, f.errors
        if n < self.min_requests:
            self._step("error_rate", f, None, out, warm)
            return
        rate = k / n
        p = self._err_rate if self._err_rate is not None else rate
        p_eff = min(max(p, 0.005), 0.5)
        z = (k - n * p_eff) / math.sqrt(n * p_eff * (1 - p_eff))
        score = z_to_score(z) if (k >= 3 and rate >= 2 * p_eff) else 0.0
        obs = (rate, p, score, z)
        self._step("error_rate", f, obs if score >= self.threshold else None, out, warm, obs)
        a = 0.05 if score < self.threshold else 0.005
        if self._err_rate is None:
            self._err_rate = rate
        else:
            self._err_rate += a * (rate - self._err_rate)

    def _step(self, m: str, f: WindowFeatures, anomalous, out: List[Finding], warm: bool, seen=None) -> None:
        ep = self._ep[m]
        if anomalous is not None:
            if ep.run == 0:
                ep.first_start = f.start
                ep.first_obs = anomalous
            ep.run += 1
            ep.quiet = 0
            ep.peak = max(ep.peak, anomalous[2])
            if not ep.active and ep.run >= self.persistence and warm:
                ep.active = True
                out.append(self._finding(m, f, anomalous, ep))
            return
        if ep.active:
            ep.quiet += 1
            if ep.quiet >= self.quiet_windows:
                ep.active = False
                ep.run = 0
                ep.peak = 0.0
        else:
            ep.run = 0
            ep.peak = 0.0

    def _finding(self, m: str, f: WindowFeatures, obs, ep: _Episode) -> Finding:
        value, expected, score, z = obs
        typ = "error_rate" if m == "error_rate" else METRICS[m][0]
        if m == "error_rate":
            ratio = (value + 1e-9) / max(expected, 0.005)
        elif expected > 0 and value > 0:
            ratio = max(value / expected, expected / value)
        else:
            ratio = 1.0
        direction = "up" if z >= 0 else "down"
        evidence = {
            "z": round(z, 2),
            "ratio": round(ratio, 3),
            "windows_anomalous": ep.run,
            "first_window_start": ep.first_start,
            "window_seconds": f.end - f.start,
            "requests_in_window": f.count,
        }
        return Finding(typ, m, value, expected, max(score, ep.peak), z, ep.first_start, f.end,
                       severity_for(ratio, score), evidence, direction)

    def __getstate__(self):
        return self.__dict__.copy()

    def __setstate__(self, s) -> None:
        self.__dict__.update(s)
