"""Flow definitions (SPEC section 3): YAML, validated by pydantic.

Every error names the key that is wrong (``sinks[1].url: ...``). Unknown keys
are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import math
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(v: Any) -> float:
    """Seconds from a number or a string like ``90s``, ``5m``, ``1h``."""
    if isinstance(v, bool):
        raise ValueError("expected a duration like 60, '60s', '5m' or '1h'")
    if isinstance(v, (int, float)):
        secs = float(v)
    elif isinstance(v, str) and (m := _DURATION.match(v)):
        secs = float(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise ValueError(f"expected a duration like 60, '60s', '5m' or '1h', got {v!r}")
    if not math.isfinite(secs):
        raise ValueError(f"expected a finite duration, got {v!r}")
    if secs < 0:
        raise ValueError("duration must be >= 0")
    return secs


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNIT = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
              "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


def parse_size(v: Any) -> int:
    """Bytes from a number or a string like ``256MiB``, ``1GiB``, ``500MB``, ``64k``."""
    if isinstance(v, bool):
        raise ValueError("expected a size like 268435456, '256MiB' or '1GB'")
    if isinstance(v, (int, float)):
        if not math.isfinite(v):
            raise ValueError(f"expected a finite size, got {v!r}")
        return int(v)
    if isinstance(v, str) and (m := _SIZE.match(v)):
        unit = (m.group(2) or "").lower()
        if unit.endswith("b") and unit != "b":
            unit = unit[:-1]
        return int(float(m.group(1)) * _SIZE_UNIT[unit])
    raise ValueError(f"expected a size like 268435456, '256MiB' or '1GB', got {v!r}")



class _Model(BaseModel):
    # NaN and infinity are refused for every number (`.nan`, `.inf` in YAML).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _secret_ref(v: Any) -> Any:
    """A secret is named, never written: ``{env: NAME}`` or ``{file: PATH}`` (sentinel/tls.py)."""
    from sentinel.tls import ref_problem

    if v is not None and ref_problem(v):
        raise ValueError(ref_problem(v))
    return v


def _kafka_secrets(v: Dict[str, Any]) -> Dict[str, Any]:
    from sentinel.tls import kafka_config_problem

    why = kafka_config_problem(v)
    if why:
        raise ValueError(why)
    return v


SecretRef = Dict[str, str]  # {env: NAME} or {file: PATH}


class TLSConfig(_Model):
    """TLS of a client connection: the server verified against ``ca_file``, a client certificate for mTLS."""

    ca_file: Optional[str] = Field(default=None, min_length=1)     # default: the system's CAs
    cert_file: Optional[str] = Field(default=None, min_length=1)   # client certificate (PEM), with key_file
    key_file: Optional[str] = Field(default=None, min_length=1)
    key_password: Optional[SecretRef] = None                       # {env: NAME} or {file: PATH}
    verify: bool = True                                            # false: no server verification (test benches)
    server_hostname: Optional[str] = Field(default=None, min_length=1)  # name to verify, if not the URL's host

    _ref = field_validator("key_password", mode="before")(_secret_ref)

    @model_validator(mode="after")
    def _pairs(self) -> "TLSConfig":
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together (the client certificate and its key)")
        return self


class KafkaConnection(_Model):
    """The flow's Kafka connection, shared by every Kafka client (source, sinks, dead letters, control).

    A client's own ``brokers`` replace these; its own ``config`` is laid over
    this ``config`` key by key.
    """

    brokers: Optional[str] = Field(default=None, min_length=1)
    config: Dict[str, Any] = Field(default_factory=dict)  # librdkafka settings: security.protocol, sasl.*, ssl.*

    _secrets = field_validator("config")(_kafka_secrets)


class TopicSpec(_Model):
    name: str = Field(min_length=1)
    encoding: Literal["json", "otlp_json", "otlp_proto"] = "json"


class FileSource(_Model):
    kind: Literal["file"]
    path: str = Field(min_length=1)
    encoding: Literal["json", "otlp_json", "otlp_proto"] = "json"
    batch_size: int = Field(default=2000, ge=1)

    @model_validator(mode="after")
    def _proto_needs_lines(self) -> "FileSource":
        if self.encoding == "otlp_proto":
            raise ValueError("encoding: otlp_proto is only for Kafka sources (a file holds JSON lines)")
        return self


class KafkaSource(_Model):
    kind: Literal["kafka"]
    brokers: Optional[str] = Field(default=None, min_length=1)  # default: kafka.brokers
    topics: List[Union[str, TopicSpec]] = Field(min_length=1)
    group_id: Optional[str] = None
    start: Literal["earliest", "latest"] = "earliest"
    batch_size: int = Field(default=2000, ge=1)
    # End the run once every partition has been idle this long (a bounded
    # replay of a backlog); unset means run until stopped.
    eof_after_idle: Optional[float] = None
    config: Dict[str, Any] = Field(default_factory=dict)

    _secrets = field_validator("config")(_kafka_secrets)

    _dur = field_validator("eof_after_idle", mode="before")(lambda v: None if v is None else parse_duration(v))

    def topic_specs(self) -> List[TopicSpec]:
        out = []
        for t in self.topics:
            if isinstance(t, str):
                enc = "otlp_proto" if t == "otlp_spans" else "json"
                out.append(TopicSpec(name=t, encoding=enc))
            else:
                out.append(t)
        return out


class SimulatorSource(_Model):
    kind: Literal["simulator"]
    seed: int = 7
    hours: float = Field(default=24.0, gt=0)
    rate: float = Field(default=18.5, gt=0)
    start: Optional[str] = None
    # 0 replays as fast as possible; 60 plays one simulated minute per second.
    speed: float = Field(default=60.0, ge=0)
    batch_size: int = Field(default=500, ge=1)


Source = Annotated[Union[FileSource, KafkaSource, SimulatorSource], Field(discriminator="kind")]


# Every alert sink but qdrant: "cloudevents" wraps each alert in a CloudEvents
# 1.0 structured envelope (the alert is its `data`); "none" writes the bare alert.
Envelope = Literal["cloudevents", "none"]
SEVERITIES = ("info", "low", "medium", "high", "critical")
Severity = Literal["info", "low", "medium", "high", "critical"]


class JsonlSink(_Model):
    kind: Literal["jsonl"]
    path: str = Field(min_length=1)
    envelope: Envelope = "cloudevents"


class StdoutSink(_Model):
    kind: Literal["stdout"]
    envelope: Envelope = "cloudevents"


class _SpooledSink(_Model):
    """The spool settings of a sink that delivers from an on-disk spool (rabbitmq, kafka)."""

    # Alerts are appended to an on-disk spool and published from it, so an
    # outage of the broker never blocks detection. Every worker spools to
    # <spool_dir>/worker-<index>; the default is the sink's spool_base().
    spool_dir: Optional[str] = None
    # Bound of each worker's spool; when full, the flow waits (backpressure).
    spool_max_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024)
    # On shutdown, keep publishing the spool for at most this long; the rest
    # stays spooled and is delivered on the next start.
    drain_timeout: float = 10.0

    _dur = field_validator("drain_timeout", mode="before")(parse_duration)
    _size = field_validator("spool_max_bytes", mode="before")(parse_size)

    def spool_base(self) -> str:  # pragma: no cover - every sink names its default
        raise NotImplementedError


class RabbitMQSink(_SpooledSink):
    kind: Literal["rabbitmq"]
    url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    exchange: str = "sentinel.alerts"
    high_queue: str = "incidents.high-priority"
    low_queue: str = "incidents.low-priority"
    envelope: Envelope = "cloudevents"
    # Queue bindings {queue: [severities]}; unset: the SPEC ones, high_queue
    # <- high, critical and low_queue <- info, low, medium.
    routing: Optional[Dict[str, List[Severity]]] = None
    # The password of the url's user, read when connecting: {env: NAME} or {file: PATH}.
    password: Optional[SecretRef] = None
    # TLS (amqps:// urls): CA, client certificate for mTLS, verification.
    tls: Optional[TLSConfig] = None

    _ref = field_validator("password", mode="before")(_secret_ref)

    @model_validator(mode="after")
    def _password_and_tls(self) -> "RabbitMQSink":
        from urllib.parse import urlsplit

        u = urlsplit(self.url)
        if self.password is not None and u.password:
            raise ValueError("url: holds a password and password is set; keep the password out of the url")
        if self.tls is not None and u.scheme != "amqps":
            raise ValueError(f"tls: needs an amqps:// url, got {u.scheme}://")
        return self

    @model_validator(mode="after")
    def _routing_covers_every_severity(self) -> "RabbitMQSink":
        if self.routing is None:
            return self
        both = {"high_queue", "low_queue"} & self.model_fields_set
        if both:
            raise ValueError(f"routing: give either routing or {' and '.join(sorted(both))}, not both "
                             f"(routing lists every queue)")
        if not self.routing:
            raise ValueError("routing: needs at least one queue")
        for queue, sevs in self.routing.items():
            if not queue:
                raise ValueError("routing: a queue name is empty")
            if not sevs:
                raise ValueError(f"routing.{queue}: lists no severity")
        missing = [s for s in SEVERITIES if not any(s in sevs for sevs in self.routing.values())]
        if missing:
            raise ValueError(f"routing: no queue takes severity {', '.join(missing)}: such alerts would be "
                             f"unroutable (they are published mandatory and retried, blocking the ones after them)")
        return self

    def bindings(self) -> Dict[str, List[str]]:
        if self.routing is not None:
            return {q: list(dict.fromkeys(sevs)) for q, sevs in self.routing.items()}
        return {self.high_queue: ["high", "critical"], self.low_queue: ["info", "low", "medium"]}

    def spool_base(self) -> str:
        """Default ./sentinel-spool/<exchange>."""
        return self.spool_dir or os.path.join("sentinel-spool", self.exchange)


class KafkaSink(_SpooledSink):
    kind: Literal["kafka"]
    brokers: Optional[str] = Field(default=None, min_length=1)  # default: kafka.brokers, else the source's
    topic: str = "llm.anomalies"
    config: Dict[str, Any] = Field(default_factory=dict)
    envelope: Envelope = "cloudevents"

    _secrets = field_validator("config")(_kafka_secrets)

    def spool_base(self) -> str:
        """Default ./sentinel-spool/kafka-<topic>."""
        return self.spool_dir or os.path.join("sentinel-spool", "kafka-" + self.topic)


class QdrantSink(_Model):
    """Incident memory: every alert is indexed; alerts are given their ``similar_incidents`` from it.

    With several qdrant sinks, ``similar_incidents`` comes from the first one
    (its collection, ``similar_limit`` and ``similar_min_score``); the others
    only index.
    """

    kind: Literal["qdrant"]
    location: str = ":memory:"
    collection: str = "sentinel_incidents"
    # At most this many earlier incidents in an alert's similar_incidents; 0 does not look them up.
    similar_limit: int = Field(default=3, ge=0, le=100)
    # Least cosine similarity of a listed incident; 0.9 keeps the same type of
    # anomaly, same direction, comparable size (sinks.qdrant.SIMILAR_MIN_SCORE).
    similar_min_score: float = Field(default=0.9, ge=0, le=1)
    # API key of a Qdrant server (http(s):// location): {env: NAME} or {file: PATH}.
    api_key: Optional[SecretRef] = None

    _ref = field_validator("api_key", mode="before")(_secret_ref)

    @model_validator(mode="after")
    def _key_needs_server(self) -> "QdrantSink":
        if self.api_key is not None and not self.location.startswith(("http://", "https://")):
            raise ValueError("api_key: only for a Qdrant server (an http:// or https:// location)")
        return self


class IncidentStoreSink(_SpooledSink):
    """Incidents and their alerts in SQL (sentinel/store.py), read by ``sentinel api``."""

    kind: Literal["incident_store"]
    # A SQLite file path (the embedded default) or postgresql://user@host:5432/db.
    url: str = Field(default="sentinel-incidents.db", min_length=1)
    # The database password is read from this environment variable, never written here.
    password_env: Optional[str] = Field(default=None, min_length=1)
    # Prefix of every table name, so several stores can share one database.
    table_prefix: str = Field(default="", pattern=r"^[a-z][a-z0-9_]{0,30}$|^$")

    @field_validator("url")
    @classmethod
    def _no_password(cls, v: str) -> str:
        from sentinel.store import StoreError, store_url

        try:
            store_url(v)
        except StoreError as ex:
            raise ValueError(str(ex).removeprefix("url: ")) from None
        return v

    def spool_base(self) -> str:
        """Default ./sentinel-spool/incident-store."""
        return self.spool_dir or os.path.join("sentinel-spool", "incident-store" + (
            "-" + self.table_prefix if self.table_prefix else ""))


def _http_url(v: str) -> str:
    from urllib.parse import urlsplit

    u = urlsplit(v)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {v!r}")
    if u.username is not None or u.password is not None:
        raise ValueError("holds credentials; put secrets in the environment (e.g. hmac_key_env), not the URL")
    return v


class AlertmanagerSink(_SpooledSink):
    """Alerts to a Prometheus Alertmanager's v2 API (sinks/alertmanager.py)."""

    kind: Literal["alertmanager"]
    url: str = "http://127.0.0.1:9093"
    # A firing alert's endsAt is this far ahead; keep it above alerting.repeat_interval (the re-page).
    firing_ttl: float = Field(default=5 * 3600.0, gt=0)
    generator_url: Optional[str] = None  # a link shown in Alertmanager (e.g. the API's incident page)
    timeout: float = Field(default=10.0, gt=0)

    _u = field_validator("url")(lambda v: _http_url(v))
    _d = field_validator("firing_ttl", "timeout", mode="before")(parse_duration)

    def spool_base(self) -> str:
        """Default ./sentinel-spool/alertmanager-<host>-<port>."""
        from urllib.parse import urlsplit

        u = urlsplit(self.url)
        return self.spool_dir or os.path.join("sentinel-spool", f"alertmanager-{u.hostname}-{u.port or 0}")


