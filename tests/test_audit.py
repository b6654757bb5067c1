"""``sentinel audit verify`` on the real stores: intact, then a changed, a removed and a reordered entry."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from sqlalchemy import delete, select, update

from sentinel.store import Store
from test_incident_store import PG_URL, alert

ROOT = Path(__file__).resolve().parents[1]


def verify(flow: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sentinel.cli", "audit", "verify", "-c", str(flow), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(request, tmp_path):
    url = str(tmp_path / "inc.db") if request.param == "sqlite" else PG_URL
    prefix = "v%s_" % uuid.uuid4().hex[:10]
    flow = tmp_path / "flow.yaml"
    flow.write_text(yaml.safe_dump({"source": {"kind": "file", "path": "x.jsonl"},
                                    "sinks": [{"kind": "incident_store", "url": url, "table_prefix": prefix}]}))
    store = Store(url, table_prefix=prefix)
    try:
        yield flow, store
    finally:
        store.drop()
        store.close()


def fill(store: Store) -> None:
    store.store_alerts([alert(fingerprint=f"fp{i}") for i in range(4)])
    store.add_silence("s1", [{"name": "service", "op": "=", "value": "chat"}], 1.0, 2.0, "", "alice")
    store.add_feedback("i1", None, "true_positive", "real", "bob")


def test_intact_chain_verifies(setup) -> None:
    flow, store = setup
    fill(store)
    r = verify(flow)
    assert r.returncode == 0, r.stderr
    assert "6 entries, chain intact" in r.stdout
    head = r.stdout.strip().rsplit(" ", 1)[-1]
    assert verify(flow, "--expect-head", head).returncode == 0
    # The newest entry removed: only a head noted earlier shows it.
    a = store.t["audit"]
    with store.engine.begin() as c:
        c.execute(delete(a).where(a.c.seq == 6))
    assert verify(flow).returncode == 0
    r = verify(flow, "--expect-head", head)
    assert r.returncode == 1 and "removed from the end" in r.stderr


def test_changed_entry_is_found(setup) -> None:
    flow, store = setup
    fill(store)
    a = store.t["audit"]
    with store.engine.begin() as c:
        c.execute(update(a).where(a.c.seq == 5).values(actor="mallory"))
    r = verify(flow)
    assert r.returncode == 1 and "entry 5" in r.stderr and "changed" in r.stderr


def test_removed_entry_is_found(setup) -> None:
    flow, store = setup
    fill(store)
    a = store.t["audit"]
    with store.engine.begin() as c:
        c.execute(delete(a).where(a.c.seq == 3))
    r = verify(flow)
    assert r.returncode == 1 and "entry 3 is missing" in r.stderr


def test_reordered_entries_are_found(setup) -> None:
    """Two entries swapped, each moved with its own hash: the chain no longer links."""
    flow, store = setup
    fill(store)
    a = store.t["audit"]
    with store.engine.begin() as c:
        rows = {r.seq: dict(r._mapping) for r in c.execute(select(a).where(a.c.seq.in_([2, 3])))}
        c.execute(delete(a).where(a.c.seq.in_([2, 3])))
        c.execute(a.insert(), [{**rows[3], "seq": 2}, {**rows[2], "seq": 3}])
    r = verify(flow)
    assert r.returncode == 1 and "entry 2" in r.stderr


def test_rehashed_entry_breaks_the_next_link(setup) -> None:
    """A changed entry whose own hash is recomputed still breaks the next entry's prev_hash."""
    from sentinel.store import entry_hash

    flow, store = setup
    fill(store)
    a = store.t["audit"]
    with store.engine.begin() as c:
        r = c.execute(select(a).where(a.c.seq == 2)).first()
        h = entry_hash(r.prev_hash, 2, r.at, "mallory", r.action, r.subject, r.detail)
        c.execute(update(a).where(a.c.seq == 2).values(actor="mallory", hash=h))
    r = verify(flow)
    assert r.returncode == 1 and "entry 3: prev_hash" in r.stderr


def test_store_without_tables_is_one_line(tmp_path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(yaml.safe_dump({"source": {"kind": "file", "path": "x.jsonl"}, "sinks": [{"kind": "jsonl",
                                                                                            "path": "a"}]}))
    r = verify(flow)
    assert r.returncode == 2 and "no incident_store sink" in r.stderr and len(r.stderr.strip().splitlines()) == 1
