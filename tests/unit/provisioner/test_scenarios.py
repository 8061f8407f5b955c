"""Reference 7.4 scenarios 1 and 12 through the provisioner's pure steps: the NodeClaim Kaito
emits, the agent pool gpu-provisioner makes of it, the node that joins, the GPU plugin gate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from presets.catalog import default_catalog
from services.provisioner.claims import Launch, claim_status, node_for_pool, pool_spec
from services.provisioner.cloud import SimulatedCloud, SimulatedNodes
from services.provisioner.nodes import Failed, Pending, Ready, assess
from tests.unit.provisioner.objects import NVIDIA_V100, REF, V100, Obj, by_type, target

NOW = datetime(2026, 5, 1, 10, 0, 0, tzinfo=UTC)


async def _unused(*_: Any) -> Any:
    raise AssertionError("node_manifest makes no Kubernetes calls")


def test_scenario_1_one_nodeclaim_becomes_one_ready_labelled_gpu_node() -> None:
    tgt = target(instance_type=V100, node_count=1, gpu=NVIDIA_V100, disk_gib=80)

    first = assess(tgt, [], [], (), provision=True, cloud="azure")
    assert len(first.create) == 1
    nodeclaim: Obj = {**first.create[0]}
    nodeclaim["metadata"] = {**nodeclaim["metadata"], "creationTimestamp": "2026-05-01T10:00:00Z"}

    pool = pool_spec(nodeclaim)
    assert pool.os_disk_gib == 80
    assert pool.vm_size == V100
    assert pool.node_taints == ("sku=gpu:NoSchedule",)
    assert pool.node_labels["kaito.sh/workspace"] == REF.name

    cloud = SimulatedCloud(SimulatedNodes(_unused, _unused, _unused), default_catalog())
    joined = cloud.node_manifest(pool, 1)
    assert node_for_pool([joined], pool.name) is joined
    nodeclaim["status"] = claim_status(nodeclaim, Launch("True", "Launched"), joined, NOW)
    assert by_type_status(nodeclaim)["Ready"] == "True"

    second = assess(tgt, [joined], [nodeclaim], (), provision=True, cloud="azure")
    assert second.create == ()
    assert second.selected == (joined["metadata"]["name"],)
    assert second.label == (joined["metadata"]["name"],)  # Kaito labels accelerator=nvidia

    joined["metadata"]["labels"]["accelerator"] = "nvidia"
    third = assess(tgt, [joined], [nodeclaim], (), provision=True, cloud="azure")
    assert third.label == ()
    assert third.outcome == Ready((joined["metadata"]["name"],))
    conds = by_type(third.conditions)
    assert {t: c.status for t, c in conds.items()} == {
        "NodeClaimReady": "True",
        "NodesReady": "True",
        "ResourceReady": "True",
    }


def test_scenario_12_an_unavailable_instance_type_is_terminal_and_surfaced() -> None:
    tgt = target(instance_type=V100, node_count=1, gpu=NVIDIA_V100)
    nodeclaim: Obj = {**assess(tgt, [], [], (), provision=True, cloud="azure").create[0]}
    message = "creating instance, all requested instance types were unavailable during launch"
    nodeclaim["status"] = claim_status(
        nodeclaim, Launch("False", "LaunchFailed", message), None, NOW
    )

    result = assess(tgt, [], [nodeclaim], (), provision=True, cloud="azure")

    assert result.outcome == Failed("LaunchFailed", message)
    assert result.create == ()
    claim_cond = by_type(result.conditions)["NodeClaimReady"]
    assert (claim_cond.status, claim_cond.reason) == ("False", "LaunchFailed")
    assert message in claim_cond.message


def test_a_claim_waiting_for_its_node_keeps_the_workspace_pending() -> None:
    tgt = target(instance_type=V100, node_count=1, gpu=NVIDIA_V100)
    nodeclaim: Obj = {**assess(tgt, [], [], (), provision=True, cloud="azure").create[0]}
    nodeclaim["status"] = claim_status(nodeclaim, Launch("True", "Launched"), None, NOW)

    result = assess(tgt, [], [nodeclaim], (), provision=True, cloud="azure")

    assert isinstance(result.outcome, Pending)
    assert result.create == ()
    claim_cond = by_type(result.conditions)["NodeClaimReady"]
    assert (claim_cond.status, claim_cond.reason) == ("False", "AwaitingReconciliation")


def by_type_status(nodeclaim: Obj) -> dict[str, str]:
    return {c["type"]: c["status"] for c in nodeclaim["status"]["conditions"]}
