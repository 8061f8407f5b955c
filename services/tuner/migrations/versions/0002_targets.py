"""tuner: each tuning workspace's plan, nodes and last published outcome.

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
        "targets",
        sa.Column("workspace_uid", sa.String(64), primary_key=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("plan", JSONB, nullable=True),
        sa.Column("nodes", JSONB, nullable=True),
        sa.Column("nodes_generation", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("published_key", sa.String(64), nullable=True),
        sa.Column("phase", sa.String(16), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema="tuner",
    )
    op.create_index("targets_by_name", "targets", ["namespace", "name"], schema="tuner")


def downgrade() -> None:
    op.drop_table("targets", schema="tuner")
