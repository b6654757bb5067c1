"""The incident store's first tables: incidents, alerts, silences, feedback, audit.

Revision ID: 0001
Revises:
"""

from typing import Dict

from alembic import op
from sqlalchemy import Column, Double, Index, Integer, MetaData, String, Table, Text

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _schema(prefix: str) -> MetaData:
    """The tables as revision 0001 made them (a frozen copy: later revisions change them with op.*)."""
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
    return md


def upgrade(table_prefix: str = "") -> None:
    _schema(table_prefix).create_all(op.get_bind(), checkfirst=True)


def downgrade(table_prefix: str = "") -> None:
    _schema(table_prefix).drop_all(op.get_bind(), checkfirst=True)
