"""`kaiten events` against a real NATS JetStream: replay, filters, --since, JSON lines, --follow,
and the errors a person meets (no server, no stream)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry

from kaiten.events import (
    DEADLETTER,
    INTERRUPTED,
    build_options,
    format_time,
    read_events,
    short_correlation,
    summary,
    table_header,
)
from localdev import infra
from shared.bus import Bus
from shared.events import (
    Condition,
    ConditionReported,
    DeadLetter,
    Envelope,
    EventData,
    PlanReady,
    ResourcesFailed,
    ResourcesReady,
    TuningProgress,
    WorkspaceObserved,
    WorkspaceRef,
    deadletter_subject,
    decode_event,
    event_subject,
    new_event,
)
from shared.settings import Settings
from tests.support.plans import minimal_plan
from tests.support.polling import eventually

REPO = Path(__file__).resolve().parents[2]
A = WorkspaceRef(uid=str(uuid.uuid4()), namespace="team-a", name="phi-3.mini", generation=1)
B = WorkspaceRef(uid=str(uuid.uuid4()), namespace="team-b", name="llama", generation=3)
C = WorkspaceRef(uid=str(uuid.uuid4()), namespace="team-b", name="phi-3.mini", generation=1)


def observed(ws: WorkspaceRef) -> WorkspaceObserved:
    return WorkspaceObserved(
        workspace={"metadata": {"name": ws.name, "namespace": ws.namespace}},
        spec_hash=uuid.uuid4().hex,
        trigger="added",
    )


def plan_ready(nodes: int) -> PlanReady:
    return PlanReady(
        mode="inference",
        preset="phi-3-mini-4k-instruct",
        instance_type="Standard_NC24ads_A100_v4",
        node_count=nodes,
        plan=minimal_plan(node_count=nodes),
    )


def condition(ws: WorkspaceRef, status: str) -> ConditionReported:
    return ConditionReported(
        condition=Condition(
            type="ResourceReady",
            status=status,
            reason="NodesReady" if status == "True" else "NodesPending",
            message="",
            observed_generation=ws.generation,
        )
    )


# What the tests publish, in order: (workspace, source, data).
HISTORY: list[tuple[WorkspaceRef, str, EventData]] = [
    (A, "watcher", observed(A)),
    (B, "watcher", observed(B)),
    (A, "planner", plan_ready(2)),
    (B, "planner", plan_ready(1)),
    (A, "provisioner", condition(A, "False")),
    (C, "watcher", observed(C)),
    (B, "provisioner", ResourcesFailed(reason="QuotaExceeded", message="no quota")),
    (A, "provisioner", ResourcesReady(node_names=("n-a-0", "n-a-1"))),
    (A, "provisioner", condition(A, "True")),
    (A, "tuner", TuningProgress(job="j", step=5, total_steps=10, loss=0.5)),
]


@dataclass
class Stream:
    """The test's own stream, with a publisher."""

    settings: Settings
    bus: Bus
    published: list[Envelope[Any]] = field(default_factory=list)

    async def publish(self, ws: WorkspaceRef, source: str, data: EventData) -> Envelope[Any]:
        event = new_event(data, source=source, workspace=ws, now=datetime.now(UTC))
        assert await self.bus.publish(event)
        self.published.append(event)
        return event

    async def publish_history(self) -> None:
        for ws, source, data in HISTORY:
            await self.publish(ws, source, data)

    async def publish_raw(self, subject: str, body: bytes) -> None:
        nc = await nats.connect(self.settings.nats_url)
        try:
            await nc.jetstream().publish(subject, body, stream=self.settings.stream)
        finally:
            await nc.close()

    async def consumers(self) -> int:
        nc = await nats.connect(self.settings.nats_url)
        try:
            info = await nc.jetstream().stream_info(self.settings.stream)
        finally:
            await nc.close()
        return int(info.state.consumer_count)

    def env(self) -> dict[str, str]:
        """The environment of a `kaiten events` process reading this stream."""
        return os.environ | {
            "NATS_URL": self.settings.nats_url,
            "KAITEN_STREAM": self.settings.stream,
            "KAITEN_SUBJECT_PREFIX": self.settings.subject_prefix,
        }


