"""Tables of the watcher service, in its own schema `watcher`."""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from shared.db import handled_generations_table, service_metadata

metadata = service_metadata("watcher")
handled_generations = handled_generations_table(metadata)

# One row per Workspace the watcher has announced: what it last published, and its deletion.
workspaces = sa.Table(
    "workspaces",
    metadata,
    sa.Column("workspace_uid", sa.String(64), primary_key=True),
    sa.Column("namespace", sa.String(63), nullable=False),
    sa.Column("name", sa.String(253), nullable=False),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("spec_hash", sa.String(64), nullable=False),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    # services that acted for the workspace (learned from their events), and those that cleaned up
    sa.Column("involved", sa.ARRAY(sa.String(32)), nullable=False, server_default="{}"),
    sa.Column("cleaned", sa.ARRAY(sa.String(32)), nullable=False, server_default="{}"),
    sa.Column("deleting_since", sa.DateTime(timezone=True), nullable=True),
)

# Every message of the stream (the audit log), and when each generation reached each phase.
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # the event id, or derived for the rest
    sa.Column("sequence", sa.BigInteger, nullable=False),  # the stream sequence
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
    sa.Index("audit_events_workspace", "namespace", "name", "occurred_at"),
    sa.Index("audit_events_occurred_at", "occurred_at"),
)

audit_phases = sa.Table(
    "audit_phases",
    metadata,
    sa.Column("workspace_uid", sa.String(64), primary_key=True),
    sa.Column("generation", sa.BigInteger, primary_key=True),
    sa.Column("phase", sa.String(32), primary_key=True),
    sa.Column("namespace", sa.String(63), nullable=False),
    sa.Column("name", sa.String(253), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Index("audit_phases_workspace", "namespace", "name"),
)
