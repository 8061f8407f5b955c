"""The planner's handler: WorkspaceObserved in, one persisted decision per generation out, as
PlanReady, or PlanRejected with a condition saying what to change. The thinking is in
``planning.py``; this module only reads, stores and publishes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog

from services.planner.planning import ConfigMaps, PlanOptions, Rejection, plan_workspace
from services.planner.planning import configmaps_needed as needed
from services.planner.store import Decision, Outcome, PlannerStore
from shared.bus import Bus, Clock
from shared.events import (
    Condition,
    ConditionReported,
    Envelope,
    EventData,
    PlanReady,
    PlanRejected,
    WorkspaceObserved,
    new_event,
)
from shared.plan import Plan

log = structlog.get_logger(__name__)

ReadConfigMaps = Callable[[str, Sequence[str]], Awaitable[ConfigMaps]]
CONDITION = "WorkspaceSucceeded"
MAX_MESSAGE = 32768


class Planner:
    def __init__(
        self,
        store: PlannerStore,
        bus: Bus,
        read_configmaps: ReadConfigMaps,
        options: PlanOptions,
        clock: Clock,
    ) -> None:
        self.store = store
        self.bus = bus
        self.read_configmaps = read_configmaps
        self.options = options
        self.clock = clock

    async def on_observed(self, event: Envelope[WorkspaceObserved]) -> None:
        ref = event.workspace
        if not await self.store.claim(ref, self.clock()):
            log.info("plan.stale_generation")
            return
        existing = await self.store.get(ref)
        if existing is not None and existing.outcome == "ready":
            await self._announce(existing, event)  # a ready plan is final for its generation
            return
        obj = event.data.workspace
        configmaps = await self.read_configmaps(ref.namespace, needed(obj))
        inputs = inputs_hash(event.data.spec_hash, configmaps)
        if existing is not None and existing.inputs_hash == inputs:
            await self._announce(existing, event)
            return
        result = plan_workspace(obj, configmaps, self.options)
        events = self._events(result, event, replaces_rejection=existing is not None)
        outcome: Outcome = "rejected" if isinstance(result, Rejection) else "ready"
        decision = await self.store.record(ref, outcome, inputs, events, self.clock())
        await self._announce(decision, event)

    async def _announce(self, decision: Decision, cause: Envelope[Any]) -> None:
        """Publish the decision's stored events unless that was done: a redelivery after a crash
        between storing and publishing publishes them now, with their original ids."""
        if decision.published:
            log.info("plan.already_published", outcome=decision.outcome)
            return
        for stored in decision.events:
            await self.bus.publish(stored)
        await self.store.mark_published(cause.workspace, decision.inputs_hash, self.clock())
        log.info("plan.published", outcome=decision.outcome, events=len(decision.events))

    def _events(
        self, result: Plan | Rejection, cause: Envelope[Any], *, replaces_rejection: bool
    ) -> list[Envelope[Any]]:
        gen = cause.workspace.generation
        data: list[EventData]
        if isinstance(result, Rejection):
            condition = Condition(
                type=CONDITION,
                status="False",
                reason=result.reason,
                message=result.message[:MAX_MESSAGE],
                observed_generation=gen,
            )
            data = [
                ConditionReported(condition=condition),
                PlanRejected(
                    reason=result.reason, message=result.message, problems=result.problems
                ),
            ]
        else:
            data = [
                PlanReady(
                    mode=result.mode,
                    preset=result.preset or "",
                    instance_type=result.instance_type or "",
                    node_count=result.node_count,
                    plan=result,
                )
            ]
            if replaces_rejection:  # clear the rejection's condition: work goes on
                pending = Condition(
                    type=CONDITION,
                    status="False",
                    reason="workspacePending",
                    message=f"planned {result.node_count} node(s); waiting for resources",
                    observed_generation=gen,
                )
                data.insert(0, ConditionReported(condition=pending))
        now = self.clock()
        return [
            new_event(d, source=self.bus.service, workspace=cause.workspace, now=now, cause=cause)
            for d in data
        ]


def inputs_hash(spec_hash: str, configmaps: Mapping[str, Mapping[str, str] | None]) -> str:
    content = json.dumps([spec_hash, configmaps], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(content.encode()).hexdigest()
