"""Contract tests of the fake ARM server, driven through the real Azure SDK clients: the agent-pool
LROs, errors and paging of ``azure-mgmt-containerservice`` and the quota reads of
``azure-mgmt-compute``, over HTTPS with the fake's own certificate."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.aio import ComputeManagementClient as AsyncComputeManagementClient
from azure.mgmt.containerservice.aio import ContainerServiceClient
from azure.mgmt.containerservice.models import (
    AgentPool,
    AgentPoolManagedClusterAgentPoolProfileProperties,
)

from tests.support.fake_arm import NODE_IMAGE, FakeArm, FakeCredential, SyncFakeCredential

PoolProperties = AgentPoolManagedClusterAgentPoolProfileProperties
GPU_POOL = AgentPool(
    properties=PoolProperties(vm_size="Standard_NC24ads_A100_v4", count=1, mode="User")
)


@pytest.fixture
async def arm(tmp_path: Path) -> AsyncIterator[FakeArm]:
    async with FakeArm(tmp_path) as server:
        yield server


def aks_client(arm: FakeArm, *, retry_total: int = 0, **kwargs: Any) -> ContainerServiceClient:
    return ContainerServiceClient(
        FakeCredential(),
        arm.subscription,
        base_url=arm.url,
        connection_verify=str(arm.ca_file),
        retry_total=retry_total,
        **kwargs,
    )


@pytest.fixture
async def aks(arm: FakeArm) -> AsyncIterator[ContainerServiceClient]:
    async with aks_client(arm) as client:
        yield client


async def create(
    aks: ContainerServiceClient, arm: FakeArm, name: str, pool: AgentPool = GPU_POOL
) -> AgentPool:
    poller = await aks.agent_pools.begin_create_or_update(
        arm.resource_group, arm.cluster, name, pool, polling_interval=0
    )
    return await poller.result()


def calls(arm: FakeArm) -> list[str]:
    """``METHOD collection`` (the path segment before the last) of every recorded request."""
    return [f"{r.method} {r.path.rsplit('/', 2)[-2]}" for r in arm.requests]


async def test_create_polls_the_async_operation_then_gets_the_pool(
    arm: FakeArm, aks: ContainerServiceClient
) -> None:
    ready: list[dict[str, Any]] = []

    async def on_ready(pool: dict[str, Any]) -> None:
        ready.append(pool)

    arm.on_pool_ready.append(on_ready)
    pool = await create(aks, arm, "gpu1")

    assert pool.name == "gpu1"
    assert pool.provisioning_state == "Succeeded"
    assert pool.vm_size == "Standard_NC24ads_A100_v4"
    assert pool.node_image_version == NODE_IMAGE
    # the PUT, poll_steps InProgress polls and the terminal one, then the final GET of the pool
    assert calls(arm) == ["PUT agentPools"] + ["GET operations"] * 3 + ["GET agentPools"]
    assert arm.requests[0].body is not None
    assert arm.requests[0].body["properties"]["vmSize"] == "Standard_NC24ads_A100_v4"
    assert len(arm.api_versions) == 1
    assert arm.creates == ["gpu1"]
    assert [p["name"] for p in ready] == ["gpu1"]
    assert ready[0]["properties"]["provisioningState"] == "Succeeded"
    assert (await aks.agent_pools.get(arm.resource_group, arm.cluster, "gpu1")).count == 1


async def test_put_on_an_existing_pool_is_an_update(
    arm: FakeArm, aks: ContainerServiceClient
) -> None:
    await create(aks, arm, "gpu1")
    ready: list[str] = []

    async def on_ready(pool: dict[str, Any]) -> None:
        ready.append(pool["name"])

    arm.on_pool_ready.append(on_ready)
    bigger = PoolProperties(vm_size="Standard_NC24ads_A100_v4", count=3)
    updated = await create(aks, arm, "gpu1", AgentPool(properties=bigger))

    assert updated.count == 3
    assert updated.provisioning_state == "Succeeded"
    assert list(arm.pools) == ["gpu1"]
    assert arm.creates == ["gpu1"]
    assert ready == []


async def test_failed_operation_raises_with_code_and_message(
    arm: FakeArm, aks: ContainerServiceClient
) -> None:
    message = (
        "Operation could not be completed as it results in exceeding approved "
        "standardNCADSA100v4Family Cores quota."
    )
    arm.fail_next_create("QuotaExceeded", message, pool="gpu2")
    ready: list[str] = []

    async def on_ready(pool: dict[str, Any]) -> None:
        ready.append(pool["name"])

    arm.on_pool_ready.append(on_ready)
    await create(aks, arm, "gpu1")  # armed for gpu2 only
    with pytest.raises(HttpResponseError) as failed:
        await create(aks, arm, "gpu2")

    assert "QuotaExceeded" in str(failed.value)
    assert message in str(failed.value)
    assert arm.pools["gpu2"]["properties"]["provisioningState"] == "Failed"
    assert arm.pools["gpu1"]["properties"]["provisioningState"] == "Succeeded"
    assert ready == ["gpu1"]


async def test_synchronous_rejections_surface_with_their_code(
    arm: FakeArm, aks: ContainerServiceClient
) -> None:
    arm.reject_next_create(409, "OperationNotAllowed", "Cluster is being upgraded.")
    with pytest.raises(ResourceExistsError) as conflict:
        await create(aks, arm, "gpu1")
    assert conflict.value.status_code == 409
    assert conflict.value.error is not None
    assert conflict.value.error.code == "OperationNotAllowed"

    arm.reject_next_create(400, "QuotaExceeded", "Insufficient regional vCPU quota.")
    with pytest.raises(HttpResponseError) as quota:
        await create(aks, arm, "gpu1")
    assert quota.value.status_code == 400
    assert quota.value.error is not None
    assert quota.value.error.code == "QuotaExceeded"
    assert arm.pools == {}
    assert arm.creates == []


async def test_invalid_pool_name_is_a_400(arm: FakeArm, aks: ContainerServiceClient) -> None:
    with pytest.raises(HttpResponseError) as invalid:
        await create(aks, arm, "gpu-pool-one")
    assert invalid.value.status_code == 400
    assert invalid.value.error is not None
    assert invalid.value.error.code == "InvalidParameter"
    assert arm.pools == {}


async def test_get_of_a_missing_pool_or_cluster_is_resource_not_found(
    arm: FakeArm, aks: ContainerServiceClient
) -> None:
    with pytest.raises(ResourceNotFoundError) as missing:
        await aks.agent_pools.get(arm.resource_group, arm.cluster, "nope")
    assert missing.value.error is not None
    assert missing.value.error.code == "NotFound"

    with pytest.raises(ResourceNotFoundError) as no_cluster:
        await aks.agent_pools.get(arm.resource_group, "other-aks", "nope")
    assert no_cluster.value.error is not None
    assert no_cluster.value.error.code == "ResourceNotFound"


async def test_list_pages_with_next_link(arm: FakeArm, aks: ContainerServiceClient) -> None:
    names = [f"pool{i}" for i in range(5)]
    for name in names:
        arm.add_pool(name, {"vmSize": "Standard_NC6s_v3", "count": 1})

    listed = [pool.name async for pool in aks.agent_pools.list(arm.resource_group, arm.cluster)]

    assert listed == names
    pages = [r for r in arm.requests if r.path == arm.pool_url()]
    assert [r.query.get("$skiptoken") for r in pages] == [None, "2", "4"]
    assert all("api-version" in r.query for r in pages)


async def test_delete_polls_until_the_pool_is_gone(
    arm: FakeArm, aks: ContainerServiceClient
) -> None:
    arm.add_pool("gpu1", {"vmSize": "Standard_NC24ads_A100_v4", "count": 1})
    deleted: list[str] = []

    async def on_deleted(name: str) -> None:
        deleted.append(name)

    arm.on_pool_deleted.append(on_deleted)
    poller = await aks.agent_pools.begin_delete(
        arm.resource_group, arm.cluster, "gpu1", polling_interval=0
    )
    assert arm.pools["gpu1"]["properties"]["provisioningState"] == "Deleting"
    await poller.result()

    assert "gpu1" not in arm.pools
    assert deleted == ["gpu1"]
    assert arm.deletes == ["gpu1"]
    assert calls(arm) == ["DELETE agentPools"] + ["GET operations"] * 3
    with pytest.raises(ResourceNotFoundError):
        await aks.agent_pools.begin_delete(arm.resource_group, arm.cluster, "gpu1")


async def test_throttling_is_retried_after_retry_after(arm: FakeArm) -> None:
    arm.add_pool("gpu1", {"count": 1})
    arm.throttle(1, retry_after=1)
    async with aks_client(arm, retry_total=2) as aks:
        pool = await aks.agent_pools.get(arm.resource_group, arm.cluster, "gpu1")

    assert pool.name == "gpu1"
    first, second = arm.requests
    assert second.at - first.at >= 1.0


async def test_server_errors_surface_or_are_retried(
    arm: FakeArm, aks: ContainerServiceClient
) -> None:
    arm.add_pool("gpu1", {"count": 1})
    arm.server_errors(1, status=503)
    with pytest.raises(HttpResponseError) as failed:
        await aks.agent_pools.get(arm.resource_group, arm.cluster, "gpu1")
    assert failed.value.status_code == 503
    assert failed.value.error is not None
    assert failed.value.error.code == "InternalServerError"

    arm.server_errors(1)
    async with aks_client(arm, retry_total=1) as retrying:
        pool = await retrying.agent_pools.get(arm.resource_group, arm.cluster, "gpu1")
    assert pool.name == "gpu1"


async def test_a_client_that_does_not_trust_the_certificate_fails(arm: FakeArm) -> None:
    async with ContainerServiceClient(
        FakeCredential(), arm.subscription, base_url=arm.url, retry_total=0
    ) as untrusting:
        with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.agent_pools.get(arm.resource_group, arm.cluster, "gpu1")
    assert arm.requests == []


async def test_requests_without_a_bearer_token_get_401(arm: FakeArm) -> None:
    arm.add_pool("gpu1", {"count": 1})
    tls = ssl.create_default_context(cafile=str(arm.ca_file))
    async with aiohttp.ClientSession() as session:
        url = f"{arm.url}{arm.pool_url('gpu1')}?api-version=2026-08-01"
        async with session.get(url, ssl=tls) as reply:
            assert reply.status == 401
            assert (await reply.json())["error"]["code"] == "AuthenticationFailed"
        headers = {"Authorization": "Bearer fake-token"}
        async with session.get(url, ssl=tls, headers=headers) as reply:
            assert reply.status == 200


async def test_usages_through_the_sync_compute_client(arm: FakeArm) -> None:
    arm.usages["standardNCADSA100v4Family"] = (24, 48)
    client = ComputeManagementClient(
        SyncFakeCredential(),
        arm.subscription,
        base_url=arm.url,
        connection_verify=str(arm.ca_file),
        retry_total=0,
    )
    with client:
        usages = await asyncio.to_thread(lambda: list(client.usage.list(arm.location)))

    by_family = {u.name.value: u for u in usages if u.name is not None}
    assert set(by_family) == set(arm.usages)
    a100 = by_family["standardNCADSA100v4Family"]
    assert (a100.current_value, a100.limit) == (24, 48)
    assert a100.name is not None
    assert a100.name.localized_value == "Standard NCADSA100v4 Family vCPUs"
    assert by_family["cores"].limit == arm.usages["cores"][1]
    paths = {r.path for r in arm.requests}
    assert paths == {
        f"/subscriptions/{arm.subscription}/providers/Microsoft.Compute/locations/eastus/usages"
    }
    assert len(arm.requests) == 2  # four families, two a page


async def test_resource_skus_through_the_async_compute_client(arm: FakeArm) -> None:
    async with AsyncComputeManagementClient(
        FakeCredential(),
        arm.subscription,
        base_url=arm.url,
        connection_verify=str(arm.ca_file),
        retry_total=0,
    ) as client:
        skus = [s async for s in client.resource_skus.list(filter=f"location eq '{arm.location}'")]
        elsewhere = [s async for s in client.resource_skus.list(filter="location eq 'westus'")]

    by_name = {s.name: s for s in skus}
    assert set(by_name) == set(arm.vm_skus)
    a100 = by_name["Standard_NC24ads_A100_v4"]
    assert a100.family == "standardNCADSA100v4Family"
    assert a100.locations == ["eastus"]
    capabilities = {c.name: c.value for c in a100.capabilities or []}
    assert capabilities == {"vCPUs": "24", "GPUs": "1"}
    assert elsewhere == []
    assert all(r.query.get("$filter") for r in arm.requests)
