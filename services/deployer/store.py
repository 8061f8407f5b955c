"""The deployer's state in Postgres: per workspace, its latest plan, the nodes it got, and what
was last published; plus the generation guard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.deployer.tables import handled_generations, targets
from shared.db import Database, claim_generation
from shared.events import WorkspaceRef
from shared.plan import Plan


@dataclass(frozen=True, slots=True)
class Stored:
    ref: WorkspaceRef
    plan: Plan | None
    nodes: tuple[str, ...] | None
    state: str  # active | deleting
    published_key: str | None


class Locked:
    """A target row held with ``SELECT ... FOR UPDATE`` until the block ends: replicas working on
    the same workspace take turns."""

    def __init__(self, session: AsyncSession, stored: Stored | None) -> None:
        self.session = session
        self.stored = stored

    async def record(self, published_key: str, now: datetime) -> None:
        if self.stored is None:
            return
        await self.session.execute(
            sa.update(targets)
            .where(targets.c.workspace_uid == self.stored.ref.uid)
            .values(published_key=published_key, updated_at=now)
        )


class DeployerStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def save_plan(self, ref: WorkspaceRef, plan: Plan, now: datetime) -> bool:
        """Store the plan of ``ref.generation``; False (nothing stored) when a newer generation
        was handled already."""
        insert = pg_insert(targets).values(
            **_identity(ref),
            generation=ref.generation,
            plan=plan.model_dump(mode="json"),
            nodes=None,
            nodes_generation=0,
            state="active",
            updated_at=now,
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[targets.c.workspace_uid],
            set_={
                "generation": insert.excluded.generation,
                "plan": insert.excluded.plan,
                "updated_at": insert.excluded.updated_at,
            },
            where=sa.and_(
                targets.c.generation <= insert.excluded.generation, targets.c.state == "active"
            ),
        )
        async with self.db.sessions.begin() as session:
            if not await claim_generation(session, handled_generations, ref, now):
                return False
            await session.execute(stmt)
        return True

    async def save_nodes(self, ref: WorkspaceRef, nodes: tuple[str, ...], now: datetime) -> None:
        """Record the nodes the provisioner reported, unless newer ones are there already (the
        ResourcesReady of a generation may arrive before or after its PlanReady)."""
        insert = pg_insert(targets).values(
            **_identity(ref),
            generation=0,
            plan=None,
            nodes=list(nodes),
            nodes_generation=ref.generation,
            state="active",
            updated_at=now,
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[targets.c.workspace_uid],
            set_={
                "nodes": insert.excluded.nodes,
                "nodes_generation": insert.excluded.nodes_generation,
                "updated_at": insert.excluded.updated_at,
            },
            where=targets.c.nodes_generation <= insert.excluded.nodes_generation,
        )
        async with self.db.sessions.begin() as session:
            await session.execute(stmt)

    async def uid_for(self, namespace: str, name: str) -> str | None:
        """The active workspace of that name, if the deployer knows one."""
        async with self.db.sessions() as session:
            row = (
                await session.execute(
                    sa.select(targets.c.workspace_uid).where(
                        targets.c.namespace == namespace,
                        targets.c.name == name,
                        targets.c.state == "active",
                        targets.c.plan.is_not(None),
                    )
                )
            ).first()
        return None if row is None else str(row.workspace_uid)

    async def active(self) -> list[str]:
        async with self.db.sessions() as session:
            rows = (
                await session.execute(
                    sa.select(targets.c.workspace_uid).where(
                        targets.c.state == "active", targets.c.plan.is_not(None)
                    )
                )
            ).all()
        return [str(r.workspace_uid) for r in rows]

    @asynccontextmanager
    async def locked(self, uid: str) -> AsyncIterator[Locked]:
        async with self.db.locked_row(targets, uid) as (session, row):
            yield Locked(session, None if row is None else _stored(row))

    async def mark_deleting(self, ref: WorkspaceRef, now: datetime) -> None:
        """From now on the watches and resyncs leave the workspace alone."""
        insert = pg_insert(targets).values(
            **_identity(ref),
            generation=ref.generation,
            plan=None,
            nodes=None,
            nodes_generation=0,
            state="deleting",
            updated_at=now,
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[targets.c.workspace_uid],
            set_={"state": "deleting", "updated_at": insert.excluded.updated_at},
        )
        async with self.db.sessions.begin() as session:
            await session.execute(stmt)


def _identity(ref: WorkspaceRef) -> dict[str, Any]:
    return {"workspace_uid": ref.uid, "namespace": ref.namespace, "name": ref.name}


def _stored(row: Any) -> Stored:
    return Stored(
        ref=WorkspaceRef(
            uid=row.workspace_uid,
            namespace=row.namespace,
            name=row.name,
            generation=row.generation,
        ),
        plan=None if row.plan is None else Plan.model_validate(row.plan),
        nodes=None if row.nodes is None else tuple(row.nodes),
        state=row.state,
        published_key=row.published_key,
    )
