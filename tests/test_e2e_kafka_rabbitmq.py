"""End-to-end acceptance: Kafka (Tansu) -> ``sentinel run`` -> RabbitMQ. No mocks.

Simulated telemetry with one injected latency incident is produced to a real
3-partition topic with no message key: librdkafka's sticky partitioner puts
runs of consecutive events on one partition after another, so every
service/model key's events are split over the partitions and, read back
together, the partitions are at different event times (the hard case for
per-key event-time windows). ``sentinel run -c flow.yaml`` runs as a
subprocess, exactly as a user starts it, with ``eof_after_idle`` so the
replay of the backlog ends by itself; then the alert is read back from the
RabbitMQ queues the flow published to. The same again with ``-w 2``, on a
topic whose partitions Bytewax is known to split over the two workers.

A second topic carries OTLP protobuf (``ExportTraceServiceRequest`` made by
the OpenTelemetry SDK and its OTLP encoder) plus one undecodable message,
which must come out as a ``bad_protobuf`` dead letter with its Kafka position
while the run goes on and exits 0.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import orjson
import pytest

from conftest import drain_queue as drain
import yaml
from confluent_kafka import Producer

from simulator import DEFAULT_START, FLEET, Simulator
from sinks.base import alert_body

RUN_TIMEOUT_S = 180
EOF_AFTER_IDLE = "5s"

INCIDENT = {
    "type": "latency",
    "service": "support-bot",
    "model": "gpt-4o-mini",
    "start": DEFAULT_START + 80 * 60,
    "end": DEFAULT_START + 92 * 60,
    "magnitude": 5,
}


# -- helpers -------------------------------------------------------------------


def produce(brokers: str, topic: str, values: List[bytes]) -> List[Tuple[int, int]]:
    """Produce ``values`` with no key; return each message's (partition, offset), in order."""
    positions: List[Optional[Tuple[int, int]]] = [None] * len(values)
    errors: List[str] = []

    def delivered(i: int):
        def cb(err, msg) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                positions[i] = (msg.partition(), msg.offset())
        return cb

    p = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "batch.num.messages": 10000, "acks": "all"})
    for i, v in enumerate(values):
        while True:
            try:
                p.produce(topic, v, on_delivery=delivered(i))
                break
            except BufferError:
                p.poll(0.05)
        if i % 5000 == 0:
            p.poll(0)
    left = p.flush(60)
    del p  # never leave an idle client connected to Tansu (see conftest)
    assert left == 0 and not errors, "produce to %s: %d undelivered, errors %s" % (topic, left, errors[:3])
    assert all(pos is not None for pos in positions)
    return positions  # type: ignore[return-value]


def sentinel_cmd() -> List[str]:
    script = Path(sys.executable).with_name("sentinel")
    if script.exists():
        return [str(script)]
    found = shutil.which("sentinel")
    return [found] if found else [sys.executable, "-m", "sentinel.cli"]


def write_flow(tmp_path: Path, flow: Dict[str, Any]) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(flow, sort_keys=False))
    return path


def start_sentinel(flow_path: Path, workers: int, cluster: Tuple[str, ...] = ()) -> subprocess.Popen:
    env = {**os.environ, "SENTINEL_LOG_LEVEL": "INFO"}
    return subprocess.Popen(
        sentinel_cmd() + ["run", "-c", str(flow_path), "-w", str(workers), *cluster],
        cwd=str(flow_path.parent), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen, timeout: float = RUN_TIMEOUT_S) -> Tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail("sentinel run did not finish within %ss; stderr tail:\n%s"
                    % (timeout, err.decode(errors="replace")[-3000:]), pytrace=False)
    out_s, err_s = out.decode(errors="replace"), err.decode(errors="replace")
    assert proc.returncode == 0, "sentinel run exited %s; stderr tail:\n%s" % (proc.returncode, err_s[-3000:])
    return out_s, err_s


_EOF_LINE = re.compile(r"kafka: (\S+)\[(\d+)\] idle for \S+ after (\d+) messages: end of input")


def messages_read(stderr: str) -> Dict[Tuple[str, int], int]:
    """Messages each topic partition delivered, from the source's end-of-input log lines."""
    return {(m.group(1), int(m.group(2))): int(m.group(3)) for m in _EOF_LINE.finditer(stderr)}


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]




def epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def create_topic(brokers: str, name: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": brokers})
    try:
        for future in admin.create_topics([NewTopic(name, num_partitions=partitions,
                                                    replication_factor=1)]).values():
            future.result(timeout=15)
    finally:
        del admin  # never leave an idle client connected to Tansu (see conftest)


def worker_assignment(parts: List[str], workers: int) -> Dict[str, int]:
    """Which worker (as a group number) Bytewax builds each partition of a
    FixedPartitionedSource on, found by running a no-op dataflow with
    ``workers`` worker threads in this process."""
    import threading

    import bytewax.operators as bop
    from bytewax.dataflow import Dataflow
    from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
    from bytewax.testing import cluster_main

    built: Dict[str, int] = {}

    class Part(StatefulSourcePartition):
        def __init__(self, name: str) -> None:
            built[name] = threading.get_ident()

        def next_batch(self):
            raise StopIteration()

        def snapshot(self):
            return None

    class Probe(FixedPartitionedSource):
        def list_parts(self):
            return list(parts)

        def build_part(self, step_id, for_part, resume_state):
            return Part(for_part)

    flow = Dataflow("partition_probe")
    bop.inspect("drop", bop.input("in", flow, Probe()), lambda *_: None)
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    threads = sorted(set(built.values()))
    return {name: threads.index(t) for name, t in built.items()}


# -- the telemetry topic (made once for the module) ----------------------------


@pytest.fixture(scope="module")
def telemetry(tansu: str) -> Dict[str, Any]:
    assert (INCIDENT["service"], INCIDENT["model"]) in {(s, m) for s, m, _, _ in FLEET}
    sim = Simulator(seed=3, hours=2, rate=10, incidents=[INCIDENT])
    lines = [line.rstrip(b"\n") for line in sim.iter_lines()]
    # Bytewax routes each source partition to a worker by a hash of its name
    # ("topic#partition"): pick a topic name whose three partitions land on
    # both workers of a two-worker run, so the -w 2 test really splits them.
    for _ in range(50):
        topic = "e2e.telemetry.%s" % uuid.uuid4().hex[:12]
        parts = ["%s#%d" % (topic, p) for p in range(3)]
        if len(set(worker_assignment(parts, 2).values())) == 2:
            break
    else:
        pytest.fail("no topic name spreads 3 partitions over 2 Bytewax workers")
    create_topic(tansu, topic, partitions=3)
    positions = produce(tansu, topic, lines)
    per_part = {p: 0 for p in range(3)}
    for part, _ in positions:
        per_part[part] += 1
    # Unkeyed messages land on more than one partition: a key's events are
    # split across partitions, which is what this test is about.
    assert sum(1 for n in per_part.values() if n) >= 2, per_part
    return {"topic": topic, "count": len(lines), "per_partition": per_part, "labels": sim.labels,
            "workers_of": worker_assignment(parts, 2)}


def run_incident_flow(tmp_path: Path, tansu: str, rabbitmq_url: str, names: Dict[str, str],
                      telemetry: Dict[str, Any], workers: int, processes: int = 1) -> List[Dict[str, Any]]:
    """Run the flow over the telemetry topic, check what it read and sent; the alerts RabbitMQ delivered."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    alerts_path = tmp_path / "alerts.jsonl"
    dlq_path = tmp_path / "dlq.jsonl"
    flow_path = write_flow(tmp_path, {
        "name": "e2e",
        "source": {"kind": "kafka", "brokers": tansu, "topics": [telemetry["topic"]],
                   "eof_after_idle": EOF_AFTER_IDLE},
        "sinks": [{"kind": "rabbitmq", "url": rabbitmq_url, **names},
                  {"kind": "jsonl", "path": str(alerts_path)}],
        "metrics": {"port": 0},
        "dead_letters": {"kind": "jsonl", "path": str(dlq_path)},
    })
    t0 = time.monotonic()
    if processes == 1:
        _, stderr = finish(start_sentinel(flow_path, workers))
    else:
        # A cluster of processes on this host, as `sentinel run -i N -a ...` (one per pod on Kubernetes).
        addresses = ";".join("127.0.0.1:%d" % _free_port() for _ in range(processes))
        procs = [start_sentinel(flow_path, workers, ("-i", str(i), "-a", addresses)) for i in range(processes)]
        errs = [finish(p)[1] for p in procs]
        # The topic's partitions were spread over the processes: each read some.
        assert all(messages_read(e) for e in errs), [sorted(messages_read(e)) for e in errs]
        stderr = "".join(errs)
    elapsed = time.monotonic() - t0

    # Every message of every partition was read.
    read = messages_read(stderr)
    topic = telemetry["topic"]
    assert read == {(topic, p): n for p, n in telemetry["per_partition"].items()}, (read, stderr[-2000:])
    assert sum(read.values()) == telemetry["count"]

    # Nothing was dead-lettered, and no event came behind its key's closed window.
    assert read_jsonl(dlq_path) == []
    late = re.findall(r"summary: .*alerts published: .*?; ([\d,]+) late events", stderr)
    assert late and all(n == "0" for n in late), late

    # The alerts, as RabbitMQ delivers them.
    high = drain(rabbitmq_url, names["high_queue"])
    low = drain(rabbitmq_url, names["low_queue"])
    got: List[Dict[str, Any]] = []
    for queue, msgs in (("high", high), ("low", low)):
        for method, props, body in msgs:
            alert = orjson.loads(body)
            alert = alert_body(alert)  # CloudEvents envelope
            assert props.message_id == alert["alert_id"]
            assert props.content_type == "application/json"
            assert props.delivery_mode == 2
            assert method.exchange == names["exchange"]
            assert method.routing_key == "alert.%s.%s" % (alert["severity"], alert["type"])
            assert (alert["severity"] in ("high", "critical")) == (queue == "high"), (queue, alert)
            got.append(alert)

    label = telemetry["labels"][0]
    start, end = epoch(label["start"]), epoch(label["end"])
    hits = [a for a in got
            if a["type"] == "latency" and a["service"] == INCIDENT["service"] and a["model"] == INCIDENT["model"]
            and start <= epoch(a["event_time"]) <= end]
    assert hits, "no latency alert for %s/%s in [%s, %s] after %.1fs; got %s" % (
        INCIDENT["service"], INCIDENT["model"], label["start"], label["end"], elapsed,
        [(a["type"], a["service"], a["model"], a["event_time"]) for a in got])

    # The same alerts on every sink, each once.
    ids = [a["alert_id"] for a in got]
    assert len(ids) == len(set(ids)), "duplicate alerts on RabbitMQ: %s" % ids
    file_alerts = [alert_body(e) for e in read_jsonl(alerts_path)]
    assert sorted(a["alert_id"] for a in file_alerts) == sorted(ids)
    return got


def what_alerts_say(alerts: List[Dict[str, Any]]) -> List[tuple]:
    """Status, type, key, subject, event time and severity of each alert: not ids, wall times or wording."""
    return sorted(((a["status"], a["type"], a["service"], a["model"], a.get("subject"), a["event_time"],
                    a["severity"]) for a in alerts), key=repr)


def test_latency_incident_reaches_rabbitmq(tmp_path: Path, tansu: str, rabbitmq_url: str, fresh_rabbit,
                                           telemetry: Dict[str, Any]) -> None:
    run_incident_flow(tmp_path, tansu, rabbitmq_url, fresh_rabbit(), telemetry, workers=1)


def test_latency_incident_reaches_rabbitmq_two_workers(tmp_path: Path, tansu: str, rabbitmq_url: str,
                                                       fresh_rabbit, telemetry: Dict[str, Any]) -> None:
    # Two worker threads: Bytewax spreads the three topic partitions over
    # them, so a key's windows are fed by partitions read on different workers.
    assert len(set(telemetry["workers_of"].values())) == 2, telemetry["workers_of"]
    run_incident_flow(tmp_path, tansu, rabbitmq_url, fresh_rabbit(), telemetry, workers=2)


def test_latency_incident_reaches_rabbitmq_two_processes(tmp_path: Path, tansu: str, rabbitmq_url: str,
                                                         fresh_rabbit, telemetry: Dict[str, Any]) -> None:
    # Two processes of one Bytewax cluster, one worker each: the partitions are
    # read in both, every key's windows live in one of them, and each alert
    # leaves once. They say what one process says about the same topic.
    two = run_incident_flow(tmp_path / "p2", tansu, rabbitmq_url, fresh_rabbit(), telemetry, workers=1,
                            processes=2)
    one = run_incident_flow(tmp_path / "p1", tansu, rabbitmq_url, fresh_rabbit(), telemetry, workers=1)
    assert what_alerts_say(two) == what_alerts_say(one)


# -- OTLP protobuf topic -------------------------------------------------------

OTLP_T0 = int(DEFAULT_START) * 1_000_000_000
MS = 1_000_000


def otlp_messages(n_messages: int, spans_per_message: int) -> List[bytes]:
    """ExportTraceServiceRequest bytes: GenAI client spans made by the OpenTelemetry SDK."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    out = []
    for i in range(n_messages):
        exporter = InMemorySpanExporter()
        tp = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
        tp.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = tp.get_tracer("e2e.genai", "1.0")
        for j in range(spans_per_message):
            start = OTLP_T0 + (i * spans_per_message + j) * 1000 * MS
            span = tracer.start_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, start_time=start, attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 900,
                "gen_ai.usage.output_tokens": 170,
            })
            span.end(end_time=start + 800 * MS)
        out.append(encode_spans(exporter.get_finished_spans()).SerializeToString())
        tp.shutdown()
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SAMPLE = re.compile(r'^(sentinel_\w+)\{(\w+)="([^"]*)"\} (\S+)$', re.M)