class WebhookSink(_SpooledSink):
    """Each alert POSTed as JSON to a URL, optionally HMAC-signed (sinks/webhook.py)."""

    kind: Literal["webhook"]
    url: str
    envelope: Envelope = "cloudevents"
    # X-Sentinel-Signature: sha256=HMAC(body) with the key from this environment variable or file.
    hmac_key_env: Optional[str] = Field(default=None, min_length=1)
    hmac_key_file: Optional[str] = Field(default=None, min_length=1)
    headers: Dict[str, str] = Field(default_factory=dict)  # extra, non-secret headers
    timeout: float = Field(default=10.0, gt=0)

    _u = field_validator("url")(lambda v: _http_url(v))
    _d = field_validator("timeout", mode="before")(parse_duration)

    @model_validator(mode="after")
    def _one_key(self) -> "WebhookSink":
        if self.hmac_key_env and self.hmac_key_file:
            raise ValueError("give hmac_key_env or hmac_key_file, not both")
        for name in self.headers:
            if name.lower() in ("authorization", "cookie", "proxy-authorization", "x-sentinel-signature"):
                raise ValueError(f"headers: {name} may not be set here (secrets are not written in the YAML)")
        return self

    def spool_base(self) -> str:
        """Default ./sentinel-spool/webhook-<digest of the URL>."""
        import hashlib

        return self.spool_dir or os.path.join("sentinel-spool", "webhook-" + hashlib.sha256(
            self.url.encode()).hexdigest()[:12])


