"""Alert latency: event ingest to alert confirmed by RabbitMQ, live, at a steady rate through Kafka.

A producer thread writes live telemetry (event time = now) to a Tansu topic
at ``--rate`` events/s, with a latency incident injected on one key every
few minutes; ``sentinel run`` consumes it and publishes to RabbitMQ; a
consumer takes the alerts off the queues. For each firing alert:

* ``beyond window close`` = time the consumer received it minus the wall
  time at which its window could close: the window's end
  (``evidence.fired_event_time``) plus ``allowed_lateness`` (event time runs
  on the wall clock here);
* the flow's own ``sentinel_detection_latency_seconds`` histogram (ingest of
  the batch that closed the window -> publisher confirm) is scraped too.

Windows are 5 s (warm-up 12 windows) so the run takes minutes, not hours.

    python benchmarks/alert_latency.py --rate 10000 --seconds 150
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import datetime

import orjson
import pika
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(1, os.path.dirname(HERE))  # devtools/ (not installed)
from devtools.tansu import free_port, start_tansu, stop_tansu, wait_for_kafka  # noqa: E402

KEYS = [("support-bot", "gpt-4o-mini"), ("support-bot", "claude-haiku"), ("search-rag", "gpt-4o"),
        ("code-assist", "claude-sonnet-4"), ("doc-summarizer", "gemini-2.0-flash")]
WINDOW = 5.0
LATENESS = 1.0


def produce(brokers: str, topic: str, rate: float, seconds: float, incident_every: float, stop: threading.Event,
            stats: dict) -> None:
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 5, "batch.num.messages": 5000,
                  "queue.buffering.max.messages": 1_000_000})
    rng = random.Random(1)
    t_start = time.time()
    sent = 0
    tick = 0.01
    while not stop.is_set():
        now = time.time()
        el = now - t_start
        if el >= seconds:
            break
        due = int(el * rate) - sent
        slow_key = None
        phase = el % incident_every
        if el > 75 and phase < 10:  # after warm-up: 10 s (two windows) of x5 latency on one key each cycle
            slow_key = KEYS[int(el // incident_every) % len(KEYS)]
        for _ in range(due):
            svc, model = KEYS[rng.randrange(len(KEYS))]
            lat = rng.lognormvariate(6.8, 0.35)
            if (svc, model) == slow_key:
                lat *= 5
            ev = {"timestamp": time.time(), "service": svc, "model": model, "latency_ms": round(lat, 1),
                  "ttft_ms": round(lat / 5, 1), "input_tokens": int(rng.lognormvariate(6.5, 0.4)),
                  "output_tokens": int(rng.lognormvariate(5.3, 0.4)), "cost_usd": 0.002,
                  "status": "error" if rng.random() < 0.01 else "ok", "user_id": f"u{rng.randrange(500)}"}
            while True:
                try:
                    p.produce(topic, orjson.dumps(ev))
                    break
                except BufferError:
                    p.poll(0.01)
            sent += 1
        p.poll(0)
        time.sleep(tick)
    p.flush(30)
    stats["sent"] = sent
    stats["seconds"] = time.time() - t_start


def consume(url: str, queues, stop: threading.Event, got: list) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    while not stop.is_set():
        idle = True
        for q in queues:
            m, props, body = ch.basic_get(q, auto_ack=True)
            if m is not None:
                idle = False
                got.append((time.time(), orjson.loads(body)))
        if idle:
            time.sleep(0.005)
    conn.close()


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def histogram_quantiles(text: str, name: str):
    buckets = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    out = {}
    for q in (0.5, 0.99):
        out[q] = next(le for le, c in buckets if c >= q * total)
    return out, int(total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=10_000)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sentinel-latency-")
    port = free_port()
    brokers = f"127.0.0.1:{port}"
    log = os.path.join(work, "tansu.log")
    from pathlib import Path

    proc = start_tansu(brokers, Path(log))
    flow_proc = None
    stop = threading.Event()
    suffix = uuid.uuid4().hex[:8]
    names = {"exchange": f"bench.alerts.{suffix}", "high_queue": f"bench.high.{suffix}",
             "low_queue": f"bench.low.{suffix}"}
    try:
        wait_for_kafka(brokers, proc, Path(log))
        topic = f"telemetry-{suffix}"
        admin = AdminClient({"bootstrap.servers": brokers})
        for f in admin.create_topics([NewTopic(topic, args.partitions, 1)]).values():
            f.result(30)
        mport = free_port()
        flow = os.path.join(work, "flow.yaml")
        with open(flow, "w") as fh:
            fh.write(
                f"name: latency-bench\n"
                f"source: {{kind: kafka, brokers: '{brokers}', topics: [{topic}], start: latest}}\n"
                f"sinks:\n  - {{kind: rabbitmq, url: '{args.amqp}', exchange: {names['exchange']}, "
                f"high_queue: {names['high_queue']}, low_queue: {names['low_queue']}, "
                f"spool_dir: {work}/spool, envelope: none}}\n"
                f"metrics: {{port: {mport}}}\ncontrol: {{brokers: '{brokers}', topic: null, feedback_topic: null}}\n"
                f"windows: {{size: {WINDOW}, allowed_lateness: {LATENESS}, idle_partition: 2}}\n"
                f"detection: {{warmup_windows: 12, cold_windows: 0}}\n"
                f"state: {{idle_flush: 1}}\n")
        flow_proc = subprocess.Popen([sys.executable, "-m", "sentinel.cli", "run", "-c", flow],
                                     stderr=open(os.path.join(work, "flow.log"), "w"),
                                     env={**os.environ, "SENTINEL_LOG_LEVEL": "WARNING"})
        # Declare the queues before the first alert (the sink declares them too).
        conn = pika.BlockingConnection(pika.URLParameters(args.amqp))
        ch = conn.channel()
        ch.exchange_declare(names["exchange"], "topic", durable=True)
        for q, keys in ((names["high_queue"], ["alert.high.#", "alert.critical.#"]),
                        (names["low_queue"], ["alert.info.#", "alert.low.#", "alert.medium.#"])):
            ch.queue_declare(q, durable=True)
            for k in keys:
                ch.queue_bind(q, names["exchange"], k)
        conn.close()
        time.sleep(4)  # flow start-up (Kafka assignment)
        got: list = []
        stats: dict = {}
        cons = threading.Thread(target=consume, args=(args.amqp, [names["high_queue"], names["low_queue"]], stop, got))
        cons.start()
        prod = threading.Thread(target=produce, args=(brokers, topic, args.rate, args.seconds, 20.0, stop, stats))
        prod.start()
        prod.join()
        time.sleep(5)
        try:
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
        except OSError:
            metrics = ""
        stop.set()
        cons.join()
        beyond = []
        for recv, a in got:
            if a.get("status") != "firing":
                continue
            fired = a["evidence"].get("fired_event_time")
            if fired is None:
                continue
            close = datetime.fromisoformat(fired.replace("Z", "+00:00")).timestamp() + LATENESS
            beyond.append(recv - close)
        lag_ok = "sentinel_events_total" in metrics
        print(f"produced {stats.get('sent', 0):,} events in {stats.get('seconds', 0):.0f} s "
              f"= {stats.get('sent', 0) / max(1e-9, stats.get('seconds', 1)):,.0f} events/s over {args.partitions} partitions")
        print(f"alerts received: {len(got)} ({len(beyond)} firing)")
        if beyond:
            print(f"alert received minus window close: p50 {pct(beyond, 0.5):.3f} s, p99 {pct(beyond, 0.99):.3f} s, "
                  f"max {max(beyond):.3f} s")
        hq = histogram_quantiles(metrics, "sentinel_detection_latency_seconds") if lag_ok else None
        if hq:
            (qs, n) = hq
            print(f"sentinel_detection_latency_seconds (ingest -> RabbitMQ confirm, {n} alerts incl. resolves): "
                  f"p50 <= {qs[0.5]} s, p99 <= {qs[0.99]} s (bucket bounds)")
        return 0
    finally:
        stop.set()
        if flow_proc is not None:
            flow_proc.terminate()
            try:
                flow_proc.wait(30)
            except subprocess.TimeoutExpired:
                flow_proc.kill()
        stop_tansu(proc)
        try:
            conn = pika.BlockingConnection(pika.URLParameters(args.amqp))
            ch = conn.channel()
            ch.queue_delete(names["high_queue"])
            ch.queue_delete(names["low_queue"])
            ch.exchange_delete(names["exchange"])
            conn.close()
        except Exception:
            pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
