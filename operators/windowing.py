"""Event-time tumbling windows of one key, with per-partition progress.

A backlog read fast from Kafka puts partitions hours apart in event time. A
key's watermark is therefore the *slowest* of the partitions that feed it,
not the fastest: windows stay open until every partition has moved past
them, so the lagging partition's events are not "late".

A partition that goes silent for a key is one of two things, and only its
source can tell which:

* **quiet**: its source has read everything there is (caught up, or at end
  of input). The source says so in-band, after the partition's last events
  (:meth:`quiet`), and from then on the partition holds nothing back until it
  speaks again, so a partition that sits idle never stalls the key;
* **delayed**: its events are still on their way (its reader, or the worker
  that parses or holds them, is busy: with two processes, one can read its
  partitions hours ahead while the other's wait). Its events must not turn
  late. After ``idle_partition`` seconds of wall time without a word, the
  partition is presumed to move on at the pace of wall time from where it
  was, which is how a live partition moves (a key with no events of its own
  in it still closes its windows, ``idle_partition`` later), while in a
  backlog it holds the key's windows open: at most ``max_open`` of them, the
  oldest closing first when there are more.

A key learns of a partition only from its first event, so when the source
has several partitions, for its first ``idle_partition`` seconds a key closes
no window (every partition gets a turn to speak first). When every partition
of the key is quiet, the watermark advances with wall time since the key's
last event (as Bytewax's EventClock does), so the last window of a live key
closes.

Wall-clock readings enter only through the ``now`` arguments (a monotonic
clock in the operator); windows and detection depend on event time alone.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable, Dict, Generic, List, Optional, Tuple, TypeVar

A = TypeVar("A")

# The wall time of a partition whose source has said it is quiet (see KeyWindows.quiet).
QUIET = float("-inf")


class KeyWindows(Generic[A]):
    __slots__ = ("size", "lateness", "idle_partition", "max_open", "max_gap_fill", "_new_agg",
                 "_parts", "_open", "_closed_upto", "_last_wall", "_max_ts", "_born")

    def __init__(self, size: float, lateness: float, idle_partition: float, max_open: int,
                 new_agg: Callable[[float], A], max_gap_fill: int = 120) -> None:
        self.size = size
        self.lateness = lateness
        self.idle_partition = idle_partition
        self.max_open = max_open
        self.max_gap_fill = max_gap_fill
        self._new_agg = new_agg
        # partition -> [max event time seen, wall time of last event, or QUIET]
        self._parts: Dict[str, List[float]] = {}
        self._open: Dict[float, A] = {}
        self._closed_upto: Optional[float] = None
        self._last_wall = 0.0
        self._max_ts = float("-inf")
        self._born: Optional[float] = None

    def agg_for(self, part: str, ts: float, now: float, partitions: int = 1) -> Optional[A]:
        """The open window aggregate for an event, or None if its window has closed.

        ``partitions`` is how many partitions the source has: with one, there
        is no other partition to wait for at start-up.
        """
        if self._born is None:
            self._born = now if partitions > 1 else float("-inf")
        p = self._parts.get(part)
        if p is None:
            self._parts[part] = [ts, now]
        else:
            if ts > p[0]:
                p[0] = ts
            p[1] = now
        if ts > self._max_ts:
            self._max_ts = ts
        self._last_wall = now
        start = ts - (ts % self.size)
        if self._closed_upto is not None and start < self._closed_upto:
            return None
        agg = self._open.get(start)
        if agg is None:
            agg = self._open[start] = self._new_agg(start)
        return agg

    def watermark(self, now: float) -> float:
        """Event time up to which every window is complete."""
        if self._born is None or now - self._born < self.idle_partition:
            return float("-inf")
        lo = None
        idle = self.idle_partition
        for max_ts, wall in self._parts.values():
            if wall == QUIET:
                continue  # its source has read all there is: it holds nothing back
            silent = now - wall - idle
            if silent > 0.0:
                max_ts += silent  # silent, not quiet: presumed to move on with wall time
            if lo is None or max_ts < lo:
                lo = max_ts
        if lo is None:
            # Every partition quiet: advance with the wall time since the key's last event.
            lo = self._max_ts + max(0.0, now - self._last_wall - idle)
        return lo - self.lateness

    def quiet(self, part: str) -> None:
        """The source of ``part`` has read all there is for now (this comes after its last events): the
        partition holds the key's windows back no more, until it sends an event again."""
        p = self._parts.get(part)
        if p is not None:
            p[1] = QUIET

    def close_ready(self, now: float) -> List[Tuple[float, Optional[A]]]:
        """Close windows that the watermark has passed, oldest first.

        Missing windows between two closed ones come out as ``(start, None)``
        (a key with no traffic in a window is a signal), up to ``max_gap_fill``.
        """
        if not self._open:
            return []
        wm = self.watermark(now)
        ready = sorted(s for s in self._open if s + self.size <= wm)
        overflow = len(self._open) - len(ready) - self.max_open
        if overflow > 0:
            rest = sorted(s for s in self._open if s + self.size > wm)
            ready.extend(rest[:overflow])
        return self._emit(ready)

    def close_all(self) -> List[Tuple[float, Optional[A]]]:
        return self._emit(sorted(self._open))

    def _emit(self, starts: List[float]) -> List[Tuple[float, Optional[A]]]:
        out: List[Tuple[float, Optional[A]]] = []
        for s in starts:
            prev = self._closed_upto
            if prev is not None and s > prev:
                gap = int(round((s - prev) / self.size))
                if gap <= self.max_gap_fill:
                    for i in range(gap):
                        out.append((prev + i * self.size, None))
            out.append((s, self._open.pop(s)))
            self._closed_upto = s + self.size
        return out

    def forget_idle_partitions(self, now: float, after: float) -> None:
        for part in [p for p, (_, wall) in self._parts.items() if now - wall >= after]:
            del self._parts[part]

    @property
    def open_count(self) -> int:
        return len(self._open)

    @property
    def last_wall(self) -> float:
        return self._last_wall

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, s) -> None:
        for k, v in s.items():
            setattr(self, k, v)


class Frozen:
    """A step's state as it was at a snapshot: its pickle, taken at once.

    What the keyed steps return from ``snapshot()`` instead of a deep copy:
    one ``pickle.dumps`` of the state (several times cheaper than
    ``copy.deepcopy`` of a key's windows and baselines), and no second
    pickling of the state when Bytewax writes the snapshot, as the bytes are
    written as they are. Unpickled, it is the state again: a resumed step's
    builder gets the state itself.
    """

    __slots__ = ("blob",)

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def __reduce__(self):
        return (pickle.loads, (self.blob,))


def frozen(state: Any) -> Optional[Frozen]:
    """The snapshot of ``state`` (None stays None)."""
    if state is None:
        return None
    return Frozen(pickle.dumps(state, pickle.HIGHEST_PROTOCOL))
