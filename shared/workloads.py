"""What the deployer and the tuner share: a service that keeps one workspace's objects in the
cluster from its plan and the nodes it got, and reports how they are doing.

``WorkloadService`` handles the events (``PlanReady`` of its mode, ``ResourcesReady``,
``WorkspaceDeleting``), stores them (``shared.targets``), and runs ``reconcile(uid)`` after each,
after every change of an object it watches (debounced: one pass for a burst of changes), and for
every workspace at each resync. On deletion it removes the objects it names for the workspace
(only those owned by that Workspace's uid) and answers ``CleanupDone``. Subclasses say what to
watch, what they own and how one reconcile pass goes.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog

from shared.apply import decide, replacement, stamp
from shared.background import each_limited, periodically
from shared.bus import Bus, Clock, Subscription
from shared.cluster import ClusterApi
from shared.errors import KaitenError
from shared.events import (
    CleanupDone,
    Envelope,
    EventType,
    PlanReady,
    ResourcesReady,
    WorkspaceDeleting,
    WorkspaceRef,
)
from shared.kube import Manifest
from shared.labels import WORKSPACE_LABEL, WORKSPACE_NAMESPACE_LABEL
from shared.manifests import manifest_key
from shared.pods import pod_ready
from shared.runner import ServiceContext, ServiceSpec
from shared.targets import TargetStore

log = structlog.get_logger(__name__)

Key = tuple[str, str]  # namespace, name
# Workspaces one pass reconciles at once.
PASS_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class LoopOptions:
    resync_s: float = 300.0
    debounce_s: float = 0.1
    retry_base_s: float = 0.5  # a workspace that failed is tried again after this, doubling
    retry_max_s: float = 30.0


class WorkloadService(ABC):
    mode: ClassVar[str]  # the plan mode this service acts on: "inference" or "tuning"

    def __init__(
        self,
        store: TargetStore,
        bus: Bus,
        cluster: ClusterApi,
        clock: Clock,
        options: LoopOptions,
    ) -> None:
        self.store = store
        self.bus = bus
        self.cluster = cluster
        self.clock = clock
        self.loop_options = options
        self._dirty: set[Key] = set()
        self._wake = asyncio.Event()
        self.log = log.bind(mode=self.mode)

    # --- what subclasses say ---------------------------------------------------------------

    @abstractmethod
    async def reconcile(self, uid: str, cause: Envelope[Any] | None = None) -> None:
        """One pass for one workspace: apply what differs, assess, publish what changed."""

    @abstractmethod
    def owned_names(self, ref: WorkspaceRef) -> list[tuple[str, str]]:
        """(kind, name) of every object the service may have created for ``ref``."""

    @abstractmethod
    def watched(self) -> list[tuple[str, str]]:
        """(kind, label selector) of the objects whose changes call for a pass."""

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """More work to run next to the watches (none by default)."""
        return []

    def forget(self, uid: str) -> None:  # noqa: B027 -- an optional hook
        """Drop what the service keeps in memory for a deleted workspace (nothing by default)."""

    # --- events ----------------------------------------------------------------------------

    async def on_plan_ready(self, event: Envelope[PlanReady]) -> None:
        plan = event.data.plan
        if plan.mode != self.mode:
            return
        ref = event.workspace
        if not await self.store.save_plan(ref, plan, self.clock()):
            self.log.info("workload.stale_generation", workspace=ref.key)
            return
        await self.reconcile(ref.uid, cause=event)

    async def on_resources_ready(self, event: Envelope[ResourcesReady]) -> None:
        ref = event.workspace
        await self.store.save_nodes(ref, event.data.node_names, self.clock())
        await self.reconcile(ref.uid, cause=event)

    async def on_deleting(self, event: Envelope[WorkspaceDeleting]) -> None:
        ref = event.workspace
        await self.store.mark_deleting(ref, self.clock())
        self.forget(ref.uid)
        deleted = []
        for kind, name in self.owned_names(ref):
            live = await self.cluster.read(kind, ref.namespace, name)
            if live is None or not owned_by(live, ref):
                continue  # gone, or a newer Workspace of the same name owns it
            if await self.cluster.delete(kind, ref.namespace, name):
                deleted.append(f"{kind}/{name}")
        await self.bus.report(
            ref, [CleanupDone(deleted=tuple(deleted))], now=self.clock(), cause=event
        )
        self.log.info("workload.cleaned", workspace=ref.key, deleted=deleted)

    async def apply(self, objects: Sequence[Manifest]) -> None:
        """Create what is missing and replace what differs (``shared.apply``), in order."""
        for obj in objects:
            desired = stamp(obj)
            meta = desired["metadata"]
            live = await self.cluster.read(desired["kind"], meta["namespace"], meta["name"])
            action = decide(desired, live)
            if action == "create":
                await self.cluster.create(desired)
            elif action == "replace" and live is not None:
                await self.cluster.replace(replacement(desired, live))
            if action != "none":
                self.log.info("workload.applied", object=manifest_key(desired), action=action)

    async def pods_and_nodes(
        self, ref: WorkspaceRef, owner_uid: str | None = None
    ) -> tuple[list[Manifest], dict[str, Manifest]]:
        """The workspace's pods (only those controlled by ``owner_uid`` when given), and the
        nodes of the scheduled ones that are not ready: their conditions explain why."""
        pods = await self.cluster.list("Pod", ref.namespace, pod_selector(ref))
        if owner_uid is not None:
            pods = [p for p in pods if controller_uid(p) == owner_uid]
        waiting = {
            str(p["spec"]["nodeName"])
            for p in pods
            if (p.get("spec") or {}).get("nodeName") and not pod_ready(p)
        }
        return pods, (await self.cluster.nodes(waiting) if waiting else {})

    # --- watches and resync ----------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile a workspace whenever one of its watched objects changes (so an object
        deleted or edited by hand is restored at once), and every workspace at each resync,
        until cancelled."""
        async with asyncio.TaskGroup() as group:
            for kind, selector in self.watched():
                group.create_task(self.cluster.follow(kind, selector, self._changed))
            group.create_task(self._resync())
            group.create_task(self._work())
            for work in self.background():
                group.create_task(work)

    async def _changed(self, _kind: str, obj: Manifest) -> None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        name, namespace = labels.get(WORKSPACE_LABEL), labels.get(WORKSPACE_NAMESPACE_LABEL)
        if name and namespace:
            self._dirty.add((namespace, name))
            self._wake.set()

    async def _resync(self) -> None:
        await periodically("resync", self.loop_options.resync_s, self.reconcile_all)

    async def reconcile_all(self) -> None:
        for uid in await self.store.active():
            await self.guarded(self.reconcile(uid), uid)

    async def reconcile_key(self, key: Key) -> None:
        uid = await self.store.uid_for(*key)
        if uid is not None:
            await self.reconcile(uid)

    async def _work(self) -> None:
        delay = self.loop_options.retry_base_s
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.loop_options.debounce_s)  # one pass for a burst
            self._wake.clear()
            keys, self._dirty = self._dirty, set()
            ordered = sorted(keys)
            done = await self._reconcile_keys(ordered)
            failed = {k for k, ok in zip(ordered, done, strict=True) if not ok}
            if not failed:
                delay = self.loop_options.retry_base_s
                continue
            # The database, the API or NATS away for a moment: try those again soon, not at
            # the next resync minutes away.
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.loop_options.retry_max_s)
            self._dirty |= failed
            self._wake.set()

    async def _reconcile_keys(self, keys: Sequence[Key]) -> list[bool]:
        """Reconcile ``keys``, several at once (each holds its own row lock and waits on the API);
        whether each succeeded."""

        async def one(key: Key) -> bool:
            return await self.guarded(self.reconcile_key(key), "/".join(key))

        return await each_limited(PASS_CONCURRENCY, keys, one)

    async def guarded(self, work: Coroutine[Any, Any, None], what: str) -> bool:
        """Await one workspace's work; a failure is logged and False returned."""
        try:
            await work
        except KaitenError as e:
            self.log.warning("workload.failed", workspace=what, error=str(e))
        except Exception:
            self.log.exception("workload.error", workspace=what)
        else:
            return True
        return False