def scrape(port: int) -> Optional[Dict[Tuple[str, str], float]]:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=1) as r:
            text = r.read().decode()
    except (OSError, http.client.HTTPException):
        return None  # not up yet, or exiting mid-response (IncompleteRead)
    return {(m.group(1), m.group(3)): float(m.group(4)) for m in _SAMPLE.finditer(text)}


def test_otlp_proto_topic_with_garbage(tmp_path: Path, tansu: str, kafka_topic) -> None:
    n_messages, spans_per_message = 6, 5
    garbage = b"\xff\xfenot an ExportTraceServiceRequest\x0a\xff"
    values = otlp_messages(n_messages, spans_per_message)
    values.insert(3, garbage)
    topic = kafka_topic(partitions=2, prefix="e2e.otlp")
    positions = produce(tansu, topic, values)
    g_part, g_off = positions[3]

    dlq_path = tmp_path / "dlq.jsonl"
    port = _free_port()
    flow_path = write_flow(tmp_path, {
        "name": "e2e-otlp",
        "source": {"kind": "kafka", "brokers": tansu, "topics": [{"name": topic, "encoding": "otlp_proto"}],
                   "eof_after_idle": EOF_AFTER_IDLE},
        "sinks": [{"kind": "jsonl", "path": str(tmp_path / "alerts.jsonl")}],
        "metrics": {"port": port},
        "dead_letters": {"kind": "jsonl", "path": str(dlq_path)},
    })
    proc = start_sentinel(flow_path, workers=1)
    # The run lasts at least eof_after_idle after the last message: watch its
    # counters on /metrics until they settle or the process ends.
    last: Optional[Dict[Tuple[str, str], float]] = None
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        sample = scrape(port)
        if sample is not None:
            last = sample
        time.sleep(0.2)
    _, stderr = finish(proc)

    read = messages_read(stderr)
    assert sum(read.values()) == len(values), (read, stderr[-2000:])

    dead = read_jsonl(dlq_path)
    assert len(dead) == 1, dead
    d = dead[0]
    assert d["reason"] == "bad_protobuf"
    assert (d["source"], d["partition"], d["offset"]) == (topic, g_part, g_off)
    assert base64.b64decode(d["raw_base64"]) == garbage

    assert last is not None, "never reached the metrics endpoint on port %d" % port
    assert last.get(("sentinel_dead_letters_total", "bad_protobuf")) == 1.0, last
    assert last.get(("sentinel_events_total", "ok")) == n_messages * spans_per_message, last