Sink = Annotated[
    Union[JsonlSink, StdoutSink, RabbitMQSink, KafkaSink, QdrantSink, IncidentStoreSink, AlertmanagerSink,
          WebhookSink],
    Field(discriminator="kind")
]


class JsonlDeadLetters(_Model):
    kind: Literal["jsonl"]
    path: str = Field(min_length=1)


class KafkaDeadLetters(_Model):
    kind: Literal["kafka"]
    brokers: Optional[str] = None  # defaults to kafka.brokers, else the Kafka source's brokers
    topic: str = "llm.telemetry.dlq"
    config: Dict[str, Any] = Field(default_factory=dict)  # laid over kafka.config

    _secrets = field_validator("config")(_kafka_secrets)


class StderrDeadLetters(_Model):
    kind: Literal["stderr"]


DeadLetters = Annotated[
    Union[JsonlDeadLetters, KafkaDeadLetters, StderrDeadLetters], Field(discriminator="kind")
]


class MetricsConfig(_Model):
    port: int = Field(default=9464, ge=0, le=65535)
    host: str = "127.0.0.1"
    # Distinct services named in the service label of sentinel_anomalies_total and
    # sentinel_incidents_open; later ones are counted as "other".
    max_service_labels: int = Field(default=50, ge=1, le=10_000)
    # Distinct models named in the model label of sentinel_anomalies_total (across
    # services); later ones are counted as "other".
    max_model_labels: int = Field(default=50, ge=1, le=10_000)


