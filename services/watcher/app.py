"""Composition root of the watcher service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from presets.catalog import default_catalog
from services.watcher.kubeapi import WorkspaceApi
from services.watcher.service import Watcher, WatcherOptions
from services.watcher.store import WatcherStore
from services.watcher.webhook import WebhookSettings, serve_webhook
from shared.bus import Subscription
from shared.events import EventType
from shared.runner import ServiceContext, ServiceSpec
from shared.workspace.validation import ValidationContext


class WatcherSettings(BaseSettings):
    """``KAITEN_WATCHER_*``."""

    model_config = SettingsConfigDict(env_prefix="KAITEN_WATCHER_", extra="ignore", frozen=True)

    namespaces: str = Field(default="", description="Comma-separated namespaces; empty: all.")
    cleanup_timeout_s: float = Field(
        default=300.0, gt=0, description="Seconds deletion waits for CleanupDone. Default 300."
    )
    watch_timeout_s: int = Field(default=300, gt=0, description="Seconds per watch request.")


def make_watcher(ctx: ServiceContext) -> Watcher:
    if ctx.kube is None:
        raise RuntimeError("the watcher needs a Kubernetes client")
    settings = WatcherSettings()
    options = WatcherOptions(
        namespaces=tuple(n.strip() for n in settings.namespaces.split(",") if n.strip()),
        resync_s=ctx.settings.resync_period_s,
        cleanup_timeout_s=settings.cleanup_timeout_s,
        watch_timeout_s=settings.watch_timeout_s,
    )
    return Watcher(WorkspaceApi(ctx.kube), WatcherStore(ctx.db), ctx.bus, ctx.clock, options)


class _Holder:
    """The watcher of this process, built once with the handlers and used by the lifespan."""

    watcher: Watcher | None = None

    def get(self, ctx: ServiceContext) -> Watcher:
        if self.watcher is None:
            self.watcher = make_watcher(ctx)
        return self.watcher


def build_service() -> ServiceSpec:
    holder = _Holder()

    def handlers(ctx: ServiceContext) -> list[Subscription]:
        watcher = holder.get(ctx)
        routes: list[tuple[EventType, Callable[..., object]]] = [
            (EventType.CONDITION_REPORTED, watcher.on_condition),
            (EventType.RESOURCES_READY, watcher.on_resources_ready),
            (EventType.PLAN_READY, watcher.on_plan_ready),
            (EventType.CLEANUP_DONE, watcher.on_cleanup_done),
        ]
        # A dead-lettered status write must not report another condition about itself.
        return [Subscription(t, h, failure_condition=None) for t, h in routes]  # type: ignore[arg-type]

    @asynccontextmanager
    async def lifespan(ctx: ServiceContext) -> AsyncIterator[None]:
        async with webhook(ctx):
            task = asyncio.create_task(holder.get(ctx).run(), name="watch-workspaces")
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return ServiceSpec(name="watcher", handlers=handlers, uses_kube=True, lifespan=lifespan)


@asynccontextmanager
async def webhook(ctx: ServiceContext) -> AsyncIterator[None]:
    settings = WebhookSettings()
    if not settings.enabled:
        yield
        return
    validation = ValidationContext(
        catalog=default_catalog(),
        cloud=ctx.settings.cloud_provider,
        node_auto_provisioning=ctx.settings.node_auto_provisioning,
        local_cpu=ctx.settings.local_cpu,
    )
    async with serve_webhook(settings, validation, ctx.kube):
        yield
