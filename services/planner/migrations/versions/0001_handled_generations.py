"""planner: the per-workspace generation guard.

Revision ID: 0001
Revises:
"""

from shared.migration_ops import create_handled_generations_v1, drop_handled_generations_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_handled_generations_v1("planner")


def downgrade() -> None:
    drop_handled_generations_v1("planner")
