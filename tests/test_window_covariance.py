"""Windows whose means wander together (a chat key's long conversations) are judged as such: a pool of them
is not a prompt change."""

import math
import random

from detectors.robust import PooledLogMean, log_moments, score_to_z

Z_ALERT = score_to_z(0.9)


def _wandering_key(seed, phi=0.85, wander=0.25, per_window=5, shift=None, covariances=True, windows=1500):
    """A sparse key (five requests a window, spread 0.5) whose level wanders as an AR(1) with ``phi`` a
    window and ``wander`` standard deviation; ``shift``: (first window, windows) of a x2.5 rise of every
    request. Returns each window's z and the baseline."""
    rng = random.Random(seed)
    base = PooledLogMean(alpha=0.05, min_scale=0.05, warmup=15)
    if not covariances:
        base.lag_cov = lambda: None
    level = 0.0
    zs = []
    for w in range(windows):
        level = phi * level + rng.gauss(0.0, wander * math.sqrt(1.0 - phi * phi))
        ys = [6.0 + level + rng.gauss(0.0, 0.5) for _ in range(per_window)]
        if shift is not None and shift[0] <= w < shift[0] + shift[1]:
            ys = [y + math.log(2.5) for y in ys]
        base.push(log_moments(ys))
        z = base.judge()[0]
        if z > Z_ALERT:
            base.mark(1, 1)
        zs.append(z)
    return zs, base


def test_windows_that_wander_together_do_not_page_as_a_pool():
    for seed in (1, 2, 3):
        zs, base = _wandering_key(seed)
        assert sum(z > Z_ALERT for z in zs[200:]) == 0, seed
        lags = base.lag_cov()
        assert lags[0] > 0.02 and lags[0] >= lags[4], lags
        # Taken as independent windows, the same key pages on its own wander.
        plain, _ = _wandering_key(seed, covariances=False)
        assert sum(z > Z_ALERT for z in plain[200:]) >= 3, seed


def test_a_prompt_change_on_a_wandering_key_is_still_caught():
    for seed in (1, 2, 3):
        zs, _ = _wandering_key(seed, shift=(1000, 15))
        assert max(zs[1000:1016]) > Z_ALERT, seed


def test_the_long_run_variance_of_a_sum_of_windows_grows_with_their_carry_over():
    # 1 + 2 * the sum of the lag correlations: (1 + phi) / (1 - phi) for an AR(1), here cut at the
    # first lag not a standard error above 0 and at the pool's 15 lags, so it is an underestimate.
    factors = {phi: _wandering_key(1, phi=phi)[1].long_run() for phi in (0.0, 0.5, 0.85)}
    assert factors[0.0] < 1.1
    assert 1.5 < factors[0.5] < 3.0
    assert factors[0.85] > 4.0
    assert PooledLogMean().long_run() == 1.0  # nothing learned: the windows are taken as independent


def test_independent_windows_learn_no_covariance():
    for seed in (1, 2, 3):
        zs, base = _wandering_key(seed, phi=0.0)
        assert sum(base.lag_cov()) < 0.005, base.lag_cov()
        assert sum(z > Z_ALERT for z in zs[200:]) == 0


def test_a_snapshot_from_before_the_covariances_loads():
    _, base = _wandering_key(1, windows=100)
    state = dict(base.__dict__)
    for k in ("_devs", "_acov", "_acov_w", "_avar"):
        del state[k]
    old = PooledLogMean.__new__(PooledLogMean)
    old.__setstate__(state)
    assert old.lag_cov() is None
    old.push(log_moments([6.0, 6.1, 5.9]))
    old.judge()


