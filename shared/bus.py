"""The event bus: faststream's NATS broker over one JetStream stream.

This module alone decides what happens to a delivered event:
- the handler returns: ack;
- ``PermanentError``: the error becomes a condition (when it names one) and the event is acked;
- ``TransientError`` or any other exception: a delayed NAK with exponential backoff, until the
  last allowed delivery, when the event is dead-lettered to ``<prefix>.v1.deadletter.<service>``
  and the workspace gets a condition saying so;
- a body that is not a valid event: dead-lettered at once (retrying cannot fix it).

Each service has one durable pull consumer per event type, shared by its replicas, so replicas
split the work. Publishing sets a deterministic ``Nats-Msg-Id`` so JetStream drops duplicates.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from faststream import Context
from faststream.middlewares import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from faststream.nats.message import NatsBatchMessage
from faststream.nats.subscriber.usecases import stream_pull_subscriber
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.errors import EventDecodeError, PermanentError, TransientError
from shared.events import (
    Condition,
    ConditionReported,
    DeadLetter,
    Envelope,
    EventData,
    EventType,
    WorkspaceRef,
    deadletter_subject,
    decode_event,
    event_subject,
    event_type_filter,
    new_event,
    stream_subjects,
)
from shared.settings import Settings

log = structlog.get_logger(__name__)

# The batch a sink's handler receives (faststream injects it by this annotation).
BatchMessage = Annotated[NatsBatchMessage, Context("message")]
Handler = Callable[[Envelope[Any]], Awaitable[None]]
Clock = Callable[[], datetime]

DEADLETTER_REASON = "EventDeadLettered"


# faststream 0.7's pull loop suppresses ``nats.errors.TimeoutError`` around ``fetch()``, but
# nats-py 2.16's ``_fetch_n`` raises the builtin ``TimeoutError`` when its deadline runs out
# between its two requests. That killed the pull task every so often until faststream's supervisor
# restarted it, with a traceback and non-JSON INFO lines in every service's log. The builtin is
# the base class of nats' own, so suppressing it there covers both.
stream_pull_subscriber.TimeoutError = TimeoutError  # type: ignore[attr-defined,assignment]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One handler for one event type. When an event is dead-lettered, ``failure_condition``
    is reported False on its workspace (``None``: report nothing)."""

    event_type: EventType
    handler: Handler
    failure_condition: str | None = "WorkspaceSucceeded"


class KeyedLocks:
    """One FIFO lock per key, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


@dataclass(frozen=True, slots=True)
class Delivered:
    """One message as the stream delivered it, undecoded."""

    subject: str
    body: bytes
    sequence: int
    published_at: datetime


BatchHandler = Callable[[Sequence[Delivered]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StreamSink:
    """Every message of the stream (events and dead letters), in batches, to ``handler``: a
    durable consumer ``<service>-<name>`` that never gives up on a message. The handler must
    store what it cannot read rather than raise on it; when it raises (its database is down),
    the batch is delivered again after a back-off."""

    name: str
    handler: BatchHandler
    batch_size: int = 256
    max_wait_s: float = 0.2


def retry_delay(deliveries: int, base: float, cap: float) -> float:
    """Seconds to wait before delivery ``deliveries + 1``: base, 2*base, 4*base ... up to cap."""
    return float(min(cap, base * 2 ** max(0, deliveries - 1)))


def stream_config(settings: Settings) -> StreamConfig:
    """The one definition of the stream: limits retention so audit tools can replay it."""
    return StreamConfig(
        name=settings.stream,
        subjects=stream_subjects(settings.subject_prefix),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=settings.stream_max_age_s,
        max_bytes=settings.stream_max_bytes,
        duplicate_window=settings.duplicate_window_s,
    )


def consumer_name(service: str, event_type: EventType) -> str:
    return f"{service}-{event_type.value.replace('.', '-')}"


class BusMetrics:
    """Counters and latencies of the bus, registered in the service's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter(
            "kaiten_events_handled_total",
            "Events delivered to a handler, by outcome (ack, retry, permanent, deadletter).",
            ["service", "type", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "kaiten_event_handler_seconds",
            "Seconds a handler took, per event type.",
            ["service", "type"],
            registry=registry,
        )
        self.published = Counter(
            "kaiten_events_published_total",
            "Events published, and whether JetStream dropped them as duplicates.",
            ["service", "type", "duplicate"],
            registry=registry,
        )


