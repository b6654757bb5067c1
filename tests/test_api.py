"""``sentinel api`` in process (FastAPI's TestClient) over a real store (SQLite, PostgreSQL) and real Kafka (Tansu)."""

from __future__ import annotations

import json
import os
import time
import uuid
from types import SimpleNamespace
from typing import Any, Dict, Iterator

import jwt
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from conftest import TANSU_CONSUMER_CONFIG
from operators.silences import Controls
from sentinel.api import ControlPublisher, create_app
from sentinel.auth import Authenticator, make_token
from sentinel.core.times import iso
from sentinel.core.types import Alert
from sentinel.config import ApiAuthConfig
from sentinel.control import ControlHandler
from sentinel.store import Store, incident_id_of, verify_audit
from test_incident_store import PG_URL, alert

SECRET = "s3cret-" + "x" * 40
KEY = b"control-key-0123456789abcdef"


def token(role: str = "viewer", ttl: float = 600, key: Any = SECRET, **kw: Any) -> str:
    return make_token(key.encode() if isinstance(key, str) else key, "tester-" + role, role, ttl, **kw)


def hdr(role: str = "viewer", **kw: Any) -> Dict[str, str]:
    return {"Authorization": "Bearer " + token(role, **kw)}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Iterator[Store]:
    s = Store(str(tmp_path / "inc.db")) if request.param == "sqlite" else Store(
        PG_URL, table_prefix="a%s_" % uuid.uuid4().hex[:10])
    try:
        yield s
    finally:
        s.drop()
        s.close()


@pytest.fixture
def topics(tansu, kafka_topic) -> SimpleNamespace:
    return SimpleNamespace(brokers=tansu, control=kafka_topic(1, "control"), feedback=kafka_topic(1, "feedback"))


@pytest.fixture
def client(store, topics, monkeypatch) -> Iterator[TestClient]:
    monkeypatch.setenv("SENTINEL_TEST_API_SECRET", SECRET)
    auth = Authenticator(ApiAuthConfig(secret_env="SENTINEL_TEST_API_SECRET"))
    pub = ControlPublisher(topics.brokers, topics.control, topics.feedback, {}, KEY)
    try:
        with TestClient(create_app(store, auth, pub, stream_poll=0.1)) as c:
            yield c
    finally:
        pub.close()


def read_topic(brokers: str, topic: str, n: int, timeout: float = 20.0):
    c = Consumer({**TANSU_CONSUMER_CONFIG, "bootstrap.servers": brokers, "group.id": "t-" + uuid.uuid4().hex})
    c.assign([TopicPartition(topic, 0, 0)])
    got, t0 = [], time.monotonic()
    while len(got) < n and time.monotonic() - t0 < timeout:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m)
    c.close()
    return got


ENDPOINTS = [
    ("get", "/api/v1/incidents", None, "viewer"),
    ("get", "/api/v1/incidents/x", None, "viewer"),
    ("post", "/api/v1/incidents/x/feedback", {"label": "true_positive"}, "operator"),
    ("get", "/api/v1/silences", None, "viewer"),
    ("post", "/api/v1/silences", {"matchers": [{"name": "service", "value": "a"}], "duration": "1h"}, "operator"),
    ("get", "/api/v1/silences/x", None, "viewer"),
    ("delete", "/api/v1/silences/x", None, "operator"),
    ("get", "/api/v1/audit", None, "admin"),
]


@pytest.mark.parametrize("method,path,body,needed", ENDPOINTS)
def test_every_endpoint_refuses_bad_tokens(client: TestClient, method, path, body, needed) -> None:
    def call(headers):
        return client.request(method, path, json=body, headers=headers)

    r = call({})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized" and "missing bearer" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = call({"Authorization": "Basic abc"})
    assert r.status_code == 401
    r = call(hdr(needed, ttl=-120))
    assert r.status_code == 401 and r.json()["detail"] == "token expired"
    r = call(hdr(needed, key="another-secret-" + "y" * 40))
    assert r.status_code == 401 and "signature" in r.json()["detail"]
    forged = jwt.encode({"sub": "x", "role": "admin", "exp": time.time() + 60}, None, algorithm="none")
    assert call({"Authorization": "Bearer " + forged}).status_code == 401
    no_role = make_token(SECRET.encode(), "x", "viewer", 60)
    no_role = jwt.encode({**jwt.decode(no_role, SECRET, algorithms=["HS256"]), "role": "root"}, SECRET)
    assert call({"Authorization": "Bearer " + no_role}).status_code == 403
    roles = ("viewer", "operator", "admin")
    for role in roles[:roles.index(needed)]:
        r = call(hdr(role))
        assert r.status_code == 403, (role, r.text)
        assert r.json() == {"error": "forbidden", "detail": f"role {role} may not do this; it needs {needed} or higher"}
    r = call(hdr(needed))
    assert r.status_code not in (401, 403), r.text


def test_health_and_docs_need_no_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/v1/incidents" in paths and "/api/v1/silences/{silence_id}" in paths


