"""The audit log: every message on the stream, kept in Postgres (schema ``watcher``), and the
phases each Workspace generation went through.

Why the watcher: the phases also go into the Workspace's status, and only the watcher writes
Workspaces; one durable consumer (``watcher-audit``) reads the whole stream in batches, so the
cost is one insert per batch, not per event. It never gives up on a message: what it cannot read
is stored as ``unreadable`` with its raw text, dead letters as ``deadletter``.

Decisions here are pure (``record_of``, ``phase_marks``, ``timelines``); ``AuditLog`` does the
I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.watcher.tables import audit_events, audit_phases
from shared.bus import DEADLETTER_REASON, Delivered
from shared.db import Database
from shared.errors import EventDecodeError
from shared.events import SUBJECT_VERSION, DeadLetter, EventType, decode_event

DEADLETTER = "deadletter"
UNREADABLE = "unreadable"
MAX_RAW_CHARS = 65536  # an unreadable body is kept up to this many characters

# The phases of one generation, in the order a healthy rollout reaches them.
OBSERVED = "observed"
PLANNED = "planned"
NODES_REQUESTED = "nodesRequested"
NODES_READY = "nodesReady"
WORKLOAD_CREATED = "workloadCreated"
PODS_READY = "podsReady"
TUNING_STARTED = "tuningStarted"
TUNING_FINISHED = "tuningFinished"
SUCCEEDED = "succeeded"
FAILED = "failed"
DELETING = "deleting"
PHASES = (
    OBSERVED,
    PLANNED,
    NODES_REQUESTED,
    NODES_READY,
    WORKLOAD_CREATED,
    PODS_READY,
    TUNING_STARTED,
    TUNING_FINISHED,
    SUCCEEDED,
    FAILED,
    DELETING,
)
WORKLOAD_SERVICES = frozenset({"deployer", "tuner"})


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored message. ``type`` is an event type, ``deadletter`` or ``unreadable``;
    workspace fields are empty (generation -1) when the message does not say."""

    id: str
    sequence: int
    subject: str
    type: str
    source: str
    namespace: str
    name: str
    uid: str
    generation: int
    correlation_id: str
    causation_id: str | None
    occurred_at: datetime
    data: dict[str, Any] = field(default_factory=dict)


def record_of(message: Delivered, prefix: str) -> AuditRecord:
    """What to store for ``message``: the envelope's fields, the dead letter's, or the raw text
    of a body nobody can read (with the namespace and name its subject names)."""
    try:
        env = decode_event(message.body)
    except EventDecodeError as error:
        return _letter_or_raw(message, prefix, str(error))
    ws = env.workspace
    return AuditRecord(
        id=str(env.id),
        sequence=message.sequence,
        subject=message.subject,
        type=env.type.value,
        source=env.source,
        namespace=ws.namespace,
        name=ws.name,
        uid=ws.uid,
        generation=ws.generation,
        correlation_id=env.correlation_id,
        causation_id=str(env.causation_id) if env.causation_id else None,
        occurred_at=env.occurred_at,
        data=env.data.model_dump(mode="json"),
    )


def _letter_or_raw(message: Delivered, prefix: str, error: str) -> AuditRecord:
    namespace, name = _subject_workspace(message.subject, prefix)
    raw_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{message.subject}#{message.sequence}"))
    if message.subject.startswith(f"{prefix}.{SUBJECT_VERSION}.{DEADLETTER}."):
        try:
            letter = DeadLetter.model_validate_json(message.body)
        except ValidationError:
            pass
        else:
            ws = letter.workspace
            return AuditRecord(
                id=raw_id,
                sequence=message.sequence,
                subject=message.subject,
                type=DEADLETTER,
                source=letter.service,
                namespace=ws.namespace if ws else "",
                name=ws.name if ws else "",
                uid=ws.uid if ws else "",
                generation=ws.generation if ws else -1,
                correlation_id=f"{ws.uid}/{ws.generation}" if ws else "",
                causation_id=str(letter.event_id) if letter.event_id else None,
                occurred_at=letter.failed_at,
                data=letter.model_dump(mode="json"),
            )
    text = message.body.decode("utf-8", errors="replace")
    return AuditRecord(
        id=raw_id,
        sequence=message.sequence,
        subject=message.subject,
        type=UNREADABLE,
        source="",
        namespace=namespace,
        name=name,
        uid="",
        generation=-1,
        correlation_id="",
        causation_id=None,
        occurred_at=message.published_at,
        data={"error": error[:4000], "payload": text[:MAX_RAW_CHARS]},
    )


