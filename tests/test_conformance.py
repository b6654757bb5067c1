"""One conformance check over every detector in detectors/: seeded determinism,
pickling mid-stream, and inputs left as they were."""

import copy
import math
import pickle
import random
from collections import namedtuple

import pytest

from detectors import make_univariate
from detectors.attacks import SourceAttacks
from detectors.drift import DriftDetector
from detectors.key_metrics import DriftWatch, ErrorRateDetector, PooledDetector, QuantileDetector, TrafficDetector
from detectors.multivariate import MultivariateDetector, squash
from detectors.population import DecayingQuantiles
from detectors.robust import RobustBaseline
from detectors.seasonal import PeriodMemory, SeasonalProfile
from detectors.windowed import KeyDetectors, WindowFeatures, log_stats

T0 = 1767571200.0


def series(n=600, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        v = 100 * math.exp(rng.gauss(0, 0.1)) * (1 + 0.3 * math.sin(i / 50))
        if i in (300, 301, 302):
            v *= 6
        out.append((T0 + 60 * i, v))
    return out


Security = namedtuple("Security", "ts kind service model")


def security(ts, v):
    """A minute of a source's security events, about one per 40 of the value (a spike is an attack)."""
    n = int(v // 40)
    return [Security(ts + 60.0 * k / n, "jailbreak" if k % 3 else "pii", "svc", "m") for k in range(n)]


def features(i, ts, v):
    return WindowFeatures(ts, ts + 60, int(v), 1, v * 5, v * 10, v * 2, v * 8, v * 2, v * 1e-5, v * 1e-3, int(v * 10))


def pooled_features(i, ts, v):
    f = features(i, ts, v)
    f.out_log = log_stats([v * 2 * math.exp(0.2 * (k % 5 - 2)) for k in range(int(v // 10))], 1.0)
    return f


def metric_step(m, make_features=features):
    """A step of a per-type metric detector of KeyDetectors: score metric ``m`` of a window, then learn it."""
    def step(d, i, ts, v):
        f = make_features(i, ts, v)
        mid, pattern = ts + 30.0, {}
        r = d.score(m, f, mid, True, i < 100, pattern)
        if r is None:
            return None
        value, adj, score, z, exp, pool = r
        d.learn(m, mid, value, adj, score, pattern.get(m), pool)
        if isinstance(d, TrafficDetector):
            d.learn_bursts(f.count)
        return round(score, 9), round(exp, 6), pool
    return step


def error_step(d, i, ts, v):
    f = features(i, ts, v)
    f.errors = int(v // 20) if 300 <= i < 303 else i % 2
    judged = d.score(f, i >= 30)
    if judged is None:
        return None
    obs, anomalous = judged
    d.learn(f, anomalous, None, False)
    return obs, anomalous


# name -> (factory, step(detector, i, ts, value) -> output)
DETECTORS = {
    "univariate": (make_univariate, lambda d, i, ts, v: d.update(ts, v)),
    "robust_baseline": (RobustBaseline, lambda d, i, ts, v: (d.score_one(v), d.learn_one(v))[0]),
    "drift": (DriftDetector, lambda d, i, ts, v: d.update(v, 0.1)),
    "seasonal": (SeasonalProfile, lambda d, i, ts, v: (d.offset(ts), d.learn(ts, math.log(v) - 4.6))[0]),
    "period_memory": (lambda: PeriodMemory(7200.0, 600.0),  # 600 one-minute points: five periods
                      lambda d, i, ts, v: (d.seen_before(ts, math.log(v), 3.0, 0.1), d.learn(ts, math.log(v)))[0]),
    "population": (DecayingQuantiles, lambda d, i, ts, v: (d.update(v), d.quantile(0.9))[1]),
    "multivariate": (lambda: MultivariateDetector(warmup=50, seed=7),
                     lambda d, i, ts, v: d.score_learn({"a": squash(math.log(v) - 4.6), "b": squash(math.sin(i))})),
    "attacks": (lambda: SourceAttacks(window=300.0, threshold=20),
                lambda d, i, ts, v: [(f.status, f.count, f.first, f.end, f.severity) for f in d.update(security(ts, v))]),
    "key_traffic": (TrafficDetector, metric_step("request_count")),
    "key_pooled": (lambda: PooledDetector(("output_tokens_mean",)), metric_step("output_tokens_mean", pooled_features)),
    "key_quantiles": (lambda: QuantileDetector(("latency_p95_ms",)), metric_step("latency_p95_ms")),
    "key_error_rate": (ErrorRateDetector, error_step),
    "key_drift": (DriftWatch, lambda d, i, ts, v: d.update("input_tokens_mean", v, v, 0.1, False, False)),
    "key_detectors": (KeyDetectors,
                      lambda d, i, ts, v: [(f.type, f.status, round(f.score, 9)) for f in d.update(features(i, ts, v))]),
}


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_deterministic(name):
    make, step = DETECTORS[name]
    a, b = make(), make()
    xs = series()
    assert [step(a, i, ts, v) for i, (ts, v) in enumerate(xs)] == [step(b, i, ts, v) for i, (ts, v) in enumerate(xs)]


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_pickles_mid_stream(name):
    make, step = DETECTORS[name]
    d = make()
    xs = series()
    for i, (ts, v) in enumerate(xs[:250]):
        step(d, i, ts, v)
    clone = pickle.loads(pickle.dumps(d))
    rest = list(enumerate(xs))[250:]
    assert [step(d, i, ts, v) for i, (ts, v) in rest] == [step(clone, i, ts, v) for i, (ts, v) in rest]


@pytest.mark.parametrize("name", sorted(n for n in DETECTORS if hasattr(DETECTORS[n][0](), "clone")))
def test_clone_has_the_tuning_and_nothing_learned(name):
    make, step = DETECTORS[name]
    d = make()
    xs = list(enumerate(series()))
    for i, (ts, v) in xs[:250]:
        step(d, i, ts, v)
    clone, fresh = d.clone(), make()
    assert {k: v for k, v in vars(clone).items() if not k.startswith("_")} == {
        k: v for k, v in vars(d).items() if not k.startswith("_")}
    assert [step(clone, i, ts, v) for i, (ts, v) in xs] == [step(fresh, i, ts, v) for i, (ts, v) in xs]


def test_inputs_are_not_mutated():
    d = MultivariateDetector(warmup=5)
    x = {"a": 0.4, "b": 0.6}
    before = dict(x)
    for _ in range(20):
        d.score_learn(x)
    assert x == before
    k = KeyDetectors()
    f = features(0, T0, 100.0)
    snap = copy.deepcopy(f.__getstate__())
    for _ in range(40):
        k.update(f)
    assert f.__getstate__() == snap