class WindowConfig(_Model):
    size: float = 60.0
    # How far behind a key's slowest active partition an event may be and
    # still land in its window.
    allowed_lateness: float = 10.0
    # A partition that sent nothing for a key for this long (wall clock) no
    # longer holds that key's windows open.
    idle_partition: float = 10.0
    # Upper bound on open windows per key (memory bound during a backlog).
    max_open_windows: int = Field(default=720, ge=1)

    _dur = field_validator("size", "allowed_lateness", "idle_partition", mode="before")(parse_duration)

    @field_validator("size")
    @classmethod
    def _size_positive(cls, v: float) -> float:
        if v < 1:
            raise ValueError("window size must be at least 1 second")
        return v


class TokenAbuseConfig(_Model):
    """Token abuse, judged per service (see detectors/actor_tokens.py)."""

    enabled: bool = True
    window: float = 60.0
    # An actor is judged on its tokens over the last `horizon` of event time
    # (abuse is a sustained rise), each time one of its busy windows closes.
    horizon: float = 600.0
    # That sum needs at least `min_tokens` tokens in at least `min_requests` requests ...
    min_tokens: int = Field(default=20000, ge=1)
    min_requests: int = Field(default=5, ge=1)
    # ... more requests than `ratio` times the actor's usual rate could give (a Poisson tail
    # below `p_value`) and `ratio` times its usual tokens (both lifted with the service's traffic) ...
    ratio: float = Field(default=4.0, gt=1)
    p_value: float = Field(default=1e-4, gt=0, lt=1)
    # ... and at least the `heavy_quantile` of the service's busy actor-horizons (`heavy_ratio`
    # times it for an actor first seen less than half an hour ago).
    heavy_quantile: float = Field(default=0.75, gt=0, lt=1)
    heavy_ratio: float = Field(default=5.0, ge=1)
    # Nobody is judged in a service's first `history_windows` windows, nor before it has seen
    # `min_population` busy actor-horizons.
    history_windows: int = Field(default=60, ge=1)
    min_population: int = Field(default=1000, ge=1)
    # Actors whose habits a service keeps (the least recently busy is forgotten first).
    max_actors: int = Field(default=20000, ge=1)
    # Accepted for flow files written for earlier versions; no longer used (every actor is
    # judged against its service's heavy users, young or not).
    new_actor_min_tokens: Optional[int] = Field(default=None, ge=1)
    # No window may carry more than this share of the horizon's tokens: one huge request is not abuse.
    max_share: float = Field(default=0.6, gt=0, le=1)
    # Busy windows in a row that are abusive before an alert.
    persistence: int = Field(default=2, ge=1)

    _dur = field_validator("window", "horizon", mode="before")(parse_duration)

    @model_validator(mode="after")
    def _horizon(self) -> "TokenAbuseConfig":
        if self.horizon < self.window:
            raise ValueError(f"horizon ({self.horizon:g}s) must be at least one window ({self.window:g}s)")
        return self


class AttackConfig(_Model):
    enabled: bool = True
    window: float = 300.0
    threshold: int = Field(default=10, ge=1)

    _dur = field_validator("window", mode="before")(parse_duration)


