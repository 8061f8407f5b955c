"""The provisioner's two halves.

``Provisioner`` is Kaito's NodeProvisioner: on ``PlanReady`` (and whenever a Node or NodeClaim
changes) it assesses each workspace against the cluster (``nodes.assess``), creates the
NodeClaims that are missing, labels GPU nodes, and publishes the outcome and conditions when
they change. On ``WorkspaceDeleting`` it deletes the workspace's NodeClaims and answers
``CleanupDone``.

``ClaimController`` is the gpu-provisioner role (backends ``azure`` and ``simulated``): it turns
each Kaito NodeClaim into one cloud instance, writes the NodeClaim status Karpenter core would
(Launched, Registered, Initialized, Ready), deletes the instance when the NodeClaim goes (it
holds the ``karpenter.sh/termination`` finalizer), and collects instances whose NodeClaim is
gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog

from services.provisioner.claims import (
    AGENTPOOL_LABELS,
    TERMINATION_FINALIZER,
    Launch,
    claim_status,
    is_kaito_owned,
    launched,
    node_for_pool,
    pool_spec,
)
from services.provisioner.cloud import CloudError, CloudProvider
from services.provisioner.kubeapi import ClusterApi
from services.provisioner.nodes import (
    ACCELERATOR,
    ACCELERATOR_LABEL,
    Assessment,
    Cloud,
    Failed,
    Manifest,
    Pending,
    Ready,
    Target,
    assess,
    condition_of,
    is_deleting,
    labels_of,
    name_of,
    owner_of,
)
from services.provisioner.store import ProvisionerStore, WorkspaceKey
from shared.background import each_limited, periodically
from shared.bus import Bus, Clock
from shared.errors import KaitenError, PermanentError, TransientError
from shared.events import (
    CleanupDone,
    Condition,
    ConditionReported,
    Envelope,
    EventData,
    PlanReady,
    ResourcesFailed,
    ResourcesPending,
    ResourcesReady,
    WorkspaceDeleting,
    WorkspaceRef,
    outcome_key,
    previous_outcome,
)
from shared.labels import WORKSPACE_LABEL, WORKSPACE_NAMESPACE_LABEL

log = structlog.get_logger(__name__)

Backend = Literal["byo", "karpenter", "azure", "simulated"]


# Workspaces one pass assesses at once (each holds its own row lock).
PASS_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class ProvisionerOptions:
    backend: Backend = "karpenter"
    cloud: Cloud = "azure"
    resync_s: float = 300.0
    debounce_s: float = 0.1
    retry_base_s: float = 0.5
    retry_max_s: float = 30.0

    @property
    def provisions(self) -> bool:
        return self.backend != "byo"


class Provisioner:
    def __init__(
        self,
        store: ProvisionerStore,
        bus: Bus,
        cluster: ClusterApi,
        clock: Clock,
        options: ProvisionerOptions,
    ) -> None:
        self.store = store
        self.bus = bus
        self.cluster = cluster
        self.clock = clock
        self.options = options
        self._dirty = asyncio.Event()
        # What the next pass looks at: these workspaces, or every one when _full.
        self._keys: set[tuple[str, str]] = set()
        self._full = True
        # The nodes as the watch last saw them (an informer's cache): every assessment reads
        # them, and listing every node per workspace made a burst quadratic. None until listed.
        self._nodes: dict[str, Manifest] | None = None
        self._listing: dict[str, Manifest] = {}
        # The same for NodeClaims, by workspace (namespace, name) then claim name.
        self._claims: dict[tuple[str, str], dict[str, Manifest]] | None = None
        self._claims_listing: dict[tuple[str, str], dict[str, Manifest]] = {}

    # --- events --------------------------------------------------------------------------

    async def on_plan_ready(self, event: Envelope[PlanReady]) -> None:
        ref = event.workspace
        if not await self.store.claim(ref, self.clock()):
            log.info("resources.stale_generation", workspace=ref.key)
            return
        await self.store.save(Target.from_plan(ref, event.data.plan), self.clock())
        await self.reconcile(ref.uid, cause=event)

    async def on_deleting(self, event: Envelope[WorkspaceDeleting]) -> None:
        ref = event.workspace
        await self.store.mark_deleting(ref, self.clock())
        deleted: list[str] = []
        claims = (
            await self.cluster.list_claims(_owner_selector(ref)) if self.options.provisions else []
        )
        for claim in claims:
            if not is_deleting(claim) and await self.cluster.delete_claim(name_of(claim)):
                deleted.append(f"NodeClaim/{name_of(claim)}")  # noqa: PERF401 -- awaits inside
        await self.bus.report(
            ref, [CleanupDone(deleted=tuple(deleted))], now=self.clock(), cause=event
        )
        log.info("resources.cleaned", workspace=ref.key, deleted=deleted)

    # --- assessment ----------------------------------------------------------------------

    async def reconcile(self, uid: str, cause: Envelope[Any] | None = None) -> None:
        """Assess one workspace and act; publishes only what changed since the last time."""
        async with self.store.locked(uid) as lock:
            stored = lock.stored
            if stored is None or stored.state != "active":
                return
            target = stored.target
            assessment = await self._assess(target, stored.worker_nodes)
            for manifest in assessment.create:
                created = await self.cluster.create_claim(manifest)
                log.info("nodeclaim.create", name=manifest["metadata"]["name"], created=created)
            events = _outcome_events(target, assessment)
            key = outcome_key(events)
            if key == stored.published_key:
                return
            # A change back to an earlier outcome must not be taken for a duplicate of it.
            await self.bus.report(
                target.ref,
                events,
                now=self.clock(),
                cause=cause,
                after=previous_outcome(stored.published_key, stored.updated_at),
            )
            workers = (
                assessment.outcome.nodes
                if isinstance(assessment.outcome, Ready)
                else stored.worker_nodes
            )
            await lock.record(key, workers, self.clock())
            log.info(
                "resources.assessed",
                workspace=target.ref.key,
                outcome=type(assessment.outcome).__name__,
                nodes=list(assessment.selected),
            )

    async def _assess(self, target: Target, workers: tuple[str, ...]) -> Assessment:
        own = (target.ref.namespace, target.ref.name)
        nodes = (
            # Another workspace's node never matches (nodes.matches): leave those out early,
            # or every assessment would look at every GPU node of the cluster.
            [dict(n) for n in self._nodes.values() if owner_of(n) in (None, own)]
            if self._nodes is not None
            else await self.cluster.list_nodes()
        )
        if not self.options.provisions:
            claims: list[Manifest] = []
        elif self._claims is not None:
            claims = [dict(c) for c in (self._claims.get(own) or {}).values()]
        else:
            claims = await self.cluster.list_claims(_owner_selector(target.ref))

        def decide() -> Assessment:
            return assess(
                target,
                nodes,
                claims,
                workers,
                provision=self.options.provisions,
                cloud=self.options.cloud,
            )

        assessment = decide()
        if assessment.label:
            for name in assessment.label:  # Kaito labels the GPU nodes it uses (reference 2.4)
                await self.cluster.label_node(name, {ACCELERATOR_LABEL: ACCELERATOR})
            for node in nodes:  # shallow copies of the cache: give them metadata of their own
                if name_of(node) in assessment.label:
                    meta = node["metadata"]
                    labels = {**(meta.get("labels") or {}), ACCELERATOR_LABEL: ACCELERATOR}
                    node["metadata"] = {**meta, "labels": labels}
            assessment = decide()
        return assessment

    async def reconcile_all(self, only: set[tuple[str, str]] | None = None) -> set[tuple[str, str]]:
        """Assess every active workspace (or those of ``only``); returns the (namespace, name)
        of those that failed (each failure is logged; the caller tries them again)."""

        async def one(found: WorkspaceKey) -> bool:
            try:
                await self.reconcile(found.uid)
            except KaitenError as e:
                log.warning("resources.failed", workspace=found.key, error=str(e))
                return False
            except Exception:  # a bug for one workspace must not stop the others
                log.exception("resources.error", workspace=found.key)
                return False
            return True

        # Several at once: each waits on its own row lock, the API and the bus.
        found = await self.store.active(only)
        results = await each_limited(PASS_CONCURRENCY, found, one)
        return {(f.namespace, f.name) for f, ok in zip(found, results, strict=True) if not ok}

    # --- watches -------------------------------------------------------------------------

    async def run(self) -> None:
        """Re-assess on every Node or NodeClaim change and every resync, until cancelled."""

        async with asyncio.TaskGroup() as group:
            group.create_task(self.cluster.follow_nodes(self.on_node))
            if self.options.provisions:
                group.create_task(self.cluster.follow_claims(self.on_claim))
            group.create_task(self._resync())
            group.create_task(self._work())

    async def on_node(self, kind: str, node: Manifest) -> None:
        """Keep the node cache, and mark the workspace a node was made for (any workspace, for
        a node of nobody's: its selector may match it)."""
        if kind == "LISTED":
            self._listing[name_of(node)] = node
            return
        if kind == "SYNCED":  # a (re)list: the cache is what it returned, changes may be missed
            self._nodes, self._listing = self._listing, {}
            self._poke(None)
            return
        if self._nodes is not None:
            if kind == "DELETED":
                self._nodes.pop(name_of(node), None)
            else:
                self._nodes[name_of(node)] = node
        self._poke(owner_of(node))

    async def on_claim(self, kind: str, claim: Manifest) -> None:
        """Keep the NodeClaim cache, and mark the claim's workspace."""
        if kind == "SYNCED":
            self._claims, self._claims_listing = self._claims_listing, {}
            self._poke(None)
            return
        labels = labels_of(claim)
        name, namespace = labels.get(WORKSPACE_LABEL), labels.get(WORKSPACE_NAMESPACE_LABEL)
        owner = (namespace, name) if name and namespace else None
        if owner is None:
            return  # not a workspace's claim: no assessment reads it
        if kind == "LISTED":
            self._claims_listing.setdefault(owner, {})[name_of(claim)] = claim
            return
        if self._claims is not None:
            mine = self._claims.setdefault(owner, {})
            if kind == "DELETED":
                mine.pop(name_of(claim), None)
                if not mine:
                    del self._claims[owner]
            else:
                mine[name_of(claim)] = claim
        self._poke(owner)

    def _poke(self, key: tuple[str, str] | None) -> None:
        """Look at workspace ``key`` (None: at every workspace) in the next pass."""
        if key is None:
            self._full = True
        else:
            self._keys.add(key)
        self._dirty.set()

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.options.resync_s)
            self._poke(None)

    async def _work(self) -> None:
        delay = self.options.retry_base_s
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.options.debounce_s)  # one pass for a burst of changes
            self._dirty.clear()
            only = None if self._full else self._keys
            self._full, self._keys = False, set()
            failed: set[tuple[str, str]] | None
            try:
                failed = await self.reconcile_all(only)
            except Exception:  # the store unreadable (PostgreSQL restarting)
                log.exception("resources.unreadable")
                failed = None  # every workspace, once it is readable
            if failed == set():
                delay = self.options.retry_base_s
                continue
            # Some failed (the database or NATS away for a moment): try those again soon rather
            # than at the next resync, minutes away; a change seen meanwhile joins that pass. Only
            # those: under load, one conflict must not cost a pass over every workspace.
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.retry_max_s)
            for key in failed if failed is not None else (None,):
                self._poke(key)


