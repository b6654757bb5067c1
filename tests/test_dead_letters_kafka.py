"""Dead letters to a Kafka topic (SPEC section 1), through the real broker."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]


def test_bad_records_land_on_the_dlq_topic_with_reason_and_position(tmp_path, tansu, kafka_topic):
    topic = kafka_topic(partitions=1, prefix="telemetry")
    dlq = kafka_topic(partitions=1, prefix="dlq")
    good = orjson.dumps({"timestamp": "2026-01-05T00:00:00Z", "service": "s", "model": "m", "latency_ms": 10})
    records = [good, b"{not json", b'{"timestamp": 1767571200, "service": "s"}', b"\xff\xfe\x00binary", good]
    p = Producer({"bootstrap.servers": tansu})
    for r in records:
        p.produce(topic, r)
    assert p.flush(30) == 0
    flow = {"source": {"kind": "kafka", "brokers": tansu, "topics": [topic], "eof_after_idle": "3s"},
            "sinks": [], "metrics": {"port": 0}, "dead_letters": {"kind": "kafka", "topic": dlq},
            "control": {"topic": None, "feedback_topic": None}}
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(flow))
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", "-c", str(path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]

    c = Consumer({"bootstrap.servers": tansu, "group.id": "dlq-check", "enable.auto.commit": False})
    c.assign([TopicPartition(dlq, 0, 0)])
    got = []
    for _ in range(100):
        for m in c.consume(10, 0.2):
            if m.error() is None:
                got.append(orjson.loads(m.value()))
        if len(got) >= 3:
            break
    c.close()
    assert [(d["reason"], d["offset"]) for d in got] == [("bad_json", 1), ("missing_field", 2), ("invalid_utf8", 3)]
    assert all(d["source"] == topic and d["partition"] == 0 for d in got)
    assert got[0]["raw"] == "{not json"
    assert "model" in got[1]["detail"]
    assert base64.b64decode(got[2]["raw_base64"]) == b"\xff\xfe\x00binary"
