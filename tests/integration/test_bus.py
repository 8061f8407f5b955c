"""The bus against a real NATS JetStream: round trip, retry, dead-letter, dedup, replicas."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from prometheus_client import CollectorRegistry

from shared.bus import (
    DEADLETTER_REASON,
    Bus,
    Handler,
    KeyedLocks,
    Subscription,
    consumer_name,
)
from shared.errors import PermanentError, TransientError
from shared.events import (
    ConditionReported,
    DeadLetter,
    Envelope,
    EventType,
    ResourcesReady,
    deadletter_subject,
    decode_event,
    event_subject,
    event_type_filter,
)
from shared.settings import Settings
from tests.support.bus import event, stream_reader, workspace
from tests.support.polling import eventually


def ready(node: str) -> ResourcesReady:
    return ResourcesReady(node_names=(node,))


def handled_outcomes(registry: CollectorRegistry, service: str, outcome: str) -> float:
    value = registry.get_sample_value(
        "kaiten_events_handled_total",
        {"service": service, "type": EventType.RESOURCES_READY.value, "outcome": outcome},
    )
    return value or 0.0


class Harness:
    """Running buses of one test, stopped at the end."""

    def __init__(self, settings: Settings, stack: AsyncExitStack) -> None:
        self.settings = settings
        self._stack = stack
        self.publisher: Bus | None = None

    async def bus(
        self,
        service: str = "deployer",
        handler: Handler | None = None,
        registry: CollectorRegistry | None = None,
        settings: Settings | None = None,
    ) -> Bus:
        bus = Bus(settings or self.settings, service, registry=registry or CollectorRegistry())
        if handler is not None:
            bus.subscribe(Subscription(EventType.RESOURCES_READY, handler))
        await bus.start()
        self._stack.push_async_callback(bus.stop)
        return bus

    async def publish(self, env: Envelope[Any]) -> bool:
        if self.publisher is None:
            self.publisher = await self.bus("provisioner")
        return await self.publisher.publish(env)


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    async with AsyncExitStack() as stack:
        yield Harness(settings, stack)


async def test_event_round_trip_through_a_durable_consumer_is_acked(
    harness: Harness, settings: Settings
) -> None:
    received: list[Envelope[Any]] = []

    async def on_ready(ev: Envelope[Any]) -> None:
        received.append(ev)

    await harness.bus(handler=on_ready)
    sent = event(ready("node-a"))
    assert await harness.publish(sent) is True

    await eventually(lambda: received, what="the event to reach the handler")
    assert received == [sent]
    async with stream_reader(settings) as reader:
        durable = consumer_name("deployer", EventType.RESOURCES_READY)

        async def acked() -> bool:
            info = await reader.consumer(durable)
            floor = info.ack_floor.consumer_seq if info.ack_floor else 0
            return floor == 1 and info.num_ack_pending == 0

        await eventually(acked, what="the consumer's ack floor to reach the event")
        info = await reader.consumer(durable)
        assert info.config.filter_subject == event_type_filter(
            settings.subject_prefix, EventType.RESOURCES_READY
        )
        stored = await reader.messages(f"{settings.subject_prefix}.v1.>")
    assert [decode_event(raw) for raw in stored] == [sent]


async def test_transient_error_is_redelivered_with_delay_then_succeeds(harness: Harness) -> None:
    deliveries: list[float] = []
    loop = asyncio.get_running_loop()

    async def flaky(_ev: Envelope[Any]) -> None:
        deliveries.append(loop.time())
        if len(deliveries) < 3:
            raise TransientError("API server answered 503")

    registry = CollectorRegistry()
    await harness.bus(handler=flaky, registry=registry)
    await harness.publish(event(ready("node-a")))

    await eventually(lambda: handled_outcomes(registry, "deployer", "ack") == 1, what="success")
    assert len(deliveries) == 3
    assert handled_outcomes(registry, "deployer", "retry") == 2
    # delayed NAKs: base 0.1 s, then 0.2 s (not the immediate redelivery of a plain NAK)
    assert deliveries[1] - deliveries[0] >= 0.09
    assert deliveries[2] - deliveries[1] >= 0.19


async def test_always_failing_event_is_dead_lettered_and_the_consumer_keeps_serving(
    harness: Harness, settings: Settings
) -> None:
    handled: Counter[str] = Counter()

    async def handler(ev: Envelope[Any]) -> None:
        node = ev.data.node_names[0]
        handled[node] += 1
        if node == "poison":
            raise RuntimeError("cannot parse the node list")

    registry = CollectorRegistry()
    await harness.bus(handler=handler, registry=registry)
    ws = workspace()
    poison = event(ready("poison"), ws)
    await harness.publish(poison)
    for i in range(5):
        await harness.publish(event(ready(f"good-{i}")))

    await eventually(lambda: handled_outcomes(registry, "deployer", "deadletter") == 1)
    assert handled["poison"] == settings.max_deliver
    assert all(handled[f"good-{i}"] == 1 for i in range(5))

    async with stream_reader(settings) as reader:
        letters = await reader.messages(deadletter_subject(settings.subject_prefix, "deployer"))
        conditions = await eventually(
            lambda: reader.messages(
                event_subject(
                    settings.subject_prefix, EventType.CONDITION_REPORTED, ws.namespace, ws.name
                )
            ),
            what="the dead-letter condition",
        )
        info = await reader.consumer(consumer_name("deployer", EventType.RESOURCES_READY))
    assert len(letters) == 1
    letter = DeadLetter.model_validate_json(letters[0])
    assert letter.deliveries == settings.max_deliver
    assert letter.event_id == poison.id
    assert "RuntimeError: cannot parse the node list" in letter.error
    assert decode_event(letter.payload.encode()) == poison
    reported = decode_event(conditions[0])
    assert isinstance(reported.data, ConditionReported)
    assert reported.data.condition.reason == DEADLETTER_REASON
    assert reported.data.condition.status == "False"
    assert reported.causation_id == poison.id
    assert info.num_ack_pending == 0
    assert info.num_pending == 0


async def test_body_that_is_not_an_event_is_dead_lettered_without_retries(
    harness: Harness, settings: Settings
) -> None:
    calls: list[Envelope[Any]] = []

    async def handler(ev: Envelope[Any]) -> None:
        calls.append(ev)

    registry = CollectorRegistry()
    await harness.bus(handler=handler, registry=registry)
    subject = event_subject(settings.subject_prefix, EventType.RESOURCES_READY, "default", "x")
    nc = await nats.connect(settings.nats_url)
    try:
        await nc.jetstream().publish(subject, b"\xff\x00 not json", stream=settings.stream)
    finally:
        await nc.close()

    await eventually(lambda: handled_outcomes(registry, "deployer", "deadletter") == 1)
    async with stream_reader(settings) as reader:
        letters = await reader.messages(deadletter_subject(settings.subject_prefix, "deployer"))
    letter = DeadLetter.model_validate_json(letters[0])
    assert letter.deliveries == 1
    assert letter.payload_encoding == "base64"
    assert letter.workspace is None
    assert "not a Kaiten event envelope" in letter.error
    assert calls == []


async def test_permanent_error_is_acked_once_and_becomes_a_condition(
    harness: Harness, settings: Settings
) -> None:
    attempts: list[int] = []

    async def handler(_ev: Envelope[Any]) -> None:
        attempts.append(1)
        raise PermanentError(
            "QuotaExceeded", "quota of Standard_NC6s_v3 exceeded", condition="ResourceReady"
        )

    registry = CollectorRegistry()
    await harness.bus(handler=handler, registry=registry)
    ws = workspace()
    await harness.publish(event(ready("n"), ws))
    await eventually(lambda: handled_outcomes(registry, "deployer", "permanent") == 1)
    async with stream_reader(settings) as reader:
        subject = event_subject(
            settings.subject_prefix, EventType.CONDITION_REPORTED, ws.namespace, ws.name
        )
        raw = await eventually(lambda: reader.messages(subject), what="the condition")
    condition = decode_event(raw[0]).data
    assert isinstance(condition, ConditionReported)
    assert (condition.condition.type, condition.condition.reason) == (
        "ResourceReady",
        "QuotaExceeded",
    )
    assert condition.condition.message == "quota of Standard_NC6s_v3 exceeded"
    assert attempts == [1]


async def test_duplicate_publish_inside_the_dedup_window_is_delivered_once(
    harness: Harness,
) -> None:
    seen: list[str] = []

    async def handler(ev: Envelope[Any]) -> None:
        seen.append(ev.data.node_names[0])

    await harness.bus(handler=handler)
    ws = workspace()
    first = event(ready("node-a"), ws)
    # The same fact published again (a retried publish, a replica): a new id, same content.
    again = first.model_copy(update={"id": event(ready("x")).id})
    assert await harness.publish(first) is True
    assert await harness.publish(again) is False
    assert await harness.publish(event(ready("marker"), ws)) is True

    await eventually(lambda: "marker" in seen, what="the marker event")
    assert sorted(seen) == ["marker", "node-a"]


async def test_two_replicas_share_one_consumer_and_no_event_is_handled_twice(
    harness: Harness,
) -> None:
    by_replica: dict[str, list[str]] = {"a": [], "b": []}

    def handler_for(replica: str) -> Handler:
        async def handler(ev: Envelope[Any]) -> None:
            await asyncio.sleep(0.005)  # a little work, so both replicas pull
            by_replica[replica].append(ev.data.node_names[0])

        return handler

    await harness.bus(handler=handler_for("a"))
    await harness.bus(handler=handler_for("b"))
    sent = [f"node-{i}" for i in range(200)]
    await asyncio.gather(*(harness.publish(event(ready(n))) for n in sent))

    await eventually(lambda: len(by_replica["a"]) + len(by_replica["b"]) >= len(sent))
    both = by_replica["a"] + by_replica["b"]
    assert sorted(both) == sorted(sent)
    assert len(set(both)) == len(both)
    assert by_replica["a"]
    assert by_replica["b"]


async def test_starting_with_new_retention_updates_the_existing_stream(
    harness: Harness, settings: Settings
) -> None:
    await harness.bus()
    await harness.bus(settings=settings.model_copy(update={"stream_max_age_s": 3600.0}))
    nc = await nats.connect(settings.nats_url)
    try:
        info = await nc.jetstream().stream_info(settings.stream)
    finally:
        await nc.close()
    assert info.config.max_age == 3600.0
    assert info.config.subjects == [f"{settings.subject_prefix}.v1.>"]
    assert json.loads(json.dumps(info.config.duplicate_window)) == settings.duplicate_window_s


async def test_a_publish_whose_ack_times_out_is_retried_and_stored_once(
    harness: Harness, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = await harness.bus(service="provisioner")
    real_publish = bus.jetstream.publish
    calls: list[float | None] = []

    async def ack_lost_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("timeout"))
        ack = await real_publish(*args, **kwargs)
        if len(calls) == 1:
            raise NatsTimeoutError  # JetStream stored it; only the ack went missing
        return ack

    monkeypatch.setattr(bus.jetstream, "publish", ack_lost_once)
    sent = event(ready("node-retry"))
    # The second try is the same message id: JetStream reports it as a duplicate, not new.
    assert await bus.publish(sent) is False
    assert calls == [settings.publish_timeout_s, settings.publish_timeout_s]
    async with stream_reader(settings) as reader:
        stored = await reader.messages(f"{settings.subject_prefix}.v1.>")
    assert [decode_event(m).id for m in stored] == [sent.id]


async def test_a_publish_that_never_gets_an_ack_fails_after_its_attempts(
    harness: Harness, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = await harness.bus(service="provisioner")
    calls = 0

    async def never_acked(*_args: Any, **_kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        raise NatsTimeoutError

    monkeypatch.setattr(bus.jetstream, "publish", never_acked)
    with pytest.raises(NatsTimeoutError):
        await bus.publish(event(ready("node-lost")))
    assert calls == settings.publish_attempts


async def test_one_workspaces_events_are_handled_in_stream_order_others_concurrently(
    harness: Harness, settings: Settings
) -> None:
    """The bus handles a fetched batch concurrently but keeps each workspace's events in
    stream order (an older report must never be applied after a newer one), while other
    workspaces' events overlap."""
    first, second = workspace("ordered-a"), workspace("ordered-b")
    publisher = await harness.bus("provisioner")
    sent = []
    for i in range(12):
        for ws in (first, second):
            env = event(ready(f"node-{i}"), ws)
            sent.append(env)
            await publisher.publish(env)
    handled: dict[str, list[str]] = {first.uid: [], second.uid: []}
    running = 0
    overlap = 0

    async def slow_then_fast(ev: Envelope[Any]) -> None:
        nonlocal running, overlap
        running += 1
        overlap = max(overlap, running)
        node = ev.data.node_names[0]
        # Earlier events take longer: unordered handling would finish them last.
        await asyncio.sleep(0.02 * (12 - int(node.split("-")[1])) / 12)
        handled[ev.workspace.uid].append(node)
        running -= 1

    await harness.bus(
        handler=slow_then_fast, settings=settings.model_copy(update={"pull_batch": 24})
    )
    await eventually(lambda: sum(map(len, handled.values())) == 24, what="every event handled")
    expected = [f"node-{i}" for i in range(12)]
    assert handled[first.uid] == expected
    assert handled[second.uid] == expected
    assert overlap >= 2  # the two workspaces did not wait for each other


