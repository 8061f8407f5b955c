"""The deployer: Kaito's inference reconcile (reference 2.5-2.7) as a service.

On ``PlanReady`` (inference) and ``ResourcesReady`` it stores what it learned, renders the
workspace's objects (``render.py``), applies what differs from the cluster (``apply.py``), and
assesses the workload and its pods (``health.py``). Conditions and ``InferenceReady`` /
``InferenceFailed`` are published only when they change. Watches on its workloads and their pods,
and a periodic resync, run the same pass again: a pod that becomes Ready or starts crash-looping
is reported, and a workload deleted or edited by hand is restored. On ``WorkspaceDeleting`` it
deletes the objects it created and answers ``CleanupDone``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from services.deployer import health
from services.deployer.render import Rendered, Target, config_name, headless_name, render
from shared.apply import decide, replacement, stamp
from shared.bus import Bus, Clock
from shared.cluster import ClusterApi
from shared.errors import KaitenError, PermanentError
from shared.events import (
    CleanupDone,
    Condition,
    ConditionReported,
    Envelope,
    EventData,
    InferenceFailed,
    InferenceReady,
    PlanReady,
    ResourcesReady,
    WorkspaceDeleting,
    WorkspaceRef,
    outcome_key,
)
from shared.kube import Manifest
from shared.labels import WORKSPACE_LABEL, WORKSPACE_NAMESPACE_LABEL
from shared.manifests import MANAGED_BY, manifest_key
from shared.pods import pod_ready
from shared.targets import TargetStore

log = structlog.get_logger(__name__)

APPLY_FAILED = "WorkspaceInferenceStatusFailed"
SUCCEEDED = ("workspaceSucceeded", "workspace succeeds")
PENDING = ("workspacePending", "waiting for inference workload readiness")
FAILED = "workspaceFailed"
Key = tuple[str, str]  # namespace, name
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


@dataclass(frozen=True, slots=True)
class DeployerOptions:
    resync_s: float = 300.0
    debounce_s: float = 0.1


class Deployer:
    def __init__(
        self,
        store: TargetStore,
        bus: Bus,
        cluster: ClusterApi,
        clock: Clock,
        options: DeployerOptions,
    ) -> None:
        self.store = store
        self.bus = bus
        self.cluster = cluster
        self.clock = clock
        self.options = options
        self._dirty: set[Key] = set()
        self._wake = asyncio.Event()

    # --- events --------------------------------------------------------------------------

    async def on_plan_ready(self, event: Envelope[PlanReady]) -> None:
        plan = event.data.plan
        if plan.mode != "inference":
            return
        ref = event.workspace
        if not await self.store.save_plan(ref, plan, self.clock()):
            log.info("inference.stale_generation", workspace=ref.key)
            return
        await self.reconcile(ref.uid, cause=event)

    async def on_resources_ready(self, event: Envelope[ResourcesReady]) -> None:
        ref = event.workspace
        await self.store.save_nodes(ref, event.data.node_names, self.clock())
        await self.reconcile(ref.uid, cause=event)

    async def on_deleting(self, event: Envelope[WorkspaceDeleting]) -> None:
        ref = event.workspace
        await self.store.mark_deleting(ref, self.clock())
        deleted = []
        for kind, name in owned_names(ref):
            live = await self.cluster.read(kind, ref.namespace, name)
            if live is None or not _owned_by(live, ref):
                continue  # gone, or a newer Workspace of the same name owns it
            if await self.cluster.delete(kind, ref.namespace, name):
                deleted.append(f"{kind}/{name}")
        await self.bus.report(
            ref, [CleanupDone(deleted=tuple(deleted))], now=self.clock(), cause=event
        )
        log.info("inference.cleaned", workspace=ref.key, deleted=deleted)

    # --- the reconcile pass --------------------------------------------------------------

    async def reconcile(self, uid: str, cause: Envelope[Any] | None = None) -> None:
        """Render, apply what differs, assess; publish what changed since the last time."""
        async with self.store.locked(uid) as lock:
            stored = lock.stored
            if stored is None or stored.state != "active" or stored.plan is None:
                return
            if stored.nodes is None:
                return  # the provisioner has not reported nodes yet
            ref = stored.ref
            target = Target(ref=ref, plan=stored.plan, nodes=stored.nodes)
            try:
                rendered = render(target)
                await self._apply(rendered)
                assessed = await self._assess(ref, rendered.workload)
                events = outcome_events(ref, rendered, assessed)
            except PermanentError as e:  # the API refused an object: say so, do not retry
                log.warning("inference.apply_refused", workspace=ref.key, error=e.message)
                events = failure_events(ref, APPLY_FAILED, e.message)
            key = outcome_key(events)
            if key == stored.published_key:
                return
            # A change back to an earlier outcome must not be taken for a duplicate of it.
            await self.bus.report(
                ref, events, now=self.clock(), cause=cause, after=stored.published_key or ""
            )
            await lock.record(key, self.clock(), phase=_phase(events))
            log.info("inference.assessed", workspace=ref.key, outcome=_summary(events))

    async def _apply(self, rendered: Rendered) -> None:
        for obj in rendered.objects:
            desired = stamp(obj)
            meta = desired["metadata"]
            live = await self.cluster.read(desired["kind"], meta["namespace"], meta["name"])
            action = decide(desired, live)
            if action == "create":
                await self.cluster.create(desired)
            elif action == "replace" and live is not None:
                await self.cluster.replace(replacement(desired, live))
            if action != "none":
                log.info("inference.applied", object=manifest_key(desired), action=action)

    async def _assess(self, ref: WorkspaceRef, workload: Manifest) -> health.Health:
        live = await self.cluster.read(workload["kind"], ref.namespace, ref.name)
        pods = await self.cluster.list("Pod", ref.namespace, _pod_selector(ref))
        waiting = {
            str(p["spec"]["nodeName"])
            for p in pods
            if (p.get("spec") or {}).get("nodeName") and not pod_ready(p)
        }
        nodes = await self.cluster.nodes(waiting) if waiting else {}
        return health.assess(live, pods, nodes)

    async def reconcile_key(self, key: Key) -> None:
        uid = await self.store.uid_for(*key)
        if uid is not None:
            await self.reconcile(uid)

    # --- watches and resync --------------------------------------------------------------

    async def run(self) -> None:
        """Re-assess a workspace whenever one of its objects or pods changes (so an object deleted
        or edited by hand is restored at once), and every workspace at each resync, until
        cancelled."""
        async with asyncio.TaskGroup() as group:
            managed = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
            for kind in (*WORKLOAD_KINDS, "Service", "ConfigMap"):
                group.create_task(self.cluster.follow(kind, managed, self._changed))
            group.create_task(self.cluster.follow("Pod", WORKSPACE_LABEL, self._changed))
            group.create_task(self._resync())
            group.create_task(self._work())

    async def _changed(self, _kind: str, obj: Manifest) -> None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        name, namespace = labels.get(WORKSPACE_LABEL), labels.get(WORKSPACE_NAMESPACE_LABEL)
        if name and namespace:
            self._dirty.add((namespace, name))
            self._wake.set()

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.options.resync_s)
            await self.reconcile_all()

    async def reconcile_all(self) -> None:
        for uid in await self.store.active():
            await _guarded(self.reconcile(uid), uid)

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.options.debounce_s)  # one pass for a burst of changes
            self._wake.clear()
            keys, self._dirty = self._dirty, set()
            for key in sorted(keys):
                await _guarded(self.reconcile_key(key), "/".join(key))


async def _guarded(work: Any, what: str) -> None:
    """One workspace's failure is logged; the next change or resync tries it again."""
    try:
        await work
    except KaitenError as e:
        log.warning("inference.failed", workspace=what, error=str(e))
    except Exception:
        log.exception("inference.error", workspace=what)


