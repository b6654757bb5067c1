"""The state of a stateful operator, kept where recovery stores already hold it.

Each stateful step of the flow is an ``@operator`` function (``parse``,
``model_windows``, ``actor_windows``, ``attack_counter``, ``forecast``,
``budgets``, ``incidents``), written as Bytewax writes its own. Bytewax keeps a
key's snapshot under the id of the core ``stateful_batch`` step that holds it:
``op.stateful("model_windows", ...)`` stores its keys under
``<flow>.model_windows.stateful_batch``. Calling ``op.stateful`` inside an
operator would add a level (``<flow>.model_windows.<inner>.stateful_batch``),
and a recovery store written by an earlier version would resume no key.

:func:`stateful` does ``op.stateful``'s work in its caller's scope: inside the
operator ``model_windows`` the state is stored under
``<flow>.model_windows.stateful_batch``, the id it has always had.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Iterable, List, Optional, Tuple, TypeVar

import bytewax.operators as op
from bytewax.operators import KeyedStream, StatefulBatchLogic, StatefulLogic

V = TypeVar("V")
W = TypeVar("W")
S = TypeVar("S")

# The id, inside its operator, of the core step that holds a stateful operator's snapshots.
STATE_STEP = "stateful_batch"


class _PerItem(StatefulBatchLogic[V, W, S]):
    """A key's :class:`StatefulLogic` fed one item at a time, rebuilt after it discards (as ``op.stateful``)."""

    def __init__(self, logic: Optional[StatefulLogic[V, W, S]],
                 builder: Callable[[Optional[S]], StatefulLogic[V, W, S]]) -> None:
        self.logic = logic
        self.builder = builder

    def on_batch(self, values: List[V]) -> Tuple[Iterable[W], bool]:
        out: List[W] = []
        for v in values:
            if self.logic is None:
                self.logic = self.builder(None)
            items, discard = self.logic.on_item(v)
            out.extend(items)
            if discard:
                self.logic = None
        # A logic that gathers a batch (operators/incidents.py) speaks once it has seen all of it.
        end = getattr(self.logic, "end_batch", None)
        if end is not None:
            items, discard = end()
            out.extend(items)
            if discard:
                self.logic = None
        return out, self.logic is None

    def on_notify(self) -> Tuple[Iterable[W], bool]:
        return self.logic.on_notify()

    def on_eof(self) -> Tuple[Iterable[W], bool]:
        return self.logic.on_eof()

    def notify_at(self) -> Optional[datetime]:
        return self.logic.notify_at()

    def snapshot(self) -> S:
        return self.logic.snapshot()


def stateful(up: KeyedStream[V], builder: Callable[[Optional[S]], StatefulLogic[V, W, S]]) -> KeyedStream[W]:
    """``op.stateful`` without a step of its own: call it inside an ``@operator``, whose id its state takes."""
    return op.stateful_batch(STATE_STEP, up, lambda resume: _PerItem(builder(resume), builder))


def step_name(step_id: str) -> str:
    """An operator's own name from the fully qualified id its builder gets (``sentinel.model_windows``)."""
    return step_id.rsplit(".", 1)[-1]
