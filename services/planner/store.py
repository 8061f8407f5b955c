"""The planner's state in Postgres: one decision per Workspace generation, with the events that
announce it, and the generation guard."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.planner.tables import handled_generations, plans
from shared.db import Database, claim_generation
from shared.events import Envelope, WorkspaceRef, decode_event

Outcome = Literal["ready", "rejected"]


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    inputs_hash: str
    events: tuple[Envelope[Any], ...]
    published: bool


class PlannerStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, ref: WorkspaceRef, now: datetime) -> bool:
        """False when a newer generation of the workspace was already planned."""
        async with self.db.sessions.begin() as session:
            return await claim_generation(session, handled_generations, ref, now)

    async def get(self, ref: WorkspaceRef) -> Decision | None:
        async with self.db.sessions() as session:
            row = (
                await session.execute(
                    sa.select(plans).where(
                        plans.c.workspace_uid == ref.uid, plans.c.generation == ref.generation
                    )
                )
            ).first()
        return None if row is None else _decision(row)

    async def record(
        self,
        ref: WorkspaceRef,
        outcome: Outcome,
        inputs_hash: str,
        events: Sequence[Envelope[Any]],
        now: datetime,
    ) -> Decision:
        """Store the decision unless one that stands is there, and return the one that stands:
        a ready plan is final; a rejection gives way to a decision made on other inputs. Safe
        under concurrent replicas: the losing replica gets the winner's decision."""
        values = {
            "workspace_uid": ref.uid,
            "generation": ref.generation,
            "namespace": ref.namespace,
            "name": ref.name,
            "outcome": outcome,
            "inputs_hash": inputs_hash,
            "events": [e.model_dump(mode="json") for e in events],
            "decided_at": now,
            "published_at": None,
        }
        insert = pg_insert(plans).values(**values)
        upsert = insert.on_conflict_do_update(
            index_elements=[plans.c.workspace_uid, plans.c.generation],
            set_={
                k: insert.excluded[k] for k in values if k not in ("workspace_uid", "generation")
            },
            where=sa.and_(plans.c.outcome == "rejected", plans.c.inputs_hash != inputs_hash),
        ).returning(*plans.c)
        async with self.db.sessions.begin() as session:
            row = (await session.execute(upsert)).first()
            if row is None:  # a decision stands: read it in the same transaction
                row = (
                    await session.execute(
                        sa.select(plans).where(
                            plans.c.workspace_uid == ref.uid,
                            plans.c.generation == ref.generation,
                        )
                    )
                ).one()
        return _decision(row)

    async def mark_published(self, ref: WorkspaceRef, inputs_hash: str, now: datetime) -> None:
        async with self.db.sessions.begin() as session:
            await session.execute(
                sa.update(plans)
                .where(
                    plans.c.workspace_uid == ref.uid,
                    plans.c.generation == ref.generation,
                    plans.c.inputs_hash == inputs_hash,
                )
                .values(published_at=now)
            )


def _decision(row: Any) -> Decision:
    events = tuple(decode_event(json.dumps(e).encode()) for e in row.events)
    return Decision(row.outcome, row.inputs_hash, events, row.published_at is not None)
