"""The incident store on SQLite and on the real PostgreSQL (127.0.0.1:5432, database ``test``), and its sink."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, Dict, Iterator

import pytest
from bytewax.testing import TestingSource, run_main

from flows import build_flow
from sentinel.config import ConfigError, load_config_dict
from sentinel.store import Store, StoreError, incident_id_of, verify_audit
from sinks.incident_store import IncidentStoreWriter

PG_URL = os.environ.get("SENTINEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def alert(status: str = "firing", **kw: Any) -> Dict[str, Any]:
    a = {
        "alert_id": "al-" + uuid.uuid4().hex, "fingerprint": "fp-search-rag-latency", "type": "latency",
        "severity": "high", "service": "search-rag", "model": "gpt-4o", "subject": None,
        "metric": "latency_ms_p95", "observed": 4200.0, "expected": 850.0, "score": 0.97,
        "detector": "robust_zscore", "event_time": "2026-01-05T10:32:00+00:00",
        "detected_at": "2026-01-05T10:33:01+00:00", "summary": "Latency of search-rag/gpt-4o is 4.2 s.",
        "evidence": {"window_s": 60}, "root_cause_hints": [{"dimension": "region", "value": "us-east-1"}],
        "similar_incidents": [{"incident": "x", "score": 0.95}], "status": status,
    }
    a.update(kw)
    return a


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store(str(tmp_path / "incidents.db"))
    else:
        s = Store(PG_URL, table_prefix="t%s_" % uuid.uuid4().hex[:10])
    try:
        yield s
    finally:
        s.drop()
        s.close()


def test_idempotent_by_alert_id_and_incident_lifecycle(store: Store) -> None:
    fire = alert()
    assert store.store_alerts([fire]) == 1
    assert store.store_alerts([fire, dict(fire)]) == 0  # redelivery: nothing new
    esc = alert("escalated", severity="critical", alert_id="al-esc-" + uuid.uuid4().hex)
    res = alert("resolved", severity="critical", alert_id="al-res-" + uuid.uuid4().hex,
                detected_at="2026-01-05T10:50:00+00:00")
    assert store.store_alerts([esc, res, esc]) == 2
    total, page = store.list_incidents()
    assert total == 1
    inc = page[0]
    assert inc["incident_id"] == incident_id_of(fire)
    assert inc["status"] == "resolved" and inc["severity"] == "critical" and inc["alert_count"] == 3
    assert inc["resolved_at"].startswith("2026-01-05T10:50:00")
    full = store.get_incident(inc["incident_id"])
    assert [a["status"] for a in full["alerts"]] == ["firing", "escalated", "resolved"]
    assert full["root_cause_hints"] == fire["root_cause_hints"]
    assert full["similar_incidents"] == fire["similar_incidents"]
    assert full["evidence"] == {"window_s": 60}
    assert store.get_incident("nope") is None
    ok, n, msg = verify_audit(store)
    assert ok and n == 3, msg


def test_filters_and_paging(store: Store) -> None:
    alerts = []
    for i in range(30):
        svc = "search-rag" if i % 3 else "chat"
        alerts.append(alert(fingerprint=f"fp-{i}", service=svc, severity="critical" if i % 5 == 0 else "low",
                            type="cost" if i % 2 else "latency",
                            detected_at=f"2026-01-05T11:{i:02d}:00+00:00", event_time=f"2026-01-05T11:{i:02d}:00Z"))
    alerts.append(alert("resolved", fingerprint="fp-0", service="chat", severity="critical",
                        event_time="2026-01-05T11:00:00Z", detected_at="2026-01-05T12:00:00+00:00"))
    assert store.store_alerts(alerts) == 31
    total, page = store.list_incidents(limit=10)
    assert total == 30 and len(page) == 10
    assert page[0]["opened_at"] > page[-1]["opened_at"]  # newest first
    total2, page2 = store.list_incidents(limit=10, offset=25)
    assert len(page2) == 5 and not {p["incident_id"] for p in page} & {p["incident_id"] for p in page2}
    assert store.list_incidents(service="chat")[0] == 10
    assert store.list_incidents(service="chat", status=["open"])[0] == 9
    assert store.list_incidents(status=["resolved"])[0] == 1
    assert store.list_incidents(severity=["critical"])[0] == 6
    assert store.list_incidents(type="cost", service="search-rag")[0] == 10
    t0 = time.mktime((2026, 1, 5, 11, 10, 0, 0, 0, 0)) - time.timezone
    assert store.list_incidents(since=t0, until=t0 + 600)[0] == 10


def test_silences_feedback_and_audit(store: Store) -> None:
    fire = alert()
    store.store_alerts([fire])
    iid = incident_id_of(fire)
    now = time.time()
    s = store.add_silence("s1", [{"name": "service", "op": "=~", "value": "search-.*"}], now, now + 3600,
                          "maintenance", "alice")
    assert s["state"] == "active" and s["matchers"][0]["op"] == "=~"
    assert [x["id"] for x in store.list_silences(active_only=True)] == ["s1"]
    assert store.expire_silence("s1", "bob") and not store.expire_silence("s1", "bob")
    assert store.list_silences(active_only=True) == []
    store.add_feedback(iid, fire["alert_id"], "false_positive", "load test", "carol")
    inc = store.get_incident(iid)
    assert inc["feedback_label"] == "false_positive" and inc["feedback_by"] == "carol"
    entries = store.audit_entries()
    assert [e["action"] for e in entries] == ["alert.firing", "silence.create", "silence.expire",
                                              "feedback.false_positive"]
    assert [e["actor"] for e in entries] == ["flow", "alice", "bob", "carol"]
    assert verify_audit(store)[0]


def test_store_refuses_password_in_url_and_unknown_scheme(tmp_path) -> None:
    with pytest.raises(StoreError, match="password_env"):
        Store("postgresql://u:secret@127.0.0.1/test")
    with pytest.raises(StoreError, match="not supported"):
        Store("mysql://u@127.0.0.1/test")
    with pytest.raises(StoreError, match="SENTINEL_NO_SUCH_ENV"):
        Store(PG_URL, password_env="SENTINEL_NO_SUCH_ENV")


def test_config_one_line_errors() -> None:
    src = {"kind": "file", "path": "x.jsonl"}
    with pytest.raises(ConfigError) as ex:
        load_config_dict({"source": src, "sinks": [{"kind": "incident_store", "url": "postgresql://a:pw@h/db"}]})
    assert "sinks[0].url" in str(ex.value) and "password_env" in str(ex.value) and "pw" not in str(ex.value)
    with pytest.raises(ConfigError, match="table_prefix"):
        load_config_dict({"source": src, "sinks": [{"kind": "incident_store", "table_prefix": "X; drop"}]})
    with pytest.raises(ConfigError, match="urll"):
        load_config_dict({"source": src, "sinks": [{"kind": "incident_store", "urll": "x"}]})


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_flow_stores_alerts_through_the_spooled_sink(backend: str, tmp_path) -> None:
    """Alerts from a flow reach the store through the sink's spool; a replay adds nothing."""
    from simulator import Simulator

    prefix = "f%s_" % uuid.uuid4().hex[:10]
    url = str(tmp_path / "inc.db") if backend == "sqlite" else PG_URL
    sink = {"kind": "incident_store", "url": url, "table_prefix": prefix, "spool_dir": str(tmp_path / "spool")}
    cfg = load_config_dict({"name": "store-test", "source": {"kind": "file", "path": "unused"}, "sinks": [sink],
                            "metrics": {"port": 0}})
    sim = Simulator(seed=7, hours=6, rate=8)
    events = str(tmp_path / "events.jsonl")
    sim.write(events, None)
    cfg.source.path = events
    try:
        run_main(build_flow(cfg))
        store = Store(url, table_prefix=prefix)
        n_alerts = store.last_alert_seq()
        total, _ = store.list_incidents()
        assert n_alerts > 0 and total > 0
        run_main(build_flow(cfg))  # the same alerts again: idempotent
        assert store.last_alert_seq() == n_alerts
        assert store.list_incidents()[0] == total
        assert verify_audit(store)[:2] == (True, n_alerts)
    finally:
        Store(url, table_prefix=prefix).drop()


