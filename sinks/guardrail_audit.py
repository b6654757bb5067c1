"""Every guardrail breach, one JSON line each, for audit (``policies.guardrail_audit``).

The security events of the flow (SPEC section 1, ``event_type: security``)
are appended as they are parsed, none paged on its own::

    {"event_time": "...", "recorded_at": "...", "subject": <the source>, "kind": "prompt_injection",
     "service": ..., "model": ..., "severity": ..., "event_id": ...}

The record passes through the flow's masker like an alert: the source is
kept as it is without a pseudonym key and is its pseudonym with one; the
file is created 0640 like the alert files. With recovery, a replay after a
crash may append a record again (``event_id`` tells them apart).
"""

from __future__ import annotations

import time
from typing import Any, List

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from sentinel.core.times import iso as _iso
from sinks.files import SharedFile


def audit_record(ev: Any, now: float) -> dict:
    return {"event_time": _iso(ev.ts), "recorded_at": _iso(now), "subject": ev.source, "kind": ev.kind,
            "service": ev.service, "model": ev.model, "severity": ev.severity, "event_id": ev.event_id}


class _AuditPartition(StatelessSinkPartition[List[Any]]):
    def __init__(self, path: str, masker: Any) -> None:
        self._f = SharedFile(path)
        self._masker = masker

    def write_batch(self, items: List[List[Any]]) -> None:
        now = time.time()
        records = [audit_record(ev, now) for events in items for ev in events]
        if not records:
            return
        if self._masker is not None:
            records = [self._masker.alert(r) for r in records]
        self._f.write_lines([orjson.dumps(r) for r in records])

    def close(self) -> None:
        self._f.close()


class GuardrailAuditSink(DynamicSink[List[Any]]):
    """Appends each batch of security events to ``path`` (JSON lines)."""

    def __init__(self, path: str, masker: Any = None) -> None:
        self.path = path
        self.masker = masker

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _AuditPartition:
        return _AuditPartition(self.path, self.masker)
