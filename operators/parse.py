"""The parse step: a raw batch becomes per-key groups of typed events.

One source batch turns into a handful of items: one group per service/model
key, per service (for token use) and per security source, plus the batch's dead letters. This
keeps Bytewax's per-item cost off the per-event path.

Three guards keep one sender from blinding the flow:

* **Event time** (:class:`PartitionClock`, one per source partition, kept in
  the step's snapshot): an event more than ``limits.max_future`` ahead of its
  partition's event time (plus the wall time since that last moved) is held
  without moving it. When the events that follow carry on at the old time,
  the held ones are dead letters ``future_timestamp``; when most of them are
  ahead too (a partition that was quiet for a while, a replay across a gap),
  the partition jumps and the held events go on. A partition's first events
  are judged by their median, so a bogus first timestamp cannot set the clock;
  held events past a gap after the new time stay held and are judged by what
  follows, as any event ahead is.
* **Bounded keys** (:class:`KeyCaps`, per process): at most
  ``limits.max_services`` services, ``limits.max_models_per_service`` models
  per service and ``limits.max_keys`` service/model keys in all, and
  ``limits.max_sources`` security sources. Events of a key beyond a cap are
  folded into the overflow key (model ``OVERFLOW`` of their service, or
  service and model ``OVERFLOW``; source ``OVERFLOW``) and counted in
  ``sentinel_events_folded_total{kind}``; the keys themselves are not kept.
  A key not seen for ``state.key_idle_evict`` (wall time) frees its place.
* **Ranges**: :class:`sentinel.parse.Limits` refuses values and names beyond
  their plausible range as ``out_of_range``.

With ``state.dedup_ids`` set (off by default), events whose ``event_id`` was
seen lately (that many ids, per process: a producer's retry, a collector's
resend) are dropped and counted in ``sentinel_events_total{outcome="duplicate"}``;
events without an id are never dropped.

Outcomes: this step counts ``dead_letter``, ``ignored``, ``duplicate`` and
``security``; every event of a service/model key ends as ``ok`` or ``late``
in the key's window step, so each record is counted once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Tuple

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.operators import KeyedStream, StatefulLogic

from operators.stateful import stateful
from operators.windowing import frozen
from sentinel import shutdown
from sentinel.config import FlowConfig
from sentinel.core.times import iso as _iso
from sentinel.core.types import KeyGroup
from sentinel.events import (KEY_SEP, ActorRequests, DeadLetter, LLMEvent, RawBatch, RawRecords, Requests,
                             SecurityEvent)
from sentinel.metrics import get_metrics
from sentinel.parse import (DECODE_ERRORS, DEFAULT_LIMITS, MAX_RECORD_BYTES, BadRecord, Limits, decode_each,
                            event_record, parse_json_record, record_event, request_columns, request_times,
                            request_ts)
from sentinel.records import parse_record

MODEL, ACTOR, SECURITY, DEAD = "m", "a", "s", "d"

Tagged = Tuple[str, str, Any]

# The name events beyond a key cap are folded under.
OVERFLOW = "(overflow)"

# Held events are judged once this many events arrived since the first of them ...
DECIDE_AFTER = 32
# ... or when the partition has been quiet for a while, or at end of input; a jump
# then needs at least this many events ahead (one or two stray ones are dead letters).
MIN_JUMP = 3


class RecentIds:
    """The most recent distinct ids, at least ``capacity / 2`` and at most ``capacity`` of them.

    ``check_add(i)`` is True when ``i`` was seen (a duplicate), else remembers
    it. Two generations of sets: when the current one is full (half the
    capacity) it becomes the previous one and the oldest is forgotten, so
    memory stays bounded and a lookup is two set probes.
    """

    __slots__ = ("capacity", "cur", "old")

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity // 2)
        self.cur: set = set()
        self.old: set = set()

    def check_add(self, i: str) -> bool:
        """The loop of :meth:`BatchParser.__call__` does the same inline."""
        if i in self.old:
            return True
        cur = self.cur
        n = len(cur)
        cur.add(i)
        if len(cur) == n:
            return True
        if n + 1 >= self.capacity:
            self.rotate()
        return False

    def rotate(self) -> None:
        self.old, self.cur = self.cur, set()

    def __len__(self) -> int:
        return len(self.cur) + len(self.old)


class PartitionClock:
    """Event-time progress of one source partition, and the events held ahead of it.

    ``wm``: the latest event time let through (None before the first
    decision); ``wall``: the ingest time when it last moved; ``held``:
    ``(event, position, raw)`` of events too far ahead; ``after``: events let
    through since the first of them.
    """

    __slots__ = ("wm", "wall", "held", "after", "partition", "partitions", "fed")

    def __init__(self) -> None:
        self.wm: Optional[float] = None
        self.wall = 0.0
        self.held: List[Tuple[Any, Tuple[str, int, int], bytes]] = []
        self.after = 0
        self.partition = ""
        self.partitions = 1
        # (kind, key) of the windowed keys fed since the partition last said it was quiet (at most
        # MAX_FED): the keys its quiet marker goes to.
        self.fed: Dict[Tuple[str, str], None] = {}

    def __getstate__(self):
        return (self.wm, self.wall, self.held, self.after, self.partition, self.partitions, self.fed)

    def __setstate__(self, s) -> None:
        self.wm, self.wall, self.held, self.after, self.partition, self.partitions = s[:6]
        self.fed = s[6] if len(s) > 6 else {}  # snapshots from before the quiet markers


# Keys a partition's quiet marker reaches at most; a key beyond them waits for the partition as for a
# silent one (operators/windowing.py): its windows still close, idle_partition later.
MAX_FED = 10000


def note_fed(clock: PartitionClock, out: List[Tagged]) -> None:
    """Remember the windowed keys (service/model and service) that ``out`` feeds from ``clock``'s partition."""
    fed = clock.fed
    if len(fed) >= MAX_FED:
        return
    for t in out:
        kind = t[0]
        if kind is MODEL or kind is ACTOR:
            fed[(kind, t[1])] = None
    if len(fed) > MAX_FED:
        for k in list(fed)[MAX_FED:]:
            del fed[k]


