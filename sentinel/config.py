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
from typing import Annotated, Any, Dict, List, Literal, NamedTuple, Optional, Tuple, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sentinel.core.types import SEVERITIES

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

    ca_file: Optional[str] = Field(
        default=None, min_length=1,
        description="CA bundle (PEM) the server is verified against; unset: the system's CAs",
    )
    cert_file: Optional[str] = Field(
        default=None, min_length=1,
        description="Client certificate (PEM) for mutual TLS; goes with key_file",
    )
    key_file: Optional[str] = Field(default=None, min_length=1, description="Private key (PEM) of cert_file")
    key_password: Optional[SecretRef] = Field(None, description="Password of key_file: {env: NAME} or {file: PATH}")
    verify: bool = Field(True, description="Verify the server's certificate and name; false only for test benches")
    server_hostname: Optional[str] = Field(
        default=None, min_length=1,
        description="Name the server's certificate must carry, when it is not the URL's host",
    )

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

    brokers: Optional[str] = Field(
        default=None, min_length=1,
        description="Bootstrap servers (host:port,host:port) of every Kafka client that names none of its own",
    )
    config: Dict[str, Any] = Field(
        default_factory=dict,
        description="librdkafka settings (security.protocol, sasl.*, ssl.*) every Kafka client starts from; a "
                    "client's own config wins key by key; secrets as {env: NAME} or {file: PATH}",
    )

    _secrets = field_validator("config")(_kafka_secrets)


class TopicSpec(_Model):
    name: str = Field(min_length=1, description="Topic name")
    encoding: Literal["json", "otlp_json", "otlp_proto"] = Field(
        "json",
        description="How its records are encoded: json (SPEC events), otlp_json or otlp_proto (OTLP spans)",
    )


class FileSource(_Model):
    kind: Literal["file"] = Field(description="file: read a JSON-lines file once, to its end")
    path: str = Field(min_length=1, description="The file (JSON lines)")
    encoding: Literal["json", "otlp_json", "otlp_proto"] = Field(
        "json",
        description="json (SPEC events) or otlp_json (one OTLP export request per line)",
    )
    batch_size: int = Field(default=2000, ge=1, description="Lines read per batch")

    @model_validator(mode="after")
    def _proto_needs_lines(self) -> "FileSource":
        if self.encoding == "otlp_proto":
            raise ValueError("encoding: otlp_proto is only for Kafka sources (a file holds JSON lines)")
        return self


class KafkaSource(_Model):
    kind: Literal["kafka"] = Field(description="kafka: consume Kafka topics")
    brokers: Optional[str] = Field(default=None, min_length=1, description="Bootstrap servers; unset: kafka.brokers")
    topics: List[Union[str, TopicSpec]] = Field(
        min_length=1,
        description="Topics to read: names, or {name, encoding}; a bare otlp_spans means otlp_proto, any other "
                    "name json",
    )
    group_id: Optional[str] = Field(
        None,
        description="Consumer group whose offsets are also committed (for lag tools)",
    )
    start: Literal["earliest", "latest"] = Field(
        "earliest",
        description="Where a partition starts without a snapshot: earliest or latest",
    )
    batch_size: int = Field(default=2000, ge=1, description="Records read per batch")
    eof_after_idle: Optional[float] = Field(
        None,
        description="End the run once every partition has been idle this long (a bounded replay of a backlog); "
                    "unset: run until stopped",
    )
    config: Dict[str, Any] = Field(
        default_factory=dict,
        description="librdkafka settings laid over kafka.config; secrets as {env: NAME} or {file: PATH}",
    )

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
    kind: Literal["simulator"] = Field(
        description="simulator: the built-in simulated telemetry (sentinel simulate's)",
    )
    seed: int = Field(7, description="Seed of everything random in the simulation")
    hours: float = Field(default=24.0, gt=0, description="Simulated hours of event time")
    rate: float = Field(default=18.5, gt=0, description="Mean background requests per second")
    start: Optional[str] = Field(
        None,
        description="Event time of the first event (RFC 3339 with offset); unset: 2026-01-05T00:00:00Z",
    )
    speed: float = Field(
        default=60.0, ge=0,
        description="Simulated seconds per wall-clock second; 60 plays one simulated minute per second, 0 as fast "
                    "as possible",
    )
    batch_size: int = Field(default=500, ge=1, description="Events per batch")


Source = Annotated[Union[FileSource, KafkaSource, SimulatorSource], Field(discriminator="kind")]


# Every alert sink but qdrant: "cloudevents" wraps each alert in a CloudEvents
# 1.0 structured envelope (the alert is its `data`); "none" writes the bare alert.
Envelope = Literal["cloudevents", "none"]
# The names of sentinel.core.types.Severity, for pydantic (a Literal keeps the config reference's wording).
Severity = Literal["info", "low", "medium", "high", "critical"]
assert Severity.__args__ == SEVERITIES


class JsonlSink(_Model):
    kind: Literal["jsonl"] = Field(description="jsonl: alerts appended to a JSON-lines file")
    path: str = Field(min_length=1, description="The file")
    envelope: Envelope = Field(
        "cloudevents",
        description="cloudevents: each alert wrapped in a CloudEvents 1.0 structured envelope (the alert is its "
                    "data); none: the bare alert",
    )