def _owner_selector(ref: WorkspaceRef) -> str:
    return f"{WORKSPACE_LABEL}={ref.name},{WORKSPACE_NAMESPACE_LABEL}={ref.namespace}"


def _outcome_events(target: Target, assessment: Assessment) -> list[EventData]:
    events: list[EventData] = [ConditionReported(condition=c) for c in assessment.conditions]
    outcome = assessment.outcome
    if isinstance(outcome, Ready):
        events.append(ResourcesReady(node_names=outcome.nodes))
    elif isinstance(outcome, Pending):
        events.append(
            ResourcesPending(
                reason=outcome.reason,
                message=outcome.message,
                ready_nodes=outcome.ready_nodes,
                wanted=target.node_count,
            )
        )
    elif isinstance(outcome, Failed):
        failed = Condition(
            type="WorkspaceSucceeded",
            status="False",
            reason="workspaceFailed",
            message=outcome.message,
            observed_generation=target.ref.generation,
        )
        events.append(ConditionReported(condition=failed))
        events.append(ResourcesFailed(reason=outcome.reason, message=outcome.message))
    return events


# --- the gpu-provisioner role ----------------------------------------------------------------


HEARTBEAT_ANNOTATION = "kaiten.dev/launch-heartbeat"


@dataclass(frozen=True, slots=True)
class ClaimOptions:
    retry_base_s: float = 2.0
    retry_max_s: float = 300.0
    # A launcher renews HEARTBEAT_ANNOTATION on its claim this often while it waits on the cloud;
    # a launch not renewed for relaunch_after_s (its process died) is taken over. Creates are
    # idempotent by name, so a takeover re-attaches to the instance being made.
    heartbeat_s: float = 30.0
    relaunch_after_s: float = 120.0
    gc_interval_s: float = 120.0
    gc_grace_s: float = 30.0


