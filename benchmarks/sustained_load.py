"""Sustained load: a scenario family's telemetry produced live at a fixed rate, consumed by ``sentinel run``.

The script starts its own Tansu broker (memory storage) on a free loopback
port, creates a topic (``--partitions``, default 4) and starts ``sentinel run``
on it (Kafka source, jsonl alert and dead-letter files, metrics on a free
port, one-minute windows, ``--lateness`` allowed lateness). A producer thread
then writes events at ``--rate`` events/s: the first ``--pool`` events of a
scenario family's world (benchmarks/world.py, ``--family``, ``--seed``), over
and over, each with its timestamp rewritten to the wall clock when it is
sent, so event time tracks real time (the world's own pace is compressed:
its users and services, many times faster).

Every second the flow's ``/metrics`` is read and the flow process's RSS
(``/proc/PID/status``); every ``--report`` seconds (default 30) and at the
end a line says:

* produced and consumed events (consumed: ``sentinel_events_total``, every
  outcome), and the backlog produced minus consumed;
* ``kafka lag``: the flow's ``sentinel_kafka_consumer_lag`` summed over the
  partitions (Tansu's high watermark leaves out the last produced batch, so
  this reads low by up to a batch per partition), and the most messages
  waiting in the producer's own queue (sent but not yet acknowledged);
* ``read lag``: how old, in wall seconds, the newest event the flow has
  counted is: now minus the time the producer had sent that many events
  (p50 / p99 / max of the one-second samples). The flow's stream clock runs
  this far behind the wall clock;
* ``close lag``: the flow's ``sentinel_window_close_lag_seconds`` over the
  interval, windows closed then, and p50 / p99 as bucket bounds (buckets 1,
  2, 5, 15, 30 s ...) and the mean: the stream's clock at a window's close minus
  the window's end (so at least the allowed lateness);
* the flow process's RSS.

**End-to-end lag** of a window (wall time of its close minus the wall time of
its end, which is the event time of its newest possible event) is the close
lag plus the read lag at that moment; the summary bounds its p99 by the sum
of the two p99s.

``--find-peak`` steps the rate up (``--steps``, default 10k, 15k, 20k, 25k,
30k, 40k events/s, ``--step-minutes`` each, one flow throughout) and stops at
the first step the flow does not hold: a step holds when the read lag stays
under ``--max-lag`` (10 s) in every sample of it and the producer reached
95% of the rate. The peak is the highest step held.

    python benchmarks/sustained_load.py --rate 10000 --minutes 10
    python benchmarks/sustained_load.py --find-peak --step-minutes 1.5
    python benchmarks/sustained_load.py --rate 5000 --minutes 2 --family dev-platform --json out.json

The producer runs in this script's process, beside the flow: on a small
machine the two share the cores. Its achieved rate is reported.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (HERE, ROOT):
    if p not in sys.path:
        sys.path.insert(0, p)

from confluent_kafka import Producer  # noqa: E402

from kafka_throughput import create_topic, family_events  # noqa: E402
from devtools.tansu import free_port, tansu_broker  # noqa: E402

_PREFIX = b'{"timestamp":"'
_TS_LEN = 24  # 2026-03-02T00:00:00.135Z


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def event_tails(lines: List[bytes]) -> List[bytes]:
    """Each line without its leading timestamp field, to be sent as ``_PREFIX + now + tail``."""
    tails = []
    for line in lines:
        if not line.startswith(_PREFIX) or line[len(_PREFIX) + _TS_LEN:len(_PREFIX) + _TS_LEN + 1] != b'"':
            raise ValueError(f"expected the timestamp first, with milliseconds: {line[:60]!r}")
        tails.append(line[len(_PREFIX) + _TS_LEN:])
    return tails


def wall_stamp(t: float) -> bytes:
    ms = int(t * 1000) % 1000
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{ms:03d}Z").encode()


class LiveProducer(threading.Thread):
    """Sends the pool's events at the schedule's rates, stamped with the wall clock; keeps a (time, sent) trail."""

    def __init__(self, brokers: str, topic: str, tails: List[bytes], schedule: List[Tuple[float, float]]) -> None:
        super().__init__(daemon=True)
        self.brokers, self.topic, self.tails, self.schedule = brokers, topic, tails, schedule
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.trail_t: List[float] = []
        self.trail_n: List[int] = []
        self.sent = 0
        self.errors = 0
        self.queued = 0  # messages in the producer's queue, not yet acknowledged by the broker
        self.t_start = 0.0
        self.t_end: Optional[float] = None
        self.step_starts: List[float] = []

    def sent_by(self, count: int) -> Optional[float]:
        """Wall time at which the producer had sent ``count`` events (None before the first)."""
        with self.lock:
            i = bisect.bisect_left(self.trail_n, count)
            if i >= len(self.trail_t):
                return self.trail_t[-1] if self.trail_t else None
            return self.trail_t[i]

    def run(self) -> None:
        def on_delivery(err, msg) -> None:
            if err is not None:
                self.errors += 1

        p = Producer({"bootstrap.servers": self.brokers, "linger.ms": 5, "batch.num.messages": 5000,
                      "queue.buffering.max.messages": 2_000_000, "acks": 1})
        tails, n_pool = self.tails, len(self.tails)
        produce, topic = p.produce, self.topic
        self.t_start = time.time()
        base_sent = 0
        step_t0 = self.t_start
        try:
            for seconds, rate in self.schedule:
                step_t0 = time.time()
                self.step_starts.append(step_t0)
                base_sent = self.sent
                while not self.stop.is_set():
                    now = time.time()
                    el = now - step_t0
                    if el >= seconds:
                        break
                    due = base_sent + int(el * rate) - self.sent
                    if due > 0:
                        head = _PREFIX + wall_stamp(now)
                        i = self.sent
                        for k in range(i, i + due):
                            value = head + tails[k % n_pool]
                            while True:
                                try:
                                    produce(topic, value, on_delivery=on_delivery)
                                    break
                                except BufferError:
                                    p.poll(0.005)
                        self.sent = i + due
                        with self.lock:
                            self.trail_t.append(now)
                            self.trail_n.append(self.sent)
                    p.poll(0)
                    self.queued = len(p)
                    time.sleep(0.005)
                if self.stop.is_set():
                    break
        finally:
            self.t_end = time.time()
            p.flush(30)


# -- the flow's metrics -----------------------------------------------------------


def scrape(port: int) -> Optional[Dict[str, Any]]:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    consumed = 0.0
    kafka_lag = 0.0
    buckets: Dict[float, float] = {}
    close_sum = close_count = 0.0
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name, _, value = line.rpartition(" ")
        if name.startswith("sentinel_events_total"):
            consumed += float(value)
        elif name.startswith("sentinel_kafka_consumer_lag{"):
            kafka_lag += float(value)
        elif name.startswith("sentinel_window_close_lag_seconds_bucket"):
            le = name.split('le="')[1].split('"')[0]
            buckets[float("inf") if le == "+Inf" else float(le)] = float(value)
        elif name.startswith("sentinel_window_close_lag_seconds_sum"):
            close_sum = float(value)
        elif name.startswith("sentinel_window_close_lag_seconds_count"):
            close_count = float(value)
    return {"consumed": int(consumed), "kafka_lag": int(kafka_lag), "buckets": buckets, "close_sum": close_sum,
            "close_count": close_count}


def close_lag(a: Optional[Dict[str, Any]], b: Dict[str, Any]) -> Dict[str, Any]:
    """Windows closed between scrapes a and b, their close lag's p50 / p99 (bucket bounds) and mean."""
    prev = a["buckets"] if a else {}
    delta = sorted((le, c - prev.get(le, 0.0)) for le, c in b["buckets"].items())
    n = delta[-1][1] if delta else 0.0
    out: Dict[str, Any] = {"windows": int(n), "p50": None, "p99": None, "mean": None}
    if n > 0:
        for q, key in ((0.5, "p50"), (0.99, "p99")):
            out[key] = next(le for le, c in delta if c >= q * n)
        out["mean"] = (b["close_sum"] - (a["close_sum"] if a else 0.0)) / (b["close_count"] - (a["close_count"] if a else 0.0))
    return out


