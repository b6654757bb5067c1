"""Kafka source on confluent-kafka: one Bytewax partition per topic partition.

Offsets live in the flow's recovery snapshots (exactly where the next batch
starts); with a ``group_id`` they are also committed to the broker so lag
tools see the consumer. Partitions are spread over workers by Bytewax.
``eof_after_idle`` turns the source into a bounded replay of a backlog.

A partition that has read everything there is says so in-band: after
``quiet_after`` seconds without a message (and at its end of input) it hands
the flow one :meth:`RawBatch.quiet` marker, which comes after its last
events. Until then a key's windows wait for the partition, however far ahead
the others have run (operators/windowing.py): its events may be delayed, not
over.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from sentinel.config import KafkaSource as KafkaSourceConfig
from sentinel.tls import kafka_settings
from sentinel import shutdown
from sentinel.events import RawBatch, RawRecords
from sentinel.metrics import get_metrics

log = logging.getLogger(__name__)

BASE_CONSUMER_CONFIG: Dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.partition.eof": False,
    "fetch.queue.backoff.ms": 5,
    "fetch.wait.max.ms": 50,
    "queued.min.messages": 20000,
    "session.timeout.ms": 6000,
    "partition.assignment.strategy": "range",
}


# An empty poll never blocks the worker (it runs every partition it owns and
# the rest of the dataflow): the partition asks Bytewax to wake it again after
# this wait, doubling while it stays empty, reset by the first message.
IDLE_POLL_MIN_S = 0.005
IDLE_POLL_MAX_S = 0.1


def consumer_config(brokers: str, group_id: Optional[str], extra: Dict[str, Any]) -> Dict[str, Any]:
    cfg = dict(BASE_CONSUMER_CONFIG)
    cfg["bootstrap.servers"] = brokers
    cfg["group.id"] = group_id or "sentinel-unmanaged"
    cfg.update(kafka_settings(extra))  # secrets ({env: NAME}, {file: PATH}) read now
    return cfg


_quiet = logging.getLogger("sentinel.kafka.librdkafka")
_quiet.propagate = False
_quiet.addHandler(logging.NullHandler())


def broker_problem(brokers: str, extra: Dict[str, Any], timeout: float = 10.0,
                   refused_only: bool = False) -> Optional[str]:
    """Why the Kafka cluster at ``brokers`` cannot be used with these settings, in one line; None when it answers.

    A login the brokers refuse (SASL, ``_AUTHENTICATION``) is said so at once,
    without waiting out ``timeout``. With ``refused_only`` brokers that do not
    answer are no problem (a spooled sink waits for them; the first error that
    is not a refusal ends the wait), while a refused login, a secret that
    cannot be read and a bad setting still are. librdkafka's own log lines (one
    per failed connection attempt) are not printed; the last error it reported
    is named instead (librdkafka never puts a password in one).
    """
    errors: List[Any] = []
    try:
        conf = consumer_config(brokers, None, extra)
    except ValueError as ex:  # a secret that cannot be read
        return str(ex)
    conf["logger"] = _quiet
    conf["error_cb"] = errors.append
    try:
        c = Consumer(conf)
    except Exception as ex:  # a bad setting (KafkaException / ValueError)
        return f"invalid Kafka settings: {ex}"
    deadline = time.monotonic() + timeout
    last: Any = None
    try:
        while True:
            try:
                c.list_topics(timeout=max(0.05, min(1.0, deadline - time.monotonic())))
                return None
            except Exception as ex:
                last = ex
            c.poll(0)  # serves error_cb: list_topics does not
            refused = [e for e in errors if isinstance(e, KafkaError) and e.code() == KafkaError._AUTHENTICATION]
            if refused:
                return (f"Kafka brokers {brokers} refused the login ({refused[-1].str()}): check "
                        f"security.protocol, sasl.mechanisms, sasl.username and the password")
            if time.monotonic() >= deadline or (refused_only and errors):
                break  # the brokers were reached or not, and did not refuse the login
        if refused_only:
            return None
        why = (errors[-1].str() if isinstance(errors[-1], KafkaError) else str(errors[-1])) if errors else str(last)
        return f"no answer from Kafka brokers {brokers} within {timeout:g}s ({why})"
    finally:
        c.close()


class _KafkaPartition(StatefulSourcePartition[RawBatch, int]):
    def __init__(self, cfg: KafkaSourceConfig, topic: str, partition: int, encoding: str,
                 resume: Optional[int], partitions: int = 2, quiet_after: float = 10.0) -> None:
        self._cfg = cfg
        self._quiet_after = quiet_after
        # Messages handed on since the partition last said it was quiet; the end of input, once said.
        # Resumed, it may have fed keys before the restart (they are in the parse step's snapshot):
        # it tells them too, once it has caught up.
        self._since_quiet = 0 if resume is None else 1
        self._ended = False
        self._partitions = partitions
        self._topic = topic
        self._partition = partition
        self._encoding = encoding
        self._name = f"{topic}[{partition}]"
        self._consumer = Consumer(consumer_config(cfg.brokers, cfg.group_id, cfg.config))
        if resume is not None:
            start = resume
        else:
            start = OFFSET_BEGINNING if cfg.start == "earliest" else OFFSET_END
            if cfg.group_id:
                committed = self._consumer.committed([TopicPartition(topic, partition)], timeout=10)
                if committed and committed[0].offset >= 0:
                    start = committed[0].offset
        # Learn the partition's leader before assigning it: assigned without
        # one, librdkafka's first offset query fails and is retried only
        # after 500 ms, a start-up delay on every run.
        try:
            self._consumer.list_topics(topic, timeout=10)
        except Exception as ex:  # librdkafka keeps retrying on its own
            log.warning("kafka source %s: metadata: %s", self._name, ex)
        self._consumer.assign([TopicPartition(topic, partition, start)])
        self._next = resume  # offset of the next message to read
        self._last_msg = time.monotonic()
        self._commit_at = 0.0
        self._consumed = 0
        self._idle_wait = 0.0
        self._awake: Optional[datetime] = None
        self._lag = get_metrics().kafka_consumer_lag.labels(topic=topic, partition=str(partition))
        self._lag_at = 0.0
        log.info("kafka: reading %s from %s", self._name, start)

    def _update_lag(self, now: float) -> None:
        """``sentinel_kafka_consumer_lag``: the partition's high watermark as the last fetch reported it, less
        the next offset to read (at most once a second; no request to the broker)."""
        if now < self._lag_at or self._next is None:
            return
        self._lag_at = now + 1.0
        try:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(self._topic, self._partition), cached=True)
        except Exception:  # no fetch response yet
            return
        if high is not None and high >= 0:
            self._lag.set(max(0, high - self._next))

    def _quiet(self) -> List[RawBatch]:
        self._since_quiet = 0
        return [RawBatch.quiet(self._name, time.time(), self._partitions)]

    def next_batch(self) -> List[RawBatch]:
        if shutdown.requested() or self._ended:
            raise StopIteration()
        msgs = self._consumer.consume(self._cfg.batch_size, 0)
        now = time.monotonic()
        if not msgs:
            idle = self._cfg.eof_after_idle
            if idle is not None and now - self._last_msg >= idle:
                log.info("kafka: %s idle for %.0fs after %d messages: end of input", self._name, idle,
                         self._consumed)
                if self._since_quiet:
                    self._ended = True  # the marker first: the keys it fed stop waiting for it
                    return self._quiet()
                raise StopIteration()
            if self._since_quiet and now - self._last_msg >= self._quiet_after:
                return self._quiet()
            self._update_lag(now)
            self._idle_wait = min(IDLE_POLL_MAX_S, max(IDLE_POLL_MIN_S, 2 * self._idle_wait))
            self._awake = datetime.now(timezone.utc) + timedelta(seconds=self._idle_wait)
            return []
        self._idle_wait = 0.0
        self._awake = None
        topic, part = self._topic, self._partition
        if any([m.error() is not None for m in msgs]):
            msgs = self._without_errors(msgs)
        values = [m.value() or b"" for m in msgs]
        offsets = [m.offset() for m in msgs]
        if offsets:
            self._next = offsets[-1] + 1
        self._last_msg = now
        self._consumed += len(values)
        self._since_quiet += len(values)
        self._update_lag(now)
        if self._cfg.group_id and now >= self._commit_at and self._next is not None:
            self._commit_at = now + 5.0
            self._consumer.commit(offsets=[TopicPartition(topic, part, self._next)], asynchronous=True)
        if not values:
            return []
        return [RawBatch(self._name, RawRecords(topic, part, values, offsets, self._encoding), time.time(),
                         self._partitions)]

    def _without_errors(self, msgs: List[Any]) -> List[Any]:
        """The messages of a fetch that are messages; errors are logged (a fatal one raises)."""
        out = []
        for m in msgs:
            err = m.error()
            if err is None:
                out.append(m)
                continue
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            if err.fatal():
                raise RuntimeError(f"kafka source {self._name}: fatal error: {err}")
            log.warning("kafka source %s: %s", self._name, err)
        return out

    def next_awake(self) -> Optional[datetime]:
        return self._awake

    def snapshot(self) -> Optional[int]:
        return self._next

    def close(self) -> None:
        try:
            if self._cfg.group_id and self._next is not None:
                self._consumer.commit(offsets=[TopicPartition(self._topic, self._partition, self._next)],
                                      asynchronous=False)
        except Exception as ex:  # commit is for lag tools only; offsets are in the snapshot
            log.warning("kafka source %s: final commit failed: %s", self._name, ex)
        self._consumer.close()


class KafkaSource(FixedPartitionedSource[RawBatch, Optional[int]]):
    """``quiet_after``: seconds without a message after which a partition says it is quiet (the flow
    passes ``windows.idle_partition``)."""

    def __init__(self, cfg: KafkaSourceConfig, quiet_after: float = 10.0) -> None:
        self.cfg = cfg
        self.quiet_after = quiet_after
        self._encodings = {t.name: t.encoding for t in cfg.topic_specs()}

    def list_parts(self) -> List[str]:
        c = Consumer(consumer_config(self.cfg.brokers, None, self.cfg.config))
        try:
            parts: List[str] = []
            for topic in self._encodings:
                md = c.list_topics(topic, timeout=30)
                t = md.topics.get(topic)
                if t is None or t.error is not None:
                    raise RuntimeError(
                        f"kafka source: topic {topic!r} not available on {self.cfg.brokers}: "
                        f"{t.error if t is not None else 'no metadata'}"
                    )
                parts.extend(f"{topic}#{p}" for p in sorted(t.partitions))
            self._n_parts = len(parts)
            return parts
        finally:
            c.close()

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _KafkaPartition:
        topic, _, p = for_part.rpartition("#")
        return _KafkaPartition(self.cfg, topic, int(p), self._encodings[topic], resume_state,
                               getattr(self, "_n_parts", 2), self.quiet_after)