class ForecastConfig(_Model):
    """Predictive warnings (operators/forecast.py): a key's latency, error rate or cost per request
    trending towards its alert level warns (severity info) before it gets there."""

    enabled: bool = False
    # A warning speaks when the projected crossing of the alert level is at most this far ahead.
    horizon: float = 900.0
    # Closed windows the trend is fitted over (a least-squares slope and its standard error).
    windows: int = Field(default=20, ge=4, le=240)
    # The slope must be this many standard errors above zero.
    min_slope_z: float = Field(default=3.0, gt=0)

    _dur = field_validator("horizon", mode="before")(parse_duration)

    @field_validator("horizon")
    @classmethod
    def _horizon_positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("horizon must be positive")
        return v


class DetectionConfig(_Model):
    # "multivariate" (Half-Space Trees over a key's features) is off by default:
    # the scenario benchmark shows it adds no recall (benchmarks/RESULTS.md).
    metrics: List[Literal["latency", "ttft", "tokens", "cost", "error_rate", "traffic", "drift", "multivariate"]] = Field(
        default_factory=lambda: ["latency", "ttft", "tokens", "cost", "error_rate", "traffic", "drift"]
    )
    # Time-of-day profile for traffic (used once a key has a day of history), and each
    # metric's values at the same time on the days (traffic: and weeks) before, so a
    # pattern that comes back every day or week pages the first two times only.
    seasonality: bool = True
    # Windows after warm-up in which a key must deviate further to count.
    cold_windows: int = Field(default=60, ge=0)
    # A drift pages once its lasting change reaches this fraction of the level before it
    # (0.25: output tokens or cost up 25%); smaller lasting changes are the wander of busy services.
    drift_min_change: float = Field(default=0.25, gt=0, le=10)
    # A new key borrows its parents' noise levels (service, provider, fleet)
    # and may alert after 10 windows instead of warmup_windows.
    borrow_from_parents: bool = True
    warmup_windows: int = Field(default=30, ge=1)
    min_requests: int = Field(default=8, ge=1)
    threshold: float = Field(default=0.9, gt=0, lt=1)
    persistence: int = Field(default=2, ge=1)
    quiet_windows: int = Field(default=5, ge=1)
    token_abuse: TokenAbuseConfig = Field(default_factory=TokenAbuseConfig)
    coordinated_attack: AttackConfig = Field(default_factory=AttackConfig)
    forecast: ForecastConfig = Field(default_factory=ForecastConfig)


GROUP_FIELDS = ("service", "model", "type", "subject", "severity", "metric")


def require_utc_offset(v: Optional[datetime]) -> Optional[datetime]:
    """A field validator: a datetime must carry its UTC offset (None passes)."""
    if v is not None and v.tzinfo is None:
        raise ValueError("needs a UTC offset, e.g. 2026-01-05T10:00:00Z")
    return v


class Silence(_Model):
    """Alerts matching every given matcher, with event_time in [start, end), are not published."""

    matchers: Dict[Literal["service", "model", "type", "severity", "subject", "metric"], str] = Field(min_length=1)
    start: Optional[datetime] = None
    end: Optional[datetime] = None
    comment: str = ""
    created_by: str = ""

    _aware = field_validator("start", "end")(require_utc_offset)

    @model_validator(mode="after")
    def _order(self) -> "Silence":
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class AlertingConfig(_Model):
    group_by: List[Literal["service", "model", "type", "subject", "severity", "metric"]] = Field(
        default_factory=lambda: ["service"])
    group_wait: float = 0.0
    # An alert that fires within this (event time) of an open incident's latest member joins it.
    group_window: float = 600.0
    group_interval: float = 60.0
    repeat_interval: float = 4 * 3600.0
    # A group with no open incident, idle this long (wall clock), is dropped.
    idle_evict: float = 3600.0
    silences: List[Silence] = Field(default_factory=list)

    _dur = field_validator("group_wait", "group_window", "group_interval", "repeat_interval", "idle_evict",
                           mode="before")(
        parse_duration)


class ControlConfig(_Model):
    """Run-time silences and feedback from Kafka (see sentinel/control.py)."""

    brokers: Optional[str] = None  # defaults to kafka.brokers, else the Kafka source's brokers
    topic: Optional[str] = "sentinel.control"
    feedback_topic: Optional[str] = "llm.feedback"
    config: Dict[str, Any] = Field(default_factory=dict)  # laid over kafka.config
    _secrets = field_validator("config")(_kafka_secrets)
    # With a key, control and feedback messages must be signed (HMAC-SHA256, see README). The key
    # is read from this environment variable or file, never written in the flow definition.
    hmac_key_env: Optional[str] = Field(default=None, min_length=1)
    hmac_key_file: Optional[str] = Field(default=None, min_length=1)
    # A silence from the topic needs start and end, end - start at most this long.
    max_silence: float = 7 * 86400.0
    # Silences from the topic held at once (the flow definition's do not count); more are refused.
    max_silences: int = Field(default=1000, ge=1)
    # Feedback on alerts not seen yet, kept until they are; beyond this the oldest is dropped (counted).
    max_pending_feedback: int = Field(default=10_000, ge=1)

    _dur = field_validator("max_silence", mode="before")(parse_duration)

    @model_validator(mode="after")
    def _one_key(self) -> "ControlConfig":
        if self.hmac_key_env and self.hmac_key_file:
            raise ValueError("give hmac_key_env or hmac_key_file, not both")
        if self.max_silence <= 0:
            raise ValueError("max_silence must be > 0")
        return self


