"""One ``kafka`` connection block for every Kafka client of a flow; signed control messages through real Kafka."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml
from confluent_kafka import Producer

from sentinel.config import ConfigError, load_config_dict
from sinks.base import alert_body
from tests.test_control_kafka import latency_pages, send, telemetry

ROOT = Path(__file__).resolve().parents[1]

SECURITY = {"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN", "sasl.username": "sentinel",
            "ssl.ca.location": "/etc/ssl/ca.pem"}


def kafka_flow(**over):
    flow = {"kafka": {"brokers": "k1:9092,k2:9092", "config": SECURITY},
            "source": {"kind": "kafka", "topics": ["llm.telemetry"]},
            "sinks": [{"kind": "kafka", "topic": "llm.anomalies"}],
            "dead_letters": {"kind": "kafka", "topic": "llm.telemetry.dlq"},
            "control": {"topic": "sentinel.control"}}
    flow.update(over)
    return flow


def test_one_block_reaches_source_sinks_dead_letters_and_control():
    cfg = load_config_dict(kafka_flow())
    for brokers, config in [(cfg.source.brokers, cfg.source.config), (cfg.sinks[0].brokers, cfg.sinks[0].config),
                            (cfg.dead_letters.brokers, cfg.dead_letters.config),
                            (cfg.control_settings().brokers, cfg.control_settings().config)]:
        assert brokers == "k1:9092,k2:9092"
        assert config == SECURITY


def test_a_clients_own_settings_win_key_by_key():
    cfg = load_config_dict(kafka_flow(
        source={"kind": "kafka", "topics": ["t"], "config": {"sasl.username": "reader"}},
        dead_letters={"kind": "kafka", "topic": "dlq", "config": {"sasl.username": "dlq-writer"}},
        control={"topic": "ctl", "config": {"sasl.username": "control-reader"}},
        sinks=[{"kind": "kafka", "brokers": "other:9092", "topic": "a", "config": {"acks": "all"}}]))
    assert cfg.source.config == dict(SECURITY, **{"sasl.username": "reader"})
    assert cfg.dead_letters.config == dict(SECURITY, **{"sasl.username": "dlq-writer"})
    assert cfg.control_settings().config == dict(SECURITY, **{"sasl.username": "control-reader"})
    assert cfg.sinks[0].brokers == "other:9092" and cfg.sinks[0].config == dict(SECURITY, acks="all")


def test_without_a_block_the_sources_settings_reach_the_clients_that_use_its_brokers():
    # Flow files written before the block: the source's security settings also reach the
    # dead letters and the control listener, which default to the source's brokers.
    cfg = load_config_dict({"source": {"kind": "kafka", "brokers": "k:9092", "topics": ["t"], "config": SECURITY},
                            "dead_letters": {"kind": "kafka", "topic": "dlq"}})
    assert cfg.dead_letters.brokers == "k:9092" and cfg.dead_letters.config == SECURITY
    assert cfg.control_settings().config == SECURITY


def test_the_settings_are_handed_to_the_clients():
    from operators.silences import Controls
    from sentinel.control import ControlListener
    from sinks.dead_letters import DeadLetterSink

    cfg = load_config_dict(kafka_flow(kafka={"brokers": "127.0.0.1:1", "config": {"client.id": "sentinel-x"}}))
    part = DeadLetterSink(cfg.dead_letters).build("dead_letters_out", 0, 1)
    try:
        assert part._producer._config["client.id"] == "sentinel-x"
        assert part._producer._config["bootstrap.servers"] == "127.0.0.1:1"
    finally:
        part._producer._producer.purge()
        part._producer._producer = None
    c = cfg.control_settings()
    listener = ControlListener(c.brokers, c.topic, c.feedback_topic, Controls(), extra=c.config)
    assert listener.config["client.id"] == "sentinel-x"
    listener._consumer.close()


def test_no_brokers_anywhere_is_a_config_error():
    with pytest.raises(ConfigError) as ex:
        load_config_dict({"source": {"kind": "kafka", "topics": ["t"]}})
    assert "source.brokers" in str(ex.value)


def test_the_signing_key_is_never_in_the_flow_definition():
    with pytest.raises(ConfigError):
        load_config_dict(kafka_flow(control={"topic": "c", "hmac_key": "secret"}))
    with pytest.raises(ConfigError):
        load_config_dict(kafka_flow(control={"topic": "c", "hmac_key_env": "A", "hmac_key_file": "/k"}))


def test_a_missing_signing_key_is_one_line_at_start(tmp_path):
    flow = kafka_flow(kafka={"brokers": "127.0.0.1:1"}, control={"topic": "c", "hmac_key_env": "NO_SUCH_KEY_VAR"},
                      metrics={"port": 0}, sinks=[{"kind": "stdout"}], dead_letters={"kind": "stderr"})
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(flow))
    env = {k: v for k, v in os.environ.items() if k != "NO_SUCH_KEY_VAR"}
    for cmd in ("check", "run"):
        r = subprocess.run([sys.executable, "-m", "sentinel.cli", cmd, "-c", str(path)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "NO_SUCH_KEY_VAR" in lines[0] and "control.hmac_key_env" in lines[0], r.stderr


def signed(key: bytes, value: bytes):
    return [("sentinel-signature", ("sha256=" + hmac.new(key, value, hashlib.sha256).hexdigest()).encode())]


def test_only_signed_silences_apply_through_kafka(tmp_path, tansu, kafka_topic):
    key = os.urandom(32)
    keyfile = tmp_path / "control.key"
    keyfile.write_bytes(key.hex().encode() + b"\n")
    os.chmod(keyfile, 0o600)
    topic = kafka_topic(partitions=2, prefix="telemetry")
    control = kafka_topic(partitions=1, prefix="control")
    dlq = kafka_topic(partitions=1, prefix="dlq")
    send(tansu, topic, telemetry(seed=4, magnitude=5) + [b"not json"])
    forged = orjson.dumps({"action": "silence", "id": "forged", "matchers": {"service": "support-bot"},
                           "start": "2026-01-05T01:30:00Z", "end": "2026-01-05T02:00:00Z"})
    good = orjson.dumps({"action": "silence", "id": "maint-ok", "matchers": {"service": "another-service"},
                         "start": "2026-01-05T01:30:00Z", "end": "2026-01-05T02:00:00Z"})
    p = Producer({"bootstrap.servers": tansu})
    p.produce(control, forged)
    p.produce(control, forged, headers=signed(b"wrong key" * 4, forged))
    p.produce(control, good, headers=signed(key.hex().encode(), good))
    assert p.flush(30) == 0

    alerts = tmp_path / "alerts.jsonl"
    flow = {"name": "signed", "kafka": {"brokers": tansu, "config": {"client.id": "sentinel-test"}},
            "source": {"kind": "kafka", "topics": [topic], "eof_after_idle": "4s"},
            "sinks": [{"kind": "jsonl", "path": str(alerts)}], "metrics": {"port": 0},
            "dead_letters": {"kind": "kafka", "topic": dlq},
            "control": {"topic": control, "feedback_topic": None, "hmac_key_file": str(keyfile)}}
    path = tmp_path / "signed.yaml"
    path.write_text(yaml.safe_dump(flow))
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", "-c", str(path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    got = [alert_body(orjson.loads(line)) for line in alerts.read_text().splitlines()]
    assert latency_pages(got), "the forged silence muted the incident"
    assert "maint-ok" in r.stderr
    assert r.stderr.count("refused") == 2, r.stderr[-3000:]

    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": tansu, "group.id": "t", "enable.auto.commit": False})
    c.assign([TopicPartition(dlq, 0, 0)])
    msgs = c.consume(10, 15)
    c.close()
    assert any(b"not json" in (m.value() or b"") or b"bm90IGpzb24" in (m.value() or b"") for m in msgs)
