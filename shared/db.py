"""The database: an async SQLAlchemy engine built at start-up (never at import), and the
per-workspace generation guard every service uses to drop work for an older generation.

Each service owns one Postgres schema named after it and never reads another's tables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.events import WorkspaceRef
from shared.settings import async_database_url


class Database:
    """An engine and its session factory. ``close()`` releases the pool."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        # No pre-ping: with asyncpg it costs three round trips (BEGIN, ";", ROLLBACK) per
        # checkout. After a PostgreSQL restart the first use of a stale connection fails like
        # any database error (the event or pass is retried) and SQLAlchemy, seeing a
        # disconnect, replaces every pooled connection older than it.
        self.engine: AsyncEngine = create_async_engine(async_database_url(url), pool_size=pool_size)
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    async def ping(self) -> bool:
        """True when a connection answers ``SELECT 1``."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (OSError, sa.exc.SQLAlchemyError):
            return False
        return True

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def locked_row(
        self, table: sa.Table, workspace_uid: str
    ) -> AsyncIterator[tuple[AsyncSession, sa.Row[Any] | None]]:
        """One workspace's row of ``table`` held with ``SELECT ... FOR UPDATE`` in a transaction
        until the block ends (None when there is none): replicas working on the same workspace
        take turns."""
        async with self.sessions.begin() as session:
            row = (
                await session.execute(
                    sa.select(table).where(table.c.workspace_uid == workspace_uid).with_for_update()
                )
            ).first()
            yield session, row


def service_metadata(service: str) -> sa.MetaData:
    """The metadata of ``service``'s tables, all in the Postgres schema named after it."""
    return sa.MetaData(schema=service)


def handled_generations_table(metadata: sa.MetaData) -> sa.Table:
    """The highest generation of each workspace a service has acted on."""
    return sa.Table(
        "handled_generations",
        metadata,
        sa.Column("workspace_uid", sa.String(64), primary_key=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


async def claim_generation(
    session: AsyncSession, table: sa.Table, ref: WorkspaceRef, now: datetime
) -> bool:
    """Record that the service acts on ``ref.generation``. Returns False when a newer generation
    was already handled (the caller drops the event). Atomic under concurrent replicas: the
    upsert only moves the generation forward."""
    insert = pg_insert(table).values(
        workspace_uid=ref.uid,
        namespace=ref.namespace,
        name=ref.name,
        generation=ref.generation,
        updated_at=now,
    )
    stmt = insert.on_conflict_do_update(
        index_elements=[table.c.workspace_uid],
        set_={"generation": insert.excluded.generation, "updated_at": insert.excluded.updated_at},
        where=table.c.generation <= insert.excluded.generation,
    ).returning(table.c.generation)
    return (await session.execute(stmt)).first() is not None
