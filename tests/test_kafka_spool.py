"""The Kafka alert sink spools (sinks/kafka.py KafkaWriter on sinks/spooled.py), against a real
Tansu broker: an outage never blocks write(), what is spooled survives a kill and is delivered,
in order, on the next start. No mocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

import orjson
import pytest

from conftest import _free_port
from flows import make_alert_sinks
from sentinel.config import ConfigError, load_config_dict
from sentinel.core.types import Alert
from sentinel.metrics import get_metrics
from sinks.base import alert_body, encode_alert
from sinks.kafka import KafkaDeliveryError, KafkaWriter, RecordError, decode_record, encode_record
from sinks.spool import Spool
from test_sinks_integration import make_alert, read_partition, sink_errors

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"log_level": 0}  # no librdkafka "connection refused" noise on stderr


def published(sink: str) -> float:
    return get_metrics().alerts_published.labels(sink=sink)._value.get()


def alerts_of(n: int, fingerprints: int = 3) -> List[Dict[str, Any]]:
    statuses = ["firing", "updated", "resolved"]
    return [make_alert(alert_id="al-%03d-%s" % (i, uuid.uuid4().hex[:6]), fingerprint="fp-%d" % (i % fingerprints),
                       status=statuses[i % 3], severity=("high", "low", "critical")[i % 3]) for i in range(n)]


def check_messages(msgs: list, alerts: List[Dict[str, Any]]) -> None:
    """Exactly ``alerts``, in this order, each with key = fingerprint and the SPEC headers."""
    assert [alert_body(orjson.loads(m.value()))["alert_id"] for m in msgs] == [a["alert_id"] for a in alerts]
    for m, a in zip(msgs, alerts):
        assert m.key() == a["fingerprint"].encode()
        assert dict(m.headers()) == {"severity": a["severity"].encode(), "type": a["type"].encode(),
                                     "status": a["status"].encode()}


def test_write_returns_at_once_while_kafka_is_down_and_the_next_start_delivers_in_order(
        tansu: str, kafka_topic, tmp_path: Path) -> None:
    topic = kafka_topic(partitions=1)
    spool_dir = str(tmp_path / "spool")
    down = "127.0.0.1:%d" % _free_port()  # nothing listens there
    writer = KafkaWriter(down, topic, QUIET, spool_dir=spool_dir, drain_timeout=0.5)
    alerts = alerts_of(20)
    before_errors = sink_errors("kafka")
    try:
        for i in range(0, 20, 5):
            batch = alerts[i:i + 5]
            t = time.monotonic()
            writer.write(batch, [encode_alert(a) for a in batch])
            assert time.monotonic() - t < 0.3, "write blocked during the outage"
        assert writer.pending == 20
        with pytest.raises(KafkaDeliveryError, match="20 alerts still not confirmed by %s" % down):
            writer.flush(1.5)
        assert sink_errors("kafka") - before_errors >= 1  # the refused connections were counted
    finally:
        t = time.monotonic()
        writer.close()
    assert time.monotonic() - t < 5  # drain_timeout=0.5 bounds the close
    with Spool(spool_dir) as left:  # still there for the next start
        assert left.pending == 20

    before = published("kafka")
    latency = get_metrics().detection_latency._sum.get()
    again = KafkaWriter(tansu, topic, spool_dir=spool_dir)
    try:
        again.flush(30)
    finally:
        again.close()
    assert published("kafka") - before == 20  # counted on delivery
    assert get_metrics().detection_latency._sum.get() > latency
    check_messages(read_partition(tansu, topic, 0, 21, timeout_s=3), alerts)
    with Spool(spool_dir) as left:
        assert left.pending == 0


_KILLED = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/tests")
from sinks.base import alert_body, encode_alert
from sinks.kafka import KafkaWriter
from test_sinks_integration import make_alert
writer = KafkaWriter(sys.argv[2], sys.argv[3], {"log_level": 0}, spool_dir=sys.argv[4])
alerts = [make_alert(alert_id="killed-%d" % i, fingerprint="fp-%d" % (i % 2), status="firing") for i in range(12)]
for i in range(0, 12, 4):
    writer.write(alerts[i:i + 4], [encode_alert(a) for a in alerts[i:i + 4]])
print(json.dumps([a["alert_id"] for a in alerts]), flush=True)
time.sleep(60)  # killed here: no close, no drain
"""


