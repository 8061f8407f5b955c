"""The example subscriber of docs/audit.md, run as written against a real NATS JetStream: it
replays the events already stored, then follows the ones published after it started."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext

from shared.bus import stream_config
from shared.events import (
    Condition,
    ConditionReported,
    Envelope,
    EventData,
    PlanRejected,
    WorkspaceObserved,
    WorkspaceRef,
    event_subject,
    new_event,
)
from shared.settings import Settings

AUDIT_DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"
TIMEOUT_S = 30.0


def example_code() -> str:
    """The first Python block of docs/audit.md."""
    found = re.search(r"```python\n(.*?)```", AUDIT_DOC.read_text(), re.DOTALL)
    assert found, "docs/audit.md has no ```python block"
    return found.group(1)


@pytest.fixture
async def settings(bundled_nats_url: str) -> AsyncIterator[Settings]:
    """A stream and subject prefix of this test's own on the bundled server."""
    tag = uuid.uuid4().hex[:10]
    s = Settings(
        nats_url=bundled_nats_url, stream=f"AUDIT_TEST_{tag}", subject_prefix=f"audittest{tag}"
    )
    nc = await nats.connect(s.nats_url)
    try:
        await nc.jetstream().add_stream(stream_config(s))
        yield s
        await nc.jetstream().delete_stream(s.stream)
    finally:
        await nc.close()


async def publish(
    js: JetStreamContext,
    settings: Settings,
    data: EventData,
    *,
    source: str,
    ws: WorkspaceRef,
    cause: Envelope[Any] | None = None,
) -> Envelope[Any]:
    """Publish ``data`` as a Kaiten service does: on its subject, with its message id."""
    env = new_event(data, source=source, workspace=ws, now=datetime.now(UTC), cause=cause)
    subject = event_subject(settings.subject_prefix, env.type, ws.namespace, ws.name)
    await js.publish(subject, env.to_json(), headers={"Nats-Msg-Id": env.msg_id()})
    return env


async def test_the_audit_example_replays_the_stream_and_follows(settings: Settings) -> None:
    ws = WorkspaceRef(uid=str(uuid.uuid4()), namespace="team-a", name="phi-3.5", generation=2)
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    env = {
        **os.environ,
        "NATS_URL": settings.nats_url,
        "KAITEN_STREAM": settings.stream,
        "KAITEN_SUBJECT_PREFIX": settings.subject_prefix,
        "AUDIT_MAX_EVENTS": "3",
    }
    proc: asyncio.subprocess.Process | None = None
    try:
        observed = await publish(
            js,
            settings,
            WorkspaceObserved(workspace={"metadata": {}}, spec_hash="ab", trigger="added"),
            source="watcher",
            ws=ws,
        )
        rejected = PlanRejected(reason="InvalidPreset", message="unknown preset")
        await publish(js, settings, rejected, source="planner", ws=ws, cause=observed)

        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", example_code(), env=env, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        replayed = [
            (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT_S)).decode() for _ in range(2)
        ]
        condition = Condition(
            type="WorkspaceSucceeded",
            status="False",
            reason="InvalidPreset",
            message="unknown preset",
            observed_generation=2,
        )
        reported = ConditionReported(condition=condition)
        await publish(js, settings, reported, source="planner", ws=ws)
        rest, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await nc.close()

    assert proc.returncode == 0
    lines = [line.split() for line in [*replayed, *rest.decode().splitlines()]]
    correlation = f"{ws.uid}/2"
    assert lines == [
        ["1", "workspace.observed", "team-a/phi-3.5", correlation],
        ["2", "plan.rejected", "team-a/phi-3.5", correlation],
        ["3", "condition.reported", "team-a/phi-3.5", correlation],
    ]
