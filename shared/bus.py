"""The event bus: nats-py over one JetStream stream.

This module alone decides what happens to a delivered event:
- the handler returns: ack;
- ``PermanentError``: the error becomes a condition (when it names one) and the event is acked;
- ``TransientError`` or any other exception: a delayed NAK with exponential backoff, until the
  last allowed delivery, when the event is dead-lettered to ``<prefix>.v1.deadletter.<service>``
  and the workspace gets a condition saying so;
- a body that is not a valid event: dead-lettered at once (retrying cannot fix it).

Each service has one durable pull consumer per event type, shared by its replicas, so replicas
split the work. A consumer's loop fetches as many events as it has room for (``pull_batch`` in
flight) and starts a task per event; the task for an event about a workspace starts after the
previous one about that workspace has finished, so one workspace's events are handled in stream
order while other workspaces' run concurrently. Publishing sets a deterministic ``Nats-Msg-Id``
so JetStream drops duplicates.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
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

# A handler returns None when it is done with the event, or an awaitable for its outcome when
# it has taken the event in order and the rest may overlap the next event about the workspace
# (the event is acked once the awaitable is done, retried if it raises).
Handler = Callable[[Envelope[Any]], Awaitable[Awaitable[None] | None]]
# Seconds a pull request waits on the server for an event (an idle consumer asks again after
# it); a pausing replica waits for its requests to end, and a little more.
FETCH_WAIT_S = 0.5
PAUSE_MARGIN_S = 1.0
Clock = Callable[[], datetime]

DEADLETTER_REASON = "EventDeadLettered"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One handler for one event type. When an event is dead-lettered, ``failure_condition``
    is reported False on its workspace (``None``: report nothing)."""

    event_type: EventType
    handler: Handler
    failure_condition: str | None = "WorkspaceSucceeded"
    concurrency: int | None = None  # events in flight; None: the settings' pull_batch


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


