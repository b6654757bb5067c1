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

:class:`KafkaWriter` is the alert :class:`~sinks.base.Writer` on top of it
(key = ``fingerprint``, headers ``severity``, ``type`` and ``status``); its
``close()`` flushes what is still unacknowledged (bounded by ``close_timeout_s``). The dead-letter
sink reuses :class:`KafkaBytesProducer` directly.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from confluent_kafka import KafkaError, KafkaException, Producer

from sentinel.metrics import get_metrics
from sinks.base import Alert, Writer

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
        self._config: Dict[str, Any] = {
            "bootstrap.servers": _brokers(brokers),
            "client.id": "llm-sentinel",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
        self._config.update(extra_config or {})
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


class KafkaWriter(Writer):
    """Alerts to a Kafka topic: key = fingerprint, headers severity, type and status."""

    kind = "kafka"

    def __init__(
        self,
        brokers: Union[str, Sequence[str]],
        topic: str = "llm.anomalies",
        extra_config: Optional[Dict[str, Any]] = None,
        max_retry_s: Optional[float] = None,
    ) -> None:
        self.topic = topic
        self._producer = KafkaBytesProducer(
            brokers, topic, extra_config, metrics_sink=self.kind, max_retry_s=max_retry_s
        )

    def write(self, alerts: List[Alert], payloads: List[bytes]) -> None:
        for alert, payload in zip(alerts, payloads):
            fp = alert.get("fingerprint")
            headers: Headers = []
            for field in ("severity", "type", "status"):
                value = alert.get(field)
                if value is not None:
                    headers.append((field, str(value).encode()))
            self._producer.send(None if fp is None else str(fp).encode(), payload, headers)
        self._producer.flush()

    def close(self) -> None:
        self._producer.close()
