"""Run-time silences (``sentinel.control``) and feedback (``llm.feedback``) through real Kafka."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import yaml
from confluent_kafka import Producer

from simulator import DEFAULT_START, Simulator
from sinks.base import alert_body

ROOT = Path(__file__).resolve().parents[1]


def send(brokers, topic, values):
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 10})
    for v in values:
        while True:
            try:
                p.produce(topic, v)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(30) == 0


def telemetry(seed: int, magnitude: float):
    inc = {"type": "latency", "service": "support-bot", "model": "gpt-4o-mini",
           "start": DEFAULT_START + 100 * 60, "end": DEFAULT_START + 110 * 60, "magnitude": magnitude}
    return list(Simulator(seed=seed, hours=2.0, rate=8.0, incidents=[inc]).iter_lines())


def run_flow(tmp_path: Path, brokers: str, topic: str, control: dict, name: str, kafka_alerts: str = None):
    alerts = tmp_path / f"{name}.alerts.jsonl"
    sinks = [{"kind": "jsonl", "path": str(alerts)}]
    if kafka_alerts:
        sinks.append({"kind": "kafka", "brokers": brokers, "topic": kafka_alerts,
                      "spool_dir": str(tmp_path / "spool")})
    flow = {"name": name, "source": {"kind": "kafka", "brokers": brokers, "topics": [topic], "eof_after_idle": "4s"},
            "sinks": sinks, "metrics": {"port": 0}, "dead_letters": {"kind": "jsonl", "path": str(tmp_path / "dlq.jsonl")},
            "control": control}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(flow))
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", "-c", str(path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    got = [alert_body(orjson.loads(line)) for line in alerts.read_text().splitlines()] if alerts.exists() else []
    return got, r.stderr


def latency_pages(alerts):
    return [a for a in alerts if a["type"] == "latency" and a["status"] == "firing"
            and a["service"] == "support-bot" and a["model"] == "gpt-4o-mini"]


def test_silence_from_the_control_topic(tmp_path, tansu, kafka_topic):
    topic = kafka_topic(partitions=2, prefix="telemetry")
    control = kafka_topic(partitions=1, prefix="control")
    send(tansu, topic, telemetry(seed=4, magnitude=5))
    send(tansu, control, [
        b"not json",
        orjson.dumps({"action": "silence", "id": "maint-1", "matchers": {"service": "support-bot"},
                      "start": "2026-01-05T01:30:00Z", "end": "2026-01-05T02:00:00Z", "comment": "provider maintenance"}),
    ])
    alerts, err = run_flow(tmp_path, tansu, topic, {"topic": control, "feedback_topic": None}, "silenced")
    assert latency_pages(alerts) == [], alerts
    assert "maint-1" in err and "refused" in err  # the silence was read; the bad message was reported

    # Expired: the same data pages again.
    send(tansu, control, [orjson.dumps({"action": "expire", "id": "maint-1"})])
    alerts, _ = run_flow(tmp_path, tansu, topic, {"topic": control, "feedback_topic": None}, "expired")
    assert latency_pages(alerts)


def test_feedback_from_the_feedback_topic(tmp_path, tansu, kafka_topic):
    control = {"topic": None, "feedback_topic": kafka_topic(partitions=1, prefix="feedback")}
    anomalies = kafka_topic(partitions=1, prefix="anomalies")
    first = kafka_topic(partitions=2, prefix="telemetry")
    send(tansu, first, telemetry(seed=5, magnitude=3))
    alerts, _ = run_flow(tmp_path, tansu, first, control, "first", kafka_alerts=anomalies)
    pages = latency_pages(alerts)
    assert len(pages) == 1
    send(tansu, control["feedback_topic"], [orjson.dumps({
        "alert_id": pages[0]["alert_id"], "label": "false_positive", "reason": "nightly batch job", "who": "oncall"})])

    # A later run (a restart) reads the alert back from the alert topic and the verdict from the feedback topic.
    same = kafka_topic(partitions=2, prefix="telemetry")
    send(tansu, same, telemetry(seed=6, magnitude=3))
    alerts, _ = run_flow(tmp_path, tansu, same, control, "same", kafka_alerts=anomalies)
    assert latency_pages(alerts) == []

    bigger = kafka_topic(partitions=2, prefix="telemetry")
    send(tansu, bigger, telemetry(seed=7, magnitude=10))
    alerts, _ = run_flow(tmp_path, tansu, bigger, control, "bigger", kafka_alerts=anomalies)
    assert latency_pages(alerts)