class StdoutSink(_Model):
    kind: Literal["stdout"] = Field(
        description="stdout: alerts on standard output (readable lines on a terminal, JSON otherwise; see "
                    "--format)",
    )
    envelope: Envelope = Field(
        "cloudevents",
        description="cloudevents: each alert wrapped in a CloudEvents 1.0 structured envelope (the alert is its "
                    "data); none: the bare alert",
    )


class _SpooledSink(_Model):
    """The spool settings of a sink that delivers from an on-disk spool (rabbitmq, kafka)."""

    spool_dir: Optional[str] = Field(
        None,
        description="Directory of the on-disk spool alerts are appended to and delivered from, so an outage of the"
                    " destination never blocks detection; each worker spools to <spool_dir>/worker-<index>; unset:"
                    " the sink's default under ./sentinel-spool",
    )
    spool_max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=64 * 1024,
        description="Bound of each worker's spool (bytes, or 256MiB, 1GB, ...); when full the flow waits "
                    "(backpressure), nothing is dropped",
    )
    drain_timeout: float = Field(
        10.0,
        description="On shutdown, keep delivering the spool for at most this long; the rest stays spooled for the "
                    "next start",
    )

    _dur = field_validator("drain_timeout", mode="before")(parse_duration)
    _size = field_validator("spool_max_bytes", mode="before")(parse_size)

    def spool_base(self) -> str:  # pragma: no cover - every sink names its default
        raise NotImplementedError


class RabbitMQSink(_SpooledSink):
    kind: Literal["rabbitmq"] = Field(
        description="rabbitmq: alerts published to a RabbitMQ exchange, routed by severity",
    )
    url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/%2F",
        description="AMQP URL (amqps:// for TLS); no password in it when password is set",
    )
    exchange: str = Field("sentinel.alerts", description="Exchange alerts are published to")
    high_queue: str = Field(
        "incidents.high-priority",
        description="Queue bound to severities high and critical (without routing)",
    )
    low_queue: str = Field(
        "incidents.low-priority",
        description="Queue bound to severities info, low and medium (without routing)",
    )
    envelope: Envelope = Field(
        "cloudevents",
        description="cloudevents: each alert wrapped in a CloudEvents 1.0 structured envelope (the alert is its "
                    "data); none: the bare alert",
    )
    routing: Optional[Dict[str, List[Severity]]] = Field(
        None,
        description="Queue bindings {queue: [severities]} in place of high_queue and low_queue; every severity "
                    "must have a queue",
    )
    password: Optional[SecretRef] = Field(
        None,
        description="Password of the url's user, read when connecting: {env: NAME} or {file: PATH}",
    )
    tls: Optional[TLSConfig] = Field(
        None,
        description="TLS of an amqps:// url: CA, client certificate for mTLS, verification",
    )

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
    kind: Literal["kafka"] = Field(description="kafka: alerts produced to a Kafka topic")
    brokers: Optional[str] = Field(
        default=None, min_length=1,
        description="Bootstrap servers; unset: kafka.brokers, else the source's",
    )
    topic: str = Field("llm.anomalies", description="Topic alerts are produced to")
    config: Dict[str, Any] = Field(
        default_factory=dict,
        description="librdkafka settings laid over kafka.config; secrets as {env: NAME} or {file: PATH}",
    )
    envelope: Envelope = Field(
        "cloudevents",
        description="cloudevents: each alert wrapped in a CloudEvents 1.0 structured envelope (the alert is its "
                    "data); none: the bare alert",
    )

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

    kind: Literal["qdrant"] = Field(
        description="qdrant: incident memory; every alert is indexed and given its similar_incidents from it",
    )
    location: str = Field(
        ":memory:",
        description=":memory: (embedded, in memory), a directory (embedded, on disk) or http(s)://host:6333 (a "
                    "server)",
    )
    collection: str = Field("sentinel_incidents", description="Collection the alerts are indexed in")
    similar_limit: int = Field(
        default=3, ge=0, le=100,
        description="At most this many earlier incidents in an alert's similar_incidents; 0 does not look them up",
    )
    similar_min_score: float = Field(
        default=0.9, ge=0, le=1,
        description="Least cosine similarity of a listed incident; 0.9 keeps the same type of anomaly, same "
                    "direction, comparable size",
    )
    api_key: Optional[SecretRef] = Field(
        None,
        description="API key of a Qdrant server (http(s):// location): {env: NAME} or {file: PATH}",
    )

    _ref = field_validator("api_key", mode="before")(_secret_ref)

    @model_validator(mode="after")
    def _key_needs_server(self) -> "QdrantSink":
        if self.api_key is not None and not self.location.startswith(("http://", "https://")):
            raise ValueError("api_key: only for a Qdrant server (an http:// or https:// location)")
        return self


