"""A changed ``policies:`` block taken up by the running flow (sentinel/policy_reload.py, operators/budgets.py).

The flow runs on Bytewax's testing source while a real watcher thread polls
the flow definition file: between phases of the stream the test rewrites the
file and waits until the watcher has taken the new block up (or refused it).
"""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest
import yaml
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from prometheus_client import REGISTRY

from flows import build_flow
from sentinel import policy_reload
from sentinel.config import PoliciesConfig, load_config
from sentinel.core.times import to_epoch
from sentinel.core.types import Alert
from sentinel.events import RawBatch
from tests.helpers import T0, batches, request

COST = 1 / 64          # an exact binary fraction: sums of it are exact, so thresholds fall on known events
BASE = {"name": "reload", "source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0},
        "alerting": {"group_interval": 0, "repeat_interval": "2d", "group_by": ["service", "metric", "subject"]}}


def traffic(start_min: int, end_min: int) -> List[Dict]:
    """svc calls m1 six times a minute (at :01, :11, ... :51), $1/64 and 700 tokens each."""
    return [request(T0 + m * 60 + i * 10 + 1, "svc", "m1", 800.0, cost_usd=COST)
            for m in range(start_min, end_min) for i in range(6)]


def call(ts_min: float, model: str) -> Dict:
    """A call of svc to ``model`` that costs nothing (so the budgets' arithmetic stays exact)."""
    return request(T0 + ts_min * 60, "svc", model, 800.0, cost_usd=0.0, input_tokens=0, output_tokens=0)


def write_flow(path: Path, policies: Optional[dict], **extra) -> None:
    doc = {**BASE, **extra}
    if policies is not None:
        doc["policies"] = policies
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc))
    os.replace(tmp, path)


def at(a: Alert) -> float:
    """When it fired, escalated or resolved (event time)."""
    key = "resolved_event_time" if a.status == "resolved" else "fired_event_time"
    return to_epoch(a.evidence[key])


def policy(alerts: List[Alert]) -> List[Alert]:
    return [a for a in alerts if a.type == "policy_violation"]


def reloads(result: str) -> float:
    return REGISTRY.get_sample_value("sentinel_policy_reloads_total", {"result": result}) or 0.0


