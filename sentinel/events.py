"""Typed records that travel through the dataflow.

These are the hot-path types: plain ``__slots__`` classes, built once at the
edge by :mod:`sentinel.parse` (JSON) or :mod:`sentinel.otlp` (OpenTelemetry
spans) and never validated again inside the flow.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

# Where a record came from: (source name or topic, partition, offset or line).
Position = Tuple[str, int, int]

KEY_SEP = "\x1f"


class LLMEvent:
    """One model call (SPEC section 1, ``event_type`` ``llm.request``)."""

    __slots__ = (
        "ts",
        "service",
        "model",
        "provider",
        "operation",
        "latency_ms",
        "ttft_ms",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "is_error",
        "error_type",
        "user_id",
        "tenant_id",
        "source_ip",
        "event_id",
        "region",
    )

    def __init__(
        self,
        ts: float,
        service: str,
        model: str,
        provider: Optional[str] = None,
        operation: Optional[str] = None,
        latency_ms: Optional[float] = None,
        ttft_ms: Optional[float] = None,
        input_tokens: Optional[int] = None,
        output_tokens: Optional[int] = None,
        cost_usd: Optional[float] = None,
        is_error: bool = False,
        error_type: Optional[str] = None,
        user_id: Optional[str] = None,
        tenant_id: Optional[str] = None,
        source_ip: Optional[str] = None,
        event_id: Optional[str] = None,
        region: Optional[str] = None,
    ) -> None:
        self.ts = ts
        self.service = service
        self.model = model
        self.provider = provider
        self.operation = operation
        self.latency_ms = latency_ms
        self.ttft_ms = ttft_ms
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cost_usd = cost_usd
        self.is_error = is_error
        self.error_type = error_type
        self.user_id = user_id
        self.tenant_id = tenant_id
        self.source_ip = source_ip
        self.event_id = event_id
        self.region = region

    @property
    def key(self) -> str:
        return self.service + KEY_SEP + self.model

    @property
    def actor(self) -> Optional[str]:
        """The actor whose token use is tracked for ``token_abuse``."""
        if self.user_id:
            return "user:" + self.user_id
        if self.tenant_id:
            return "tenant:" + self.tenant_id
        return None

    def to_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LLMEvent) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__
        )

    def __repr__(self) -> str:
        return f"LLMEvent(ts={self.ts!r}, service={self.service!r}, model={self.model!r})"

    def __getstate__(self):
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, state) -> None:
        for k, v in zip(self.__slots__, state):
            setattr(self, k, v)


class SecurityEvent:
    """A guardrail / security event (SPEC section 1, ``event_type`` ``security``)."""

    __slots__ = ("ts", "source", "kind", "service", "model", "severity", "event_id")

    def __init__(
        self,
        ts: float,
        source: str,
        kind: str,
        service: Optional[str] = None,
        model: Optional[str] = None,
        severity: Optional[str] = None,
        event_id: Optional[str] = None,
    ) -> None:
        self.ts = ts
        self.source = source
        self.kind = kind
        self.service = service
        self.model = model
        self.severity = severity
        self.event_id = event_id

    def to_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecurityEvent) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__
        )

    def __repr__(self) -> str:
        return f"SecurityEvent(ts={self.ts!r}, source={self.source!r}, kind={self.kind!r})"

    def __getstate__(self):
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, state) -> None:
        for k, v in zip(self.__slots__, state):
            setattr(self, k, v)


class DeadLetter:
    """A record that could not be turned into an event, and why."""

    __slots__ = ("reason", "detail", "position", "raw")

    def __init__(self, reason: str, detail: str, position: Position, raw: bytes) -> None:
        self.reason = reason
        self.detail = detail
        self.position = position
        self.raw = raw

    def __repr__(self) -> str:
        return f"DeadLetter(reason={self.reason!r}, detail={self.detail!r}, position={self.position!r})"


class RawRecord:
    """Bytes as read from a source, with where they were read from."""

    __slots__ = ("data", "position", "encoding", "size")

    def __init__(self, data: bytes, position: Position, encoding: str = "json", size: int = 0) -> None:
        self.data = data
        self.position = position
        self.encoding = encoding
        # Original size when ``data`` holds only the head of an oversized record.
        self.size = size or len(data)


class RawBatch:
    """What a source partition hands to the flow in one step.

    ``partition`` names the source partition (for per-partition event-time
    progress) and ``partitions`` says how many the source has in all;
    ``ingested_at`` is the wall-clock time it was read (for the
    detection-latency metric only, never for detection).
    """

    __slots__ = ("partition", "records", "ingested_at", "partitions")

    def __init__(self, partition: str, records: List[RawRecord], ingested_at: float, partitions: int = 1) -> None:
        self.partition = partition
        self.records = records
        self.ingested_at = ingested_at
        self.partitions = partitions
