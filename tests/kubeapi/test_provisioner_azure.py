"""The provisioner with its Azure backend, end to end below the watcher: PlanReady on real NATS
JetStream, state in real PostgreSQL, NodeClaims and Nodes on the development cluster, agent
pools through the real ``azure-mgmt-containerservice`` client against the fake ARM server over
HTTPS. The fake plays AKS: when a pool's create succeeds, its node joins the cluster."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.mgmt.containerservice.aio import ContainerServiceClient
from kubernetes_asyncio import client as aclient
from prometheus_client import CollectorRegistry

from localdev.kubeapi.cluster import DevCluster
from localdev.kubeapi.simulate import NODE_KEY
from presets.catalog import default_catalog
from services.provisioner.azure import AzureCloud
from services.provisioner.claims import AGENTPOOL_LABELS
from services.provisioner.crd import nodeclaim_crd
from services.provisioner.kubeapi import ClusterApi
from services.provisioner.service import (
    ClaimController,
    ClaimOptions,
    Provisioner,
    ProvisionerOptions,
)
from services.provisioner.store import ProvisionerStore
from shared.bus import Bus
from shared.db import Database
from shared.errors import TransientError
from shared.events import (
    Envelope,
    EventType,
    PlanReady,
    WorkspaceDeleting,
    WorkspaceRef,
    decode_event,
    new_event,
)
from shared.plan import GpuInfo, NodeSelection
from shared.settings import Settings
from tests.support.bus import stream_reader
from tests.support.fake_arm import FakeArm, FakeCredential
from tests.support.plans import minimal_plan
from tests.support.polling import eventually
from tests.support.provisioner import forget_other_tests

SKU = "Standard_NC24ads_A100_v4"
NODECLAIMS = ("karpenter.sh", "v1", "nodeclaims")


def now() -> datetime:
    return datetime.now(UTC)


async def aks_node_joins(cluster: DevCluster, pool: dict[str, Any]) -> None:
    """What AKS does once an agent pool is created: its one VM joins as a Node with the
    pool's labels and taints, the agent pool labels, and (NVIDIA SKUs) GPU capacity."""
    props = pool["properties"]
    name = pool["name"]
    sku = default_catalog().sku(props["vmSize"])
    node_name = f"aks-{name}-12345678-vmss000000"
    capacity = {"cpu": "24", "memory": "220Gi", "pods": "110"}
    if sku is not None:
        capacity["nvidia.com/gpu"] = str(sku.gpu_count)
    taints = []
    for text in props.get("nodeTaints") or []:
        key_value, _, effect = text.partition(":")
        key, _, value = key_value.partition("=")
        taints.append({"key": key, "value": value, "effect": effect})
    provider = (
        f"azure:///subscriptions/{FakeArm.subscription}/resourceGroups/mc_rg/providers/"
        f"Microsoft.Compute/virtualMachineScaleSets/aks-{name}-12345678-vmss/virtualMachines/0"
    )
    node = {
        "metadata": {
            "name": node_name,
            "labels": {
                **props.get("nodeLabels", {}),
                **dict.fromkeys(AGENTPOOL_LABELS, name),
                "node.kubernetes.io/instance-type": props["vmSize"],
                "kubernetes.io/os": "linux",
            },
        },
        "spec": {"providerID": provider, "taints": taints},
    }
    await add_node(cluster, node, capacity)


async def add_node(cluster: DevCluster, node: dict[str, Any], capacity: dict[str, str]) -> None:
    rt = cluster.api.types[NODE_KEY]
    created = await cluster.api.create(rt, "v1", None, node)
    created["status"] = {
        "capacity": capacity,
        "allocatable": dict(capacity),
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
    }
    await cluster.api.update(
        rt, "v1", None, node["metadata"]["name"], created, subresource="status"
    )


