"""``sentinel run`` for a person at the terminal: readable alerts on a terminal, JSON in a pipe, a summary, --version."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.helpers import T0, steady

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = [sys.executable, "-m", "sentinel.cli"]


def _flow(tmp_path: Path, minutes: int, incident: bool = True) -> str:
    def slow(ts, lat):
        return lat * 5 if incident and T0 + 60 * 60 <= ts < T0 + 72 * 60 else lat

    events = tmp_path / f"events{minutes}.jsonl"
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in steady(minutes, latency_fn=slow)))
    flow = tmp_path / f"flow{minutes}.yaml"
    flow.write_text(f"source: {{kind: file, path: '{events}'}}\nsinks: [{{kind: stdout}}]\nmetrics: {{port: 0}}\n")
    return str(flow)


def _run(args, **kw):
    return subprocess.run(SENTINEL + args, cwd=ROOT, capture_output=True, text=True, timeout=180, **kw)


@pytest.fixture(scope="module")
def flow100(tmp_path_factory):
    return _flow(tmp_path_factory.mktemp("terminal"), 100)


def test_a_pipe_gets_json_and_the_run_ends_with_a_summary(flow100):
    r = _run(["run", "-c", flow100])
    assert r.returncode == 0, r.stderr
    alerts = [json.loads(line) for line in r.stdout.splitlines()]
    assert alerts and all(a["data"]["type"] for a in alerts)
    assert "summary: 6,000 events in " in r.stderr and "6,000 ok" in r.stderr, r.stderr
    assert "summary: 0 dead letters" in r.stderr
    assert "anomalies (latency " in r.stderr, r.stderr
    assert f"alerts published: stdout {len(alerts)}; 0 late events" in r.stderr, r.stderr
    assert "warm-up" not in r.stderr  # 100 minutes are more than the 90 of warm-up


def test_format_text_prints_one_readable_line_per_alert(flow100):
    r = _run(["run", "-c", flow100, "--format", "text"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines and not any(line.startswith("{") for line in lines)
    first = lines[0]
    assert "firing" in first and "svc/m1" in first and any(s in first for s in ("HIGH", "MEDIUM", "CRITICAL")), first
    assert "above its usual" in first


def test_a_terminal_gets_text_unless_json_is_asked_for(flow100):
    for args, text in (([], True), (["--format", "json"], False)):
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen(SENTINEL + ["run", "-c", flow100, "--progress", "0"] + args, cwd=ROOT,
                                    stdout=slave, stderr=subprocess.PIPE, text=True)
            os.close(slave)
            out = b""
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            proc.wait(timeout=180)
        finally:
            os.close(master)
        assert proc.returncode == 0
        lines = [ln for ln in out.decode().splitlines() if ln.strip()]
        assert lines
        assert all(not ln.startswith("{") for ln in lines) if text else all(ln.startswith("{") for ln in lines)


def test_an_input_shorter_than_warm_up_says_so(tmp_path):
    r = _run(["run", "-c", _flow(tmp_path, 20, incident=False), "--progress", "0"])
    assert r.returncode == 0, r.stderr
    assert "note: the input spans 20 min of event time, less than a key's warm-up of 1.5 h" in r.stderr, r.stderr


def test_version_and_help():
    r = _run(["--version"])
    assert r.returncode == 0 and r.stdout.startswith("sentinel 0.1.0 (Python 3.") and "Bytewax 0.21.1" in r.stdout
    r = _run(["run", "--help"])
    assert r.returncode == 0
    assert "(default: 30.0)" in r.stdout and "(default: auto)" in r.stdout and "examples:" in r.stdout
    assert "sentinel check -c new.yaml --against state/" in r.stdout


def test_progress_lines_say_events_rate_lag_and_anomalies():
    from prometheus_client import CollectorRegistry

    from sentinel.config import load_config_dict
    from sentinel.metrics import Metrics
    from sentinel.progress import Reporter, summary_lines

    m = Metrics(CollectorRegistry())
    rep = Reporter(5.0, m)
    m.events.labels(outcome="ok").inc(1000)
    m.events.labels(outcome="late").inc(5)
    m.kafka_consumer_lag.labels(topic="llm.telemetry", partition="0").set(1234)
    m.event_batch(T0 + 600.0, T0)
    m.anomaly("latency", "high", "svc")
    line = rep.line()
    assert line.startswith("progress: 1,005 events read (") and "/s)" in line, line
    assert "event time 2026-01-05T00:10:00Z" in line and "consumer lag 1,234 messages" in line
    assert line.endswith("1 anomalies so far"), line
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}})
    lines = summary_lines(cfg, 2.0, m)
    assert lines[0] == "summary: 1,005 events in 2.0s (502/s): 1,000 ok, 5 late", lines
    assert lines[2].startswith("summary: 1 anomalies (latency 1), 0 suppressed"), lines
    assert lines[3].startswith("note: the input spans 10 min of event time"), lines
