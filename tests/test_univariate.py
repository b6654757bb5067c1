"""Behaviour of the default per-metric detector (SPEC section 4)."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from detectors import make_univariate
from detectors.univariate import UnivariateDetector


def noisy(n: int, seed: int = 1, level: float = 100.0, sd: float = 5.0, t0: int = 0):
    rng = random.Random(seed)
    return [(60.0 * (t0 + i), level + rng.gauss(0.0, sd)) for i in range(n)]


def run(det, points):
    return [det.update(ts, v) for ts, v in points]


def test_make_univariate_defaults():
    det = make_univariate()
    assert isinstance(det, UnivariateDetector)
    s = det.update(0.0, 1.0)
    assert isinstance(s, float) and 0.0 <= s <= 1.0


def test_flat_noisy_series_scores_low():
    scores = run(make_univariate(), noisy(3000))
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert max(scores[300:]) < 0.5
    assert sum(scores[300:]) / len(scores[300:]) < 0.1


def test_spike_scores_high():
    det = make_univariate()
    run(det, noisy(1000))
    assert det.update(60.0 * 1000, 160.0) > 0.9
    # right after an alert, a point no more surprising is de-duplicated (damped)
    assert det.update(60.0 * 1001, 40.0) <= 0.5

    dip = make_univariate()
    run(dip, noisy(1000))
    assert dip.update(60.0 * 1000, 40.0) > 0.9


def test_level_shift_high_then_adapted():
    det = make_univariate()
    run(det, noisy(2000))
    after = run(det, noisy(3000, seed=2, level=160.0, t0=2000))
    assert after[0] > 0.9
    assert max(after[1000:]) < 0.5
    assert sum(after[1000:]) / len(after[1000:]) < 0.1


def test_daily_pattern_is_learned():
    rng = random.Random(3)
    det = make_univariate()
    pts = [(300.0 * i, 50 + 30 * math.sin(2 * math.pi * i / 288) + rng.gauss(0, 1))
           for i in range(288 * 10)]
    scores = run(det, pts)
    assert max(scores[288 * 3:]) < 0.5
    # a value normal for the series but not for this time of day
    i = 288 * 10 + 72                       # the daily peak (value ~80)
    assert det.update(300.0 * i, 20.0) > 0.5


def test_deterministic():
    pts = noisy(1500) + [(60.0 * 1500, 500.0)] + noisy(500, seed=4, t0=1501)
    assert run(make_univariate(), pts) == run(make_univariate(), pts)


def test_pickle_round_trip_mid_stream():
    pts = noisy(2500, seed=5)
    pts[1800] = (pts[1800][0], 300.0)
    det = make_univariate()
    run(det, pts[:1200])
    clone = pickle.loads(pickle.dumps(det))
    assert run(clone, pts[1200:]) == run(det, pts[1200:])


def test_irregular_timestamps():
    rng = random.Random(6)
    det = make_univariate()
    ts, scores = 1.7e9, []
    for _ in range(2000):
        ts += rng.choice([1.0, 7.5, 60.0, 61.3, 3600.0])
        scores.append(det.update(ts, 20.0 + rng.gauss(0, 1)))
    det.update(ts, 20.0)                    # same timestamp again
    det.update(ts - 100.0, 20.0)            # out of order
    assert max(scores[300:]) < 0.5
    assert det.update(ts + 60.0, 40.0) > 0.9


def test_non_finite_input_does_not_poison_state():
    pts = noisy(1500, seed=7)
    clean = make_univariate()
    dirty = make_univariate()
    run(clean, pts[:1000])
    run(dirty, pts[:1000])
    for bad in (math.nan, math.inf, -math.inf):
        s = dirty.update(60.0 * 1000.5, bad)
        assert 0.0 <= s <= 1.0
    assert 0.0 <= dirty.update(math.nan, 100.0) <= 1.0   # NaN timestamp: scored, no crash
    dirty_rest = run(dirty, pts[1000:])
    clean.update(math.nan, 100.0)
    assert dirty_rest == run(clean, pts[1000:])
    assert max(dirty_rest[10:]) < 0.5


def test_input_not_mutated():
    pts = noisy(800, seed=8)
    before = list(pts)
    det = make_univariate()
    for ts, v in pts:
        det.update(ts, v)
    assert pts == before


def test_flatline_then_change():
    det = make_univariate()
    scores = run(det, [(60.0 * i, 45.0) for i in range(1000)])
    assert max(scores) == 0.0
    assert det.update(60.0 * 1000, 45.5) > 0.9


def daily(n: int, seed: int, step: float = 300.0):
    rng = random.Random(seed)
    return [(step * i, 50 + 30 * math.sin(2 * math.pi * i * step / 86400.0) + rng.gauss(0, 2))
            for i in range(n)]


def test_default_scales():
    det = make_univariate()
    assert det._bins == (48, 96) and det._spans == (32.0, 64.0)
    single = make_univariate(bins=48, drift_span=64)
    assert single._bins == (48,) and single._spans == (64.0,)
    for bad in ({"bins": ()}, {"bins": 0}, {"drift_span": [64, -1]}):
        with pytest.raises(ValueError):
            make_univariate(**bad)


def test_repeated_scale_is_the_single_scale():
    """The season and drift surprises are means over their scales: a scale given twice
    scores exactly as given once."""
    pts = daily(288 * 4, seed=9)
    pts[700] = (pts[700][0], pts[700][1] + 25.0)          # off the day's pattern
    pts[900:960] = [(t, v + 8.0) for t, v in pts[900:960]]   # a shift the drift means see
    once = run(make_univariate(bins=48, drift_span=64), pts)
    twice = run(make_univariate(bins=(48, 48), drift_span=(64, 64)), pts)
    assert once == twice
    assert max(once[700:720]) > 0.4


def test_season_surprise_is_the_mean_over_profiles():
    """With the level and drift channels quiet, the score of a point off the day's pattern
    is the mean of the profiles' own residual surprises (not their maximum)."""
    pts = daily(288 * 6, seed=10)
    det = make_univariate(rest=0, smax=20.0)              # no clipping at score 1
    run(det, pts)
    ts = 300.0 * 288 * 6 + 300.0 * 72                     # the daily peak, value ~80
    x = 50.0                                               # the daily mean: normal as a level
    floor = 1e-9 * (1.0 + abs(x))
    per_profile = []
    for k in range(2):
        _, _, pred = det._season_slot(k, ts)
        per_profile.append(det._residuals[k].surprise_upper(abs(x - pred), floor))
    level = det._values.surprise_two_sided(x, floor)
    assert level < 1.0 and min(per_profile) > 2.0
    assert abs(per_profile[0] - per_profile[1]) > 0.5      # mean and maximum differ
    assert det.update(ts, x) == pytest.approx(min(1.0, sum(per_profile) / 2 / det.smax))
