"""Built-in simulated telemetry as a source (the embedded default of ``sentinel run``).

``speed`` is simulated seconds per wall second (0: as fast as possible). The
events are encoded to JSON and parsed by the same edge as real input.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Iterator, List, Optional

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from sentinel.config import SimulatorSource as SimulatorConfig
from sentinel import shutdown
from sentinel.events import RawBatch, RawRecord
from simulator import Simulator, to_epoch

log = logging.getLogger(__name__)


class _SimPartition(StatefulSourcePartition[RawBatch, int]):
    def __init__(self, cfg: SimulatorConfig, resume: Optional[int]) -> None:
        kwargs = {"seed": cfg.seed, "hours": cfg.hours, "rate": cfg.rate}
        if cfg.start is not None:
            kwargs["start"] = cfg.start
        self._sim = Simulator(**kwargs)
        self._cfg = cfg
        self._events: Iterator[dict] = self._sim.events()
        self._n = 0
        skip = resume or 0
        for _ in range(skip):
            next(self._events, None)
        self._n = skip
        self._pending: Optional[dict] = None
        self._pending_ts = 0.0
        self._wall0 = time.monotonic()
        self._sim0 = self._sim.start
        self._name = f"simulator:{cfg.seed}"
        self._awake: Optional[datetime] = None
        log.info("simulator: seed %d, %.1f h from %s at %sx speed, %d incidents injected",
                 cfg.seed, cfg.hours, datetime.fromtimestamp(self._sim.start, timezone.utc).isoformat(),
                 cfg.speed or "max", len(self._sim.labels))

    def next_batch(self) -> List[RawBatch]:
        if shutdown.requested():
            raise StopIteration()
        cfg = self._cfg
        horizon = float("inf")
        if cfg.speed > 0:
            horizon = self._sim0 + (time.monotonic() - self._wall0) * cfg.speed
        records: List[RawRecord] = []
        name = self._name
        for _ in range(cfg.batch_size):
            ev = self._pending
            if ev is None:
                ev = next(self._events, None)
                if ev is None:
                    break
                if cfg.speed > 0:
                    self._pending_ts = to_epoch(ev["timestamp"])
            if cfg.speed > 0 and self._pending_ts > horizon:
                self._pending = ev
                break
            self._pending = None
            self._n += 1
            records.append(RawRecord(orjson.dumps(ev), (name, 0, self._n)))
        if not records:
            if self._pending is None:
                log.info("simulator: end of simulated run after %d events", self._n)
                raise StopIteration()
            self._awake = datetime.now(timezone.utc) + timedelta(seconds=0.05)
            return []
        self._awake = None
        return [RawBatch(name, records, time.time())]

    def next_awake(self) -> Optional[datetime]:
        return self._awake

    def snapshot(self) -> int:
        return self._n


class SimulatorSource(FixedPartitionedSource[RawBatch, int]):
    def __init__(self, cfg: SimulatorConfig) -> None:
        self.cfg = cfg

    def list_parts(self) -> List[str]:
        return ["simulator"]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _SimPartition:
        return _SimPartition(self.cfg, resume_state)
