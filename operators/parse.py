"""The parse step: a raw batch becomes per-key groups of typed events.

One source batch turns into a handful of items: one group per service/model
key, per service (for token use) and per security source, plus the batch's dead letters. This
keeps Bytewax's per-item cost off the per-event path.

With ``state.dedup_ids`` set (off by default), events whose ``event_id`` was
seen lately (that many ids, per process: a producer's retry, a collector's
resend) are dropped and counted in ``sentinel_events_total{outcome="duplicate"}``;
events without an id are never dropped.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from sentinel.events import DeadLetter, LLMEvent, RawBatch, SecurityEvent
from sentinel.metrics import get_metrics
from sentinel.parse import MAX_RECORD_BYTES, parse_json_record, BadRecord, parse_record

MODEL, ACTOR, SECURITY, DEAD = "m", "a", "s", "d"

Tagged = Tuple[str, str, Any]


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


class BatchParser:
    """Callable for ``op.flat_map``: RawBatch -> tagged groups."""

    def __init__(self, max_record_bytes: int = MAX_RECORD_BYTES, actors: bool = True, dedup_ids: int = 0) -> None:
        self.max_record_bytes = max_record_bytes
        self.actors = actors
        self.seen = RecentIds(dedup_ids) if dedup_ids > 0 else None
        m = get_metrics()
        self._dup = m.events.labels(outcome="duplicate")
        self._ok = m.events.labels(outcome="ok")
        self._sec = m.events.labels(outcome="security")
        self._dead = m.events.labels(outcome="dead_letter")
        self._ignored = m.events.labels(outcome="ignored")
        self._dl_reasons = m.dead_letters

    def __call__(self, batch: RawBatch) -> List[Tagged]:
        part = batch.partition
        at = batch.ingested_at
        nparts = batch.partitions
        by_key: Dict[str, List[LLMEvent]] = {}
        by_source: Dict[str, List[SecurityEvent]] = {}
        dead: List[DeadLetter] = []
        ignored = 0
        dups = 0
        limit = self.max_record_bytes
        actors = self.actors
        seen = self.seen
        if seen is not None:
            cur, old, cap = seen.cur, seen.old, seen.capacity
        for rec in batch.records:
            if rec.encoding == "json":
                try:
                    evs = (parse_json_record(rec.data, limit, rec.size),)
                except BadRecord as ex:
                    dead.append(DeadLetter(ex.reason, ex.detail, rec.position, rec.data))
                    continue
            else:
                evs, dls, ign = parse_record(rec, limit)
                dead.extend(dls)
                ignored += ign
            for ev in evs:
                if seen is not None:
                    i = ev.event_id
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
                if ev.__class__ is LLMEvent:
                    k = ev.service + "\x1f" + ev.model
                    g = by_key.get(k)
                    if g is None:
                        by_key[k] = [ev]
                    else:
                        g.append(ev)
                else:
                    g = by_source.get(ev.source)
                    if g is None:
                        by_source[ev.source] = [ev]
                    else:
                        g.append(ev)
        out: List[Tagged] = [(MODEL, k, (part, evs, at, nparts)) for k, evs in by_key.items()]
        if actors:
            # Token use is judged per service: one group per service (its models' groups joined).
            by_service: Dict[str, List[LLMEvent]] = {}
            for k, evs in by_key.items():
                svc = k[:k.index("\x1f")]
                g = by_service.get(svc)
                if g is None:
                    by_service[svc] = evs
                else:
                    by_service[svc] = g + evs
            out.extend((ACTOR, svc, (part, evs, at, nparts)) for svc, evs in by_service.items())
        out.extend((SECURITY, s, (part, evs, at, nparts)) for s, evs in by_source.items())
        n_ok = sum(len(v) for v in by_key.values())
        n_sec = sum(len(v) for v in by_source.values())
        if n_ok:
            self._ok.inc(n_ok)
        if n_sec:
            self._sec.inc(n_sec)
        if ignored:
            self._ignored.inc(ignored)
        if dups:
            self._dup.inc(dups)
        if dead:
            self._dead.inc(len(dead))
            for d in dead:
                self._dl_reasons.labels(reason=d.reason).inc()
            out.append((DEAD, "", dead))
        return out
