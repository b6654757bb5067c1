"""Acceptance: a running flow (``sentinel run``) and a running ``sentinel api`` (uvicorn), over real HTTP and
WebSocket, with real Kafka (Tansu) and the store on SQLite and on the real PostgreSQL.

One simulated day, played in phases into the flow's telemetry topic:

1. a latency incident on support-bot: it is in ``GET /incidents`` within seconds of its alert, and the
   WebSocket client receives it;
2. a silence POSTed for ``service=~"support-.*"``, ``type=latency``: the next such incident is not paged
   (another service's incident at the same time is);
3. the silence DELETEd: the next one pages again;
4. feedback ``false_positive`` on it is stored and applied by the flow's feedback path (its log line).

Before that, every endpoint refuses a missing, expired, wrongly signed or under-privileged token over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List

import httpx
import orjson
import pytest
import yaml
from confluent_kafka import Producer
from websockets.sync.client import connect

from sentinel.auth import make_token
from simulator import Simulator
from sentinel.store import Store
from devtools.tansu import free_port
from test_incident_store import PG_URL

ROOT = Path(__file__).resolve().parents[1]
SECRET = "api-secret-" + "z" * 40
CONTROL_KEY = "control-key-" + "k" * 30


def produce(brokers: str, topic: str, lines: List[bytes]) -> None:
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 10})
    for v in lines:
        while True:
            try:
                p.produce(topic, v)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(30) == 0


def ts(line: bytes) -> float:
    t = orjson.loads(line)["timestamp"]
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def wait_for(what: str, fn, timeout: float = 90.0, every: float = 0.2):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = fn()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_api_beside_a_running_flow(backend: str, tmp_path: Path, tansu: str, kafka_topic) -> None:
    telemetry, control, feedback = kafka_topic(1, "telemetry"), kafka_topic(1, "control"), kafka_topic(1, "feedback")
    prefix = "e%s_" % uuid.uuid4().hex[:10]
    url = str(tmp_path / "incidents.db") if backend == "sqlite" else PG_URL
    port = free_port()
    flow = {
        "name": "api-e2e",
        "source": {"kind": "kafka", "brokers": tansu, "topics": [telemetry]},
        "sinks": [{"kind": "incident_store", "url": url, "table_prefix": prefix, "spool_dir": str(tmp_path / "spool")},
                  {"kind": "jsonl", "path": str(tmp_path / "alerts.jsonl"), "envelope": "none"}],
        "metrics": {"port": 0},
        "dead_letters": {"kind": "jsonl", "path": str(tmp_path / "dlq.jsonl")},
        "control": {"brokers": tansu, "topic": control, "feedback_topic": feedback,
                    "hmac_key_env": "SENTINEL_CONTROL_KEY"},
        "api": {"port": port, "auth": {"secret_env": "SENTINEL_API_SECRET"}, "stream_poll": "200ms"},
    }
    flow_path = tmp_path / "flow.yaml"
    flow_path.write_text(yaml.safe_dump(flow))
    env = dict(os.environ, SENTINEL_API_SECRET=SECRET, SENTINEL_CONTROL_KEY=CONTROL_KEY)

    # Telemetry: 6 simulated hours ending an hour ago (silences work on event time), three phases of two hours.
    t0 = float(int(time.time() // 3600 * 3600 - 7 * 3600))
    lat = {"type": "latency", "service": "support-bot", "model": "gpt-4o-mini"}
    marker = {"type": "latency", "service": "search-rag", "model": "gemini-2.0-flash", "magnitude": 5}
    incidents = [dict(lat, start=t0 + 100 * 60, end=t0 + 110 * 60, magnitude=5),
                 dict(lat, start=t0 + 220 * 60, end=t0 + 230 * 60, magnitude=5),
                 dict(marker, start=t0 + 220 * 60, end=t0 + 230 * 60),
                 dict(lat, start=t0 + 340 * 60, end=t0 + 350 * 60, magnitude=3)]
    lines = list(Simulator(seed=11, hours=6.0, rate=6.0, start=t0, incidents=incidents).iter_lines())
    phases: List[List[bytes]] = [[], [], []]
    for line in lines:
        phases[min(2, int((ts(line) - t0) // 7200))].append(line)

    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("flow", "api")}
    procs = [subprocess.Popen([sys.executable, "-m", "sentinel.cli", "run", "-c", str(flow_path)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=logs["flow"]),
             subprocess.Popen([sys.executable, "-m", "sentinel.cli", "api", "-c", str(flow_path)], cwd=ROOT, env=env,
                              stdout=logs["api"], stderr=subprocess.STDOUT)]
    base = f"http://127.0.0.1:{port}"
    tok = {r: make_token(SECRET.encode(), f"{r}-user", r, 3600) for r in ("viewer", "operator", "admin")}
    hv, ho = ({"Authorization": "Bearer " + tok[r]} for r in ("viewer", "operator"))
    http = httpx.Client(base_url=base, timeout=10)
    received: List[Dict[str, Any]] = []
    stop = threading.Event()

    def flow_log() -> str:
        return (tmp_path / "flow.log").read_text()

    def support_bot_latency() -> List[Dict[str, Any]]:
        r = http.get("/api/v1/incidents", params={"service": "support-bot", "type": "latency", "limit": 500},
                     headers=hv)
        assert r.status_code == 200, r.text
        return r.json()["items"]

    def search_rag() -> List[Dict[str, Any]]:
        r = http.get("/api/v1/incidents", params={"service": "search-rag", "limit": 500}, headers=hv)
        return [i for i in r.json()["items"] if i["type"] == "latency"]

    stack = contextlib.ExitStack()
    try:
        def ready():
            try:
                return http.get("/readyz").status_code == 200
            except httpx.TransportError:
                assert procs[1].poll() is None, (tmp_path / "api.log").read_text()
                return False

        wait_for("the API", ready, 60)
        wait_for("the flow's control listener", lambda: "control:" in flow_log() or procs[0].poll() is not None, 60)
        assert procs[0].poll() is None, flow_log()[-3000:]
        # Over real HTTP too: every endpoint refuses a missing, expired, wrongly signed or too low token.
        from test_api import ENDPOINTS

        expired = make_token(SECRET.encode(), "x", "admin", -120)
        forged = make_token(b"not-the-secret-" + b"x" * 40, "x", "admin", 600)
        for method, path, body, needed in ENDPOINTS:
            for headers in ({}, {"Authorization": "Bearer " + expired}, {"Authorization": "Bearer " + forged}):
                r = http.request(method, path, json=body, headers=headers)
                assert r.status_code == 401 and r.json()["error"] == "unauthorized", (method, path, r.text)
            if needed != "viewer":
                r = http.request(method, path, json=body, headers={"Authorization": "Bearer " + tok["viewer"]})
                assert r.status_code == 403 and r.json()["error"] == "forbidden", (method, path, r.text)
        with connect(f"ws://127.0.0.1:{port}/api/v1/stream?token={expired}") as refused:
            assert json.loads(refused.recv(timeout=5)) == {"error": "unauthorized", "detail": "token expired"}

        ws = stack.enter_context(connect(f"ws://127.0.0.1:{port}/api/v1/stream?service=support-bot&token="
                                         f"{tok['viewer']}"))

        def listen():
            while not stop.is_set():
                try:
                    received.append(json.loads(ws.recv(timeout=0.5)))
                except TimeoutError:
                    continue
                except Exception:
                    return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()

        # 1. The incident appears over HTTP and over the WebSocket.
        produce(tansu, telemetry, phases[0])
        first = wait_for("the first incident in GET /incidents", support_bot_latency, 120)
        seen_at = time.time()
        assert len(first) == 1 and first[0]["status"] in ("firing", "updated", "escalated", "resolved")
        opened = datetime.fromisoformat(first[0]["opened_at"]).timestamp()
        delay = seen_at - opened
        print(f"[{backend}] alert detected_at -> listed by GET /incidents: {delay:.2f}s")
        assert delay < 5.0
        wait_for("the alert on the WebSocket", lambda: [m for m in received if m["alert"]["service"] == "support-bot"],
                 15)
        assert all(m["alert"]["service"] == "support-bot" for m in received)

        # 2. A silence made through the API reaches the running flow and suppresses the next page.
        body = {"matchers": [{"name": "service", "op": "=~", "value": "support-.*"},
                             {"name": "type", "value": "latency"}],
                "startsAt": datetime.utcfromtimestamp(t0).isoformat() + "Z", "duration": "10h",
                "comment": "provider maintenance"}
        assert http.post("/api/v1/silences", json=body, headers=hv).status_code == 403
        r = http.post("/api/v1/silences", json=body, headers=ho)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        wait_for("the silence in the flow", lambda: sid in flow_log(), 30)
        produce(tansu, telemetry, phases[1])
        wait_for("the other service's incident of phase 2", search_rag, 120)
        time.sleep(3)
        assert len(support_bot_latency()) == 1, support_bot_latency()

        # 3. DELETE lifts it.
        r = http.delete(f"/api/v1/silences/{sid}", headers=ho)
        assert r.status_code == 200 and r.json()["state"] == "expired"
        time.sleep(3)  # the flow's control listener polls every 0.5 s
        produce(tansu, telemetry, phases[2])
        after = wait_for("the incident after the silence", lambda: len(support_bot_latency()) == 2 and
                         support_bot_latency(), 120)
        third = max(after, key=lambda i: i["opened_at"])

        # 4. Feedback marks the incident and reaches the flow's feedback path.
        r = http.post(f"/api/v1/incidents/{third['incident_id']}/feedback",
                      json={"label": "false_positive", "comment": "nightly batch"}, headers=ho)
        assert r.status_code == 201, r.text
        alert_id = r.json()["alert_id"]
        assert http.get(f"/api/v1/incidents/{third['incident_id']}", headers=hv).json()["feedback_label"] == \
            "false_positive"
        wait_for("the feedback in the flow", lambda: f"feedback false_positive on {alert_id}" in flow_log(), 30)

        audit = http.get("/api/v1/audit", params={"limit": 1000}, headers={"Authorization": "Bearer " + tok["admin"]})
        actions = [e["action"] for e in audit.json()["items"]]
        assert {"silence.create", "silence.expire", "feedback.false_positive", "alert.firing"} <= set(actions)
        r = subprocess.run([sys.executable, "-m", "sentinel.cli", "audit", "verify", "-c", str(flow_path)], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    finally:
        stop.set()
        stack.close()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs.values():
            f.close()
        http.close()
        Store(url, table_prefix=prefix).drop()