def workload_spec(
    name: str,
    build: Callable[[TargetStore, Bus, ClusterApi, Clock, ServiceContext], WorkloadService],
    tables: Any,
) -> ServiceSpec:
    """The ServiceSpec of a workload service: one instance per process (``build`` gets the
    store over ``tables.targets`` and ``tables.handled_generations``), its three event
    handlers, and its watches running for the service's lifetime."""
    holder: dict[str, WorkloadService] = {}

    def service(ctx: ServiceContext) -> WorkloadService:
        if name not in holder:
            if ctx.kube is None:
                raise RuntimeError(f"the {name} needs a Kubernetes client")
            store = TargetStore(ctx.db, tables.targets, tables.handled_generations)
            holder[name] = build(store, ctx.bus, ClusterApi(ctx.kube), ctx.clock, ctx)
        return holder[name]

    def handlers(ctx: ServiceContext) -> list[Subscription]:
        s = service(ctx)
        return [
            Subscription(EventType.PLAN_READY, s.on_plan_ready),
            Subscription(EventType.RESOURCES_READY, s.on_resources_ready),
            Subscription(EventType.WORKSPACE_DELETING, s.on_deleting),
        ]

    @asynccontextmanager
    async def lifespan(ctx: ServiceContext) -> AsyncIterator[None]:
        ctx.background.start(service(ctx).run(), f"{name}-watch")
        try:
            yield
        finally:
            await ctx.background.close()

    return ServiceSpec(name=name, handlers=handlers, uses_kube=True, lifespan=lifespan)


def owned_by(obj: Mapping[str, Any], ref: WorkspaceRef) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == ref.uid for r in refs)


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((str(r.get("uid")) for r in refs if r.get("controller")), None)


def pod_selector(ref: WorkspaceRef) -> str:
    return f"{WORKSPACE_LABEL}={ref.name},{WORKSPACE_NAMESPACE_LABEL}={ref.namespace}"
