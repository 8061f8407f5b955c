"""A lower bound for ``bench/scale.py``: one sequential loop that makes, for each Workspace, the
writes Kaiten's services make to reach a succeeded inference Workspace, with the same client and
the services' own pure functions, and nothing else.

Per Workspace, in order: create the Workspace (as a user would); the watcher's ControllerRevision
and hash/revision annotations; the planner's plan (``plan_workspace``, reading the ConfigMaps it
names); the provisioner's NodeClaims (``assess``); for each, the simulated cloud's Node (created,
then its status written, as ``SimulatedNodes.register`` does) and the NodeClaim status Karpenter
would write once the node is Ready (``claim_status``); the deployer's objects (``render``,
stamped as ``shared.apply`` stamps them, created); and the watcher's status write (every
condition a succeeded inference Workspace carries, its state, workerNodes and targetNodeCount)
with one Event per condition turned True.

Deliberately left out: NATS, PostgreSQL, watches, reads before writes (each object is known to be
new), intermediate states (Launched=Unknown, Pending conditions and their Events), pods (the
workload is taken as rolled out), concurrency (one Workspace after another), ``status.phases``
(built from the bus's audit log), and the two finalizers (the Workspace's and the NodeClaim's
``karpenter.sh/termination``), which would hold deletion forever with no controller running.
The GPU node's ``accelerator`` label goes in the Node as created instead of a patch after.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from presets.catalog import default_catalog
from presets.catalog.prices import default_prices
from services.deployer import health
from services.deployer.render import render
from services.deployer.service import outcome_events
from services.planner.kubeapi import ConfigMapReader
from services.planner.planning import PlanOptions, Rejection, configmaps_needed, plan_workspace
from services.provisioner.claims import Launch, claim_status, pool_spec
from services.provisioner.cloud import SimulatedCloud, SimulatedNodes
from services.provisioner.kubeapi import ClusterApi as NodeApi
from services.provisioner.nodes import (
    ACCELERATOR,
    ACCELERATOR_LABEL,
    Cloud,
    Ready,
    Target,
    assess,
    name_of,
)
from services.watcher import core
from services.watcher.kubeapi import WorkspaceApi
from shared.apply import stamp
from shared.cluster import ClusterApi
from shared.events import ConditionReported
from shared.kube import Manifest, call_raw, new_api_client
from shared.manifests import Target as Workload
from shared.settings import Settings
from shared.workspace.models import GROUP, PLURAL, STORAGE_VERSION


@dataclass(frozen=True, slots=True)
class LowerBoundResult:
    workspaces: int
    seconds: float  # wall time of the loop
    requests: int  # API requests the loop sent

    @property
    def ms_per_workspace(self) -> float:
        return 1000 * self.seconds / self.workspaces if self.workspaces else 0.0


class LowerBoundError(Exception):
    """A Workspace the bound cannot take to success (rejected by the planner, or tuning)."""


class _Counter:
    """Counts the requests an ApiClient sends (every generated method goes through
    ``ApiClient.request``)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.calls = 0
        self._request = api.request
        api.request = self  # type: ignore[method-assign]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self._request(*args, **kwargs)