def quiet_markers(clock: PartitionClock, batch: RawBatch) -> List[Tagged]:
    """For a source's quiet marker: a group of no events (``None``) to every key the partition fed since
    it was last quiet, so their windows stop waiting for it."""
    part, at, nparts = batch.partition, batch.ingested_at, batch.partitions
    out: List[Tagged] = [(kind, key, (part, None, at, nparts)) for kind, key in clock.fed]
    clock.fed = {}
    return out


class KeyCaps:
    """Which service/model keys and security sources a process keeps apart (see the module docstring)."""

    def __init__(self, max_keys: int, max_models_per_service: int, max_services: int, max_sources: int,
                 idle: float) -> None:
        self.max_keys = max_keys
        self.max_models = max_models_per_service
        self.max_services = max_services
        self.max_sources = max_sources
        self.idle = idle
        self.keys: Dict[str, float] = {}  # admitted key -> ingest time it was last seen
        self.models: Dict[str, int] = {}  # service -> its admitted keys
        self.sources: Dict[str, float] = {}
        self._next_sweep = 0.0

    def key(self, k: str, now: float) -> Tuple[str, Optional[str]]:
        """The key to use for ``k`` and, when it is folded, the cap that folded it."""
        keys = self.keys
        if k in keys:
            keys[k] = now
            return k, None
        svc = k[:k.index(KEY_SEP)]
        models = self.models
        n = models.get(svc)
        if n is None:
            if len(models) >= self.max_services or len(keys) >= self.max_keys:
                return OVERFLOW + KEY_SEP + OVERFLOW, "service"
            n = models[svc] = 0
        if n >= self.max_models or len(keys) >= self.max_keys:
            return svc + KEY_SEP + OVERFLOW, "model"
        keys[k] = now
        models[svc] = n + 1
        return k, None

    def source(self, s: str, now: float) -> str:
        sources = self.sources
        if s in sources or len(sources) < self.max_sources:
            sources[s] = now
            return s
        return OVERFLOW

    def sweep(self, now: float) -> None:
        """Forget keys and sources not seen for ``idle`` (at most once a minute)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60.0
        cut = now - self.idle
        for k in [k for k, t in self.keys.items() if t < cut]:
            del self.keys[k]
            svc = k[:k.index(KEY_SEP)]
            self.models[svc] -= 1
        for svc in [s for s, n in self.models.items() if n <= 0]:
            del self.models[svc]
        for s in [s for s, t in self.sources.items() if t < cut]:
            del self.sources[s]


class BatchParser:
    """RawBatch -> tagged groups: ``parse(batch, clock)`` (the flow's step), or call it with a batch.

    Called with a batch alone, it keeps a :class:`PartitionClock` per
    partition itself (tests and benchmarks).
    """

    def __init__(self, max_record_bytes: int = MAX_RECORD_BYTES, actors: bool = True, dedup_ids: int = 0,
                 limits: Limits = DEFAULT_LIMITS, max_future: float = 600.0, caps: Optional[KeyCaps] = None) -> None:
        self.max_record_bytes = max_record_bytes
        self.actors = actors
        self.seen = RecentIds(dedup_ids) if dedup_ids > 0 else None
        self.limits = limits
        self.max_future = max_future if max_future > 0 else float("inf")
        self.caps = caps if caps is not None else KeyCaps(10_000, 100, 1_000, 100_000, 6 * 3600.0)
        self.clocks: Dict[str, PartitionClock] = {}
        m = get_metrics()
        self._dup = m.events.labels(outcome="duplicate")
        self._sec = m.events.labels(outcome="security")
        self._dead = m.events.labels(outcome="dead_letter")
        self._ignored = m.events.labels(outcome="ignored")
        self._dl_reasons = m.dead_letters
        self._folded = m.events_folded

    def __call__(self, batch: RawBatch) -> List[Tagged]:
        clock = self.clocks.get(batch.partition)
        if clock is None:
            clock = self.clocks[batch.partition] = PartitionClock()
        return self.parse(batch, clock)

    def parse(self, batch: RawBatch, clock: PartitionClock) -> List[Tagged]:
        at = batch.ingested_at
        clock.partition = batch.partition
        clock.partitions = batch.partitions
        if self.seen is None and not clock.held and clock.wm is not None and batch.records.__class__ is RawRecords:
            out = self._in_time(batch, clock, at)
            if out is not None:
                return out
        # A request travels as its decoded record (sentinel.parse.request_ts) and its event time, a
        # security event as itself.
        rows: List[Any] = []
        tss: List[float] = []
        secs: List[SecurityEvent] = []
        dead: List[DeadLetter] = []
        ignored = 0
        dups = 0
        limit = self.max_record_bytes
        limits = self.limits
        decode = limits.decoder.decode
        seen = self.seen
        if seen is not None:
            cur, old, cap = seen.cur, seen.old, seen.capacity
        max_future = self.max_future
        wm = clock.wm
        held = clock.held
        after = clock.after
        moved = False
        # Event time beyond this is held (every event, until a partition's first decision).
        ahead = float("-inf") if wm is None else wm + max_future + max(0.0, at - clock.wall)
        recs = batch.records
        if recs.__class__ is RawRecords:
            values = recs.values
            all_json = recs.encoding == "json"
        else:
            values = [r.data for r in recs]
            all_json = all(r.encoding == "json" for r in recs)
        for n_rec, data in enumerate(values):
            if all_json or recs[n_rec].encoding == "json":
                # A well-formed request is decoded and checked in C; the rest go the long way, which
                # names what is wrong (sentinel.parse).
                ts = None
                if len(data) <= limit:
                    try:
                        w = decode(data)
                        ts = request_ts(w, limits)
                    except DECODE_ERRORS:
                        pass
                if ts is not None:
                    items: Any = ((ts, w),)
                else:
                    rec = recs[n_rec]
                    try:
                        ev = parse_json_record(data, limit, rec.size, limits)
                    except BadRecord as ex:
                        dead.append(DeadLetter(ex.reason, ex.detail, rec.position, data))
                        continue
                    items = ((ev.ts, event_record(ev, limits) if ev.__class__ is LLMEvent else ev),)
            else:
                evs, dls, ign = parse_record(recs[n_rec], limit, limits)
                dead.extend(dls)
                ignored += ign
                items = [(ev.ts, event_record(ev, limits) if ev.__class__ is LLMEvent else ev) for ev in evs]
            for ts, item in items:
                if seen is not None:
                    i = item.event_id
                    if i is not None:  # RecentIds.check_add, inline: this runs for every event
                        if i in old:
                            dups += 1
                            continue
                        n = len(cur)
                        cur.add(i)
                        if len(cur) == n:
                            dups += 1
                            continue
                        if n + 1 >= cap:
                            seen.rotate()
                            cur, old = seen.cur, seen.old
                if ts > ahead:
                    held.append((item if item.__class__ is SecurityEvent else record_event(ts, item), recs[n_rec].position,
                                 data))
                    if wm is not None and len(held) + after >= DECIDE_AFTER:
                        clock.wm, clock.after = wm, after
                        if moved:
                            clock.wall = at
                        self._decide(clock, at, rows, tss, secs, dead, False)
                        held = clock.held
                        wm, after = clock.wm, 0
                        ahead = wm + max_future
                    continue
                if held:
                    after += 1
                if ts > wm:
                    wm = ts
                    ahead = wm + max_future
                    moved = True
                if item.__class__ is SecurityEvent:
                    secs.append(item)
                else:
                    rows.append(item)
                    tss.append(ts)
        clock.wm, clock.after = wm, after
        if moved:
            clock.wall = at
        if held and (wm is None and len(held) >= MIN_JUMP or len(held) + after >= DECIDE_AFTER):
            self._decide(clock, at, rows, tss, secs, dead, False)
        if dups:
            self._dup.inc(dups)
        if ignored:
            self._ignored.inc(ignored)
        return self._group(rows, tss, secs, dead, batch.partition, at, batch.partitions)

    def _in_time(self, batch: RawBatch, clock: PartitionClock, at: float) -> Optional[List[Tagged]]:
        """:meth:`parse` of a batch of JSON records none of which is held (every event time within
        ``max_future`` of the partition's, no event held before, no ids to check): decoded and timed a
        column at a time, without the per-event clock of the general loop. None when that does not
        hold (then the general loop decides)."""
        recs = batch.records
        values = recs.values
        if recs.encoding != "json" or not values or max(map(len, values)) > self.max_record_bytes:
            return None
        limits = self.limits
        rows = decode_each(values, limits)
        tss = request_times(rows, limits)
        secs: List[SecurityEvent] = []
        dead: List[DeadLetter] = []
        missing = None in tss
        top = max([t for t in tss if t is not None], default=None) if missing else max(tss)
        if missing:
            # The long way for what the decoder did not take: events, or dead letters naming what is wrong.
            for i in [i for i, t in enumerate(tss) if t is None]:
                rows[i] = None
                rec = recs[i]
                try:
                    ev = parse_json_record(values[i], self.max_record_bytes, rec.size, limits)
                except BadRecord as ex:
                    dead.append(DeadLetter(ex.reason, ex.detail, rec.position, values[i]))
                    continue
                if top is None or ev.ts > top:
                    top = ev.ts
                if ev.__class__ is SecurityEvent:
                    secs.append(ev)
                else:
                    rows[i] = event_record(ev, limits)
                    tss[i] = ev.ts
            tss = [t for w, t in zip(rows, tss) if w is not None]
            rows = [w for w in rows if w is not None]
        wm = clock.wm
        if top is not None and top > wm:
            if top > wm + self.max_future + max(0.0, at - clock.wall):
                return None  # one is ahead: the general loop holds it
            clock.wm = top
            clock.wall = at
        return self._group(rows, tss, secs, dead, batch.partition, at, batch.partitions)

    def flush(self, clock: PartitionClock, at: float) -> List[Tagged]:
        """Judge what a quiet partition holds (timer, end of input)."""
        rows: List[Any] = []
        tss: List[float] = []
        secs: List[SecurityEvent] = []
        dead: List[DeadLetter] = []
        if clock.held:
            self._decide(clock, at, rows, tss, secs, dead, True)
        return self._group(rows, tss, secs, dead, clock.partition, at, clock.partitions)

    def _decide(self, clock: PartitionClock, at: float, rows: List[Any], tss: List[float],
                secs: List[SecurityEvent], dead: List[DeadLetter], quiet: bool) -> None:
        """Let held events go on (the partition jumped) or make them dead letters ``future_timestamp``."""
        held = clock.held
        clock.held = []
        after, clock.after = clock.after, 0
        wm = clock.wm
        if wm is not None and (len(held) <= after or (quiet and len(held) < MIN_JUMP)):
            take = 0
            rest = held
        else:
            # Most events are ahead: the partition moved on. Its time is the held events' median;
            # those up to it go on, and those after it while no gap exceeds max_future.
            held.sort(key=lambda h: h[0].ts)
            prev = held[(len(held) - 1) // 2][0].ts
            take = len(held)
            for i in range((len(held) - 1) // 2 + 1, len(held)):
                ts = held[i][0].ts
                if ts - prev > self.max_future:
                    take = i
                    break
                prev = ts
            rest = held[take:]
            top = held[take - 1][0].ts
            clock.wm = top if wm is None or top > wm else wm
            clock.wall = at
            for ev, _pos, _raw in held[:take]:
                if ev.__class__ is SecurityEvent:
                    secs.append(ev)
                else:
                    rows.append(event_record(ev, self.limits))
                    tss.append(ev.ts)
            if rest:
                # Beyond a gap after the new time: ahead of it as any event is, and judged as one by
                # what follows (a partition's first batch may hold the start of its next stretch).
                clock.held = rest
                if quiet:
                    self._decide(clock, at, rows, tss, secs, dead, True)
                return
        ref = clock.wm
        for ev, pos, raw in rest:
            detail = f"timestamp: {_iso(ev.ts)} is more than {self.max_future:g} s ahead of its partition's event time"
            if ref is not None:
                detail += f" ({_iso(ref)})"
            dead.append(DeadLetter("future_timestamp", detail, pos, raw))

    def _group(self, rows: List[Any], tss: List[float], secs: List[SecurityEvent], dead: List[DeadLetter],
               part: str, at: float, nparts: int) -> List[Tagged]:
        # key -> (rows, event times), in arrival order
        by_key: Dict[str, Tuple[List[Any], List[float]]] = {}
        by_source: Dict[str, List[SecurityEvent]] = {}
        if rows:
            r0 = rows[0]
            svc, mdl = r0.service, r0.model
            for r in rows:
                if r.service != svc or r.model != mdl:
                    break
            else:  # one key (a partition per key, a small batch): no per-record grouping
                by_key[svc + KEY_SEP + mdl] = (rows, tss)
            if not by_key:
                for r, ts in zip(rows, tss):
                    k = r.service + KEY_SEP + r.model
                    g = by_key.get(k)
                    if g is None:
                        by_key[k] = ([r], [ts])
                    else:
                        g[0].append(r)
                        g[1].append(ts)
        for ev in secs:
            g = by_source.get(ev.source)
            if g is None:
                by_source[ev.source] = [ev]
            else:
                g.append(ev)
        caps = self.caps
        caps.sweep(at)
        folded = False
        for k in by_key:
            if caps.key(k, at)[1] is not None:
                folded = True
                break
        if folded:
            # Rare: rebuild the groups with every key beyond a cap under its overflow key.
            regrouped: Dict[str, Tuple[List[Any], List[float]]] = {}
            for k, g in by_key.items():
                k2, why = caps.key(k, at)
                if why is not None:
                    self._folded.labels(kind=why).inc(len(g[0]))
                into = regrouped.setdefault(k2, ([], []))
                into[0].extend(g[0])
                into[1].extend(g[1])
            by_key = regrouped
        if by_source:
            over: List[SecurityEvent] = []
            for s in list(by_source):
                if caps.source(s, at) is OVERFLOW:
                    over.extend(by_source.pop(s))
            if over:
                self._folded.labels(kind="source").inc(len(over))
                by_source.setdefault(OVERFLOW, []).extend(over)
        cols = {k: request_columns(*g) for k, g in by_key.items()}
        out: List[Tagged] = [(MODEL, k, (part, g, at, nparts)) for k, g in cols.items()]
        if self.actors:
            # Token use is judged per service: one group per service (its models' groups joined), with
            # only the four columns that step reads, so little crosses to the worker that holds it.
            by_service: Dict[str, ActorRequests] = {}
            for k, g in cols.items():
                svc = k[:k.index(KEY_SEP)]
                a = ActorRequests.of_requests(g)
                s = by_service.get(svc)
                by_service[svc] = a if s is None else s + a
            out.extend((ACTOR, svc, (part, g, at, nparts)) for svc, g in by_service.items())
        out.extend((SECURITY, s, (part, g, at, nparts)) for s, g in by_source.items())
        n_sec = len(secs)
        if n_sec:
            self._sec.inc(n_sec)
        if dead:
            self._dead.inc(len(dead))
            for d in dead:
                self._dl_reasons.labels(reason=d.reason).inc()
            out.append((DEAD, "", dead))
        return out


class ParseLogic(StatefulLogic[RawBatch, Tagged, PartitionClock]):
    """The parse step, keyed by source partition: its state is the partition's :class:`PartitionClock`."""

    def __init__(self, parser: BatchParser, hold: float, state: Optional[PartitionClock]) -> None:
        self.parser = parser
        self.hold = hold
        self.clock = state if state is not None else PartitionClock()

    def on_item(self, value: RawBatch) -> Tuple[List[Tagged], bool]:
        clock = self.clock
        if value.records is None:  # the source has read all there is of this partition
            out = self.parser.flush(clock, clock.wall) if clock.held else []
            note_fed(clock, out)
            return out + quiet_markers(clock, value), StatefulLogic.RETAIN
        out = self.parser.parse(value, clock)
        note_fed(clock, out)
        return out, StatefulLogic.RETAIN

    def _flush(self) -> Tuple[List[Tagged], bool]:
        if not self.clock.held:
            return [], StatefulLogic.RETAIN
        # Held events go on with the ingest time of the batch that last moved the partition.
        out = self.parser.flush(self.clock, self.clock.wall)
        note_fed(self.clock, out)
        return out, StatefulLogic.RETAIN

    def on_notify(self) -> Tuple[List[Tagged], bool]:
        return self._flush()

    def on_eof(self) -> Tuple[List[Tagged], bool]:
        if not shutdown.flush_on_eof():
            return [], StatefulLogic.RETAIN  # a stop with recovery on: they stay held, in the snapshot
        return self._flush()

    def notify_at(self) -> Optional[datetime]:
        if not self.clock.held:
            return None
        return datetime.now(timezone.utc) + timedelta(seconds=self.hold)

    def snapshot(self) -> PartitionClock:
        return frozen(self.clock)


@dataclass(frozen=True)
class Parsed:
    """The parse step's streams: each kind's groups, keyed, and the dead letters of each batch."""

    models: KeyedStream[KeyGroup]  # requests per service/model key
    actors: KeyedStream[KeyGroup]  # requests per service, for token abuse
    security: KeyedStream[KeyGroup]  # security events per source
    dead_letters: Stream[List[DeadLetter]]


def parser_for(cfg: FlowConfig) -> BatchParser:
    """The parser of the flow ``cfg``: its record limits, key caps and duplicate memory."""
    lim = cfg.limits
    return BatchParser(cfg.max_record_bytes, actors=cfg.detection.token_abuse.enabled, dedup_ids=cfg.state.dedup_ids,
                       limits=lim.record_limits(), max_future=lim.max_future,
                       caps=KeyCaps(lim.max_keys, lim.max_models_per_service, lim.max_services, lim.max_sources,
                                    cfg.state.key_idle_evict))


@operator
def parse(step_id: str, up: Stream[RawBatch], cfg: FlowConfig) -> Parsed:
    """Source batches decoded (:func:`parser_for`) and split by kind, keyed by source partition (whose
    event-time clock is the state); held events of a partition wait ``windows.idle_partition`` of wall
    time for more of it."""
    parser = parser_for(cfg)
    hold = cfg.windows.idle_partition
    by_partition = op.key_on("by_partition", up, lambda b: b.partition)
    tagged = op.map("unkey", stateful(by_partition, lambda st: ParseLogic(parser, hold, st)), lambda kv: kv[1])

    def of_kind(kind: str) -> Stream[Tagged]:
        return op.filter(f"only_{kind}", tagged, lambda t: t[0] == kind)

    def keyed(kind: str) -> KeyedStream[KeyGroup]:
        return op.map(f"key_{kind}", of_kind(kind), lambda t: (t[1], KeyGroup(t[1], *t[2])))

    return Parsed(keyed(MODEL), keyed(ACTOR), keyed(SECURITY), op.map("dead_letters", of_kind(DEAD), lambda t: t[2]))