def rss_mb(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def pct(xs: List[float], q: float) -> Optional[float]:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _s(x: Optional[float], fmt: str = "{:.1f}") -> str:
    if x is None:
        return "-"
    return "inf" if x == float("inf") else fmt.format(x)


# -- the run -----------------------------------------------------------------------


class Monitor:
    """One-second samples of the flow; interval and step summaries."""

    def __init__(self, port: int, pid: int, producer: LiveProducer) -> None:
        self.port, self.pid, self.producer = port, pid, producer
        self.samples: List[Dict[str, Any]] = []
        self.scrapes: List[Tuple[float, Dict[str, Any]]] = []

    def sample(self) -> Optional[Dict[str, Any]]:
        now = time.time()
        m = scrape(self.port)
        if m is None:
            return None
        produced = self.producer.sent
        t_sent = self.producer.sent_by(m["consumed"]) if m["consumed"] > 0 else None
        read_lag = 0.0 if m["consumed"] >= produced else (now - t_sent if t_sent is not None else now - self.producer.t_start)
        s = {"t": now, "produced": produced, "consumed": m["consumed"], "backlog": max(0, produced - m["consumed"]),
             "kafka_lag": m["kafka_lag"], "read_lag": max(0.0, read_lag), "rss_mb": rss_mb(self.pid),
             "in_producer": self.producer.queued}
        self.samples.append(s)
        self.scrapes.append((now, m))
        return s

    def summary(self, t0: float, t1: float) -> Dict[str, Any]:
        """Figures of the samples in [t0, t1] and the windows closed between the scrapes bounding it."""
        ss = [s for s in self.samples if t0 <= s["t"] <= t1]
        before = [m for t, m in self.scrapes if t < t0]
        inside = [m for t, m in self.scrapes if t0 <= t <= t1]
        lags = [s["read_lag"] for s in ss]
        rss = [s["rss_mb"] for s in ss if s["rss_mb"] is not None]
        out: Dict[str, Any] = {"samples": len(ss)}
        if ss:
            last = ss[-1]
            out.update(produced=last["produced"], consumed=last["consumed"], backlog=last["backlog"],
                       in_producer_max=max(s.get("in_producer", 0) for s in ss),
                       kafka_lag=last["kafka_lag"], kafka_lag_max=max(s["kafka_lag"] for s in ss),
                       read_lag_p50=pct(lags, 0.5), read_lag_p99=pct(lags, 0.99), read_lag_max=max(lags),
                       rss_mb=rss[-1] if rss else None, rss_min=min(rss) if rss else None,
                       rss_max=max(rss) if rss else None)
        if inside:
            out["close"] = close_lag(before[-1] if before else None, inside[-1])
        return out


def line(label: str, f: Dict[str, Any], seconds: float) -> str:
    if not f.get("samples"):
        return f"{label}: no sample (metrics did not answer)"
    c = f.get("close") or {}
    return (f"{label}: produced {f['produced']:,} consumed {f['consumed']:,} backlog {f['backlog']:,} "
            f"(kafka lag {f['kafka_lag']:,}, max {f['kafka_lag_max']:,}; producer queue max "
            f"{f['in_producer_max']:,}); read lag p50 {_s(f['read_lag_p50'])} "
            f"p99 {_s(f['read_lag_p99'])} max {_s(f['read_lag_max'])} s; close lag "
            f"{c.get('windows', 0):,} windows p50 <= {_s(c.get('p50'), '{:g}')} p99 <= {_s(c.get('p99'), '{:g}')} "
            f"mean {_s(c.get('mean'), '{:.2f}')} s; RSS {_s(f['rss_mb'], '{:.0f}')} MB")


def wait_ready(port: int, proc: subprocess.Popen, timeout: float, flow_log: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sentinel run exited {proc.returncode}:\n{open(flow_log).read()[-2000:]}")
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"sentinel run not ready after {timeout:g} s (log {flow_log})")


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=10_000, help="events/s (default 10000)")
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to produce (default 10)")
    ap.add_argument("--find-peak", action="store_true", help="step the rate up until the flow falls behind")
    ap.add_argument("--steps", default="10000,15000,20000,25000,30000,40000",
                    help="rates of --find-peak (default 10000,15000,20000,25000,30000,40000)")
    ap.add_argument("--step-minutes", type=float, default=1.5, help="minutes per step of --find-peak (default 1.5)")
    ap.add_argument("--max-lag", type=float, default=10.0, help="read lag a step may not reach, s (default 10)")
    ap.add_argument("--family", default="enterprise-mix", help="scenario family (default enterprise-mix)")
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--pool", type=int, default=300_000, help="distinct events, sent over and over (default 300000)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1, help="worker threads of sentinel run (default 1)")
    ap.add_argument("--lateness", type=float, default=1.0, help="windows.allowed_lateness, s (default 1)")
    ap.add_argument("--report", type=float, default=30.0, help="seconds between report lines (default 30)")
    ap.add_argument("--drain", type=float, default=60.0, help="seconds to wait for the flow to catch up at the end")
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--workdir", help="keep flow files and logs here (default: a temporary directory)")
    ap.add_argument("--json", help="also write samples and summaries here")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, _raise_interrupt)
    if args.find_peak:
        rates = [float(r) for r in args.steps.split(",") if r.strip()]
        schedule = [(args.step_minutes * 60.0, r) for r in rates]
    else:
        schedule = [(args.minutes * 60.0, args.rate)]
    workdir = args.workdir or tempfile.mkdtemp(prefix="sentinel-sustained-")
    os.makedirs(workdir, exist_ok=True)

    log(f"generating the first {args.pool:,} events of {args.family} (seed {args.seed}) ...")
    tails = event_tails(family_events(args.pool, args.family, args.seed, 24.0, os.path.abspath(args.data_dir)))
    result: Dict[str, Any] = {"family": args.family, "seed": args.seed, "pool": len(tails),
                              "partitions": args.partitions, "workers": args.workers, "lateness": args.lateness,
                              "schedule": schedule, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "cpus": os.cpu_count()}
    flow_proc: Optional[subprocess.Popen] = None
    producer: Optional[LiveProducer] = None
    try:
        with tansu_broker(workdir) as brokers:
            topic = "live.telemetry.%s" % uuid.uuid4().hex[:8]
            create_topic(brokers, topic, args.partitions)
            mport = free_port()
            flow = os.path.join(workdir, "flow.yaml")
            alerts = os.path.join(workdir, "alerts.jsonl")
            with open(flow, "w") as f:
                f.write(f"name: sustained-load\n"
                        f"source: {{kind: kafka, brokers: '{brokers}', topics: ['{topic}']}}\n"
                        f"sinks:\n  - {{kind: jsonl, path: '{alerts}'}}\n"
                        f"dead_letters: {{kind: jsonl, path: '{os.path.join(workdir, 'dlq.jsonl')}'}}\n"
                        f"metrics: {{port: {mport}}}\n"
                        f"windows: {{allowed_lateness: {args.lateness}}}\n")
            flow_log = os.path.join(workdir, "sentinel.log")
            cmd = [sys.executable, "-m", "sentinel.cli", "run", "-c", flow, "-w", str(args.workers)]
            with open(flow_log, "wb") as err:
                flow_proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                             env={**os.environ, "SENTINEL_LOG_LEVEL": "WARNING"})
            wait_ready(mport, flow_proc, 90.0, flow_log)
            log(f"Tansu on {brokers}, topic {topic} ({args.partitions} partitions); flow ready, metrics on {mport}; "
                f"producing {' then '.join(f'{r:,.0f}/s for {s:g} s' for s, r in schedule)}")
            producer = LiveProducer(brokers, topic, tails, schedule)
            mon = Monitor(mport, flow_proc.pid, producer)
            mon.sample()
            producer.start()
            while not producer.t_start:
                time.sleep(0.01)
            t_run0 = time.time()
            next_report = t_run0 + args.report
            last_report = t_run0
            steps: List[Dict[str, Any]] = []
            step_i = 0
            while producer.is_alive():
                time.sleep(max(0.0, 1.0 - (time.time() - t_run0) % 1.0))
                if flow_proc.poll() is not None:
                    raise RuntimeError(f"sentinel run exited {flow_proc.returncode}; log {flow_log}")
                mon.sample()
                now = time.time()
                if now >= next_report:
                    print(line(f"[{now - t_run0:5.0f} s]", mon.summary(last_report, now), now - last_report),
                          flush=True)
                    last_report, next_report = now, next_report + args.report
                # a step ended: judge it (find-peak stops at the first step not held)
                while args.find_peak and step_i < len(producer.step_starts) - 1:
                    if not judge_step(mon, producer, schedule, step_i, steps, args.max_lag):
                        producer.stop.set()
                    step_i += 1
            producer.join()
            t_prod_end = producer.t_end or time.time()
            if args.find_peak and step_i < len(producer.step_starts) and not producer.stop.is_set():
                judge_step(mon, producer, schedule, step_i, steps, args.max_lag)
            # drain: how long until the flow has read everything produced
            drained_at = None
            deadline = time.time() + args.drain
            while time.time() < deadline:
                s = mon.sample()
                if s and s["consumed"] >= producer.sent:
                    drained_at = time.time()
                    break
                time.sleep(1.0)
            whole = mon.summary(t_run0, t_prod_end)
            result.update(produced=producer.sent, produce_s=t_prod_end - producer.t_start,
                          produce_errors=producer.errors, whole=whole, steps=steps,
                          drained_after_s=None if drained_at is None else drained_at - t_prod_end,
                          final=mon.samples[-1] if mon.samples else None, samples=mon.samples)
            rss = [(s["t"] - t_run0, s["rss_mb"]) for s in mon.samples if s["rss_mb"] is not None and s["t"] >= t_run0]
            result["rss_by_minute"] = {int(t // 60): round(m) for t, m in rss}
    except KeyboardInterrupt:
        log("interrupted; broker stopped")
        return 130
    finally:
        if producer is not None:
            producer.stop.set()
        if flow_proc is not None and flow_proc.poll() is None:
            flow_proc.send_signal(signal.SIGINT)
            try:
                flow_proc.wait(30)
            except subprocess.TimeoutExpired:
                flow_proc.kill()
                flow_proc.wait(10)

    report(result, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return 0


def judge_step(mon: Monitor, producer: LiveProducer, schedule: List[Tuple[float, float]], i: int,
               steps: List[Dict[str, Any]], max_lag: float) -> bool:
    """Judge step ``i`` (held: read lag under ``max_lag`` in every sample, producer at 95% of the rate)."""
    t0 = producer.step_starts[i]
    t1 = producer.step_starts[i + 1] if i + 1 < len(producer.step_starts) else (producer.t_end or time.time())
    rate = schedule[i][1]
    f = mon.summary(t0 + 1.0, t1)
    ss = [s for s in mon.samples if t0 + 1.0 <= s["t"] <= t1]
    achieved = ((ss[-1]["produced"] - ss[0]["produced"]) / max(1e-9, ss[-1]["t"] - ss[0]["t"])
                if len(ss) >= 2 else 0.0)
    held = bool(ss) and f["read_lag_max"] < max_lag and achieved >= 0.95 * rate
    why = (f"producer {achieved:,.0f}/s, read lag p50 {_s(f.get('read_lag_p50'))} p99 {_s(f.get('read_lag_p99'))} "
           f"max {_s(f.get('read_lag_max'))} s, backlog at the end {f.get('backlog', 0):,}, close lag p99 <= "
           f"{_s((f.get('close') or {}).get('p99'), '{:g}')} s, RSS {_s(f.get('rss_mb'), '{:.0f}')} MB")
    print(f"step {rate:,.0f}/s: {'held' if held else 'NOT held'} ({why})", flush=True)
    steps.append({"rate": rate, "achieved": achieved, "held": held, "why": why, **f})
    return held


def report(r: Dict[str, Any], args: argparse.Namespace) -> None:
    w = r.get("whole") or {}
    c = w.get("close") or {}
    print()
    print(f"Sustained load: {r['family']} (seed {r['seed']}, a pool of {r['pool']:,} events sent over and over, "
          f"timestamps = wall clock), {r['partitions']} partitions on Tansu (memory), sentinel run -w {r['workers']}, "
          f"1-minute windows, allowed lateness {r['lateness']:g} s; {r['cpus']} CPUs; {r['date']}")
    if "produced" not in r:
        return
    print(f"produced {r['produced']:,} events in {r['produce_s']:.0f} s = {r['produced'] / r['produce_s']:,.0f}/s "
          f"({r['produce_errors']} delivery errors)")
    if w.get("samples"):
        print(f"consumed by the end of producing: {w['consumed']:,} (backlog {w['backlog']:,}); "
              + ("read everything " + f"{r['drained_after_s']:.1f} s after the producer stopped"
                 if r.get("drained_after_s") is not None else f"not caught up {args.drain:g} s after"))
        print(f"read lag (wall s): p50 {_s(w['read_lag_p50'])}, p99 {_s(w['read_lag_p99'])}, max "
              f"{_s(w['read_lag_max'])}; kafka consumer lag max {w['kafka_lag_max']:,} messages")
        print(f"window close lag (stream clock): {c.get('windows', 0):,} windows, p50 <= {_s(c.get('p50'), '{:g}')} s, "
              f"p99 <= {_s(c.get('p99'), '{:g}')} s (bucket bounds), mean {_s(c.get('mean'), '{:.2f}')} s")
        if c.get("p99") is not None and w.get("read_lag_p99") is not None:
            print(f"end-to-end window close lag p99 <= {c['p99'] + w['read_lag_p99']:.1f} s "
                  f"(close lag p99 bound + read lag p99)")
        bymin = r.get("rss_by_minute") or {}
        print("flow RSS by minute (MB): " + ", ".join(f"{m}:{v}" for m, v in sorted(bymin.items())))
    if r.get("steps"):
        held = [s["rate"] for s in r["steps"] if s["held"]]
        print("steps: " + "; ".join(f"{s['rate']:,.0f}/s {'held' if s['held'] else 'NOT held'}" for s in r["steps"]))
        print(f"peak sustained rate (read lag under {args.max_lag:g} s throughout a {args.step_minutes:g}-minute "
              f"step): " + (f"{max(held):,.0f} events/s" if held else "none of the steps"))


if __name__ == "__main__":
    sys.exit(main())
