"""Kafka alert sink (SPEC section 2, topic ``llm.anomalies``) and a generic producer.

:class:`KafkaBytesProducer` is a thin, loss-free wrapper around a
``confluent_kafka.Producer`` (idempotent, ``acks=all``): ``send`` queues a
message, ``flush`` returns only once the broker has acknowledged every message
sent so far. librdkafka already retries transient errors internally; a message
it finally reports as failed (delivery timeout, purge after a fatal idempotence
error, ...) is produced again after a backoff (0.5 s doubling to 10 s) and
counted in ``sentinel_sink_errors_total{sink=...}``; a flush that is still
waiting for acknowledgements logs a warning now and then and goes on waiting.
Nothing is dropped silently: the wait ends only when everything is delivered,
or, if ``max_retry_s`` is set, with :class:`KafkaDeliveryError`.

:class:`KafkaWriter` is the alert :class:`~sinks.base.Writer` (key =
``fingerprint``, headers ``severity``, ``type`` and ``status``). It spools like
the RabbitMQ sink (:mod:`sinks.spooled`): ``write`` appends to a per-worker
on-disk spool and returns, so a Kafka outage never blocks detection (until the
spool is full: then backpressure); a sender thread produces the spool in order
and acknowledges records on the broker's delivery reports; ``close()`` drains
for at most ``drain_timeout`` and leaves the rest spooled for the next start.
Spool records carry key and headers with the payload in a small versioned
framing (:func:`encode_record`); one that cannot be decoded is logged, counted
and skipped. The dead-letter sink uses :class:`KafkaBytesProducer` directly.
"""

from __future__ import annotations

import functools
import logging
import os
import struct
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from sentinel.core.signing import SIGNATURE_HEADER, sign
from sentinel.metrics import get_metrics
from sinks.base import Alert
from sinks.spool import DEFAULT_MAX_BYTES
from sinks.spooled import Progress, SpooledWriter

log = logging.getLogger(__name__)

_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 10.0

Headers = List[Tuple[str, bytes]]


class KafkaDeliveryError(RuntimeError):
    """Messages could not be delivered to Kafka within ``max_retry_s``."""


def _brokers(brokers: Union[str, Sequence[str]]) -> str:
    if isinstance(brokers, str):
        return brokers
    return ",".join(brokers)


