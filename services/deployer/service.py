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

from collections.abc import Sequence
from typing import Any

import structlog

from services.deployer import health
from services.deployer.render import config_name, headless_name, render
from shared.errors import PermanentError
from shared.events import (
    ConditionReported,
    Envelope,
    EventData,
    InferenceFailed,
    InferenceReady,
    WorkspaceRef,
    condition_reported,
    outcome_key,
    previous_outcome,
)
from shared.kube import Manifest
from shared.labels import WORKSPACE_LABEL
from shared.manifests import MANAGED_BY, Rendered, Target, manifest_key
from shared.workloads import WorkloadService

log = structlog.get_logger(__name__)

APPLY_FAILED = "WorkspaceInferenceStatusFailed"
SUCCEEDED = ("workspaceSucceeded", "workspace succeeds")
PENDING = ("workspacePending", "waiting for inference workload readiness")
FAILED = "workspaceFailed"
Key = tuple[str, str]  # namespace, name
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


class Deployer(WorkloadService):
    mode = "inference"

    def owned_names(self, ref: WorkspaceRef) -> list[tuple[str, str]]:
        """Every object the deployer may have created for ``ref``, workload first."""
        return [
            ("Deployment", ref.name),
            ("StatefulSet", ref.name),
            ("Service", ref.name),
            ("Service", headless_name(ref)),
            ("ConfigMap", config_name(ref)),
        ]

    def watched(self) -> list[tuple[str, str]]:
        managed = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
        return [(kind, managed) for kind in (*WORKLOAD_KINDS, "Service", "ConfigMap")] + [
            ("Pod", WORKSPACE_LABEL)
        ]

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
                await self.apply(rendered.objects)
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
                ref,
                events,
                now=self.clock(),
                cause=cause,
                after=previous_outcome(stored.published_key, stored.updated_at),
            )
            await lock.record(key, self.clock(), phase=_phase(events))
            log.info("inference.assessed", workspace=ref.key, outcome=_summary(events))

    async def _assess(self, ref: WorkspaceRef, workload: Manifest) -> health.Health:
        live = await self.cluster.read(workload["kind"], ref.namespace, ref.name)
        pods, nodes = await self.pods_and_nodes(ref)
        return health.assess(live, pods, nodes)


# --- pure helpers ----------------------------------------------------------------------------


def outcome_events(
    ref: WorkspaceRef, rendered: Rendered, assessed: health.Health
) -> list[EventData]:
    if assessed.ready:
        return [
            condition_reported(ref, "InferenceReady", "True", assessed.reason, assessed.message),
            condition_reported(ref, "WorkspaceSucceeded", "True", *SUCCEEDED),
            InferenceReady(
                workload=manifest_key(rendered.workload),
                ready_replicas=max(1, assessed.ready_replicas),
                service=ref.name,
            ),
        ]
    if assessed.reason == health.PENDING:
        return [
            condition_reported(ref, "InferenceReady", "False", assessed.reason, assessed.message),
            condition_reported(ref, "WorkspaceSucceeded", "False", *PENDING),
        ]
    return failure_events(ref, assessed.reason, assessed.message)


def failure_events(ref: WorkspaceRef, reason: str, message: str) -> list[EventData]:
    return [
        condition_reported(ref, "InferenceReady", "False", reason, message),
        condition_reported(ref, "WorkspaceSucceeded", "False", FAILED, message),
        InferenceFailed(reason=reason, message=message),
    ]


def _phase(events: Sequence[EventData]) -> str:
    if any(isinstance(e, InferenceReady) for e in events):
        return "ready"
    return "failed" if any(isinstance(e, InferenceFailed) for e in events) else "pending"


def _summary(events: Sequence[EventData]) -> str:
    first = events[0]
    return first.condition.reason if isinstance(first, ConditionReported) else type(first).__name__