def test_incidents_list_filters_and_detail(client: TestClient, store: Store) -> None:
    a1 = alert(fingerprint="fp1", service="search-rag", severity="critical")
    a2 = alert(fingerprint="fp2", service="chat", severity="low", type="cost")
    store.store_alerts([a1, a2, alert("resolved", fingerprint="fp2", service="chat", alert_id="r2")])
    r = client.get("/api/v1/incidents", headers=hdr())
    assert r.status_code == 200 and r.json()["total"] == 2
    r = client.get("/api/v1/incidents?service=search-rag&severity=critical,high&status=open", headers=hdr())
    assert [i["incident_id"] for i in r.json()["items"]] == [incident_id_of(a1)]
    assert client.get("/api/v1/incidents?status=resolved", headers=hdr()).json()["total"] == 1
    assert client.get("/api/v1/incidents?since=2026-01-05T10:00:00Z&until=2026-01-05T11:00:00Z",
                      headers=hdr()).json()["total"] == 2
    assert client.get("/api/v1/incidents?since=2030-01-01T00:00:00Z", headers=hdr()).json()["total"] == 0
    assert client.get("/api/v1/incidents?limit=1&offset=1", headers=hdr()).json()["items"].__len__() == 1
    bad = client.get("/api/v1/incidents?severity=urgent", headers=hdr())
    assert bad.status_code == 400 and "severity" in bad.json()["detail"]
    assert client.get("/api/v1/incidents?since=yesterday", headers=hdr()).status_code == 400
    d = client.get(f"/api/v1/incidents/{incident_id_of(a1)}", headers=hdr()).json()
    assert d["alerts"][0]["alert_id"] == a1["alert_id"] and d["root_cause_hints"] and d["similar_incidents"]
    assert client.get("/api/v1/incidents/nope", headers=hdr()).status_code == 404


def test_silence_create_list_expire_reaches_the_control_topic_signed(client: TestClient, store: Store,
                                                                      topics) -> None:
    body = {"matchers": [{"name": "service", "op": "=~", "value": "search-.*"},
                         {"name": "severity", "op": "!=", "value": "critical"},
                         {"name": "type", "value": "latency"}],
            "startsAt": "2026-01-05T00:00:00Z", "endsAt": "2026-01-06T00:00:00Z", "comment": "maintenance"}
    r = client.post("/api/v1/silences", json=body, headers=hdr("operator"))
    assert r.status_code == 400 and "end after" in r.json()["detail"]  # ended before now
    body.pop("startsAt"), body.pop("endsAt")
    body["duration"] = "2h"
    r = client.post("/api/v1/silences", json=body, headers=hdr("operator"))
    assert r.status_code == 201, r.text
    sil = r.json()
    assert sil["state"] == "active" and sil["created_by"] == "tester-operator"
    assert [s["id"] for s in client.get("/api/v1/silences?state=active", headers=hdr()).json()["items"]] == [sil["id"]]
    bad = client.post("/api/v1/silences", json={"matchers": [{"name": "service", "op": "=~", "value": "("}],
                                                "duration": "1h"}, headers=hdr("operator"))
    assert bad.status_code == 422
    too_long = client.post("/api/v1/silences", json={"matchers": [{"name": "service", "value": "a"}],
                                                     "duration": "30d"}, headers=hdr("operator"))
    assert too_long.status_code == 400
    r = client.delete(f"/api/v1/silences/{sil['id']}", headers=hdr("operator"))
    assert r.status_code == 200 and r.json()["state"] == "expired"
    assert client.delete(f"/api/v1/silences/{sil['id']}", headers=hdr("operator")).status_code == 409
    assert client.delete("/api/v1/silences/nope", headers=hdr("operator")).status_code == 404

    # What the flow reads: signed messages it applies (a wrong key is refused).
    msgs = read_topic(topics.brokers, topics.control, 2)
    assert len(msgs) == 2
    controls = Controls()
    handler = ControlHandler(controls, control_topic=topics.control, key=KEY)
    m = msgs[0]
    assert handler.handle(topics.control, m.value(), m.headers(), "t")
    now = time.time()

    def a(**kw):
        return Alert.from_json(alert(event_time=iso(now), **kw))

    assert controls.silenced_by(a(service="search-rag", severity="high")) is not None
    assert controls.silenced_by(a(service="search-rag", severity="critical")) is None  # !=
    assert controls.silenced_by(a(service="chat", severity="high")) is None  # =~ is anchored
    assert controls.silenced_by(a(service="search-rag", severity="high", type="cost")) is None  # =
    assert handler.handle(topics.control, msgs[1].value(), msgs[1].headers(), "t")
    assert controls.silenced_by(a(service="search-rag", severity="high")) is None
    other = ControlHandler(Controls(), control_topic=topics.control, key=b"another-key-0123456789")
    assert not other.handle(topics.control, m.value(), m.headers(), "t")
    assert not other.handle(topics.control, m.value(), None, "t")

    acts = [e["action"] for e in client.get("/api/v1/audit", headers=hdr("admin")).json()["items"]]
    assert acts == ["silence.create", "silence.expire"]
    assert verify_audit(store)[0]


