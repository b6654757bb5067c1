"""The last line of defence of a stateful step: a batch that raises is a dead letter, not a crash.

:func:`guarded` wraps a step's logic builder. When ``on_item`` raises, the
group it was handed is turned into one dead letter (reason ``step_error``,
the step, the key and the exception in ``detail``, the events as JSON lines
in ``raw``), counted in ``sentinel_step_errors_total{step}`` and logged (at
most once a minute per step), and the key keeps its state and goes on. An
exception in ``on_notify`` or ``on_eof`` is counted and logged the same way.
Without it one poisoned batch would stop the flow, and with recovery on stop
it again on every restart (the batch is replayed from the snapshot's offset).

The step's output then mixes alerts and :class:`StepFailure` items;
:func:`is_failure` tells them apart for the flow to route the failures to the
dead-letter sink.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import orjson
from bytewax.operators import StatefulLogic

from sentinel.events import DeadLetter, Requests
from sentinel.metrics import get_metrics

log = logging.getLogger("sentinel.guard")

_last_log: Dict[str, float] = {}


class StepFailure:
    """A dead letter made by a step that raised; travels in the step's output stream."""

    __slots__ = ("dead_letter",)

    def __init__(self, dead_letter: DeadLetter) -> None:
        self.dead_letter = dead_letter


def is_failure(x: Any) -> bool:
    return x.__class__ is StepFailure


def _raw(value: Any) -> bytes:
    """The events of a group as JSON lines (what a replay of the dead letter needs)."""
    events = value[2] if isinstance(value, tuple) and len(value) > 2 and isinstance(value[2], (list, Requests)) \
        else None
    if events is not None:
        lines = []
        for ev in events:
            to_dict = getattr(ev, "to_dict", None)
            lines.append(orjson.dumps(to_dict() if to_dict is not None else ev, default=str))
        return b"\n".join(lines)
    return orjson.dumps(value, default=str)


class _Guarded(StatefulLogic):
    def __init__(self, step: str, inner: StatefulLogic, on_failure: Optional[Callable[[Any], None]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.step = step
        self.inner = inner
        self.on_failure = on_failure
        self.clock = clock  # the wall clock (monotonic seconds) of the once-a-minute error log
        self.key: Optional[str] = None
        if getattr(inner, "end_batch", None) is not None:  # operators/stateful.py calls it after each batch
            self.end_batch = self._end_batch

    def _failed(self, where: str, ex: BaseException) -> None:
        get_metrics().step_errors.labels(step=self.step).inc()
        now = self.clock()
        if now - _last_log.get(self.step, -1e18) >= 60.0:
            _last_log[self.step] = now
            log.error("%s: %s raised %s: %s (key %r); dead-lettered, the flow goes on",
                      self.step, where, type(ex).__name__, ex, self.key, exc_info=ex)

    def on_item(self, value: Any) -> Tuple[Iterable[Any], bool]:
        if isinstance(value, tuple) and value and isinstance(value[0], str):
            self.key = value[0]
        try:
            out, discard = self.inner.on_item(value)
            return list(out), discard
        except Exception as ex:
            self._failed("on_item", ex)
            if self.on_failure is not None:
                self.on_failure(value)
            detail = f"step {self.step}: {type(ex).__name__}: {str(ex)[:200]} (key {str(self.key)[:300]!r})"
            part = value[1] if isinstance(value, tuple) and len(value) > 1 and isinstance(value[1], str) else ""
            dl = DeadLetter("step_error", detail, (part or self.step, 0, -1), _raw(value))
            get_metrics().dead_letters.labels(reason="step_error").inc()
            return [StepFailure(dl)], StatefulLogic.RETAIN

    def _timed(self, where: str) -> Tuple[Iterable[Any], bool]:
        """``on_notify`` / ``on_eof`` of the inner logic: a failure is counted and logged, nothing is lost."""
        try:
            out, discard = getattr(self.inner, where)()
            return list(out), discard
        except Exception as ex:
            self._failed(where, ex)
            return [], StatefulLogic.RETAIN

    def on_notify(self) -> Tuple[Iterable[Any], bool]:
        return self._timed("on_notify")

    def on_eof(self) -> Tuple[Iterable[Any], bool]:
        return self._timed("on_eof")

    def _end_batch(self) -> Tuple[Iterable[Any], bool]:
        return self._timed("end_batch")

    def notify_at(self):
        return self.inner.notify_at()

    def snapshot(self) -> Any:
        return self.inner.snapshot()


def guarded(step: str, builder: Callable[[Any], StatefulLogic],
            on_failure: Optional[Callable[[Any], None]] = None,
            clock: Callable[[], float] = time.monotonic) -> Callable[[Any], StatefulLogic]:
    """``builder`` with its logic's failures dead-lettered (``on_failure(value)`` is called with the lost item)."""

    def build(resume: Any) -> StatefulLogic:
        try:
            inner = builder(resume)
        except Exception as ex:
            if resume is None:
                raise
            # A snapshot this version cannot take up: the key starts afresh rather than the flow stopping.
            get_metrics().step_errors.labels(step=step).inc()
            log.error("%s: cannot resume a key from its snapshot (%s: %s); it starts afresh",
                      step, type(ex).__name__, ex)
            inner = builder(None)
        return _Guarded(step, inner, on_failure, clock)

    return build


def outcome_dead_letters(value: Any) -> None:
    """For the step that decides an event's outcome: the lost group's events end as ``dead_letter``."""
    if isinstance(value, tuple) and len(value) > 2 and isinstance(value[2], (list, Requests)):
        get_metrics().events.labels(outcome="dead_letter").inc(len(value[2]))


__all__: List[str] = ["StepFailure", "guarded", "is_failure", "outcome_dead_letters"]
