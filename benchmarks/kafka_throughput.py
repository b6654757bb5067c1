"""Kafka throughput: the Sentinel flow against a bare consume + parse loop.

One run, one broker, one topic: the script starts its own Tansu broker (memory
storage) on a free loopback port, creates a topic with P partitions, produces
N simulated events to it (no message key) and then reads that same topic

  (a) raw:   a confluent-kafka Consumer assigned every partition from the
             beginning, ``consume(num_messages=2000, timeout=1)`` and
             ``orjson.loads`` of every value until N messages are read
             (the consumer uses the same librdkafka settings as the flow's
             source, sources.kafka.consumer_config);
  (b) flow:  ``sentinel run -c FLOW.yaml -w W`` as a subprocess (Kafka source
             with ``eof_after_idle``, alerts and dead letters to JSON-lines
             files, metrics off), once per worker count.

How the flow is timed: the subprocess's wall time from start to exit,
*including* interpreter start, imports, dataflow build and shutdown; a run
ends once every partition has been idle for ``eof_after_idle``, so that idle
wait is subtracted (``run s``). The total is reported too. The number of
events the flow read comes from its own log (the source logs, per partition,
how many messages it read before its end of input) and must equal N. A run
of the flow on an *empty* topic measures the fixed cost (start-up + idle
wait + shutdown); ``steady ev/s`` divides N by the run time minus that.

    python benchmarks/kafka_throughput.py                       # 400k events, 4 partitions, -w 1 and -w 2
    python benchmarks/kafka_throughput.py --events 100000 --partitions 2 --json out.json

The whole run is bounded (``--budget``, default 540 s): every step gets what
is left, a step that overruns is killed, and the broker is stopped on the way
out whatever happens (error, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (HERE, ROOT):
    if p not in sys.path:
        sys.path.insert(0, p)

import orjson  # noqa: E402
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from sentinel.tansu import tansu_broker  # noqa: E402
from sentinel.simulator import Simulator  # noqa: E402
from sources.kafka import consumer_config  # noqa: E402

_EOF_LINE = re.compile(r"kafka: (\S+)\[(\d+)\] idle for \S+ after (\d+) messages: end of input")


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self, what: str, need: float = 5.0) -> float:
        rest = self.deadline - time.monotonic()
        if rest < need:
            raise TimeoutError(f"time budget used up before {what}")
        return rest


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- steps ---------------------------------------------------------------------


def simulate(n: int, hours: float, seed: int) -> List[bytes]:
    # A rate a little above n / duration, then the first n lines: exactly n
    # events covering (almost) the whole simulated span.
    sim = Simulator(seed=seed, hours=hours, rate=1.03 * n / (hours * 3600.0))
    out: List[bytes] = []
    for line in sim.iter_lines():
        out.append(line.rstrip(b"\n"))
        if len(out) >= n:
            break
    return out


def create_topic(brokers: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": brokers, "log_level": 4})
    try:
        for f in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
            f.result(timeout=30)
    finally:
        del admin


def produce(brokers: str, topic: str, lines: List[bytes], budget: Budget) -> Dict[str, Any]:
    errors: List[str] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(str(err))

    p = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 500000, "acks": "all"})
    t0 = time.monotonic()
    for i, line in enumerate(lines):
        while True:
            try:
                p.produce(topic, line, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    left = p.flush(budget.left("flushing the producer"))
    secs = time.monotonic() - t0
    del p
    if left or errors:
        raise RuntimeError(f"produce: {left} messages undelivered, {len(errors)} errors: {errors[:3]}")
    return {"events": len(lines), "seconds": secs, "bytes": sum(len(x) for x in lines)}


def raw_consume(brokers: str, topic: str, partitions: int, n: int, budget: Budget) -> Dict[str, Any]:
    t0 = time.monotonic()
    c = Consumer(consumer_config(brokers, None, {}))
    try:
        # Metadata first: assigned before it knows the leaders, librdkafka
        # starts fetching only after a 500 ms offset-query retry.
        c.list_topics(topic, timeout=10)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        got = parsed = 0
        t_first: Optional[float] = None
        deadline = time.monotonic() + budget.left("the raw consumer")
        loads = orjson.loads
        while got < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw consumer: only {got} of {n} messages before the time budget ran out")
            msgs = c.consume(num_messages=2000, timeout=1.0)
            for m in msgs:
                if m.error() is not None:
                    continue
                if t_first is None:
                    t_first = time.monotonic()
                got += 1
                obj = loads(m.value())
                if obj.__class__ is dict:
                    parsed += 1
        t1 = time.monotonic()
    finally:
        c.close()
    return {"events": got, "parsed": parsed, "seconds": t1 - t0,
            "from_first_message_s": t1 - (t_first or t0)}


def run_flow(brokers: str, topic: str, workers: int, idle_s: float, workdir: str, tag: str,
             budget: Budget) -> Dict[str, Any]:
    alerts = os.path.join(workdir, f"alerts-{tag}.jsonl")
    dlq = os.path.join(workdir, f"dlq-{tag}.jsonl")
    flow = os.path.join(workdir, f"flow-{tag}.yaml")
    stderr_path = os.path.join(workdir, f"sentinel-{tag}.log")
    for path in (alerts, dlq):
        if os.path.exists(path):
            os.remove(path)
    with open(flow, "w") as f:
        f.write(f"name: kafka-throughput\n"
                f"source: {{kind: kafka, brokers: '{brokers}', topics: ['{topic}'], eof_after_idle: {idle_s}}}\n"
                f"sinks:\n  - {{kind: jsonl, path: '{alerts}'}}\n"
                f"metrics: {{port: 0}}\n"
                f"dead_letters: {{kind: jsonl, path: '{dlq}'}}\n")
    exe = shutil.which("sentinel", path=os.path.dirname(sys.executable)) or shutil.which("sentinel")
    cmd = ([exe] if exe else [sys.executable, "-m", "sentinel.cli"]) + ["run", "-c", flow, "-w", str(workers)]
    env = {**os.environ, "SENTINEL_LOG_LEVEL": "INFO"}
    timeout = budget.left(f"sentinel run -w {workers}", need=idle_s + 5)
    with open(stderr_path, "wb") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            rc = proc.wait(timeout)
        except BaseException:
            proc.kill()
            proc.wait(10)
            raise
        wall = time.monotonic() - t0
    text = open(stderr_path, encoding="utf-8", errors="replace").read()
    if rc != 0:
        raise RuntimeError(f"sentinel run -w {workers} exited {rc}; log {stderr_path}:\n{text[-2000:]}")
    per_part = {int(m.group(2)): int(m.group(3)) for m in _EOF_LINE.finditer(text)}
    n_alerts = sum(1 for _ in open(alerts, "rb")) if os.path.exists(alerts) else 0
    n_dead = sum(1 for _ in open(dlq, "rb")) if os.path.exists(dlq) else 0
    return {"workers": workers, "events": sum(per_part.values()), "per_partition": per_part,
            "wall_s": wall, "run_s": wall - idle_s, "alerts": n_alerts, "dead_letters": n_dead,
            "log": stderr_path}


# -- report --------------------------------------------------------------------


def table(r: Dict[str, Any]) -> str:
    raw_rate = r["raw"]["events"] / r["raw"]["seconds"]
    rows = [("step", "events", "seconds", "events/s", "flow/raw", "notes")]
    pr = r["produce"]
    rows.append(("produce (Producer, no key)", f"{pr['events']:,}", f"{pr['seconds']:.2f}",
                 f"{pr['events'] / pr['seconds']:,.0f}", "",
                 f"{pr['bytes'] / pr['seconds'] / 1e6:.1f} MB/s, until flush() returned"))
    rw = r["raw"]
    rows.append(("raw consume + orjson.loads", f"{rw['events']:,}", f"{rw['seconds']:.2f}", f"{raw_rate:,.0f}",
                 "1.00", f"{rw['events'] / rw['from_first_message_s']:,.0f}/s from first message"))
    fixed = r.get("empty_flow", {}).get("run_s")
    for f in r["flows"]:
        rate = f["events"] / f["run_s"]
        notes = f"total {f['wall_s']:.2f}s incl. {r['idle_s']:g}s idle wait; {f['alerts']} alerts"
        if f["dead_letters"]:
            notes += f", {f['dead_letters']} dead letters"
        if fixed is not None and f["run_s"] > fixed:
            notes += f"; steady {f['events'] / (f['run_s'] - fixed):,.0f}/s"
        rows.append((f"sentinel run -w {f['workers']}", f"{f['events']:,}", f"{f['run_s']:.2f}", f"{rate:,.0f}",
                     f"{rate / raw_rate:.2f}", notes))
    if fixed is not None:
        rows.append(("sentinel run, empty topic", "0", f"{fixed:.2f}", "", "",
                     "fixed cost: start-up + shutdown (idle wait subtracted)"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i in (0, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=400_000, help="events to produce (default 400000)")
    ap.add_argument("--partitions", type=int, default=4, help="topic partitions (default 4)")
    ap.add_argument("--hours", type=float, default=6.0, help="simulated hours the events span (default 6)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts for the flow (default 1,2)")
    ap.add_argument("--idle", type=float, default=3.0, help="eof_after_idle of the flow, seconds (default 3)")
    ap.add_argument("--no-empty-run", action="store_true", help="skip the empty-topic run (fixed cost)")
    ap.add_argument("--budget", type=float, default=540.0, help="bound on the whole run, seconds (default 540)")
    ap.add_argument("--workdir", help="keep flow files and logs here (default: a temporary directory)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",") if w.strip()]

    # SIGTERM unwinds like Ctrl-C, so the broker is stopped either way.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    budget = Budget(args.budget)
    workdir = args.workdir or tempfile.mkdtemp(prefix="sentinel-kafka-bench-")
    os.makedirs(workdir, exist_ok=True)
    t_start = time.monotonic()

    log(f"simulating {args.events:,} events ({args.hours:g} h, seed {args.seed}) ...")
    t0 = time.monotonic()
    lines = simulate(args.events, args.hours, args.seed)
    sim_s = time.monotonic() - t0
    if len(lines) < args.events:
        log(f"note: the simulator gave {len(lines):,} events, not {args.events:,}")
    n = len(lines)

    result: Dict[str, Any] = {"events": n, "partitions": args.partitions, "hours": args.hours, "seed": args.seed,
                              "idle_s": args.idle, "simulate_s": sim_s, "workdir": workdir}
    with tansu_broker(workdir) as brokers:
        result["brokers"] = brokers
        topic = "bench.telemetry.%s" % uuid.uuid4().hex[:8]
        create_topic(brokers, topic, args.partitions)
        log(f"Tansu on {brokers}; producing to {topic} ({args.partitions} partitions) ...")
        result["produce"] = produce(brokers, topic, lines, budget)
        del lines
        log("raw consume + parse ...")
        result["raw"] = raw_consume(brokers, topic, args.partitions, n, budget)
        result["flows"] = []
        for w in workers:
            log(f"sentinel run -w {w} ...")
            f = run_flow(brokers, topic, w, args.idle, workdir, f"w{w}", budget)
            if f["events"] != n:
                raise RuntimeError(f"sentinel run -w {w} read {f['events']} events, expected {n} (log {f['log']})")
            result["flows"].append(f)
        if not args.no_empty_run:
            empty = "bench.empty.%s" % uuid.uuid4().hex[:8]
            create_topic(brokers, empty, args.partitions)
            log("sentinel run -w 1 on an empty topic (fixed cost) ...")
            result["empty_flow"] = run_flow(brokers, empty, 1, args.idle, workdir, "empty", budget)
    result["total_s"] = time.monotonic() - t_start

    print(f"Kafka throughput: {n:,} simulated events ({args.hours:g} h, seed {args.seed}), one topic with "
          f"{args.partitions} partitions on Tansu (memory storage) at {result['brokers']}; "
          f"flow eof_after_idle {args.idle:g}s; {os.cpu_count()} CPUs")
    print(table(result))
    print(f"(simulate {sim_s:.1f}s; whole benchmark {result['total_s']:.0f}s; logs in {workdir})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; broker stopped")
        sys.exit(130)