class _Chains:
    """Tasks for one consumer's events, at most ``capacity`` at once. A task with a key starts
    once the previous task with that key has passed its turn: when it finished, or earlier when
    its work calls ``pass_turn`` (the handler took the event in order; what remains is to wait
    for the outcome). Once ``closing``, a task whose turn comes runs its ``release`` instead
    (hands the event back)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self._tails: dict[str, asyncio.Future[None]] = {}
        self._room = asyncio.Event()

    async def room(self) -> int:
        """Wait until fewer than ``capacity`` tasks are in flight; return how many may start."""
        while len(self.tasks) >= self.capacity and not self.closing:
            self._room.clear()
            await self._room.wait()
        return max(0, self.capacity - len(self.tasks))

    def close(self) -> None:
        """From now on hand events back rather than start them; wake a loop waiting for room."""
        self.closing = True
        self._room.set()

    def start(
        self,
        key: str | None,
        work: Callable[[Callable[[], None]], Awaitable[None]],
        release: Callable[[], Awaitable[None]],
    ) -> None:
        previous = self._tails.get(key) if key is not None else None
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if key is not None:
            self._tails[key] = turn
        task = asyncio.create_task(self._after(previous, turn, work, release))
        self.tasks.add(task)
        task.add_done_callback(lambda done: self._finished(key, turn, done))

    async def _after(
        self,
        previous: asyncio.Future[None] | None,
        turn: asyncio.Future[None],
        work: Callable[[Callable[[], None]], Awaitable[None]],
        release: Callable[[], Awaitable[None]],
    ) -> None:
        if previous is not None:
            await asyncio.wait((previous,))

        def pass_turn() -> None:
            if not turn.done():
                turn.set_result(None)

        await (release() if self.closing else work(pass_turn))

    def _finished(
        self, key: str | None, turn: asyncio.Future[None], task: asyncio.Task[None]
    ) -> None:
        self.tasks.discard(task)
        if not turn.done():
            turn.set_result(None)
        if key is not None and self._tails.get(key) is turn:
            del self._tails[key]
        self._room.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("event.task_failed", error=f"{type(error).__name__}: {error}")


async def _hand_back(messages: Sequence[Msg]) -> None:
    """NAK ``messages`` for redelivery now (to another replica): this one is stopping."""
    for msg in messages:
        with contextlib.suppress(nats.errors.Error):
            await msg.nak()


@dataclass(frozen=True, slots=True)
class _Consumer:
    """A durable pull consumer and the loop that drains it."""

    name: str
    subject: str
    config: ConsumerConfig
    loop: Callable[[JetStreamContext.PullSubscription], Coroutine[Any, Any, None]]


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
        self._nc = NatsClient()
        self._js = self._nc.jetstream()
        self._consumers: list[_Consumer] = []
        self._loops: list[tuple[asyncio.Task[None], JetStreamContext.PullSubscription]] = []
        # Work that must finish before the connection closes: event tasks and sink batches.
        self._in_flight: list[_Chains] = []

    @property
    def jetstream(self) -> JetStreamContext:
        return self._js

    def subscribe(self, sub: Subscription) -> None:
        """Register ``sub`` before ``start()``. Replicas share its durable consumer."""
        settings = self.settings
        name = consumer_name(self.service, sub.event_type)
        chains = _Chains(sub.concurrency or settings.pull_batch)
        self._in_flight.append(chains)

        def take(fetched: list[Msg]) -> None:
            for msg in fetched:
                self._dispatch(sub, name, msg, chains)

        async def loop(psub: JetStreamContext.PullSubscription) -> None:
            await self._pull(psub, name, chains, take, wait_s=FETCH_WAIT_S)

        self._consumers.append(
            _Consumer(
                name=name,
                subject=event_type_filter(settings.subject_prefix, sub.event_type),
                config=ConsumerConfig(
                    durable_name=name,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=settings.ack_wait_s,
                    max_deliver=settings.max_deliver,
                    max_ack_pending=1000,
                ),
                loop=loop,
            )
        )

    def sink(self, sink: StreamSink) -> None:
        """Register ``sink`` before ``start()``. A new consumer starts at the oldest message."""
        settings = self.settings
        name = f"{self.service}-{sink.name}"
        batches = _Chains(1)
        self._in_flight.append(batches)

        async def handle(raw: list[Msg], _pass_turn: Callable[[], None]) -> None:
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
                deliveries = max((m.metadata.num_delivered or 1) for m in raw)
                delay = retry_delay(deliveries, settings.retry_base_s, settings.retry_max_s)
                log.exception("sink.retry", sink=name, messages=len(raw), retry_in_s=delay)
                for m in raw:
                    await m.nak(delay=delay)
                return
            for m in raw:
                await m.ack()

        def take(raw: list[Msg]) -> None:
            # A task of its own, so that stop() lets a batch being written finish.
            batches.start(None, functools.partial(handle, raw), functools.partial(_hand_back, raw))

        async def loop(psub: JetStreamContext.PullSubscription) -> None:
            await self._pull(
                psub, name, batches, take, wait_s=sink.max_wait_s, batch=sink.batch_size
            )

        self._consumers.append(
            _Consumer(
                name=name,
                subject=stream_subjects(settings.subject_prefix)[0],
                config=ConsumerConfig(
                    durable_name=name,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=settings.ack_wait_s,
                    max_deliver=-1,
                    max_ack_pending=sink.batch_size * 4,
                ),
                loop=loop,
            )
        )

    async def start(self) -> None:
        """Connect, make sure the stream exists, then start a loop per registered consumer."""
        await self._nc.connect(
            servers=[url.strip() for url in self.settings.nats_url.split(",") if url.strip()],
            name=f"kaiten-{self.service}",
            # Keep trying while NATS is away; /readyz says so meanwhile.
            max_reconnect_attempts=-1,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        await self.ensure_stream()
        for consumer in self._consumers:
            psub = await self._pull_subscription(consumer)
            task = asyncio.create_task(consumer.loop(psub), name=f"pull-{consumer.name}")
            task.add_done_callback(self._loop_ended)
            self._loops.append((task, psub))

    async def pause(self) -> None:
        """Take no more events: end the pull loops and their subscriptions (so the server
        hands new events to other replicas), and hand back the events fetched whose handling
        has not started. Handlers in flight go on; ``stop()`` waits for them."""
        loops, self._loops = self._loops, []
        for chains in self._in_flight:
            chains.close()
        # A loop ends when its fetch returns (at most its wait), handing back what it got. Not
        # cancelled: a cancelled fetch leaves a pull request on the server that takes events
        # nobody reads (until the ack wait) and a queue that blocks unsubscribe.
        if loops:
            _, late = await asyncio.wait(
                [task for task, _ in loops], timeout=FETCH_WAIT_S + PAUSE_MARGIN_S
            )
            for task in late:
                task.cancel()
        for _, psub in loops:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await asyncio.wait_for(psub.unsubscribe(), PAUSE_MARGIN_S)

    async def stop(self) -> None:
        """``pause()``, wait for handlers in flight (up to the graceful timeout), then close
        the connection."""
        await self.pause()
        pending = {task for chains in self._in_flight for task in chains.tasks}
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.settings.graceful_timeout_s)
            for task in late:
                task.cancel()
            if late:
                log.warning("bus.stop_timeout", cancelled=len(late))
                await asyncio.gather(*late, return_exceptions=True)
        if not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=2)
            await self._nc.close()

    async def is_connected(self) -> bool:
        if not self._nc.is_connected:
            return False
        try:
            await self._nc.flush(timeout=1)
        except (nats.errors.Error, TimeoutError):
            return False
        return True

    async def ensure_stream(self) -> None:
        """Create the stream, or update it when its configuration changed. Idempotent."""
        js = self.jetstream
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
                ack = await self.jetstream.publish(
                    subject,
                    event.to_json(),
                    timeout=self.settings.publish_timeout_s,
                    stream=self.settings.stream,
                    headers={"Nats-Msg-Id": event.msg_id(after)},
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

    async def _pull_subscription(self, consumer: _Consumer) -> JetStreamContext.PullSubscription:
        subscribe = functools.partial(
            self.jetstream.pull_subscribe,
            consumer.subject,
            durable=consumer.name,
            stream=self.settings.stream,
            config=consumer.config,
        )
        try:
            return await subscribe()
        except BadRequestError:
            # A replica created the consumer between our lookup and our create: bind to it.
            return await subscribe()

    async def _fetch(
        self, psub: JetStreamContext.PullSubscription, name: str, wanted: int, *, wait_s: float
    ) -> list[Msg]:
        """Up to ``wanted`` messages, or none when ``wait_s`` passes or the connection is
        down (the loop asks again; unacked messages are delivered again by the server)."""
        try:
            return await psub.fetch(batch=wanted, timeout=wait_s)
        except TimeoutError:  # nats-py raises its own subclass, or the builtin
            return []
        except nats.errors.Error as e:
            log.debug("bus.fetch_failed", consumer=name, error=f"{type(e).__name__}: {e}")
            await asyncio.sleep(0.5)
            return []

    async def _pull(
        self,
        psub: JetStreamContext.PullSubscription,
        name: str,
        chains: _Chains,
        take: Callable[[list[Msg]], None],
        *,
        wait_s: float,
        batch: int | None = None,
    ) -> None:
        """Fetch while there is room in ``chains`` and hand what comes to ``take``, until the
        bus pauses; what a fetch brings after that is handed back."""
        while not chains.closing:
            room = await chains.room()
            if chains.closing:
                break
            fetched = await self._fetch(psub, name, batch or room, wait_s=wait_s)
            if chains.closing:
                await _hand_back(fetched)
                break
            if fetched:
                take(fetched)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            # Not expected: _fetch absorbs connection errors. Say so loudly.
            log.error(
                "bus.loop_failed", loop=task.get_name(), error=f"{type(error).__name__}: {error}"
            )

    async def _on_error(self, error: Exception) -> None:
        log.warning("bus.connection_error", error=f"{type(error).__name__}: {error}")

    async def _on_disconnected(self) -> None:
        log.warning("bus.disconnected")

    async def _on_reconnected(self) -> None:
        log.info(
            "bus.reconnected",
            server=str(self._nc.connected_url.netloc if self._nc.connected_url else ""),
        )

    def _dispatch(self, sub: Subscription, consumer: str, msg: Msg, chains: _Chains) -> None:
        """Start handling ``msg``: after the previous event about its workspace, if any."""
        started = time.perf_counter()
        deliveries = msg.metadata.num_delivered or 1
        try:
            event = decode_event(msg.data, expected=sub.event_type)
        except EventDecodeError as e:
            log.warning("event.invalid", subject=msg.subject, error=e.message)
            error = e.message

            async def reject(_pass_turn: Callable[[], None]) -> None:
                await self._dead_letter(msg, consumer, deliveries, error, event=None, sub=sub)
                self._metrics.handled.labels(self.service, sub.event_type.value, "deadletter").inc()

            chains.start(None, reject, functools.partial(_hand_back, [msg]))
            return
        chains.start(
            f"{consumer}/{event.workspace.uid}",
            functools.partial(
                self._handle,
                sub,
                consumer,
                msg,
                event=event,
                deliveries=deliveries,
                started=started,
            ),
            functools.partial(_hand_back, [msg]),
        )

    async def _handle(
        self,
        sub: Subscription,
        consumer: str,
        msg: Msg,
        pass_turn: Callable[[], None],
        *,
        event: Envelope[Any],
        deliveries: int,
        started: float,
    ) -> None:
        with structlog.contextvars.bound_contextvars(
            event_id=str(event.id),
            event_type=event.type.value,
            workspace=event.workspace.key,
            generation=event.workspace.generation,
            correlation_id=event.correlation_id,
        ):
            outcome = await self._run_handler(
                sub, consumer, msg, event, deliveries, pass_turn=pass_turn
            )
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
        msg: Msg,
        event: Envelope[Any],
        deliveries: int,
        *,
        pass_turn: Callable[[], None],
    ) -> str:
        """Run the handler and settle the message; returns the outcome label."""
        try:
            settled = await sub.handler(event)
            pass_turn()  # the next event about this workspace may start
            if settled is not None:
                await settled
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
            await msg.nak(delay=delay)
            return "retry"
        await msg.ack()
        return "ack"

    async def _dead_letter(
        self,
        msg: Msg,
        consumer: str,
        deliveries: int,
        error: str,
        *,
        event: Envelope[Any] | None,
        sub: Subscription,
    ) -> None:
        """Move a message to the service's dead-letter subject, then terminate it. When the
        message was a valid event, its workspace gets ``sub.failure_condition`` saying so."""
        body = msg.data
        try:
            payload, encoding = body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(body).decode("ascii"), "base64"
        seq = msg.metadata.sequence.stream
        letter = DeadLetter(
            service=self.service,
            consumer=consumer,
            subject=msg.subject,
            stream_sequence=seq,
            deliveries=deliveries,
            error=error[:4000],
            failed_at=self._clock(),
            payload=payload,
            payload_encoding=encoding,
            workspace=event.workspace if event else None,
            event_id=event.id if event else None,
        )
        await self.jetstream.publish(
            deadletter_subject(self.settings.subject_prefix, self.service),
            letter.model_dump_json().encode(),
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
        await msg.term()

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
