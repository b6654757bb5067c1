"""The default per-metric streaming detector (SPEC section 4)."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections import deque

_LN10 = math.log(10.0)


class _RankWindow:
    """The last ``size`` values, kept sorted too: empirical tail probabilities."""

    __slots__ = ("size", "fifo", "sorted")

    def __init__(self, size: int) -> None:
        self.size = size
        self.fifo: deque = deque()
        self.sorted: list = []

    def __len__(self) -> int:
        return len(self.fifo)

    def add(self, v: float) -> None:
        self.fifo.append(v)
        insort(self.sorted, v)
        if len(self.fifo) > self.size:
            del self.sorted[bisect_left(self.sorted, self.fifo.popleft())]

    def quantile(self, q: float) -> float:
        s = self.sorted
        return s[min(len(s) - 1, int(q * len(s)))]

    def surprise_upper(self, v: float, floor: float) -> float:
        """-log10 P(X >= v) from the window, with an exponential tail past its max."""
        s = self.sorted
        n = len(s)
        k = n - bisect_left(s, v)
        if k > 0:
            return math.log10((n + 1) / (k + 1))
        scale = (s[int(0.99 * (n - 1))] - s[int(0.9 * (n - 1))]) / _LN10
        scale = max(scale, floor)
        return math.log10(n + 1) + (v - s[-1]) / scale / _LN10

    def surprise_two_sided(self, v: float, floor: float) -> float:
        s = self.sorted
        n = len(s)
        lo = bisect_right(s, v)
        hi = n - bisect_left(s, v)
        if lo > 0 and hi > 0:
            return max(0.0, math.log10((n + 1) / (2 * min(lo, hi) + 1)))
        if hi == 0:
            scale = (s[int(0.99 * (n - 1))] - s[int(0.9 * (n - 1))]) / _LN10
            dist = v - s[-1]
        else:
            scale = (s[int(0.1 * (n - 1))] - s[int(0.01 * (n - 1))]) / _LN10
            dist = s[0] - v
        scale = max(scale, floor)
        return math.log10((n + 1) / 2) + dist / scale / _LN10


class UnivariateDetector:
    """Score a point of an irregular series, then learn it.

    Examples
    --------
    >>> d = UnivariateDetector()
    >>> scores = [d.update(float(t), 10.0 + (t % 3)) for t in range(2000)]
    >>> max(scores[500:]) < 0.5
    True
    >>> d.update(2000.0, 60.0) > 0.9
    True
    """

    def __init__(
        self,
        window: int = 2000,
        warmup: int = 50,
        period: float = 86400.0,
        bins: int = 48,
        season_alpha: float = 0.1,
        smax: float = 8.0,
        w_spatial: float = 1.0,
        w_diff: float = 1.0,
        w_season: float = 1.0,
        short: int = 10,
        lwindow: int = 2000,
        w_like: float = 1.0,
        refractory: float = 0.0,
        damp: float = 0.0,
        w_ctx: float = 0.0,
        scales: tuple = (),
        w_scale: float = 1.0,
        nsym: int = 8,
        order: int = 2,
        ctx_cap: float = 200.0,
        ctx_prior: float = 0.5,
    ) -> None:
        self.w_ctx = w_ctx
        self.scales = tuple(scales)
        self.w_scale = w_scale
        self._ew = [None] * len(self.scales)
        self._ewwin = [_RankWindow(window) for _ in self.scales]
        self.nsym = nsym
        self.order = order
        self.ctx_cap = ctx_cap
        self.ctx_prior = ctx_prior
        self._ctx_counts = {}
        self._syms = deque()
        self.short = short
        self.w_like = w_like
        self.refractory = refractory
        self.damp = damp
        self._recent = deque()
        self._recent_sum = 0.0
        self._means = _RankWindow(lwindow)
        self._alarm = 0.0
        self._hist = deque()
        self.window = window
        self.warmup = warmup
        self.period = period
        self.bins = bins
        self.season_alpha = season_alpha
        self.smax = smax
        self.w_spatial = w_spatial
        self.w_diff = w_diff
        self.w_season = w_season
        self._n = 0
        self._vals = _RankWindow(window)
        self._diffs = _RankWindow(window)
        self._sres = _RankWindow(window)
        self._season = [None] * bins
        self._last = None

    # ------------------------------------------------------------------ #
    def _season_pred(self, ts: float):
        pos = (ts % self.period) / self.period * self.bins - 0.5
        i = math.floor(pos)
        f = pos - i
        a = self._season[i % self.bins]
        b = self._season[(i + 1) % self.bins]
        if a is None or b is None:
            return None, i, f
        return a + f * (b - a), i, f

    def update(self, timestamp: float, value: float) -> float:
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            return 0.0
        ts = float(timestamp) if math.isfinite(timestamp) else 0.0
        x = float(value)
        vals = self._vals
        floor = 1e-9 * (1.0 + abs(x))
        pred, i, f = self._season_pred(ts)
        d = abs(x - self._last) if self._last is not None else None
        r = abs(x - pred) if pred is not None else None
        score = 0.0
        if self._n >= self.warmup:
            s_sp = vals.surprise_two_sided(x, floor)
            s_df = self._diffs.surprise_upper(d, floor) if d is not None and len(self._diffs) >= self.warmup else 0.0
            s_se = self._sres.surprise_upper(r, floor) if r is not None and len(self._sres) >= self.warmup else 0.0
            s_cx = 0.0
            if self.w_ctx > 0:
                n = len(vals.sorted)
                sym = min(self.nsym - 1, (bisect_left(vals.sorted, x) + bisect_right(vals.sorted, x)) * self.nsym // (2 * n + 1))
                if len(self._syms) == self.order:
                    key = tuple(self._syms)
                    cnt = self._ctx_counts.get(key)
                    if cnt is None:
                        cnt = self._ctx_counts[key] = [0.0] * (self.nsym + 1)
                    tot = cnt[-1]
                    p = (cnt[sym] + self.ctx_prior / self.nsym) / (tot + self.ctx_prior)
                    s_cx = -math.log10(p) - math.log10(self.nsym)
                    cnt[sym] += 1.0
                    cnt[-1] = tot + 1.0
                    if cnt[-1] > self.ctx_cap:
                        for j in range(self.nsym + 1):
                            cnt[j] *= 0.5
                self._syms.append(sym)
                if len(self._syms) > self.order:
                    self._syms.popleft()
            s_ms = 0.0
            for j, k in enumerate(self.scales):
                m = self._ew[j]
                m = x if m is None else m + (x - m) / k
                self._ew[j] = m
                w = self._ewwin[j]
                if len(w) >= self.warmup:
                    s_ms = max(s_ms, w.surprise_two_sided(m, floor))
                w.add(m)
            s = min(self.smax, max(self.w_scale * s_ms, self.w_spatial * s_sp, self.w_diff * s_df, self.w_season * s_se, self.w_ctx * s_cx))
            rec = self._recent
            rec.append(s)
            self._recent_sum += s
            if len(rec) > self.short:
                self._recent_sum -= rec.popleft()
            m = self._recent_sum / len(rec)
            s_l = 0.0
            if len(self._means) >= self.warmup:
                s_l = self._means.surprise_upper(m, 1e-3)
            self._means.add(m)
            s = max(s, self.w_like * s_l)
            if self.refractory > 0:
                h = self._hist
                a = max(h) if h else 0.0
                h.append(s)
                if len(h) > self.refractory:
                    h.popleft()
                if s <= a:
                    s *= self.damp
            score = min(1.0, s / self.smax)
        # learn
        vals.add(x)
        if d is not None:
            self._diffs.add(d)
        if r is not None:
            self._sres.add(r)
        a = self.season_alpha
        for j, w in ((i % self.bins, 1.0 - f), ((i + 1) % self.bins, f)):
            cur = self._season[j]
            self._season[j] = x if cur is None else cur + a * w * (x - cur)
        self._last = x
        self._n += 1
        return score
