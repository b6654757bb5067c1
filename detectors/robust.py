"""Robust exponentially weighted baseline for one series.

River protocol: ``score_one(x)`` then ``learn_one(x)``. The location is an
exponentially weighted mean, the scale an exponentially weighted mean absolute
deviation; both learn from a winsorised value, and points that score as
anomalous are learned with a tenth of the weight, so an incident does not
become the new normal within a few windows while a lasting level shift still
does (after it has been scored as anomalous for a while).
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple


def z_to_score(z: float, z0: float = 3.5, k: float = 1.5) -> float:
    """Map a robust z (>= 0) to [0, 1]; 0.5 at ``z0``, 0.9 at about ``z0 + 1.5``."""
    if z <= 0.0:
        return 0.0
    e = -(z - z0) * k
    if e > 700.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(e))


def score_to_z(score: float, z0: float = 3.5, k: float = 1.5) -> float:
    """The z that :func:`z_to_score` maps to ``score`` (0 < score < 1)."""
    return z0 + math.log(score / (1.0 - score)) / k


class RobustBaseline:
    """Robust running location and scale of a (possibly log-transformed) value.

    Parameters
    ----------
    alpha
        Weight of a new normal point (about ``2 / alpha`` points of memory).
    log
        Work on ``log(x + offset)``: right for heavy-tailed latency, tokens and cost.
    offset
        Added before the log; small against typical values (1 for milliseconds
        and tokens, 1e-6 for dollars per request).
    min_scale
        Floor of the scale, in transformed units: a perfectly flat series does
        not turn a tiny wiggle into an incident.
    clip
        Robust z beyond which a point is winsorised before it is learned.
    protect_z
        Robust z beyond which a point counts as anomalous and is learned with
        ``alpha / 10``.
    dev_guard
        Robust z beyond which a point moves the scale at ``alpha / 4``.
    warmup
        Points learned before ``score_one`` returns anything but 0.

    Examples
    --------
    >>> b = RobustBaseline(log=True)
    >>> for v in [100, 110, 95, 105, 98, 102, 101, 99, 104, 97] * 3:
    ...     b.learn_one(v)
    >>> b.z(100) < 1.0, b.z(400) > 5.0
    (True, True)
    """

    dev_guard = 2.0  # for snapshots from before it was a parameter

    def __init__(
        self,
        alpha: float = 0.05,
        log: bool = True,
        min_scale: float = 0.02,
        clip: float = 3.0,
        protect_z: float = 4.0,
        warmup: int = 10,
        offset: float = 1.0,
        dev_guard: float = 2.0,
    ) -> None:
        self.alpha = alpha
        self.log = log
        self.min_scale = min_scale
        self.clip = clip
        self.protect_z = protect_z
        self.dev_guard = dev_guard
        self.warmup = warmup
        self.offset = offset
        self._n = 0
        self._loc = 0.0
        self._dev = 0.0
        self._prior_scale: Optional[float] = None

    def _t(self, x: float) -> float:
        return math.log(x + self.offset) if self.log else x

    @property
    def n(self) -> int:
        return self._n

    @property
    def scale(self) -> float:
        return max(self._dev * 1.2533, self.min_scale)

    def expected(self) -> Optional[float]:
        if self._n == 0:
            return None
        return math.exp(self._loc) - self.offset if self.log else self._loc

    def z(self, x: float) -> float:
        """Signed robust z of ``x`` against the baseline (0 during warm-up, unless a
        scale was borrowed: then from the fifth point, against the larger of the two scales)."""
        if self._n < self.warmup:
            if self._prior_scale is None or self._n < 5:
                return 0.0
            return (self._t(x) - self._loc) / max(self.scale, self._prior_scale)
        return (self._t(x) - self._loc) / self.scale

    def current(self) -> Optional[float]:
        """The level as of the latest point learned (what a slow drift is measured against)."""
        return self.expected()

    def borrow_scale(self, scale: Optional[float]) -> None:
        """Use ``scale`` (a parent's typical one) until this baseline's warm-up is over."""
        self._prior_scale = scale

    def score_one(self, x: float) -> float:
        return z_to_score(abs(self.z(x)))

    def learn_one(self, x: float, damp: bool = False) -> None:
        """Learn ``x``; with ``damp``, at a tenth of the weight (it was judged anomalous)."""
        t = self._t(x)
        n = self._n
        if n == 0:
            self._loc = t
            self._dev = 0.0
            self._n = 1
            return
        if n < self.warmup:
            # Plain running estimates until the baseline has seen enough.
            a = 1.0 / (n + 1)
            d = t - self._loc
            self._loc += a * d
            self._dev += a * (abs(d) - self._dev)
            self._n = n + 1
            return
        s = self.scale
        d = t - self._loc
        z = d / s
        a = self.alpha if abs(z) < self.protect_z and not damp else self.alpha * 0.1
        if z > self.clip:
            d = self.clip * s
        elif z < -self.clip:
            d = -self.clip * s
        self._loc += a * d
        # A window far off (|z| > dev_guard) moves the scale at a quarter of the rate: a
        # shift held just under the alert level would otherwise widen the scale by about
        # 14% a window (each one learned at the clip) and hide itself within minutes.
        b = a if -self.dev_guard <= z <= self.dev_guard else 0.25 * a
        self._dev += b * (abs(d) - self._dev)
        self._n = n + 1

    def relearn(self, x: float) -> None:
        """Accept ``x`` as the new level (after a lasting shift was alerted)."""
        self._loc = self._t(x)


class PooledLogMean(RobustBaseline):
    """A per-request quantity (tokens, cost) judged on the mean of its logs, pooled over windows.

    A window brings ``(n, sum, sumsq)``: how many requests had the value, the sum of
    ``log(x + offset)`` over them and the sum of squared deviations from their mean, and
    its users with more than one request (``{user: requests}``). A window's mean of the
    logs (a geometric mean) moves from the key's level by three things, each with its own
    variance:

    * its requests' own spread: ``var / n``, with ``var`` learned from the windows' spreads;
    * its users': one user's requests share a level (an agent's task has a context that
      grows over minutes, a document pipeline a document): ``user * h``, where
      ``h = sum n_u ** 2 / n ** 2`` is how concentrated the window is on few users (1 for
      one user's requests, ``1 / n`` for ``n`` users of one request each);
    * its time's: the key's level wanders from window to window: ``window``.

    ``user`` and ``window`` are learned by regressing the windows' excess squared
    deviation on ``h`` (:meth:`components`), so a key whose windows are each one agent
    task learns that a window's mean says as little as one task, however many calls it has.

    A window of many requests is judged alone; with too few for a doubling to stand six
    standard errors out (``precision``), it is judged together with the windows before it,
    up to ``pool`` of them: every pool from the newest window back to that length is
    tested, each without its most deviating window (one odd window does not make the pools
    after it anomalous), and the most deviating pool speaks. A pool's variance counts its
    requests' spread, its users' concentration over the whole pool (one task spread over
    five windows is still one task), its windows' wander and the uncertainty of the level.

    A rise or fall must also hold without the ring's busiest user (the user with the most
    requests where it was a window's busiest, ``push(top=...)``): each pool is judged on the
    rest of its requests as well, and the smaller deviation speaks. Users' levels are heavy
    tailed: a voice or chat key of a few requests a minute, whose window is often one user's
    turns, learns a small user component from its ordinary windows, and then one long
    conversation (its whole history sent with every turn, prompts at x5) stands six standard
    errors out. A key whose ring is usually at least ``SOLO_KEY`` one user's (a service
    account's pipeline) is that user's, and is judged as it is.

    The level (location and window-level scale of :class:`RobustBaseline`) learns each
    window when it leaves the pool, ``pool`` windows late, so a pool is compared with the
    windows before it, not with a level that is learning it as it goes; windows of a pool
    that was anomalous are learned at a tenth of the weight (and not into the variance
    components). Until the level is warm, windows are learned as they come.

    Features without log statistics (a hand-made window) are judged and learned as by
    :class:`RobustBaseline`.
    """

    def __init__(self, pool: int = 15, precision: float = math.log(2.0) / 8.0, **kw) -> None:
        super().__init__(log=True, **kw)
        self.pool = pool
        self.precision = precision
        # (n, sum of logs, sum of squared deviations, flag, n, users) of the last windows with
        # values, oldest first; flag: 0 to learn, 1 anomalous (a tenth of the weight), 2 not to
        # learn, 3 learned; users: the window's {user: requests} of users with more than one, or
        # None. (The second n is where states before the variance components kept a design effect.)
        self._ring: list = []
        self._var: Optional[float] = None  # per-request variance of the logs (EW, within windows)
        self._inv_n: Optional[float] = None  # EW mean of 1 / n over the windows learned
        # Decayed sums over the windows learned, for the variance components (components):
        # weight, h, h ** 2, excess, h * excess; h is a window's user concentration, the excess its
        # squared deviation from the level beyond what its requests' spread gives.
        self._vc = [0.0, 0.0, 0.0, 0.0, 0.0]
        self.window_se = 0.0  # the standard error of the newest window's own mean (judge)
        # The newest window's own mean and its standard error without the busiest user, where a
        # pool is judged without it (judge; a mean of None: the window was that user's alone);
        # None otherwise. What the drift detector follows.
        self.window_own: Optional[Tuple[Optional[float], float]] = None
        # The ring's busiest user and the share of the ring such a user usually sends (EW over
        # windows): near 1 on a key that is one service account's.
        self._busiest: Optional[str] = None
        self._solo = 0.0
        self._solo_n = 0  # windows in _solo (a plain mean until 1 / VC_DECAY of them)
        # The ring's busiest users' requests ({user: requests where it was a window's busiest})
        # and the ring's requests, kept as windows come and go (None: to be made again).
        self._tops: Optional[Dict[str, int]] = {}
        self._ring_n = 0
        # The windows' deviations from the level carry over from one to the next (a chat key's
        # long conversations last several windows): the deviations of the last ``pool`` windows
        # learned (None for one not learned), and the decayed sums of their products at lags
        # 1 .. pool, with their weights, for the covariances a pool's windows share (lag_cov).
        self._devs: list = []
        self._acov = [0.0] * pool
        self._acov_w = [0.0] * pool
        # The decayed sums of the deviations squared, of the weights and of the weights squared
        # (the effective number of windows behind the estimates, lag_cov).
        self._avar = [0.0, 0.0, 0.0]

    def components(self) -> Optional[Tuple[float, float]]:
        """``(user, window)``: the variance a window's mean has from its users' levels and from
        the window itself (the key's level moving), learned by regressing the windows' excess
        squared deviation on their user concentration ``h``; None until ``VC_MIN`` windows are in.

        Where the windows' concentrations hardly differ the two cannot be told apart: the
        excess is the users' on a key whose windows are mostly one user's (a pool of that
        user's windows then counts as one), the window's otherwise.

        >>> import random
        >>> b, rng = PooledLogMean(warmup=5), random.Random(3)
        >>> for w in range(400):  # one user's task a window half the time, ten users otherwise
        ...     users = 1 if w % 2 else 10
        ...     levels = [rng.gauss(0, 0.5) for _ in range(users)]
        ...     ys = [mu + rng.gauss(0, 0.3) for mu in levels for _ in range(10 // users)]
        ...     b.push(log_moments(ys), clusters={"u": 10} if users == 1 else None)
        >>> vb, vw = b.components()
        >>> 0.15 < vb < 0.4, vw < 0.05
        (True, True)
        """
        w, sh, shh, se, she = self._vc
        if w < VC_MIN:
            return None
        floor = self.min_scale ** 2
        mh = sh / w
        me = se / w
        vh = shh / w - mh * mh
        if vh > VC_MIN_SPREAD:
            vb = max(0.0, (she / w - mh * me) / vh)
            return vb, max(floor, me - vb * mh)
        if mh >= 0.5:
            return max(0.0, me) / mh, floor
        return 0.0, max(floor, me)

    def lag_cov(self) -> Optional[list]:
        """The covariance of two windows' means at lags 1 .. ``pool`` (windows with values apart),
        learned from the windows' deviations from the level; None until ``VC_MIN`` windows are
        in. Independent windows give about 0: their requests' spread and their users are in the
        variance of each window, not in the covariance of two. They count as an initial
        monotone sequence (after Geyer): none above the lag before it, and from the first that
        is not a standard error above 0 (the deviations' variance over the root of the windows
        behind it) all are 0. So the estimates' noise adds little, on a young key least of all.

        >>> import random
        >>> b, rng = PooledLogMean(warmup=5), random.Random(3)
        >>> level = 0.0
        >>> for w in range(600):  # the key's mean wanders slowly (AR(1), 0.8 a window)
        ...     level = 0.8 * level + rng.gauss(0, 0.1)
        ...     b.push(log_moments([5 + level + rng.gauss(0, 0.3) for _ in range(20)]))
        >>> c = b.lag_cov()
        >>> c[0] > c[2] > c[9] >= 0, 0.01 < c[0] < 0.04
        (True, True)
        """
        sq, w, w2 = self._avar
        if w < VC_MIN:
            return None
        floor = sq / w * math.sqrt(w2) / w  # one standard error of an estimate (no covariance at all)
        out = [0.0] * len(self._acov)
        last = math.inf
        for i, (c, cw) in enumerate(zip(self._acov, self._acov_w)):
            last = min(last, c / cw if cw > 0.0 else 0.0)
            if last <= floor:
                break
            out[i] = last
        return out

    def long_run(self) -> float:
        """How much more a sum of consecutive windows' deviations varies than if the windows were
        independent: ``1 + 2 * sum of the lag correlations`` (:meth:`lag_cov` over the deviations'
        variance); 1 until they are known, or where the windows are independent."""
        lc = self.lag_cov()
        sq, w, _ = self._avar
        if not lc or w <= 0.0 or sq <= 0.0:
            return 1.0
        return 1.0 + 2.0 * sum(lc) / (sq / w)

    def _learn_lags(self, d: Optional[float], n: int = 0, clusters: Optional[Dict[str, int]] = None) -> None:
        """Count a window's deviation ``d`` (None: a window not learned) into the lag covariances.

        A user busy in both windows (``clusters``: a window's users with more than one request)
        makes them share a deviation that the user component already counts in a pool (judge):
        its expected share, the user variance times the two windows' shares of that user, is
        taken off the product."""
        devs = self._devs
        # (Not while the key's first windows settle its level and components: components() is None.)
        if d is not None and self._vc[0] >= VC_MIN:
            keep = 1.0 - VC_DECAY
            acov, acw = self._acov, self._acov_w
            vb = self.components()[0] if clusters else 0.0
            av = self._avar
            av[0] = av[0] * keep + d * d
            av[1] = av[1] * keep + 1.0
            av[2] = av[2] * keep * keep + 1.0
            for i, p in enumerate(reversed(devs)):
                if p is None:
                    continue
                prod = d * p[0]
                if vb > 0.0 and p[2]:
                    other = p[2]
                    shared = sum(c * other[u] for u, c in clusters.items() if u in other)
                    if shared:
                        prod -= vb * shared / (n * p[1])
                acov[i] = acov[i] * keep + prod
                acw[i] = acw[i] * keep + 1.0
            devs.append((d, n, clusters))
        else:
            devs.append(None)
        if len(devs) > len(self._acov):
            del devs[0]

    def _learn_components(self, n: int, s: float, clusters: Optional[Dict[str, int]]) -> None:
        var = self._var
        if var is None or self._n < 2:
            self._learn_lags(None)
            return
        d = s / n - self._loc
        cap = math.sqrt(VC_CAP) * self.scale
        self._learn_lags(-cap if d < -cap else cap if d > cap else d, n, clusters)
        e = min(d * d, VC_CAP * self.scale ** 2) - var / n
        if clusters:
            # (Clusters count a window's successful requests; a metric some of them lack, such as
            # ttft, has fewer: h stays within [1 / n, 1].)
            c = sum(clusters.values())
            h = min(1.0, (sum(v * v for v in clusters.values()) + max(0, n - c)) / (n * n))
        else:
            h = 1.0 / n
        vc = self._vc
        keep = 1.0 - VC_DECAY
        vc[0] = vc[0] * keep + 1.0
        vc[1] = vc[1] * keep + h
        vc[2] = vc[2] * keep + h * h
        vc[3] = vc[3] * keep + e
        vc[4] = vc[4] * keep + h * e

    def judge(self) -> Tuple[float, float, int, float]:
        """``(z, mean of logs, windows pooled, standard error)`` of the most deviating pool
        ending with the window pushed last; z is 0 while the baseline is warming up."""
        ring = self._ring
        n0, s0 = ring[-1][0], ring[-1][1]
        mean0 = s0 / n0
        self.window_se = self.scale
        self.window_own = None
        if self._n < self.warmup or self._var is None:
            return 0.0, mean0, 1, self.scale
        loc, var = self._loc, self._var
        scale2 = self.scale ** 2
        comp = self.components()
        if comp is None:  # the key's first windows: the wander beyond the requests' spread is the window's
            vb, tau2 = 0.0, max(self.min_scale ** 2, scale2 - var * (self._inv_n or 0.0))
        else:
            vb, tau2 = comp
        v_loc = self.alpha / (2.0 - self.alpha) * scale2
        target = self.precision ** 2
        best = (0.0, mean0, 1, self.scale)
        n = s = q = 0.0
        # Each user's requests over the pool's windows (sum n_u ** 2 over users with more than one).
        users: Dict[str, int] = {}
        m2 = clustered = 0
        # The two largest and two smallest window means (as deviations from the level), with counts.
        hi = [(-math.inf, 0), (-math.inf, 0)]
        lo = [(math.inf, 0), (math.inf, 0)]
        # On a key whose recent requests are usually several users', a pool's mean must move
        # without the busiest of them too: one user's long conversation is not the key's prompts.
        excl = self._busiest if self._solo < SOLO_KEY else None
        s_u = dq = 0.0
        n_u = 0
        # What the pool's windows share (sum over pairs of n_i n_j times their lag's covariance;
        # the covariances are looked up once a pool has two windows).
        lags = None
        cross = 0.0
        counts: list = []
        for k in range(1, len(ring) + 1):
            wn, ws, _, _, _, cl, t = ring[-k]
            if k == 2:
                lags = self.lag_cov()
            if lags is not None:
                for j, nj in enumerate(counts):
                    cross += 2.0 * wn * nj * lags[k - 2 - j]
            counts.append(wn)
            n += wn
            if cl and vb > 0.0:
                for u, c in cl.items():
                    old = users.get(u, 0)
                    users[u] = old + c
                    m2 += (2 * old + c) * c
                    clustered += c
            v_req = var / n + vb * min(1.0, (m2 + max(0.0, n - clustered)) / (n * n))
            s += ws
            q += wn * wn
            d = ws / wn - loc
            if d > hi[1][0]:
                hi = [(d, wn), hi[0]] if d > hi[0][0] else [hi[0], (d, wn)]
            if d < lo[1][0]:
                lo = [(d, wn), lo[0]] if d < lo[0][0] else [lo[0], (d, wn)]
            se = math.sqrt(v_req + (tau2 * q + cross) / (n * n) + v_loc)
            if k == 1:
                self.window_se = se
                cands = ((s / n, 0),)
            else:
                # The most deviating window on either side counts as far as the next one only:
                # one odd window (a single user's burst) does not make the pools after it
                # anomalous, while a change that all the windows share loses next to nothing.
                cands = (((s - (hi[0][0] - hi[1][0]) * hi[0][1]) / n, 1),
                         ((s - (lo[0][0] - lo[1][0]) * lo[0][1]) / n, -1))
            if t is not None and t[0] == excl:
                # The busiest user's requests in the pool so far: its count, sum of logs, and what
                # leaving them out takes from the sum of squared window counts.
                n_u += t[1]
                s_u += t[2]
                dq += (2 * wn - t[1]) * t[1]
            rest = None  # (requests, standard error) of the pool without the busiest user
            if n_u:
                n_r = n - n_u
                if n_r > 0:
                    cu = users.get(excl, 0)  # (its requests as counted in m2 over the pool)
                    v_req_r = var / n_r + vb * min(1.0, (m2 - cu * cu + max(0.0, n_r - clustered + cu)) / (n_r * n_r))
                    rest = (n_r, v_req_r, math.sqrt(v_req_r + tau2 * (q - dq) / (n_r * n_r) + cross / (n * n) + v_loc))
                if k == 1 and 2 * n_u > n:
                    # The drift detector follows the window without that user where it was most of it.
                    self.window_own = (math.exp((s - s_u) / n_r) - self.offset, rest[2]) if rest else (None, se)
            for m, side in cands:
                z = (m - loc) / se
                if z * side >= 0 and abs(z) > abs(best[0]):
                    if n_u:
                        # Held to what the pool without the busiest user confirms (0 without any).
                        z_r = ((s - s_u) / rest[0] - loc) / rest[2] if rest else 0.0
                        z = min(z, max(z_r, 0.0)) if z >= 0.0 else max(z, min(z_r, 0.0))
                        if abs(z) <= abs(best[0]):
                            continue
                    best = (z, m, k, se)
            if v_req <= target and (not n_u or (rest is not None and rest[1] <= target)):
                break  # precise enough: pooling further would only add the level's wander
        return best

    def _find_busiest(self) -> None:
        """The ring's busiest user (counted where it was a window's busiest) and its share of the
        ring's requests; the share is learned into ``_solo`` (a share of 0 without such a user)."""
        tops = self._tops
        share = 0.0
        self._busiest = None
        if tops:
            user = max(tops, key=tops.get)
            self._busiest = user
            share = tops[user] / self._ring_n
        self._solo_n += 1
        self._solo += max(VC_DECAY, 1.0 / self._solo_n) * (share - self._solo)

    def _tally(self, w: list, sign: int) -> None:
        """Count ring entry ``w`` into (``sign`` 1) or out of (-1) the ring's busiest-user tally."""
        t = w[6]
        if t is not None:
            tops = self._tops
            c = tops.get(t[0], 0) + sign * t[1]
            if c > 0:
                tops[t[0]] = c
            else:
                tops.pop(t[0], None)
        self._ring_n += sign * w[0]

    def current(self) -> Optional[float]:
        """The level with the windows still in the pool learned as normal ones: the key's level
        now, for the drift detector (the level judged against lags ``pool`` windows)."""
        if self._n == 0:
            return None
        loc = self._loc
        for w in self._ring:
            wn, ws, flag = w[0], w[1], w[3]
            if flag < 2:
                loc += self.alpha * (ws / wn - loc)
        return math.exp(loc) - self.offset

    def push(self, stats, flag: int = 0, clusters: Optional[Dict[str, int]] = None,
             top: Optional[Tuple[str, int, float]] = None) -> None:
        """Add a window's ``(n, sum, sumsq)``, its users with more than one request
        (``{user: requests}``) and its busiest user's ``(user, requests, sum of logs)``; the window
        that leaves the pool is learned."""
        n, s, ss = stats
        warm = self._n >= self.warmup and self._var is not None
        entry = [n, s, ss, flag if warm else 3, n, clusters, top]
        self._ring.append(entry)
        # (A metric whose windows never named a user has nothing to find: no tally.)
        tally = top is not None or self._solo_n
        if tally:
            if self._tops is None or not self._solo_n:
                # Made from the ring: the first time, and after it changed in bulk (spend, a snapshot).
                self._tops, self._ring_n = {}, 0
                for w in self._ring:
                    self._tally(w, 1)
            else:
                self._tally(entry, 1)
        if not warm:
            self._learn_components(n, s, clusters)
            self._learn_window(n, s, ss, 0)
        while len(self._ring) > self.pool:
            old = self._ring.pop(0)
            if tally:
                self._tally(old, -1)
            wn, ws, wss, wflag, wcl = old[0], old[1], old[2], old[3], old[5]
            if wflag != 3:
                if wflag == 0:
                    self._learn_components(wn, ws, wcl)
                else:
                    self._learn_lags(None)
                self._learn_window(wn, ws, wss, wflag)
        if tally:
            self._find_busiest()

    def mark(self, windows: int, flag: int) -> None:
        """Flag the newest ``windows`` windows (1: anomalous, 2: not to learn) unless learned."""
        for w in self._ring[-windows:]:
            if w[3] != 3 and flag > w[3]:
                w[3] = flag

    def spend(self) -> None:
        """The episode the anomalous windows of the pool belonged to is over: they are learned
        now (slowly, as anomalous) and leave the pool, so the pools after it judge what came
        since. (On a sparse key a pool reaches back over the empty windows to the incident,
        and it would page again on the incident's requests after the incident had resolved.)"""
        if not any(w[3] == 1 for w in self._ring):
            return
        keep = []
        for w in self._ring:
            if w[3] == 1:
                self._learn_lags(None)
                self._learn_window(w[0], w[1], w[2], 1)
            else:
                keep.append(w)
        self._ring = keep
        self._tops = None

    def _learn_window(self, n: int, s: float, ss: float, flag: int) -> None:
        if flag == 2:
            return
        if n >= 2:
            v = ss / (n - 1)
            # The spread is learned by degrees of freedom, so a window of two requests weighs little.
            a = self.alpha * min(1.0, (n - 1) / 10.0) if self._var is not None else 1.0
            self._var = v if self._var is None else self._var + a * (v - self._var)
        inv = 1.0 / n
        self._inv_n = inv if self._inv_n is None else self._inv_n + self.alpha * (inv - self._inv_n)
        self.learn_one(math.exp(s / n) - self.offset, damp=flag == 1)

    def __setstate__(self, s) -> None:
        self._busiest = None  # states from before the busiest user was told apart
        self._solo = 0.0
        self._solo_n = 0
        self._tops = None
        self._ring_n = 0
        self._vc = [0.0, 0.0, 0.0, 0.0, 0.0]  # states from before the variance components were learned
        self.window_se = 0.0
        self.window_own = None
        s.pop("_anova", None)  # and from when a by-user ANOVA stood in for them
        pool = s.get("pool", 15)
        self._devs = []  # and before the lag covariances were learned
        self._acov = [0.0] * pool
        self._acov_w = [0.0] * pool
        self._avar = [0.0, 0.0, 0.0]
        self.__dict__.update(s)
        for w in self._ring:
            if len(w) == 4:
                w += [w[0], None]
            if len(w) == 6:
                w.append(None)  # and before a window's busiest user was kept


# How fast the variance components forget (per window), the windows they need, the spread of
# the windows' user concentrations that tells the two apart, and the cap of a window's squared
# deviation (in squared scales) so one incident does not widen them for hours.
VC_DECAY = 0.01
VC_MIN = 30.0
VC_MIN_SPREAD = 0.01
VC_CAP = 25.0
# A key whose ring (PooledLogMean.pool windows) is usually at least this share one user's is
# that user's: its means are judged as they are, without setting the busiest user aside.
SOLO_KEY = 0.5


def log_moments(ys) -> Tuple[int, float, float]:
    """``(n, sum, sum of squared deviations from the mean)`` of already-logged values."""
    n = len(ys)
    s = sum(ys)
    m = s / n
    return n, s, sum((y - m) * (y - m) for y in ys)


def poisson_sf(k: int, mu: float) -> float:
    """P(X >= k) for X ~ Poisson(mu).

    >>> round(poisson_sf(2, 1.0), 4), poisson_sf(0, 3.0), round(poisson_sf(10, 1.0), 8)
    (0.2642, 1.0, 1.1e-07)
    """
    if k <= 0:
        return 1.0
    if mu <= 0.0:
        return 0.0
    if k <= mu:  # the upper tail from below the mean: 1 - P(X <= k - 1), summed directly
        term = math.exp(-mu)
        cdf = term
        for j in range(1, k):
            term *= mu / j
            cdf += term
        return max(0.0, 1.0 - cdf)
    # Above the mean the terms fall geometrically from the first.
    term = math.exp(-mu + k * math.log(mu) - math.lgamma(k + 1))
    total = term
    j = k
    while term > 1e-16 * total:
        j += 1
        term *= mu / j
        total += term
    return min(1.0, total)