class PrivacyConfig(_Model):
    """Masking of personal data and secrets in what leaves the flow (sentinel/pii.py)."""

    enabled: bool = True
    emails: bool = True
    phones: bool = True
    cards: bool = True          # Luhn-checked
    ibans: bool = True          # mod-97-checked
    secrets: bool = True        # sk-..., Bearer ..., AKIA..., GitHub/Slack tokens, JWTs
    ips: bool = True
    # Stable keyed pseudonyms (HMAC-SHA256) for the actors alerts name; the key is read
    # from this environment variable or file, never written in the flow definition.
    pseudonym_key_env: Optional[str] = Field(default=None, min_length=1)
    pseudonym_key_file: Optional[str] = Field(default=None, min_length=1)
    # Dead letters: "masked" (detail and raw line masked, raw_base64 byte for byte) or "original" (as read).
    dead_letter_raw: Literal["masked", "original"] = "masked"

    @model_validator(mode="after")
    def _one_key(self) -> "PrivacyConfig":
        if self.pseudonym_key_env and self.pseudonym_key_file:
            raise ValueError("give pseudonym_key_env or pseudonym_key_file, not both")
        return self


class BudgetRule(_Model):
    """A token and/or cost budget of a service over a window of event time (operators/budgets.py)."""

    service: str = Field(min_length=1)       # a service, or "*" for each service on its own
    # Whose use is counted against the budget: the service's, or each tenant's or user's of it on its own.
    per: Literal["service", "tenant", "user"] = "service"
    max_actors: int = Field(default=10_000, ge=1)  # per service and rule with per: tenant | user
    window: float = 86400.0                  # 1m, 1h, 1d, ...: windows aligned to UTC (a day from 00:00)
    tokens: Optional[int] = Field(default=None, ge=1)        # input + output tokens
    cost_usd: Optional[float] = Field(default=None, gt=0)
    warn: float = Field(default=0.8, gt=0, lt=1)             # share of the budget that warns
    forecast: bool = True                    # warn when the burn rate would spend it before the window ends
    # The forecast needs this much of the window seen and this share of the budget spent (noise guard).
    forecast_min_elapsed: float = 300.0
    forecast_min_share: float = Field(default=0.1, ge=0, lt=1)

    _dur = field_validator("window", "forecast_min_elapsed", mode="before")(parse_duration)

    @model_validator(mode="after")
    def _something_to_count(self) -> "BudgetRule":
        if self.tokens is None and self.cost_usd is None:
            raise ValueError("give tokens or cost_usd (or both)")
        if self.window < 60:
            raise ValueError("window must be at least 1m")
        return self


class GuardrailRate(_Model):
    """Guardrail breaches (security events) per request of a service over a window of event time."""

    window: float = 3600.0
    max_rate: float = Field(default=0.05, gt=0, le=1)   # breaches per request beyond which it pages
    min_events: int = Field(default=20, ge=1)           # and at least this many breaches in the window

    _dur = field_validator("window", mode="before")(parse_duration)

    @field_validator("window")
    @classmethod
    def _at_least_a_minute(cls, v: float) -> float:
        if v < 60:
            raise ValueError("window must be at least 1m")
        return v


class PoliciesConfig(_Model):
    """Budgets and allowed models per service (operators/budgets.py); alerts of type policy_violation."""

    budgets: List[BudgetRule] = Field(default_factory=list)
    # {service: [models]}: a call of the service to any other model is a policy_violation.
    allowed_models: Dict[str, List[str]] = Field(default_factory=dict)
    # A model violation resolves after this long (event time) without a call to that model.
    violation_quiet: float = 3600.0
    # The share of a service's requests that breach its guardrails (security events naming the service).
    guardrail_rate: Optional[GuardrailRate] = None
    # Every guardrail breach (security event) appended to this JSON-lines file for audit, none paged.
    guardrail_audit: Optional[str] = Field(default=None, min_length=1)
    # How often a running flow reads its definition file for a changed policies block (sentinel/policy_reload.py);
    # 0: never (a change takes a restart).
    reload: float = Field(default=5.0, ge=0)

    _dur = field_validator("violation_quiet", "reload", mode="before")(parse_duration)

    @property
    def enabled(self) -> bool:
        return bool(self.budgets or self.allowed_models or self.guardrail_rate)


