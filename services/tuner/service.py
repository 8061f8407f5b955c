"""The tuner: Kaito's tuning reconcile (reference 5.4, 1.6) as a service.

On ``PlanReady`` (tuning) and ``ResourcesReady`` it stores what it learned and runs a pass:
render the training ConfigMap and the Job (``render.py``), apply the ConfigMap when it differs,
create the Job when there is none and replace it (foreground deletion, then create) when it
belongs to another revision, then assess the Job and its pods (``status.py``) and publish the
conditions and ``TuningStarted`` / ``TuningProgress`` / ``TuningSucceeded`` / ``TuningFailed``
when they change. While the trainer runs, its ``GET /progress`` is read through the API server's
pod proxy every ``progress_s`` (no route to the pod network needed); the progress becomes the
WorkspaceSucceeded message and a ``TuningProgress`` event. On ``WorkspaceDeleting`` the Job and
the ConfigMap go, and ``CleanupDone`` is published.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from presets.layout import HTTP_PORT
from services.tuner.render import config_name, output_image, render, tuning_of
from services.tuner.status import (
    Assessment,
    Progress,
    assess,
    outcome,
    parse_progress,
    started,
)
from shared.background import periodically
from shared.bus import Bus, Clock
from shared.cluster import ClusterApi
from shared.errors import KaitenError, PermanentError
from shared.events import Envelope, EventData, WorkspaceRef, outcome_key, previous_outcome
from shared.kube import AlreadyExistsError, Manifest
from shared.labels import REVISION_ANNOTATION, WORKSPACE_LABEL
from shared.manifests import MANAGED_BY, Target
from shared.plan import Plan
from shared.targets import TargetStore
from shared.workloads import LoopOptions, WorkloadService, owned_by

log = structlog.get_logger(__name__)

JOB_REFUSED = "JobRefused"
_PROGRESS_ERRORS = (KaitenError, ValueError, TypeError, OSError, TimeoutError, aiohttp.ClientError)


@dataclass(frozen=True, slots=True)
class TunerOptions(LoopOptions):
    progress_s: float = 15.0  # how often a running trainer's progress is read
    progress_timeout_s: float = 5.0


class JobConflictError(PermanentError):
    def __init__(self, message: str) -> None:
        super().__init__("JobConflict", message)


class Tuner(WorkloadService):
    mode = "tuning"

    def __init__(
        self, store: TargetStore, bus: Bus, cluster: ClusterApi, clock: Clock, options: TunerOptions
    ) -> None:
        super().__init__(store, bus, cluster, clock, options)
        self.options = options
        self._running: set[str] = set()  # uids whose trainer may report progress
        self._progress: dict[str, Progress] = {}  # the last progress read, per uid

    def owned_names(self, ref: WorkspaceRef) -> list[tuple[str, str]]:
        return [("Job", ref.name), ("ConfigMap", config_name(ref))]

    def watched(self) -> list[tuple[str, str]]:
        managed = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
        return [("Job", managed), ("ConfigMap", managed), ("Pod", WORKSPACE_LABEL)]

    def background(self) -> list[Coroutine[Any, Any, None]]:
        return [self._poll_progress()]

    def forget(self, uid: str) -> None:
        self._running.discard(uid)
        self._progress.pop(uid, None)

    # --- the reconcile pass --------------------------------------------------------------

    async def reconcile(
        self, uid: str, cause: Envelope[Any] | None = None, *, read_progress: bool = False
    ) -> None:
        """Apply, assess, publish what changed. ``read_progress``: ask the trainer even when a
        progress report is at hand (the periodic poll); otherwise only when there is none."""
        async with self.store.locked(uid) as lock:
            stored = lock.stored
            if stored is None or stored.state != "active" or stored.plan is None:
                return
            if stored.plan.mode != "tuning" or stored.nodes is None:
                return  # not a tuning plan, or the provisioner has not reported nodes yet
            ref, plan = stored.ref, stored.plan
            try:
                rendered = render(Target(ref=ref, plan=plan, nodes=stored.nodes))
                await self.apply(rendered.objects[:-1])
                job, waiting = await self._ensure_job(ref, rendered.workload)
                assessed = await self._assess(ref, job)
                if job is None and waiting:
                    assessed = Assessment("pending", assessed.reason, waiting)
                progress = await self._progress_of(uid, ref, assessed, refresh=read_progress)
                events = outcome(ref, ref.name, assessed, progress, output_of(plan))
            except PermanentError as e:  # the API refused an object: say so, do not retry
                self.log.warning("tuning.apply_refused", workspace=ref.key, error=e.message)
                assessed = Assessment("failed", JOB_REFUSED, e.message)
                events = outcome(ref, ref.name, assessed, None, output_of(plan))
            self._track(uid, assessed)
            key = outcome_key(events)
            if key == stored.published_key:
                return
            announce: list[EventData] = started(stored.phase, assessed.phase, ref.name)
            await self.bus.report(
                ref,
                [*events, *announce],
                now=self.clock(),
                cause=cause,
                after=previous_outcome(stored.published_key, stored.updated_at),
            )
            await lock.record(key, self.clock(), phase=assessed.phase)
            self.log.info(
                "tuning.assessed", workspace=ref.key, phase=assessed.phase, reason=assessed.reason
            )

    async def _ensure_job(
        self, ref: WorkspaceRef, desired: Manifest
    ) -> tuple[Manifest | None, str]:
        """The Job of this revision: created when absent, the old one deleted first when the
        revision changed. Returns (None, why) while a Job being deleted is still there."""
        name = ref.name
        live = await self.cluster.read("Job", ref.namespace, name)
        if live is not None and (live.get("metadata") or {}).get("deletionTimestamp"):
            return None, f"waiting for the previous tuning Job {name} to be deleted"
        if live is not None and not _current(live, desired, ref):
            if not owned_by(live, ref) and not _managed(live):
                raise JobConflictError(
                    f"a Job named {name} already exists in namespace {ref.namespace} and is not "
                    "Kaiten's: delete or rename it, or rename the Workspace"
                )
            await self.cluster.delete("Job", ref.namespace, name, propagation="Foreground")
            self.log.info(
                "tuning.job_replaced",
                workspace=ref.key,
                old_revision=_revision(live),
                revision=_revision(desired),
            )
            live = await self.cluster.read("Job", ref.namespace, name)
            if live is not None:  # its pods go first (foreground deletion)
                return None, f"waiting for the previous tuning Job {name} to be deleted"
        if live is not None:
            return live, ""
        try:
            created = await self.cluster.create(desired)
        except AlreadyExistsError:
            return None, f"waiting for the previous tuning Job {name} to be deleted"
        self.log.info("tuning.job_created", workspace=ref.key, revision=_revision(desired))
        return created, ""

    async def _assess(self, ref: WorkspaceRef, job: Manifest | None) -> Assessment:
        if job is None:
            return assess(None, [], {})
        pods, nodes = await self.pods_and_nodes(
            ref, owner_uid=(job.get("metadata") or {}).get("uid")
        )
        return assess(job, pods, nodes)

    async def _progress_of(
        self, uid: str, ref: WorkspaceRef, assessed: Assessment, *, refresh: bool
    ) -> Progress | None:
        if assessed.phase != "running" or assessed.running_pod is None:
            self._progress.pop(uid, None)
            return None
        if uid in self._progress and not refresh:
            return self._progress[uid]
        try:
            body = await asyncio.wait_for(
                self.cluster.pod_get(ref.namespace, assessed.running_pod, HTTP_PORT, "/progress"),
                timeout=self.options.progress_timeout_s,
            )
        except _PROGRESS_ERRORS as e:  # not serving yet, or gone: keep what was last read
            self.log.debug("tuning.progress_unavailable", workspace=ref.key, error=str(e))
            return self._progress.get(uid)
        progress = parse_progress(body)
        if progress is not None:
            self._progress[uid] = progress
        return self._progress.get(uid)

    def _track(self, uid: str, assessed: Assessment) -> None:
        if assessed.phase == "running":
            self._running.add(uid)
        else:
            self._running.discard(uid)

    async def _poll_progress(self) -> None:
        async def poll() -> None:
            for uid in sorted(self._running):
                await self.guarded(self.reconcile(uid, read_progress=True), uid)

        await periodically("tuning-progress", self.options.progress_s, poll)


# --- pure helpers ----------------------------------------------------------------------------


def output_of(plan: Plan) -> str:
    """What TuningSucceeded names as the output when the pusher did not report a digest."""
    tuning = tuning_of(plan)
    image = output_image(tuning)
    return image if image is not None else f"results volume at {tuning.output_dir}"


def _revision(obj: Mapping[str, Any]) -> str | None:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(REVISION_ANNOTATION)
    return None if value is None else str(value)


def _current(live: Mapping[str, Any], desired: Mapping[str, Any], ref: WorkspaceRef) -> bool:
    """The live Job is this Workspace's, of the revision planned."""
    return owned_by(live, ref) and _revision(live) == _revision(desired)


def _managed(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in MANAGED_BY.items())
