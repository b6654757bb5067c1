"""Alert delivery to the REAL RabbitMQ through outages: zero alerts lost, detection never blocked.

The outage tests stop the local broker (``rabbitmqctl stop_app``) and always
start it again in a ``finally`` (``start_app``, ``await_startup``, then wait
until AMQP answers), so the tests after them find it up. They disturb anyone
else using that broker at the same time: run them when nobody else does.

What is checked, against the broker itself (no mocks):

* ``write`` on the RabbitMQ writer returns promptly while the broker is down
  (alerts go to the on-disk spool), and every alert written before, during and
  after the outage arrives, each once after dedup by ``message_id``, in
  emission order per fingerprint (per queue).
* ``sentinel run`` (subprocess) keeps detecting through an outage and delivers
  the backlog when the broker is back.
* ``sentinel run`` killed with SIGKILL while the broker is down: a restarted
  flow on the same ``spool_dir`` delivers what the dead one had spooled.
* CloudEvents envelope on RabbitMQ and jsonl; ``envelope: none``; configurable
  routing; spools of former workers are adopted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import yaml

from conftest import _amqp_answers
from conftest import drain_queue as drain
from flows import make_alert_sinks
from sentinel.config import ConfigError, load_config_dict
from sentinel.core.types import Alert
from sinks.base import AlertSink, alert_body, encode_alert
from sinks.rabbitmq import RabbitMQWriter, encode_record
from sinks.spool import Spool

ROOT = Path(__file__).resolve().parents[1]

# Detection settings that make the simulator raise alerts all the time (about
# 30 a second at speed 300): the point here is delivery, not precision.
BUSY_DETECTION = {
    "detection": {"threshold": 0.3, "persistence": 1, "warmup_windows": 3, "quiet_windows": 1, "min_requests": 1},
    "alerting": {"group_by": ["service", "model", "type", "subject", "metric"], "group_window": 0,
                 "group_interval": 0, "repeat_interval": 60},
    "windows": {"size": 10},
}


# -- the broker ----------------------------------------------------------------


def rabbitmqctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    ctl = shutil.which("rabbitmqctl")
    assert ctl, "rabbitmqctl is needed to stop and start the broker"
    return subprocess.run([ctl, *args], capture_output=True, text=True, timeout=timeout)


def wait_amqp(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    error = None
    while time.monotonic() < deadline:
        error = _amqp_answers(url)
        if error is None:
            return
        time.sleep(0.5)
    raise AssertionError("RabbitMQ at %s does not answer after start_app: %r" % (url, error))


@contextmanager
def broker_down(url: str) -> Iterator[Dict[str, float]]:
    """RabbitMQ stopped (``stop_app``) inside the block, always started again after it."""
    times: Dict[str, float] = {}
    try:
        r = rabbitmqctl("stop_app")
        assert r.returncode == 0, r.stderr
        assert _amqp_answers(url) is not None, "broker still answers after stop_app"
        times["down"] = time.time()
        yield times
    finally:
        times["up"] = time.time()
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup", timeout=180)
        wait_amqp(url)




def dedup(msgs: List[Tuple[Any, Any, bytes]]) -> Tuple[List[Dict[str, Any]], int]:
    """Alert bodies, first delivery of each message (message_id, see key()); and how many
    duplicates were dropped."""
    seen, out = set(), []
    for _, props, body in msgs:
        alert = alert_body(json.loads(body))
        assert props.message_id == alert["alert_id"]
        if key(alert) in seen:
            continue
        seen.add(key(alert))
        out.append(alert)
    return out, len(msgs) - len(out)


def key(alert: Dict[str, Any]) -> str:
    """What identifies an emitted alert: its alert_id (SPEC: unique)."""
    return alert["alert_id"]


def keys(alerts: List[Dict[str, Any]]) -> set:
    return {key(a) for a in alerts}


def assert_order_per_fingerprint(emitted: List[Dict[str, Any]], delivered: List[Dict[str, Any]]) -> None:
    """Within one queue, each fingerprint's alerts come in the order they were emitted."""
    pos: Dict[str, int] = {}
    for i, a in enumerate(emitted):
        pos.setdefault(key(a), i)
    by_fp: Dict[str, List[int]] = {}
    for a in delivered:
        by_fp.setdefault(a["fingerprint"], []).append(pos[key(a)])
    for fp, seq in by_fp.items():
        assert seq == sorted(seq), "fingerprint %s delivered out of order: %s" % (fp, seq)


def epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


# -- alerts for the in-process tests ---------------------------------------------


_LIFECYCLE = [("firing", "medium"), ("escalated", "high"), ("updated", "critical"), ("resolved", "critical"),
              ("firing", "low"), ("updated", "low"), ("resolved", "low")]


class Emitter:
    """Alerts of a few incidents (same fingerprint: firing, escalated, updated, resolved, ...)."""

    def __init__(self, fingerprints: int = 5) -> None:
        self.n = 0
        self.fps = ["fp-%d-%s" % (i, uuid.uuid4().hex[:6]) for i in range(fingerprints)]
        self.step = {fp: 0 for fp in self.fps}
        self.emitted: List[Dict[str, Any]] = []

    def next(self) -> Dict[str, Any]:
        fp = self.fps[self.n % len(self.fps)]
        status, severity = _LIFECYCLE[self.step[fp] % len(_LIFECYCLE)]
        self.step[fp] += 1
        self.n += 1
        now = datetime.now().astimezone().isoformat()
        alert = {
            "alert_id": "al-%06d-%s" % (self.n, uuid.uuid4().hex[:8]), "fingerprint": fp, "status": status,
            "type": "latency", "severity": severity, "service": "svc-%s" % fp[-6:], "model": "gpt-4o",
            "subject": None, "metric": "latency_p95_ms", "observed": 4000.0 + self.n, "expected": 800.0,
            "score": 0.97, "detector": "test", "event_time": now, "detected_at": now,
            "summary": "test alert %d" % self.n, "evidence": {}, "root_cause_hints": [], "similar_incidents": [],
            "_ingested_at": time.time(),
        }
        self.emitted.append(alert)
        return alert


def test_write_never_blocks_during_an_outage_and_every_alert_arrives_in_order(
        rabbitmq_url: str, fresh_rabbit, tmp_path: Path) -> None:
    names = fresh_rabbit()
    spool_root = tmp_path / "spool"
    sink = AlertSink(lambda i, n: RabbitMQWriter(url=rabbitmq_url, spool_dir=str(spool_root / ("worker-%d" % i)),
                                                 drain_timeout=30, **names),
                     envelope="cloudevents", source="llm-sentinel/delivery-test")
    part = sink.build("alerts_out", 0, 1)
    writer: RabbitMQWriter = part._writer
    emitter = Emitter()
    durations: List[Tuple[float, float]] = []  # (wall time, seconds write_batch took)
    stop = threading.Event()
    errors: List[BaseException] = []

    def emit() -> None:
        try:
            while not stop.is_set():
                batch = [emitter.next() for _ in range(1 + emitter.n % 3)]
                t = time.monotonic()
                part.write_batch(batch)
                durations.append((time.time(), time.monotonic() - t))
                time.sleep(0.02)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=emit, name="emitter")
    thread.start()
    try:
        time.sleep(1.5)
        before_outage = len(emitter.emitted)
        with broker_down(rabbitmq_url) as outage:
            time.sleep(4.0)
            during = [d for t, d in durations if t >= outage["down"]]
            assert writer.pending > 0  # alerts wait in the spool ...
        time.sleep(1.5)  # ... and emission goes on after the broker is back
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    emitted_during = [a for a in emitter.emitted if outage["down"] <= epoch(a["detected_at"]) <= outage["up"]]
    assert before_outage > 20 and len(emitted_during) > 50, (before_outage, len(emitted_during))
    assert len(during) > 20 and max(during) < 0.5, "write blocked during the outage: max %.3fs" % max(during)

    t0 = time.monotonic()
    writer.flush(90)  # the backlog goes out once the sender reconnects (backoff <= 10 s)
    backlog_s = time.monotonic() - t0
    part.close()
    assert writer.pending == 0

    high, high_dups = dedup(drain(rabbitmq_url, names["high_queue"]))
    low, low_dups = dedup(drain(rabbitmq_url, names["low_queue"]))
    emitted_ids = [a["alert_id"] for a in emitter.emitted]
    assert sorted(a["alert_id"] for a in high + low) == sorted(emitted_ids), "alerts lost or foreign"
    assert all(a["severity"] in ("high", "critical") for a in high)
    assert all(a["severity"] in ("info", "low", "medium") for a in low)
    assert_order_per_fingerprint(emitter.emitted, high)
    assert_order_per_fingerprint(emitter.emitted, low)
    print("\n%d alerts (%d during the outage), max write during outage %.1f ms, backlog delivered %.1fs after "
          "flush(); duplicates dropped: %d" % (len(emitted_ids), len(emitted_during), 1000 * max(during),
                                                backlog_s, high_dups + low_dups))