class IncidentStoreSink(_SpooledSink):
    """Incidents and their alerts in SQL (sentinel/store.py), read by ``sentinel api``."""

    kind: Literal["incident_store"] = Field(
        description="incident_store: incidents and their alerts in SQL, read by sentinel api",
    )
    url: str = Field(
        default="sentinel-incidents.db", min_length=1,
        description="A SQLite file path or postgresql://user@host:5432/db (no password in it)",
    )
    password_env: Optional[str] = Field(
        default=None, min_length=1,
        description="Environment variable holding the database password",
    )
    table_prefix: str = Field(
        default="", pattern=r"^[a-z][a-z0-9_]{0,30}$|^$",
        description="Prefix of every table name, so several stores can share one database",
    )

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

    kind: Literal["alertmanager"] = Field(
        description="alertmanager: alerts posted to a Prometheus Alertmanager's v2 API",
    )
    url: str = Field(
        "http://127.0.0.1:9093",
        description="Alertmanager's base URL (http:// or https://, no credentials)",
    )
    firing_ttl: float = Field(
        default=5 * 3600.0, gt=0,
        description="A firing alert's endsAt is this far ahead; keep it above alerting.repeat_interval (the "
                    "re-page)",
    )
    generator_url: Optional[str] = Field(
        None,
        description="Link shown with each alert in Alertmanager (e.g. the API's incident page)",
    )
    timeout: float = Field(default=10.0, gt=0, description="Timeout of one request")

    _u = field_validator("url")(lambda v: _http_url(v))
    _d = field_validator("firing_ttl", "timeout", mode="before")(parse_duration)

    def spool_base(self) -> str:
        """Default ./sentinel-spool/alertmanager-<host>-<port>."""
        from urllib.parse import urlsplit

        u = urlsplit(self.url)
        return self.spool_dir or os.path.join("sentinel-spool", f"alertmanager-{u.hostname}-{u.port or 0}")


class WebhookSink(_SpooledSink):
    """Each alert POSTed as JSON to a URL, optionally HMAC-signed (sinks/webhook.py)."""

    kind: Literal["webhook"] = Field(description="webhook: each alert POSTed as JSON to a URL")
    url: str = Field(description="The URL (http:// or https://, no credentials)")
    envelope: Envelope = Field(
        "cloudevents",
        description="cloudevents: each alert wrapped in a CloudEvents 1.0 structured envelope (the alert is its "
                    "data); none: the bare alert",
    )
    hmac_key_env: Optional[str] = Field(
        default=None, min_length=1,
        description="Environment variable holding the key that signs each body (X-Sentinel-Signature: sha256=HMAC)",
    )
    hmac_key_file: Optional[str] = Field(
        default=None, min_length=1,
        description="File holding the signing key (instead of hmac_key_env)",
    )
    headers: Dict[str, str] = Field(default_factory=dict, description="Extra, non-secret request headers")
    timeout: float = Field(default=10.0, gt=0, description="Timeout of one request")

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
    kind: Literal["jsonl"] = Field(description="jsonl: dead letters appended to a JSON-lines file")
    path: str = Field(min_length=1, description="The file")


class KafkaDeadLetters(_Model):
    kind: Literal["kafka"] = Field(description="kafka: dead letters produced to a Kafka topic")
    brokers: Optional[str] = Field(
        None,
        description="Bootstrap servers; unset: kafka.brokers, else the Kafka source's",
    )
    topic: str = Field("llm.telemetry.dlq", description="Topic dead letters are produced to")
    config: Dict[str, Any] = Field(
        default_factory=dict,
        description="librdkafka settings laid over kafka.config; secrets as {env: NAME} or {file: PATH}",
    )

    _secrets = field_validator("config")(_kafka_secrets)


class StderrDeadLetters(_Model):
    kind: Literal["stderr"] = Field(description="stderr: dead letters as JSON lines on standard error")


DeadLetters = Annotated[
    Union[JsonlDeadLetters, KafkaDeadLetters, StderrDeadLetters], Field(discriminator="kind")
]


class MetricsConfig(_Model):
    port: int = Field(
        default=9464, ge=0, le=65535,
        description="Port of the Prometheus endpoint (/metrics, /healthz, /readyz); 0 turns it off",
    )
    host: str = Field("127.0.0.1", description="Address the endpoint listens on")
    max_service_labels: int = Field(
        default=50, ge=1, le=10_000,
        description="Distinct services named in the service label of sentinel_anomalies_total and "
                    "sentinel_incidents_open; later ones are counted as other",
    )
    max_model_labels: int = Field(
        default=50, ge=1, le=10_000,
        description="Distinct models named in the model label of sentinel_anomalies_total (across services); later"
                    " ones are counted as other",
    )


class WindowConfig(_Model):
    size: float = Field(
        60.0,
        description="Length of the tumbling event-time windows of each service/model key (at least 1s)",
    )
    allowed_lateness: float = Field(
        10.0,
        description="How far behind a key's slowest active partition an event may be and still land in its window",
    )
    idle_partition: float = Field(
        10.0,
        description="A partition whose source has read nothing for this long (wall clock) is quiet and holds no"
                    " key's windows open; one that sent nothing for a key this long, while its source still reads,"
                    " is presumed to move on with wall time",
    )
    max_open_windows: int = Field(
        default=1440, ge=1,
        description="Open windows per key at most (bounds memory during a backlog: a day of one-minute"
                    " windows, so processes that read a day's backlog hours apart make no event late)",
    )

    _dur = field_validator("size", "allowed_lateness", "idle_partition", mode="before")(parse_duration)

    @field_validator("size")
    @classmethod
    def _size_positive(cls, v: float) -> float:
        if v < 1:
            raise ValueError("window size must be at least 1 second")
        return v


