"""Alembic, one environment per service: each service's ``migrations/`` folder has its own
``env.py`` (which calls ``run_env``), its own versions, and its version table inside its own
schema. ``kaiten migrate`` runs them all through ``upgrade``.

Alembic's async env runs ``asyncio.run``; from async code, call ``upgrade``/``downgrade`` through
``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa
from alembic import command, context
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.settings import async_database_url


def alembic_config(script_location: Path, schema: str, url: str) -> Config:
    """A Config for one service's migrations, built in code (no alembic.ini)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", async_database_url(url).replace("%", "%%"))
    cfg.attributes["schema"] = schema
    return cfg


def upgrade(script_location: Path, schema: str, url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(script_location, schema, url), revision)


def downgrade(script_location: Path, schema: str, url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(script_location, schema, url), revision)


async def current_revision(schema: str, url: str) -> str | None:
    """The revision ``schema`` is at, or None before its first migration."""
    engine = create_async_engine(async_database_url(url))
    try:
        async with engine.connect() as conn:
            exists = await conn.scalar(
                sa.text("SELECT to_regclass(:t)"), {"t": f'"{schema}".alembic_version'}
            )
            if exists is None:
                return None
            versions = sa.table("alembic_version", sa.column("version_num"), schema=schema)
            return await conn.scalar(sa.select(versions.c.version_num))
    finally:
        await engine.dispose()


def run_env(metadata: sa.MetaData) -> None:
    """The body of every service's ``env.py``: migrate the schema in ``metadata.schema``."""
    schema = context.config.attributes.get("schema") or metadata.schema
    if not schema:
        raise RuntimeError("a service's metadata must name its schema")
    if context.is_offline_mode():
        context.configure(
            url=context.config.get_main_option("sqlalchemy.url"),
            target_metadata=metadata,
            version_table_schema=schema,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(metadata, schema))


async def _run_online(metadata: sa.MetaData, schema: str) -> None:
    engine = create_async_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_migrate, metadata, schema)
    finally:
        await engine.dispose()


def _migrate(conn: Connection, metadata: sa.MetaData, schema: str) -> None:
    conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
    conn.commit()
    context.configure(connection=conn, target_metadata=metadata, version_table_schema=schema)
    with context.begin_transaction():
        context.run_migrations()
