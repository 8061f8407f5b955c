"""watcher: the audit log (every message of the stream) and the phases of each generation.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("workspace_uid", sa.String(64), nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=False),
        sa.Column("causation_id", sa.String(36), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", JSONB, nullable=False),
        schema="watcher",
    )
    op.create_index(
        "audit_events_workspace",
        "audit_events",
        ["namespace", "name", "occurred_at"],
        schema="watcher",
    )
    op.create_index("audit_events_occurred_at", "audit_events", ["occurred_at"], schema="watcher")
    op.create_table(
        "audit_phases",
        sa.Column("workspace_uid", sa.String(64), primary_key=True),
        sa.Column("generation", sa.BigInteger, primary_key=True),
        sa.Column("phase", sa.String(32), primary_key=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        schema="watcher",
    )
    op.create_index(
        "audit_phases_workspace", "audit_phases", ["namespace", "name"], schema="watcher"
    )


def downgrade() -> None:
    op.drop_table("audit_phases", schema="watcher")
    op.drop_table("audit_events", schema="watcher")
