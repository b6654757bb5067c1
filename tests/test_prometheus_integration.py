"""The dashboards and rules on a real Prometheus scraping live ``sentinel run`` processes.

A real Prometheus (Debian's ``prometheus`` package; .ci/run installs it when
missing) scrapes two live ``sentinel run`` processes every second, one on the
simulator and one reading a Kafka topic (Tansu) that holds a backlog of
telemetry and some unreadable records, and evaluates the committed rules
file every second. Once alerts are counted, every PromQL expression of every
dashboard panel, annotation and variable, and every rule, goes through
Prometheus' HTTP API: each evaluates without error; each panel returns data,
except those that name why they can be empty in a healthy short run (sink and
step errors: nothing fails); every rule is loaded and evaluated with health
``ok``. ``promtool check rules`` and ``promtool check metrics`` (on the
scraped /metrics) pass.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from sentinel import dashboards
from devtools.tansu import free_port

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "k8s" / "base" / "rules" / "sentinel.rules.yaml"
DASHBOARD_FILES = sorted((ROOT / "k8s" / "base" / "dashboards").glob("*.json"))

# Grafana's variables as the test fills them in: every job, service and model ("All"), a rate window of 30
# one-second scrapes, the dashboard's range as the last two minutes.
VARIABLES = {"$__rate_interval": "30s", "$__interval": "15s", "$__range": "2m", "$job": ".*", "$service": ".*",
             "$model": ".*"}


def fill(expr: str) -> str:
    for k in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(k, VARIABLES[k])
    assert "$" not in expr.replace("$labels", "").replace("$value", ""), expr
    return expr


def binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (apt-get install -y prometheus; .ci/run does it)"
    return path


class Prom:
    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str, **params) -> dict:
        url = f"{self.base}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as ex:  # a bad query answers 400 with a JSON error
            return json.load(ex)

    def query(self, expr: str) -> dict:
        return self.get("/api/v1/query", query=expr)

    def query_range(self, expr: str, seconds: int = 90) -> dict:
        end = time.time()
        return self.get("/api/v1/query_range", query=expr, start=end - seconds, end=end, step="5")

    def value(self, expr: str) -> float:
        res = self.query(expr)
        r = res.get("data", {}).get("result", [])
        return float(r[0]["value"][1]) if r else 0.0


def wait_for(what: str, check, timeout: float, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with status {proc.returncode}")
        if check():
            return
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def produce_backlog(brokers: str, topic: str) -> int:
    """An hour of simulated telemetry and a few records Sentinel cannot read, on a Kafka topic."""
    from confluent_kafka import Producer

    from simulator import Simulator

    lines = [line.rstrip(b"\n") for line in Simulator(seed=5, hours=1, rate=10).iter_lines()]
    for i in range(20):
        lines.insert(1000 * (i + 1), b"not json %d" % i)
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "acks": "all"})
    for i, v in enumerate(lines):
        while True:
            try:
                p.produce(topic, v)
                break
            except BufferError:
                p.poll(0.05)
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    del p
    return len(lines)


@pytest.fixture(scope="module")
def live(tmp_path_factory, request, tansu, kafka_topic):
    """Two live ``sentinel run`` processes scraped by a real Prometheus (job ``sentinel``): one on the
    simulator (RabbitMQ and JSON-lines sinks), one reading a Kafka topic (Tansu) with a backlog of telemetry and
    a few unreadable records."""
    tmp = tmp_path_factory.mktemp("prom")
    sport, kport, pport = free_port(), free_port(), free_port()
    topic = kafka_topic(partitions=2, prefix="prom")
    produce_backlog(tansu, topic)
    kflow = {
        "name": "prometheus-acceptance-kafka",
        "source": {"kind": "kafka", "brokers": tansu, "topics": [topic], "start": "earliest",
                   "config": {"fetch.queue.backoff.ms": 10}},
        "sinks": [{"kind": "jsonl", "path": str(tmp / "kafka-alerts.jsonl")}],
        "metrics": {"port": kport, "host": "127.0.0.1"},
        "dead_letters": {"kind": "jsonl", "path": str(tmp / "kafka-dlq.jsonl")},
    }
    (tmp / "kafka-flow.yaml").write_text(yaml.safe_dump(kflow))
    amqp = os.environ.get("SENTINEL_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    exchange = f"sentinel.test.{uuid.uuid4().hex[:8]}"
    flow = {
        "name": "prometheus-acceptance",
        # 24 simulated hours at 600x: about 2.4 minutes of wall time at most (the test stops it sooner);
        # keys are warm after 30 one-minute windows, 3 seconds of wall time.
        "source": {"kind": "simulator", "seed": 7, "hours": 24, "speed": 600},
        "sinks": [
            {"kind": "jsonl", "path": str(tmp / "alerts.jsonl")},
            {"kind": "rabbitmq", "url": amqp, "exchange": exchange, "high_queue": f"{exchange}.high",
             "low_queue": f"{exchange}.low", "spool_dir": str(tmp / "spool")},
        ],
        "metrics": {"port": sport, "host": "127.0.0.1"},
        "dead_letters": {"kind": "jsonl", "path": str(tmp / "dlq.jsonl")},
    }
    (tmp / "flow.yaml").write_text(yaml.safe_dump(flow))
    prom_cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "sentinel", "static_configs": [
            {"targets": [f"127.0.0.1:{sport}", f"127.0.0.1:{kport}"]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg))
    sentinel_log = open(tmp / "sentinel.log", "wb")
    prom_log = open(tmp / "prometheus.log", "wb")
    sentinel = subprocess.Popen([str(Path(sys.executable).parent / "sentinel"), "run", "-c", str(tmp / "flow.yaml")],
                                stdout=sentinel_log, stderr=subprocess.STDOUT, cwd=tmp)
    kafka_log = open(tmp / "sentinel-kafka.log", "wb")
    from_kafka = subprocess.Popen([str(Path(sys.executable).parent / "sentinel"), "run", "-c",
                                   str(tmp / "kafka-flow.yaml")], stdout=kafka_log, stderr=subprocess.STDOUT, cwd=tmp)
    prom = subprocess.Popen([binary("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{pport}"],
                            stdout=prom_log, stderr=subprocess.STDOUT, cwd=tmp)

    def stop():
        for p in (sentinel, from_kafka, prom):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (sentinel, from_kafka, prom):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        sentinel_log.close()
        kafka_log.close()
        prom_log.close()
        try:
            import pika

            conn = pika.BlockingConnection(pika.URLParameters(amqp))
            ch = conn.channel()
            for q in (f"{exchange}.high", f"{exchange}.low"):
                ch.queue_delete(q)
            ch.exchange_delete(exchange)
            conn.close()
        except Exception:  # the broker's leftovers are harmless; the test's result stands
            pass

    request.addfinalizer(stop)
    api = Prom(f"http://127.0.0.1:{pport}")
    wait_for("Prometheus to answer", lambda: http_ok(f"{api.base}/-/ready"), 60, prom)
    wait_for("sentinel's metrics port", lambda: http_ok(f"http://127.0.0.1:{sport}/metrics"), 60, sentinel)
    wait_for("the Kafka flow's metrics port", lambda: http_ok(f"http://127.0.0.1:{kport}/metrics"), 60, from_kafka)
    # Alerts raised and delivered, and a rate window's worth of scrapes after the first one.
    wait_for("alerts counted in Prometheus",
             lambda: api.value("sum(sentinel_anomalies_total)") > 0
             and api.value('sum(sentinel_alerts_published_total{sink="rabbitmq"})') > 0, 150, sentinel)
    wait_for("the Kafka flow's dead letters and consumer lag in Prometheus",
             lambda: api.value("sum(sentinel_dead_letters_total)") > 0
             and api.value("count(sentinel_kafka_consumer_lag)") > 0, 90, from_kafka)
    time.sleep(35)
    assert sentinel.poll() is None, "the flow ended before the queries ran: give the simulator more hours"
    assert from_kafka.poll() is None, "the Kafka flow ended before the queries ran"
    return {"api": api, "sentinel_port": sport, "tmp": tmp}


def panel_targets():
    """(dashboard uid, panel title, expr, may be empty because) for every query of every generated panel."""
    out = []
    for spec in dashboards.DASHBOARDS:
        for p in dashboards.iter_panels(spec):
            for q in p.queries:
                out.append((spec.uid, p.title, q.expr, p.may_be_empty))
    return out


def test_the_committed_dashboards_are_the_ones_tested():
    """The panels queried below are the committed JSON's, target for target."""
    committed = []
    for f in DASHBOARD_FILES:
        d = json.loads(f.read_text())
        committed += [(d["uid"], p["title"], t["expr"]) for p in d["panels"] for t in p.get("targets", [])]
    assert sorted(committed) == sorted((u, t, e) for u, t, e, _ in panel_targets())
    assert len(committed) >= 25


