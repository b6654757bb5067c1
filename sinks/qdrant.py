"""Qdrant incident index: every alert as a point, for "similar past incidents".

``location`` picks the client: ``":memory:"`` (embedded, per process), a
filesystem path (embedded, persisted; one process at a time may open a path)
or an ``http(s)://`` URL of a Qdrant server. The collection is created when
missing, with a small fixed-size cosine vector computed deterministically from
the alert (:func:`alert_vector`), so no embedding model is needed.

The point id is ``uuid5(alert_id)``: writing an alert twice (redelivery) is an
idempotent upsert. The payload is the public alert (no ``_`` internals).
:func:`find_similar` returns the nearest earlier incidents already indexed,
the material for an alert's ``similar_incidents``; :class:`IncidentMemory`
looks them up for the flow (sinks/similar.py).

Every writer and reader of one location in a process uses one client
(:func:`shared_client`): an embedded ``":memory:"`` store exists only inside
its client, and an embedded path can be opened by one client at a time.
Bytewax workers are threads of one process, so calls on an embedded client
are serialised by a lock; a server client needs none.

``qdrant_client`` is imported lazily, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import uuid
from datetime import datetime
from typing import Any, Dict, List, Optional

import orjson

from sentinel.core.times import parse_iso
from sentinel.core.types import Severity
from sentinel.metrics import get_metrics
from sinks.base import Alert, Writer, encode_alert

log = logging.getLogger(__name__)

ALERT_TYPES = (
    "latency",
    "ttft",
    "tokens",
    "cost",
    "error_rate",
    "traffic",
    "drift",
    "token_abuse",
    "coordinated_attack",
    "policy_violation",
    "multivariate",
)
VECTOR_SIZE = 16

# Fixed namespace so point ids are the same in every process and run.
_ID_NAMESPACE = uuid.UUID("6f1d2a52-3c9e-5b7a-9e57-5e6e71a1e0c1")

_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 10.0

SIMILAR_LIMIT = 3
SIMILAR_MIN_SCORE = 0.9
"""Least cosine similarity for an incident to count as similar.

The type one-hot of :func:`alert_vector` has norm 1 and the other features
at most ``sqrt(3.26)``, so two alerts of different types score at most
``3.26 / 4.26 = 0.77`` (a latency rise against a ttft or cost rise of the same
size about 0.64, against a traffic drop about 0.46). A latency rise against
a latency drop scores about 0.82. Above 0.9 are alerts of the same type, in
the same direction, of comparable size, score and severity (a x5 latency
rise, high, against a x2 rise, medium, or a x10 rise, critical: 0.99; against
a x3 rise, low: 0.96; against a x1.5 rise, info, score 0.6: 0.87).
"""
# Lookups fetch this many points per incident asked for: the messages of one
# earlier incident (page, escalations, updates, repeats) are one entry.
_FETCH_PER_INCIDENT = 8
_SIMILAR_FIELDS = ["alert_id", "fingerprint", "type", "service", "model", "event_time", "summary"]


class QdrantDeliveryError(RuntimeError):
    """Alerts could not be indexed in Qdrant within ``max_retry_s``."""


def point_id(alert_id: Any) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, str(alert_id)))


def _num(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def alert_vector(alert: Alert) -> List[float]:
    """The 16-dim feature vector of an alert (deterministic, never all zero).

    ``[0:11]`` one-hot of ``type`` (SPEC order); ``[11]`` signed log1p of the
    observed/expected ratio, scaled to about [-1, 1]; ``[12]`` detector score;
    ``[13]`` severity rank / 4; ``[14]`` direction of the deviation
    (+0.5 above the baseline, -0.5 below); ``[15]`` a constant bias.
    """
    vec = [0.0] * VECTOR_SIZE
    try:
        vec[ALERT_TYPES.index(alert.type)] = 1.0
    except ValueError:
        pass
    observed, expected = _num(alert.observed), _num(alert.expected)
    if observed is not None and expected is not None:
        ratio = observed / max(abs(expected), 1e-9)
        magnitude = math.log1p(abs(ratio))
        vec[11] = math.copysign(min(magnitude, 10.0) / 10.0, ratio) if ratio else 0.0
        if observed != expected:
            vec[14] = 0.5 if observed > expected else -0.5
    score = _num(alert.score)
    if score is not None:
        vec[12] = max(0.0, min(1.0, score))
    vec[13] = Severity.rank_of(alert.severity) / 4.0
    vec[15] = 0.1
    return vec


def is_server(location: str) -> bool:
    return location.startswith(("http://", "https://"))


_api_keys: Dict[str, str] = {}


def set_api_key(location: str, api_key: Optional[str]) -> None:
    """The API key the process's client for a server ``location`` sends (read from the environment or a file)."""
    if api_key:
        _api_keys[_registry_key(location)] = api_key
    else:
        _api_keys.pop(_registry_key(location), None)