def _wait(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> Iterator[RawBatch]:
    """Empty batches until ``cond`` holds (the flow keeps stepping meanwhile)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
        yield RawBatch("p0", [], 0.0, 1)


def _block(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def watched(tmp_path):
    """Start a watcher on a flow file; stop it afterwards."""
    yield tmp_path / "flow.yaml"
    policy_reload.stop()


def run_phases(path: Path, phases, alerts: List[Alert], recovery: Optional[RecoveryConfig] = None) -> None:
    """Run the flow of ``path`` under its watcher. ``phases``: (events, marker, rewrite) each; after a phase's
    events, wait for the alert whose subject is ``marker`` (so the phase is processed), then apply
    ``rewrite`` (a callable that rewrites the file and says what to wait for)."""
    cfg = load_config(path)
    watcher = policy_reload.start(str(path), cfg)

    def source():
        for events, marker, rewrite in phases:
            yield from batches(sorted(events, key=lambda e: e["timestamp"]), size=60)
            if marker is not None:
                yield from _wait(lambda: any(a.subject == marker for a in alerts), f"the alert {marker}")
            if rewrite is not None:
                rewrite(watcher)

    flow = build_flow(cfg, source=TestingSource(source()), alert_sinks=[TestingSink(alerts)],
                      dead_letter_sink=TestingSink([]))
    run_main(flow) if recovery is None else run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)


V1 = {"reload": 0.05, "allowed_models": {"svc": ["m1", "m3"]}, "budgets": [
    {"service": "svc", "window": "1h", "cost_usd": 3.0, "forecast": False},     # A: gone after 32 minutes each hour
    {"service": "svc", "window": "1d", "cost_usd": 10.0, "forecast": False}]}   # K: 80% at 1:25, gone at 1:46
V2 = {"reload": 0.05, "allowed_models": {"svc": ["m1", "m2"]}, "budgets": [
    {"service": "svc", "window": "1d", "tokens": 252_000, "forecast": False},   # N: new, an hour of calls
    {"service": "svc", "window": "1d", "cost_usd": 10.0, "forecast": False}]}   # K: kept (now the second rule)


def test_a_rewritten_policies_block_is_taken_up_mid_run(watched, caplog):
    caplog.set_level(logging.INFO, logger="sentinel.policies")
    write_flow(watched, V1)
    v1, v2 = (policy_reload.version_of(PoliciesConfig.model_validate(p)) for p in (V1, V2))
    refused_before = reloads("refused")
    invalid = {**V2, "budgets": [V2["budgets"][0], {**V2["budgets"][1], "warn": 1.5}]}

    def to_v2(watcher):
        write_flow(watched, V2)
        _block(lambda: watcher.holder.version == v2, "version v2")

    def to_invalid(watcher):
        write_flow(watched, invalid)
        _block(lambda: reloads("refused") > refused_before, "the refusal")

    p1 = traffic(0, 105) + [call(k * 10 + 0.1, "m2") for k in range(11)] + [call(104.98, "m4")]
    p2 = traffic(105, 140) + [call(k * 10 + 0.1, "m2") for k in range(11, 14)] + [call(139.98, "m3")]
    p3 = traffic(140, 180) + [call(k * 10 + 0.1, "m2") for k in range(14, 18)]
    alerts: List[Alert] = []
    run_phases(watched, [(p1, "model:m4", to_v2), (p2, "model:m3", to_invalid), (p3, None, None)], alerts)
    pol = policy(alerts)
    seen = [(a.subject, a.severity, a.status, round((at(a) - T0) / 60, 2)) for a in pol]

    # A, the hourly rule of v1: hour 0 pages and resolves at its end; hour 1's episode is open at the
    # reload (1:44:58, the newest event time) and resolves then, as its rule is gone; hour 2 is quiet.
    hourly = [s[1:] for s, a in zip(seen, pol) if a.metric == "budget_cost_usd_1h"]
    assert hourly == [("medium", "firing", 25.52), ("high", "escalated", 31.85), ("high", "resolved", 60.0),
                      ("medium", "firing", 85.52), ("high", "escalated", 91.85), ("high", "resolved", 104.98)], hourly
    removed = [a for a in pol if a.metric == "budget_cost_usd_1h"][-1]
    assert removed.evidence["resolved_by"] == "rule_removed"

    # K, kept: its spend went on; 80% under v1, spent under v2 at 1:46:31 ($10 = 640 calls since 0:00).
    daily = [a for a in pol if a.metric == "budget_cost_usd_1d"]
    assert [(a.severity, a.status) for a in daily] == [("medium", "firing"), ("high", "escalated")]
    assert (at(daily[0]) - T0, at(daily[1]) - T0) == (85 * 60 + 11, 106 * 60 + 31)
    assert daily[1].evidence["spent"] == 10.0 and "counted_since" not in daily[1].evidence
    assert [a.evidence["policy_version"] for a in daily] == [v1, v2]
    assert daily[0].fingerprint == daily[1].fingerprint

    # N, new in v2: counted from the reload (1:45:01), so 80% at 2:32:51 and spent at 2:44:51, though the
    # day's calls before would have spent it at 1:00. The invalid rewrite at 2:20 changed nothing.
    tokens = [a for a in pol if a.metric == "budget_tokens_1d"]
    assert [(a.severity, a.status, at(a) - T0) for a in tokens] == [
        ("medium", "firing", 152 * 60 + 51), ("high", "escalated", 164 * 60 + 51)]
    assert tokens[1].evidence["counted_since"] == "2026-01-05T01:45:01Z"
    assert tokens[1].evidence["spent"] == 252_000 and tokens[1].evidence["policy_version"] == v2

    # Allowed models at once: m2 (v1: not allowed) fired at once and resolved at the reload that allowed it;
    # m4 stays a violation; m3 (allowed by v1, not by v2) fires at its first call after the reload.
    models = [(s[0], s[2], s[3]) for s, a in zip(seen, pol) if a.detector == "model_allowlist"]
    assert models[:3] == [("model:m2", "firing", 0.1), ("model:m4", "firing", 104.98),
                          ("model:m2", "resolved", 104.98)], models
    assert ("model:m3", "firing", 139.98) in models
    assert [a.evidence.get("resolved_by") for a in pol if a.subject == "model:m2"] == [None, "model_allowed"]
    assert not [m for m in models if m[0] == "model:m2" and m[2] > 105]

    # One line each: the version taken up, the refusal naming the field.
    lines = [r.getMessage() for r in caplog.records if r.name == "sentinel.policies"]
    assert any(f"policies: version {v2} in force (was {v1})" in m for m in lines), lines
    refused = [m for m in lines if "refused" in m]
    assert len(refused) == 1 and "policies.budgets[1].warn: Input should be less than 1" in refused[0], refused
    assert f"the policies in force (version {v2}) stay" in refused[0]
    assert REGISTRY.get_sample_value("sentinel_policy_version_info", {"version": v2}) == 1.0
    assert REGISTRY.get_sample_value("sentinel_policy_version_info", {"version": v1}) is None


def test_a_flow_started_without_policies_takes_them_up_and_lets_them_go(watched):
    """No policies at start: the budget step is there anyway; a budget and a guardrail rate added later page,
    a raised budget resolves its page, and a block removed again resolves what is open."""
    write_flow(watched, {"reload": 0.05})
    added = {"reload": 0.05, "budgets": [{"service": "svc", "window": "1h", "cost_usd": 1.0, "forecast": False}],
             "guardrail_rate": {"window": "1h", "max_rate": 0.05, "min_events": 5}}
    raised = {**added, "budgets": [{**added["budgets"][0], "cost_usd": 50.0}]}

    def rewrite(doc):
        def go(watcher):
            write_flow(watched, doc)
            want = policy_reload.version_of(PoliciesConfig.model_validate(doc))
            _block(lambda: watcher.holder.version == want, "the new version")
        return go

    breaches = [{"event_type": "security", "timestamp": T0 + 3600 + 60 + i * 60, "source": f"203.0.113.{i}",
                 "kind": "jailbreak", "service": "svc"} for i in range(10)]
    p1 = traffic(0, 60) + [call(59.9, "m9")]
    p2 = traffic(60, 75) + breaches[:8]
    alerts: List[Alert] = []
    run_phases(watched, [(p1, None, rewrite(added)), (p2, "guardrails/1h", rewrite(raised)),
                         (traffic(75, 80), None, rewrite({"reload": 0.05})), (traffic(80, 85), None, None)], alerts)
    pol = policy(alerts)
    got = [(a.subject, a.severity, a.status, a.evidence.get("resolved_by")) for a in pol]
    # Nothing in hour 0 (no policies, and m9 is no violation); the $1 hourly budget from 1:00 on.
    assert got[0][:3] == ("budget:cost_usd/1h", "medium", "firing") and at(pol[0]) - T0 >= 3600
    assert ("budget:cost_usd/1h", "high", "escalated", None) in got
    assert ("guardrails/1h", "medium", "firing", None) in got
    # Raised to $50: the exceeded page is no longer earned and resolves; nothing pages again.
    assert ("budget:cost_usd/1h", "high", "resolved", "budget_raised") in got
    # The guardrail rate removed: its open page resolves.
    assert ("guardrails/1h", "medium", "resolved", "guardrail_rule_changed") in got
    assert [g[2] for g in got if g[0] == "budget:cost_usd/1h"] == ["firing", "escalated", "resolved"]


def test_snapshots_are_restored_under_the_rules_in_force(tmp_path, watched):
    """A crash under v1, a restart with v2 in the file: the kept rule keeps its spend, the removed rule's open
    episode resolves, the new rule counts from the restart."""
    write_flow(watched, V1)
    init_db_dir(tmp_path, 1)
    rc = RecoveryConfig(str(tmp_path))
    p1 = batches(traffic(0, 95), size=60)
    rest = batches(traffic(95, 180), size=60)
    crashed = p1 + [TestingSource.ABORT()] + rest  # the abort fires once
    first: List[Alert] = []
    cfg = load_config(watched)
    policy_reload.start(str(watched), cfg)
    run_main(build_flow(cfg, source=TestingSource(crashed),
                        alert_sinks=[TestingSink(first)], dead_letter_sink=TestingSink([])),
             epoch_interval=timedelta(0), recovery_config=rc)
    assert [a.metric for a in policy(first) if a.status != "resolved"][-1] == "budget_cost_usd_1h"
    write_flow(watched, V2)
    second: List[Alert] = []
    cfg = load_config(watched)
    policy_reload.start(str(watched), cfg)
    run_main(build_flow(cfg, source=TestingSource(crashed),
                        alert_sinks=[TestingSink(second)], dead_letter_sink=TestingSink([])),
             epoch_interval=timedelta(0), recovery_config=rc)
    pol = policy(second)
    v2 = policy_reload.version_of(PoliciesConfig.model_validate(V2))
    hourly = [a for a in pol if a.metric == "budget_cost_usd_1h"]
    assert [(a.status, a.evidence["resolved_by"]) for a in hourly] == [("resolved", "rule_removed")]
    daily = [a for a in pol if a.metric == "budget_cost_usd_1d"]
    assert [(a.severity, a.status, at(a) - T0) for a in daily] == [("high", "escalated", 106 * 60 + 31)]
    tokens = [a for a in pol if a.metric == "budget_tokens_1d" and a.status != "resolved"]
    assert [a.severity for a in tokens] == ["medium", "high"]
    assert all(a.evidence["policy_version"] == v2 for a in daily + tokens)
    assert tokens[0].evidence["counted_since"] == "2026-01-05T01:35:01Z"


# -- the watcher on its own ----------------------------------------------------------------


def test_a_configmap_symlink_swap_is_seen_by_content(tmp_path, caplog):
    """Kubernetes mounts a ConfigMap as flow.yaml -> ..data/flow.yaml, ..data -> ..<timestamp>; an update swaps
    ..data. The new file may carry the old mtime: the content decides."""
    caplog.set_level(logging.INFO, logger="sentinel.policies")
    mount = tmp_path / "config"
    mount.mkdir()

    def publish(name: str, policies: dict, **extra) -> None:
        d = mount / name
        d.mkdir()
        write_flow(d / "flow.yaml", policies, **extra)
        os.utime(d / "flow.yaml", (1_000_000, 1_000_000))
        tmp = mount / "..data_tmp"
        tmp.symlink_to(name)
        os.replace(tmp, mount / "..data")

    publish("..2026_01_05_00_00_00.1", V1)
    (mount / "flow.yaml").symlink_to("..data/flow.yaml")
    path = str(mount / "flow.yaml")
    cfg = load_config(path)
    w = policy_reload.PolicyWatcher(path, cfg)
    assert w.poll() is None
    publish("..2026_01_05_00_05_00.2", V2)
    assert w.poll() is None                      # read once: waits for a second read of the same content
    assert w.poll() == "applied"
    assert w.holder.current[1].allowed_models == {"svc": ["m1", "m2"]}
    assert w.poll() is None
    # A change outside the policies block: logged as needing a restart, the policies unchanged.
    publish("..2026_01_05_00_10_00.3", V2, windows={"size": "5m"})
    w.poll()
    assert w.poll() == "restart"
    assert any("changed outside the policies block (windows)" in r.getMessage() and "takes a restart"
               in r.getMessage() for r in caplog.records)
    # guardrail_audit is a sink built at start: kept, and said so.
    publish("..2026_01_05_00_15_00.4", {**V2, "guardrail_audit": str(tmp_path / "audit.jsonl")},
            windows={"size": "5m"})
    w.poll()
    assert w.poll() == "restart"
    assert w.holder.current[1].guardrail_audit is None
    assert any("(windows, policies.guardrail_audit)" in r.getMessage() for r in caplog.records)
    # A file a restart would refuse: said at once; its valid policies block is still taken up.
    publish("..2026_01_05_00_20_00.5", {**V1}, windows={"size": "5m"}, sinks=[{"kind": "nowhere"}])
    w.poll()
    assert w.poll() == "applied"
    last = caplog.records[-2].getMessage()
    assert "changed outside the policies block (sinks, windows)" in last, last
    assert "a restart would refuse the file:" in last and "sinks[0]: unknown kind 'nowhere'" in last, last


def test_unreadable_and_unparsable_files_leave_the_policies_in_force(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sentinel.policies")
    path = tmp_path / "flow.yaml"
    write_flow(path, V1)
    w = policy_reload.PolicyWatcher(str(path), load_config(path))
    version = w.holder.version
    path.write_text("policies: {budgets: [\n")
    w.poll()
    assert w.poll() == "refused"
    assert any("refused: not valid YAML (line 2" in r.getMessage() for r in caplog.records)
    path.write_text(yaml.safe_dump({**BASE, "policies": {**V1, "budgets": [{"service": "svc"}]}}))
    w.poll()
    assert w.poll() == "refused"
    assert any("policies.budgets[0]: Value error, give tokens or cost_usd" in r.getMessage() for r in caplog.records)
    path.unlink()
    assert w.poll() is None and w.poll() is None
    assert sum("cannot read" in r.getMessage() for r in caplog.records) == 1   # said once, not every poll
    assert w.holder.version == version
    write_flow(path, V1)
    assert w.poll() is None  # the same content as the policies in force


# -- the command line, on Kafka ----------------------------------------------------------------


def test_sentinel_run_takes_up_a_rewritten_flow_file(tmp_path, tansu, kafka_topic):
    """``sentinel run -c FLOW -w 2`` on a Kafka topic: the file rewritten while it runs (v2 taken up, then an invalid
    block refused); the alerts in the JSON-lines sink and the metrics endpoint say which policies were in force."""
    import subprocess
    import sys
    import urllib.request

    import orjson

    from devtools.tansu import free_port
    from sinks.base import alert_body
    from tests.test_control_kafka import ROOT, send

    topic = kafka_topic(partitions=1, prefix="telemetry")
    alerts_path, log_path, flow = tmp_path / "alerts.jsonl", tmp_path / "stderr.log", tmp_path / "flow.yaml"
    port = free_port()
    extra = {"source": {"kind": "kafka", "brokers": tansu, "topics": [topic], "eof_after_idle": "6s"},
             "sinks": [{"kind": "jsonl", "path": str(alerts_path)}], "metrics": {"port": port},
             "dead_letters": {"kind": "jsonl", "path": str(tmp_path / "dlq.jsonl")},
             "control": {"topic": None, "feedback_topic": None}}
    v1, v2 = ({**p, "reload": 0.2} for p in (V1, V2))
    write_flow(flow, v1, **extra)
    versions = [policy_reload.version_of(PoliciesConfig.model_validate(p)) for p in (v1, v2)]

    def alerts() -> List[Alert]:
        if not alerts_path.exists():
            return []
        return [Alert.from_json(alert_body(orjson.loads(line)))
                for line in alerts_path.read_text().splitlines() if line.strip()]

    def logged(text: str) -> bool:
        return text in log_path.read_text()

    def metric(line: str) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return line in r.read().decode()

    events = lambda evs: [orjson.dumps(e) for e in sorted(evs, key=lambda e: e["timestamp"])]  # noqa: E731
    send(tansu, topic, events(traffic(0, 105) + [call(k * 10 + 0.1, "m2") for k in range(11)] + [call(104.98, "m4")]))
    with open(log_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sentinel.cli", "run", "-c", str(flow), "-w", "2"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            _block(lambda: any(a.subject == "model:m4" for a in alerts()), "phase 1's last alert", 90)
            assert metric(f'sentinel_policy_version_info{{version="{versions[0]}"}} 1.0')
            write_flow(flow, v2, **extra)
            _block(lambda: logged(f"policies: version {versions[1]} in force (was {versions[0]})"), "v2", 30)
            write_flow(flow, {**v2, "budgets": [{"service": "svc", "tokens": -1}]}, **extra)
            _block(lambda: logged("refused: policies.budgets[0].tokens: Input should be greater than or equal to 1"),
                   "the refusal", 30)
            assert metric('sentinel_policy_reloads_total{result="applied"} 1.0')
            assert metric('sentinel_policy_reloads_total{result="refused"} 1.0')
            assert metric(f'sentinel_policy_version_info{{version="{versions[1]}"}} 1.0')
            send(tansu, topic, events(traffic(105, 180) + [call(k * 10 + 0.1, "m2") for k in range(11, 18)]))
            assert proc.wait(timeout=120) == 0, log_path.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    pol = policy(alerts())
    got = [(a.metric, a.status, round((at(a) - T0) / 60, 2), a.evidence.get("resolved_by")) for a in pol]
    # Under v1: the hourly budget pages each hour; under v2 it is gone (its open episode resolved), the daily
    # budget kept its spend (spent at 1:46:31), the token budget counted from the reload (spent at 2:44:51).
    assert [g for g in got if g[0] == "budget_cost_usd_1h"][-1] == ("budget_cost_usd_1h", "resolved", 104.98,
                                                                     "rule_removed"), got
    assert [g for g in got if g[0] == "budget_cost_usd_1h" and g[2] > 105] == []
    assert [g[:3] for g in got if g[0] == "budget_cost_usd_1d"] == [
        ("budget_cost_usd_1d", "firing", 85.18), ("budget_cost_usd_1d", "escalated", 106.52)], got
    assert [g[:3] for g in got if g[0] == "budget_tokens_1d"] == [
        ("budget_tokens_1d", "firing", 152.85), ("budget_tokens_1d", "escalated", 164.85)], got
    assert ("calls_to_model", "resolved", 104.98, "model_allowed") in got


def test_a_file_changed_between_reading_the_flow_and_watching_it_is_taken_up(tmp_path):
    path = tmp_path / "flow.yaml"
    write_flow(path, V1)
    cfg = load_config(path)
    write_flow(path, V2)
    w = policy_reload.PolicyWatcher(str(path), cfg)
    assert w.holder.current[1] is cfg.policies
    assert w.poll() == "applied"
    assert w.holder.version == policy_reload.version_of(PoliciesConfig.model_validate(V2))


def test_each_process_of_a_cluster_takes_up_the_rewritten_file(tmp_path, tansu, kafka_topic):
    """Two processes of one cluster (``sentinel run -i N -a ...``) each watch the file; the services' budgets
    are spread over both, and every service follows the new block."""
    import subprocess
    import sys
    import urllib.request

    import orjson

    from devtools.tansu import free_port
    from sinks.base import alert_body
    from tests.test_control_kafka import ROOT, send

    services = [f"svc-{c}" for c in "abcdef"]
    port = free_port()  # process i serves metrics on port + i

    def paged(i: int) -> set:
        """The services whose budgets process i keeps (it counted their policy alerts)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{port + i}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {s for s in services for line in text.splitlines()
                if line.startswith("sentinel_anomalies_total{") and 'type="policy_violation"' in line
                and f'service="{s}"' in line}
    topic = kafka_topic(partitions=1, prefix="telemetry")
    alerts_path, flow = tmp_path / "alerts.jsonl", tmp_path / "flow.yaml"
    extra = {"source": {"kind": "kafka", "brokers": tansu, "topics": [topic], "eof_after_idle": "6s"},
             "sinks": [{"kind": "jsonl", "path": str(alerts_path)}], "metrics": {"port": port},
             "dead_letters": {"kind": "jsonl", "path": str(tmp_path / "dlq.jsonl")},
             "control": {"topic": None, "feedback_topic": None}}
    rule = lambda r: {**r, "service": "*"}  # noqa: E731
    v1 = {"reload": 0.2, "budgets": [rule(b) for b in V1["budgets"]]}
    v2 = {"reload": 0.2, "budgets": [rule(b) for b in V2["budgets"]]}
    write_flow(flow, v1, **extra)
    new = policy_reload.version_of(PoliciesConfig.model_validate(v2))

    def alerts() -> List[Alert]:
        if not alerts_path.exists():
            return []
        return [Alert.from_json(alert_body(orjson.loads(line)))
                for line in alerts_path.read_text().splitlines() if line.strip()]

    def for_all(start, end):
        evs = [dict(e, service=s) for e in traffic(start, end) for s in services]
        return [orjson.dumps(e) for e in sorted(evs, key=lambda e: (e["timestamp"], e["service"]))]

    send(tansu, topic, for_all(0, 95))
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    logs = [tmp_path / f"p{i}.log" for i in range(2)]
    procs = []
    try:
        for i in range(2):
            with open(logs[i], "w") as err:
                procs.append(subprocess.Popen([sys.executable, "-m", "sentinel.cli", "run", "-c", str(flow),
                                               "-i", str(i), "-a", addresses], cwd=ROOT,
                                              stdout=subprocess.DEVNULL, stderr=err))
        # Every service's hourly budget spent in hour 1 (at 1:31:51): phase 1 is through.
        _block(lambda: {a.service for a in policy(alerts()) if a.metric == "budget_cost_usd_1h"
                        and a.status == "escalated" and at(a) - T0 > 3600} == set(services), "phase 1", 120)
        kept = [paged(0), paged(1)]
        assert kept[0] and kept[1] and kept[0] | kept[1] == set(services), kept  # both processes keep some
        write_flow(flow, v2, **extra)
        _block(lambda: all(f"policies: version {new} in force" in p.read_text() for p in logs), "both processes", 30)
        send(tansu, topic, for_all(95, 170))
        for p in procs:
            assert p.wait(timeout=120) == 0, [p.read_text()[-2000:] for p in logs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    pol = policy(alerts())
    for s in services:
        mine = [(a.metric, a.status, round((at(a) - T0) / 60, 2)) for a in pol if a.service == s]
        assert [m for m in mine if m[0] == "budget_cost_usd_1h"][-1][1:] == ("resolved", 94.85), (s, mine)
        assert [m for m in mine if m[0] == "budget_cost_usd_1d"] == [
            ("budget_cost_usd_1d", "firing", 85.18), ("budget_cost_usd_1d", "escalated", 106.52)], (s, mine)
        assert [m for m in mine if m[0] == "budget_tokens_1d"] == [
            ("budget_tokens_1d", "firing", 142.85), ("budget_tokens_1d", "escalated", 154.85)], (s, mine)


def test_a_snapshot_of_index_keyed_meters_is_carried_over():
    """State snapshotted before meters were known by identity ("<rule index>/<quantity>") keeps its spend."""
    from operators.budgets import BudgetLogic, BudgetState, _Meter
    from sentinel.events import LLMEvent

    holder = policy_reload.PolicyHolder(PoliciesConfig.model_validate(V1))
    daily = _Meter("cost_usd", 10.0, window_start=T0, spent=9.9, level=1)
    hourly = _Meter("cost_usd", 3.0, window_start=T0 + 3600, spent=1.0)
    gone = _Meter("cost_usd", 1.0)  # of a rule index the policies no longer have
    old = BudgetState("svc", meters={"1/cost_usd": daily, "0/cost_usd": hourly, "7/cost_usd": gone}, last_ts=T0 + 3700)
    logic = BudgetLogic(holder, old)
    out, _ = logic.on_item(("svc", "m", [LLMEvent(T0 + 3710, "svc", "m1", cost_usd=0.25)], 0.0))
    assert [(a.metric, a.severity, a.evidence["spent"]) for a in out] == [
        ("budget_cost_usd_1d", "high", 10.15)]
    assert sorted(logic.state.meters) == [("svc|service|1d|cost_usd", "cost_usd", None),
                                          ("svc|service|1h|cost_usd", "cost_usd", None)]
    assert logic.state.meters[("svc|service|1h|cost_usd", "cost_usd", None)].spent == 1.25
    assert logic.state.policy_version == holder.version
