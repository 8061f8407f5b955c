"""The planner against real NATS JetStream and PostgreSQL: one decision per generation, stored
and announced once, whatever is redelivered."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from prometheus_client import CollectorRegistry

from presets.catalog import default_catalog
from presets.catalog.prices import default_prices
from services.planner.planning import ConfigMaps, PlanOptions
from services.planner.service import Planner
from services.planner.store import PlannerStore
from shared.bus import Bus, Subscription
from shared.db import Database
from shared.events import (
    Envelope,
    EventType,
    WorkspaceObserved,
    WorkspaceRef,
    decode_event,
    new_event,
)
from shared.settings import Settings
from tests.support.bus import stream_reader
from tests.support.polling import eventually

SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"


@dataclass
class FakeConfigMaps:
    """The cluster's ConfigMaps as far as the planner can see them; counts reads."""

    data: dict[str, dict[str, str]] = field(default_factory=dict)
    reads: int = 0

    async def read(self, _namespace: str, names: Sequence[str]) -> ConfigMaps:
        self.reads += 1
        return {name: self.data.get(name) for name in names}


@dataclass
class Env:
    settings: Settings
    planner: Planner
    publisher: Bus
    configmaps: FakeConfigMaps

    def observed(
        self,
        obj: dict[str, Any],
        ref: WorkspaceRef,
        trigger: Literal["added", "changed", "resync", "relist"] = "added",
    ) -> Envelope[Any]:
        data = WorkspaceObserved(workspace=obj, spec_hash=f"h{ref.generation}", trigger=trigger)
        return new_event(data, source="watcher", workspace=ref, now=datetime.now(UTC))

    async def stored(self, kind: EventType, ref: WorkspaceRef) -> list[Envelope[Any]]:
        prefix = self.settings.subject_prefix
        async with stream_reader(self.settings) as reader:
            raw = await reader.messages(f"{prefix}.v1.{kind.value}.{ref.namespace}.{ref.name}")
        return [decode_event(m) for m in raw]


@pytest.fixture
async def env(settings: Settings) -> AsyncIterator[Env]:
    async with AsyncExitStack() as stack:
        db = Database(settings.database_url)
        stack.push_async_callback(db.close)
        bus = Bus(settings, "planner", registry=CollectorRegistry())
        configmaps = FakeConfigMaps()
        options = PlanOptions(default_catalog(), default_prices())
        planner = Planner(
            PlannerStore(db), bus, configmaps.read, options, lambda: datetime.now(UTC)
        )
        bus.subscribe(Subscription(EventType.WORKSPACE_OBSERVED, planner.on_observed))
        publisher = Bus(settings, "watcher", registry=CollectorRegistry())
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        await bus.start()
        stack.push_async_callback(bus.stop)
        yield Env(settings, planner, publisher, configmaps)