class TokenAbuseConfig(_Model):
    """Token abuse, judged per service (see detectors/actor_tokens.py)."""

    enabled: bool = Field(True, description="Judge each actor's token use per service (token_abuse)")
    window: float = Field(60.0, description="Length of an actor's windows")
    horizon: float = Field(
        600.0,
        description="An actor is judged on its tokens over this much event time (abuse is a sustained rise), each "
                    "time one of its busy windows closes; at least one window",
    )
    min_tokens: int = Field(default=20000, ge=1, description="Tokens the horizon needs at least before it is judged")
    min_requests: int = Field(default=5, ge=1, description="Requests the horizon needs at least before it is judged")
    ratio: float = Field(
        default=4.0, gt=1,
        description="The horizon must hold more requests than ratio times the actor's usual rate could give (a "
                    "Poisson tail below p_value) and ratio times its usual tokens (both lifted with the service's "
                    "traffic)",
    )
    p_value: float = Field(
        default=1e-4, gt=0, lt=1,
        description="Poisson tail probability below which the actor's request count is too high for its usual rate",
    )
    heavy_quantile: float = Field(
        default=0.75, gt=0, lt=1,
        description="The horizon's tokens must also reach this quantile of the service's busy actor-horizons",
    )
    heavy_ratio: float = Field(
        default=5.0, ge=1,
        description=("An actor busy in fewer than 5 windows so far needs heavy_ratio times that quantile "
                     "(and to rise above its habit, if it has one)"),
    )
    history_windows: int = Field(
        default=60, ge=1,
        description="Nobody is judged in a service's first history_windows windows",
    )
    min_population: int = Field(
        default=1000, ge=1,
        description="Nobody is judged before the service has seen this many busy actor-horizons",
    )
    max_actors: int = Field(
        default=20000, ge=1,
        description="Actors whose habits a service keeps (the least recently busy is forgotten first)",
    )
    new_actor_min_tokens: Optional[int] = Field(
        default=None, ge=1,
        description="Accepted for flow files written for earlier versions; no longer used",
    )
    max_share: float = Field(
        default=0.6, gt=0, le=1,
        description="No window may carry more than this share of the horizon's tokens: one huge request is not "
                    "abuse",
    )
    persistence: int = Field(default=2, ge=1, description="Busy windows in a row that are abusive before an alert")
    sustain: float = Field(
        default=720.0, ge=0,
        description="An actor pages only once its busy stretch (its busy windows, none more than a horizon after "
                    "the one before) has lasted this long: abuse outlasts a long session (0: no such wait)",
    )
    rise_quantile: float = Field(
        default=0.99, ge=0, lt=1,
        description="An actor's tokens must rise above its own habit by ratio, or by this quantile of how far "
                    "the service's ended busy stretches rose above their actors' habits when that is more: where "
                    "ordinary sessions are long, only a rise beyond theirs is abuse (0: ratio alone)",
    )

    _dur = field_validator("window", "horizon", "sustain", mode="before")(parse_duration)

    @model_validator(mode="after")
    def _horizon(self) -> "TokenAbuseConfig":
        if self.horizon < self.window:
            raise ValueError(f"horizon ({self.horizon:g}s) must be at least one window ({self.window:g}s)")
        return self


class AttackConfig(_Model):
    enabled: bool = Field(True, description="Count security events per source (coordinated_attack)")
    window: float = Field(300.0, description="Length of the windows security events are counted in")
    threshold: int = Field(
        default=10, ge=1,
        description="Security events from one source in one window that make an attack",
    )

    _dur = field_validator("window", mode="before")(parse_duration)


class ForecastConfig(_Model):
    """Predictive warnings (operators/forecast.py): a key's latency, error rate or cost per request
    trending towards its alert level warns (severity info) before it gets there."""

    enabled: bool = Field(
        False,
        description="Warn (severity info) when a key's latency, error rate or cost per request trends towards its "
                    "alert level",
    )
    horizon: float = Field(
        900.0,
        description="A warning speaks when the projected crossing of the alert level is at most this far ahead",
    )
    windows: int = Field(
        default=20, ge=4, le=240,
        description="Closed windows the trend is fitted over (a least-squares slope and its standard error)",
    )
    min_slope_z: float = Field(
        default=3.0, gt=0,
        description="The slope must be this many standard errors above zero",
    )

    _dur = field_validator("horizon", mode="before")(parse_duration)

    @field_validator("horizon")
    @classmethod
    def _horizon_positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("horizon must be positive")
        return v


