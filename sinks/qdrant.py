"""Qdrant incident index: every alert as a point, for "similar past incidents".

``location`` picks the client: ``":memory:"`` (embedded, per process), a
filesystem path (embedded, persisted; one process at a time may open a path)
or an ``http(s)://`` URL of a Qdrant server. The collection is created when
missing, with a small fixed-size cosine vector computed deterministically from
the alert (:func:`alert_vector`), so no embedding model is needed.

The point id is ``uuid5(alert_id)``: writing an alert twice (redelivery) is an
idempotent upsert. The payload is the public alert (no ``_`` internals).
:meth:`QdrantWriter.similar` returns the nearest other incidents already
indexed, the material for an alert's ``similar_incidents``.

``qdrant_client`` is imported lazily, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import Any, Dict, List, Optional

import orjson

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
SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
VECTOR_SIZE = 16

# Fixed namespace so point ids are the same in every process and run.
_ID_NAMESPACE = uuid.UUID("6f1d2a52-3c9e-5b7a-9e57-5e6e71a1e0c1")

_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 10.0


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
        vec[ALERT_TYPES.index(alert.get("type"))] = 1.0
    except ValueError:
        pass
    observed, expected = _num(alert.get("observed")), _num(alert.get("expected"))
    if observed is not None and expected is not None:
        ratio = observed / max(abs(expected), 1e-9)
        magnitude = math.log1p(abs(ratio))
        vec[11] = math.copysign(min(magnitude, 10.0) / 10.0, ratio) if ratio else 0.0
        if observed != expected:
            vec[14] = 0.5 if observed > expected else -0.5
    score = _num(alert.get("score"))
    if score is not None:
        vec[12] = max(0.0, min(1.0, score))
    vec[13] = SEVERITY_RANK.get(alert.get("severity"), 0) / 4.0
    vec[15] = 0.1
    return vec


def _client_for(location: str) -> Any:
    from qdrant_client import QdrantClient

    if location == ":memory:":
        return QdrantClient(location=":memory:")
    if location.startswith(("http://", "https://")):
        return QdrantClient(url=location)
    return QdrantClient(path=location)


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
        self._client = _client_for(location)
        self._ensure_collection()

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
                id=point_id(alert["alert_id"]),
                vector=alert_vector(alert),
                payload=orjson.loads(encode_alert(alert)),
            )
            for alert in alerts
        ]
        backoff = _BACKOFF_START_S
        start = time.monotonic()
        while True:
            try:
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

    def similar(self, alert: Alert, limit: int = 3) -> List[Dict[str, Any]]:
        """The ``limit`` indexed incidents nearest to ``alert`` (never the alert itself).

        Each as ``{alert_id, type, service, model, score, event_time}``, with
        ``score`` the cosine similarity, best first.
        """
        if limit <= 0:
            return []
        models = self._models
        query_filter = None
        if alert.get("alert_id") is not None:
            query_filter = models.Filter(must_not=[models.HasIdCondition(has_id=[point_id(alert["alert_id"])])])
        result = self._client.query_points(
            self.collection,
            query=alert_vector(alert),
            query_filter=query_filter,
            limit=limit,
            with_payload=["alert_id", "type", "service", "model", "event_time"],
        )
        out = []
        for p in result.points:
            payload = p.payload or {}
            out.append(
                {
                    "alert_id": payload.get("alert_id"),
                    "type": payload.get("type"),
                    "service": payload.get("service"),
                    "model": payload.get("model"),
                    "score": round(float(p.score), 6),
                    "event_time": payload.get("event_time"),
                }
            )
        return out

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # pragma: no cover - best effort
            pass