def _subject_workspace(subject: str, prefix: str) -> tuple[str, str]:
    """``<prefix>.v1.<a>.<b>.<namespace>.<name>`` -> (namespace, name); ('', '') otherwise."""
    parts = subject.split(".")
    head = f"{prefix}.{SUBJECT_VERSION}".split(".")
    if parts[: len(head)] != head or len(parts) != len(head) + 4:
        return "", ""
    return parts[-2].replace("_", "."), parts[-1].replace("_", ".")


# What each event shows its generation reached (``condition.reported`` depends on its sender).
_MARKS: dict[str, tuple[str, ...]] = {
    EventType.WORKSPACE_OBSERVED: (OBSERVED,),
    EventType.WORKSPACE_DELETING: (DELETING,),
    EventType.PLAN_READY: (PLANNED,),
    EventType.PLAN_REJECTED: (FAILED,),
    EventType.RESOURCES_PENDING: (NODES_REQUESTED,),
    EventType.RESOURCES_READY: (NODES_REQUESTED, NODES_READY),
    EventType.RESOURCES_FAILED: (NODES_REQUESTED, FAILED),
    EventType.INFERENCE_READY: (WORKLOAD_CREATED, PODS_READY),
    EventType.INFERENCE_FAILED: (WORKLOAD_CREATED, FAILED),
    EventType.TUNING_STARTED: (WORKLOAD_CREATED, TUNING_STARTED),
    EventType.TUNING_PROGRESS: (WORKLOAD_CREATED, TUNING_STARTED),
    EventType.TUNING_SUCCEEDED: (WORKLOAD_CREATED, TUNING_STARTED, TUNING_FINISHED),
    EventType.TUNING_FAILED: (WORKLOAD_CREATED, TUNING_FINISHED, FAILED),
}


def phase_marks(record: AuditRecord) -> tuple[str, ...]:
    """The phases ``record`` shows its generation reached (the earliest record of a phase
    dates it). A provisioner's report means nodes were asked for; a deployer's or tuner's, that
    its workload exists (they report only after applying it)."""
    if record.type != EventType.CONDITION_REPORTED:
        return _MARKS.get(record.type, ())
    condition = record.data.get("condition") or {}
    marks: list[str] = []
    if record.source == "provisioner":
        marks.append(NODES_REQUESTED)
    elif record.source in WORKLOAD_SERVICES and condition.get("reason") != DEADLETTER_REASON:
        marks.append(WORKLOAD_CREATED)
    if condition.get("type") == "WorkspaceSucceeded" and condition.get("status") == "True":
        marks.append(SUCCEEDED)
    return tuple(marks)


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    at: datetime
    since_previous: timedelta  # zero for the first phase


@dataclass(frozen=True, slots=True)
class Timeline:
    """One generation of one Workspace (one uid): its phases in time order."""

    namespace: str
    name: str
    uid: str
    generation: int
    phases: tuple[Phase, ...]

    @property
    def total(self) -> timedelta:
        if not self.phases:
            return timedelta(0)
        return self.phases[-1].at - self.phases[0].at

    def at(self, phase: str) -> datetime | None:
        return next((p.at for p in self.phases if p.name == phase), None)


@dataclass(frozen=True, slots=True)
class PhaseRow:
    namespace: str
    name: str
    uid: str
    generation: int
    phase: str
    at: datetime


def timelines(rows: Iterable[PhaseRow]) -> list[Timeline]:
    """Group phase rows into one timeline per (uid, generation), ordered by when each began;
    within one, phases in time order (the order of ``PHASES`` breaks ties)."""
    groups: dict[tuple[str, int], list[PhaseRow]] = {}
    for row in rows:
        groups.setdefault((row.uid, row.generation), []).append(row)
    result = []
    for (uid, generation), members in groups.items():
        members.sort(key=lambda r: (r.at, _order(r.phase)))
        phases = tuple(
            Phase(r.phase, r.at, r.at - members[i - 1].at if i else timedelta(0))
            for i, r in enumerate(members)
        )
        first = members[0]
        result.append(Timeline(first.namespace, first.name, uid, generation, phases))
    result.sort(key=lambda t: (t.phases[0].at, t.generation))
    return result


def _order(phase: str) -> int:
    return PHASES.index(phase) if phase in PHASES else len(PHASES)


def status_phases(timeline: Timeline) -> dict[str, Any]:
    """The Workspace's ``status.phases``: the generation and when it reached each phase
    (RFC 3339, milliseconds)."""
    phases: dict[str, Any] = {"generation": timeline.generation}
    for phase in timeline.phases:
        phases[phase.name] = rfc3339_ms(phase.at)
    return phases


def rfc3339_ms(t: datetime) -> str:
    """``t`` in UTC as RFC 3339 with milliseconds: ``2026-11-22T06:40:01.123Z``."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --- storage -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one batch changed: the generations that reached a phase they had not reached."""

    stored: int
    advanced: tuple[tuple[str, int], ...]  # (uid, generation)