class _Loop:
    def __init__(self, api: client.ApiClient, options: PlanOptions) -> None:
        self.workspaces = WorkspaceApi(api)
        self.configmaps = ConfigMapReader(api)
        self.nodes = NodeApi(api)
        self.cluster = ClusterApi(api)
        self.options = options
        self.cloud: Cloud = "aws" if options.cloud == "aws" else "azure"
        simulated = SimulatedNodes(
            self.nodes.register_node, self.nodes.list_nodes, self.nodes.delete_node
        )
        self.simulated = SimulatedCloud(simulated, options.catalog, delay_s=0)

    async def workspace(self, doc: Mapping[str, Any]) -> None:
        meta = doc["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        version = str(doc.get("apiVersion") or "").rpartition("/")[2] or STORAGE_VERSION
        create = self.workspaces.objects.create_namespaced_custom_object
        obj = await call_raw(create, GROUP, version, namespace, PLURAL, dict(doc))

        # The watcher's bookkeeping: a new Workspace has no revisions yet.
        spec_hash = core.spec_hash(obj)
        revision = core.plan_revision(obj, [], spec_hash)
        if revision.create is not None:
            await self.workspaces.create_revision(revision.create)
        ops = core.bookkeeping_patch(obj, spec_hash, revision.revision) or []
        ops = [op for op in ops if not str(op["path"]).startswith("/metadata/finalizers")]
        obj = await self.workspaces.json_patch(namespace, name, ops)
        ref = core.workspace_ref(obj)

        # The planner.
        configmaps = await self.configmaps.read(namespace, configmaps_needed(obj))
        plan = plan_workspace(obj, configmaps, self.options)
        if isinstance(plan, Rejection):
            raise LowerBoundError(f"{ref.key} rejected: {plan.reason}: {plan.message}")
        if plan.mode != "inference":
            raise LowerBoundError(
                f"{ref.key} is a {plan.mode} Workspace; the bound covers inference"
            )

        # The provisioner, the simulated cloud and Karpenter's NodeClaim status.
        target = Target.from_plan(ref, plan)
        nodes: list[Manifest] = []
        claims: list[Manifest] = []
        for claim in assess(target, [], [], (), provision=True, cloud=self.cloud).create:
            await self.nodes.create_claim(claim)
            spec = pool_spec(claim)
            sku = self.options.catalog.sku(spec.vm_size)
            node = self.simulated.node_manifest(spec, sku.gpu_count if sku else 0)
            if target.nvidia:
                node["metadata"]["labels"][ACCELERATOR_LABEL] = ACCELERATOR
            await self.nodes.register_node(node)
            status = claim_status(claim, Launch("True", "Launched"), node, datetime.now(UTC))
            await self.nodes.patch_claim(name_of(claim), {"status": status}, status=True)
            nodes.append(node)
            claims.append({**claim, "status": status})
        assessment = assess(target, nodes, claims, (), provision=True, cloud=self.cloud)
        if not isinstance(assessment.outcome, Ready):
            raise LowerBoundError(f"{ref.key}: resources not ready: {assessment.outcome}")
        workers = assessment.outcome.nodes

        # The deployer.
        rendered = render(Workload(ref=ref, plan=plan, nodes=workers))
        for manifest in rendered.objects:
            await self.cluster.create(stamp(manifest))
        replicas = health.desired_replicas(rendered.workload)
        ready = health.Health(True, health.SUCCESS, health.SUCCESS_MESSAGE, replicas, replicas)
        deployed = outcome_events(ref, rendered, ready)

        # The watcher's status write and its Events.
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        reported = [
            *assessment.conditions,
            *(e.condition for e in deployed if isinstance(e, ConditionReported)),
        ]
        conditions = core.merge_conditions([], reported, now) or []
        status = {
            "conditions": conditions,
            "state": core.workspace_state(conditions, tuning=False, previous=None),
            "workerNodes": sorted(workers),
            "targetNodeCount": plan.node_count,
        }
        version_read = str(obj["metadata"]["resourceVersion"])
        obj = await self.workspaces.patch_status(namespace, name, status, version_read)
        for kind, reason, message in core.transition_events([], conditions):
            await self.workspaces.create_event(core.event_for(obj, reason, message, kind, now))


def default_options() -> PlanOptions:
    """The planner's options as ``services/planner/app.py`` builds them, with the settings'
    defaults (azure, node auto-provisioning; the local stack also sets local_cpu, which only
    matters to local-cpu Workspaces)."""
    return PlanOptions(catalog=default_catalog(), prices=default_prices())


async def lower_bound(
    kubeconfig: Path, docs: Sequence[Mapping[str, Any]], *, options: PlanOptions | None = None
) -> LowerBoundResult:
    """Create ``docs`` (Workspace manifests, namespaces existing) one after another, with every
    object and status Kaiten would write for each; the time and requests of the loop alone."""
    settings = Settings.model_validate({"KUBECONFIG": str(kubeconfig)})
    api = await new_api_client(settings, user_agent="kaiten-lower-bound")
    try:
        counter = _Counter(api)
        loop = _Loop(api, options or default_options())
        started = time.perf_counter()
        for doc in docs:
            await loop.workspace(doc)
        seconds = time.perf_counter() - started
    finally:
        await api.close()
    return LowerBoundResult(workspaces=len(docs), seconds=seconds, requests=counter.calls)