def _client_for(location: str) -> Any:
    from qdrant_client import QdrantClient

    if location == ":memory:":
        return QdrantClient(location=":memory:")
    if is_server(location):
        return QdrantClient(url=location, api_key=_api_keys.get(_registry_key(location)))
    return QdrantClient(path=location)


def _registry_key(location: str) -> str:
    if location == ":memory:" or is_server(location):
        return location.rstrip("/")
    return os.path.realpath(location)


class _Entry:
    __slots__ = ("client", "lock", "refs")

    def __init__(self, client: Any, lock: Any) -> None:
        self.client = client
        self.lock = lock
        self.refs = 0


_registry: Dict[str, _Entry] = {}
_registry_lock = threading.Lock()


class SharedClient:
    """A handle on the process's client for a location; :meth:`close` it when done.

    Hold ``lock`` around every call on ``client`` (a no-op for a server).
    """

    __slots__ = ("location", "client", "lock", "_key", "_entry")

    def __init__(self, location: str, key: str, entry: _Entry) -> None:
        self.location = location
        self.client = entry.client
        self.lock = entry.lock
        self._key = key
        self._entry: Optional[_Entry] = entry

    def close(self) -> None:
        """Release the handle (again: no-op); the last one closes the client."""
        with _registry_lock:
            entry, self._entry = self._entry, None
            if entry is None:
                return
            entry.refs -= 1
            if entry.refs > 0:
                return
            if _registry.get(self._key) is entry:
                del _registry[self._key]
            # Closed under the registry lock: a path is free again before anyone can reopen it.
            try:
                entry.client.close()
            except Exception:  # pragma: no cover - best effort
                pass


def shared_client(location: str) -> SharedClient:
    """The process's Qdrant client for ``location``, opened on first use, reference counted."""
    key = _registry_key(location)
    with _registry_lock:
        entry = _registry.get(key)
        if entry is None:
            lock = contextlib.nullcontext() if is_server(location) else threading.RLock()
            entry = _registry[key] = _Entry(_client_for(location), lock)
        entry.refs += 1
        return SharedClient(location, key, entry)


def _event_time(value: Any) -> Optional[datetime]:
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None


def find_similar(client: Any, collection: str, alert: Alert, limit: int = SIMILAR_LIMIT,
                 min_score: float = SIMILAR_MIN_SCORE) -> List[Dict[str, Any]]:
    """The ``limit`` indexed incidents nearest to ``alert`` that began before it, best first.

    Not listed: the alert itself and the other messages of its incident
    (page, escalations, updates: they share its ``event_time``), resolve
    messages, and points whose cosine similarity is below ``min_score``.
    Earlier episodes of the same key and type are listed: a recurrence is the
    most telling similar incident. Without an ``event_time`` the alert's whole
    fingerprint is left out instead. An incident appears once, as its closest message.
    Each entry is ``{alert_id, fingerprint, type, service, model, score,
    event_time, summary}``, ``score`` the cosine similarity (6 digits).
    The caller holds the client's lock.
    """
    if limit <= 0:
        return []
    from qdrant_client import models

    must: List[Any] = []
    must_not: List[Any] = [models.FieldCondition(key="status", match=models.MatchValue(value="resolved"))]
    if alert.alert_id is not None:
        must_not.append(models.HasIdCondition(has_id=[point_id(alert.alert_id)]))
    began = _event_time(alert.event_time)
    if began is not None:
        # Every message of one incident carries its start: only earlier incidents,
        # earlier episodes of the same key and type included (recurrences).
        must.append(models.FieldCondition(key="event_time", range=models.DatetimeRange(lt=began)))
    else:
        fp = alert.fingerprint
        if isinstance(fp, str):  # no start to compare: at least not its own messages
            must_not.append(models.FieldCondition(key="fingerprint", match=models.MatchValue(value=fp)))
    result = client.query_points(
        collection,
        query=alert_vector(alert),
        query_filter=models.Filter(must=must or None, must_not=must_not),
        limit=limit * _FETCH_PER_INCIDENT,
        score_threshold=min_score if min_score > 0 else None,
        with_payload=_SIMILAR_FIELDS,
    )
    out: List[Dict[str, Any]] = []
    seen = set()
    for p in result.points:
        payload = p.payload or {}
        incident = (payload.get("fingerprint"), payload.get("event_time"))
        if incident in seen:
            continue
        seen.add(incident)
        out.append(
            {
                "alert_id": payload.get("alert_id"),
                "fingerprint": payload.get("fingerprint"),
                "type": payload.get("type"),
                "service": payload.get("service"),
                "model": payload.get("model"),
                "score": round(float(p.score), 6),
                "event_time": payload.get("event_time"),
                "summary": payload.get("summary"),
            }
        )
        if len(out) == limit:
            break
    return out