_STORE_EVENTS = (
    pg_insert(audit_events)
    .on_conflict_do_nothing(index_elements=[audit_events.c.id])
    .returning(audit_events.c.id)
)
_PHASE_INSERT = pg_insert(audit_phases)
# A phase keeps its earliest time (a redelivered or late event cannot move it later).
_STORE_PHASES = _PHASE_INSERT.on_conflict_do_update(
    index_elements=[audit_phases.c.workspace_uid, audit_phases.c.generation, audit_phases.c.phase],
    set_={"at": _PHASE_INSERT.excluded.at, "event_id": _PHASE_INSERT.excluded.event_id},
    where=_PHASE_INSERT.excluded.at < audit_phases.c.at,
).returning(audit_phases.c.workspace_uid, audit_phases.c.generation)


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, records: Sequence[AuditRecord]) -> Recorded:
        """Store ``records`` (a redelivered one is ignored) and date the phases they show.
        One transaction, two statements, whatever the batch size."""
        if not records:
            return Recorded(0, ())
        rows = [
            {
                "id": r.id,
                "sequence": r.sequence,
                "subject": r.subject,
                "type": r.type,
                "source": r.source,
                "namespace": r.namespace,
                "name": r.name,
                "workspace_uid": r.uid,
                "generation": r.generation,
                "correlation_id": r.correlation_id,
                "causation_id": r.causation_id,
                "occurred_at": r.occurred_at,
                "data": r.data,
            }
            for r in records
        ]
        marks: dict[tuple[str, int, str], dict[str, Any]] = {}
        for r in records:
            if not r.uid:
                continue
            for phase in phase_marks(r):
                key = (r.uid, r.generation, phase)
                if key not in marks or r.occurred_at < marks[key]["at"]:
                    marks[key] = {
                        "workspace_uid": r.uid,
                        "generation": r.generation,
                        "phase": phase,
                        "namespace": r.namespace,
                        "name": r.name,
                        "at": r.occurred_at,
                        "event_id": r.id,
                    }
        async with self.db.sessions.begin() as session:
            # One statement each, compiled once and cached: the parameters are the batch.
            stored = await session.execute(_STORE_EVENTS, rows)
            count = len(stored.all())
            advanced: set[tuple[str, int]] = set()
            if marks:
                changed = await session.execute(_STORE_PHASES, list(marks.values()))
                advanced = {(row[0], int(row[1])) for row in changed}
        return Recorded(count, tuple(sorted(advanced)))

    async def timeline(self, uid: str, generation: int) -> Timeline | None:
        found = timelines(
            await self._phase_rows(
                audit_phases.c.workspace_uid == uid, audit_phases.c.generation == generation
            )
        )
        return found[0] if found else None

    async def history(self, namespace: str, name: str) -> list[Timeline]:
        """Every generation of every Workspace that had this name, oldest first."""
        return timelines(
            await self._phase_rows(
                audit_phases.c.namespace == namespace, audit_phases.c.name == name
            )
        )

    async def _phase_rows(self, *where: sa.ColumnElement[bool]) -> list[PhaseRow]:
        t = audit_phases.c
        async with self.db.sessions() as session:
            result = await session.execute(
                sa.select(t.namespace, t.name, t.workspace_uid, t.generation, t.phase, t.at).where(
                    *where
                )
            )
            return [PhaseRow(*row) for row in result]

    async def events(
        self, namespace: str, name: str, *, uid: str | None = None, generation: int | None = None
    ) -> list[AuditRecord]:
        """The stored messages about one Workspace name (optionally one uid and generation),
        in stream order."""
        t = audit_events.c
        where = [t.namespace == namespace, t.name == name]
        if uid is not None:
            where.append(t.workspace_uid == uid)
        if generation is not None:
            where.append(t.generation == generation)
        async with self.db.sessions() as session:
            result = await session.execute(
                sa.select(audit_events).where(*where).order_by(t.occurred_at, t.sequence)
            )
            return [
                AuditRecord(
                    id=str(row.id),
                    sequence=row.sequence,
                    subject=row.subject,
                    type=row.type,
                    source=row.source,
                    namespace=row.namespace,
                    name=row.name,
                    uid=row.workspace_uid,
                    generation=row.generation,
                    correlation_id=row.correlation_id,
                    causation_id=row.causation_id,
                    occurred_at=row.occurred_at,
                    data=dict(row.data or {}),
                )
                for row in result
            ]

    async def prune(self, before: datetime) -> int:
        """Forget messages (and phases) older than ``before``; returns how many messages."""
        async with self.db.sessions.begin() as session:
            gone = await session.execute(
                sa.delete(audit_events).where(audit_events.c.occurred_at < before)
            )
            await session.execute(sa.delete(audit_phases).where(audit_phases.c.at < before))
        return int(getattr(gone, "rowcount", 0) or 0)