class StateConfig(_Model):
    # Per-key state (baselines) idle this long in wall-clock time is dropped.
    key_idle_evict: float = 6 * 3600.0
    # Open windows of a key idle this long (wall clock) are flushed.
    idle_flush: float = 30.0
    # Where a process keeps its cross-key references (the heavy-user population,
    # the parents' noise levels) between runs; "{process}" is the process id.
    # Unset: <recovery directory>/sentinel-cross-key-p{process}.json when recovery is on (JSON, mode 0600).
    cross_key_file: Optional[str] = None
    # Event ids each process remembers (its workers share them) to drop duplicates (a producer's retry, a
    # collector's resend); 0 (the default) turns the check off: it costs 10-25% of the flow's CPU
    # (benchmarks/RESULTS.md, "Replay"). See operators/parse.py.
    dedup_ids: int = Field(default=0, ge=0)

    _dur = field_validator("key_idle_evict", "idle_flush", mode="before")(parse_duration)


class LimitsConfig(_Model):
    """What one record may carry and how many keys a process keeps (see operators/parse.py)."""

    # An event this far ahead of its partition's event time (plus the wall time since
    # that last moved) is held; unless most events after it are ahead too, it is a
    # dead letter future_timestamp. 0 turns the check off.
    max_future: float = Field(default=600.0, ge=0)
    # Plausible ranges: beyond them a record is a dead letter out_of_range.
    latency_ms: float = Field(default=86_400_000.0, gt=0)
    ttft_ms: float = Field(default=86_400_000.0, gt=0)
    tokens: int = Field(default=1_000_000_000, ge=1)  # input_tokens, output_tokens
    cost_usd: float = Field(default=100_000.0, gt=0)
    name_length: int = Field(default=256, ge=8)  # service, model, user_id, ... (characters)
    # Keys a process keeps apart; the events of the others are folded into an overflow key.
    max_keys: int = Field(default=10_000, ge=1)  # service/model keys
    max_models_per_service: int = Field(default=100, ge=1)
    max_services: int = Field(default=1_000, ge=1)
    max_sources: int = Field(default=100_000, ge=1)  # security sources

    _dur = field_validator("max_future", mode="before")(parse_duration)

    @field_validator("latency_ms", "ttft_ms", "cost_usd")
    @classmethod
    def _finite(cls, v: float) -> float:
        if v != v or v == float("inf"):
            raise ValueError("must be a finite number")
        return v

    def record_limits(self):
        from sentinel.parse import Limits

        return Limits(self.latency_ms, self.ttft_ms, self.tokens, self.cost_usd, self.name_length)


class ApiAuthConfig(_Model):
    """How ``sentinel api`` checks its bearer tokens (JWT, sentinel/auth.py); keys never in the YAML."""

    algorithm: Literal["HS256", "RS256"] = "HS256"
    # HS256: the shared secret (at least 32 bytes) from this environment variable or file.
    secret_env: Optional[str] = Field(default=None, min_length=1)
    secret_file: Optional[str] = Field(default=None, min_length=1)
    # RS256: the issuer's public key (PEM) or a JWKS file (the key is picked by the token's kid).
    public_key_file: Optional[str] = Field(default=None, min_length=1)
    jwks_file: Optional[str] = Field(default=None, min_length=1)
    audience: Optional[str] = None  # required "aud" claim, when set
    issuer: Optional[str] = None  # required "iss" claim, when set
    leeway: float = Field(default=30.0, ge=0, le=600)  # clock skew allowed on exp / nbf

    _dur = field_validator("leeway", mode="before")(parse_duration)

    @model_validator(mode="after")
    def _keys(self) -> "ApiAuthConfig":
        if self.algorithm == "HS256":
            if self.public_key_file or self.jwks_file:
                raise ValueError("HS256 takes secret_env or secret_file (public_key_file / jwks_file are for RS256)")
            if self.secret_env and self.secret_file:
                raise ValueError("give secret_env or secret_file, not both")
            if not self.secret_file and not self.secret_env:
                self.secret_env = "SENTINEL_API_SECRET"
        else:
            if self.secret_env or self.secret_file:
                raise ValueError("RS256 takes public_key_file or jwks_file (secret_env / secret_file are for HS256)")
            if bool(self.public_key_file) == bool(self.jwks_file):
                raise ValueError("RS256 needs exactly one of public_key_file and jwks_file")
        return self