def test_every_panel_query_evaluates_and_returns_data(live):
    api = live["api"]
    failures, empty, allowed_empty = [], [], []
    for uid, title, expr, may_be_empty in panel_targets():
        for res in (api.query(fill(expr)), api.query_range(fill(expr))):
            if res.get("status") != "success":
                failures.append(f"{uid} / {title}: {expr}: {res.get('error')}")
        data = api.query_range(fill(expr)).get("data", {}).get("result", [])
        if not data:
            (allowed_empty if may_be_empty else empty).append(f"{uid} / {title}: {expr}")
    assert not failures, "\n".join(failures)
    assert not empty, "panels without data:\n" + "\n".join(empty)
    # Only the panels of failures the run does not provoke may be empty (they say why in the dashboard spec).
    assert all(re.search(r"sink_errors_total|step_errors_total", e) for e in allowed_empty), allowed_empty


def test_every_annotation_and_variable_query_evaluates(live):
    api = live["api"]
    for f in DASHBOARD_FILES:
        d = json.loads(f.read_text())
        for a in d["annotations"]["list"]:
            res = api.query_range(fill(a["expr"]))
            assert res.get("status") == "success", (f.name, a["name"], res.get("error"))
        # The alerts of the flow itself are annotations: the run raised some.
        alerts = [a for a in d["annotations"]["list"] if a["name"] == "Sentinel alerts"][0]
        assert api.query_range(fill(alerts["expr"]))["data"]["result"], "no alert annotation in the run"
        for v in d["templating"]["list"]:
            if v["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.*), (\w+)\)", v["query"])
            assert m, v["query"]
            res = api.get(f"/api/v1/label/{m.group(2)}/values", **{"match[]": fill(m.group(1))})
            assert res.get("status") == "success" and res["data"], (v["name"], res)
            if v["name"] == "model":  # the models of the run's alerts, not only 'none' (an alert of no model)
                assert set(res["data"]) - {"none", "other"}, res["data"]


