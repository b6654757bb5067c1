"""The command line of SPEC section 3, run as a user runs it (subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

from sinks.base import alert_body

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = [sys.executable, "-m", "sentinel.cli"]


def run(args, **kw):
    return subprocess.run(SENTINEL + args, capture_output=True, text=True, timeout=300, cwd=kw.pop("cwd", ROOT), **kw)


def test_check_accepts_the_example_flows(tmp_path):
    (tmp_path / "events.jsonl").write_text("")  # replay.yaml's input, relative to the working directory
    for f in sorted((ROOT / "flows").glob("*.yaml")):
        r = run(["check", "-c", str(f)], cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert ": ok" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl"]  # check creates nothing


def test_check_names_the_bad_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: {kind: file}\nsinks:\n  - {kind: jsonl, paht: x}\n  - {kind: rabbit}\n"
                   "windows: {size: 0.5}\nmetrics: {port: 70000}\n")
    r = run(["check", "-c", str(bad)])
    assert r.returncode != 0
    for needle in ("source.path", "sinks[0].paht", "sinks[1]", "rabbit", "windows.size", "metrics.port"):
        assert needle in r.stderr, (needle, r.stderr)


def test_check_reports_yaml_and_missing_files(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("source: [\n")
    r = run(["check", "-c", str(bad)])
    assert r.returncode != 0 and "not valid YAML" in r.stderr
    r = run(["check", "-c", str(tmp_path / "nope.yaml")])
    assert r.returncode != 0 and "cannot read" in r.stderr


def test_run_names_the_paths_it_cannot_use(tmp_path):
    # Each in one line and exit 2, before Bytewax starts (no traceback, no panic).
    events = tmp_path / "events.jsonl"
    events.write_text("")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cases = [
        (f"source: {{kind: file, path: '{tmp_path / 'missing.jsonl'}'}}",
         f"source.path '{tmp_path / 'missing.jsonl'}' cannot be read: No such file"),
        (f"source: {{kind: file, path: '{tmp_path}'}}", f"source.path '{tmp_path}' cannot be read: Is a directory"),
        (f"source: {{kind: file, path: '{events}'}}\nsinks: [{{kind: jsonl, path: '{a_file}/alerts.jsonl'}}]",
         f"sinks[0].path '{a_file}/alerts.jsonl' cannot be written"),
        (f"source: {{kind: file, path: '{events}'}}\n"
         f"sinks: [{{kind: stdout}}, {{kind: rabbitmq, spool_dir: '{a_file}'}}, {{kind: qdrant, location: '{a_file}/q'}}]\n"
         f"dead_letters: {{kind: jsonl, path: '{a_file}/dlq.jsonl'}}",
         f"sinks[1].spool_dir '{a_file}' cannot be used"),
    ]
    for text, needle in cases:
        flow = tmp_path / "flow.yaml"
        flow.write_text(text + "\nmetrics: {port: 0}\n")
        r = run(["run", "-c", str(flow)])
        assert r.returncode == 2, r.stderr
        assert needle in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and "panicked" not in r.stderr
    assert "sinks[2].location" in r.stderr and "dead_letters.path" in r.stderr


def test_simulate_writes_events_and_labels(tmp_path):
    out = tmp_path / "ev.jsonl"
    r = run(["simulate", "--out", str(out), "--hours", "0.5", "--seed", "3"])
    assert r.returncode == 0, r.stderr
    lines = out.read_bytes().splitlines()
    assert len(lines) > 10_000
    assert {"timestamp", "service", "model"} <= set(orjson.loads(lines[0]))
    assert (tmp_path / "ev.labels.jsonl").exists()


def test_file_flow_with_bad_input_ends_cleanly(tmp_path):
    """Garbage, truncated JSON, wrong types, a 10 MB line, invalid UTF-8: all dead letters; the run goes on."""
    from simulator import Simulator

    sim = Simulator(seed=5, hours=2, rate=8.0, incidents=[{
        "type": "latency", "service": "support-bot", "model": "gpt-4o-mini",
        "start": "2026-01-05T01:20:00Z", "end": "2026-01-05T01:35:00Z", "magnitude": 5}])
    good = list(sim.iter_lines())
    bad = [b"garbage!!\n", b'{"timestamp": "2026-01-05T00:30:00Z", "service": "x", "mo\n',
           b'{"timestamp": "2026-01-05T00:30:00Z", "service": "x", "model": "y", "latency_ms": "slow"}\n',
           b'{"timestamp": "2026-01-05T00:30:00Z", "service": "x", "model": "y", "pad": "' + b"a" * (10 << 20) + b'"}\n',
           b'{"timestamp": "2026-01-05T00:30:00Z", "service": "caf\xe9", "model": "y"}\n']
    events = tmp_path / "events.jsonl"
    with open(events, "wb") as f:
        f.writelines(good[:5000])
        f.writelines(bad)
        f.writelines(good[5000:])
    alerts, dlq = tmp_path / "alerts.jsonl", tmp_path / "dlq.jsonl"
    flow = tmp_path / "flow.yaml"
    flow.write_text(f"source: {{kind: file, path: {events}}}\nsinks: [{{kind: jsonl, path: {alerts}}}]\n"
                    f"metrics: {{port: 0}}\ndead_letters: {{kind: jsonl, path: {dlq}}}\n")
    r = run(["run", "-c", str(flow)])
    assert r.returncode == 0, r.stderr[-3000:]
    dead = [json.loads(line) for line in dlq.read_text().splitlines()]
    assert sorted(d["reason"] for d in dead) == ["bad_json", "bad_json", "invalid_utf8", "oversized", "wrong_type"]
    for d in dead:
        assert d["source"] == str(events) and d["offset"] == 5001 + [x["offset"] for x in dead].index(d["offset"])
        assert d["detail"]
        assert "raw" in d or "raw_base64" in d
    big = next(d for d in dead if d["reason"] == "oversized")
    assert str(len(bad[3]) - 1) in big["detail"] or "bytes" in big["detail"]
    events_out = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert all(e["specversion"] == "1.0" for e in events_out)  # CloudEvents envelope by default
    got = [alert_body(e) for e in events_out]
    lat = [a for a in got if a["type"] == "latency" and a["service"] == "support-bot" and a["model"] == "gpt-4o-mini"
           and a["status"] == "firing"]
    assert len(lat) == 1, got


def _wait_metrics(port: int, proc, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            time.sleep(0.3)
    raise AssertionError("metrics endpoint never answered")


def test_default_run_serves_metrics_and_stops_cleanly_on_ctrl_c():
    proc = subprocess.Popen(SENTINEL + ["run"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        text = _wait_metrics(9464, proc)
        time.sleep(3)
        text = urllib.request.urlopen("http://127.0.0.1:9464/metrics", timeout=2).read().decode()
        for name in ("sentinel_events_total", "sentinel_dead_letters_total", "sentinel_anomalies_total",
                     "sentinel_alerts_published_total", "sentinel_alerts_suppressed_total",
                     "sentinel_detection_latency_seconds", "sentinel_event_lag_seconds", "sentinel_keys_active"):
            assert name in text, name
        assert 'sentinel_events_total{outcome="ok"}' in text
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 130), err[-2000:]
    assert "Traceback" not in err, err[-3000:]


def test_bytewax_run_uses_sentinel_flow(tmp_path):
    from simulator import Simulator

    events = tmp_path / "events.jsonl"
    Simulator(seed=2, hours=0.3, rate=5.0, incidents=[]).write(str(events))
    alerts = tmp_path / "alerts.jsonl"
    flow = tmp_path / "flow.yaml"
    flow.write_text(f"source: {{kind: file, path: {events}}}\nsinks: [{{kind: jsonl, path: {alerts}}}]\n"
                    f"metrics: {{port: 0}}\n")
    r = subprocess.run([sys.executable, "-m", "bytewax.run", "flows.main"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "SENTINEL_FLOW": str(flow)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "end of file" in r.stderr