class Bus:
    """A service's connection to the event stream. Build it at start-up, register the
    subscriptions, then ``start()``; ``stop()`` finishes events in flight first."""

    def __init__(
        self,
        settings: Settings,
        service: str,
        *,
        registry: CollectorRegistry,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.service = service
        self._clock = clock
        self._metrics = BusMetrics(registry)
        self._broker = NatsBroker(
            settings.nats_url,
            graceful_timeout=settings.graceful_timeout_s,
            # faststream logs every message at this level: keep it out of INFO.
            log_level=logging.DEBUG,
            name=f"kaiten-{service}",
        )
        self._stream = JStream(name=settings.stream, declare=False)
        self._in_order = KeyedLocks()

    def subscribe(self, sub: Subscription) -> None:
        """Register ``sub`` before ``start()``. Replicas share its durable consumer."""
        settings = self.settings
        name = consumer_name(self.service, sub.event_type)
        subscriber = self._broker.subscriber(
            event_type_filter(settings.subject_prefix, sub.event_type),
            stream=self._stream,
            durable=name,
            pull_sub=PullSub(batch_size=settings.pull_batch, timeout=1.0),
            config=ConsumerConfig(
                durable_name=name,
                ack_wait=settings.ack_wait_s,
                max_deliver=settings.max_deliver,
                max_ack_pending=1000,
            ),
            ack_policy=AckPolicy.MANUAL,
        )
        deliver = self._deliver

        async def consume(msg: NatsMessage) -> None:
            await deliver(sub, name, msg)

        consume.__name__ = f"on_{sub.event_type.value.replace('.', '_')}"
        subscriber(consume)

    def sink(self, sink: StreamSink) -> None:
        """Register ``sink`` before ``start()``. A new consumer starts at the oldest message."""
        settings = self.settings
        name = f"{self.service}-{sink.name}"
        subscriber = self._broker.subscriber(
            stream_subjects(settings.subject_prefix)[0],
            stream=self._stream,
            durable=name,
            pull_sub=PullSub(batch_size=sink.batch_size, timeout=sink.max_wait_s, batch=True),
            config=ConsumerConfig(
                durable_name=name,
                ack_wait=settings.ack_wait_s,
                max_deliver=-1,
                max_ack_pending=sink.batch_size * 4,
            ),
            ack_policy=AckPolicy.MANUAL,
        )
        retry_base, retry_max = settings.retry_base_s, settings.retry_max_s

        async def consume(msg: BatchMessage) -> None:
            raw: list[Msg] = list(msg.raw_message)
            batch = [
                Delivered(
                    subject=m.subject,
                    body=m.data,
                    sequence=m.metadata.sequence.stream,
                    published_at=m.metadata.timestamp,
                )
                for m in raw
            ]
            try:
                await sink.handler(batch)
            except Exception:
                deliveries = max((m.metadata.num_delivered or 1) for m in raw) if raw else 1
                delay = retry_delay(deliveries, retry_base, retry_max)
                log.exception("sink.retry", sink=name, messages=len(raw), retry_in_s=delay)
                for m in raw:
                    await m.nak(delay=delay)
                return
            for m in raw:
                await m.ack()

        consume.__name__ = f"sink_{sink.name.replace('-', '_')}"
        subscriber(consume)

    async def start(self) -> None:
        await self._broker.connect()
        await self.ensure_stream()
        await self._broker.start()

    async def stop(self) -> None:
        """Stop taking messages, wait for handlers in flight (up to the graceful timeout),
        then close the connection."""
        await self._broker.stop()

    async def is_connected(self) -> bool:
        return await self._broker.ping(timeout=1.0)

    async def ensure_stream(self) -> None:
        """Create the stream, or update it when its configuration changed. Idempotent."""
        js = self._broker.connection.jetstream()
        config = stream_config(self.settings)
        try:
            await js.stream_info(config.name or "")
        except NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError:
                # A replica created it at the same moment with another config: update it.
                await js.update_stream(config)
            else:
                return
        await js.update_stream(config)

    async def publish(self, event: Envelope[Any], *, after: str | None = None) -> bool:
        """Publish ``event`` and wait for JetStream to store it. Returns False when JetStream
        dropped it as a duplicate of one published inside the dedup window. ``after``: see
        ``Envelope.msg_id``."""
        ws = event.workspace
        subject = event_subject(self.settings.subject_prefix, event.type, ws.namespace, ws.name)
        attempts = self.settings.publish_attempts
        for attempt in range(1, attempts + 1):
            try:
                ack = await self._broker.publish(
                    event.to_json(),
                    subject,
                    headers={"Nats-Msg-Id": event.msg_id(after)},
                    stream=self.settings.stream,
                    timeout=self.settings.publish_timeout_s,
                )
                break
            except NatsTimeoutError:
                # The ack is lost, not necessarily the message: the retry carries the same
                # Nats-Msg-Id, so JetStream stores the event at most once.
                if attempt == attempts:
                    raise
                log.warning("event.publish_timeout", subject=subject, attempt=attempt)
        duplicate = bool(ack.duplicate)
        self._metrics.published.labels(self.service, event.type.value, str(duplicate)).inc()
        return not duplicate

    async def report(
        self,
        workspace: WorkspaceRef,
        items: Sequence[EventData],
        *,
        now: datetime,
        cause: Envelope[Any] | None = None,
        after: str | None = None,
    ) -> None:
        """Publish ``items`` in order about ``workspace``, caused by ``cause`` when given.
        ``after``: what the sender said before (see ``Envelope.msg_id``)."""
        for item in items:
            event = new_event(item, source=self.service, workspace=workspace, now=now, cause=cause)
            await self.publish(event, after=after)

    async def emit(self, data: EventData, *, cause: Envelope[Any]) -> bool:
        """Publish ``data`` as an event caused by ``cause`` (same workspace and correlation)."""
        return await self.publish(
            new_event(
                data, source=self.service, workspace=cause.workspace, now=self._clock(), cause=cause
            )
        )

    async def _deliver(self, sub: Subscription, consumer: str, msg: NatsMessage) -> None:
        meta = msg.raw_message.metadata
        deliveries = meta.num_delivered or 1
        started = time.perf_counter()
        try:
            event = decode_event(msg.body, expected=sub.event_type)
        except EventDecodeError as e:
            log.warning("event.invalid", subject=msg.raw_message.subject, error=e.message)
            await self._dead_letter(msg, consumer, deliveries, e.message, event=None, sub=sub)
            self._metrics.handled.labels(self.service, sub.event_type.value, "deadletter").inc()
            return
        # faststream runs the messages of one fetched batch concurrently; events about one
        # workspace must still be handled in stream order (a Pending report handled after the
        # Ready one that followed it would undo it). The tasks start in stream order and reach
        # this lock without suspending, so its FIFO queue is stream order.
        async with self._in_order.hold(f"{consumer}/{event.workspace.uid}"):
            with structlog.contextvars.bound_contextvars(
                event_id=str(event.id),
                event_type=event.type.value,
                workspace=event.workspace.key,
                generation=event.workspace.generation,
                correlation_id=event.correlation_id,
            ):
                outcome = await self._run_handler(sub, consumer, msg, event, deliveries)
                elapsed = time.perf_counter() - started
                self._metrics.seconds.labels(self.service, event.type.value).observe(elapsed)
                self._metrics.handled.labels(self.service, event.type.value, outcome).inc()
                log.info(
                    "event.handled",
                    outcome=outcome,
                    deliveries=deliveries,
                    duration_ms=round(elapsed * 1000, 2),
                )

    async def _run_handler(
        self,
        sub: Subscription,
        consumer: str,
        msg: NatsMessage,
        event: Envelope[Any],
        deliveries: int,
    ) -> str:
        """Run the handler and settle the message; returns the outcome label."""
        try:
            await sub.handler(event)
        except PermanentError as e:
            log.warning("event.permanent_error", reason=e.reason, error=e.message)
            if e.condition:
                await self._report(event, e.condition, e.reason, e.message)
            await msg.ack()
            return "permanent"
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            if deliveries >= self.settings.max_deliver:
                log.exception("event.deadlettered", error=error)
                await self._dead_letter(msg, consumer, deliveries, error, event=event, sub=sub)
                return "deadletter"
            delay = e.delay if isinstance(e, TransientError) and e.delay is not None else None
            delay = delay or retry_delay(
                deliveries, self.settings.retry_base_s, self.settings.retry_max_s
            )
            if isinstance(e, TransientError):
                log.warning("event.retry", error=error, retry_in_s=delay)
            else:
                log.exception("event.retry", error=error, retry_in_s=delay)
            await msg.nack(delay=delay)
            return "retry"
        await msg.ack()
        return "ack"

    async def _dead_letter(
        self,
        msg: NatsMessage,
        consumer: str,
        deliveries: int,
        error: str,
        *,
        event: Envelope[Any] | None,
        sub: Subscription,
    ) -> None:
        """Move a message to the service's dead-letter subject, then terminate it. When the
        message was a valid event, its workspace gets ``sub.failure_condition`` saying so."""
        raw = msg.raw_message
        body: bytes = msg.body
        try:
            payload, encoding = body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(body).decode("ascii"), "base64"
        seq = raw.metadata.sequence.stream
        letter = DeadLetter(
            service=self.service,
            consumer=consumer,
            subject=raw.subject,
            stream_sequence=seq,
            deliveries=deliveries,
            error=error[:4000],
            failed_at=self._clock(),
            payload=payload,
            payload_encoding=encoding,
            workspace=event.workspace if event else None,
            event_id=event.id if event else None,
        )
        await self._broker.publish(
            letter.model_dump_json().encode(),
            deadletter_subject(self.settings.subject_prefix, self.service),
            headers={"Nats-Msg-Id": f"deadletter:{self.settings.stream}:{seq}:{consumer}"},
            stream=self.settings.stream,
        )
        if event is not None and sub.failure_condition:
            await self._report(
                event,
                sub.failure_condition,
                DEADLETTER_REASON,
                f"{self.service} gave up on {event.type} after {deliveries} deliveries: "
                f"{error[:500]}. The event is kept on "
                f"{deadletter_subject(self.settings.subject_prefix, self.service)}; "
                "fix the cause, then re-apply the Workspace or wait for the next resync.",
            )
        await msg.reject()

    async def _report(self, event: Envelope[Any], ctype: str, reason: str, message: str) -> None:
        condition = Condition(
            type=ctype,
            status="False",
            reason=reason,
            message=message,
            observed_generation=event.workspace.generation,
        )
        await self.emit(ConditionReported(condition=condition), cause=event)


def subscriptions_by_type(subs: Sequence[Subscription]) -> dict[EventType, Subscription]:
    """Index ``subs`` by event type, refusing two handlers for one type in one service."""
    index: dict[EventType, Subscription] = {}
    for sub in subs:
        if sub.event_type in index:
            raise ValueError(f"two handlers for {sub.event_type} in one service")
        index[sub.event_type] = sub
    return index