def test_every_rule_is_loaded_and_evaluates(live):
    api = live["api"]
    expected = {r["alert"]: r for g in dashboards.rule_groups() for r in g["rules"]}
    time.sleep(2)  # at least one evaluation after the rate windows filled
    groups = api.get("/api/v1/rules")["data"]["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(loaded) == set(expected)
    for name, r in loaded.items():
        assert r["health"] == "ok", (name, r.get("lastError"))
        assert r["lastEvaluation"] > "2000", (name, r["lastEvaluation"])  # evaluated at least once
        res = api.query(expected[name]["expr"])
        assert res.get("status") == "success", (name, res.get("error"))
    # A healthy run with a live input pages none of the sentinel's own alerts but the ones that say so.
    firing = {a["labels"]["alertname"] for a in api.get("/api/v1/alerts")["data"]["alerts"] if a["state"] == "firing"}
    assert not firing & {"SentinelDown", "SentinelNoEvents", "SentinelDeadLetterRatioHigh", "SentinelPublishFailures"}


def test_promtool_checks_rules_and_the_scraped_metrics(live):
    out = subprocess.run([binary("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{live['sentinel_port']}/metrics", timeout=5) as r:
        text = r.read()
    assert b"sentinel_anomalies_total{" in text
    out = subprocess.run([binary("promtool"), "check", "metrics"], input=text, capture_output=True)
    assert out.returncode == 0, (out.stdout + out.stderr).decode()