class IncidentMemory:
    """Reads an incident memory: the similar earlier incidents of an alert.

    Holds no client between lookups: each borrows the process's client for
    ``location`` (:func:`shared_client`), the one the Qdrant writers of the
    flow hold open while it runs, so the lookup sees what they indexed.
    """

    def __init__(self, location: str = ":memory:", collection: str = "sentinel_incidents",
                 limit: int = SIMILAR_LIMIT, min_score: float = SIMILAR_MIN_SCORE) -> None:
        self.location = location
        self.collection = collection
        self.limit = limit
        self.min_score = min_score

    def similar(self, alert: Alert) -> List[Dict[str, Any]]:
        """See :func:`find_similar`; raises on a failed query, ``[]`` while nothing was indexed."""
        if self.limit <= 0:
            return []
        handle = shared_client(self.location)
        try:
            with handle.lock:
                try:
                    return find_similar(handle.client, self.collection, alert, self.limit, self.min_score)
                except Exception:
                    if _collection_missing(handle.client, self.collection):
                        return []
                    raise
        finally:
            handle.close()


def _collection_missing(client: Any, collection: str) -> bool:
    try:
        return not client.collection_exists(collection)
    except Exception:
        return False


class QdrantWriter(Writer):
    kind = "qdrant"

    def __init__(
        self,
        location: str = ":memory:",
        collection: str = "sentinel_incidents",
        max_retry_s: Optional[float] = None,
    ) -> None:
        from qdrant_client import models

        self._models = models
        self.location = location
        self.collection = collection
        self.max_retry_s = max_retry_s
        self._errors = get_metrics().sink_errors.labels(sink=self.kind)
        self._shared = shared_client(location)
        self._client = self._shared.client
        self._lock = self._shared.lock
        try:
            with self._lock:
                self._ensure_collection()
        except BaseException:
            self._shared.close()
            raise

    def _ensure_collection(self) -> None:
        models = self._models
        if not self._client.collection_exists(self.collection):
            try:
                self._client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(size=VECTOR_SIZE, distance=models.Distance.COSINE),
                )
                log.info("qdrant: created collection %r at %s", self.collection, self.location)
            except Exception:
                if not self._client.collection_exists(self.collection):  # not a lost race with another worker
                    raise
        info = self._client.get_collection(self.collection)
        vectors = info.config.params.vectors
        size = getattr(vectors, "size", None)
        if size != VECTOR_SIZE:
            raise ValueError(
                "qdrant: collection %r at %s has vectors %r, expected one unnamed vector of size %d; "
                "use another collection name" % (self.collection, self.location, vectors, VECTOR_SIZE)
            )

    def write(self, alerts: List[Alert], payloads: List[bytes]) -> None:
        if not alerts:
            return
        models = self._models
        points = [
            models.PointStruct(
                id=point_id(alert.alert_id),
                vector=alert_vector(alert),
                payload=orjson.loads(encode_alert(alert)),
            )
            for alert in map(Alert.of, alerts)
        ]
        backoff = _BACKOFF_START_S
        start = time.monotonic()
        while True:
            try:
                with self._lock:
                    self._client.upsert(self.collection, points=points, wait=True)
                return
            except Exception as exc:  # server mode: connection errors, 5xx, timeouts
                self._errors.inc()
                elapsed = time.monotonic() - start
                if self.max_retry_s is not None and elapsed >= self.max_retry_s:
                    raise QdrantDeliveryError(
                        "qdrant: gave up after %.1fs (max_retry_s=%s): %d alerts not indexed in %r at %s; "
                        "last error: %s" % (elapsed, self.max_retry_s, len(points), self.collection, self.location, exc)
                    ) from exc
                log.warning(
                    "qdrant: upsert of %d alerts to %s failed (%s); retrying in %.1fs",
                    len(points), self.location, exc, backoff,
                )
                if self.max_retry_s is not None:
                    time.sleep(min(backoff, max(0.0, self.max_retry_s - elapsed)))
                else:
                    time.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def similar(self, alert: Alert, limit: int = SIMILAR_LIMIT,
                min_score: float = SIMILAR_MIN_SCORE) -> List[Dict[str, Any]]:
        """The ``limit`` indexed incidents nearest to ``alert`` (see :func:`find_similar`)."""
        with self._lock:
            return find_similar(self._client, self.collection, alert, limit, min_score)

    def close(self) -> None:
        self._shared.close()
