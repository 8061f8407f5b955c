"""Schema changes that several services' migrations share. Each function is frozen once a
migration calls it: change a table with a new function and a new revision, never by editing."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def create_handled_generations_v1(schema: str) -> None:
    op.create_table(
        "handled_generations",
        sa.Column("workspace_uid", sa.String(64), primary_key=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema=schema,
    )


def drop_handled_generations_v1(schema: str) -> None:
    op.drop_table("handled_generations", schema=schema)