class DetectionConfig(_Model):
    metrics: List[Literal["latency", "ttft", "tokens", "cost", "error_rate", "traffic", "drift", "multivariate"]] = Field(
        default_factory=lambda: ["latency", "ttft", "tokens", "cost", "error_rate", "traffic", "drift"],
        description="Anomaly types judged per service/model key; multivariate (Half-Space Trees over a key's "
                    "features) is opt-in: it adds no recall on the scenario benchmark",
    )
    seasonality: bool = Field(
        True,
        description="Time-of-day profile for traffic (once a key has a day of history) and each metric's values at"
                    " the same time on the days (traffic: and weeks) before, so a pattern that comes back every "
                    "day or week pages the first two times only",
    )
    cold_windows: int = Field(
        default=60, ge=0,
        description="Windows after warm-up in which a key must deviate further to count",
    )
    drift_min_change: float = Field(
        default=0.25, gt=0, le=10,
        description="A drift pages once its lasting change reaches this fraction of the level before it (0.25: up "
                    "25%); smaller lasting changes are the wander of busy services",
    )
    borrow_from_parents: bool = Field(
        True,
        description="A new key borrows its parents' noise levels (service, provider, fleet) and may alert after 10"
                    " windows instead of warmup_windows",
    )
    warmup_windows: int = Field(default=30, ge=1, description="Windows a key must see before it may alert")
    min_requests: int = Field(
        default=8, ge=1,
        description="Requests a window needs for latency and ttft quantiles (tokens and cost pool windows instead)",
    )
    threshold: float = Field(default=0.9, gt=0, lt=1, description="Detector score (0-1) that counts as anomalous")
    persistence: int = Field(default=2, ge=1, description="Anomalous windows in a row before an alert")
    quiet_windows: int = Field(default=5, ge=1, description="Normal windows in a row that resolve an episode")
    token_abuse: TokenAbuseConfig = Field(
        default_factory=TokenAbuseConfig,
        description="Token abuse per actor and service",
    )
    coordinated_attack: AttackConfig = Field(default_factory=AttackConfig, description="Security events per source")
    forecast: ForecastConfig = Field(
        default_factory=ForecastConfig,
        description="Predictive warnings of trends (opt-in)",
    )


GROUP_FIELDS = ("service", "model", "type", "subject", "severity", "metric")


def require_utc_offset(v: Optional[datetime]) -> Optional[datetime]:
    """A field validator: a datetime must carry its UTC offset (None passes)."""
    if v is not None and v.tzinfo is None:
        raise ValueError("needs a UTC offset, e.g. 2026-01-05T10:00:00Z")
    return v


class Silence(_Model):
    """Alerts matching every given matcher, with event_time in [start, end), are not published."""

    matchers: Dict[Literal["service", "model", "type", "severity", "subject", "metric"], str] = Field(
        min_length=1,
        description="Alert fields and the values they must equal: service, model, type, severity, subject, metric "
                    "(at least one)",
    )
    start: Optional[datetime] = Field(
        None,
        description="Start of the silence (event time, with UTC offset); unset: no start",
    )
    end: Optional[datetime] = Field(
        None,
        description="End of the silence, exclusive (event time, with UTC offset); unset: no end",
    )
    comment: str = Field("", description="Why (shown in the silence's record)")
    created_by: str = Field("", description="Who made it")

    _aware = field_validator("start", "end")(require_utc_offset)

    @model_validator(mode="after")
    def _order(self) -> "Silence":
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class AlertingConfig(_Model):
    group_by: List[Literal["service", "model", "type", "subject", "severity", "metric"]] = Field(
        default_factory=lambda: ["service"],
        description="Alert fields that make an incident's group (besides the anomaly type's family)",
    )
    group_wait: float = Field(0.0, description="Hold a new incident's first page this long to gather its members")
    group_window: float = Field(
        600.0,
        description="An alert that fires within this (event time) of an open incident's latest member joins it",
    )
    group_interval: float = Field(
        60.0,
        description="An incident's updated or escalated page at most this often (wall and event time)",
    )
    repeat_interval: float = Field(4 * 3600.0, description="Page a still-firing incident again after this long")
    idle_evict: float = Field(
        3600.0,
        description="A group with no open incident, idle this long (wall clock), is dropped",
    )
    silences: List[Silence] = Field(
        default_factory=list,
        description="Alerts matching a silence are not published (more can be set at run time through the control "
                    "topic)",
    )

    _dur = field_validator("group_wait", "group_window", "group_interval", "repeat_interval", "idle_evict",
                           mode="before")(
        parse_duration)


