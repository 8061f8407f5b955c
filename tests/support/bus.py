"""Test helpers around the real bus: events to publish and a raw reader of the stream."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.js.api import ConsumerInfo

from shared.events import Envelope, EventData, WorkspaceRef, new_event
from shared.settings import Settings


def workspace(name: str | None = None, generation: int = 1) -> WorkspaceRef:
    return WorkspaceRef(
        uid=str(uuid.uuid4()),
        namespace="default",
        name=name or f"ws-{uuid.uuid4().hex[:8]}",
        generation=generation,
    )


def event(data: EventData, ws: WorkspaceRef | None = None, source: str = "tester") -> Envelope[Any]:
    return new_event(data, source=source, workspace=ws or workspace(), now=datetime.now(UTC))


class StreamReader:
    """Reads the test's stream with plain nats-py, independent of the code under test."""

    def __init__(self, nc: NatsClient, settings: Settings) -> None:
        self._js = nc.jetstream()
        self._settings = settings

    async def messages(self, subject: str) -> list[bytes]:
        """Every message stored on ``subject`` (wildcards allowed), oldest first."""
        sub = await self._js.subscribe(subject, stream=self._settings.stream, ordered_consumer=True)
        out: list[bytes] = []
        try:
            info = await self._js.stream_info(self._settings.stream)
            if info.state.messages == 0:
                return out
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.3)
                except nats.errors.TimeoutError:
                    return out
                out.append(msg.data)
        finally:
            await sub.unsubscribe()

    async def consumer(self, durable: str) -> ConsumerInfo:
        info: ConsumerInfo = await self._js.consumer_info(self._settings.stream, durable)
        return info


@asynccontextmanager
async def stream_reader(settings: Settings) -> AsyncIterator[StreamReader]:
    nc = await nats.connect(settings.nats_url)
    try:
        yield StreamReader(nc, settings)
    finally:
        await nc.close()
