"""The watcher's own state in Postgres: what it last announced per Workspace (so a restart does
not re-announce unchanged ones), which services acted for it, and deletions in progress."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.watcher.tables import workspaces
from shared.db import Database
from shared.events import WorkspaceRef

# Services that create objects for a workspace and answer WorkspaceDeleting with CleanupDone.
CLEANING_SERVICES = frozenset({"provisioner", "deployer", "tuner"})


@dataclass(frozen=True, slots=True)
class Seen:
    generation: int
    spec_hash: str
    involved: frozenset[str]
    cleaned: frozenset[str]
    deleting_since: datetime | None


class WatcherStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # (uid, service) pairs this process has recorded as involved: every condition report
        # names its sender, and only the first per pair changes the row, so the rest skip the
        # database round trip. Another replica or a restart records again (it is idempotent).
        self._involved: set[tuple[str, str]] = set()

    async def get(self, uid: str) -> Seen | None:
        async with self.db.sessions() as session:
            row = (
                await session.execute(
                    sa.select(workspaces).where(workspaces.c.workspace_uid == uid)
                )
            ).first()
        if row is None:
            return None
        return Seen(
            row.generation,
            row.spec_hash,
            frozenset(row.involved),
            frozenset(row.cleaned),
            row.deleting_since,
        )

    async def announced_generation(self, uid: str) -> int:
        """The last generation announced for ``uid`` (0: never)."""
        async with self.db.sessions() as session:
            value = await session.scalar(
                sa.select(workspaces.c.generation).where(workspaces.c.workspace_uid == uid)
            )
        return int(value or 0)

    async def announce(self, ref: WorkspaceRef, spec_hash: str, now: datetime) -> bool:
        """Record that ``ref.generation`` was announced: call it after publishing, so a crash in
        between publishes again instead of losing the event. True when it moved forward."""
        insert = pg_insert(workspaces).values(
            workspace_uid=ref.uid,
            namespace=ref.namespace,
            name=ref.name,
            generation=ref.generation,
            spec_hash=spec_hash,
            observed_at=now,
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[workspaces.c.workspace_uid],
            set_={
                "generation": insert.excluded.generation,
                "spec_hash": insert.excluded.spec_hash,
                "observed_at": insert.excluded.observed_at,
            },
            where=workspaces.c.generation < insert.excluded.generation,
        ).returning(workspaces.c.workspace_uid)
        async with self.db.sessions.begin() as session:
            return (await session.execute(stmt)).first() is not None

    async def add_involved(self, ref: WorkspaceRef, service: str, now: datetime) -> None:
        if service not in CLEANING_SERVICES or (ref.uid, service) in self._involved:
            return
        await self._append(ref, "involved", service, now)
        self._involved.add((ref.uid, service))

    async def add_cleaned(self, ref: WorkspaceRef, service: str, now: datetime) -> None:
        await self._append(ref, "cleaned", service, now)

    async def _append(self, ref: WorkspaceRef, column: str, service: str, now: datetime) -> None:
        col = workspaces.c[column]
        insert = pg_insert(workspaces).values(
            workspace_uid=ref.uid,
            namespace=ref.namespace,
            name=ref.name,
            generation=0,  # not announced by this row
            spec_hash="",
            observed_at=now,
            **{column: [service]},
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[workspaces.c.workspace_uid],
            set_={column: sa.func.array_append(col, service)},
            where=sa.not_(sa.literal(service) == sa.any_(col)),
        )
        async with self.db.sessions.begin() as session:
            await session.execute(stmt)

    async def mark_deleting(self, ref: WorkspaceRef, now: datetime) -> datetime:
        """When deletion was first seen (recorded now if this is the first time)."""
        insert = pg_insert(workspaces).values(
            workspace_uid=ref.uid,
            namespace=ref.namespace,
            name=ref.name,
            generation=0,  # not announced by this row
            spec_hash="",
            observed_at=now,
            deleting_since=now,
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[workspaces.c.workspace_uid],
            set_={"deleting_since": sa.func.coalesce(workspaces.c.deleting_since, now)},
        ).returning(workspaces.c.deleting_since)
        async with self.db.sessions.begin() as session:
            since = (await session.execute(stmt)).scalar_one()
        return since if isinstance(since, datetime) else now

    async def forget(self, uid: str) -> None:
        async with self.db.sessions.begin() as session:
            await session.execute(sa.delete(workspaces).where(workspaces.c.workspace_uid == uid))
        self._involved = {k for k in self._involved if k[0] != uid}
