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
             files, metrics off), once per worker count, or once per
             ``--configs`` entry: ``p1w1`` (1 process, 1 worker), ``p1w2``
             (1 process, 2 workers), ``p2``/``p4`` (a cluster of 2 or 4
             processes of 1 worker: ``sentinel run -i N -a "A0;A1;..."``, all
             started at once, timed until the last one exited).

What the topic holds (``--population``): ``simulator`` (default) is
the simulator's few services and users; ``families`` is a scenario
family of benchmarks/world.py (``--family``, default enterprise-mix: six
archetypes, 15-20k heavy-tailed users; seed ``--seed``), its first N events
in time order, as benchmarks/families.py writes them.

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
    python benchmarks/kafka_throughput.py --population families --configs p1w1,p1w2,p2,p4   # scaling table
    python benchmarks/kafka_throughput.py --population families --configs p1w1@other,p1w1,p2@other,p2 \
        --other-tree /tmp/before   # this code against a worktree of another commit, same topic, same run

With ``--configs`` a second table compares the configurations: events read
(summed over the processes' logs; must equal N), run seconds, events/s, the
share of the raw loop's rate, the speed-up over ``p1w1`` (when it ran), and
the CPU seconds the flow's processes used (user + system, all processes,
start-up and idle wait included), the events that came behind a window their
key had already closed (``late``, from the processes' summaries; with several
processes, partitions read hours apart must not make any), and the alerts:
how many, and whether they say what p1w1's say (status, type,
service, model, subject, event time, severity; not ids, wall times or the
summary's wording).
Processes and workers need partitions to read: a process given none never
starts reading, so use at least as many partitions as processes.

The whole run is bounded (``--budget``, default 540 s): every step gets what
is left, a step that overruns is killed, and the broker is stopped on the way
out whatever happens (error, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (HERE, ROOT):
    if p not in sys.path:
        sys.path.insert(0, p)

import orjson  # noqa: E402
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from devtools.tansu import free_port, tansu_broker  # noqa: E402
from simulator import Simulator  # noqa: E402
from sources.kafka import consumer_config  # noqa: E402

_CONFIG = re.compile(r"^p(\d+)(?:w(\d+))?(@other)?$")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) ")
_EOF_LINE = re.compile(r"kafka: (\S+)\[(\d+)\] idle for \S+ after (\d+) messages: end of input")
# The flow's summary line: events behind a window their key had already closed.
_LATE_LINE = re.compile(r"summary: .*alerts published: .*?; ([\d,]+) late events")


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


def family_events(n: int, family: str, seed: int, hours: float, data_dir: Optional[str]) -> List[bytes]:
    """The first ``n`` events of a scenario family's world (benchmarks/world.py), as JSON lines without newline.

    ``family`` may name several families (comma-separated): their worlds (same seed) are merged in
    time order, and each service is renamed ``<family>.<service>`` so that two families' services of
    the same name stay two keys. That gives a topic of many keys of very different loads.
    """
    import heapq

    import world

    names = [f.strip() for f in family.split(",") if f.strip()]
    if len(names) == 1:
        streams = [world.World(names[0], seed=seed, hours=hours, data_dir=data_dir).events()]
    else:
        def renamed(name: str):
            for ev in world.World(name, seed=seed, hours=hours, data_dir=data_dir).events():
                if ev.get("service"):
                    ev["service"] = f"{name}.{ev['service']}"
                yield ev
        streams = [renamed(name) for name in names]
    out: List[bytes] = []
    # ISO timestamps of one format sort as times.
    for ev in heapq.merge(*streams, key=lambda e: e["timestamp"]):
        out.append(orjson.dumps(ev))
        if len(out) >= n:
            break
    return out


def parse_config(text: str) -> Dict[str, Any]:
    """``p1w1`` -> 1 process of 1 worker; ``p4`` -> 4 processes of 1 worker."""
    m = _CONFIG.match(text.strip())
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise ValueError(f"config {text!r}: expected pN or pNwM (N processes of M workers), e.g. p1w1, p1w2, p2, p4, "
                         f"with @other for the code of --other-tree")
    return {"name": text.strip(), "processes": int(m.group(1)), "workers": int(m.group(2) or 1),
            "other": m.group(3) is not None}


