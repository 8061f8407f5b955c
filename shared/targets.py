"""A workload service's state in Postgres (the deployer's and the tuner's, each in its own
schema): per workspace, its latest plan, the nodes the provisioner reported, and what was last
published; plus the generation guard. ``targets_table`` defines the table; ``TargetStore`` reads
and writes it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import Database, claim_generation
from shared.events import WorkspaceRef
from shared.plan import Plan


def targets_table(metadata: sa.MetaData) -> sa.Table:
    """Each workspace's latest plan, the nodes the provisioner reported for it, and what was last
    published: the watches and the resync re-render and re-assess every target from here."""
    return sa.Table(
        "targets",
        metadata,
        sa.Column("workspace_uid", sa.String(64), primary_key=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("plan", JSONB(none_as_null=True), nullable=True),  # None until PlanReady
        sa.Column("nodes", JSONB(none_as_null=True), nullable=True),  # None until ResourcesReady
        sa.Column("nodes_generation", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),  # active | deleting
        # sha256 of the last published outcome: unchanged assessments stay quiet.
        sa.Column("published_key", sa.String(64), nullable=True),
        # The service's own word for the last published outcome (ready, running, failed, ...).
        sa.Column("phase", sa.String(16), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index("targets_by_name", "namespace", "name"),
    )


@dataclass(frozen=True, slots=True)
class Stored:
    ref: WorkspaceRef
    plan: Plan | None
    nodes: tuple[str, ...] | None
    state: str  # active | deleting
    published_key: str | None
    phase: str | None
    updated_at: datetime


class Locked:
    """A target row held with ``SELECT ... FOR UPDATE`` until the block ends: replicas working on
    the same workspace take turns."""

    def __init__(self, session: AsyncSession, table: sa.Table, stored: Stored | None) -> None:
        self.session = session
        self.table = table
        self.stored = stored

    async def record(self, published_key: str, now: datetime, phase: str | None = None) -> None:
        if self.stored is None:
            return
        await self.session.execute(
            sa.update(self.table)
            .where(self.table.c.workspace_uid == self.stored.ref.uid)
            .values(published_key=published_key, phase=phase, updated_at=now)
        )


class TargetStore:
    """``targets``: the service's ``targets_table``; ``handled``: its generation guard."""

    def __init__(self, db: Database, targets: sa.Table, handled: sa.Table) -> None:
        self.db = db
        self.targets = targets
        self.handled = handled

    async def save_plan(self, ref: WorkspaceRef, plan: Plan, now: datetime) -> bool:
        """Store the plan of ``ref.generation``; False (nothing stored) when a newer generation
        was handled already."""
        insert = pg_insert(self.targets).values(
            **_identity(ref),
            generation=ref.generation,
            plan=plan.model_dump(mode="json"),
            nodes=None,
            nodes_generation=0,
            state="active",
            updated_at=now,
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[self.targets.c.workspace_uid],
            set_={
                "generation": insert.excluded.generation,
                "plan": insert.excluded.plan,
                "updated_at": insert.excluded.updated_at,
            },
            where=sa.and_(
                self.targets.c.generation <= insert.excluded.generation,
                self.targets.c.state == "active",
            ),
        )
        async with self.db.sessions.begin() as session:
            if not await claim_generation(session, self.handled, ref, now):
                return False
            await session.execute(stmt)
        return True

    async def save_nodes(self, ref: WorkspaceRef, nodes: tuple[str, ...], now: datetime) -> None:
        """Record the nodes the provisioner reported, unless newer ones are there already (the
        ResourcesReady of a generation may arrive before or after its PlanReady)."""
        insert = pg_insert(self.targets).values(
            **_identity(ref),
            generation=0,
            plan=None,
            nodes=list(nodes),
            nodes_generation=ref.generation,
            state="active",
            updated_at=now,
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[self.targets.c.workspace_uid],
            set_={
                "nodes": insert.excluded.nodes,
                "nodes_generation": insert.excluded.nodes_generation,
                "updated_at": insert.excluded.updated_at,
            },
            where=self.targets.c.nodes_generation <= insert.excluded.nodes_generation,
        )
        async with self.db.sessions.begin() as session:
            await session.execute(stmt)

    async def uid_for(self, namespace: str, name: str) -> str | None:
        """The active workspace of that name, if the deployer knows one."""
        async with self.db.sessions() as session:
            row = (
                await session.execute(
                    sa.select(self.targets.c.workspace_uid).where(
                        self.targets.c.namespace == namespace,
                        self.targets.c.name == name,
                        self.targets.c.state == "active",
                        self.targets.c.plan.is_not(None),
                    )
                )
            ).first()
        return None if row is None else str(row.workspace_uid)

    async def active(self) -> list[str]:
        async with self.db.sessions() as session:
            rows = (
                await session.execute(
                    sa.select(self.targets.c.workspace_uid).where(
                        self.targets.c.state == "active", self.targets.c.plan.is_not(None)
                    )
                )
            ).all()
        return [str(r.workspace_uid) for r in rows]

    @asynccontextmanager
    async def locked(self, uid: str) -> AsyncIterator[Locked]:
        async with self.db.locked_row(self.targets, uid) as (session, row):
            yield Locked(session, self.targets, None if row is None else _stored(row))

    async def mark_deleting(self, ref: WorkspaceRef, now: datetime) -> None:
        """From now on the watches and resyncs leave the workspace alone."""
        insert = pg_insert(self.targets).values(
            **_identity(ref),
            generation=ref.generation,
            plan=None,
            nodes=None,
            nodes_generation=0,
            state="deleting",
            updated_at=now,
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[self.targets.c.workspace_uid],
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
        phase=row.phase,
        updated_at=row.updated_at,
    )
