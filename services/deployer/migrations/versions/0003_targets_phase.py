"""deployer: the phase of the last published outcome, next to its key.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("targets", sa.Column("phase", sa.String(16), nullable=True), schema="deployer")


def downgrade() -> None:
    op.drop_column("targets", "phase", schema="deployer")
