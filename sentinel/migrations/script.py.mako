"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade(table_prefix: str = "") -> None:
    ${upgrades if upgrades else "pass"}


def downgrade(table_prefix: str = "") -> None:
    ${downgrades if downgrades else "pass"}
