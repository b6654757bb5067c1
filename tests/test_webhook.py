"""The webhook sink against a real HTTP server on loopback: signed bodies, retries from the spool, 4xx skipped."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List

import orjson
import pytest

from sentinel.config import ConfigError, load_config_dict
from sinks.base import encode_alert
from sinks.webhook import WebhookWriter
from test_incident_store import alert

KEY = b"webhook-key-0123456789abcdef"


class Receiver:
    """An HTTP endpoint that answers with the queued status codes (then 200) and keeps what it was sent."""

    def __init__(self) -> None:
        self.got: List[Dict[str, Any]] = []
        self.answers: List[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = outer.answers.pop(0) if outer.answers else 200
                outer.got.append({"status": status, "body": body, "headers": dict(self.headers)})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accepted(self) -> List[Dict[str, Any]]:
        return [g for g in self.got if g["status"] == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def make_writer(url: str, tmp_path: Path, **kw: Any) -> WebhookWriter:
    return WebhookWriter(url, spool_dir=str(tmp_path / ("spool-" + uuid.uuid4().hex[:6])), spool_max_bytes=1 << 20,
                         drain_timeout=5, **kw)


def test_signed_post_retried_after_server_errors(receiver: Receiver, tmp_path: Path) -> None:
    receiver.answers = [503, 500]
    w = make_writer(receiver.url, tmp_path, key=KEY, headers={"X-Team": "llm-platform"})
    try:
        a = alert()
        payload = encode_alert(a, "cloudevents")
        w.write([a], [payload])
        w.flush(30)
    finally:
        w.close()
    assert [g["status"] for g in receiver.got] == [503, 500, 200]
    (ok,) = receiver.accepted()
    assert ok["body"] == payload and orjson.loads(ok["body"])["data"]["alert_id"] == a["alert_id"]
    h = {k.lower(): v for k, v in ok["headers"].items()}
    assert h["content-type"] == "application/json" and h["x-team"] == "llm-platform"
    assert h["x-sentinel-alert-id"] == a["alert_id"]
    assert h["x-sentinel-signature"] == "sha256=" + hmac.new(KEY, payload, hashlib.sha256).hexdigest()


def test_a_refused_alert_is_skipped_and_the_next_delivered(receiver: Receiver, tmp_path: Path) -> None:
    receiver.answers = [400]
    w = make_writer(receiver.url, tmp_path)
    try:
        a, b = alert(), alert()
        w.write([a, b], [encode_alert(a, "none"), encode_alert(b, "none")])
        w.flush(30)
    finally:
        w.close()
    assert [orjson.loads(g["body"])["alert_id"] for g in receiver.accepted()] == [b["alert_id"]]
    assert "x-sentinel-signature" not in {k.lower() for k in receiver.got[-1]["headers"]}


def test_down_endpoint_keeps_alerts_spooled_for_the_next_start(tmp_path: Path) -> None:
    spool = str(tmp_path / "spool")
    r = Receiver()
    url = r.url
    r.server.shutdown()
    r.server.server_close()  # nothing listens now
    w = WebhookWriter(url, spool_dir=spool, spool_max_bytes=1 << 20, drain_timeout=1)
    a = alert()
    w.write([a], [encode_alert(a, "none")])
    time.sleep(1.0)
    w.close()
    assert w.pending == 1
    receiver = Receiver()
    try:
        w2 = WebhookWriter(receiver.url, spool_dir=spool, spool_max_bytes=1 << 20, drain_timeout=5)
        w2.flush(30)
        w2.close()
        assert [orjson.loads(g["body"])["alert_id"] for g in receiver.accepted()] == [a["alert_id"]]
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def test_flow_config_builds_the_sink(receiver: Receiver, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SENTINEL_TEST_WEBHOOK_KEY", KEY.decode())
    src = {"kind": "file", "path": "x"}
    with pytest.raises(ConfigError, match="Authorization"):
        load_config_dict({"source": src, "sinks": [{"kind": "webhook", "url": receiver.url,
                                                    "headers": {"Authorization": "Bearer x"}}]})
    with pytest.raises(ConfigError, match="credentials"):
        load_config_dict({"source": src, "sinks": [{"kind": "webhook", "url": "https://a:b@h/x"}]})
    cfg = load_config_dict({"source": src, "metrics": {"port": 0}, "sinks": [{
        "kind": "webhook", "url": receiver.url, "hmac_key_env": "SENTINEL_TEST_WEBHOOK_KEY",
        "spool_dir": str(tmp_path / "spool")}]})
    from flows import make_alert_sinks

    (sink,) = make_alert_sinks(cfg)
    w = sink._make_writer(0, 1)
    try:
        a = alert()
        w.write([a], [encode_alert(a, "cloudevents")])
        w.flush(20)
    finally:
        w.close()
    (ok,) = receiver.accepted()
    sig = {k.lower(): v for k, v in ok["headers"].items()}["x-sentinel-signature"]
    assert sig == "sha256=" + hmac.new(KEY, ok["body"], hashlib.sha256).hexdigest()