def test_feedback_is_stored_and_sent(client: TestClient, store: Store, topics) -> None:
    a1 = alert()
    store.store_alerts([a1])
    iid = incident_id_of(a1)
    r = client.post(f"/api/v1/incidents/{iid}/feedback", json={"label": "maybe"}, headers=hdr("operator"))
    assert r.status_code == 422
    r = client.post(f"/api/v1/incidents/{iid}/feedback", json={"label": "false_positive", "comment": "load test"},
                    headers=hdr("operator"))
    assert r.status_code == 201, r.text
    inc = client.get(f"/api/v1/incidents/{iid}", headers=hdr()).json()
    assert inc["feedback_label"] == "false_positive" and inc["feedback_by"] == "tester-operator"
    (m,) = read_topic(topics.brokers, topics.feedback, 1)
    msg = orjson.loads(m.value())
    assert msg["alert_id"] == a1["alert_id"] and msg["label"] == "false_positive" and msg["who"] == "tester-operator"
    controls = Controls()
    controls.remember(Alert.from_json(a1))
    handler = ControlHandler(controls, feedback_topic=topics.feedback, key=KEY)
    assert handler.handle(topics.feedback, m.value(), m.headers(), "t")
    assert controls.dismissed_by(Alert.from_json(a1)) is not None


def test_stream_sends_stored_alerts_filtered(client: TestClient, store: Store) -> None:
    from starlette.websockets import WebSocketDisconnect

    with client.websocket_connect("/api/v1/stream") as ws:
        assert ws.receive_json()["error"] == "unauthorized"
        with pytest.raises(WebSocketDisconnect) as ex:
            ws.receive_json()
        assert ex.value.code == 4401
    with client.websocket_connect(f"/api/v1/stream?token={token(ttl=-100)}") as ws:
        assert ws.receive_json() == {"error": "unauthorized", "detail": "token expired"}
    store.store_alerts([alert(fingerprint="old", service="chat", severity="critical", alert_id="old")])
    with client.websocket_connect(f"/api/v1/stream?service=chat&severity=high,critical&token={token()}") as ws:
        store.store_alerts([alert(fingerprint="a", service="search-rag"), alert(fingerprint="b", service="chat",
                                                                                 severity="low"),
                            alert(fingerprint="c", service="chat", severity="critical", alert_id="want")])
        msg = ws.receive_json()  # only what was stored after it connected, filtered
        assert msg["alert"]["alert_id"] == "want" and msg["seq"] == 4
    with client.websocket_connect(f"/api/v1/stream?service=chat&after=0&token={token()}") as ws:
        assert [ws.receive_json()["alert"]["alert_id"] for _ in range(3)] == ["old", alert_id_of_b(store), "want"]


def alert_id_of_b(store: Store) -> str:
    return next(a["alert_id"] for _, a in store.alerts_after(0) if a["fingerprint"] == "b")


def test_rs256_with_public_key_and_jwks(tmp_path, store: Store) -> None:
    priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = priv.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pub.pem").write_bytes(pem)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(priv.public_key()))
    jwk["kid"] = "k1"
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    good = make_token(priv, "rs", "viewer", 60, algorithm="RS256", kid="k1", audience="sentinel")
    for cfg in (ApiAuthConfig(algorithm="RS256", public_key_file=str(tmp_path / "pub.pem"), audience="sentinel"),
                ApiAuthConfig(algorithm="RS256", jwks_file=str(tmp_path / "jwks.json"), audience="sentinel")):
        c = TestClient(create_app(store, Authenticator(cfg)))
        assert c.get("/api/v1/incidents", headers={"Authorization": "Bearer " + good}).status_code == 200
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        bad = make_token(other, "rs", "viewer", 60, algorithm="RS256", kid="k1", audience="sentinel")
        assert c.get("/api/v1/incidents", headers={"Authorization": "Bearer " + bad}).status_code == 401
        hs = make_token(SECRET.encode(), "rs", "admin", 60, audience="sentinel")
        assert c.get("/api/v1/incidents", headers={"Authorization": "Bearer " + hs}).status_code == 401
        wrong_aud = make_token(priv, "rs", "viewer", 60, algorithm="RS256", kid="k1", audience="other")
        assert c.get("/api/v1/incidents", headers={"Authorization": "Bearer " + wrong_aud}).status_code == 401


def test_auth_config_errors(monkeypatch, tmp_path) -> None:
    from pydantic import ValidationError

    monkeypatch.delenv("SENTINEL_API_SECRET", raising=False)
    with pytest.raises(ValueError, match="SENTINEL_API_SECRET is not set"):
        Authenticator(ApiAuthConfig())
    monkeypatch.setenv("SENTINEL_API_SECRET", "short")
    with pytest.raises(ValueError, match="at least 32"):
        Authenticator(ApiAuthConfig())
    with pytest.raises(ValidationError, match="exactly one of public_key_file and jwks_file"):
        ApiAuthConfig(algorithm="RS256")
    with pytest.raises(ValueError, match="cannot read"):
        Authenticator(ApiAuthConfig(algorithm="RS256", public_key_file=str(tmp_path / "missing.pem")))
