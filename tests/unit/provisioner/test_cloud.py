"""The simulated cloud: the Node AKS would join for an agent pool, and Azure's refusals."""

from __future__ import annotations

import pytest

from presets.catalog import default_catalog
from services.provisioner.claims import PoolSpec, node_for_pool
from services.provisioner.cloud import SIMULATED_ERRORS, CloudError, SimulatedCloud, SimulatedNodes
from services.provisioner.nodes import gpu_capacity, node_ready
from tests.unit.provisioner.objects import V100_X2, Obj

CATALOG = default_catalog()


class NodeStore:
    """The cluster's Nodes, as the simulated kubelet registers them."""

    def __init__(self) -> None:
        self.nodes: dict[str, Obj] = {}

    async def register(self, manifest: Obj) -> None:
        self.nodes[str(manifest["metadata"]["name"])] = manifest

    async def list(self) -> list[Obj]:
        return list(self.nodes.values())

    async def delete(self, name: str) -> None:
        self.nodes.pop(name, None)

    def api(self) -> SimulatedNodes:
        return SimulatedNodes(register=self.register, list=self.list, delete=self.delete)


def spec(vm_size: str = V100_X2) -> PoolSpec:
    return PoolSpec(
        name="ws0123abcde",
        vm_size=vm_size,
        os_sku="Ubuntu",
        os_disk_gib=80,
        node_labels={
            "karpenter.sh/nodepool": "kaito",
            "kaito.sh/workspace": "phi-3",
            "kaito.sh/workspacenamespace": "team-a",
            "apps": "phi",
            "kaito.sh/machine-type": "gpu",
            "kaito.sh/creation-timestamp": "2026-05-01T10-00-00Z",
        },
        node_taints=("sku=gpu:NoSchedule", "dedicated=ml:NoExecute"),
    )


def test_the_node_has_the_pools_labels_and_the_labels_aks_adds() -> None:
    cloud = SimulatedCloud(NodeStore().api(), CATALOG, delay_s=0)

    manifest = cloud.node_manifest(spec(), 2)

    labels = manifest["metadata"]["labels"]
    assert labels["agentpool"] == "ws0123abcde"
    assert labels["kubernetes.azure.com/agentpool"] == "ws0123abcde"
    assert labels["node.kubernetes.io/instance-type"] == V100_X2
    assert labels["kubernetes.io/os"] == "linux"
    assert spec().node_labels.items() <= labels.items()
    assert manifest["spec"]["taints"] == [
        {"key": "sku", "value": "gpu", "effect": "NoSchedule"},
        {"key": "dedicated", "value": "ml", "effect": "NoExecute"},
    ]
    assert manifest["spec"]["providerID"]
    assert manifest["status"]["capacity"]["nvidia.com/gpu"] == "2"
    assert gpu_capacity(manifest) == 2
    assert node_ready(manifest)
    assert node_for_pool([manifest], "ws0123abcde") is manifest


def test_a_node_without_gpus_has_no_gpu_capacity() -> None:
    cloud = SimulatedCloud(NodeStore().api(), CATALOG, delay_s=0)

    manifest = cloud.node_manifest(spec("Standard_D4s_v5"), 0)

    assert "nvidia.com/gpu" not in manifest["status"]["capacity"]
    assert gpu_capacity(manifest) == 0


@pytest.mark.parametrize("vm_size", ["Standard_NC6s_v3", "Standard_NC12s_v3", "Standard_NC24s_v3"])
async def test_create_registers_a_node_with_the_skus_gpu_count(vm_size: str) -> None:
    store = NodeStore()
    cloud = SimulatedCloud(store.api(), CATALOG, delay_s=0)
    expected = CATALOG.sku(vm_size)
    assert expected is not None

    instance = await cloud.create(spec(vm_size))

    assert instance.name == "ws0123abcde"
    assert instance.state == "Succeeded"
    joined = node_for_pool(await store.list(), "ws0123abcde")
    assert joined is not None
    assert joined["status"]["capacity"]["nvidia.com/gpu"] == str(expected.gpu_count)
    assert [i.name for i in await cloud.list()] == ["ws0123abcde"]


async def test_creating_twice_registers_one_node_and_delete_removes_it() -> None:
    store = NodeStore()
    cloud = SimulatedCloud(store.api(), CATALOG, delay_s=0)

    await cloud.create(spec())
    await cloud.create(spec())
    assert len(store.nodes) == 1

    await cloud.delete("ws0123abcde")
    await cloud.delete("ws0123abcde")  # already gone is success
    assert store.nodes == {}
    assert await cloud.list() == []


@pytest.mark.parametrize("code", sorted(SIMULATED_ERRORS))
async def test_a_configured_failure_refuses_as_azure_would(code: str) -> None:
    store = NodeStore()
    cloud = SimulatedCloud(store.api(), CATALOG, delay_s=0, failures={"standard_nc12s_v3": code})

    with pytest.raises(CloudError) as caught:
        await cloud.create(spec())

    assert caught.value.reason == code
    assert "{" not in caught.value.message  # every placeholder was filled in
    assert store.nodes == {}


@pytest.mark.parametrize("failures", [{"*": "Nope"}, {V100_X2: "quotaexceeded"}])
def test_an_unknown_failure_code_is_refused_at_construction(failures: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="unknown simulated failure"):
        SimulatedCloud(NodeStore().api(), CATALOG, failures=failures)
