"""An alert's ``similar_incidents``: the nearest earlier incidents in the Qdrant incident memory.

An ``op.map`` step between the incidents step and the alert sinks (see
flows/__init__.py); it lives with the sinks because it reads what the qdrant
sink wrote. What counts as similar is :func:`sinks.qdrant.find_similar`.
A failed lookup never stops the flow nor holds back the alert: it goes out
with ``similar_incidents: []``, the failure is counted in
``sentinel_sink_errors_total{sink="qdrant"}`` and logged at most once a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from sentinel.core.types import Alert
from sentinel.metrics import get_metrics
from sinks.qdrant import IncidentMemory

log = logging.getLogger(__name__)

WARN_EVERY_S = 60.0


class SimilarIncidents:
    """``op.map`` callable: the alert, copied, with ``similar_incidents`` filled from ``memory``."""

    def __init__(self, memory: IncidentMemory) -> None:
        self.memory = memory
        self._errors = get_metrics().sink_errors.labels(sink="qdrant")
        self._warn_lock = threading.Lock()
        self._last_warn = float("-inf")
        self._unreported = 0

    def __call__(self, alert: Alert) -> Alert:
        try:
            found = self.memory.similar(alert)
        except Exception as exc:  # a down server, a locked path, a broken collection
            self._failed(exc)
            found = []
        return alert.copy(similar_incidents=found)

    def _failed(self, exc: Exception) -> None:
        self._errors.inc()
        now = time.monotonic()
        with self._warn_lock:
            self._unreported += 1
            if now - self._last_warn < WARN_EVERY_S:
                return
            count, self._unreported, self._last_warn = self._unreported, 0, now
        m = self.memory
        log.warning(
            "qdrant: similar-incident lookup in %r at %s failed (%s: %s); %d alert(s) sent with "
            "similar_incidents: [] since the last warning (at most one warning a minute)",
            m.collection, m.location, type(exc).__name__, exc, count,
        )