def test_keyed_locks_forget_keys_nobody_holds() -> None:
    locks = KeyedLocks()

    async def use() -> None:
        async with locks.hold("a"), locks.hold("b"):
            assert len(locks) == 2
        assert len(locks) == 0

    asyncio.run(use())


async def test_a_paused_replica_hands_back_the_events_it_fetched_but_did_not_start(
    harness: Harness,
) -> None:
    """Stopping: the event in flight finishes; the one queued behind it (same workspace) goes
    to the other replica at once, not after the ack wait."""
    first_started, release = asyncio.Event(), asyncio.Event()
    stopping: list[str] = []
    other: list[str] = []

    async def slow(ev: Envelope[Any]) -> None:
        stopping.append(ev.data.node_names[0])
        first_started.set()
        await release.wait()

    async def quick(ev: Envelope[Any]) -> None:
        other.append(ev.data.node_names[0])

    replica = await harness.bus(handler=slow)
    ws = workspace("paused")
    await harness.publish(event(ready("node-1"), ws))
    await harness.publish(event(ready("node-2"), ws))
    await asyncio.wait_for(first_started.wait(), timeout=10)
    await replica.pause()
    await harness.bus(handler=quick)
    release.set()
    await eventually(lambda: other == ["node-2"], what="node-2 on the other replica")
    assert stopping == ["node-1"]


async def test_a_handler_that_returns_its_outcome_lets_the_next_event_start_first(
    harness: Harness,
) -> None:
    """A handler may take an event in order and return an awaitable for the outcome: the next
    event about the workspace starts at once; each is acked (or retried) by its own outcome."""
    started: list[str] = []
    outcomes: dict[str, asyncio.Future[None]] = {}

    async def take(ev: Envelope[Any]) -> asyncio.Future[None]:
        node = ev.data.node_names[0]
        started.append(node)
        outcomes[node] = asyncio.get_running_loop().create_future()
        return outcomes[node]

    await harness.bus(handler=take)
    ws = workspace("outcomes")
    await harness.publish(event(ready("node-1"), ws))
    await harness.publish(event(ready("node-2"), ws))
    await eventually(lambda: started == ["node-1", "node-2"], what="both taken, unsettled")
    outcomes["node-2"].set_result(None)
    outcomes["node-1"].set_exception(TransientError("the write failed", delay=0.1))
    await eventually(lambda: started == ["node-1", "node-2", "node-1"], what="node-1 retried")
    outcomes["node-1"].set_result(None)
