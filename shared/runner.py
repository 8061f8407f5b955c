"""The service runner: the composition root every service starts through.

``run(spec)`` reads the settings, configures logging, connects the database, the Kubernetes
client (for services that use it) and the bus, registers the service's handlers, starts the
health server, and waits. On SIGTERM or SIGINT it reports not-ready, stops taking new events,
lets the events in flight finish (up to ``KAITEN_GRACEFUL_TIMEOUT_S``), closes everything and
returns 0. A background task (a watch) that fails stops the service the same way, and it returns 1.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import structlog
from kubernetes_asyncio import client
from nats.errors import Error as NatsError
from prometheus_client import CollectorRegistry

from shared.background import Background
from shared.bus import Bus, Clock, StreamSink, Subscription, subscriptions_by_type, utcnow
from shared.db import Database
from shared.errors import ConfigError
from shared.health import HealthServer
from shared.kube import new_api_client
from shared.logs import configure_logging
from shared.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """The ports a service's handlers are built from."""

    settings: Settings
    bus: Bus
    db: Database
    kube: client.ApiClient | None
    clock: Clock
    # Watches and sweeps: one that ends on an error stops the service (see shared.background).
    background: Background = field(default_factory=Background)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What a service is: its name, its handlers, and whether it talks to Kubernetes.
    ``pending`` says what is not implemented yet; it is logged at start so nobody mistakes
    an idle service for a working one."""

    name: str
    handlers: Callable[[ServiceContext], Sequence[Subscription]]
    uses_kube: bool = False
    pending: str = ""
    # Extra servers or tasks (the watcher's admission webhook): entered once the bus runs,
    # exited before it stops.
    lifespan: Callable[[ServiceContext], AbstractAsyncContextManager[Any]] | None = None
    # Consumers of the whole stream (the watcher's audit log).
    sinks: Callable[[ServiceContext], Sequence[StreamSink]] | None = None
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)


async def serve(spec: ServiceSpec, settings: Settings, stop: asyncio.Event) -> None:
    """Run ``spec`` until ``stop`` is set, then shut down gracefully."""
    async with AsyncExitStack() as stack:
        db = Database(settings.database_url)
        stack.push_async_callback(db.close)
        if not await db.ping():
            raise ConfigError(
                f"PostgreSQL does not answer at {_redact(settings.database_url)}: start it or "
                "set DATABASE_URL, then run `kaiten migrate`"
            )
        kube = (
            await new_api_client(settings, user_agent=f"kaiten-{spec.name}")
            if spec.uses_kube
            else None
        )
        if kube is not None:
            stack.push_async_callback(kube.close)

        bus = Bus(settings, spec.name, registry=spec.registry)
        background = Background(on_failure=lambda _error: stop.set())
        ctx = ServiceContext(
            settings=settings, bus=bus, db=db, kube=kube, clock=utcnow, background=background
        )
        subscriptions = subscriptions_by_type(spec.handlers(ctx))
        for sub in subscriptions.values():
            bus.subscribe(sub)
        for sink in spec.sinks(ctx) if spec.sinks is not None else ():
            bus.sink(sink)

        health = HealthServer(
            settings.health_host,
            settings.health_port_for(spec.name),
            registry=spec.registry,
            checks={"bus": bus.is_connected, "database": db.ping},
        )
        await health.start()
        stack.push_async_callback(health.stop)

        try:
            await asyncio.wait_for(bus.start(), timeout=settings.start_timeout_s)
        except (TimeoutError, OSError, NatsError) as e:
            raise ConfigError(
                f"NATS JetStream does not answer at {settings.nats_url} "
                f"({type(e).__name__} after up to {settings.start_timeout_s:.0f} s): "
                "start nats-server with -js or set NATS_URL"
            ) from e
        stack.push_async_callback(bus.stop)
        stack.push_async_callback(background.close)
        if spec.lifespan is not None:
            await stack.enter_async_context(spec.lifespan(ctx))
        log.info(
            "service.started",
            consumes=sorted(t.value for t in subscriptions),
            health_port=health.port,
            pending=spec.pending or None,
        )
        await stop.wait()
        log.info("service.stopping", graceful_timeout_s=settings.graceful_timeout_s)
        await bus.pause()  # new events go to other replicas; those in flight finish below
        health.draining = True
    if background.failure is not None:
        raise ServiceFailedError(
            f"{spec.name} stopped: its background task failed "
            f"({type(background.failure).__name__}: {background.failure})"
        ) from background.failure
    log.info("service.stopped")


def run(spec: ServiceSpec, settings: Settings | None = None) -> int:
    """Entry point of ``kaiten run <service>`` and ``python -m services.<service>``."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format, service=spec.name)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(spec, settings, stop)

    try:
        asyncio.run(main())
    except ConfigError as e:
        log.error("service.config_error", error=str(e))  # noqa: TRY400 -- the message is the fix
        return 2
    except ServiceFailedError as e:
        log.error("service.failed", error=str(e))  # noqa: TRY400 -- logged with its traceback
        return 1
    return 0


class ServiceFailedError(Exception):
    """A service stopped itself because a background task (a watch, a sweep) failed."""


def _redact(url: str) -> str:
    """``url`` without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}@{host}"