class ApiConfig(_Model):
    """``sentinel api``: the operator's REST and WebSocket API over the flow's incident_store sink."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    auth: ApiAuthConfig = Field(default_factory=ApiAuthConfig)
    # Silences made through the API last at most this long (and at most control.max_silence).
    max_silence: float = 7 * 86400.0
    # How often the live stream looks for newly stored alerts.
    stream_poll: float = Field(default=0.5, gt=0, le=10)

    _dur = field_validator("max_silence", "stream_poll", mode="before")(parse_duration)


class FlowConfig(_Model):
    name: str = "sentinel"
    source: Source
    sinks: List[Sink] = Field(default_factory=lambda: [StdoutSink(kind="stdout")])
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    dead_letters: DeadLetters = Field(default_factory=lambda: StderrDeadLetters(kind="stderr"))
    windows: WindowConfig = Field(default_factory=WindowConfig)
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    # Unset: on when the source is Kafka (same brokers), off otherwise.
    control: Optional[ControlConfig] = None
    # The Kafka connection (brokers, security settings) every Kafka client of the flow starts from.
    kafka: Optional[KafkaConnection] = None
    max_record_bytes: int = Field(default=1_000_000, ge=1024)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    # `sentinel api` (unset: its defaults; the flow itself does not read it).
    api: ApiConfig = Field(default_factory=ApiConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    policies: PoliciesConfig = Field(default_factory=PoliciesConfig)

    def control_settings(self) -> Optional[ControlConfig]:
        """The control listener's settings, or None when there is none to run."""
        c = self.control
        if c is None:
            if not isinstance(self.source, KafkaSource):
                return None
            c = ControlConfig()
            _resolve_kafka(c, "control", *self._shared_kafka())
        if c.brokers is None or not (c.topic or c.feedback_topic):
            return None
        return c

    def _shared_kafka(self):
        """(brokers, config) a Kafka client gets when it names no brokers; the config of one that does."""
        if self.kafka is not None:
            brokers = self.kafka.brokers or (self.source.brokers if isinstance(self.source, KafkaSource) else None)
            return brokers, dict(self.kafka.config), dict(self.kafka.config)
        if isinstance(self.source, KafkaSource):
            return self.source.brokers, dict(self.source.config), {}
        return None, {}, {}

    @model_validator(mode="after")
    def _one_spool_per_sink(self) -> "FlowConfig":
        seen: Dict[str, int] = {}
        for i, s in enumerate(self.sinks):
            if isinstance(s, _SpooledSink):
                base = os.path.abspath(s.spool_base())
                if base in seen:
                    raise ValueError(f"sinks[{i}].spool_dir: {s.spool_base()!r} is already the spool of "
                                     f"sinks[{seen[base]}]; give every rabbitmq and kafka sink its own spool_dir")
                seen[base] = i
        return self

    @model_validator(mode="after")
    def _kafka_clients(self) -> "FlowConfig":
        """Every Kafka client's brokers and settings: its own over the ``kafka`` block (else the source's)."""
        if isinstance(self.source, KafkaSource):
            k = self.kafka or KafkaConnection()
            _resolve_kafka(self.source, "source", k.brokers, dict(k.config), dict(k.config))
        shared = self._shared_kafka()
        for i, s in enumerate(self.sinks):
            if isinstance(s, KafkaSink):
                _resolve_kafka(s, f"sinks[{i}]", *shared)
        if isinstance(self.dead_letters, KafkaDeadLetters):
            _resolve_kafka(self.dead_letters, "dead_letters", *shared)
        if self.control is not None:
            _resolve_kafka(self.control, "control", *shared)
        return self


def _resolve_kafka(client, where: str, brokers: Optional[str], config: Dict[str, Any],
                   config_with_own_brokers: Dict[str, Any]) -> None:
    """Fill a Kafka client's ``brokers`` and ``config`` from the flow's shared connection."""
    own = client.config
    if client.brokers is None:
        if brokers is None:
            raise ValueError(f"{where}.brokers: required (or set kafka.brokers)")
        client.brokers = brokers
        client.config = {**config, **own}
    else:
        client.config = {**config_with_own_brokers, **own}


class ConfigError(Exception):
    """A flow definition that cannot be used; the message names the key."""


def _loc(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("file", "kafka", "simulator", "jsonl", "stdout", "rabbitmq", "qdrant", "stderr",
                                       "incident_store", "alertmanager", "webhook") and out:
            continue  # discriminator tag pydantic inserts; the kind is already in the input
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: invalid flow definition:"]
    for e in err.errors():
        msg = e["msg"]
        if e["type"] == "union_tag_invalid":
            msg = f"unknown kind {e.get('input', {}).get('kind') if isinstance(e.get('input'), dict) else ''!r}; " + msg
        lines.append(f"  {_loc(e['loc'])}: {msg}")
    return "\n".join(lines)


def load_config_dict(data: Any, origin: str = "<flow>") -> FlowConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a flow definition is a YAML mapping, got {type(data).__name__}")
    try:
        return FlowConfig.model_validate(data)
    except ValidationError as ex:
        raise ConfigError(format_validation_error(ex, origin)) from None


def load_config(path: Union[str, Path]) -> FlowConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as ex:
        raise ConfigError(f"{p}: cannot read flow definition: {ex.strerror or ex}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as ex:
        raise ConfigError(f"{p}: not valid YAML: {ex}") from None
    # Relative file paths in a flow definition are relative to the working directory.
    return load_config_dict(data, str(p))


def default_config() -> FlowConfig:
    """The embedded default of ``sentinel run``: simulator -> stdout, metrics, embedded Qdrant."""
    return load_config_dict(
        {
            "name": "demo",
            "source": {"kind": "simulator", "seed": 7, "hours": 24, "speed": 60},
            "sinks": [{"kind": "stdout"}, {"kind": "qdrant", "location": ":memory:"}],
            "metrics": {"port": 9464},
        },
        "<embedded default>",
    )


def config_from_env() -> FlowConfig:
    """The flow definition named by SENTINEL_FLOW (for ``python -m bytewax.run``)."""
    path = os.environ.get("SENTINEL_FLOW")
    if not path:
        return default_config()
    return load_config(path)