# -- sentinel run ------------------------------------------------------------------


def sentinel_cmd() -> List[str]:
    script = Path(sys.executable).with_name("sentinel")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sentinel.cli"]


def start_flow(tmp_path: Path, flow: Dict[str, Any], name: str = "flow") -> Tuple[subprocess.Popen, Path]:
    path = tmp_path / ("%s.yaml" % name)
    path.write_text(yaml.safe_dump(flow, sort_keys=False))
    err = open(tmp_path / ("%s.stderr" % name), "wb")
    proc = subprocess.Popen(sentinel_cmd() + ["run", "-c", str(path)], cwd=str(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "SENTINEL_LOG_LEVEL": "INFO"})
    err.close()
    return proc, tmp_path / ("%s.stderr" % name)


def busy_flow(tmp_path: Path, rabbitmq_url: str, names: Dict[str, str], alerts: Path, spool: Path,
              hours: float, speed: float, name: str = "delivery") -> Dict[str, Any]:
    return {
        "name": name,
        "source": {"kind": "simulator", "seed": 7, "hours": hours, "speed": speed, "rate": 10},
        "sinks": [{"kind": "rabbitmq", "url": rabbitmq_url, "exchange": names["exchange"],
                   "high_queue": names["high_queue"], "low_queue": names["low_queue"],
                   "spool_dir": str(spool), "drain_timeout": "60s"},
                  {"kind": "jsonl", "path": str(alerts)}],
        "metrics": {"port": 0},
        **BUSY_DETECTION,
    }


