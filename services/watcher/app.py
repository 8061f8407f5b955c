"""Composition root of the watcher service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

import structlog
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from presets.catalog import default_catalog
from services.watcher.audit import AuditLog
from services.watcher.kubeapi import WorkspaceApi
from services.watcher.service import STATUS_CONCURRENCY, Watcher, WatcherOptions
from services.watcher.store import WatcherStore
from services.watcher.webhook import WebhookSettings, serve_webhook
from shared.background import periodically
from shared.bus import StreamSink, Subscription
from shared.events import EventType
from shared.runner import ServiceContext, ServiceSpec
from shared.workspace.validation import ValidationContext

log = structlog.get_logger(__name__)


class WatcherSettings(BaseSettings):
    """``KAITEN_WATCHER_*``."""

    model_config = SettingsConfigDict(env_prefix="KAITEN_WATCHER_", extra="ignore", frozen=True)

    namespaces: str = Field(default="", description="Comma-separated namespaces; empty: all.")
    cleanup_timeout_s: float = Field(
        default=300.0, gt=0, description="Seconds deletion waits for CleanupDone. Default 300."
    )
    watch_timeout_s: int = Field(default=300, gt=0, description="Seconds per watch request.")
    audit_retention_days: float = Field(
        default=90.0,
        ge=0,
        description="Days the audit log keeps each message (0: forever). Default 90.",
    )


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
    return Watcher(
        WorkspaceApi(ctx.kube),
        WatcherStore(ctx.db),
        ctx.bus,
        ctx.clock,
        options,
        audit=AuditLog(ctx.db),
    )


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
        return [
            Subscription(t, h, failure_condition=None, concurrency=STATUS_CONCURRENCY)  # type: ignore[arg-type]
            for t, h in routes
        ]

    def sinks(ctx: ServiceContext) -> list[StreamSink]:
        return [StreamSink("audit", holder.get(ctx).on_messages)]

    @asynccontextmanager
    async def lifespan(ctx: ServiceContext) -> AsyncIterator[None]:
        async with webhook(ctx):
            watcher = holder.get(ctx)
            ctx.background.start(watcher.run(), "watch-workspaces")
            retention = WatcherSettings().audit_retention_days
            if retention > 0:
                ctx.background.start(_prune_forever(watcher, retention), "audit-prune")
            try:
                yield
            finally:
                await ctx.background.close()

    return ServiceSpec(
        name="watcher", handlers=handlers, uses_kube=True, lifespan=lifespan, sinks=sinks
    )


async def _prune_forever(watcher: Watcher, days: float, every_s: float = 3600.0) -> None:
    """Forget audit messages older than ``days``, at start and then hourly."""

    async def prune() -> None:
        removed = await watcher.prune_audit(timedelta(days=days))
        if removed:
            log.info("audit.pruned", messages=removed, older_than_days=days)

    await periodically("audit-prune", every_s, prune, at_start=True)


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
