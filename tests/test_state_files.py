"""State files are data, never code; files holding telemetry or alerts are not readable by others."""

from __future__ import annotations

import json
import logging
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel import crosskey
from sentinel.crosskey import CrossKey

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh():
    old = os.umask(0o022)  # the usual default: without care, files come out world-readable
    yield
    os.umask(old)


class _Planted:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_pickle_runs_nothing_and_is_a_fresh_start(tmp_path, caplog):
    marker = tmp_path / "pwned"
    path = tmp_path / "ck.json"
    path.write_bytes(pickle.dumps({"format": 2, "priors": _Planted(str(marker))}))
    with caplog.at_level(logging.INFO, logger="sentinel.crosskey"):
        ck = CrossKey(str(path))
    assert not marker.exists()
    assert len(ck.priors) == 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage() and warnings[0].exc_info is None


@pytest.mark.parametrize("content", [
    b"",
    b"[]",
    b'{"format": 99, "priors": {}}',
    b'{"format": 3, "kind": "sentinel-cross-key", "priors": {"scales": [[["service", 7], "latency", {"k": 0.2}]]}}',
    b'{"format": 3, "kind": "sentinel-cross-key", "priors": {"scales": [[["service", "s"], "latency", {"k": "x"}]]}}',
    b'{"format": 3, "kind": "sentinel-cross-key", "priors": {"alpha": 1e999, "scales": []}}',
    b'{"format": 3, "kind": "sentinel-cross-key", "priors": {"scales": [[["fleet"], "latency", {"k": NaN}]]}}',
])
def test_an_old_or_foreign_file_is_one_log_line_and_a_fresh_start(tmp_path, caplog, content):
    path = tmp_path / "ck.json"
    path.write_bytes(content)
    ck = CrossKey()
    with caplog.at_level(logging.INFO, logger="sentinel.crosskey"):
        assert ck.load(str(path)) is False
    assert len(ck.priors) == 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None


def test_the_cross_key_file_is_json_and_private(tmp_path):
    path = tmp_path / "ck.json"
    ck = CrossKey(str(path))
    ck.priors.observe("svc/a", [("service", "svc"), ("fleet",)], "latency_p95_ms", 0.2)
    ck.priors.observe("svc/b", [("service", "svc"), ("fleet",)], "latency_p95_ms", 0.4)
    ck.save()
    data = json.loads(path.read_text())
    assert data["format"] == crosskey.FORMAT
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    ck = CrossKey(str(path))
    assert round(ck.priors.scale([("service", "svc")], "latency_p95_ms"), 2) == 0.3
    ck.priors.observe("svc/c", [("fleet",)], "ttft_p95_ms", 0.1)


def test_the_default_cross_key_file_in_the_recovery_directory_is_json(tmp_path):
    from sentinel.config import load_config_dict
    from sentinel.runtime import prepare

    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}})
    assert prepare(cfg, 2, str(tmp_path)).crosskey.path == str(tmp_path / "sentinel-cross-key-p2.json")


def _init_recovery(path: Path) -> None:
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(path), "1"], check=True, timeout=60,
                   capture_output=True)


def test_a_recovery_directory_writable_by_others_is_refused_at_start(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text("")
    flow = tmp_path / "flow.yaml"
    flow.write_text(f"source: {{kind: file, path: '{events}'}}\nmetrics: {{port: 0}}\n")
    rec = tmp_path / "rec"
    rec.mkdir()
    _init_recovery(rec)
    os.chmod(rec, 0o777)
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", "-c", str(flow), "-r", str(rec)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "writable by others" in lines[0] and str(rec) in lines[0], r.stderr
    assert not list(rec.glob("sentinel-cross-key-*"))

    os.chmod(rec, 0o750)
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", "-c", str(flow), "-r", str(rec)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def _private(path) -> bool:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    return mode & 0o037 == 0  # 0600 or 0640 at most


def test_alert_dead_letter_and_spool_files_are_not_readable_by_others(tmp_path):
    from sentinel.config import JsonlDeadLetters
    from sinks.dead_letters import DeadLetterSink
    from sinks.files import JsonlWriter
    from sinks.spool import Spool

    alerts = tmp_path / "out" / "alerts.jsonl"
    w = JsonlWriter(str(alerts))
    w.write([{}], [b'{"alert_id": "x"}'])
    w.close()
    assert _private(alerts)

    dlq = tmp_path / "dlq.jsonl"
    part = DeadLetterSink(JsonlDeadLetters(kind="jsonl", path=str(dlq))).build("s", 0, 1)
    part.close()
    assert _private(dlq)

    spool = Spool(str(tmp_path / "spool" / "worker-0"), 1 << 20)
    spool.put([b"alert one", b"alert two"])
    got = spool.read(10)
    spool.ack(got[-1][0] + 1)
    spool.put([b"alert three"])
    spool.close()
    files = [p for p in (tmp_path / "spool" / "worker-0").iterdir()]
    assert files and all(_private(p) for p in files), [(p.name, oct(p.stat().st_mode)) for p in files]
    assert stat.S_IMODE((tmp_path / "spool" / "worker-0").stat().st_mode) & 0o027 == 0


def test_an_existing_world_readable_alert_file_is_tightened(tmp_path):
    from sinks.files import JsonlWriter

    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text("")
    os.chmod(alerts, 0o666)
    w = JsonlWriter(str(alerts))
    w.close()
    assert _private(alerts)
