"""Requests of one user that move together count as one observation (the per-request metrics' design effect)."""

import random

from detectors.robust import PooledLogMean, log_moments, score_to_z, user_anova

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


def _max_z(windows, grouped):
    base = PooledLogMean(alpha=0.05, min_scale=0.05, warmup=15)
    zs = []
    for pairs in windows:
        ys = [y for _, y in pairs]
        counts = {}
        for u, _ in pairs:
            counts[u] = counts.get(u, 0) + 1
        base.push(log_moments(ys), anova=user_anova(pairs) if grouped else None,
                  clusters={u: c for u, c in counts.items() if c > 1} if grouped else None)
        zs.append(base.judge()[0])
    return zs, base


def test_the_correlation_of_one_users_requests_is_learned():
    zs, base = _max_z(_agent_windows(random.Random(1), 300), grouped=True)
    assert 0.3 < base.intra_user_correlation() < 0.7  # level spread 0.5 against request noise 0.5: 0.5


def test_one_long_task_is_one_observation_not_twenty():
    # Two tasks at a time: a long one with a big context is half the key's calls for six windows. Counted
    # call by call it pages (and the quiet hours before it page too); counted by user it does not.
    paged_plain = 0
    for seed in range(6):
        ws = _agent_windows(random.Random(seed), 306, tasks=2, long_task_at=300)
        zg, _ = _max_z(ws, grouped=True)
        zp, _ = _max_z(ws, grouped=False)
        assert max(abs(z) for z in zg[50:]) < Z_ALERT, seed
        paged_plain += max(zp[300:]) >= Z_ALERT
    assert paged_plain >= 5


def test_a_change_every_request_shares_is_still_caught():
    for seed in range(6):
        zs, _ = _max_z(_agent_windows(random.Random(seed), 306, shift_at=300), grouped=True)
        assert max(abs(z) for z in zs[50:300]) < Z_ALERT, seed
        assert max(zs[300:]) >= Z_ALERT, seed