def test_writer_waits_for_a_locked_database(tmp_path) -> None:
    """While another writer holds the database, alerts stay spooled; they arrive once it is free."""
    import sqlite3

    import orjson

    db = tmp_path / "inc.db"
    w = IncidentStoreWriter(str(db), spool_dir=str(tmp_path / "spool"), spool_max_bytes=1 << 20, drain_timeout=5)
    other = sqlite3.connect(str(db), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        a = alert()
        w.write([a], [orjson.dumps(a)])
        time.sleep(1.5)
        assert w.pending == 1
    finally:
        other.execute("ROLLBACK")
        other.close()
    w.flush(40)
    assert w.pending == 0
    w.close()
    assert Store(str(db)).last_alert_seq() == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_writers_starting_together_on_a_new_store(backend: str, tmp_path) -> None:
    """Several processes opening a new store at once (a flow's workers, the API) all get its tables."""
    import subprocess
    import sys

    url = str(tmp_path / "new.db") if backend == "sqlite" else PG_URL
    prefix = "m%s_" % uuid.uuid4().hex[:10]
    code = ("import sys; from sentinel.store import Store; s = Store(sys.argv[1], table_prefix=sys.argv[2]); "
            "s.store_alerts([{'alert_id': sys.argv[3], 'fingerprint': sys.argv[3], 'status': 'firing'}])")
    procs = [subprocess.Popen([sys.executable, "-c", code, url, prefix, f"a{i}"], stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    try:
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-2000:]
        store = Store(url, table_prefix=prefix)
        assert store.last_alert_seq() == 4 and verify_audit(store)[:2] == (True, 4)
    finally:
        Store(url, table_prefix=prefix).drop()


def test_a_store_of_a_newer_schema_is_refused(tmp_path) -> None:
    from sqlalchemy import text

    s = Store(str(tmp_path / "inc.db"))
    assert s.revision() == "0001"
    with s.engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(StoreError, match="revision '0099'"):
        Store(str(tmp_path / "inc.db"))


def test_migrations_run_from_the_alembic_command_line_too(tmp_path) -> None:
    """The revisions are plain Alembic: downgrade and upgrade through its API leave a working store."""
    from alembic import command

    s = Store(str(tmp_path / "inc.db"), table_prefix="x_")
    s.store_alerts([alert()])
    with s.engine.begin() as c:
        command.downgrade(s._alembic(c), "base")
    assert s.revision() is None
    s.migrate()
    assert s.revision() == "0001" and s.store_alerts([alert()]) == 1