def test_alerts_spooled_by_a_killed_process_are_delivered_on_the_next_start(
        tansu: str, kafka_topic, tmp_path: Path) -> None:
    topic = kafka_topic(partitions=1)
    spool_dir = str(tmp_path / "spool")
    down = "127.0.0.1:%d" % _free_port()
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(ROOT), down, topic, spool_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        ids = json.loads(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL and len(ids) == 12

    writer = KafkaWriter(tansu, topic, spool_dir=spool_dir)  # the lock died with the process
    try:
        writer.flush(30)
    finally:
        writer.close()
    msgs = read_partition(tansu, topic, 0, 13, timeout_s=3)
    assert [orjson.loads(m.value())["alert_id"] for m in msgs] == ids
    assert [m.key() for m in msgs] == [b"fp-%d" % (i % 2) for i in range(12)]


def test_an_undecodable_spool_record_is_logged_counted_and_skipped(tansu: str, kafka_topic, tmp_path: Path,
                                                                   caplog) -> None:
    topic = kafka_topic(partitions=1)
    spool_dir = str(tmp_path / "spool")
    first, last = alerts_of(2)
    good = encode_record(Alert.of(first), encode_alert(first))
    future = good[:2] + bytes([9]) + good[3:]  # a format version this one does not read
    with Spool(spool_dir) as spool:
        spool.put([good, b"not a record", future, encode_record(Alert.of(last), encode_alert(last))])
    before = sink_errors("kafka")
    with caplog.at_level("ERROR", logger="sinks.kafka"):
        writer = KafkaWriter(tansu, topic, spool_dir=spool_dir)
        try:
            writer.flush(30)
        finally:
            writer.close()
    assert sink_errors("kafka") - before == 2
    assert caplog.text.count("cannot be decoded, skipped") == 2, caplog.text
    assert "version 9" in caplog.text
    check_messages(read_partition(tansu, topic, 0, 3, timeout_s=3), [first, last])


def test_record_framing_round_trips_and_rejects_what_it_cannot_read() -> None:
    alert = Alert.of(make_alert(status="resolved", fingerprint="fp-x"))
    payload = encode_alert(alert)
    key, headers, ingested, body = decode_record(encode_record(alert, payload))
    assert (key, body, ingested) == (b"fp-x", payload, alert.ingested_at) and ingested is not None
    assert headers == [("severity", b"high"), ("type", b"latency"), ("status", b"resolved")]
    bare = alert.copy(fingerprint=None, type=None, ingested_at=None)
    assert decode_record(encode_record(bare, b"{}"))[:3] == (None, [("severity", b"high"), ("status", b"resolved")],
                                                             None)
    record = encode_record(alert, payload)
    for bad, why in [(b"SK", "shorter"), (b"XX" + record[2:], "not a kafka spool record"),
                     (record[:2] + b"\x02" + record[3:], "version 2"), (record[:12], "past the end"),
                     (record[:7] + b"[" + record[8:], "unreadable metadata")]:
        with pytest.raises(RecordError, match=why):
            decode_record(bad)


def test_a_spool_of_a_former_worker_is_adopted_through_the_flow_config(tansu: str, kafka_topic,
                                                                       tmp_path: Path) -> None:
    topic = kafka_topic(partitions=1)
    base = tmp_path / "spool"
    old, new = alerts_of(6), alerts_of(4)
    with Spool(str(base / "worker-1")) as orphan:  # left by a run with 2 workers
        orphan.put([encode_record(Alert.of(a), encode_alert(a)) for a in old])
    cfg = load_config_dict({
        "source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0},
        "sinks": [{"kind": "kafka", "brokers": tansu, "topic": topic, "spool_dir": str(base),
                   "drain_timeout": "5s"}],
    })
    (sink,) = make_alert_sinks(cfg)
    part = sink.build("alerts_out", 0, 1)
    writer = part._writer
    assert writer.spool_dir == str(base / "worker-0") and writer.drain_timeout == 5.0
    part.write_batch(new)
    writer.flush(30)
    part.close()
    assert not (base / "worker-1").exists()
    check_messages(read_partition(tansu, topic, 0, 11, timeout_s=3), old + new)


def test_kafka_sink_spool_config() -> None:
    base = {"source": {"kind": "file", "path": "x"}}
    cfg = load_config_dict({**base, "sinks": [
        {"kind": "kafka", "brokers": "k:9092"},
        {"kind": "kafka", "brokers": "k:9092", "topic": "other", "spool_dir": "/var/spool/k",
         "spool_max_bytes": "64MiB", "drain_timeout": "2m"},
    ]})
    first, second = cfg.sinks
    assert first.spool_base() == os.path.join("sentinel-spool", "kafka-llm.anomalies")
    assert first.spool_max_bytes == 256 << 20 and first.drain_timeout == 10.0
    assert second.spool_base() == "/var/spool/k"
    assert second.spool_max_bytes == 64 << 20 and second.drain_timeout == 120.0
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.spool_max_bytes"):
        load_config_dict({**base, "sinks": [{"kind": "kafka", "brokers": "k:1", "spool_max_bytes": "1k"}]})
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.spool_max_bytes"):
        load_config_dict({**base, "sinks": [{"kind": "kafka", "brokers": "k:1", "spool_max_bytes": "lots"}]})
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.drain_timeout"):
        load_config_dict({**base, "sinks": [{"kind": "kafka", "brokers": "k:1", "drain_timeout": "soon"}]})
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.drain_timeout"):
        load_config_dict({**base, "sinks": [{"kind": "kafka", "brokers": "k:1", "drain_timeout": -1}]})
    # Two sinks on one spool would fight over its lock: refused, whatever their kinds.
    with pytest.raises(ConfigError, match=r"sinks\[1\]\.spool_dir.*own spool_dir"):
        load_config_dict({**base, "sinks": [{"kind": "kafka", "brokers": "a:1"}, {"kind": "kafka", "brokers": "b:1"}]})
    with pytest.raises(ConfigError, match=r"sinks\[1\]\.spool_dir.*own spool_dir"):
        load_config_dict({**base, "sinks": [{"kind": "rabbitmq", "spool_dir": "/s"},
                                            {"kind": "kafka", "brokers": "b:1", "spool_dir": "/s"}]})
