"""Composition root of the deployer service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.deployer import tables
from services.deployer.service import Deployer
from shared.bus import Subscription
from shared.cluster import ClusterApi
from shared.events import EventType
from shared.runner import ServiceContext, ServiceSpec
from shared.targets import TargetStore
from shared.workloads import LoopOptions


def build_service() -> ServiceSpec:
    holder: dict[str, Deployer] = {}

    def deployer(ctx: ServiceContext) -> Deployer:
        if "deployer" not in holder:
            if ctx.kube is None:
                raise RuntimeError("the deployer needs a Kubernetes client")
            holder["deployer"] = Deployer(
                TargetStore(ctx.db, tables.targets, tables.handled_generations),
                ctx.bus,
                ClusterApi(ctx.kube),
                ctx.clock,
                LoopOptions(resync_s=ctx.settings.resync_period_s),
            )
        return holder["deployer"]

    def handlers(ctx: ServiceContext) -> list[Subscription]:
        d = deployer(ctx)
        return [
            Subscription(EventType.PLAN_READY, d.on_plan_ready),
            Subscription(EventType.RESOURCES_READY, d.on_resources_ready),
            Subscription(EventType.WORKSPACE_DELETING, d.on_deleting),
        ]

    @asynccontextmanager
    async def lifespan(ctx: ServiceContext) -> AsyncIterator[None]:
        task = asyncio.create_task(deployer(ctx).run(), name="deployer-watch")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return ServiceSpec(name="deployer", handlers=handlers, uses_kube=True, lifespan=lifespan)
