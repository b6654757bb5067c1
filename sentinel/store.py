"""The incident store: incidents, their alerts, silences, feedback and the audit trail in SQL.

SQLAlchemy 2 Core over SQLite (a file path: the embedded default) or
PostgreSQL (``postgresql://user@host:5432/db``; the password comes from an
environment variable, never from the flow definition). The incident store
sink (:mod:`sinks.incident_store`) writes alerts; ``sentinel api``
(:mod:`sentinel.api`) reads them and records silences and feedback.

* ``alerts``: one row per ``alert_id`` (a redelivered alert is ignored), with
  ``seq`` growing in the order they were stored (the API's live stream follows
  it).
* ``incidents``: one row per incident, keyed by ``incident_id``: the alert's
  own ``incident_id`` when it has one, else a digest of its ``fingerprint``
  and ``event_time`` (every message of one incident carries the incident's
  first ones). Its status is that of its latest message.
* ``silences``, ``feedback``: what operators did through the API.
* ``audit``: append-only and hash-chained (see :func:`entry_hash`); every
  stored alert, silence, expiry and feedback adds a row in the same
  transaction; :func:`verify_audit` finds a changed, removed or reordered one.
* ``alembic_version``: the tables' revision; :meth:`Store.migrate` brings a
  store to the newest one (Alembic, ``sentinel/migrations``) when it is
  opened, and refuses a store at a revision it does not know (a newer
  Sentinel wrote it).

Every table name starts with the store's ``table_prefix`` (default empty), so
several stores can share one database.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import orjson
from sqlalchemy import (Column, Double, Index, Integer, MetaData, String, Table, Text, create_engine, event, func,
                        select, text, update)
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from sentinel.core.times import iso, to_epoch
from sentinel.core.types import Alert

GENESIS = "0" * 64
_MIGRATE_LOCK = threading.Lock()
MIGRATIONS = Path(__file__).with_name("migrations")


class StoreError(Exception):
    """A store that cannot be used (bad URL, missing password, newer schema)."""


def store_url(url: str, password_env: Optional[str] = None) -> URL:
    """The SQLAlchemy URL of a store: a path is SQLite; ``postgresql://`` uses psycopg 3.

    A password written in the URL is refused: it goes in the environment
    variable ``password_env``.
    """
    if "://" not in url:
        return URL.create("sqlite", database=os.path.abspath(url))
    try:
        u = make_url(url)
    except Exception:
        raise StoreError(f"url: not a database URL or a path: {url!r}") from None
    if u.password is not None:
        raise StoreError("url: holds a password; give it in the environment variable named by password_env")
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+psycopg")
    elif u.drivername != "sqlite":
        raise StoreError(f"url: {u.drivername!r} is not supported (a SQLite path or postgresql://...)")
    if password_env:
        pw = os.environ.get(password_env)
        if pw is None:
            raise StoreError(f"password_env: environment variable {password_env} is not set")
        u = u.set(password=pw)
    return u


def incident_id_of(alert: Union[Alert, Mapping[str, Any]]) -> str:
    """The incident an alert belongs to: its ``incident_id`` (a JSON object from elsewhere may carry one),
    else a digest of fingerprint and event_time."""
    if isinstance(alert, Alert):
        fp, event_time = alert.fingerprint, alert.event_time
    else:
        given = alert.get("incident_id")
        if isinstance(given, str) and given:
            return given[:64]
        fp, event_time = alert.get("fingerprint"), alert.get("event_time")
    key = "%s|%s" % (fp, event_time)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _epoch(iso: Any) -> Optional[float]:
    if not isinstance(iso, str):
        return None
    try:
        return to_epoch(iso)
    except ValueError:
        return None


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def entry_hash(prev_hash: str, seq: int, at: float, actor: str, action: str, subject: str, detail: str) -> str:
    """SHA-256 of the previous entry's hash and this entry's fields (its ``seq`` included, so order counts)."""
    body = _dumps([prev_hash, seq, repr(float(at)), actor, action, subject, detail])
    return hashlib.sha256(body.encode()).hexdigest()


def _tables(prefix: str) -> Tuple[MetaData, Dict[str, Table]]:
    md = MetaData()
    p = prefix
    t: Dict[str, Table] = {}
    t["incidents"] = Table(
        p + "incidents", md,
        Column("incident_id", String(64), primary_key=True),
        Column("fingerprint", String(128)),
        Column("service", String(256)),
        Column("model", String(256)),
        Column("type", String(64)),
        Column("severity", String(16)),
        Column("status", String(16)),
        Column("subject", String(256)),
        Column("metric", String(64)),
        Column("summary", Text),
        Column("event_time", Double),  # the incident's first event time
        Column("opened_at", Double),  # detected_at of the first message stored
        Column("updated_at", Double),  # detected_at of the latest
        Column("resolved_at", Double),
        Column("alert_count", Integer, nullable=False),
        Column("latest", Text),  # the latest message, JSON
        Column("feedback_label", String(32)),
        Column("feedback_comment", Text),
        Column("feedback_by", String(128)),
        Column("feedback_at", Double),
        Index(p + "ix_incidents_opened", "opened_at"),
        Index(p + "ix_incidents_service", "service", "opened_at"),
        Index(p + "ix_incidents_status", "status", "opened_at"),
    )
    t["alerts"] = Table(
        p + "alerts", md,
        Column("seq", Integer, primary_key=True, autoincrement=True),
        Column("alert_id", String(128), nullable=False, unique=True),
        Column("incident_id", String(64), nullable=False),
        Column("status", String(16)),
        Column("severity", String(16)),
        Column("service", String(256)),
        Column("detected_at", Double),
        Column("stored_at", Double),
        Column("body", Text, nullable=False),
        Index(p + "ix_alerts_incident", "incident_id", "seq"),
    )
    t["silences"] = Table(
        p + "silences", md,
        Column("id", String(128), primary_key=True),
        Column("matchers", Text, nullable=False),
        Column("starts_at", Double, nullable=False),
        Column("ends_at", Double, nullable=False),
        Column("comment", Text),
        Column("created_by", String(128)),
        Column("created_at", Double),
        Column("expired_at", Double),
    )
    t["feedback"] = Table(
        p + "feedback", md,
        Column("seq", Integer, primary_key=True, autoincrement=True),
        Column("incident_id", String(64), nullable=False),
        Column("alert_id", String(128)),
        Column("label", String(32), nullable=False),
        Column("comment", Text),
        Column("who", String(128)),
        Column("created_at", Double),
    )
    t["audit"] = Table(
        p + "audit", md,
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("at", Double, nullable=False),
        Column("actor", String(128), nullable=False),
        Column("action", String(64), nullable=False),
        Column("subject", String(256), nullable=False),
        Column("detail", Text, nullable=False),
        Column("prev_hash", String(64), nullable=False),
        Column("hash", String(64), nullable=False),
    )
    return md, t


class Store:
    """One incident store; thread-safe (one SQLAlchemy engine with its pool)."""

    def __init__(self, url: str, password_env: Optional[str] = None, table_prefix: str = "",
                 create: bool = True) -> None:
        self.url = store_url(url, password_env)
        self.prefix = table_prefix
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite":
            self.engine: Engine = create_engine(self.url, connect_args={"timeout": 30})

            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn, _record):  # WAL: readers (the API) never block the writer
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()
        else:
            self.engine = create_engine(self.url, pool_pre_ping=True)
        self.metadata, self.t = _tables(table_prefix)
        if create:
            self.migrate()

    # -- schema -------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the tables to the newest revision (Alembic, sentinel/migrations); refuse a newer store.

        Safe when several writers start on a new store at once (the workers of
        a flow, the API): one process at a time (a PostgreSQL advisory lock),
        one thread at a time, and a table another process created meanwhile
        on SQLite is simply there on the next try.
        """
        with _MIGRATE_LOCK:
            for attempt in range(10):
                try:
                    self._migrate_once()
                    return
                except (OperationalError, IntegrityError, ProgrammingError) as ex:
                    # Another process created a table or stamped the revision meanwhile (or holds
                    # SQLite's write lock): the next try finds its work done.
                    why = str(ex).lower()
                    if attempt == 9 or not any(w in why for w in ("exist", "unique", "duplicate", "locked")):
                        raise
                    time.sleep(0.1 * (attempt + 1))

    def _alembic(self, c: Connection):
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = c
        cfg.attributes["table_prefix"] = self.prefix
        return cfg

    def revision(self) -> Optional[str]:
        """The store's Alembic revision (None: no tables yet)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as c:
            return MigrationContext.configure(c, opts={"version_table": self.prefix + "alembic_version"}) \
                .get_current_revision()

    def _migrate_once(self) -> None:
        from alembic import command
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        with self.engine.begin() as c:
            if self.dialect == "postgresql":
                c.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": self.prefix + "migrate"})
            cfg = self._alembic(c)
            have = MigrationContext.configure(c, opts={"version_table": self.prefix + "alembic_version"}) \
                .get_current_revision()
            known = {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}
            if have is not None and have not in known:
                raise StoreError(f"the store's schema is at revision {have!r}, which this Sentinel does not know "
                                 f"(a newer version wrote it)")
            command.upgrade(cfg, "head")

    def drop(self) -> None:
        """Drop every table of this store, its Alembic version table too (tests)."""
        self.metadata.drop_all(self.engine, checkfirst=True)
        with self.engine.begin() as c:
            c.execute(text("DROP TABLE IF EXISTS %s" % self.engine.dialect.identifier_preparer.quote(
                self.prefix + "alembic_version")))

    def close(self) -> None:
        self.engine.dispose()

    def _insert(self, table: Table):
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert(table)

    # -- audit ----------------------------------------------------------------------

    def _lock_audit(self, c: Connection) -> None:
        """Serialise writers of the audit chain within this transaction."""
        if self.dialect == "postgresql":
            c.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": self.prefix + "audit"})

    def _audit(self, c: Connection, entries: Sequence[Tuple[str, str, str, Dict[str, Any]]]) -> None:
        """Append ``(actor, action, subject, detail)`` entries to the chain (within ``c``'s transaction)."""
        if not entries:
            return
        a = self.t["audit"]
        last = c.execute(select(a.c.seq, a.c.hash).order_by(a.c.seq.desc()).limit(1)).first()
        seq, prev = (last[0], last[1]) if last is not None else (0, GENESIS)
        rows = []
        now = time.time()
        for actor, action, subject, detail in entries:
            seq += 1
            d = _dumps(detail)
            actor, subject = actor[:128], subject[:256]
            h = entry_hash(prev, seq, now, actor, action, subject, d)
            rows.append({"seq": seq, "at": now, "actor": actor, "action": action, "subject": subject,
                         "detail": d, "prev_hash": prev, "hash": h})
            prev = h
        c.execute(a.insert(), rows)

    def audit(self, actor: str, action: str, subject: str, detail: Dict[str, Any]) -> None:
        with self.engine.begin() as c:
            self._lock_audit(c)
            self._audit(c, [(actor, action, subject, detail)])

    def audit_entries(self, after: int = 0, limit: int = 1000) -> List[Dict[str, Any]]:
        a = self.t["audit"]
        with self.engine.connect() as c:
            rows = c.execute(select(a).where(a.c.seq > after).order_by(a.c.seq).limit(limit)).mappings().all()
        return [dict(r) for r in rows]

    # -- alerts -----------------------------------------------------------------------

    def _statements(self):
        """The two upserts of :meth:`store_alerts`, built once (executed with many parameter sets)."""
        if getattr(self, "_upserts", None) is None:
            al, inc = self.t["alerts"], self.t["incidents"]
            ins_alert = self._insert(al).on_conflict_do_nothing(index_elements=["alert_id"]).returning(al.c.alert_id)
            ins = self._insert(inc)
            ex = ins.excluded
            ins_inc = ins.on_conflict_do_update(index_elements=["incident_id"], set_={
                "model": ex.model, "type": ex.type, "severity": ex.severity, "status": ex.status,
                "subject": ex.subject, "metric": ex.metric, "summary": ex.summary, "updated_at": ex.updated_at,
                "resolved_at": ex.resolved_at, "latest": ex.latest,
                "alert_count": inc.c.alert_count + ex.alert_count,
            })
            self._upserts = (ins_alert, ins_inc)
        return self._upserts

    def store_alerts(self, alerts: Iterable[Dict[str, Any]], actor: str = "flow") -> int:
        """Store alerts (SPEC section 2 objects) in one transaction; returns how many were new.

        An ``alert_id`` already stored is skipped: redelivery never duplicates
        an alert, never counts twice in its incident, never adds to the audit.
        """
        ins_alert, ins_inc = self._statements()
        now = time.time()
        rows: Dict[str, Dict[str, Any]] = {}  # alert_id -> row, first of each in this batch
        parsed: Dict[str, Tuple[Dict[str, Any], str]] = {}
        for alert in alerts:
            aid = alert.get("alert_id")
            if not isinstance(aid, str) or not aid or aid[:128] in rows:
                continue
            aid = aid[:128]
            body = _dumps(alert)
            iid = incident_id_of(alert)
            rows[aid] = {"alert_id": aid, "incident_id": iid, "status": alert.get("status") or "firing",
                         "severity": alert.get("severity"), "service": alert.get("service"),
                         "detected_at": _epoch(alert.get("detected_at")) or now, "stored_at": now, "body": body}
            parsed[aid] = (alert, body)
        if not rows:
            return 0
        with self.engine.begin() as c:
            self._lock_audit(c)
            new = {r[0] for r in c.execute(ins_alert, list(rows.values()))}
            incidents: Dict[str, Dict[str, Any]] = {}
            entries = []
            for aid, row in rows.items():  # in the batch's order
                if aid not in new:
                    continue
                alert, body = parsed[aid]
                iid, status, detected = row["incident_id"], row["status"], row["detected_at"]
                values = {
                    "incident_id": iid, "fingerprint": alert.get("fingerprint"), "service": alert.get("service"),
                    "model": alert.get("model"), "type": alert.get("type"), "severity": alert.get("severity"),
                    "status": status, "subject": alert.get("subject"), "metric": alert.get("metric"),
                    "summary": alert.get("summary"), "event_time": _epoch(alert.get("event_time")),
                    "opened_at": detected, "updated_at": detected,
                    "resolved_at": detected if status == "resolved" else None, "alert_count": 1, "latest": body,
                    "feedback_label": None, "feedback_comment": None, "feedback_by": None, "feedback_at": None,
                }
                before = incidents.get(iid)
                if before is not None:  # one upsert per incident: its latest message, every one counted
                    values.update(opened_at=before["opened_at"], event_time=before["event_time"],
                                  fingerprint=before["fingerprint"], alert_count=before["alert_count"] + 1)
                incidents[iid] = values
                entries.append((actor, "alert." + status, iid, {
                    "alert_id": aid, "service": alert.get("service"), "model": alert.get("model"),
                    "type": alert.get("type"), "severity": alert.get("severity"),
                    "digest": hashlib.sha256(body.encode()).hexdigest()}))
            if incidents:
                c.execute(ins_inc, list(incidents.values()))
            self._audit(c, entries)
        return len(entries)

    def alerts_after(self, seq: int, limit: int = 500) -> List[Tuple[int, Dict[str, Any]]]:
        """Alerts stored after ``seq``, oldest first: ``(seq, alert)``."""
        al = self.t["alerts"]
        with self.engine.connect() as c:
            rows = c.execute(select(al.c.seq, al.c.body).where(al.c.seq > seq).order_by(al.c.seq).limit(limit)).all()
        return [(r[0], orjson.loads(r[1])) for r in rows]

    def last_alert_seq(self) -> int:
        al = self.t["alerts"]
        with self.engine.connect() as c:
            return c.execute(select(func.coalesce(func.max(al.c.seq), 0))).scalar() or 0

    # -- incidents ----------------------------------------------------------------------

    def list_incidents(self, service: Optional[str] = None, model: Optional[str] = None,
                       type: Optional[str] = None, severity: Optional[Sequence[str]] = None,
                       status: Optional[Sequence[str]] = None, since: Optional[float] = None,
                       until: Optional[float] = None, limit: int = 50, offset: int = 0) -> Tuple[int, List[Dict]]:
        """``(total, page)``: incidents newest first (by when they were opened)."""
        inc = self.t["incidents"]
        q = select(inc)
        conds = []
        if service is not None:
            conds.append(inc.c.service == service)
        if model is not None:
            conds.append(inc.c.model == model)
        if type is not None:
            conds.append(inc.c.type == type)
        if severity:
            conds.append(inc.c.severity.in_(list(severity)))
        if status:
            st = list(status)
            if "open" in st:
                st = [s for s in st if s != "open"] + ["firing", "updated", "escalated"]
            conds.append(inc.c.status.in_(st))
        if since is not None:
            conds.append(inc.c.opened_at >= since)
        if until is not None:
            conds.append(inc.c.opened_at < until)
        for cnd in conds:
            q = q.where(cnd)
        with self.engine.connect() as c:
            total = c.execute(select(func.count()).select_from(q.subquery())).scalar() or 0
            rows = c.execute(q.order_by(inc.c.opened_at.desc(), inc.c.incident_id).limit(limit).offset(offset))
            page = [self._incident_row(dict(r)) for r in rows.mappings()]
        return total, page

    @staticmethod
    def _incident_row(r: Dict[str, Any], full: bool = False) -> Dict[str, Any]:
        latest = orjson.loads(r.pop("latest") or "{}")
        for k in ("event_time", "opened_at", "updated_at", "resolved_at", "feedback_at"):
            r[k] = iso(r[k]) if r.get(k) is not None else None
        if full:
            r["evidence"] = latest.get("evidence") or {}
            r["root_cause_hints"] = latest.get("root_cause_hints") or []
            r["similar_incidents"] = latest.get("similar_incidents") or []
            r["observed"], r["expected"], r["score"] = latest.get("observed"), latest.get("expected"), latest.get(
                "score")
        return r

    def get_incident(self, incident_id: str) -> Optional[Dict[str, Any]]:
        """The incident with its alerts (oldest first), evidence, hints and similar incidents; None if unknown."""
        inc, al = self.t["incidents"], self.t["alerts"]
        with self.engine.connect() as c:
            row = c.execute(select(inc).where(inc.c.incident_id == incident_id)).mappings().first()
            if row is None:
                return None
            alerts = [orjson.loads(b) for (b,) in c.execute(
                select(al.c.body).where(al.c.incident_id == incident_id).order_by(al.c.seq))]
        out = self._incident_row(dict(row), full=True)
        out["alerts"] = alerts
        return out

    # -- silences and feedback ------------------------------------------------------------

    def add_silence(self, sid: str, matchers: List[Dict[str, str]], starts_at: float, ends_at: float,
                    comment: str, created_by: str) -> Dict[str, Any]:
        s = self.t["silences"]
        row = {"id": sid, "matchers": _dumps(matchers), "starts_at": starts_at, "ends_at": ends_at,
               "comment": comment, "created_by": created_by, "created_at": time.time(), "expired_at": None}
        with self.engine.begin() as c:
            self._lock_audit(c)
            c.execute(s.insert().values(**row))
            self._audit(c, [(created_by, "silence.create", sid, {
                "matchers": matchers, "starts_at": starts_at, "ends_at": ends_at, "comment": comment})])
        return self._silence_row(row)

    def expire_silence(self, sid: str, who: str) -> bool:
        s = self.t["silences"]
        now = time.time()
        with self.engine.begin() as c:
            self._lock_audit(c)
            res = c.execute(update(s).where(s.c.id == sid, s.c.expired_at.is_(None)).values(expired_at=now))
            if res.rowcount != 1:
                return False
            self._audit(c, [(who, "silence.expire", sid, {})])
        return True

    def get_silence(self, sid: str) -> Optional[Dict[str, Any]]:
        s = self.t["silences"]
        with self.engine.connect() as c:
            row = c.execute(select(s).where(s.c.id == sid)).mappings().first()
        return None if row is None else self._silence_row(dict(row))

    def list_silences(self, active_only: bool = False) -> List[Dict[str, Any]]:
        s = self.t["silences"]
        q = select(s).order_by(s.c.created_at.desc())
        if active_only:
            q = q.where(s.c.expired_at.is_(None), s.c.ends_at > time.time())
        with self.engine.connect() as c:
            return [self._silence_row(dict(r)) for r in c.execute(q).mappings()]

    @staticmethod
    def _silence_row(r: Dict[str, Any]) -> Dict[str, Any]:
        now = time.time()
        out = dict(r)
        out["matchers"] = orjson.loads(r["matchers"])
        for k in ("starts_at", "ends_at", "created_at", "expired_at"):
            out[k] = iso(r[k]) if r.get(k) is not None else None
        if r.get("expired_at") is not None:
            out["state"] = "expired"
        elif r["ends_at"] <= now:
            out["state"] = "expired"
        elif r["starts_at"] > now:
            out["state"] = "pending"
        else:
            out["state"] = "active"
        return out

    def add_feedback(self, incident_id: str, alert_id: Optional[str], label: str, comment: str,
                     who: str) -> None:
        fb, inc = self.t["feedback"], self.t["incidents"]
        now = time.time()
        with self.engine.begin() as c:
            self._lock_audit(c)
            c.execute(fb.insert().values(incident_id=incident_id, alert_id=alert_id, label=label, comment=comment,
                                         who=who, created_at=now))
            c.execute(update(inc).where(inc.c.incident_id == incident_id).values(
                feedback_label=label, feedback_comment=comment, feedback_by=who, feedback_at=now))
            self._audit(c, [(who, "feedback." + label, incident_id, {"alert_id": alert_id, "comment": comment})])

    def ping(self) -> None:
        with self.engine.connect() as c:
            c.execute(select(1))


def verify_audit(store: Store, expect_head: Optional[str] = None, batch: int = 5000) -> Tuple[bool, int, str]:
    """``(ok, entries checked, message)``: walk the chain from the first entry.

    A changed entry no longer matches its hash; a removed one leaves a gap in
    ``seq`` and breaks the next entry's ``prev_hash``; a reordered one breaks
    both (``seq`` is in the hash). Removing the newest entries is found only
    against a head hash noted earlier: ``expect_head`` must be the hash of
    some entry of the chain.
    """
    prev, expected_seq, n = GENESIS, 1, 0
    after = 0
    seen_head = expect_head is None
    while True:
        rows = store.audit_entries(after, batch)
        if not rows:
            break
        for r in rows:
            if r["seq"] != expected_seq:
                return False, n, f"entry {expected_seq} is missing (next entry is {r['seq']})"
            if r["prev_hash"] != prev:
                return False, n, f"entry {r['seq']}: prev_hash does not match entry {r['seq'] - 1}"
            h = entry_hash(prev, r["seq"], r["at"], r["actor"], r["action"], r["subject"], r["detail"])
            if h != r["hash"]:
                return False, n, f"entry {r['seq']} ({r['action']} {r['subject']}) was changed: its hash does not match"
            prev, expected_seq, n = h, expected_seq + 1, n + 1
            after = r["seq"]
            seen_head = seen_head or h == expect_head
    if not seen_head:
        return False, n, f"no entry has the expected head hash {expect_head}: entries were removed from the end"
    return True, n, f"{n} entries, chain intact; head {prev}"