class ControlConfig(_Model):
    """Run-time silences and feedback from Kafka (see sentinel/control.py)."""

    brokers: Optional[str] = Field(
        None,
        description="Bootstrap servers; unset: kafka.brokers, else the Kafka source's",
    )
    topic: Optional[str] = Field("sentinel.control", description="Topic of run-time silences (null: none)")
    feedback_topic: Optional[str] = Field("llm.feedback", description="Topic of feedback on alerts (null: none)")
    config: Dict[str, Any] = Field(
        default_factory=dict,
        description="librdkafka settings laid over kafka.config; secrets as {env: NAME} or {file: PATH}",
    )
    _secrets = field_validator("config")(_kafka_secrets)
    hmac_key_env: Optional[str] = Field(
        default=None, min_length=1,
        description="Environment variable holding the key control and feedback messages must be signed with "
                    "(HMAC-SHA256); unset with hmac_key_file: unsigned messages are taken",
    )
    hmac_key_file: Optional[str] = Field(
        default=None, min_length=1,
        description="File holding that key (instead of hmac_key_env)",
    )
    max_silence: float = Field(
        7 * 86400.0,
        description="A silence from the topic needs start and end, end - start at most this long",
    )
    max_silences: int = Field(
        default=1000, ge=1,
        description="Silences from the topic held at once (the flow definition's do not count); more are refused",
    )
    max_pending_feedback: int = Field(
        default=10_000, ge=1,
        description="Feedback on alerts not seen yet, kept until they are; beyond this the oldest is dropped "
                    "(counted)",
    )

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

    enabled: bool = Field(True, description="Mask personal data and secrets in alerts and dead letters")
    emails: bool = Field(True, description="Mask e-mail addresses")
    phones: bool = Field(True, description="Mask phone numbers")
    cards: bool = Field(True, description="Mask payment card numbers (Luhn-checked)")
    ibans: bool = Field(True, description="Mask IBANs (mod-97-checked)")
    secrets: bool = Field(
        True,
        description="Mask secrets: sk-..., Bearer ..., AKIA..., GitHub and Slack tokens, JWTs",
    )
    ips: bool = Field(True, description="Mask IP addresses")
    pseudonym_key_env: Optional[str] = Field(
        default=None, min_length=1,
        description="Environment variable holding the key of stable keyed pseudonyms (HMAC-SHA256) for the actors "
                    "alerts name",
    )
    pseudonym_key_file: Optional[str] = Field(
        default=None, min_length=1,
        description="File holding that key (instead of pseudonym_key_env)",
    )
    dead_letter_raw: Literal["masked", "original"] = Field(
        "masked",
        description="Dead letters: masked (detail and raw line masked, raw_base64 byte for byte) or original (as "
                    "read)",
    )

    @model_validator(mode="after")
    def _one_key(self) -> "PrivacyConfig":
        if self.pseudonym_key_env and self.pseudonym_key_file:
            raise ValueError("give pseudonym_key_env or pseudonym_key_file, not both")
        return self


class BudgetRule(_Model):
    """A token and/or cost budget of a service over a window of event time (operators/budgets.py)."""

    service: str = Field(min_length=1, description="A service, or * for each service on its own")
    per: Literal["service", "tenant", "user"] = Field(
        "service",
        description="Whose use is counted against the budget: the service's, or each tenant's or user's of it on "
                    "its own",
    )
    max_actors: int = Field(
        default=10_000, ge=1,
        description="Tenants or users tracked per service and rule (per: tenant or user)",
    )
    window: float = Field(86400.0, description="Budget window (1m, 1h, 1d, ...), aligned to UTC (a day from 00:00)")
    tokens: Optional[int] = Field(default=None, ge=1, description="Budget of input + output tokens per window")
    cost_usd: Optional[float] = Field(default=None, gt=0, description="Budget of cost (USD) per window")
    warn: float = Field(default=0.8, gt=0, lt=1, description="Share of the budget that warns")
    forecast: bool = Field(
        True,
        description="Also warn when the burn rate would spend the budget before the window ends",
    )
    forecast_min_elapsed: float = Field(
        300.0,
        description="The forecast needs this much of the window seen (noise guard)",
    )
    forecast_min_share: float = Field(
        default=0.1, ge=0, lt=1,
        description="The forecast needs this share of the budget spent (noise guard)",
    )

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

    window: float = Field(3600.0, description="Window the breaches per request are counted over (at least 1m)")
    max_rate: float = Field(default=0.05, gt=0, le=1, description="Breaches per request beyond which it pages")
    min_events: int = Field(default=20, ge=1, description="Breaches the window needs at least before it pages")

    _dur = field_validator("window", mode="before")(parse_duration)

    @field_validator("window")
    @classmethod
    def _at_least_a_minute(cls, v: float) -> float:
        if v < 60:
            raise ValueError("window must be at least 1m")
        return v


class PoliciesConfig(_Model):
    """Budgets and allowed models per service (operators/budgets.py); alerts of type policy_violation."""

    budgets: List[BudgetRule] = Field(default_factory=list, description="Token and cost budgets")
    allowed_models: Dict[str, List[str]] = Field(
        default_factory=dict,
        description="{service: [models]}: a call of the service to any other model is a policy_violation",
    )
    violation_quiet: float = Field(
        3600.0,
        description="A model violation resolves after this long (event time) without a call to that model",
    )
    guardrail_rate: Optional[GuardrailRate] = Field(
        None,
        description="Page when the share of a service's requests that breach its guardrails (security events "
                    "naming the service) is too high",
    )
    guardrail_audit: Optional[str] = Field(
        default=None, min_length=1,
        description="JSON-lines file every guardrail breach (security event) is appended to for audit, none paged",
    )
    reload: float = Field(
        default=5.0, ge=0,
        description="How often a running flow reads its definition file for a changed policies block "
                    "(sentinel/policy_reload.py); 0: never (a change takes a restart)",
    )

    _dur = field_validator("violation_quiet", "reload", mode="before")(parse_duration)

    @property
    def enabled(self) -> bool:
        return bool(self.budgets or self.allowed_models or self.guardrail_rate)