@dataclass
class Env:
    settings: Settings
    cluster: DevCluster
    arm: FakeArm
    kube: aclient.ApiClient
    provisioners: list[Provisioner]
    controllers: list[ClaimController]
    publisher: Bus

    async def plan_ready(self, ref: WorkspaceRef, **plan: Any) -> Envelope[Any]:
        values: dict[str, Any] = {
            "instance_type": SKU,
            "gpu": GpuInfo(
                model="NVIDIA A100",
                vendor="nvidia",
                count_per_node=1,
                memory_gib_per_gpu=80,
                compute_capability=8.0,
                nvme=True,
            ),
            "nodes": NodeSelection(label_selector={"apps": "phi-3"}),
        }
        data = PlanReady(
            mode="inference",
            preset="phi-3-mini-4k-instruct",
            instance_type=SKU,
            node_count=plan.get("node_count", 1),
            plan=minimal_plan(**(values | plan)),
        )
        return new_event(data, source="planner", workspace=ref, now=now())

    async def events(self, kind: EventType, ref: WorkspaceRef) -> list[Envelope[Any]]:
        prefix = self.settings.subject_prefix
        async with stream_reader(self.settings) as reader:
            raw = await reader.messages(f"{prefix}.v1.{kind.value}.{ref.namespace}.{ref.name}")
        return [decode_event(m) for m in raw]

    async def conditions(self, ref: WorkspaceRef) -> dict[str, dict[str, Any]]:
        """The latest reported condition of each type."""
        latest: dict[str, dict[str, Any]] = {}
        for event in await self.events(EventType.CONDITION_REPORTED, ref):
            cond = event.data.condition
            latest[cond.type] = cond.model_dump()
        return latest

    async def claims(self, ref: WorkspaceRef) -> list[dict[str, Any]]:
        body = await aclient.CustomObjectsApi(self.kube).list_cluster_custom_object(
            *NODECLAIMS, label_selector=f"kaito.sh/workspace={ref.name}"
        )
        return list(body["items"])


def new_ref() -> WorkspaceRef:
    return WorkspaceRef(
        uid=str(uuid.uuid4()),
        namespace="default",
        name=f"workspace-phi-3-{uuid.uuid4().hex[:6]}",
        generation=1,
    )


async def start_replica(
    stack: AsyncExitStack, settings: Settings, kube: aclient.ApiClient, arm: FakeArm
) -> tuple[Provisioner, ClaimController]:
    """One provisioner replica: the workspace side and the gpu-provisioner side, watching."""
    db = Database(settings.database_url)
    stack.push_async_callback(db.close)
    bus = Bus(settings, "provisioner", registry=CollectorRegistry())
    await bus.start()
    stack.push_async_callback(bus.stop)
    api = ClusterApi(kube)
    provisioner = Provisioner(
        ProvisionerStore(db), bus, api, now, ProvisionerOptions(backend="azure", resync_s=30)
    )
    credential = FakeCredential()
    arm_client = ContainerServiceClient(
        credential,
        arm.subscription,
        base_url=arm.url,
        connection_verify=str(arm.ca_file),
        retry_total=3,
        polling_interval=0,
    )
    cloud = AzureCloud(arm_client, arm.resource_group, arm.cluster)
    stack.push_async_callback(cloud.close)
    options = ClaimOptions(retry_base_s=0.05, gc_interval_s=3600, gc_grace_s=0)
    claims = ClaimController(api, cloud, now, options)
    for work in (provisioner.run(), claims.run()):
        task = asyncio.create_task(work)
        stack.push_async_callback(_cancel, task)
    return provisioner, claims


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
async def env(
    cluster: DevCluster, kubeconfig: Path, settings: Settings, tmp_path: Path
) -> AsyncIterator[Env]:
    from kubernetes_asyncio import config as aconfig  # noqa: PLC0415

    async with AsyncExitStack() as stack:
        kube = await aconfig.new_client_from_config(config_file=str(kubeconfig))
        stack.push_async_callback(kube.close)
        await aclient.ApiextensionsV1Api(kube).create_custom_resource_definition(nodeclaim_crd())
        arm = FakeArm(tmp_path / "arm", poll_steps=2)
        await arm.start()
        stack.push_async_callback(arm.close)

        async def joins(pool: dict[str, Any]) -> None:
            await aks_node_joins(cluster, pool)

        arm.on_pool_ready.append(joins)
        await forget_other_tests(settings)
        publisher = Bus(settings, "planner", registry=CollectorRegistry())
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        replicas = [await start_replica(stack, settings, kube, arm) for _ in range(2)]
        provisioners = [p for p, _ in replicas]
        controllers = [c for _, c in replicas]
        yield Env(settings, cluster, arm, kube, provisioners, controllers, publisher)