def create_topic(brokers: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": brokers, "log_level": 4})
    try:
        for f in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
            f.result(timeout=30)
    finally:
        del admin


def produce(brokers: str, topic: str, lines: List[bytes], budget: Budget, partitions: Optional[int] = None
            ) -> Dict[str, Any]:
    """``lines`` to ``topic`` without a key: spread by the producer (a sticky partitioner fills one partition
    a batch at a time, so partitions end up unequal), or with ``partitions`` event i to partition i mod P."""
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
                if partitions:
                    p.produce(topic, line, partition=i % partitions, on_delivery=on_delivery)
                else:
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


def log_timeline(text: str, idle_s: float) -> Dict[str, float]:
    """Seconds between a process's log lines: its first partition built (``start``), its last message read
    (the last end-of-input line less the idle wait) and its exit line (``finished``), from its first line."""
    stamps = {}
    first = None
    for line in text.splitlines():
        m = _STAMP.match(line)
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        first = t if first is None else first
        if "kafka: reading" in line and "start" not in stamps:
            stamps["start"] = t - first
        elif "end of input" in line:
            stamps["last_message"] = t - idle_s - first
        elif "finished in" in line:
            stamps["finished"] = t - first
    return stamps


def broker_cpu_s() -> float:
    """User + system CPU seconds so far of this process's Tansu broker (0 when it cannot be read)."""
    me = str(os.getpid())
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if "tansu" in name and rest[1] == me:  # rest[1]: the parent's pid
            total += (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_flow(brokers: str, topic: str, workers: int, idle_s: float, workdir: str, tag: str,
             budget: Budget, processes: int = 1, tree: Optional[str] = None) -> Dict[str, Any]:
    """``sentinel run`` over the topic: one process of ``workers`` workers, or a cluster of ``processes``.

    A cluster's processes are started at once (each given every address) and
    the run is timed until the last one has exited. Events read are summed
    over the processes' logs (each partition's end-of-input line).
    """
    alerts = os.path.join(workdir, f"alerts-{tag}.jsonl")
    dlq = os.path.join(workdir, f"dlq-{tag}.jsonl")
    flow = os.path.join(workdir, f"flow-{tag}.yaml")
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
    base = ([exe] if exe else [sys.executable, "-m", "sentinel.cli"]) + ["run", "-c", flow, "-w", str(workers)]
    what = f"sentinel run -w {workers}" if processes == 1 else f"{processes} x sentinel run -w {workers}"
    if processes > 1:
        addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
        cmds = [base + ["-i", str(i), "-a", addresses] for i in range(processes)]
    else:
        cmds = [base]
    env = {**os.environ, "SENTINEL_LOG_LEVEL": "INFO"}
    if tree is not None:  # another checkout's code (--other-tree): first on the path
        env["PYTHONPATH"] = tree
        what += f" ({tree})"
    else:  # this checkout's code: a relative PYTHONPATH would name the work directory the flow runs in
        env["PYTHONPATH"] = ROOT
    timeout = budget.left(what, need=idle_s + 5)
    logs = [os.path.join(workdir, f"sentinel-{tag}" + (f"-{i}" if processes > 1 else "") + ".log")
            for i in range(processes)]
    errs = [open(path, "wb") for path in logs]
    procs: List[subprocess.Popen] = []
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b0 = broker_cpu_s()
    try:
        t0 = time.monotonic()
        for cmd, err in zip(cmds, errs):
            procs.append(subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=err))
        deadline = t0 + timeout
        rcs: List[Optional[int]] = [None] * len(procs)
        cpu_each: List[float] = [0.0] * len(procs)
        while any(rc is None for rc in rcs):  # each process's own CPU time, as it is reaped
            for i, proc in enumerate(procs):
                if rcs[i] is None:
                    pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                    if pid:
                        rcs[i] = proc.returncode = os.waitstatus_to_exitcode(status)
                        cpu_each[i] = ru.ru_utime + ru.ru_stime
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(cmds[0], timeout)
            time.sleep(0.02)
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped: their CPU time is counted
        cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        broker_cpu = broker_cpu_s() - b0
    except BaseException:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        raise
    finally:
        for err in errs:
            err.close()
    per_part: Dict[int, int] = {}
    per_process: List[int] = []
    timeline: List[Dict[str, float]] = []
    late = 0
    for i, (rc, path) in enumerate(zip(rcs, logs)):
        text = open(path, encoding="utf-8", errors="replace").read()
        if rc != 0:
            raise RuntimeError(f"{what} (process {i}) exited {rc}; log {path}:\n{text[-2000:]}")
        mine = {int(m.group(2)): int(m.group(3)) for m in _EOF_LINE.finditer(text)}
        for part, count in mine.items():
            if part in per_part:
                raise RuntimeError(f"partition {part} was read by two processes (logs {logs})")
            per_part[part] = count
        per_process.append(sum(mine.values()))
        timeline.append(log_timeline(text, idle_s))
        late += sum(int(m.group(1).replace(",", "")) for m in _LATE_LINE.finditer(text))
    n_alerts = sum(1 for _ in open(alerts, "rb")) if os.path.exists(alerts) else 0
    n_dead = sum(1 for _ in open(dlq, "rb")) if os.path.exists(dlq) else 0
    return {"workers": workers, "processes": processes, "events": sum(per_part.values()), "per_partition": per_part,
            "per_process": per_process,
            "cpu_per_process_s": cpu_each, "timeline": timeline, "wall_s": wall, "run_s": wall - idle_s, "cpu_s": cpu, "broker_cpu_s": broker_cpu, "alerts": n_alerts,
            "dead_letters": n_dead, "late": late, "log": logs[0] if processes == 1 else logs, "alerts_path": alerts}


def alert_keys(path: str) -> List[tuple]:
    """What each alert says (status, type, service, model, subject, event time, severity), without ids, wall
    times and wording: to compare the alerts of two runs. CloudEvents envelopes are opened."""
    out = []
    if os.path.exists(path):
        with open(path, "rb") as f:
            for line in f:
                a = orjson.loads(line)
                a = a.get("data", a) if "specversion" in a else a
                out.append((a.get("status"), a.get("type"), a.get("service"), a.get("model"), a.get("subject"),
                            a.get("event_time"), a.get("severity")))
    return sorted(out, key=repr)


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
        label = f"sentinel run -w {f['workers']}"
        if f.get("processes", 1) > 1:
            label = f"{f['processes']} x sentinel run -i N -w {f['workers']}"
        if f.get("config"):
            label += f" ({f['config']})"
        rows.append((label, f"{f['events']:,}", f"{f['run_s']:.2f}", f"{rate:,.0f}",
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


def scaling_table(r: Dict[str, Any]) -> str:
    """Per configuration: events read, run seconds, events/s, share of the raw loop, speed-up over p1w1."""
    raw_rate = r["raw"]["events"] / r["raw"]["seconds"]
    base = next((f for f in r["flows"] if f.get("config") == "p1w1"), None)
    base_rate = base["events"] / base["run_s"] if base else None
    rows = [("config", "processes x workers", "events read", "run s", "events/s", "of raw loop", "x p1w1",
             "CPU s", "broker CPU s", "late", "alerts")]
    rows.append(("raw loop", "1 consumer", f"{r['raw']['events']:,}", f"{r['raw']['seconds']:.2f}",
                 f"{raw_rate:,.0f}", "1.00", "", "", f"{r['raw'].get('broker_cpu_s', 0):.1f}", "", ""))
    for f in r["flows"]:
        rate = f["events"] / f["run_s"]
        same = ""
        if base is not None and f is not base:
            same = " (= p1w1)" if f.get("same_alerts_as_p1w1") else " (differ)"
        rows.append((f["config"], f"{f['processes']} x {f['workers']}", f"{f['events']:,}", f"{f['run_s']:.2f}",
                     f"{rate:,.0f}", f"{rate / raw_rate:.3f}", f"{rate / base_rate:.2f}" if base_rate else "",
                     f"{f['cpu_s']:.1f}", f"{f.get('broker_cpu_s', 0):.1f}", f"{f.get('late', 0):,}",
                     f"{f['alerts']}{same}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i in (0, 1, 10) else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def process_lines(r: Dict[str, Any]) -> str:
    """Per process of each configuration: CPU seconds, events read, and when (seconds after its first log line)
    it built its first partition, read its last message and finished."""
    lines = ["Per process (CPU s; events its partitions held; seconds after its first log line: first partition "
             "built, last message read, finished):"]
    for f in r["flows"]:
        for i, (cpu, events, tl) in enumerate(zip(f["cpu_per_process_s"], f["per_process"], f["timeline"])):
            when = "  ".join(f"{k} {tl[k]:.2f}" for k in ("start", "last_message", "finished") if k in tl)
            lines.append(f"  {f['config'] or f['workers']} #{i}: CPU {cpu:.1f} s, {events:,} events; {when}")
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
    ap.add_argument("--configs", help="comma-separated configurations instead of --workers: p1w1 (1 process, "
                    "1 worker), p1w2 (1 process, 2 workers), p2, p4 (2 or 4 processes of 1 worker), any pNwM")
    ap.add_argument("--other-tree", help="a checkout of other code (a git worktree of an older commit): configs "
                    "ending in @other (p1w1@other) run it, PYTHONPATH set to it, in the same run on the same topic")
    ap.add_argument("--population", choices=("simulator", "families"), default="simulator",
                    help="what the topic holds: the simulator's events (default) or a scenario family's world")
    ap.add_argument("--family", default="enterprise-mix", help="scenario family with --population families "
                    "(default enterprise-mix; see benchmarks/world.py); several, comma-separated, are merged "
                    "in time order with each service renamed <family>.<service>")
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data"),
                    help="where the real trace is, for families that use it (default ../shared/data)")
    ap.add_argument("--idle", type=float, default=3.0, help="eof_after_idle of the flow, seconds (default 3)")
    ap.add_argument("--no-empty-run", action="store_true", help="skip the empty-topic run (fixed cost)")
    ap.add_argument("--budget", type=float, default=540.0, help="bound on the whole run, seconds (default 540)")
    ap.add_argument("--workdir", help="keep flow files and logs here (default: a temporary directory)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--even", action="store_true", help="produce event i to partition i mod P (equal partitions) "
                    "instead of letting the producer spread them (unequal: 12-46%% of the events each on 4 partitions)")
    ap.add_argument("--topic", help="name of the topic to create (default: bench.telemetry.<random>); Bytewax "
                    "places keyed steps by a hash of the key, so the name decides which process gets which "
                    "partition's key")
    args = ap.parse_args()
    if args.configs:
        try:
            configs = [parse_config(c) for c in args.configs.split(",") if c.strip()]
        except ValueError as exc:
            ap.error(str(exc))
        for c in configs:
            if c["processes"] * c["workers"] > args.partitions:
                log(f"note: {c['name']} has more workers than the topic has partitions ({args.partitions}); "
                    f"some of them read nothing")
            if c["processes"] > args.partitions:
                ap.error(f"{c['name']}: more processes than partitions ({args.partitions}); a process without "
                         f"a partition never starts reading")
    else:
        configs = [{"name": None, "processes": 1, "workers": int(w)} for w in args.workers.split(",") if w.strip()]
    if any(c.get("other") for c in configs) and not args.other_tree:
        ap.error("configs ending in @other need --other-tree")
    if args.population == "families":
        import world

        unknown = [f for f in args.family.split(",") if f.strip() not in world.FAMILIES]
        if unknown:
            ap.error(f"unknown family {unknown[0]!r} (known: {', '.join(world.FAMILIES)})")

    # SIGTERM unwinds like Ctrl-C, so the broker is stopped either way.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    budget = Budget(args.budget)
    workdir = args.workdir or tempfile.mkdtemp(prefix="sentinel-kafka-bench-")
    os.makedirs(workdir, exist_ok=True)
    t_start = time.monotonic()

    t0 = time.monotonic()
    if args.population == "families":
        what = (f"the first {args.events:,} events of scenario famil{'ies' if ',' in args.family else 'y'} "
                f"{args.family} (seed {args.seed})")
        log(f"generating {what} ...")
        # 24 h is room enough: the first N events are taken, however many hours they span.
        lines = family_events(args.events, args.family, args.seed, 24.0, os.path.abspath(args.data_dir))
        span = orjson.loads(lines[0])["timestamp"] + " .. " + orjson.loads(lines[-1])["timestamp"] if lines else ""
        what += f", {span}"
    else:
        what = f"{args.events:,} simulated events ({args.hours:g} h, seed {args.seed})"
        log(f"simulating {args.events:,} events ({args.hours:g} h, seed {args.seed}) ...")
        lines = simulate(args.events, args.hours, args.seed)
    sim_s = time.monotonic() - t0
    if len(lines) < args.events:
        log(f"note: the generator gave {len(lines):,} events, not {args.events:,}")
    n = len(lines)

    result: Dict[str, Any] = {"events": n, "partitions": args.partitions, "hours": args.hours, "seed": args.seed,
                              "population": args.population, "family": args.family if args.population == "families"
                              else None, "what": what,
                              "idle_s": args.idle, "simulate_s": sim_s, "workdir": workdir}
    with tansu_broker(workdir) as brokers:
        result["brokers"] = brokers
        topic = args.topic or "bench.telemetry.%s" % uuid.uuid4().hex[:8]
        create_topic(brokers, topic, args.partitions)
        log(f"Tansu on {brokers}; producing to {topic} ({args.partitions} partitions) ...")
        result["produce"] = produce(brokers, topic, lines, budget, args.partitions if args.even else None)
        del lines
        log("raw consume + parse ...")
        b0 = broker_cpu_s()
        result["raw"] = raw_consume(brokers, topic, args.partitions, n, budget)
        result["raw"]["broker_cpu_s"] = broker_cpu_s() - b0
        result["flows"] = []
        base_alerts = None
        for c in configs:
            w, procs = c["workers"], c["processes"]
            tag = c["name"] or f"w{w}"
            log(f"sentinel run: {procs} process(es) x {w} worker(s) ({tag}) ...")
            f = run_flow(brokers, topic, w, args.idle, workdir, tag.replace("@", "-"), budget, processes=procs,
                         tree=os.path.abspath(args.other_tree) if c.get("other") else None)
            f["config"] = c["name"]
            if f["events"] != n:
                raise RuntimeError(f"{tag} read {f['events']} events, expected {n} (log {f['log']})")
            if base_alerts is not None:  # every run against the first p1w1's alerts
                f["same_alerts_as_p1w1"] = alert_keys(f["alerts_path"]) == base_alerts
            elif c["name"] == "p1w1":
                base_alerts = alert_keys(f["alerts_path"])
            result["flows"].append(f)
        if not args.no_empty_run:
            empty = "bench.empty.%s" % uuid.uuid4().hex[:8]
            create_topic(brokers, empty, args.partitions)
            log("sentinel run -w 1 on an empty topic (fixed cost) ...")
            result["empty_flow"] = run_flow(brokers, empty, 1, args.idle, workdir, "empty", budget)
    result["total_s"] = time.monotonic() - t_start

    print(f"Kafka throughput: {what}, one topic with "
          f"{args.partitions} partitions on Tansu (memory storage) at {result['brokers']}; "
          f"flow eof_after_idle {args.idle:g}s; {os.cpu_count()} CPUs")
    print(table(result))
    if args.configs:
        print()
        print(f"Scaling ({os.cpu_count()} CPUs; events read summed over the processes' logs):")
        print(scaling_table(result))
        print(process_lines(result))
    print(f"(generate {sim_s:.1f}s; whole benchmark {result['total_s']:.0f}s; logs in {workdir})")
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
