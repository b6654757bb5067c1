"""Alert sinks against the real brokers: RabbitMQ on 127.0.0.1:5672, a Tansu
Kafka broker started for the session, embedded Qdrant. No mocks."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from datetime import datetime
from typing import Any, Dict, List

import orjson
import pika
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from conftest import TANSU_CONSUMER_CONFIG
from sentinel.metrics import get_metrics
from conftest import drain_queue as drain
from sinks.base import encode_alert
from sinks.kafka import KafkaBytesProducer, KafkaDeliveryError, KafkaWriter
from sinks.qdrant import QdrantWriter, alert_vector, point_id
from sentinel.core.types import Alert
from sinks.rabbitmq import RabbitMQDeliveryError, RabbitMQWriter


def make_alert(**overrides: Any) -> Dict[str, Any]:
    """An alert with every SPEC section 2 field (plus an internal one that must not leak)."""
    alert_id = overrides.pop("alert_id", "al-" + uuid.uuid4().hex)
    alert: Dict[str, Any] = {
        "alert_id": alert_id,
        "fingerprint": "fp-chat-api-gpt-4o-latency",
        "type": "latency",
        "severity": "high",
        "service": "chat-api",
        "model": "gpt-4o",
        "subject": None,
        "metric": "latency_ms_p95",
        "observed": 4200.0,
        "expected": 850.0,
        "score": 0.97,
        "detector": "robust_zscore",
        "event_time": "2025-01-15T10:32:00+00:00",
        "detected_at": "2025-01-15T10:33:01.250000+00:00",
        "summary": "p95 latency of chat-api/gpt-4o is 4.9x its baseline.",
        "evidence": {"window_s": 60, "samples": 412},
        "root_cause_hints": ["provider region us-east-1 degraded"],
        "similar_incidents": [],
        "status": "firing",
        "_ingested_at": time.time(),
    }
    alert.update(overrides)
    return alert


def sink_errors(sink: str) -> float:
    return get_metrics().sink_errors.labels(sink=sink)._value.get()


# -- RabbitMQ ------------------------------------------------------------------




def test_rabbitmq_routes_by_severity(rabbitmq_url: str, fresh_rabbit, tmp_path) -> None:
    names = fresh_rabbit()
    writer = RabbitMQWriter(url=rabbitmq_url, spool_dir=str(tmp_path / "spool"), **names)
    try:
        high = make_alert(severity="high", type="latency", status="escalated")
        critical = make_alert(severity="critical", type="coordinated_attack", model=None, subject="203.0.113.7")
        low = make_alert(severity="low", type="cost", fingerprint="fp-cost")
        info = make_alert(severity="info", type="drift", fingerprint="fp-drift")
        medium = make_alert(severity="medium", type="ttft", fingerprint="fp-ttft")
        alerts = [high, low, critical, info, medium]
        writer.write(alerts, [encode_alert(a) for a in alerts])  # spooled
        writer.flush(30)  # confirmed by the broker
        assert writer.pending == 0
    finally:
        writer.close()

    got_high = drain(rabbitmq_url, names["high_queue"])
    got_low = drain(rabbitmq_url, names["low_queue"])
    assert [p.message_id for _, p, _ in got_high] == [high["alert_id"], critical["alert_id"]]
    assert [p.message_id for _, p, _ in got_low] == [low["alert_id"], info["alert_id"], medium["alert_id"]]

    by_id = {a["alert_id"]: a for a in alerts}
    for method, props, body in got_high + got_low:
        alert = by_id[props.message_id]
        assert method.exchange == names["exchange"]
        assert method.routing_key == "alert.%s.%s" % (alert["severity"], alert["type"])
        assert props.content_type == "application/json"
        assert props.delivery_mode == 2
        # The AMQP timestamp is the alert's detected_at: the same on every redelivery.
        detected = datetime.fromisoformat(alert["detected_at"]).timestamp()
        assert isinstance(props.timestamp, int) and props.timestamp == int(detected)
        assert props.headers["severity"] == alert["severity"]
        assert props.headers["type"] == alert["type"]
        assert props.headers["service"] == alert["service"]
        assert props.headers.get("status") == alert.get("status")
        decoded = json.loads(body)
        assert decoded == {k: v for k, v in alert.items() if not k.startswith("_")}
        assert "_ingested_at" not in decoded


def test_rabbitmq_topology_is_durable(rabbitmq_url: str, fresh_rabbit, tmp_path) -> None:
    names = fresh_rabbit()
    RabbitMQWriter(url=rabbitmq_url, spool_dir=str(tmp_path / "spool"), **names).close()
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        ch = conn.channel()
        # Passive re-declaration with other flags fails with 406, so declare
        # with the expected ones: succeeds only if they match.
        ch.exchange_declare(names["exchange"], exchange_type="topic", durable=True, passive=False)
        ch.queue_declare(names["high_queue"], durable=True)
        ch.queue_declare(names["low_queue"], durable=True)
    finally:
        conn.close()


def _close_connection_named(name: str) -> None:
    ctl = shutil.which("rabbitmqctl")
    assert ctl, "rabbitmqctl is needed to drop a connection from the broker side"
    deadline = time.monotonic() + 15
    while True:
        # Table format: "<pid>\t<client properties>"; close_connection wants that pid.
        out = subprocess.run(
            [ctl, "-q", "list_connections", "pid", "client_properties", "--no-table-headers"],
            capture_output=True, text=True, timeout=30,
        ).stdout
        pids = [line.split("\t", 1)[0] for line in out.splitlines() if '"%s"' % name in line]
        if pids:
            break
        assert time.monotonic() < deadline, "connection %r not listed by rabbitmqctl" % name
        time.sleep(0.2)
    for pid in pids:
        subprocess.run([ctl, "-q", "close_connection", pid, "sentinel test: simulated outage"],
                       check=True, capture_output=True, timeout=30)


def test_rabbitmq_reconnects_after_broker_closes_connection(rabbitmq_url: str, fresh_rabbit, tmp_path,
                                                            caplog) -> None:
    names = fresh_rabbit()
    conn_name = "sentinel-test-" + uuid.uuid4().hex[:8]
    writer = RabbitMQWriter(url=rabbitmq_url, connection_name=conn_name, spool_dir=str(tmp_path / "spool"), **names)
    try:
        first = make_alert(severity="critical")
        writer.write([first], [encode_alert(first)])
        writer.flush(30)
        with caplog.at_level("INFO", logger="sinks.rabbitmq"):
            _close_connection_named(conn_name)
            time.sleep(0.3)  # let the close reach the client socket
            second = make_alert(severity="critical")
            writer.write([second], [encode_alert(second)])
            writer.flush(30)
    finally:
        writer.close()
    got = [p.message_id for _, p, _ in drain(rabbitmq_url, names["high_queue"])]
    assert got == [first["alert_id"], second["alert_id"]]
    # The dead connection is noticed while idle (process_data_events) or by the
    # publish itself: either way it is dropped, and the sender connects again.
    text = caplog.text
    assert "idle connection lost" in text or "delivery to" in text, text
    assert "connected to" in text, text


def test_rabbitmq_unroutable_is_retried_then_raises(rabbitmq_url: str, fresh_rabbit, tmp_path) -> None:
    names = fresh_rabbit()
    # Exchange without any queue bound: every publish comes back unroutable.
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    conn.channel().exchange_declare(names["exchange"], exchange_type="topic", durable=True)
    conn.close()
    writer = RabbitMQWriter(url=rabbitmq_url, declare=False, drain_timeout=0.5,
                            spool_dir=str(tmp_path / "spool"), **names)
    before = sink_errors("rabbitmq")
    alert = make_alert()
    start = time.monotonic()
    try:
        writer.write([alert], [encode_alert(alert)])  # spooled: returns at once
        assert time.monotonic() - start < 1
        with pytest.raises(RabbitMQDeliveryError, match="UnroutableError"):
            writer.flush(1.2)
        assert writer.pending == 1  # kept, retried: never dropped
    finally:
        writer.close()
    assert time.monotonic() - start < 5
    assert sink_errors("rabbitmq") - before >= 2  # first attempt + at least one retry


def test_rabbitmq_unreachable_broker_keeps_alerts_spooled(rabbitmq_url: str, tmp_path) -> None:
    from conftest import _free_port

    url = "amqp://guest:guest@127.0.0.1:%d/%%2F" % _free_port()  # nothing listens there
    spool_dir = str(tmp_path / "spool")
    # Must not raise: the broker may come later.
    writer = RabbitMQWriter(url=url, drain_timeout=0.5, spool_dir=spool_dir)
    before = sink_errors("rabbitmq")
    alert = make_alert()
    start = time.monotonic()
    writer.write([alert], [encode_alert(alert)])
    assert time.monotonic() - start < 1
    with pytest.raises(RabbitMQDeliveryError, match="not confirmed.*ConnectionRefused|not confirmed.*AMQPConnection"):
        writer.flush(1.2)
    assert time.monotonic() - start < 5
    assert sink_errors("rabbitmq") - before >= 2
    writer.close()
    assert time.monotonic() - start < 10
    from sinks.spool import Spool

    with Spool(spool_dir) as left:  # still there for the next start
        assert left.pending == 1


def test_rabbitmq_bad_credentials_fail_fast(rabbitmq_url: str, fresh_rabbit, tmp_path) -> None:
    url = "amqp://guest:not-the-password@127.0.0.1:5672/%2F"
    start = time.monotonic()
    with pytest.raises(RabbitMQDeliveryError, match="refused the login"):
        RabbitMQWriter(url=url, spool_dir=str(tmp_path / "spool"), **fresh_rabbit())
    assert time.monotonic() - start < 10
    # The spool was released: a fixed configuration can use it at once.
    from sinks.spool import Spool

    Spool(str(tmp_path / "spool")).close()


# -- Kafka (Tansu) -------------------------------------------------------------


def consume(brokers: str, topic: str, n: int, timeout_s: float = 30.0) -> list:
    consumer = Consumer(dict(TANSU_CONSUMER_CONFIG, **{
        "bootstrap.servers": brokers,
        "group.id": "test-" + uuid.uuid4().hex[:8],
    }))
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
    finally:
        consumer.close()
    return got


def read_partition(brokers: str, topic: str, partition: int, n: int, timeout_s: float = 15.0) -> list:
    """Read a partition from the start without a consumer group (no join wait)."""
    consumer = Consumer(dict(TANSU_CONSUMER_CONFIG, **{"bootstrap.servers": brokers, "group.id": "unused"}))
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    got = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
    finally:
        consumer.close()
    return got


def test_kafka_writer_roundtrip(tansu: str, kafka_topic, tmp_path) -> None:
    topic = kafka_topic(partitions=3)
    writer = KafkaWriter(tansu, topic=topic, spool_dir=str(tmp_path / "spool"))
    alerts = [
        make_alert(fingerprint="fp-latency", severity="high"),
        make_alert(fingerprint="fp-cost", type="cost", severity="low"),
        make_alert(fingerprint="fp-latency", severity="critical"),
    ]
    try:
        writer.write(alerts, [encode_alert(a) for a in alerts])
        writer.flush(30)
        assert writer.pending == 0
    finally:
        writer.close()

    msgs = consume(tansu, topic, len(alerts))
    assert len(msgs) == len(alerts)
    by_id = {a["alert_id"]: a for a in alerts}
    partitions: Dict[str, set] = {}
    for msg in msgs:
        body = orjson.loads(msg.value())
        alert = by_id[body["alert_id"]]
        assert body == {k: v for k, v in alert.items() if not k.startswith("_")}
        assert msg.key() == alert["fingerprint"].encode()
        headers = dict(msg.headers() or [])
        assert headers["severity"] == alert["severity"].encode()
        assert headers["type"] == alert["type"].encode()
        partitions.setdefault(alert["fingerprint"], set()).add(msg.partition())
    # Same fingerprint -> same key -> same partition (ordered per anomaly).
    assert all(len(p) == 1 for p in partitions.values())


def test_kafka_bytes_producer_for_dead_letters(tansu: str, kafka_topic) -> None:
    topic = kafka_topic(partitions=1, prefix="dlq")
    producer = KafkaBytesProducer(tansu, topic, metrics_sink="dead_letters")
    raw = b"\xff\xfe not json"
    producer.send(None, raw)
    producer.send(b"k", b'{"reason": "bad_json"}', [("reason", b"bad_json")])
    producer.flush()
    assert producer.pending == 0
    producer.close()
    msgs = read_partition(tansu, topic, 0, 2)
    assert [(m.key(), m.value()) for m in msgs] == [(None, raw), (b"k", b'{"reason": "bad_json"}')]


def test_kafka_writer_waits_for_a_late_broker(tmp_path) -> None:
    """Broker down at write time: write returns at once, the alert waits in the
    spool, and the sender delivers it once the broker is up: no loss, no blocking."""
    from conftest import _free_port, start_tansu, stop_tansu

    address = "127.0.0.1:%d" % _free_port()
    writer = KafkaWriter(address, topic="late.anomalies", spool_dir=str(tmp_path / "spool"),
                         extra_config={"log_level": 0, "reconnect.backoff.max.ms": 500})
    before = sink_errors("kafka")
    procs = []
    timer = threading.Timer(1.5, lambda: procs.append(start_tansu(address, tmp_path / "late.log")))
    timer.start()
    alert = make_alert(fingerprint="fp-late")
    start = time.monotonic()
    try:
        writer.write([alert], [encode_alert(alert)])
        assert time.monotonic() - start < 0.5  # spooled, not delivered yet
        assert writer.pending == 1
        writer.flush(30)  # waits until the broker took it
        took = time.monotonic() - start
        assert writer.pending == 0
        writer.close()
        assert took >= 1.4
        assert sink_errors("kafka") - before >= 1  # the refused connections were counted
        msgs = read_partition(address, "late.anomalies", 0, 1)
        assert [(m.key(), orjson.loads(m.value())["alert_id"]) for m in msgs] == [(b"fp-late", alert["alert_id"])]
    finally:
        writer.close()
        timer.join()
        for proc in procs:
            stop_tansu(proc)


def test_kafka_unreachable_broker_raises_after_max_retry() -> None:
    from conftest import _free_port

    producer = KafkaBytesProducer("127.0.0.1:%d" % _free_port(), "nowhere", max_retry_s=1.5,
                                  extra_config={"log_level": 0}, close_timeout_s=0.5)
    producer.send(b"k", b"v")
    start = time.monotonic()
    with pytest.raises(KafkaDeliveryError, match="not acknowledged"):
        producer.flush()
    assert 1.0 < time.monotonic() - start < 5
    assert producer.pending == 1  # kept, not dropped: a later flush would deliver it
    producer.close()


# -- Qdrant (embedded) ---------------------------------------------------------


def _qdrant_alerts() -> List[Dict[str, Any]]:
    return [
        make_alert(alert_id="a-latency-1", type="latency", observed=4200.0, expected=850.0, score=0.97),
        make_alert(alert_id="a-latency-2", type="latency", observed=3900.0, expected=800.0, score=0.93,
                   service="search-api", fingerprint="fp-search-api-gpt-4o-latency",
                   event_time="2025-01-14T08:00:00+00:00"),
        make_alert(alert_id="a-cost-1", type="cost", severity="medium", observed=12.5, expected=3.0, score=0.8,
                   metric="cost_usd_sum", service="batch-summarizer", model="claude-3-5-sonnet",
                   fingerprint="fp-batch-summarizer-cost", event_time="2025-01-13T12:00:00+00:00"),
    ]


def test_qdrant_similar_returns_closest_other_alert() -> None:
    writer = QdrantWriter(location=":memory:", collection="test_incidents")
    alerts = _qdrant_alerts()
    try:
        writer.write(alerts, [encode_alert(a) for a in alerts])
        writer.write(alerts[:1], [encode_alert(alerts[0])])  # redelivery: idempotent upsert
        assert writer._client.count("test_incidents").count == 3

        similar = writer.similar(Alert.of(alerts[0]), limit=3, min_score=0.0)
        assert [s["alert_id"] for s in similar] == ["a-latency-2", "a-cost-1"]  # never itself
        best = similar[0]
        assert best == {
            "alert_id": "a-latency-2",
            "fingerprint": "fp-search-api-gpt-4o-latency",
            "type": "latency",
            "service": "search-api",
            "model": "gpt-4o",
            "score": best["score"],
            "event_time": "2025-01-14T08:00:00+00:00",
            "summary": alerts[1]["summary"],
        }
        assert 0.95 < best["score"] <= 1.0 and similar[1]["score"] < best["score"]
        assert [s["alert_id"] for s in writer.similar(Alert.of(alerts[0]), limit=1)] == ["a-latency-2"]
        # The default minimum score keeps the same type only.
        assert [s["alert_id"] for s in writer.similar(Alert.of(alerts[0]))] == ["a-latency-2"]

        # A new, not yet indexed alert finds its neighbours too.
        fresh = make_alert(alert_id="a-cost-2", type="cost", observed=10.0, expected=2.5, score=0.75)
        assert writer.similar(Alert.of(fresh), limit=1)[0]["alert_id"] == "a-cost-1"

        # Payload is the public alert: no internals.
        point = writer._client.retrieve("test_incidents", [point_id("a-cost-1")], with_payload=True)[0]
        assert "_ingested_at" not in point.payload
        assert point.payload == {k: v for k, v in alerts[2].items() if not k.startswith("_")}
    finally:
        writer.close()


def test_qdrant_path_location_persists(tmp_path) -> None:
    alerts = _qdrant_alerts()
    writer = QdrantWriter(location=str(tmp_path / "qdrant"))
    writer.write(alerts, [encode_alert(a) for a in alerts])
    writer.close()
    reopened = QdrantWriter(location=str(tmp_path / "qdrant"))
    try:
        assert reopened._client.count("sentinel_incidents").count == 3
        assert reopened.similar(Alert.of(alerts[0]), limit=1)[0]["alert_id"] == "a-latency-2"
    finally:
        reopened.close()


def test_alert_vector_is_deterministic_and_typed() -> None:
    a = make_alert(type="token_abuse", severity="critical", score=1.0)
    v1, v2 = alert_vector(Alert.of(a)), alert_vector(Alert.of(dict(a)))
    assert v1 == v2 and len(v1) == 16
    assert v1[7] == 1.0 and sum(v1[:11]) == 1.0
    assert v1[13] == 1.0
    odd = alert_vector(Alert.from_json({"alert_id": "x", "type": "unknown", "observed": None, "expected": 0}))
    assert any(odd)  # never the zero vector (cosine needs a norm)
    assert point_id("x") == point_id("x") != point_id("y")