def seed(name: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((SEEDS / name).read_text())
    return obj


def ref_for(obj: dict[str, Any], generation: int = 1) -> WorkspaceRef:
    return WorkspaceRef(
        uid=str(uuid.uuid4()),
        namespace="default",
        name=f"{obj['metadata']['name']}-{uuid.uuid4().hex[:6]}",
        generation=generation,
    )


async def test_a_seed_gets_one_plan_and_redeliveries_publish_nothing_new(env: Env) -> None:
    obj = seed("inference-phi-3-mini.yaml")
    ref = ref_for(obj)
    first = env.observed(obj, ref)
    await env.publisher.publish(first)

    async def one_plan() -> list[Envelope[Any]] | None:
        plans = await env.stored(EventType.PLAN_READY, ref)
        return plans or None

    plans = await eventually(one_plan, what="PlanReady")
    plan = plans[0].data.plan
    assert (plan.node_count, plan.runtime.name, plan.dtype) == (1, "transformers", "float16")
    assert plans[0].causation_id == first.id

    # The same generation again: a resync through the bus, and the very same event handled twice.
    await env.publisher.publish(env.observed(obj, ref, trigger="resync"))
    await env.planner.on_observed(first)
    await env.planner.on_observed(first)
    # The resync went through the bus: wait until the planner acked it.
    await eventually(lambda: _consumer_idle(env.settings), what="the resync to be handled")
    assert [e.id for e in await env.stored(EventType.PLAN_READY, ref)] == [plans[0].id]
    assert await env.stored(EventType.PLAN_REJECTED, ref) == []


async def _consumer_idle(settings: Settings) -> bool:
    async with stream_reader(settings) as reader:
        info = await reader.consumer("planner-workspace-observed")
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_a_new_generation_gets_a_new_plan_and_an_old_one_is_dropped(env: Env) -> None:
    obj = seed("tuning-phi-3-mini.yaml")
    ref2 = ref_for(obj, generation=2)
    await env.planner.on_observed(env.observed(obj, ref2))
    old = ref2.model_copy(update={"generation": 1})
    await env.planner.on_observed(env.observed(obj, old))
    plans = await env.stored(EventType.PLAN_READY, ref2)
    assert [p.workspace.generation for p in plans] == [2]
    assert plans[0].data.plan.tuning.method == "qlora"


async def test_a_model_too_big_is_rejected_with_a_condition_naming_what_fits(env: Env) -> None:
    obj = seed("inference-phi-3-mini.yaml")
    obj["inference"]["preset"]["name"] = "phi-3-medium-4k-instruct"
    ref = ref_for(obj)
    event = env.observed(obj, ref)
    await env.planner.on_observed(event)
    await env.planner.on_observed(event)

    rejected = await env.stored(EventType.PLAN_REJECTED, ref)
    conditions = await env.stored(EventType.CONDITION_REPORTED, ref)
    assert len(rejected) == 1
    assert len(conditions) == 1
    assert rejected[0].data.reason == "InsufficientGPUMemory"
    condition = conditions[0].data.condition
    assert (condition.type, condition.status, condition.reason) == (
        "WorkspaceSucceeded",
        "False",
        "InsufficientGPUMemory",
    )
    assert "short" in condition.message
    assert "Instance types that fit" in condition.message
    assert await env.stored(EventType.PLAN_READY, ref) == []


async def test_a_missing_configmap_rejects_until_it_exists(env: Env) -> None:
    obj = seed("tuning-phi-3.yaml")
    obj["tuning"]["config"] = "my-training"
    ref = ref_for(obj)
    await env.planner.on_observed(env.observed(obj, ref))
    rejected = await env.stored(EventType.PLAN_REJECTED, ref)
    assert [r.data.reason for r in rejected] == ["ConfigMapNotFound"]
    assert rejected[0].data.problems[0].field == "tuning.config"

    # Nothing changed: the resync publishes nothing new.
    await env.planner.on_observed(env.observed(obj, ref, trigger="resync"))
    assert len(await env.stored(EventType.PLAN_REJECTED, ref)) == 1

    # The user creates the ConfigMap: the next resync plans, and the condition is cleared.
    env.configmaps.data["my-training"] = {
        "training_config.yaml": "training_config:\n  TrainingArguments:\n    num_train_epochs: 2\n"
    }
    await env.planner.on_observed(env.observed(obj, ref, trigger="resync"))
    plans = await env.stored(EventType.PLAN_READY, ref)
    assert len(plans) == 1
    tuning = plans[0].data.plan.tuning
    assert tuning.config_source == "configmap/my-training"
    assert "num_train_epochs: 2" in tuning.config_yaml
    conditions = [c.data.condition for c in await env.stored(EventType.CONDITION_REPORTED, ref)]
    assert [c.reason for c in conditions] == ["ConfigMapNotFound", "workspacePending"]

    # Once ready, the plan is final for its generation: a ConfigMap edit changes nothing.
    reads = env.configmaps.reads
    env.configmaps.data["my-training"] = {"training_config.yaml": "training_config: {}\n"}
    await env.planner.on_observed(env.observed(obj, ref, trigger="resync"))
    assert len(await env.stored(EventType.PLAN_READY, ref)) == 1
    assert env.configmaps.reads == reads  # a ready plan is not re-read, let alone re-planned


async def test_a_decision_stored_but_not_published_is_published_on_redelivery(
    env: Env,
) -> None:
    obj = seed("inference-phi-3-mini-adapter.yaml")
    ref = ref_for(obj)
    event = env.observed(obj, ref)
    # A crash after storing the decision and before publishing it: the store has it unpublished.
    publish = env.planner.bus.publish
    calls = 0

    async def crash(_event: Envelope[Any]) -> bool:
        nonlocal calls
        calls += 1
        raise ConnectionError("NATS went away")

    env.planner.bus.publish = crash  # type: ignore[method-assign,assignment]
    with pytest.raises(ConnectionError):
        await env.planner.on_observed(event)
    env.planner.bus.publish = publish  # type: ignore[method-assign]
    assert calls == 1
    stored = await env.planner.store.get(ref)
    assert stored is not None
    assert not stored.published

    await env.planner.on_observed(copy.deepcopy(event))
    plans = await env.stored(EventType.PLAN_READY, ref)
    assert [p.id for p in plans] == [stored.events[0].id]  # the stored event, not a new one
    adapters = plans[0].data.plan.adapters
    assert [(a.name, a.strength) for a in adapters] == [("phi-3-adapter", 1.0)]