class StateConfig(_Model):
    key_idle_evict: float = Field(
        6 * 3600.0,
        description="Per-key state (baselines) idle this long in wall-clock time is dropped",
    )
    idle_flush: float = Field(30.0, description="Open windows of a key idle this long (wall clock) are flushed")
    cross_key_file: Optional[str] = Field(
        None,
        description="Where a process keeps its cross-key references (the heavy-user population, the parents' noise"
                    " levels) between runs; {process} is the process id; unset: <recovery "
                    "directory>/sentinel-cross-key-p{process}.json when recovery is on",
    )
    dedup_ids: int = Field(
        default=0, ge=0,
        description="Event ids each process remembers to drop duplicates (a producer's retry, a collector's "
                    "resend); 0 turns the check off (it costs 10-25% of the flow's CPU)",
    )

    _dur = field_validator("key_idle_evict", "idle_flush", mode="before")(parse_duration)


class LimitsConfig(_Model):
    """What one record may carry and how many keys a process keeps (see operators/parse.py)."""

    max_future: float = Field(
        default=600.0, ge=0,
        description="An event this far ahead of its partition's event time (plus the wall time since that last "
                    "moved) is held, and a dead letter future_timestamp unless most events after it are ahead too;"
                    " 0 turns the check off",
    )
    latency_ms: float = Field(
        default=86_400_000.0, gt=0,
        description="Largest plausible latency_ms; beyond it a record is a dead letter out_of_range",
    )
    ttft_ms: float = Field(
        default=86_400_000.0, gt=0,
        description="Largest plausible ttft_ms; beyond it a record is a dead letter out_of_range",
    )
    tokens: int = Field(
        default=1_000_000_000, ge=1,
        description="Largest plausible input_tokens and output_tokens; beyond it a record is a dead letter "
                    "out_of_range",
    )
    cost_usd: float = Field(
        default=100_000.0, gt=0,
        description="Largest plausible cost_usd; beyond it a record is a dead letter out_of_range",
    )
    name_length: int = Field(
        default=256, ge=8,
        description="Longest service, model, user_id, tenant_id, source, ... in characters",
    )
    max_keys: int = Field(
        default=10_000, ge=1,
        description="Service/model keys a process keeps apart; the events of the others are folded into an "
                    "overflow key",
    )
    max_models_per_service: int = Field(default=100, ge=1, description="Models per service a process keeps apart")
    max_services: int = Field(default=1_000, ge=1, description="Services a process keeps apart")
    max_sources: int = Field(default=100_000, ge=1, description="Security sources a process keeps apart")

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

    algorithm: Literal["HS256", "RS256"] = Field(
        "HS256",
        description="JWT algorithm of the bearer tokens: HS256 (shared secret) or RS256 (issuer's public key)",
    )
    secret_env: Optional[str] = Field(
        default=None, min_length=1,
        description="HS256: environment variable holding the shared secret (at least 32 bytes); unset with "
                    "secret_file: SENTINEL_API_SECRET",
    )
    secret_file: Optional[str] = Field(
        default=None, min_length=1,
        description="HS256: file holding the shared secret (instead of secret_env)",
    )
    public_key_file: Optional[str] = Field(
        default=None, min_length=1,
        description="RS256: the issuer's public key (PEM)",
    )
    jwks_file: Optional[str] = Field(
        default=None, min_length=1,
        description="RS256: a JWKS file (the key is picked by the token's kid), instead of public_key_file",
    )
    audience: Optional[str] = Field(None, description="Required aud claim, when set")
    issuer: Optional[str] = Field(None, description="Required iss claim, when set")
    leeway: float = Field(default=30.0, ge=0, le=600, description="Clock skew allowed on exp and nbf")

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

    host: str = Field("127.0.0.1", description="Address sentinel api listens on")
    port: int = Field(default=8080, ge=1, le=65535, description="Port sentinel api listens on")
    auth: ApiAuthConfig = Field(default_factory=ApiAuthConfig, description="How bearer tokens are checked")
    max_silence: float = Field(
        7 * 86400.0,
        description="Silences made through the API last at most this long (and at most control.max_silence)",
    )
    stream_poll: float = Field(
        default=0.5, gt=0, le=10,
        description="How often the live stream looks for newly stored alerts",
    )

    _dur = field_validator("max_silence", "stream_poll", mode="before")(parse_duration)