# --- pure helpers ----------------------------------------------------------------------------


def owned_names(ref: WorkspaceRef) -> list[tuple[str, str]]:
    """Every object the deployer may have created for ``ref``, workload first."""
    return [
        ("Deployment", ref.name),
        ("StatefulSet", ref.name),
        ("Service", ref.name),
        ("Service", headless_name(ref)),
        ("ConfigMap", config_name(ref)),
    ]


def outcome_events(
    ref: WorkspaceRef, rendered: Rendered, assessed: health.Health
) -> list[EventData]:
    if assessed.ready:
        return [
            _reported(ref, "InferenceReady", "True", assessed.reason, assessed.message),
            _reported(ref, "WorkspaceSucceeded", "True", *SUCCEEDED),
            InferenceReady(
                workload=manifest_key(rendered.workload),
                ready_replicas=max(1, assessed.ready_replicas),
                service=ref.name,
            ),
        ]
    if assessed.reason == health.PENDING:
        return [
            _reported(ref, "InferenceReady", "False", assessed.reason, assessed.message),
            _reported(ref, "WorkspaceSucceeded", "False", *PENDING),
        ]
    return failure_events(ref, assessed.reason, assessed.message)


def failure_events(ref: WorkspaceRef, reason: str, message: str) -> list[EventData]:
    return [
        _reported(ref, "InferenceReady", "False", reason, message),
        _reported(ref, "WorkspaceSucceeded", "False", FAILED, message),
        InferenceFailed(reason=reason, message=message),
    ]


def _reported(
    ref: WorkspaceRef, type_: str, status: str, reason: str, message: str
) -> ConditionReported:
    return ConditionReported(
        condition=Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            observed_generation=ref.generation,
        )
    )


def _phase(events: Sequence[EventData]) -> str:
    if any(isinstance(e, InferenceReady) for e in events):
        return "ready"
    return "failed" if any(isinstance(e, InferenceFailed) for e in events) else "pending"


def _summary(events: Sequence[EventData]) -> str:
    first = events[0]
    return first.condition.reason if isinstance(first, ConditionReported) else type(first).__name__


def _pod_selector(ref: WorkspaceRef) -> str:
    return f"{WORKSPACE_LABEL}={ref.name},{WORKSPACE_NAMESPACE_LABEL}={ref.namespace}"


def _owned_by(obj: Mapping[str, Any], ref: WorkspaceRef) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == ref.uid for r in refs)