def producer_config(brokers: Union[str, Sequence[str]], extra_config: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Idempotent, ``acks=all``, ``linger.ms=5``; ``extra_config`` (e.g. security settings) on top.

    Secrets in ``extra_config`` (``sasl.password: {env: NAME}``) are read now (sentinel/tls.py).
    """
    from sentinel.tls import kafka_settings

    config: Dict[str, Any] = {
        "bootstrap.servers": _brokers(brokers),
        "client.id": "llm-sentinel",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
    }
    config.update(kafka_settings(extra_config or {}))
    return config


class KafkaBytesProducer:
    """Loss-free producer of raw bytes to one topic.

    ``send(key, value, headers=None)`` queues; ``flush()`` blocks until every
    queued message is acknowledged (re-producing the ones librdkafka gives up
    on); ``close()`` flushes what is left (bounded by ``close_timeout_s``).
    ``extra_config`` is merged over the defaults (``enable.idempotence``,
    ``acks=all``, ``linger.ms=5``), e.g. for security settings.
    """

    def __init__(
        self,
        brokers: Union[str, Sequence[str]],
        topic: str,
        extra_config: Optional[Dict[str, Any]] = None,
        *,
        metrics_sink: str = "kafka",
        max_retry_s: Optional[float] = None,
        flush_timeout_s: float = 10.0,
        close_timeout_s: float = 30.0,
    ) -> None:
        self.topic = topic
        self.max_retry_s = max_retry_s
        self.flush_timeout_s = flush_timeout_s
        self.close_timeout_s = close_timeout_s
        self._config = producer_config(brokers, extra_config)
        self._config["error_cb"] = self._on_error
        self._errors = get_metrics().sink_errors.labels(sink=metrics_sink)
        self._sink = metrics_sink
        # seq -> [key, value, headers, attempt]; removed once acknowledged.
        self._pending: Dict[int, list] = {}
        self._failed: Dict[int, KafkaError] = {}
        self._seq = 0
        self._fatal: Optional[KafkaError] = None
        self._last_error_log: Dict[int, float] = {}
        self._producer: Optional[Producer] = Producer(self._config)

    # -- callbacks ----------------------------------------------------------

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
            log.error("%s: fatal producer error on topic %r: %s", self._sink, self.topic, err)
            return
        # Transport errors repeat while a broker is down: log each code at most every 10 s.
        now = time.monotonic()
        if now - self._last_error_log.get(err.code(), -1e9) >= 10.0:
            self._last_error_log[err.code()] = now
            log.warning("%s: producer error (librdkafka retries): %s", self._sink, err)

    def _on_delivery(self, seq: int, attempt: int, err: Optional[KafkaError], msg: Any) -> None:
        entry = self._pending.get(seq)
        if entry is None or entry[3] != attempt:
            return  # report of an attempt that was superseded
        if err is None:
            del self._pending[seq]
            self._failed.pop(seq, None)
        else:
            self._failed[seq] = err
            if err.fatal():
                self._fatal = err

    # -- producing ----------------------------------------------------------

    @property
    def pending(self) -> int:
        """Messages sent but not yet acknowledged."""
        return len(self._pending)

    def send(self, key: Optional[bytes], value: bytes, headers: Optional[Headers] = None) -> None:
        if self._producer is None:
            raise RuntimeError("%s: producer for topic %r is closed" % (self._sink, self.topic))
        self._seq += 1
        self._pending[self._seq] = [key, value, headers, 0]
        self._produce(self._seq)
        self._producer.poll(0)

    def _produce(self, seq: int) -> None:
        entry = self._pending[seq]
        entry[3] += 1
        callback = functools.partial(self._on_delivery, seq, entry[3])
        while True:
            try:
                self._producer.produce(
                    self.topic, value=entry[1], key=entry[0], headers=entry[2], on_delivery=callback
                )
                return
            except BufferError:
                # Local queue full: serve delivery reports to make room (backpressure).
                self._producer.poll(0.1)
            except KafkaException as exc:
                self._failed[seq] = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else KafkaError(
                    KafkaError._FAIL, str(exc)
                )
                return

    def _replace_producer(self) -> None:
        """After a fatal (idempotence) error the producer is unusable: start a new one."""
        old, self._producer = self._producer, None
        fatal, self._fatal = self._fatal, None
        log.warning("%s: recreating the producer for topic %r after fatal error: %s", self._sink, self.topic, fatal)
        if old is not None:
            try:
                old.purge()
                old.flush(0)  # serves the purge reports: purged messages are marked failed
            except Exception:  # pragma: no cover - best effort on a dead producer
                pass
        for seq in self._pending:
            self._failed.setdefault(seq, fatal or KafkaError(KafkaError._FATAL))
        self._producer = Producer(self._config)

    def flush(self) -> None:
        """Block until every message sent so far is acknowledged by the broker."""
        if self._producer is None:
            raise RuntimeError("%s: producer for topic %r is closed" % (self._sink, self.topic))
        start = time.monotonic()
        deadline = None if self.max_retry_s is None else start + self.max_retry_s
        backoff = _BACKOFF_START_S
        while self._pending:
            slice_s = self.flush_timeout_s
            if deadline is not None:
                slice_s = max(0.0, min(slice_s, deadline - time.monotonic()))
            in_queue = self._producer.flush(slice_s)
            if self._fatal is not None:
                self._replace_producer()
            if not self._pending:
                break
            elapsed = time.monotonic() - start
            if self._failed:
                self._errors.inc(len(self._failed))
                sample = next(iter(self._failed.values()))
                if deadline is not None and time.monotonic() >= deadline:
                    raise KafkaDeliveryError(
                        "%s: gave up after %.1fs (max_retry_s=%s): %d messages to topic %r not delivered; "
                        "last error: %s" % (self._sink, elapsed, self.max_retry_s, len(self._pending), self.topic, sample)
                    )
                log.warning(
                    "%s: %d messages to topic %r failed (%s); producing them again in %.1fs",
                    self._sink, len(self._failed), self.topic, sample, backoff,
                )
                if deadline is not None:
                    time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
                else:
                    time.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                retry = sorted(self._failed)
                self._failed.clear()
                for seq in retry:
                    if seq in self._pending:
                        self._produce(seq)
                continue
            if deadline is not None and time.monotonic() >= deadline:
                raise KafkaDeliveryError(
                    "%s: gave up after %.1fs (max_retry_s=%s): %d messages to topic %r still not acknowledged "
                    "(is %s reachable?)"
                    % (self._sink, elapsed, self.max_retry_s, len(self._pending), self.topic, self._config["bootstrap.servers"])
                )
            log.warning(
                "%s: %d messages to topic %r not acknowledged after %.1fs (%d in the local queue); still waiting",
                self._sink, len(self._pending), self.topic, elapsed, in_queue,
            )

    def close(self) -> None:
        producer = self._producer
        if producer is None:
            return
        left = producer.flush(self.close_timeout_s)
        if self._pending or left:
            log.error(
                "%s: closing with %d messages to topic %r not acknowledged after %.0fs",
                self._sink, max(len(self._pending), left), self.topic, self.close_timeout_s,
            )
        self._producer = None


# -- spool records ---------------------------------------------------------------

# <magic "SK"><u8 version><u32 length of the JSON metadata><metadata><payload>;
# metadata {"k": key or null, "h": [[name, value], ...], "in": ingested_at or null}.
_FRAME = struct.Struct("<2sBI")
_MAGIC = b"SK"
RECORD_VERSION = 1


class RecordError(ValueError):
    """A spool record this version cannot decode (corrupt, or written by another version)."""


def encode_record(alert: Alert, payload: bytes, sign_key: Optional[bytes] = None) -> bytes:
    """What the spool keeps for one alert: key (fingerprint), headers and the payload.

    With ``sign_key``, a ``sentinel-signature`` header (HMAC-SHA256 of the
    payload, as on control messages) lets the control listener tell the flow's
    own alerts from records planted on the topic.
    """
    fp = alert.fingerprint
    headers = [[field, str(getattr(alert, field))] for field in ("severity", "type", "status")
               if getattr(alert, field) is not None]
    if sign_key is not None:
        headers.append([SIGNATURE_HEADER, sign(sign_key, payload)])
    meta = orjson.dumps({"k": None if fp is None else str(fp), "h": headers, "in": alert.ingested_at})
    return _FRAME.pack(_MAGIC, RECORD_VERSION, len(meta)) + meta + payload


def decode_record(record: bytes) -> Tuple[Optional[bytes], Headers, Optional[float], bytes]:
    """``(key, headers, ingested_at, payload)``; :class:`RecordError` when the record is not one."""
    if len(record) < _FRAME.size:
        raise RecordError("%d bytes, shorter than the record header" % len(record))
    magic, version, n = _FRAME.unpack_from(record, 0)
    if magic != _MAGIC:
        raise RecordError("not a kafka spool record (starts with %r)" % bytes(record[:2]))
    if version != RECORD_VERSION:
        raise RecordError("record format version %d, this version reads %d" % (version, RECORD_VERSION))
    end = _FRAME.size + n
    if end > len(record):
        raise RecordError("metadata of %d bytes runs past the end of the record" % n)
    try:
        meta = orjson.loads(record[_FRAME.size:end])
        key, headers, ingested = meta["k"], meta["h"], meta["in"]
        if not (key is None or isinstance(key, str)) or not isinstance(headers, list):
            raise TypeError("bad key or headers")
        if not (ingested is None or isinstance(ingested, (int, float))):
            raise TypeError("bad ingested_at")
        out: Headers = [(str(name), str(value).encode()) for name, value in headers]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RecordError("unreadable metadata (%s: %s)" % (type(exc).__name__, exc)) from None
    return (None if key is None else key.encode()), out, ingested, record[end:]


# -- the alert writer --------------------------------------------------------------

_WAITING, _DELIVERED, _SKIPPED = "waiting", "delivered", "skipped"
# Errors no retry fixes: the sender stops, the next write raises.
_FATAL_CODES = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION,
}


class _Undelivered(Exception):
    """The broker did not take a message (its delivery report carries ``err``)."""

    def __init__(self, err: KafkaError) -> None:
        super().__init__(err)
        self.err = err


def _kafka_error(exc: BaseException) -> Optional[KafkaError]:
    if isinstance(exc, _Undelivered):
        return exc.err
    if exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


class KafkaWriter(SpooledWriter):
    """Alerts to a Kafka topic: key = fingerprint, headers severity, type and status.

    Spooled (:class:`~sinks.spooled.SpooledWriter`): ``write`` appends to the
    worker's on-disk spool and returns; a sender thread produces the spool in
    order (idempotent producer, ``acks=all``) and acknowledges a record once
    the broker's delivery report for it, and for every record before it, says
    delivered. A failed delivery report, a fatal producer error (the producer
    is recreated) or a broker connection error is logged and counted in
    ``sentinel_sink_errors_total{sink="kafka"}``; failed records are produced
    again, from the first unacknowledged one, after a backoff. A spool record
    that cannot be decoded is logged, counted there too, and skipped.
    """

    kind = "kafka"
    error_class = KafkaDeliveryError
    retry_on = (KafkaException, _Undelivered)
    step_timeout = 2.0

    def __init__(
        self,
        brokers: Union[str, Sequence[str]],
        topic: str = "llm.anomalies",
        extra_config: Optional[Dict[str, Any]] = None,
        spool_dir: Optional[str] = None,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        drain_timeout: float = 10.0,
        adopt_spools: Sequence[str] = (),
        sign_key: Optional[bytes] = None,
    ) -> None:
        self.topic = topic
        self._sign_key = sign_key
        self._config = producer_config(brokers, extra_config)
        self._config["error_cb"] = self._on_error
        self._producer: Optional[Producer] = None
        self._producer_fatal: Optional[KafkaError] = None
        self._last_error_log: Dict[int, float] = {}
        super().__init__(spool_dir or os.path.join("sentinel-spool", "kafka-" + topic, "worker-0"),
                         spool_max_bytes, drain_timeout, adopt_spools)

    def _where(self) -> str:
        return "%s (topic %r)" % (self._config["bootstrap.servers"], self.topic)

    def _open(self) -> None:
        self._producer = Producer(self._config)  # a bad setting fails here, at start-up

    def _disconnect(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            # What is still queued stays in the spool for the next start.
            try:
                producer.purge()
                producer.flush(0)
            except Exception:  # pragma: no cover - best effort on a dead producer
                pass

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback (on the sender thread, from poll)."""
        if err.fatal():
            self._producer_fatal = err
            return
        self._errors.inc()
        self._last_error = "%s (librdkafka retries)" % err
        # Transport errors repeat while a broker is down: log each code at most every 10 s.
        now = time.monotonic()
        if now - self._last_error_log.get(err.code(), -1e9) >= 10.0:
            self._last_error_log[err.code()] = now
            log.warning("kafka: producer error on %s (librdkafka retries; alerts stay spooled): %s",
                        self._where(), err)

    def _record(self, alert: Alert, payload: bytes) -> bytes:
        return encode_record(alert, payload, self._sign_key)

    def _deliver(self, batch: List[Tuple[int, bytes]], progress: Progress) -> None:
        if self._producer is None:
            self._producer = Producer(self._config)
        producer = self._producer
        state: List[Any] = [_WAITING] * len(batch)
        ingested: List[Optional[float]] = [None] * len(batch)
        for i, (seq, record) in enumerate(batch):
            try:
                key, headers, ingested[i], payload = decode_record(record)
            except RecordError as exc:
                self._errors.inc()
                log.error("kafka: spool record %d (spool %s) cannot be decoded, skipped: %s", seq, self.spool_dir, exc)
                state[i] = _SKIPPED
                continue
            callback = functools.partial(_on_delivery, state, i)
            while True:
                try:
                    producer.produce(self.topic, value=payload, key=key, headers=headers, on_delivery=callback)
                    break
                except BufferError:  # local queue full: serve delivery reports to make room
                    producer.poll(0.1)
        while any(outcome is _WAITING for outcome in state) and not self._past_drain_deadline():
            producer.poll(0.1)
            if self._producer_fatal is not None:
                raise KafkaException(self._producer_fatal)
        for i, (seq, _) in enumerate(batch):
            outcome = state[i]
            if outcome is _DELIVERED:
                progress.confirm(seq, ingested[i])
            elif outcome is _SKIPPED:
                progress.skip(seq)
            elif outcome is _WAITING:
                return  # drain deadline: the rest stays spooled
            else:
                raise _Undelivered(outcome)

    def _fatal_error(self, exc: BaseException) -> Optional[KafkaDeliveryError]:
        err = _kafka_error(exc)
        if err is not None and err.code() in _FATAL_CODES:
            return KafkaDeliveryError("kafka: %s refused the alerts (%s): check the sink's security settings "
                                      "(config) and the topic's ACLs" % (self._where(), err))
        return None

    def _failure(self, exc: BaseException, backoff: float) -> str:
        err = _kafka_error(exc)
        if self._producer_fatal is not None or (err is not None and err.fatal()):
            # An idempotent producer is unusable after a fatal error: start a new one.
            self._disconnect()
            self._producer_fatal = None
        return super()._failure(exc, backoff)


def _on_delivery(state: List[Any], i: int, err: Optional[KafkaError], msg: Any) -> None:
    state[i] = _DELIVERED if err is None else err