class FlowConfig(_Model):
    name: str = Field("sentinel", description="Name of the flow")
    source: Source = Field(description="Where events come from: exactly one of kind file, kafka, simulator")
    sinks: List[Sink] = Field(
        default_factory=lambda: [StdoutSink(kind="stdout")],
        description="Where alerts go; every alert goes to each; unset: stdout",
    )
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="The Prometheus endpoint")
    dead_letters: DeadLetters = Field(
        default_factory=lambda: StderrDeadLetters(kind="stderr"),
        description="Where records that cannot be used go; unset: stderr",
    )
    windows: WindowConfig = Field(
        default_factory=WindowConfig,
        description="Event-time windows per service/model key",
    )
    detection: DetectionConfig = Field(
        default_factory=DetectionConfig,
        description="What is judged anomalous, and when",
    )
    state: StateConfig = Field(
        default_factory=StateConfig,
        description="How long per-key state is kept, and where cross-key state lives",
    )
    alerting: AlertingConfig = Field(
        default_factory=AlertingConfig,
        description="Grouping of alerts into incidents, re-pages, silences",
    )
    control: Optional[ControlConfig] = Field(
        None,
        description="Run-time silences and feedback from Kafka; unset: on when the source is Kafka (same brokers),"
                    " off otherwise",
    )
    kafka: Optional[KafkaConnection] = Field(
        None,
        description="The Kafka connection (brokers, security settings) every Kafka client of the flow starts from",
    )
    max_record_bytes: int = Field(default=1_000_000, ge=1024, description="Larger records are dead letters")
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig,
        description="What one record may carry and how many keys a process keeps",
    )
    api: ApiConfig = Field(
        default_factory=ApiConfig,
        description="Settings of sentinel api (the flow itself does not read them)",
    )
    privacy: PrivacyConfig = Field(
        default_factory=PrivacyConfig,
        description="Masking of personal data and secrets in what leaves the flow",
    )
    policies: PoliciesConfig = Field(
        default_factory=PoliciesConfig,
        description="Budgets, allowed models and guardrail rates per service",
    )

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


class KeyDoc(NamedTuple):
    """One key of a flow definition, for ``sentinel check --explain``."""

    path: str  # e.g. "windows.size", "sinks[] (kind: rabbitmq).url"
    type: str  # e.g. "duration", "int >= 1", "earliest | latest"
    default: str  # "required", "" for a section, else the default as YAML would read it
    description: str


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _strip_optional(t: Any) -> Tuple[Any, bool]:
    args = get_args(t)
    if get_origin(t) is Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Union[tuple(rest)]), True
    return t, False


def _parsers(model: type) -> Dict[str, str]:
    """Fields read through parse_duration / parse_size: their type is shown as duration / size."""
    out: Dict[str, str] = {}
    for dec in model.__pydantic_decorators__.field_validators.values():
        names = getattr(getattr(dec.func, "__code__", None), "co_names", ())
        if dec.func is parse_duration or "parse_duration" in names:
            kind = "duration"
        elif dec.func is parse_size or "parse_size" in names:
            kind = "size"
        else:
            continue
        for name in dec.info.fields:
            out[name] = kind
    return out


def _type_name(t: Any) -> str:
    t, optional = _strip_optional(t)
    origin = get_origin(t)
    if origin is Literal:
        text = " | ".join(str(a) for a in get_args(t))
    elif origin is Annotated:
        return _type_name(get_args(t)[0])
    elif origin in (list, List):
        text = f"list of {_type_name(get_args(t)[0])}"
    elif origin in (dict, Dict):
        k, v = get_args(t)
        text = f"map {_type_name(k)} -> {_type_name(v)}"
    elif origin is Union:
        text = " | ".join(_type_name(a) for a in get_args(t))
    elif _is_model(t):
        text = "section"
    else:
        text = getattr(t, "__name__", str(t))
    return text + (" | null" if optional else "")


def _bounds(field: Any) -> str:
    out = []
    for m in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >=")):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sym} {v}")
    return ", ".join(out)


def _default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return ""
        if isinstance(value, list) and value and isinstance(value[0], BaseModel):
            return yaml.safe_dump([v.model_dump(exclude_defaults=True) for v in value],
                                  default_flow_style=True).strip()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def key_reference(model: type = None, prefix: str = "") -> List[KeyDoc]:
    """Every key of a flow definition with its type, default and description (sections before their keys).

    >>> rows = {r.path: r for r in key_reference()}
    >>> rows["windows.size"].type, rows["windows.size"].default
    ('duration', '60.0')
    >>> rows["sinks[] (kind: rabbitmq).spool_max_bytes"].type
    'size, >= 65536'
    """
    model = model or FlowConfig
    rows: List[KeyDoc] = []
    parsers = _parsers(model)
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        inner, _ = _strip_optional(field.annotation)
        # models inside: a section, a list of sections, or a union of sections told apart by kind
        listed = get_origin(inner) in (list, List)
        element = get_args(inner)[0] if listed else inner
        if get_origin(element) is Annotated:
            element = get_args(element)[0]
        variants = [a for a in get_args(element) if _is_model(a)] if get_origin(element) is Union else (
            [element] if _is_model(element) else [])
        typ = _type_name(field.annotation)
        if name in parsers:
            typ = parsers[name] + (" | null" if _strip_optional(field.annotation)[1] else "")
        if variants and len(variants) > 1:
            kinds = [get_args(v.model_fields["kind"].annotation)[0] for v in variants]
            typ = ("list of " if listed else "") + "one of kind " + " | ".join(kinds)
        bounds = _bounds(field)
        rows.append(KeyDoc(path, typ + (", " + bounds if bounds else ""), _default(field), field.description or ""))
        sub = path + ("[]" if listed else "")
        if len(variants) > 1:
            for v in variants:
                kind = get_args(v.model_fields["kind"].annotation)[0]
                rows.extend(key_reference(v, f"{sub} (kind: {kind})"))
        elif variants:
            rows.extend(key_reference(variants[0], sub))
    return rows