async def test_a_plan_on_a_fresh_cluster_gets_one_nodeclaim_one_pool_and_ready_resources(
    env: Env,
) -> None:
    ref = new_ref()
    event = await env.plan_ready(ref)
    # The same PlanReady handled by both replicas at once.
    await asyncio.gather(*(p.on_plan_ready(event) for p in env.provisioners))

    ready = await eventually(
        lambda: env.events(EventType.RESOURCES_READY, ref), timeout=20, what="ResourcesReady"
    )
    claims = await env.claims(ref)
    assert len(claims) == 1
    claim = claims[0]
    name = claim["metadata"]["name"]
    assert len(name) == 11
    assert name.startswith("ws")
    assert claim["metadata"]["labels"] == {
        "karpenter.sh/nodepool": "kaito",
        "kaito.sh/workspace": ref.name,
        "kaito.sh/workspacenamespace": "default",
        "apps": "phi-3",
    }
    assert claim["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert claim["spec"]["resources"]["requests"]["storage"] == "80Gi"
    assert {c["type"]: c["status"] for c in claim["status"]["conditions"]} == {
        "Launched": "True",
        "Registered": "True",
        "Initialized": "True",
        "Ready": "True",
    }

    # Exactly one agent pool was created, with gpu-provisioner's body.
    assert env.arm.creates == [name]
    body = next(
        r.body for r in env.arm.requests if r.method == "PUT" and r.path.endswith(f"/{name}")
    )
    props = body["properties"]
    assert props["count"] == 1
    assert props["vmSize"] == SKU
    assert props["osDiskSizeGB"] == 80
    assert props["osSKU"] == "Ubuntu"
    assert props["osType"] == "Linux"
    assert props["nodeTaints"] == ["sku=gpu:NoSchedule"]
    assert props["nodeLabels"]["kaito.sh/workspace"] == ref.name
    assert props["nodeLabels"]["kaito.sh/machine-type"] == "gpu"
    assert "kaito.sh/creation-timestamp" in props["nodeLabels"]

    node = f"aks-{name}-12345678-vmss000000"
    assert ready[-1].data.node_names == (node,)
    assert claim["status"]["nodeName"] == node
    conditions = await env.conditions(ref)
    assert conditions["NodeClaimReady"]["status"] == "True"
    assert conditions["NodeClaimReady"]["reason"] == "NodeClaimsReady"
    assert conditions["ResourceReady"]["status"] == "True"
    assert conditions["ResourceReady"]["reason"] == "workspaceResourceStatusSuccess"
    labels = (await aclient.CoreV1Api(env.kube).read_node(node)).metadata.labels
    assert labels["accelerator"] == "nvidia"


async def test_matching_ready_nodes_are_used_in_kaito_order_and_nothing_is_provisioned(
    env: Env,
) -> None:
    for name in ("gpu-b", "gpu-a", "gpu-c"):
        await add_node(
            env.cluster,
            {
                "metadata": {
                    "name": name,
                    "labels": {"apps": "phi-3", "node.kubernetes.io/instance-type": SKU},
                }
            },
            {"nvidia.com/gpu": "1"},
        )
    ref = new_ref()
    event = await env.plan_ready(
        ref,
        node_count=2,
        nodes=NodeSelection(label_selector={"apps": "phi-3"}, preferred_nodes=("gpu-c",)),
    )
    await env.provisioners[0].on_plan_ready(event)
    ready = await eventually(
        lambda: env.events(EventType.RESOURCES_READY, ref), timeout=10, what="ResourcesReady"
    )
    # Preferred first, then by name; no NodeClaim, no agent pool.
    assert ready[-1].data.node_names == ("gpu-c", "gpu-a")
    assert await env.claims(ref) == []
    assert env.arm.creates == []
    assert "NodeClaimReady" not in await env.conditions(ref)


async def test_quota_exceeded_is_reported_verbatim_once_without_a_retry_storm(env: Env) -> None:
    message = (
        "Operation could not be completed as it results in exceeding approved "
        "standardNCADSA100v4Family Cores quota. Current Limit: 0, Additional Required: 24"
    )
    env.arm.fail_next_create("QuotaExceeded", message)
    ref = new_ref()
    await env.provisioners[0].on_plan_ready(await env.plan_ready(ref))

    failed = await eventually(
        lambda: env.events(EventType.RESOURCES_FAILED, ref), timeout=20, what="ResourcesFailed"
    )
    assert failed[-1].data.reason == "QuotaExceeded"
    assert failed[-1].data.message == message
    conditions = await env.conditions(ref)
    assert conditions["ResourceReady"]["status"] == "False"
    assert conditions["ResourceReady"]["reason"] == "QuotaExceeded"
    assert conditions["ResourceReady"]["message"] == message
    assert conditions["WorkspaceSucceeded"]["reason"] == "workspaceFailed"

    # Resyncs and node changes do not try again: one PUT, ever.
    for provisioner in env.provisioners:
        assert await provisioner.reconcile_all() == set()
    await add_node(env.cluster, {"metadata": {"name": "unrelated"}}, {})
    await asyncio.sleep(0.5)
    puts = [r for r in env.arm.requests if r.method == "PUT"]
    assert len(puts) == 1
    assert len(await env.events(EventType.RESOURCES_FAILED, ref)) == 1


async def test_throttling_waits_for_retry_after_and_then_succeeds(env: Env) -> None:
    env.arm.throttle(2, retry_after=1)
    ref = new_ref()
    await env.provisioners[0].on_plan_ready(await env.plan_ready(ref))
    await eventually(
        lambda: env.events(EventType.RESOURCES_READY, ref), timeout=30, what="ResourcesReady"
    )
    puts = [r for r in env.arm.requests if r.method == "PUT"]
    # Two answers of 429 with Retry-After: 1, then the third PUT went through, 2 s later.
    assert len(puts) == 3
    assert puts[-1].at - puts[0].at >= 2.0
    assert len(env.arm.pools) == 1


async def test_a_failed_long_running_operation_becomes_a_clear_condition(env: Env) -> None:
    env.arm.fail_next_create(
        "AllocationFailed", "Allocation failed. We do not have sufficient capacity"
    )
    ref = new_ref()
    await env.provisioners[0].on_plan_ready(await env.plan_ready(ref))
    await eventually(
        lambda: env.events(EventType.RESOURCES_FAILED, ref), timeout=20, what="ResourcesFailed"
    )
    conditions = await env.conditions(ref)
    assert conditions["NodeClaimReady"]["status"] == "False"
    assert conditions["NodeClaimReady"]["reason"] == "AllocationFailed"
    assert "sufficient capacity" in conditions["NodeClaimReady"]["message"]
    claim = (await env.claims(ref))[0]
    launched = next(c for c in claim["status"]["conditions"] if c["type"] == "Launched")
    assert launched["status"] == "False"
    assert launched["reason"] == "AllocationFailed"


async def test_deletion_removes_pools_and_nodeclaims_and_answers_cleanup_done(env: Env) -> None:
    ref = new_ref()
    await env.provisioners[0].on_plan_ready(await env.plan_ready(ref))
    await eventually(
        lambda: env.events(EventType.RESOURCES_READY, ref), timeout=20, what="ResourcesReady"
    )
    name = (await env.claims(ref))[0]["metadata"]["name"]
    deleting = new_event(
        WorkspaceDeleting(deletion_timestamp=now()), source="watcher", workspace=ref, now=now()
    )
    await env.provisioners[1].on_deleting(deleting)

    done = await eventually(
        lambda: env.events(EventType.CLEANUP_DONE, ref), timeout=10, what="CleanupDone"
    )
    assert done[-1].data.deleted == (f"NodeClaim/{name}",)

    async def gone() -> bool:
        nodes = await aclient.CoreV1Api(env.kube).list_node(
            label_selector=f"kubernetes.azure.com/agentpool={name}"
        )
        return not await env.claims(ref) and name not in env.arm.pools and not nodes.items

    await eventually(gone, timeout=20, what="NodeClaim, pool and node removed")
    assert env.arm.deletes == [name]


async def test_an_orphan_pool_is_collected(env: Env) -> None:
    env.arm.add_pool(
        "wsorphan1234",
        {
            "count": 1,
            "vmSize": SKU,
            "nodeLabels": {
                "karpenter.sh/nodepool": "kaito",
                "kaito.sh/workspace": "gone",
                "kaito.sh/workspacenamespace": "default",
                "kaito.sh/creation-timestamp": "2026-01-01T00-00-00Z",
            },
        },
    )
    env.arm.add_pool("userpool", {"count": 3, "vmSize": "Standard_D4s_v5", "nodeLabels": {}})
    controller = env.controllers[0]
    collected = await controller.collect()
    assert collected == ["wsorphan1234"]
    assert "wsorphan1234" not in env.arm.pools
    assert "userpool" in env.arm.pools


async def test_deleting_a_pool_already_deleting_or_gone_is_a_quiet_success(env: Env) -> None:
    controller = env.controllers[0]
    env.arm.add_pool("wsdeleting01", {"count": 1, "vmSize": SKU}, state="Deleting")
    await controller.cloud.delete("wsdeleting01")
    await controller.cloud.delete("wsnever00001")
    deletes = [r for r in env.arm.requests if r.method == "DELETE"]
    assert deletes == []  # a pool already Deleting is left to finish; a missing one is gone
    assert "wsdeleting01" in env.arm.pools


async def test_a_pass_reports_the_workspaces_that_failed_for_a_retry_of_those_alone(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    healthy, failing = new_ref(), new_ref()
    provisioner = env.provisioners[0]
    for ref in (healthy, failing):
        await provisioner.on_plan_ready(await env.plan_ready(ref))
    real = provisioner.reconcile

    async def flaky(uid: str, cause: Envelope[Any] | None = None) -> None:
        if uid == failing.uid:
            raise TransientError("the API is away for a moment")
        await real(uid, cause)

    monkeypatch.setattr(provisioner, "reconcile", flaky)
    assert await provisioner.reconcile_all() == {(failing.namespace, failing.name)}
    # The retry pass asks for the failed one only (the service's loop pokes just those keys).
    only = {(failing.namespace, failing.name)}
    assert await provisioner.reconcile_all(only) == only
    assert await provisioner.reconcile_all({(healthy.namespace, healthy.name)}) == set()