@pytest.fixture
async def stream(nats_url: str) -> AsyncIterator[Stream]:
    """A stream and subject prefix of this test's own (no database needed), removed after."""
    tag = uuid.uuid4().hex[:10]
    settings = Settings(
        nats_url=nats_url, stream=f"KAITEN_EVENTS_{tag}", subject_prefix=f"kaitenevents{tag}"
    )
    bus = Bus(settings, "tester", registry=CollectorRegistry())
    await bus.start()  # creates the stream as the services do
    try:
        yield Stream(settings, bus)
    finally:
        await bus.stop()
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().delete_stream(settings.stream)
        except NotFoundError:
            pass
        finally:
            await nc.close()


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def rows(self) -> list[list[str]]:
        """The table's rows below the header, split into their six columns."""
        assert self.lines[0] == table_header()
        return [re.split(r" {2,}", line, maxsplit=5) for line in self.lines[1:]]

    def events(self) -> list[Envelope[Any]]:
        return [decode_event(line.encode()) for line in self.lines]


async def read(settings: Settings, **options: Any) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = await read_events(settings, build_options(**options), out, err)
    return Result(code, out.getvalue(), err.getvalue())


def ids(events: list[Envelope[Any]]) -> list[uuid.UUID]:
    return [e.id for e in events]


# --- replay ----------------------------------------------------------------------------------


async def test_replay_shows_every_event_in_order_with_its_columns(stream: Stream) -> None:
    await stream.publish_history()
    result = await read(stream.settings)
    assert result.code == 0, result.err
    rows = result.rows()
    assert len(rows) == len(HISTORY)
    for row, event in zip(rows, stream.published, strict=True):
        assert row == [
            format_time(event.occurred_at),
            event.type.value,
            event.source,
            event.workspace.key,
            short_correlation(event.correlation_id),
            summary(event.data),
        ]
    assert rows[2][5].startswith("inference phi-3-mini-4k-instruct: 2 nodes x Standard_NC24ads")
    assert result.err == ""
    assert await stream.consumers() == 0  # nothing left behind


async def test_json_lines_are_the_published_envelopes(stream: Stream) -> None:
    await stream.publish_history()
    result = await read(stream.settings, output="json")
    assert result.code == 0
    assert result.events() == stream.published
    for line, event in zip(result.lines, stream.published, strict=True):
        assert json.loads(line) == json.loads(event.to_json())


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"namespace": "team-b"}, [B, C]),
        ({"workspace": "phi-3.mini"}, [A, C]),  # any namespace
        ({"namespace": "team-b", "workspace": "phi-3.mini"}, [C]),
        ({"namespace": "team-c"}, []),
    ],
)
async def test_workspace_and_namespace_filters(
    stream: Stream, options: dict[str, str], expected: list[WorkspaceRef]
) -> None:
    await stream.publish_history()
    result = await read(stream.settings, output="json", **options)
    assert result.code == 0
    assert ids(result.events()) == [e.id for e in stream.published if e.workspace in expected]
    if not expected:
        assert result.err == "no events\n"


async def test_type_filter_alone_and_with_a_workspace(stream: Stream) -> None:
    await stream.publish_history()
    plans = await read(stream.settings, output="json", event_type="plan.ready")
    assert [e.workspace for e in plans.events()] == [A, B]
    conditions = await read(
        stream.settings, event_type="ConditionReported", namespace="team-a", workspace="phi-3.mini"
    )
    rows = conditions.rows()
    assert [r[1] for r in rows] == ["condition.reported", "condition.reported"]
    assert [r[5] for r in rows] == [
        "ResourceReady=False NodesPending",
        "ResourceReady=True NodesReady",
    ]


async def test_since_leaves_out_older_events(stream: Stream) -> None:
    for ws, source, data in HISTORY[:4]:
        await stream.publish(ws, source, data)
    mark = datetime.now(UTC)
    await eventually(lambda: datetime.now(UTC) > mark, what="the clock to move on")
    for ws, source, data in HISTORY[4:]:
        await stream.publish(ws, source, data)
    newer = await read(stream.settings, output="json", since=mark.isoformat())
    assert ids(newer.events()) == ids(stream.published[4:])
    newer_of_a = await read(
        stream.settings, output="json", since=mark.isoformat(), namespace="team-a"
    )
    assert ids(newer_of_a.events()) == [e.id for e in stream.published[4:] if e.workspace == A]
    everything = await read(stream.settings, output="json", since="1h")
    assert ids(everything.events()) == ids(stream.published)
    future = await read(stream.settings, since="2099-01-01T00:00:00Z")
    assert future.lines == [table_header()]
    assert future.err == "no events\n"


