"""A Kafka partition that has read all there is says so in-band (a quiet marker), on a real broker (Tansu).

The marker comes after the partition's last events, once per quiet spell, and once more at its end of
input; a partition that never delivered anything sends none."""

from __future__ import annotations

import time

from confluent_kafka import Producer

from sentinel.config import load_config_dict
from sources.kafka import KafkaSource


def _produce(tansu: str, topic: str, n: int, t0: int) -> None:
    p = Producer({"bootstrap.servers": tansu, "linger.ms": 0})
    for i in range(n):
        p.produce(topic, b'{"timestamp": %d, "service": "s", "model": "m"}' % (t0 + i))
    p.flush(10)


def _drain(part, seconds: float):
    """(records read, markers) over ``seconds`` of polling, and whether the partition ended."""
    read, marks, ended = 0, [], False
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            batches = part.next_batch()
        except StopIteration:
            ended = True
            break
        for b in batches:
            if b.records is None:
                marks.append((read, b.partition))
            else:
                read += len(b.records)
        time.sleep(0.01)
    return read, marks, ended


def test_a_caught_up_partition_says_it_is_quiet_once_then_again_after_new_events(tansu, kafka_topic):
    topic = kafka_topic(partitions=2, prefix="quiet")
    _produce(tansu, topic, 100, 1767571200)  # the producer's partitioner: both partitions, or one
    cfg = load_config_dict({"source": {"kind": "kafka", "brokers": tansu, "topics": [topic], "batch_size": 50},
                            "metrics": {"port": 0}}).source
    src = KafkaSource(cfg, quiet_after=0.5)
    parts = [src.build_part("input", f"{topic}#{p}", None) for p in (0, 1)]
    try:
        got = [_drain(p, 3.0) for p in parts]
        assert sum(r for r, _, _ in got) == 100
        for (read, marks, ended), p in zip(got, (0, 1)):
            assert not ended
            if read:
                assert marks == [(read, f"{topic}[{p}]")]  # after its last events, and once only
            else:
                assert marks == []  # it fed no key: nothing to tell
        _produce(tansu, topic, 10, 1767571300)
        again = [_drain(p, 3.0) for p in parts]
        assert sum(r for r, _, _ in again) == 10
        for read, marks, _ in again:
            assert len(marks) == (1 if read else 0)
    finally:
        for p in parts:
            p.close()


def test_end_of_input_comes_after_a_quiet_marker(tansu, kafka_topic):
    topic = kafka_topic(partitions=1, prefix="quiet-eof")
    _produce(tansu, topic, 20, 1767571200)
    cfg = load_config_dict({"source": {"kind": "kafka", "brokers": tansu, "topics": [topic], "batch_size": 50,
                                       "eof_after_idle": 0.5},
                            "metrics": {"port": 0}}).source
    part = KafkaSource(cfg, quiet_after=60.0).build_part("input", f"{topic}#0", None)
    try:
        read, marks, ended = _drain(part, 10.0)
        assert (read, marks, ended) == (20, [(20, f"{topic}[0]")], True)
    finally:
        part.close()


def test_a_resumed_partition_says_it_is_quiet_even_if_it_reads_nothing_new(tansu, kafka_topic):
    # The keys it fed before the restart are in the parse step's snapshot: they hear it too.
    topic = kafka_topic(partitions=1, prefix="quiet-resume")
    _produce(tansu, topic, 5, 1767571200)
    cfg = load_config_dict({"source": {"kind": "kafka", "brokers": tansu, "topics": [topic]},
                            "metrics": {"port": 0}}).source
    part = KafkaSource(cfg, quiet_after=0.5).build_part("input", f"{topic}#0", 5)  # resumed at the end
    try:
        assert _drain(part, 3.0) == (0, [(0, f"{topic}[0]")], False)
    finally:
        part.close()
