"""The alertmanager sink against a real Alertmanager (Debian's prometheus-alertmanager, started per test)."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import orjson
import pytest

from sentinel.config import ConfigError, load_config_dict
from sentinel.core.types import Alert
from sentinel.store import incident_id_of
from devtools.tansu import free_port
from sinks.alertmanager import AlertmanagerWriter, to_alertmanager
from test_incident_store import alert

AM_CONFIG = """
route:
  receiver: "null"
  group_wait: 1s
receivers:
  - name: "null"
"""


def start_alertmanager(tmp_path: Path, port: int) -> subprocess.Popen:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.fail("prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager; "
                    ".ci/run installs it)", pytrace=False)
    (tmp_path / "am.yml").write_text(AM_CONFIG)
    log = open(tmp_path / f"am-{port}.log", "w")
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'am-data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=log, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None, (tmp_path / f"am-{port}.log").read_text()
        time.sleep(0.2)
    proc.kill()
    pytest.fail("Alertmanager did not become ready: " + (tmp_path / f"am-{port}.log").read_text()[-2000:])


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def am(tmp_path) -> Iterator[str]:
    port = free_port()
    proc = start_alertmanager(tmp_path, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def am_alerts(url: str, **filters: Any) -> List[Dict[str, Any]]:
    r = httpx.get(url + "/api/v2/alerts", params=filters, timeout=5)
    r.raise_for_status()
    return r.json()


def writer(url: str, tmp_path: Path, **kw: Any) -> AlertmanagerWriter:
    return AlertmanagerWriter(url, spool_dir=str(tmp_path / ("spool-" + uuid.uuid4().hex[:6])),
                              spool_max_bytes=1 << 20, drain_timeout=5, **kw)


def send(w: AlertmanagerWriter, *alerts: Dict[str, Any]) -> None:
    w.write(list(alerts), [orjson.dumps(a) for a in alerts])
    w.flush(20)


def test_fire_escalate_and_resolve_show_in_alertmanager(am: str, tmp_path: Path) -> None:
    w = writer(am, tmp_path)
    try:
        fire = alert(severity="high")
        send(w, fire)
        (got,) = am_alerts(am)
        labels = got["labels"]
        assert labels == {"alertname": "LLMSentinel", "incident_id": incident_id_of(fire), "service": "search-rag",
                          "model": "gpt-4o", "type": "latency", "severity": "high"}
        assert got["status"]["state"] == "active"
        assert got["annotations"]["summary"] == fire["summary"]
        assert orjson.loads(got["annotations"]["evidence"]) == fire["evidence"]
        assert got["startsAt"].startswith("2026-01-05T10:32:00")

        # Escalated: one alert, at the new severity (the old label set is resolved in the same request).
        esc = alert("escalated", severity="critical", alert_id="esc-" + uuid.uuid4().hex)
        send(w, esc)
        (got,) = am_alerts(am)
        assert got["labels"]["severity"] == "critical"

        res = alert("resolved", severity="critical", alert_id="res-" + uuid.uuid4().hex,
                    detected_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        send(w, res)
        assert am_alerts(am) == []  # resolved: no longer listed
        assert w.pending == 0
    finally:
        w.close()


def test_alerts_wait_in_the_spool_while_alertmanager_is_down(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    w = writer(url, tmp_path)
    proc = None
    try:
        a = alert(service="chat")
        w.write([a], [orjson.dumps(a)])
        time.sleep(1.5)
        assert w.pending == 1  # refused connection: retried with backoff, nothing lost
        proc = start_alertmanager(tmp_path, port)
        w.flush(30)
        (got,) = am_alerts(url)
        assert got["labels"]["service"] == "chat"
    finally:
        w.close()
        if proc is not None:
            stop(proc)


def test_an_alert_alertmanager_refuses_is_skipped_not_blocking(am: str, tmp_path: Path) -> None:
    w = writer(am, tmp_path)
    try:
        bad = alert(fingerprint="bad", event_time="not a time")  # Alertmanager refuses its startsAt (400)
        good = alert(fingerprint="good")
        send(w, bad, good)
        got = am_alerts(am)
        assert [g["labels"]["incident_id"] for g in got] == [incident_id_of(good)]
        assert w.pending == 0
    finally:
        w.close()


def test_payload_and_config() -> None:
    now = time.time()
    a = to_alertmanager(Alert.from_json(alert(subject="u1")), 3600, "http://sentinel/api", now=now)
    assert a["labels"]["subject"] == "u1" and a["generatorURL"] == "http://sentinel/api"
    r = to_alertmanager(Alert.from_json(alert("resolved", detected_at="2026-01-05T11:00:00+00:00")), 3600)
    assert r["endsAt"] == "2026-01-05T11:00:00+00:00"
    src = {"kind": "file", "path": "x"}
    with pytest.raises(ConfigError, match="http"):
        load_config_dict({"source": src, "sinks": [{"kind": "alertmanager", "url": "ftp://h"}]})
    with pytest.raises(ConfigError, match="credentials"):
        load_config_dict({"source": src, "sinks": [{"kind": "alertmanager", "url": "http://u:p@h:9093"}]})