async def test_unreadable_messages_and_dead_letters_do_not_stop_the_reader(stream: Stream) -> None:
    prefix = stream.settings.subject_prefix
    first = await stream.publish(*HISTORY[0])
    bad_subject = event_subject(prefix, first.type, "team-a", "broken")
    await stream.publish_raw(bad_subject, b"\x00 not an event")
    letter = DeadLetter(
        service="deployer",
        consumer="deployer-plan-ready",
        subject=bad_subject,
        stream_sequence=2,
        deliveries=1,
        error="EventDecodeError: not a Kaiten event envelope",
        failed_at=datetime.now(UTC),
        payload="AA==",
        payload_encoding="base64",
    )
    await stream.publish_raw(
        deadletter_subject(prefix, "deployer"), letter.model_dump_json().encode()
    )
    last = await stream.publish(*HISTORY[1])

    table = await read(stream.settings)
    assert table.code == 0
    rows = table.rows()
    assert [r[1] for r in rows] == [
        "workspace.observed",
        "workspace.observed",  # from the subject: the body is not an event
        DEADLETTER,
        "workspace.observed",
    ]
    assert rows[1][2:4] == ["?", "team-a/broken"]
    assert rows[1][5].startswith(f"unreadable message #2 on {bad_subject}: not a Kaiten event")
    assert rows[2][2] == "deployer"
    assert rows[2][5].startswith(f"deployer gave up on {bad_subject} (#2) after 1 delivery")

    as_json = await read(stream.settings, output="json")
    assert as_json.code == 0
    lines = as_json.lines
    assert decode_event(lines[0].encode()) == first
    assert DeadLetter.model_validate_json(lines[1]) == letter
    assert decode_event(lines[2].encode()) == last
    assert as_json.err.startswith(f"warning: message #2 on {bad_subject} is not a JSON object")

    letters = await read(stream.settings, event_type="deadletter")
    assert [r[1] for r in letters.rows()] == [DEADLETTER]
    # A dead letter names no workspace: asking for one leaves it out.
    assert (await read(stream.settings, event_type="deadletter", namespace="team-a")).rows() == []


async def test_a_long_replay_reads_everything(stream: Stream) -> None:
    nc = await nats.connect(stream.settings.nats_url)
    js = nc.jetstream()
    count = 2000
    try:
        for i in range(count):
            event = new_event(
                TuningProgress(job="j", step=i, total_steps=count),
                source="tuner",
                workspace=A,
                now=datetime.now(UTC),
            )
            await js.publish(
                event_subject(stream.settings.subject_prefix, event.type, A.namespace, A.name),
                event.to_json(),
            )
    finally:
        await nc.close()
    started = time.monotonic()
    result = await read(stream.settings, output="json")
    elapsed = time.monotonic() - started
    assert result.code == 0
    steps = [e.data.step for e in result.events()]
    assert steps == list(range(count))
    print(f"replayed {count} events in {elapsed:.2f} s")


# --- follow ----------------------------------------------------------------------------------


async def test_follow_goes_on_after_its_consumer_is_lost(stream: Stream) -> None:
    """The ordered consumer is recreated after a gap (here: deleted on the server) from where it
    was, even when it started at --since."""
    await stream.publish_history()
    mark = datetime.now(UTC)
    await eventually(lambda: datetime.now(UTC) > mark, what="the clock to move on")
    first = await stream.publish(A, "tuner", TuningProgress(job="j", step=6, total_steps=10))
    out, err = io.StringIO(), io.StringIO()
    stop = asyncio.Event()
    options = build_options(follow=True, since=mark.isoformat(), output="json")
    task = asyncio.create_task(
        read_events(stream.settings, options, out, err, stop=stop, heartbeat_s=0.3)
    )
    try:
        await eventually(lambda: str(first.id) in out.getvalue(), what="the first event")
        nc = await nats.connect(stream.settings.nats_url)
        try:
            js = nc.jetstream()
            (consumer,) = await js.consumers_info(stream.settings.stream)
            assert consumer.config.description == "kaiten events (read-only)"
            assert consumer.config.durable_name is None
            await js.delete_consumer(stream.settings.stream, consumer.name)
        finally:
            await nc.close()
        second = await stream.publish(A, "tuner", TuningProgress(job="j", step=7, total_steps=10))
        await eventually(
            lambda: str(second.id) in out.getvalue(), timeout=15, what="the event after the gap"
        )
    finally:
        stop.set()
        code = await asyncio.wait_for(task, timeout=10)
    assert code == 0
    assert ids(Result(code, out.getvalue(), "").events()) == [first.id, second.id]
    assert await stream.consumers() == 0


