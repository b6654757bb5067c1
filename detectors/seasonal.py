"""Time-of-day profile of a log-scale series (additive in log space).

Learns the typical offset of each hour of the (UTC) day from the series'
level, once a full day has been seen, so a daily traffic swing or a lunch
peak is expected rather than alerted, and a drop that is unusual for that
hour still stands out. Offsets are interpolated between hour centres.
:class:`PeriodMemory` remembers the same time of the day (or week) before,
for sharp patterns the profile smooths away and for weekdays.
"""

from __future__ import annotations

import math
from array import array
from typing import List, Optional, Tuple


class SeasonalProfile:
    """Hour-of-day offsets, learned from residuals ``log(x) - level``.

    Examples
    --------
    >>> p = SeasonalProfile()
    >>> for minute in range(3 * 1440):
    ...     ts = minute * 60.0
    ...     p.learn(ts, 0.4 * math.sin(2 * math.pi * ts / 86400))
    >>> round(p.offset(6 * 3600.0), 1), round(p.offset(18 * 3600.0), 1)
    (0.4, -0.4)
    """

    def __init__(self, bins: int = 24, alpha: float = 0.05, min_days: float = 1.0) -> None:
        self.bins = bins
        self.alpha = alpha
        self.min_days = min_days
        self._off: List[float] = [0.0] * bins
        self._seen: List[int] = [0] * bins
        self._first_ts = None
        self._last_ts = None

    @property
    def ready(self) -> bool:
        if self._first_ts is None:
            return False
        return (self._last_ts - self._first_ts) >= self.min_days * 86400.0 and min(self._seen) > 0

    def _pos(self, ts: float) -> float:
        return ((ts % 86400.0) / 86400.0) * self.bins - 0.5

    def offset(self, ts: float) -> float:
        """Expected log offset at ``ts`` (0 until a day has been learned)."""
        if not self.ready:
            return 0.0
        pos = self._pos(ts)
        i = math.floor(pos)
        w = pos - i
        return (1 - w) * self._off[i % self.bins] + w * self._off[(i + 1) % self.bins]

    def learn(self, ts: float, residual: float) -> None:
        """Learn ``residual`` (log value minus deseasonalised level) at ``ts``."""
        if self._first_ts is None:
            self._first_ts = ts
        self._last_ts = ts
        pos = self._pos(ts)
        i = math.floor(pos)
        w = pos - i
        for j, wt in ((i % self.bins, 1 - w), ((i + 1) % self.bins, w)):
            if wt <= 0:
                continue
            a = self.alpha * wt
            if self._seen[j] == 0:
                self._off[j] = residual
            else:
                self._off[j] += a * (residual - self._off[j])
            self._seen[j] += 1
        # Keep the offsets centred so the level carries the mean.
        mean = sum(self._off) / self.bins
        if abs(mean) > 1e-9:
            self._off = [o - mean for o in self._off]

    def __getstate__(self):
        return self.__dict__.copy()

    def __setstate__(self, s) -> None:
        self.__dict__.update(s)