def read_events(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines()
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            break  # a line being written right now
    return out


def wait_until(cond, timeout: float, what: str, proc: Optional[subprocess.Popen] = None,
               stderr: Optional[Path] = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError("sentinel run exited (%s) while waiting for %s:\n%s"
                                 % (proc.returncode, what, stderr.read_text()[-3000:] if stderr else ""))
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.2)


def check_rabbit_messages(msgs: List[Tuple[Any, Any, bytes]], names: Dict[str, str], flow_name: str) -> None:
    for method, props, body in msgs:
        event = json.loads(body)
        alert = alert_body(event)
        assert event["specversion"] == "1.0" and event["id"] == alert["alert_id"] == props.message_id
        assert event["source"] == "llm-sentinel/%s" % flow_name
        assert event["type"] == "dev.llmsentinel.alert.%s" % alert["type"]
        assert event["time"] == alert["detected_at"] and event["datacontenttype"] == "application/json"
        assert props.content_type == "application/json" and props.delivery_mode == 2
        assert method.exchange == names["exchange"]
        assert method.routing_key == "alert.%s.%s" % (alert["severity"], alert["type"])
        assert props.headers["status"] == alert["status"] and props.headers["severity"] == alert["severity"]
        assert props.timestamp == int(epoch(alert["detected_at"]))


def test_sentinel_run_keeps_detecting_through_an_outage(rabbitmq_url: str, fresh_rabbit, tmp_path: Path) -> None:
    names = fresh_rabbit()
    alerts_path, spool = tmp_path / "alerts.jsonl", tmp_path / "spool"
    # 2 simulated hours at 300x: about 25 s of wall time, alerts all along.
    proc, stderr = start_flow(tmp_path, busy_flow(tmp_path, rabbitmq_url, names, alerts_path, spool, 2, 300))
    try:
        wait_until(lambda: len(read_events(alerts_path)) > 0, 60, "the first alerts", proc, stderr)
        time.sleep(2.0)  # past the burst at the end of the warm-up: alerts now come steadily
        with broker_down(rabbitmq_url) as outage:
            n_down = len(read_events(alerts_path))
            time.sleep(5.0)
            n_later = len(read_events(alerts_path))
            assert proc.poll() is None
        assert n_later - n_down > 10, "detection stalled during the outage (%d -> %d alerts)" % (n_down, n_later)
        proc.wait(180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = stderr.read_text()
    assert proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert "rabbitmq: delivery to" in log or "cannot connect" in log, "the outage was not noticed:\n" + log[-3000:]

    emitted = [alert_body(e) for e in read_events(alerts_path)]
    during = [a for a in emitted if outage["down"] <= epoch(a["detected_at"]) <= outage["up"]]
    assert len(during) > 10, len(during)
    high_msgs = drain(rabbitmq_url, names["high_queue"])
    low_msgs = drain(rabbitmq_url, names["low_queue"])
    check_rabbit_messages(high_msgs + low_msgs, names, "delivery")
    high, high_dups = dedup(high_msgs)
    low, low_dups = dedup(low_msgs)
    assert len(keys(emitted)) == len(emitted), "the flow emitted an alert_id twice"
    assert keys(high) | keys(low) == keys(emitted)
    assert_order_per_fingerprint(emitted, high)
    assert_order_per_fingerprint(emitted, low)
    with Spool(str(spool / "worker-0")) as left:
        assert left.pending == 0
    print("\n%d alerts, %d emitted while RabbitMQ was down (%.1fs); duplicates dropped: %d"
          % (len(emitted), len(during), outage["up"] - outage["down"], high_dups + low_dups))


def test_sentinel_run_killed_during_an_outage_delivers_the_spool_after_restart(
        rabbitmq_url: str, fresh_rabbit, tmp_path: Path) -> None:
    names = fresh_rabbit()
    alerts_path, spool = tmp_path / "alerts.jsonl", tmp_path / "spool"
    proc, stderr = start_flow(tmp_path, busy_flow(tmp_path, rabbitmq_url, names, alerts_path, spool, 4, 300))
    try:
        wait_until(lambda: len(read_events(alerts_path)) > 0, 60, "the first alerts", proc, stderr)
        time.sleep(2.0)  # past the burst at the end of the warm-up: alerts now come steadily
        with broker_down(rabbitmq_url) as outage:
            n_down = len(read_events(alerts_path))
            wait_until(lambda: len(read_events(alerts_path)) > n_down + 20, 30, "alerts during the outage",
                       proc, stderr)
            # Everything the file sink shows now was also handed to the RabbitMQ sink
            # (same batch, next output step): give that step a moment, then kill -9.
            snapshot = [alert_body(e) for e in read_events(alerts_path)]
            time.sleep(1.0)
            kill_at = time.time()
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            assert proc.returncode == -signal.SIGKILL
            with Spool(str(spool / "worker-0")) as left:  # the dead process held the lock: released
                spooled = left.pending
            assert spooled >= 20, spooled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # Restart: the same flow definition, same spool_dir; a short quiet input this time.
    events = tmp_path / "quiet.jsonl"
    events.write_text(json.dumps({"timestamp": "2026-01-05T00:00:00Z", "service": "s", "model": "m",
                                  "latency_ms": 100}) + "\n")
    flow = busy_flow(tmp_path, rabbitmq_url, names, alerts_path, spool, 1, 1, name="delivery")
    flow["source"] = {"kind": "file", "path": str(events)}
    t0 = time.monotonic()
    proc2, stderr2 = start_flow(tmp_path, flow, name="restart")
    try:
        proc2.wait(120)
    finally:
        if proc2.poll() is None:
            proc2.kill()
            proc2.wait()
    restart_s = time.monotonic() - t0
    log = stderr2.read_text()
    assert proc2.returncode == 0, log[-3000:]
    assert "will be delivered again" in log, log[-3000:]

    high_msgs = drain(rabbitmq_url, names["high_queue"])
    low_msgs = drain(rabbitmq_url, names["low_queue"])
    check_rabbit_messages(high_msgs + low_msgs, names, "delivery")
    high, high_dups = dedup(high_msgs)
    low, low_dups = dedup(low_msgs)
    delivered = keys(high) | keys(low)
    missing = [key(a) for a in snapshot if key(a) not in delivered]
    assert not missing, "%d alerts written before the kill never reached RabbitMQ: %s" % (len(missing), missing[:5])
    emitted = [alert_body(e) for e in read_events(alerts_path)]
    # The sinks are separate output steps: a kill -9 can land after the RabbitMQ sink spooled
    # a batch and before the file sink wrote it. Only such alerts, of the killed run's last
    # moments, may reach RabbitMQ without being in the file.
    in_file = keys(emitted)
    last_written = max(epoch(a["detected_at"]) for a in emitted if epoch(a["detected_at"]) <= kill_at)
    extra = [a for a in high + low if key(a) not in in_file]
    assert len(extra) <= 50, len(extra)
    for a in extra:
        assert last_written - 1.0 <= epoch(a["detected_at"]) <= kill_at, (a["detected_at"], last_written, kill_at)
    assert_order_per_fingerprint(emitted, [a for a in high if key(a) in in_file])
    assert_order_per_fingerprint(emitted, [a for a in low if key(a) in in_file])
    with Spool(str(spool / "worker-0")) as left:
        assert left.pending == 0
    print("\nkilled with %d alerts spooled (outage %.1fs); restart delivered them in %.1fs; "
          "%d alerts in total, duplicates dropped: %d"
          % (spooled, outage["up"] - outage["down"], restart_s, len(delivered), high_dups + low_dups))


# -- no outage: envelope, routing, config ------------------------------------------


def test_cloudevents_envelope_on_rabbitmq_and_jsonl(rabbitmq_url: str, fresh_rabbit, tmp_path: Path) -> None:
    names = fresh_rabbit()
    alerts_path, bare_path, spool = tmp_path / "alerts.jsonl", tmp_path / "bare.jsonl", tmp_path / "spool"
    flow = busy_flow(tmp_path, rabbitmq_url, names, alerts_path, spool, 0.5, 0, name="envelope-test")
    flow["sinks"].append({"kind": "jsonl", "path": str(bare_path), "envelope": "none"})
    proc, stderr = start_flow(tmp_path, flow)
    proc.wait(120)
    assert proc.returncode == 0, stderr.read_text()[-3000:]

    events = read_events(alerts_path)
    bare = read_events(bare_path)
    assert len(events) > 10 and len(events) == len(bare)
    for event, alert in zip(events, bare):
        assert set(event) == {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "data"}
        assert event["data"] == alert and "specversion" not in alert
        assert event["specversion"] == "1.0"
        assert event["id"] == alert["alert_id"]
        assert event["source"] == "llm-sentinel/envelope-test"
        assert event["type"] == "dev.llmsentinel.alert." + alert["type"]
        assert event["time"] == alert["detected_at"]
        assert event["datacontenttype"] == "application/json"
        want = "%s/%s" % (alert["service"], alert["model"]) if alert["model"] else (alert["subject"] or alert["service"])
        assert event["subject"] == want
        assert alert_body(event) == alert_body(alert) == alert

    high_msgs, low_msgs = drain(rabbitmq_url, names["high_queue"]), drain(rabbitmq_url, names["low_queue"])
    check_rabbit_messages(high_msgs + low_msgs, names, "envelope-test")
    got = dedup(high_msgs)[0] + dedup(low_msgs)[0]
    assert keys(got) == keys(bare)
    by_key: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for a in bare:
        by_key.setdefault(key(a), a)
    for a in got:
        assert a == by_key[key(a)]


def test_routing_map_replaces_the_default_bindings(rabbitmq_url: str, fresh_rabbit, tmp_path: Path) -> None:
    names = fresh_rabbit()
    pages, tickets = names["high_queue"], names["low_queue"]
    cfg = load_config_dict({
        "name": "routing-test", "source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0},
        "sinks": [{"kind": "rabbitmq", "url": rabbitmq_url, "exchange": names["exchange"], "envelope": "none",
                   "spool_dir": str(tmp_path / "spool"), "routing": {pages: ["critical"],
                                                                     tickets: ["info", "low", "medium", "high"]}}],
    })
    (sink,) = make_alert_sinks(cfg)
    part = sink.build("alerts_out", 0, 1)
    emitter = Emitter(fingerprints=2)
    alerts = [emitter.next() for _ in range(14)]
    part.write_batch(alerts)
    part._writer.flush(30)
    assert part._writer.spool_dir == str(tmp_path / "spool" / "worker-0")
    part.close()
    got_pages, _ = dedup(drain(rabbitmq_url, pages))
    got_tickets, _ = dedup(drain(rabbitmq_url, tickets))
    assert [a["alert_id"] for a in got_pages] == [a["alert_id"] for a in alerts if a["severity"] == "critical"]
    assert [a["alert_id"] for a in got_tickets] == [a["alert_id"] for a in alerts if a["severity"] != "critical"]
    assert got_pages and got_tickets


def test_routing_config_errors_are_named() -> None:
    base = {"source": {"kind": "file", "path": "x"}}
    with pytest.raises(ConfigError, match=r"sinks\[0\].*no queue takes severity info"):
        load_config_dict({**base, "sinks": [{"kind": "rabbitmq", "routing": {"q": ["low", "medium", "high",
                                                                                    "critical"]}}]})
    with pytest.raises(ConfigError, match="either routing or high_queue"):
        load_config_dict({**base, "sinks": [{"kind": "rabbitmq", "high_queue": "h", "routing": {"q": [
            "info", "low", "medium", "high", "critical"]}}]})
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.routing"):
        load_config_dict({**base, "sinks": [{"kind": "rabbitmq", "routing": {"q": ["urgent"]}}]})
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.envelope"):
        load_config_dict({**base, "sinks": [{"kind": "jsonl", "path": "a", "envelope": "cloudevent"}]})
    with pytest.raises(ConfigError, match=r"sinks\[1\]\.spool_dir.*own spool_dir"):
        load_config_dict({**base, "sinks": [{"kind": "rabbitmq"}, {"kind": "rabbitmq", "url": "amqp://other/"}]})
    cfg = load_config_dict({**base, "sinks": [{"kind": "rabbitmq", "spool_max_bytes": "64MiB",
                                               "drain_timeout": "2m"}]})
    s = cfg.sinks[0]
    assert s.spool_max_bytes == 64 << 20 and s.drain_timeout == 120.0 and s.envelope == "cloudevents"
    assert s.bindings() == {"incidents.high-priority": ["high", "critical"],
                            "incidents.low-priority": ["info", "low", "medium"]}
    assert s.spool_base() == os.path.join("sentinel-spool", "sentinel.alerts")


def test_spool_of_a_former_worker_is_adopted(rabbitmq_url: str, fresh_rabbit, tmp_path: Path) -> None:
    """A run with 2 workers left alerts in worker-1's spool; a 1-worker run delivers them first."""
    names = fresh_rabbit()
    base = tmp_path / "spool"
    emitter = Emitter(fingerprints=3)
    old = [emitter.next() for _ in range(9)]
    with Spool(str(base / "worker-1")) as orphan:
        orphan.put([encode_record(Alert.of(a), encode_alert(a)) for a in old])
    cfg = load_config_dict({
        "source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0},
        "sinks": [{"kind": "rabbitmq", "url": rabbitmq_url, "spool_dir": str(base), "envelope": "none", **names}],
    })
    (sink,) = make_alert_sinks(cfg)
    part = sink.build("alerts_out", 0, 1)
    new = [emitter.next() for _ in range(5)]
    part.write_batch(new)
    part._writer.flush(30)
    part.close()
    assert not (base / "worker-1").exists()
    high, _ = dedup(drain(rabbitmq_url, names["high_queue"]))
    low, _ = dedup(drain(rabbitmq_url, names["low_queue"]))
    assert sorted(a["alert_id"] for a in high + low) == sorted(a["alert_id"] for a in old + new)
    assert_order_per_fingerprint(old + new, high)
    assert_order_per_fingerprint(old + new, low)
