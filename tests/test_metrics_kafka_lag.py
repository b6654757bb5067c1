"""sentinel_kafka_consumer_lag on a real broker: messages behind, per topic and partition, from what the consumer sees."""

from __future__ import annotations

import time

from confluent_kafka import Producer

from sentinel.config import load_config_dict
from sentinel.metrics import get_metrics
from sources.kafka import KafkaSource


def _lag(topic: str) -> float:
    return get_metrics().registry.get_sample_value("sentinel_kafka_consumer_lag",
                                                   {"topic": topic, "partition": "0"})


def test_consumer_lag_counts_the_messages_behind_and_falls_to_zero(tansu, kafka_topic):
    topic = kafka_topic(partitions=1, prefix="lag")
    p = Producer({"bootstrap.servers": tansu, "linger.ms": 0})
    for i in range(300):
        p.produce(topic, b'{"timestamp": %d, "service": "s", "model": "m"}' % (1767571200 + i))
        p.flush(10)  # one record per produce request: the broker's high watermark is exact
    cfg = load_config_dict({"source": {"kind": "kafka", "brokers": tansu, "topics": [topic], "batch_size": 50},
                            "metrics": {"port": 0}}).source
    part = KafkaSource(cfg).build_part("input", f"{topic}#0", None)
    try:
        read, seen = 0, []
        deadline = time.monotonic() + 60
        while read < 300 and time.monotonic() < deadline:
            for b in part.next_batch():
                read += len(b.records)
                time.sleep(1.05)  # the gauge is refreshed at most once a second
                part._update_lag(time.monotonic())
                seen.append((read, _lag(topic)))
        assert read == 300
        behind = [(n, lag) for n, lag in seen if lag]
        assert behind, seen
        assert all(lag <= 300 - n for n, lag in behind), seen  # never more than what is left to read
        assert seen[-1][1] == 0, seen
    finally:
        part.close()
