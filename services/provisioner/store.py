"""The provisioner's state in Postgres: one target per workspace (what its latest plan needs,
what was last published, its worker nodes) and the generation guard."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.provisioner.nodes import Target
from services.provisioner.tables import handled_generations, targets
from shared.db import Database, claim_generation
from shared.events import WorkspaceRef
from shared.plan import NodeSelection


class WorkspaceKey(NamedTuple):
    uid: str
    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Stored:
    target: Target
    state: str  # active | deleting
    worker_nodes: tuple[str, ...]
    published_key: str | None
    updated_at: datetime


class Locked:
    """A target row held with ``SELECT ... FOR UPDATE`` until the block ends: replicas
    assessing the same workspace take turns."""

    def __init__(self, session: AsyncSession, stored: Stored | None) -> None:
        self.session = session
        self.stored = stored

    async def record(
        self, published_key: str, worker_nodes: tuple[str, ...], now: datetime
    ) -> None:
        if self.stored is None:
            return
        await self.session.execute(
            sa.update(targets)
            .where(targets.c.workspace_uid == self.stored.target.ref.uid)
            .values(published_key=published_key, worker_nodes=list(worker_nodes), updated_at=now)
        )


class ProvisionerStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, ref: WorkspaceRef, now: datetime) -> bool:
        """False when a newer generation of the workspace was already handled."""
        async with self.db.sessions.begin() as session:
            return await claim_generation(session, handled_generations, ref, now)

    async def save(self, target: Target, now: datetime) -> None:
        """Store ``target`` unless a newer generation's is there; a new generation re-opens a
        target that was being deleted only if it is newer."""
        ref = target.ref
        insert = pg_insert(targets).values(
            workspace_uid=ref.uid,
            namespace=ref.namespace,
            name=ref.name,
            generation=ref.generation,
            target=_target_json(target),
            state="active",
            worker_nodes=[],
            updated_at=now,
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[targets.c.workspace_uid],
            set_={
                "generation": insert.excluded.generation,
                "target": insert.excluded.target,
                "updated_at": insert.excluded.updated_at,
            },
            where=sa.and_(
                targets.c.generation <= insert.excluded.generation, targets.c.state == "active"
            ),
        )
        async with self.db.sessions.begin() as session:
            await session.execute(stmt)

    async def active(self, only: Collection[tuple[str, str]] | None = None) -> list[WorkspaceKey]:
        """The active workspaces (of ``only``, by namespace and name) as (uid, namespace, name):
        a pass over a few of thousands reads only those rows, and no target is decoded."""
        query = sa.select(targets.c.workspace_uid, targets.c.namespace, targets.c.name).where(
            targets.c.state == "active"
        )
        if only is not None:
            if not only:
                return []
            query = query.where(sa.tuple_(targets.c.namespace, targets.c.name).in_(list(only)))
        async with self.db.sessions() as session:
            rows = (await session.execute(query)).all()
        return [WorkspaceKey(r.workspace_uid, r.namespace, r.name) for r in rows]

    @asynccontextmanager
    async def locked(self, uid: str) -> AsyncIterator[Locked]:
        async with self.db.locked_row(targets, uid) as (session, row):
            yield Locked(session, None if row is None else _stored(row))

    async def mark_deleting(self, ref: WorkspaceRef, now: datetime) -> None:
        """From now on the watches leave the workspace alone; kept until deleted for audit."""
        insert = pg_insert(targets).values(
            workspace_uid=ref.uid,
            namespace=ref.namespace,
            name=ref.name,
            generation=ref.generation,
            target={},
            state="deleting",
            worker_nodes=[],
            updated_at=now,
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[targets.c.workspace_uid],
            set_={"state": "deleting", "updated_at": insert.excluded.updated_at},
        )
        async with self.db.sessions.begin() as session:
            await session.execute(stmt)


def _target_json(target: Target) -> dict[str, Any]:
    return {
        "instance_type": target.instance_type,
        "node_count": target.node_count,
        "selection": target.selection.model_dump(mode="json"),
        "disk_gib": target.disk_gib,
        "nvidia": target.nvidia,
    }


def _stored(row: Any) -> Stored:
    data = dict(row.target or {})
    ref = WorkspaceRef(
        uid=row.workspace_uid, namespace=row.namespace, name=row.name, generation=row.generation
    )
    target = Target(
        ref=ref,
        instance_type=data.get("instance_type"),
        node_count=int(data.get("node_count") or 1),
        selection=NodeSelection.model_validate(data.get("selection") or {}),
        disk_gib=int(data.get("disk_gib") or 1024),
        nvidia=bool(data.get("nvidia")),
    )
    return Stored(
        target=target,
        state=row.state,
        worker_nodes=tuple(row.worker_nodes or ()),
        published_key=row.published_key,
        updated_at=row.updated_at,
    )
