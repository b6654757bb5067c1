"""Typed records that travel through the dataflow.

These are the hot-path types: plain ``__slots__`` classes, built once at the
edge by :mod:`sentinel.parse` (JSON) or :mod:`sentinel.otlp` (OpenTelemetry
spans) and never validated again inside the flow.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

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


# The columns of :class:`Requests`, in :class:`LLMEvent`'s order.
REQUEST_FIELDS = LLMEvent.__slots__


class _Columns:
    """Requests as columns, one tuple per name in ``__slots__`` (the first is ``ts``)."""

    __slots__ = ()

    def columns(self) -> tuple:
        return tuple(getattr(self, k) for k in self.__slots__)

    def __len__(self) -> int:
        return len(self.ts)

    def __add__(self, other):
        return self.__class__(tuple(a + b for a, b in zip(self.columns(), other.columns())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, self.__class__) and self.columns() == other.columns()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({len(self)} requests)"


class Requests(_Columns):
    """One key's requests of one source batch, as columns in arrival order.

    What the parse step hands to the window steps instead of a list of
    :class:`LLMEvent`: one tuple per field (``ts``, ``service``, ..., the
    fields of :data:`REQUEST_FIELDS`), so a window folds a batch with a few
    list operations and a group pickles as a handful of tuples (a text
    column as one string). ``len()`` is
    the number of requests; iterating builds the :class:`LLMEvent` of each
    (for the steps that want whole events: forecasts, budgets).
    """

    __slots__ = REQUEST_FIELDS

    def __init__(self, columns) -> None:
        (self.ts, self.service, self.model, self.provider, self.operation, self.latency_ms, self.ttft_ms,
         self.input_tokens, self.output_tokens, self.cost_usd, self.is_error, self.error_type, self.user_id,
         self.tenant_id, self.source_ip, self.event_id, self.region) = columns

    @classmethod
    def of_events(cls, events) -> "Requests":
        """The columns of some :class:`LLMEvent` (or anything with their attributes)."""
        if not events:
            return cls(((),) * len(REQUEST_FIELDS))
        return cls(tuple(tuple(getattr(ev, k) for ev in events) for k in REQUEST_FIELDS))

    def __iter__(self):
        for row in zip(*self.columns()):
            yield LLMEvent(*row)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Requests(tuple(c[i] for c in self.columns()))
        return LLMEvent(*(c[i] for c in self.columns()))

    def __reduce__(self):
        # What crosses between workers: a text column pickles as one string, not a string per request.
        return (_unpacked, (tuple(map(_packed, self.columns())),))

    def __setstate__(self, state) -> None:
        # Pickles from before __reduce__ (their state is the columns).
        self.__init__(state)


class ActorRequests(_Columns):
    """One service's requests of one source batch, as the token-abuse step reads them: four columns.

    ``ts``, ``actor`` (:attr:`LLMEvent.actor`: ``user:<id>``, else ``tenant:<id>``, else None),
    ``tokens`` (input + output, a missing count as 0) and ``model``. The parse step builds them
    where it parses the batch, so what crosses to the step's worker is these four columns, not
    the seventeen of :class:`Requests`.

    >>> a = ActorRequests.of_requests(Requests.of_events([
    ...     LLMEvent(60.0, "chat", "m1", input_tokens=10, output_tokens=5, user_id="u1"),
    ...     LLMEvent(61.0, "chat", "m1", input_tokens=None, output_tokens=7, tenant_id="t1"),
    ...     LLMEvent(62.0, "chat", "m2")]))
    >>> a.actor, a.tokens, len(a + a)
    (('user:u1', 'tenant:t1', None), (15, 7, 0), 6)
    >>> import pickle; pickle.loads(pickle.dumps(a)) == a
    True
    """

    __slots__ = ("ts", "actor", "tokens", "model")

    def __init__(self, columns) -> None:
        self.ts, self.actor, self.tokens, self.model = columns

    @classmethod
    def of_requests(cls, reqs: "Requests") -> "ActorRequests":
        # LLMEvent.actor and its tokens, a column at a time.
        actor = tuple([("user:" + u) if u else ("tenant:" + t) if t else None
                       for u, t in zip(reqs.user_id, reqs.tenant_id)])
        tokens = tuple([(i or 0) + (o or 0) for i, o in zip(reqs.input_tokens, reqs.output_tokens)])
        return cls((reqs.ts, actor, tokens, reqs.model))

    def __reduce__(self):
        return (_unpacked_actors, (tuple(map(_packed, self.columns())),))


# Text columns cross between workers joined on this character (a column whose values hold it goes as it is).
_JOIN = "\x00"


def _packed(col: tuple) -> Tuple[int, Any]:
    """A column as it pickles: ``(1, (value, n))`` for a text column of one value, ``(2, joined)`` for
    one of text only, else ``(0, col)``."""
    if not col or col[0].__class__ is not str:
        return (0, col)
    n = len(col)
    if col[-1] == col[0] and col.count(col[0]) == n:
        return (1, (col[0], n))
    try:
        joined = _JOIN.join(col)
    except TypeError:  # a None among the values
        return (0, col)
    if joined.count(_JOIN) != n - 1:
        return (0, col)
    return (2, joined)


def _columns_of(packed: tuple) -> List[tuple]:
    cols = []
    for kind, data in packed:
        if kind == 0:
            cols.append(data)
        elif kind == 1:
            cols.append((data[0],) * data[1])
        else:
            cols.append(tuple(data.split(_JOIN)))
    return cols


def _unpacked(packed: tuple) -> Requests:
    return Requests(_columns_of(packed))


def _unpacked_actors(packed: tuple) -> ActorRequests:
    return ActorRequests(_columns_of(packed))


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


class RawRecords:
    """A source batch's records as columns: the payloads, and where they were read.

    Record ``i`` is ``values[i]``, read at ``(source, part, offsets[i])``;
    ``sizes`` maps the index of a record cut to its head to its original
    size. Indexing and iterating give :class:`RawRecord`, as a list of them
    would; the parse step reads ``values`` directly.
    """

    __slots__ = ("source", "part", "values", "offsets", "encoding", "sizes")

    def __init__(self, source: str, part: int, values: List[bytes], offsets: List[int], encoding: str = "json",
                 sizes: Optional[Dict[int, int]] = None) -> None:
        self.source = source
        self.part = part
        self.values = values
        self.offsets = offsets
        self.encoding = encoding
        self.sizes = sizes

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> RawRecord:
        sizes = self.sizes
        return RawRecord(self.values[i], (self.source, self.part, self.offsets[i]), self.encoding,
                         sizes.get(i, 0) if sizes else 0)

    def __iter__(self):
        for i in range(len(self.values)):
            yield self[i]

    def __getstate__(self):
        return (self.source, self.part, self.values, self.offsets, self.encoding, self.sizes)

    def __setstate__(self, s) -> None:
        self.source, self.part, self.values, self.offsets, self.encoding, self.sizes = s


class RawBatch:
    """What a source partition hands to the flow in one step.

    ``records`` is a list of :class:`RawRecord` or, from the sources, one
    :class:`RawRecords`; None in a :meth:`quiet` marker. ``partition`` names the source partition
    (for per-partition event-time progress) and ``partitions`` says how many the source has in all;
    ``ingested_at`` is the wall-clock time it was read (for the
    detection-latency metric only, never for detection).
    """

    __slots__ = ("partition", "records", "ingested_at", "partitions")

    def __init__(self, partition: str, records: "Union[List[RawRecord], RawRecords]", ingested_at: float,
                 partitions: int = 1) -> None:
        self.partition = partition
        self.records = records
        self.ingested_at = ingested_at
        self.partitions = partitions

    @classmethod
    def quiet(cls, partition: str, ingested_at: float, partitions: int = 1) -> "RawBatch":
        """The marker a source partition sends once it has read all there is (caught up, or at its end):
        no records. The keys it fed stop holding their windows for it (operators/windowing.py)."""
        return cls(partition, None, ingested_at, partitions)