class PeriodMemory:
    """What a series (in log terms) looked like at the same point of the day (or week) before.

    A pattern that recurs every day at the same hour (a lunch peak, a nightly
    batch, a sharp morning login wave), or every week (a quiet weekend), is
    learned by :class:`SeasonalProfile` only slowly or not at all: its 24
    hourly offsets smooth a sharp peak away, know no weekday, and learn
    nothing while it is being alerted. This memory keeps the mean of
    ``log(x)`` per ``slot`` seconds of each ``period`` (UTC) for the last four
    periods seen, so a window can be compared with the same time in the three
    periods before: a value that ``need`` of them had too (within
    ``slots_either_side`` slots) is the period's pattern, not an incident. With
    two of three, a pattern pages on its first two days, one odd day (an
    incident at that hour) does not make the next day's pattern page, and one
    incident does not hide another at the same time the next day.

    Examples
    --------
    >>> m = PeriodMemory(86400.0, slot=300.0)
    >>> for minute in range(3 * 1440):
    ...     ts = minute * 60.0
    ...     m.learn(ts, 5.0 if 720 <= minute % 1440 < 780 else 4.0)
    >>> m.seen_before(3 * 86400 + 12.5 * 3600, 5.0, 3, 0.1), m.seen_before(3 * 86400 + 10 * 3600, 5.0, 3, 0.1)
    (True, False)
    """

    KEEP = 3  # periods kept before the latest

    def __init__(self, period: float = 86400.0, slot: float = 300.0, slots_either_side: int = 1,
                 poisson: bool = True, need: int = 2) -> None:
        if not 1 <= need <= self.KEEP:
            raise ValueError(f"need must be 1 to {self.KEEP}, got {need}")
        self.period = period
        self.poisson = poisson
        self.need = need
        self.slot = slot
        self.slots = int(round(period / slot))
        self.either_side = slots_either_side
        # Per slot: the latest period seen, with the running sum and count of its values, and
        # the means of the periods seen before it, latest first. Compact, as this is per key and
        # metric in snapshots: periods are counted from the one before the first seen (0: none),
        # means are kept in thousandths.
        self._origin: Optional[int] = None
        self._day = array("H", [0]) * self.slots
        self._sum = array("f", [0.0]) * self.slots
        self._n = array("H", [0]) * self.slots
        self._pday = [array("H", [0]) * self.slots for _ in range(self.KEEP)]
        self._pmean = [array("h", [0]) * self.slots for _ in range(self.KEEP)]

    def _before(self, s: int, day: int) -> List[Tuple[int, float]]:
        """The slot's means in the periods before period ``day``, as (periods back, mean)."""
        if self._origin is None:
            return []
        d = day - self._origin
        keep = self.KEEP
        out = []
        if self._n[s] and 1 <= d - self._day[s] <= keep:
            out.append((d - self._day[s], self._sum[s] / self._n[s]))
        for pday, pmean in zip(self._pday, self._pmean):
            if pday[s] and 1 <= d - pday[s] <= keep:
                out.append((d - pday[s], pmean[s] / 1000.0))
        return out

    def seen_before(self, ts: float, value: float, k: float, scale: float, closer_than: float = math.inf) -> bool:
        """Whether ``value`` is within ``k`` noise levels of the same time (or a slot either side)
        in ``need`` of the three periods before, and closer than ``closer_than`` to it. The noise
        level is ``scale`` or, for counts (``poisson``) that are small, their Poisson noise in
        log terms (``1 / sqrt(count)`` at the mean of the two)."""
        day = int(ts // self.period)
        s = int((ts % self.period) // self.slot)
        seen = set()
        for j in range(s - self.either_side, s + self.either_side + 1):
            d = day if 0 <= j < self.slots else (day - 1 if j < 0 else day + 1)
            for back, y in self._before(j % self.slots, d):
                if back in seen:
                    continue
                noise = max(scale, math.sqrt(2.0 / (math.exp(value) + math.exp(y)))) if self.poisson else scale
                if abs(value - y) <= k * noise and abs(value - y) < closer_than:
                    seen.add(back)
                    if len(seen) >= self.need:
                        return True
        return False

    def learn(self, ts: float, value: float) -> None:
        day = int(ts // self.period)
        s = int((ts % self.period) // self.slot)
        if self._origin is None:
            self._origin = day - 1
        d = day - self._origin
        if not 1 <= d <= 65535:
            return  # before the first period seen, or 65,000 periods later
        if self._day[s] != d:
            if self._n[s]:
                mean = min(max(self._sum[s] / self._n[s], -32.767), 32.767)
                pday, pmean = self._pday, self._pmean
                for i in range(self.KEEP - 1, 0, -1):
                    pday[i][s], pmean[i][s] = pday[i - 1][s], pmean[i - 1][s]
                pday[0][s], pmean[0][s] = self._day[s], int(round(mean * 1000.0))
            self._day[s], self._sum[s], self._n[s] = d, 0.0, 0
        if self._n[s] < 65535:  # values past that many in one slot (windows under 5 ms) are not kept
            self._sum[s] += value
            self._n[s] += 1


class HourProfile:
    """Minute-of-hour profile of a count (``log(count + 1)``): scheduled batches several times an hour.

    Per minute of the (UTC) hour, an exponentially weighted level and absolute deviation of
    ``log(count + 1)`` (``alpha`` per hour). It is *adopted* as the key's expectation only while
    it predicts the key's windows much better than the plain level does: its mean absolute
    error (exponentially weighted over about ``2 / err_alpha`` windows) under ``ratio`` times
    the plain level's, with every minute seen at least twice. A key whose requests come in
    batches at :00, :20 and :40 then expects a batch at those minutes and nothing in between;
    a missing batch stands out, a batch does not. 60 levels and deviations, as compact arrays.

    Examples
    --------
    >>> p = HourProfile()
    >>> for minute in range(4 * 60):
    ...     y = math.log(41.0) if minute % 20 < 5 else 0.0
    ...     p.learn(minute * 60.0, y, 1.0)
    >>> p.adopted, round(p.expect(4 * 3600.0)[0], 2), round(p.expect(4 * 3600.0 + 600)[0], 2)
    (True, 3.71, 0.0)
    """

    SLOTS = 60
    # (slot, its deviation before) of the window learned last (judge); states from before it lack it.
    _last: Optional[Tuple[int, float]] = None

    def __init__(self, alpha: float = 0.3, err_alpha: float = 0.02, ratio: float = 0.5) -> None:
        self.alpha = alpha
        self.err_alpha = err_alpha
        self.ratio = ratio
        self._loc = array("f", [0.0]) * self.SLOTS
        self._dev = array("f", [0.0]) * self.SLOTS
        self._seen = array("B", [0]) * self.SLOTS
        self._err = 0.0  # EW mean |log(count + 1) - profile|
        self._err_plain = 0.0  # EW mean |log(count + 1) - plain level|
        self.adopted = False

    @staticmethod
    def _slot(ts: float) -> int:
        return int((ts % 3600.0) // 60.0) % HourProfile.SLOTS

    def expect(self, ts: float) -> Tuple[float, float]:
        """``(expected log(count + 1), its noise)`` at ``ts``: the minute's deviation, at least the
        Poisson noise of its expected count, at least 0.1."""
        s = self._slot(ts)
        loc = self._loc[s]
        return loc, max(0.1, 1.2533 * self._dev[s], 1.0 / math.sqrt(math.exp(loc)))

    def half_period(self, busy: float) -> float:
        """Half the schedule's period, in seconds: half an hour over the batches the profile
        expects an hour (the minutes expecting ``busy`` requests or more after one expecting fewer;
        0 without any)."""
        at = math.log(busy + 1.0)
        loc = self._loc
        starts = sum(1 for s in range(self.SLOTS) if loc[s] >= at > loc[s - 1])
        return 1800.0 / starts if starts else 0.0

    def judge(self, ts: float, y: float) -> Tuple[float, float, float]:
        """``(z, expected, noise)`` of ``y`` against the minute of ``ts`` or a minute either side,
        whichever it is nearest to in noise levels: a batch that starts or ends a minute off is
        not an incident, a batch that does not come is."""
        return self._judge(ts, y)[:3]

    def _judge(self, ts: float, y: float) -> Tuple[float, float, float, float]:
        """:meth:`judge`, and the offset of the minute that judged (0, -60 or 60 s)."""
        best = None
        last = self._last
        for d in (0, -60.0, 60.0):
            loc, noise = self.expect(ts + d)
            if d < 0.0 and last is not None and last[0] == self._slot(ts + d):
                # The minute before looked like the one before it (a late start) and was learned a
                # window ago, from this hour: it judges with the spread it had before. Otherwise a
                # missing batch's first minute, explained as a late start and learned as spread,
                # would explain its second as well, and so on to its end.
                noise = max(0.1, 1.2533 * last[1], 1.0 / math.sqrt(math.exp(loc)))
            z = (y - loc) / noise
            if best is None or abs(z) < abs(best[0]):
                best = (z, loc, noise, d)
        return best

    def judge_span(self, ts: float, counts: List[int]) -> Tuple[float, float, float]:
        """``(z, expected, noise)`` of the sum of ``counts`` (consecutive windows, the last one at
        ``ts``) against the sum the schedule expects of them, on the log scale, with the whole span
        shifted by a minute either way if that explains it better (as :meth:`judge`). A batch of
        two or three minutes that does not come is a run of windows each next to a minute that
        expects nothing: :meth:`judge` explains every one of them as a batch that starts late or
        ends early; their sum is not explained so. The noise is the minutes' own, weighted by what
        they expect (the minutes of one batch come or fail together), each at most 1 (a minute that
        a batch covers on some hours and not on others may be empty, and no emptier than that), and
        at least a Poisson sum's."""
        k = len(counts)
        y = math.log(sum(counts) + 1.0)
        best = None
        for d in (0.0, -60.0, 60.0):
            exp_sum = weight = 0.0
            for i in range(k):
                loc, noise = self.expect(ts + d - 60.0 * (k - 1 - i))
                e = max(math.exp(loc) - 1.0, 0.0)
                exp_sum += e
                weight += e * min(noise, 1.0)
            noise = max(0.1, weight / exp_sum if exp_sum > 0.0 else 0.1, 1.0 / math.sqrt(exp_sum + 1.0))
            z = (y - math.log(exp_sum + 1.0)) / noise
            if best is None or abs(z) < abs(best[0]):
                best = (z, exp_sum, noise)
        return best

    def learn(self, ts: float, y: float, plain: float, level: bool = True) -> None:
        """Learn ``y`` = log(count + 1) at ``ts``; ``plain`` is the plain level's expectation of it.
        An anomalous window (``level`` False), or one more than four noise levels off its own
        minute (a minute either side may have explained it), moves the minute's level and the
        errors at a tenth of the weight (its deviation as any window): a missing batch is neither
        learned minute by minute into the minutes after it nor makes the profile look worse than
        the plain level, while a schedule that moved is learned within hours."""
        s = self._slot(ts)
        seen = self._seen[s]
        if seen:
            r = y - self._loc[s]
            far = not level or (seen > 1 and abs(r) > 4.0 * self.expect(ts)[1])
            w = 0.1 if far else 1.0
            a = self.err_alpha * w
            self._err += a * (abs(r) - self._err)
            self._err_plain += a * (abs(y - plain) - self._err_plain)
            b = self.alpha if seen > 1 else 0.5
            # The deviation learns every window, at a third of the level's rate: a minute that a
            # batch covers on some hours and not on others (batches of varying length) keeps a
            # wide spread, and once a batch ran short, a short batch is within it.
            # A window judged by the minute before it (see _judge) keeps the spread it had.
            self._last = (s, self._dev[s]) if self._judge(ts, y)[3] < 0.0 else None
            self._dev[s] += (b if seen == 1 else b / 3.0) * (abs(r) - self._dev[s])
            self._loc[s] += b * w * r
        else:
            self._loc[s] = y
            self._last = None
        if seen < 255:
            self._seen[s] = seen + 1
        # Adopted at half the plain level's error, kept up to 0.7 of it (no flapping at the edge).
        limit = self.ratio if not self.adopted else max(self.ratio, 0.7)
        self.adopted = min(self._seen) >= 2 and self._err < limit * self._err_plain
