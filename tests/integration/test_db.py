"""The database against a real PostgreSQL: every service's migrations and the generation guard."""

from __future__ import annotations

import asyncio
import importlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from kaiten import migrate
from localdev import infra
from services.planner.tables import handled_generations
from shared.db import Database, claim_generation
from shared.events import WorkspaceRef
from shared.migrations import current_revision
from shared.settings import SERVICE_NAMES


@pytest.fixture
async def scratch_url(postgres_server_url: str) -> AsyncIterator[str]:
    """An empty database of this test's own."""
    name = f"kaiten_scratch_{uuid.uuid4().hex[:10]}"
    url = await infra.create_database(postgres_server_url, name)
    yield url
    await infra.drop_database(postgres_server_url, name)


async def tables_by_schema(url: str) -> dict[str, set[str]]:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_schema = ANY(:schemas)"
                ),
                {"schemas": list(SERVICE_NAMES)},
            )
            found: dict[str, set[str]] = {}
            for schema, table in rows:
                found.setdefault(schema, set()).add(table)
            return found
    finally:
        await db.close()


def declared_tables(service: str) -> set[str]:
    """The tables a service's models declare: the migrations must create exactly these."""
    metadata = importlib.import_module(f"services.{service}.tables").metadata
    return {table.name for table in metadata.tables.values()}


def head_revision(service: str) -> str:
    script = ScriptDirectory(str(migrate.script_location(service)))
    return str(script.get_current_head())


async def test_alembic_upgrade_downgrade_round_trip_for_every_service(scratch_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade_all, scratch_url)
    after_upgrade = await tables_by_schema(scratch_url)
    assert after_upgrade == {s: {"alembic_version"} | declared_tables(s) for s in SERVICE_NAMES}
    for service in SERVICE_NAMES:
        assert await current_revision(service, scratch_url) == head_revision(service)

    await asyncio.to_thread(migrate.downgrade_all, scratch_url, "base")
    after_downgrade = await tables_by_schema(scratch_url)
    assert after_downgrade == {s: {"alembic_version"} for s in SERVICE_NAMES}
    for service in SERVICE_NAMES:
        assert await current_revision(service, scratch_url) is None

    await asyncio.to_thread(migrate.upgrade_all, scratch_url)
    assert await tables_by_schema(scratch_url) == after_upgrade


async def test_one_service_migrates_without_touching_the_others(scratch_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade_all, scratch_url, ("planner",))
    assert set(await tables_by_schema(scratch_url)) == {"planner"}


def test_unknown_service_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="choose one of watcher, planner"):
        migrate.script_location("scheduler")


async def stored_generation(db: Database, uid: str) -> int | None:
    async with db.sessions() as session:
        return await session.scalar(
            sa.select(handled_generations.c.generation).where(
                handled_generations.c.workspace_uid == uid
            )
        )


async def test_generation_guard_only_moves_forward(database_url: str) -> None:
    db = Database(database_url)
    uid = str(uuid.uuid4())
    now = datetime.now(UTC)

    def ref(generation: int) -> WorkspaceRef:
        return WorkspaceRef(uid=uid, namespace="default", name="ws", generation=generation)

    async def claim(generation: int) -> bool:
        async with db.sessions.begin() as session:
            return await claim_generation(session, handled_generations, ref(generation), now)

    try:
        assert await claim(2) is True
        assert await claim(2) is True  # the same generation again: level-triggered, harmless
        assert await claim(1) is False  # older: dropped
        assert await claim(3) is True
        stored = await stored_generation(db, uid)
        assert stored == 3
    finally:
        await db.close()


async def test_concurrent_claims_leave_the_highest_generation(database_url: str) -> None:
    db = Database(database_url, pool_size=10)
    uid = str(uuid.uuid4())
    now = datetime.now(UTC)

    async def claim(generation: int) -> bool:
        ref = WorkspaceRef(uid=uid, namespace="default", name="race", generation=generation)
        async with db.sessions.begin() as session:
            return await claim_generation(session, handled_generations, ref, now)

    try:
        await asyncio.gather(*(claim(g) for g in [5, 1, 9, 3, 7, 2, 8, 4, 6, 10]))
        assert await claim(9) is False
        stored = await stored_generation(db, uid)
        assert stored == 10
    finally:
        await db.close()


async def test_ping_reports_an_unreachable_database() -> None:
    port = infra.free_port()
    db = Database(f"postgresql://postgres@127.0.0.1:{port}/nothing")
    try:
        assert await db.ping() is False
    finally:
        await db.close()