class ClaimController:
    def __init__(
        self, cluster: ClusterApi, cloud: CloudProvider, clock: Clock, options: ClaimOptions
    ) -> None:
        self.cluster = cluster
        self.cloud = cloud
        self.clock = clock
        self.options = options
        self._claims: dict[str, Manifest] = {}
        self._busy: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.cluster.follow_claims(self.on_claim))
                group.create_task(self.cluster.follow_nodes(self.on_node))
                group.create_task(self._collect_forever())
                group.create_task(self._sweep_forever())
        finally:
            for task in list(self._busy.values()):
                task.cancel()
            await asyncio.gather(*self._busy.values(), return_exceptions=True)

    async def on_claim(self, kind: str, claim: Manifest) -> None:
        if kind == "SYNCED" or not is_kaito_owned(claim):
            return
        name = name_of(claim)
        if kind == "DELETED":
            self._claims.pop(name, None)
            return
        self._claims[name] = claim
        self._consider(claim)

    async def on_node(self, kind: str, node: Manifest) -> None:
        pool = ((node.get("metadata") or {}).get("labels") or {}).get(AGENTPOOL_LABELS[1])
        claim = self._claims.get(pool or "")
        if claim is not None:
            self._consider(claim)

    def _consider(self, claim: Manifest) -> None:
        name = name_of(claim)
        if name in self._busy:
            return
        work: Coroutine[Any, Any, None] | None = None
        if is_deleting(claim):
            if TERMINATION_FINALIZER in (claim["metadata"].get("finalizers") or []):
                work = self.terminate(claim)
        elif launched(claim) is None or self._stale_launch(claim):
            work = self.launch(claim)
        elif launched(claim) == "True" and not _ready(claim):
            work = self.register(claim)
        if work is None:
            return
        version = claim["metadata"].get("resourceVersion")

        def done(_task: asyncio.Task[None]) -> None:
            # What changed while the work ran (a deletion during a launch) is looked at now.
            self._busy.pop(name, None)
            latest = self._claims.get(name)
            if latest is not None and latest["metadata"].get("resourceVersion") != version:
                self._consider(latest)

        task = asyncio.get_running_loop().create_task(_logged(work, name), name=f"nodeclaim-{name}")
        self._busy[name] = task
        task.add_done_callback(done)

    def _stale_launch(self, claim: Manifest) -> bool:
        cond = condition_of(claim, "Launched")
        if cond is None or cond.get("status") != "Unknown":
            return False
        beats = (claim["metadata"].get("annotations") or {}).get(HEARTBEAT_ANNOTATION)
        times = [t for t in (_parse_time(cond.get("lastTransitionTime")), _parse_time(beats)) if t]
        return not times or self.clock() - max(times) > timedelta(
            seconds=self.options.relaunch_after_s
        )

    async def _sweep_forever(self) -> None:
        """Look at every claim again now and then: a launch whose launcher died sends no event
        when its heartbeat goes stale."""

        async def sweep() -> None:
            for claim in list(self._claims.values()):
                self._consider(claim)

        await periodically("nodeclaim-sweep", self.options.heartbeat_s, sweep)

    async def _heartbeat(self, name: str) -> None:
        while True:
            await asyncio.sleep(self.options.heartbeat_s)
            beat = self.clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            with contextlib.suppress(KaitenError):
                await self.cluster.patch_claim(
                    name, {"metadata": {"annotations": {HEARTBEAT_ANNOTATION: beat}}}
                )

    async def launch(self, claim: Manifest) -> None:
        """Take the NodeClaim (an optimistic write: one replica wins), create its instance,
        and write what happened to its status."""
        name = name_of(claim)
        taken = await self._take(claim)
        if taken is None:
            return
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(name))
        try:
            await self._launch(taken)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _launch(self, claim: Manifest) -> None:
        name = name_of(claim)
        try:
            spec = pool_spec(claim)
        except PermanentError as e:
            await self._write(claim, Launch("False", e.reason, e.message), None)
            return
        delay = self.options.retry_base_s
        while True:
            try:
                instance = await self.cloud.create(spec)
            except CloudError as e:
                log.warning("nodeclaim.launch_failed", name=name, code=e.reason, error=e.message)
                await self._write(claim, Launch("False", e.reason, e.message), None)
                return
            except TransientError as e:
                wait = e.delay if e.delay is not None else delay
                log.info("nodeclaim.launch_retry", name=name, error=str(e), retry_in_s=wait)
                claim = (
                    await self._write(
                        claim,
                        Launch("Unknown", "LaunchRetrying", f"{e}; retrying in {wait:g} s"),
                        None,
                    )
                    or claim
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.options.retry_max_s)
                continue
            break
        node = await self._node(name)
        await self._write(claim, Launch("True", "Launched", image_id=instance.image_id), node)
        log.info("nodeclaim.launched", name=name, node=name_of(node) if node else None)

    async def _take(self, claim: Manifest) -> Manifest | None:
        """Mark the launch started (``Launched=Unknown``) in one write conditional on the
        resourceVersion read, so a replica that loses the race gets a conflict and lets go; then
        add the termination finalizer. (Finalizer first left a window in which a second replica,
        seeing the finalizer but no Launched condition yet, took the claim too and launched a
        second instance.)"""
        meta = claim["metadata"]
        status = claim_status(
            claim, Launch("Unknown", "Launching", "creating the instance"), None, self.clock()
        )
        try:
            updated = await self.cluster.patch_claim(
                name_of(claim),
                {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status},
                status=True,
            )
        except TransientError:
            return None  # someone wrote first: the watch brings the new version
        if updated is None:
            return None
        finalizers = list(updated["metadata"].get("finalizers") or [])
        if TERMINATION_FINALIZER in finalizers:
            return updated
        try:
            with_finalizer = await self.cluster.patch_claim(
                name_of(updated),
                {
                    "metadata": {
                        "finalizers": [*finalizers, TERMINATION_FINALIZER],
                        "resourceVersion": updated["metadata"]["resourceVersion"],
                    }
                },
            )
        except TransientError:
            return None  # changed meanwhile (deleted?): the watch brings the new version
        return with_finalizer

    async def register(self, claim: Manifest) -> None:
        """The instance exists: record its node once it joined and is initialized."""
        node = await self._node(name_of(claim))
        cond = condition_of(claim, "Launched") or {}
        launch = Launch("True", str(cond.get("reason") or "Launched"), str(cond.get("message", "")))
        await self._write(claim, launch, node)

    async def terminate(self, claim: Manifest) -> None:
        """Delete the instance and its node, then release the NodeClaim."""
        name = name_of(claim)
        delay = self.options.retry_base_s
        while True:
            try:
                await self.cloud.delete(name)
                break
            except TransientError as e:
                await asyncio.sleep(e.delay if e.delay is not None else delay)
                delay = min(delay * 2, self.options.retry_max_s)
            except PermanentError as e:  # cannot delete: say so, keep the finalizer
                log.warning("nodeclaim.delete_failed", name=name, error=e.message)
                return
        for node in await self.cluster.list_nodes(f"{AGENTPOOL_LABELS[1]}={name}"):
            await self.cluster.delete_node(name_of(node))
        finalizers = [
            f for f in claim["metadata"].get("finalizers") or [] if f != TERMINATION_FINALIZER
        ]
        await self.cluster.patch_claim(name, {"metadata": {"finalizers": finalizers}})
        log.info("nodeclaim.terminated", name=name)

    async def collect(self) -> list[str]:
        """Delete instances whose NodeClaim is gone (a NodeClaim deleted while its instance
        was still being created), older than the grace period. Returns their names."""
        claims = {name_of(c) for c in await self.cluster.list_claims()}
        now = self.clock()
        grace = timedelta(seconds=self.options.gc_grace_s)
        collected = []
        for instance in await self.cloud.list():
            if instance.name in claims or instance.state == "Deleting":
                continue
            if instance.created_at is None or now - instance.created_at < grace:
                continue
            await self.cloud.delete(instance.name)
            for node in await self.cluster.list_nodes(f"{AGENTPOOL_LABELS[1]}={instance.name}"):
                await self.cluster.delete_node(name_of(node))
            collected.append(instance.name)
            log.info("instance.collected", name=instance.name)
        return collected

    async def _collect_forever(self) -> None:
        async def collect() -> None:
            await self.collect()

        await periodically("instance-gc", self.options.gc_interval_s, collect)

    async def _node(self, pool: str) -> Manifest | None:
        nodes = await self.cluster.list_nodes(f"{AGENTPOOL_LABELS[1]}={pool}")
        found = node_for_pool(nodes, pool)
        return dict(found) if found is not None else None

    async def _write(
        self, claim: Manifest, launch: Launch, node: Mapping[str, Any] | None
    ) -> Manifest | None:
        status = claim_status(claim, launch, node, self.clock())
        if status == claim.get("status"):
            return claim
        return await self.cluster.patch_claim(name_of(claim), {"status": status}, status=True)


async def _logged(work: Coroutine[Any, Any, None], name: str) -> None:
    """Run one NodeClaim's work; a failure is logged, and the next change tries again."""
    try:
        await work
    except KaitenError as e:
        log.warning("nodeclaim.failed", name=name, error=str(e))
    except Exception:
        log.exception("nodeclaim.error", name=name)


def _ready(claim: Manifest) -> bool:
    cond = condition_of(claim, "Ready")
    return cond is not None and cond.get("status") == "True"


def _parse_time(value: object) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
