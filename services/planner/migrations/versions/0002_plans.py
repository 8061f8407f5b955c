"""planner: one plan (or rejection) per Workspace generation.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("workspace_uid", sa.String(64), primary_key=True),
        sa.Column("generation", sa.BigInteger, primary_key=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("inputs_hash", sa.String(64), nullable=False),
        sa.Column("events", JSONB, nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        schema="planner",
    )


def downgrade() -> None:
    op.drop_table("plans", schema="planner")
