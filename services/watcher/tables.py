"""Tables of the watcher service, in its own schema `watcher`."""

import sqlalchemy as sa

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
