"""Composition root of the tuner service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.tuner import tables
from services.tuner.service import Tuner, TunerOptions
from shared.bus import Subscription
from shared.cluster import ClusterApi
from shared.events import EventType
from shared.runner import ServiceContext, ServiceSpec
from shared.targets import TargetStore


def build_service() -> ServiceSpec:
    holder: dict[str, Tuner] = {}

    def tuner(ctx: ServiceContext) -> Tuner:
        if "tuner" not in holder:
            if ctx.kube is None:
                raise RuntimeError("the tuner needs a Kubernetes client")
            holder["tuner"] = Tuner(
                TargetStore(ctx.db, tables.targets, tables.handled_generations),
                ctx.bus,
                ClusterApi(ctx.kube),
                ctx.clock,
                options=TunerOptions(
                    resync_s=ctx.settings.resync_period_s,
                    progress_s=ctx.settings.tuning_progress_s,
                ),
            )
        return holder["tuner"]

    def handlers(ctx: ServiceContext) -> list[Subscription]:
        t = tuner(ctx)
        return [
            Subscription(EventType.PLAN_READY, t.on_plan_ready),
            Subscription(EventType.RESOURCES_READY, t.on_resources_ready),
            Subscription(EventType.WORKSPACE_DELETING, t.on_deleting),
        ]

    @asynccontextmanager
    async def lifespan(ctx: ServiceContext) -> AsyncIterator[None]:
        task = asyncio.create_task(tuner(ctx).run(), name="tuner-watch")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return ServiceSpec(name="tuner", handlers=handlers, uses_kube=True, lifespan=lifespan)