class StopAfter(io.StringIO):
    """Output that asks the reader to stop after a few lines, while messages keep coming."""

    def __init__(self, stop: asyncio.Event, lines: int) -> None:
        super().__init__()
        self._stop = stop
        self._left = lines

    def write(self, s: str, /) -> int:
        self._left -= 1
        if self._left == 0:
            self._stop.set()
        return super().write(s)


@pytest.mark.parametrize(("follow", "code"), [(True, 0), (False, INTERRUPTED)])
async def test_stop_in_the_middle_of_a_replay_ends_the_reader(
    stream: Stream, follow: bool, code: int
) -> None:
    nc = await nats.connect(stream.settings.nats_url)
    try:
        js = nc.jetstream()
        for i in range(500):
            event = new_event(
                TuningProgress(job="j", step=i, total_steps=500),
                source="tuner",
                workspace=A,
                now=datetime.now(UTC),
            )
            subject = event_subject(stream.settings.subject_prefix, event.type, A.namespace, A.name)
            await js.publish(subject, event.to_json())
    finally:
        await nc.close()
    stop = asyncio.Event()
    out = StopAfter(stop, lines=3)
    options = build_options(follow=follow, output="json")
    result = await asyncio.wait_for(
        read_events(stream.settings, options, out, io.StringIO(), stop=stop), timeout=10
    )
    assert result == code
    assert len(out.getvalue().splitlines()) < 500
    assert await stream.consumers() == 0


# --- as a person runs it ---------------------------------------------------------------------


async def kaiten_events(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kaiten",
        "events",
        *args,
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finished(proc: asyncio.subprocess.Process, timeout: float = 30) -> Result:
    out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def test_the_command_replays_with_filters(stream: Stream) -> None:
    await stream.publish_history()
    result = await finished(
        await kaiten_events(stream.env(), "-n", "team-a", "--type", "plan.ready")
    )
    assert result.code == 0, result.err
    rows = result.rows()
    assert len(rows) == 1
    assert rows[0][1:4] == ["plan.ready", "planner", "team-a/phi-3.mini"]


async def test_the_command_follows_new_events_until_sigterm(stream: Stream) -> None:
    await stream.publish_history()
    proc = await kaiten_events(stream.env(), "--follow", "-o", "json")
    assert proc.stdout is not None
    try:
        replayed = [
            decode_event(await asyncio.wait_for(proc.stdout.readline(), timeout=30))
            for _ in HISTORY
        ]
        assert replayed == stream.published
        new = await stream.publish(B, "deployer", condition(B, "True"))
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert decode_event(line) == new
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    result = await finished(proc, timeout=10)
    assert result.code == 0, result.err
    assert result.out == ""  # nothing more after the new event
    assert result.err == ""
    assert await stream.consumers() == 0


async def test_unreachable_nats_is_one_line_and_exit_1_quickly() -> None:
    env = os.environ | {"NATS_URL": f"nats://127.0.0.1:{infra.free_port()}"}
    started = time.monotonic()
    result = await finished(await kaiten_events(env, "--follow"))
    elapsed = time.monotonic() - started
    assert result.code == 1
    assert result.out == ""
    assert len(result.err.splitlines()) == 1, result.err
    assert result.err.startswith("error: cannot reach NATS at nats://127.0.0.1:")
    assert "Traceback" not in result.err
    assert elapsed < 10


async def test_a_missing_stream_is_named(nats_url: str) -> None:
    settings = Settings(nats_url=nats_url, stream=f"NOPE_{uuid.uuid4().hex[:8]}")
    result = await read(settings)
    assert result.code == 1
    assert result.out == ""
    assert result.err == (
        f"error: no stream {settings.stream} at {nats_url}: is Kaiten running? "
        "(KAITEN_STREAM names the stream)\n"
    )
    env = os.environ | {"NATS_URL": nats_url, "KAITEN_STREAM": settings.stream}
    proc_result = await finished(await kaiten_events(env))
    assert proc_result.code == 1
    assert proc_result.err == result.err


async def test_bad_options_exit_2_naming_the_flag() -> None:
    result = await finished(await kaiten_events(dict(os.environ), "--since", "yesterday"))
    assert result.code == 2
    assert result.err.startswith("error: --since: cannot read 'yesterday'")
