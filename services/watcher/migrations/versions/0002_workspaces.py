"""watcher: the Workspaces it announced, the services involved, and deletions in progress.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("workspace_uid", sa.String(64), primary_key=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("involved", sa.ARRAY(sa.String(32)), nullable=False, server_default="{}"),
        sa.Column("cleaned", sa.ARRAY(sa.String(32)), nullable=False, server_default="{}"),
        sa.Column("deleting_since", sa.DateTime(timezone=True), nullable=True),
        schema="watcher",
    )


def downgrade() -> None:
    op.drop_table("workspaces", schema="watcher")
