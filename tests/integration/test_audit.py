"""The audit log against real PostgreSQL and NATS JetStream: the watcher's sink stores every
message of the stream once, dates each generation's phases, and serves the history."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import nats
import pytest
from prometheus_client import CollectorRegistry

from services.watcher.audit import AuditLog, AuditRecord, record_of
from shared.bus import Bus, Delivered, StreamSink
from shared.db import Database
from shared.events import (
    EventData,
    ResourcesPending,
    ResourcesReady,
    WorkspaceObserved,
    WorkspaceRef,
    event_subject,
    new_event,
)
from shared.settings import Settings
from tests.support.bus import workspace
from tests.support.polling import eventually

T0 = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)


@pytest.fixture
async def audit_log(database_url: str) -> AsyncIterator[AuditLog]:
    db = Database(database_url)
    yield AuditLog(db)
    await db.close()


def observed() -> WorkspaceObserved:
    return WorkspaceObserved(workspace={"metadata": {}}, spec_hash="h", trigger="added")


def pending() -> ResourcesPending:
    return ResourcesPending(reason="CreateNodeClaimPending", message="creating", wanted=1)


def rec(data: EventData, ref: WorkspaceRef, seconds: float, source: str = "tester") -> AuditRecord:
    at = T0 + timedelta(seconds=seconds)
    env = new_event(data, source=source, workspace=ref, now=at)
    subject = event_subject("kaiten", env.type, ref.namespace, ref.name)
    return record_of(Delivered(subject, env.to_json(), 1, at), "kaiten")


async def test_records_are_stored_once_and_phases_keep_their_earliest_time(
    audit_log: AuditLog,
) -> None:
    ref = workspace()
    first = [rec(observed(), ref, 0), rec(pending(), ref, 2, "provisioner")]
    stored = await audit_log.record(first)
    assert stored.stored == 2
    assert stored.advanced == ((ref.uid, 1),)

    again = await audit_log.record(first)  # a redelivered batch
    assert (again.stored, again.advanced) == (0, ())

    later = await audit_log.record([rec(pending(), ref, 5, "provisioner")])
    assert later.advanced == ()  # nodes were requested at 2 s, not 5 s
    earlier = await audit_log.record([rec(pending(), ref, 1, "provisioner")])
    assert earlier.advanced == ((ref.uid, 1),)  # a late redelivery of an older event

    timeline = await audit_log.timeline(ref.uid, 1)
    assert timeline is not None
    assert [(p.name, p.since_previous.total_seconds()) for p in timeline.phases] == [
        ("observed", 0.0),
        ("nodesRequested", 1.0),
    ]
    events = await audit_log.events(ref.namespace, ref.name)
    assert [e.type for e in events] == [
        "workspace.observed",
        "resources.pending",
        "resources.pending",
        "resources.pending",
    ]
    assert {e.correlation_id for e in events} == {f"{ref.uid}/1"}


async def test_history_has_every_generation_of_a_name(audit_log: AuditLog) -> None:
    ref = workspace()
    gen2 = ref.model_copy(update={"generation": 2})
    await audit_log.record(
        [
            rec(observed(), ref, 0),
            rec(ResourcesReady(node_names=("n",)), ref, 3, "provisioner"),
            rec(observed(), gen2, 10),
        ]
    )
    timelines = await audit_log.history(ref.namespace, ref.name)
    assert [(t.generation, [p.name for p in t.phases]) for t in timelines] == [
        (1, ["observed", "nodesRequested", "nodesReady"]),
        (2, ["observed"]),
    ]
    assert await audit_log.history(ref.namespace, "no-such-workspace") == []
    assert [
        e.generation for e in await audit_log.events(ref.namespace, ref.name, generation=2)
    ] == [2]


async def test_prune_forgets_what_is_older_than_the_cut(audit_log: AuditLog) -> None:
    ref = workspace()
    await audit_log.record([rec(observed(), ref, 0), rec(pending(), ref, 3600, "provisioner")])
    await audit_log.prune(T0 + timedelta(seconds=60))
    assert [e.type for e in await audit_log.events(ref.namespace, ref.name)] == [
        "resources.pending"
    ]
    [timeline] = await audit_log.history(ref.namespace, ref.name)
    assert [p.name for p in timeline.phases] == ["nodesRequested"]


# --- the sink on the bus ---------------------------------------------------------------------


class Collector:
    def __init__(self, fail_first: int = 0) -> None:
        self.batches: list[list[Delivered]] = []
        self.fail_first = fail_first
        self.calls = 0

    async def __call__(self, batch: Sequence[Delivered]) -> None:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise ConnectionError("database down")
        self.batches.append(list(batch))

    @property
    def sequences(self) -> list[int]:
        return sorted(m.sequence for b in self.batches for m in b)


async def started_bus(settings: Settings, service: str, sink: StreamSink | None = None) -> Bus:
    bus = Bus(settings, service, registry=CollectorRegistry())
    if sink is not None:
        bus.sink(sink)
    await bus.start()
    return bus


async def test_the_sink_gets_every_message_in_batches_including_garbage(settings: Settings) -> None:
    publisher = await started_bus(settings, "tester")
    try:
        ref = workspace()
        for i in range(40):
            data = pending().model_copy(update={"wanted": i + 1})
            await publisher.publish(new_event(data, source="tester", workspace=ref, now=T0))
        nc = await nats.connect(settings.nats_url)
        js = nc.jetstream()
        await js.publish(f"{settings.subject_prefix}.v1.plan.ready.default.x", b"\xff garbage")
        await nc.close()
        collector = Collector()
        sink_bus = await started_bus(
            settings, "watcher", StreamSink("audit", collector, batch_size=16)
        )
        try:
            await eventually(lambda: len(collector.sequences) == 41, timeout=15)
            assert collector.sequences == list(range(1, 42))
            assert max(len(b) for b in collector.batches) <= 16
            assert len(collector.batches) < 41  # batched, not one by one
            await asyncio.sleep(0.5)
            assert len(collector.sequences) == 41  # acked: nothing comes twice
        finally:
            await sink_bus.stop()
    finally:
        await publisher.stop()


async def test_a_failing_sink_gets_the_batch_again(settings: Settings) -> None:
    publisher = await started_bus(settings, "tester")
    try:
        await publisher.publish(
            new_event(pending(), source="tester", workspace=workspace(), now=T0)
        )
        collector = Collector(fail_first=2)
        sink_bus = await started_bus(settings, "watcher", StreamSink("audit", collector))
        try:
            await eventually(lambda: collector.sequences == [1], timeout=15)
            assert collector.calls == 3
        finally:
            await sink_bus.stop()
    finally:
        await publisher.stop()


async def test_the_watchers_sink_stores_what_services_publish(
    settings: Settings, audit_log: AuditLog
) -> None:
    """End to end through the bus: events of one generation reach the audit tables."""
    from services.watcher.service import Watcher  # noqa: PLC0415

    class NoStatus(Watcher):
        def __init__(self, bus: Bus) -> None:
            self.bus, self.audit = bus, audit_log
            self.written: list[tuple[str, int]] = []

        async def _write_phases(self, audit: AuditLog, uid: str, generation: int) -> None:
            self.written.append((uid, generation))

    publisher = await started_bus(settings, "planner")
    ref = WorkspaceRef(
        uid=str(uuid.uuid4()), namespace="audit", name=f"w-{uuid.uuid4().hex[:6]}", generation=1
    )
    try:
        bus = Bus(settings, "watcher", registry=CollectorRegistry())
        watcher = NoStatus(bus)
        bus.sink(StreamSink("audit", watcher.on_messages))
        await bus.start()
        try:
            await publisher.publish(new_event(observed(), source="watcher", workspace=ref, now=T0))
            await publisher.publish(
                new_event(
                    pending(), source="provisioner", workspace=ref, now=T0 + timedelta(seconds=1)
                )
            )
            await eventually(lambda: len(watcher.written) >= 1, timeout=15)

            async def both_stored() -> bool:
                return len(await audit_log.events(ref.namespace, ref.name)) == 2

            await eventually(both_stored, timeout=15, what="both events stored")
            [timeline] = await audit_log.history(ref.namespace, ref.name)
            assert [p.name for p in timeline.phases] == ["observed", "nodesRequested"]
            assert set(watcher.written) == {(ref.uid, 1)}
        finally:
            await bus.stop()
    finally:
        await publisher.stop()
