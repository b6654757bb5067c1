"""The metrics port's /healthz and /readyz, over real HTTP.

/healthz answers 200 while the process lives; /readyz answers 503 until the
flow reads (its source returned from a first read, its sinks built) and 200
from then on. The readiness of a flow is watched on a real Bytewax run.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, run_main
from prometheus_client import CollectorRegistry

from flows import build_flow
from sentinel.config import load_config_dict
from sentinel.health import Readiness, start_server, watch_sink, watch_source
from devtools.tansu import free_port
from tests.helpers import batches, steady

ROOT = Path(__file__).resolve().parents[1]


def get(port: int, path: str):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as ex:
        return ex.code, ex.read().decode()


class _GatedPartition(StatefulSourcePartition):
    """Returns nothing from its first read until the gate opens, then its batches."""

    def __init__(self, items, gate: threading.Event) -> None:
        self._items = list(items)
        self._gate = gate

    def next_batch(self):
        if not self._gate.wait(30):
            raise RuntimeError("gate never opened")
        if not self._items:
            raise StopIteration()
        return [self._items.pop(0)]

    def snapshot(self):
        return None


class _GatedSource(FixedPartitionedSource):
    def __init__(self, items, gate) -> None:
        self._items, self._gate = items, gate

    def list_parts(self):
        return ["p0"]

    def build_part(self, step_id, for_part, resume_state):
        return _GatedPartition(self._items, self._gate)


def test_healthz_readyz_and_metrics_on_one_port():
    r = Readiness()
    port = free_port()
    srv = start_server(port, "127.0.0.1", CollectorRegistry(), r)
    try:
        assert get(port, "/healthz") == (200, "ok\n")
        code, body = get(port, "/readyz")
        assert code == 503 and "the flow to be built" in body
        code, body = get(port, "/metrics")
        assert code == 200
        assert get(port, "/nothing")[0] == 404
        r.expect("source")
        r.mark("source")
        assert get(port, "/readyz") == (200, "ready\n")
        r.stopping()
        assert get(port, "/readyz")[0] == 503
    finally:
        srv.shutdown()


def test_readyz_is_503_until_the_flow_reads():
    r = Readiness()
    port = free_port()
    srv = start_server(port, "127.0.0.1", CollectorRegistry(), r)
    gate = threading.Event()
    alerts = []
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}})
    flow = build_flow(cfg, source=watch_source(_GatedSource(batches(steady(3)), gate), r),
                      alert_sinks=[watch_sink(TestingSink(alerts), "sink alerts_out_0", r)],
                      dead_letter_sink=watch_sink(TestingSink([]), "sink dead_letters_out", r))
    run = threading.Thread(target=run_main, args=(flow,), daemon=True)
    try:
        code, body = get(port, "/readyz")
        assert code == 503 and "source" in body, body
        run.start()
        # The workers built the sinks and the source partition, whose first read is held.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and r.waiting() != ["source"]:
            time.sleep(0.05)
        assert r.waiting() == ["source"]
        code, body = get(port, "/readyz")
        assert code == 503 and body == "not ready: waiting for source\n", body
        gate.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and get(port, "/readyz")[0] != 200:
            time.sleep(0.05)
        assert get(port, "/readyz") == (200, "ready\n")
        run.join(60)
        assert not run.is_alive()
    finally:
        gate.set()
        srv.shutdown()


def test_a_running_flow_is_ready_and_says_so_in_its_metrics(tmp_path):
    port = free_port()
    flow = tmp_path / "flow.yaml"
    flow.write_text(f"source: {{kind: simulator, hours: 2, speed: 60}}\nsinks: []\nmetrics: {{port: {port}}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "sentinel.cli", "run", "-c", str(flow), "--progress", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = get(port, "/readyz")
            except (urllib.error.URLError, ConnectionError):
                ready = None
            if ready and ready[0] == 200:
                break
            time.sleep(0.2)
        assert ready == (200, "ready\n"), ready
        assert get(port, "/healthz") == (200, "ok\n")
        text = get(port, "/metrics")[1]
        assert "sentinel_ready 1.0" in text
        assert 'sentinel_build_info{bytewax="0.21.1",python="' in text
        assert "_created" not in text
        assert "sentinel_last_event_timestamp_seconds" in text
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 130), err[-2000:]
    assert "Traceback" not in err, err[-3000:]
