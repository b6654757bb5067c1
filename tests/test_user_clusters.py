"""Requests of one user that move together count as one observation (the per-request metrics' user component)."""

import random

from detectors.robust import PooledLogMean, log_moments, score_to_z

Z_ALERT = score_to_z(0.9)


def _agent_windows(rng, n_windows, tasks=8, long_task_at=None, shift_at=None):
    """Windows of an agent key: ``tasks`` tasks at a time, ten calls each a window; a task's calls share its
    level (its context), which differs from task to task. From ``long_task_at`` one task of about seven times
    the usual context runs for six windows; from ``shift_at`` every call's value rises 2.5 times for six
    windows."""
    n_tasks = tasks
    tasks = [[f"u{rng.randrange(10_000)}", rng.gauss(0.0, 0.5), rng.randint(1, 4)] for _ in range(n_tasks)]
    out = []
    for w in range(n_windows):
        tasks = [t if t[2] > 0 else [f"u{rng.randrange(10_000)}", rng.gauss(0.0, 0.5), rng.randint(1, 4)]
                 for t in tasks]
        if long_task_at is not None and w == long_task_at:
            tasks[0] = ["long", 2.0, 6]
        pairs = []
        for t in tasks:
            for _ in range(10):
                y = 8.0 + t[1] + rng.gauss(0.0, 0.5)
                if shift_at is not None and shift_at <= w < shift_at + 6:
                    y += 0.92
                pairs.append((t[0], y))
            t[2] -= 1
        out.append(pairs)
    return out


def _max_z(windows, grouped, covariances=True):
    base = PooledLogMean(alpha=0.05, min_scale=0.05, warmup=15)
    if not covariances:  # windows taken as independent (PooledLogMean.lag_cov)
        base.lag_cov = lambda: None
    zs = []
    for pairs in windows:
        ys = [y for _, y in pairs]
        counts = {}
        for u, _ in pairs:
            counts[u] = counts.get(u, 0) + 1
        base.push(log_moments(ys), clusters={u: c for u, c in counts.items() if c > 1} if grouped else None)
        zs.append(base.judge()[0])
    return zs, base


def test_the_users_share_of_the_wander_is_learned():
    # Two tasks a window, ten calls each, task levels spread 0.5: a window's mean moves by the tasks'
    # 0.25 * h (h = 1/2), not by the calls' 0.25 / 20. Told the users, the key puts that wander on them
    # (windows of mostly one or two users); not told, on the windows. Eight tasks a window (h = 1/8
    # in every window): the two cannot be told apart, and the wander stays the window's.
    _, base = _max_z(_agent_windows(random.Random(1), 300, tasks=2), grouped=True)
    vb, vw = base.components()
    assert 0.15 < vb < 0.4 and vw < 0.01, (vb, vw)
    _, plain = _max_z(_agent_windows(random.Random(1), 300, tasks=2), grouped=False)
    vb, vw = plain.components()
    assert vb == 0.0 and 0.07 < vw < 0.2, (vb, vw)
    _, eight = _max_z(_agent_windows(random.Random(1), 300), grouped=True)
    vb, vw = eight.components()
    assert vb == 0.0 and 0.015 < vw < 0.05, (vb, vw)


def test_one_long_task_is_one_observation_not_twenty():
    # Two tasks at a time: a long one with a big context is half the key's calls for six windows. Counted
    # call by call (and its windows as independent: a task that spans windows also makes them share their
    # deviations) it pages on most seeds; counted by user it does not.
    paged_plain = 0
    for seed in range(6):
        ws = _agent_windows(random.Random(seed), 306, tasks=2, long_task_at=300)
        zg, _ = _max_z(ws, grouped=True, covariances=False)
        zp, _ = _max_z(ws, grouped=False, covariances=False)
        assert max(abs(z) for z in _max_z(ws, grouped=True)[0][90:]) < Z_ALERT, seed
        assert max(abs(z) for z in zg[90:]) < Z_ALERT, seed  # after warm-up and cold windows (30 + 60)
        paged_plain += max(zp[300:]) >= Z_ALERT
    assert paged_plain >= 4


def test_a_change_every_request_shares_is_still_caught():
    for seed in range(6):
        zs, _ = _max_z(_agent_windows(random.Random(seed), 306, shift_at=300), grouped=True)
        assert max(abs(z) for z in zs[50:300]) < Z_ALERT, seed
        assert max(zs[300:]) >= Z_ALERT, seed


def _sparse_agent_windows(rng, n_windows, shift_at=None, shift=0.69):
    """A key of a few calls a minute: one agent task at a time (sometimes none, sometimes two), each
    running 2-6 windows at 6-14 calls a window with a context that grows through the task from a level
    that differs from task to task (log spread 0.5). From ``shift_at`` every call's value doubles for 15
    windows."""
    tasks, out = [], []
    for w in range(n_windows):
        tasks = [t for t in tasks if t[2] > 0]
        while len(tasks) < (1 if rng.random() < 0.8 else 2):
            tasks.append([f"u{rng.randrange(100_000)}", rng.gauss(0.0, 0.5), rng.randint(2, 6), 0])
        pairs = []
        if rng.random() < 0.1:
            out.append(pairs)
            continue
        for t in tasks:
            for i in range(rng.randint(6, 14)):
                y = 8.0 + t[1] + 0.15 * t[3] + rng.gauss(0.0, 0.4)
                if shift_at is not None and shift_at <= w < shift_at + 15:
                    y += shift
                pairs.append((t[0], y))
            t[2] -= 1
            t[3] += 1
        out.append(pairs)
    return out


def _sparse_z(windows):
    base = PooledLogMean(alpha=0.05, min_scale=0.05, warmup=15)
    zs = []
    for pairs in windows:
        if not pairs:
            zs.append(0.0)
            continue
        counts = {}
        for u, _ in pairs:
            counts[u] = counts.get(u, 0) + 1
        base.push(log_moments([y for _, y in pairs]), clusters={u: c for u, c in counts.items() if c > 1})
        zs.append(base.judge()[0])
    return zs, base


def test_a_key_whose_windows_are_one_task_each_learns_that_tasks_differ():
    # Windows that are mostly one task's calls: a window's mean is that task's level, so it wanders as
    # far as tasks differ, however many calls it has; a pool of one task's windows is one task. The
    # key learns this from the windows themselves (the user concentration of a window against its
    # squared deviation), and pages neither on a big task nor in the quiet hours.
    for seed in range(6):
        zs, base = _sparse_z(_sparse_agent_windows(random.Random(seed), 600))
        vb, vw = base.components()
        assert vb > 0.15, (seed, vb)  # most of the wander is the tasks' (level spread 0.5 ** 2 = 0.25)
        # From the end of a key's warm-up and cold windows (30 + 60: KeyDetectors damps z before).
        assert max(zs[90:]) < Z_ALERT, seed


def test_on_such_a_key_a_change_beyond_the_tasks_spread_is_still_caught():
    # Fifteen windows are about five tasks here: a doubling is within their spread (z about 3), a
    # quadrupling is not. (A lasting doubling is the drift detector's.)
    caught = sum(max(zs[600:]) >= Z_ALERT for zs, _ in (
        _sparse_z(_sparse_agent_windows(random.Random(seed), 615, shift_at=600, shift=1.39)) for seed in range(8)))
    assert caught >= 5