def _chat_day(seed, n=1440, ramp_at=None, wander=0.3, phi=0.9):
    """A day of a chat key's windows (about 25 requests a minute from many users) whose prompts' mean wanders
    from window to window as its long conversations come and go (an AR(1) of ``phi`` and ``wander``
    standard deviation on the log of the input tokens); with ``ramp_at`` the output tokens ramp to x1.8
    over 90 windows from there and stay."""
    from detectors.windowed import WindowFeatures, log_stats

    rng = random.Random(seed)
    level = 0.0
    out = []
    for i in range(n):
        level = phi * level + rng.gauss(0.0, wander * math.sqrt(1.0 - phi * phi))
        grow = 1.0 if ramp_at is None else 1.0 + 0.8 * min(1.0, max(0, i - ramp_at) / 90.0)
        count = max(1, int(round(rng.gauss(25.0, 5.0))))
        ins = [1200.0 * math.exp(level + rng.gauss(0.0, 0.6)) for _ in range(count)]
        outs = [250.0 * grow * math.exp(rng.gauss(0.0, 0.6)) for _ in range(count)]
        costs = [a * 1e-6 + b * 4e-6 for a, b in zip(ins, outs)]
        lats = [(300.0 + 10.0 * b) * math.exp(rng.gauss(0.0, 0.2)) for b in outs]
        ttfts = [200.0 * math.exp(rng.gauss(0.0, 0.3)) for _ in range(count)]
        in_log, out_log, cost_log = log_stats(ins, 1.0), log_stats(outs, 1.0), log_stats(costs, 1e-6)
        lat_log, ttft_log = log_stats(lats, 1.0), log_stats(ttfts, 1.0)
        gm = lambda st, off: math.exp(st[1] / st[0]) - off  # noqa: E731
        q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]  # noqa: E731
        start = 1767571200.0 + 60.0 * i
        out.append(WindowFeatures(
            start, start + 60.0, count, 0, q(lats, 0.5), q(lats, 0.95), q(ttfts, 0.95),
            gm(in_log, 1.0), gm(out_log, 1.0), gm(cost_log, 1e-6), sum(costs), int(sum(ins) + sum(outs)),
            None, in_log, out_log, cost_log, gm(lat_log, 1.0), gm(ttft_log, 1.0), lat_log, ttft_log, None))
    return out


def _pages(windows, **plain):
    """Firing findings of KeyDetectors over ``windows``; ``plain`` replaces PooledLogMean methods for the
    run (``lag_cov=lambda self: None``: windows taken as independent)."""
    from detectors.windowed import KeyDetectors

    saved = {name: getattr(PooledLogMean, name) for name in plain}
    for name, fn in plain.items():
        setattr(PooledLogMean, name, fn)
    try:
        det = KeyDetectors()
        return [(i, fd.type, fd.metric) for i, f in enumerate(windows) for fd in det.update(f)
                if fd.status == "firing"]
    finally:
        for name, fn in saved.items():
            setattr(PooledLogMean, name, fn)


def test_a_chat_key_whose_prompts_wander_with_its_conversations_does_not_page_a_prompt_change():
    # Taken as independent windows, a pool of the wander's windows pages as a prompt change (type tokens)
    # on half of these days; with the covariances the windows share, on none.
    spikes, plain = 0, 0
    for seed in range(1, 7):
        day = _chat_day(seed)
        spikes += sum(p[1] == "tokens" for p in _pages(day))
        plain += any(p[1] == "tokens" for p in _pages(day, lag_cov=lambda self: None))
    assert spikes == 0
    assert plain >= 3


def _drift_pages(windows, **plain):
    return [p for p in _pages(windows, **plain) if p[1] == "drift"]


def test_a_chat_key_whose_prompts_wander_for_an_hour_at_a_time_does_not_page_a_drift():
    # The drift CUSUM adds windows up: where their wander carries over for an hour (phi 0.97 a
    # window), an excursion of the prompts adds up to a lasting change on most days when the windows
    # are taken as independent; in units of the sum's own noise (PooledLogMean.long_run), on none.
    days = [_chat_day(seed, phi=0.97) for seed in range(1, 5)]
    assert sum(bool(_drift_pages(day, long_run=lambda self: 1.0)) for day in days) >= 3
    assert [_drift_pages(day) for day in days] == [[]] * 4


def test_a_drift_of_the_output_tokens_on_such_a_key_is_still_caught():
    for seed in (1, 2, 3):
        pages = _pages(_chat_day(seed, ramp_at=600))
        assert [p for p in pages if p[1] == "drift" and p[2] == "output_tokens_mean" and 600 < p[0] < 800], (seed, pages)
