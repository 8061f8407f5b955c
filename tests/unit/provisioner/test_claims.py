"""The gpu-provisioner side of a NodeClaim (reference 6.2-6.3, 7.3): the agent pool it
becomes, the node that joins for it and the status Karpenter writes on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.provisioner.azure import agent_pool_body
from services.provisioner.claims import (
    InvalidNodeClaimError,
    Launch,
    PoolSpec,
    claim_status,
    node_for_pool,
    pool_spec,
)
from shared.errors import PermanentError
from tests.unit.provisioner.objects import (
    A100,
    REF,
    V100,
    Obj,
    claim,
    lifecycle,
    node,
)

NOW = datetime(2026, 5, 1, 12, 30, 0, tzinfo=UTC)
PROVIDER_ID = (
    "azure:///subscriptions/0000/resourceGroups/mc_rg/providers/Microsoft.Compute/"
    "virtualMachineScaleSets/aks-ws0123abcde-12345678-vmss/virtualMachines/0"
)


def conditions_of(status: Obj) -> dict[str, Obj]:
    found = {c["type"]: c for c in status["conditions"]}
    assert len(found) == len(status["conditions"])
    return found


# --- pool_spec ----------------------------------------------------------------------------------


def test_pool_spec_from_a_kaito_nodeclaim() -> None:
    spec = pool_spec(claim("ws0123abcde", instance_type=A100, storage="128Gi"))

    assert spec.name == "ws0123abcde"
    assert spec.vm_size == A100
    assert spec.os_disk_gib == 128
    assert spec.os_sku == "Ubuntu"
    assert spec.count == 1
    assert spec.node_taints == ("sku=gpu:NoSchedule",)


@pytest.mark.parametrize(
    "name",
    ["1ws0123", "Ws0123", "ws-0123", "ws0123abcdef0", "ws_0123", "", "ws0123\n"],
)
def test_an_invalid_pool_name_is_refused_naming_it(name: str) -> None:
    with pytest.raises(InvalidNodeClaimError) as caught:
        pool_spec(claim(name))

    assert f"agentpool name({name}) is invalid" in caught.value.message
    assert isinstance(caught.value, PermanentError)
    assert caught.value.reason == "InvalidNodeClaim"


@pytest.mark.parametrize("name", ["w", "ws0123abcde", "abcdefghijkl", "a1"])
def test_a_valid_pool_name_is_accepted(name: str) -> None:
    assert pool_spec(claim(name)).name == name


def test_a_nodeclaim_without_an_instance_type_requirement_is_refused() -> None:
    bad = claim("ws0123abcde")
    bad["spec"]["requirements"] = [
        r for r in bad["spec"]["requirements"] if r["key"] != "node.kubernetes.io/instance-type"
    ]

    with pytest.raises(InvalidNodeClaimError, match=r"^nodeClaim spec has no requirement for "):
        pool_spec(bad)


@pytest.mark.parametrize("storage", [None, "0", "0Gi", "512Mi"])
def test_a_missing_or_zero_storage_request_is_refused(storage: str | None) -> None:
    with pytest.raises(InvalidNodeClaimError) as caught:
        pool_spec(claim("ws0123abcde", storage=storage))

    assert "storage request of nodeclaim(ws0123abcde) should be more than 0" in str(caught.value)


@pytest.mark.parametrize(
    ("storage", "gib"),
    [
        ("128Gi", 128),
        ("1Ti", 1024),
        ("137438953472", 128),
        ("100G", 93),
        ("1.5Ti", 1536),
        ("1024Mi", 1),
        ("2147483648k", 2000),
    ],
)
def test_os_disk_size_is_the_storage_request_in_whole_gib(storage: str, gib: int) -> None:
    spec = pool_spec(claim("ws0123abcde", storage=storage))

    assert spec.os_disk_gib == gib
    assert agent_pool_body(spec)["properties"]["osDiskSizeGB"] == gib


def test_a_storage_request_that_is_no_quantity_is_refused() -> None:
    with pytest.raises(InvalidNodeClaimError, match="not a quantity"):
        pool_spec(claim("ws0123abcde", storage="lots"))


@pytest.mark.parametrize(
    ("annotation", "sku"),
    [
        ("azurelinux", "AzureLinux"),
        ("AzureLinux", "AzureLinux"),
        ("AZURELINUX", "AzureLinux"),
        ("ubuntu", "Ubuntu"),
        ("Ubuntu", "Ubuntu"),
        ("mariner", "Ubuntu"),
        (None, "Ubuntu"),
    ],
)
def test_the_os_sku_comes_from_the_image_family_annotation(
    annotation: str | None, sku: str
) -> None:
    annotations = {} if annotation is None else {"kaito.sh/node-image-family": annotation}

    spec = pool_spec(claim("ws0123abcde", annotations=annotations))

    assert spec.os_sku == sku
    assert agent_pool_body(spec)["properties"]["osSKU"] == sku


@pytest.mark.parametrize(
    ("label", "annotation", "sku"),
    [
        ("azurelinux", None, "Ubuntu"),
        ("azurelinux", "ubuntu", "Ubuntu"),
        ("ubuntu", "azurelinux", "AzureLinux"),
    ],
)
def test_a_label_with_the_image_family_key_is_ignored(
    label: str, annotation: str | None, sku: str
) -> None:
    annotations = {} if annotation is None else {"kaito.sh/node-image-family": annotation}
    nodeclaim = claim(
        "ws0123abcde", labels={"kaito.sh/node-image-family": label}, annotations=annotations
    )

    assert pool_spec(nodeclaim).os_sku == sku


def test_node_labels_carry_the_nodepool_every_claim_label_machine_type_and_creation_time() -> None:
    nodeclaim = claim(
        "ws0123abcde",
        instance_type=A100,
        labels={"apps": "phi", "team": "research"},
        created="2026-03-04T05:06:07Z",
    )

    labels = pool_spec(nodeclaim).node_labels

    assert labels == {
        "karpenter.sh/nodepool": "kaito",
        "kaito.sh/workspace": REF.name,
        "kaito.sh/workspacenamespace": REF.namespace,
        "apps": "phi",
        "team": "research",
        "kaito.sh/machine-type": "gpu",
        "kaito.sh/creation-timestamp": "2026-03-04T05-06-07Z",
    }


def test_the_creation_timestamp_label_is_in_utc() -> None:
    nodeclaim = claim("ws0123abcde", created="2026-03-04T07:06:07+02:00")

    labels = pool_spec(nodeclaim).node_labels

    assert labels["kaito.sh/creation-timestamp"] == "2026-03-04T05-06-07Z"


@pytest.mark.parametrize(
    ("vm_size", "machine_type"),
    [
        (V100, "gpu"),
        ("Standard_ND96asr_v4", "gpu"),
        ("Standard_NV36ads_A10_v5", "gpu"),
        ("Standard_D4s_v5", "cpu"),
        ("Standard_E8s_v5", "cpu"),
    ],
)
def test_machine_type_is_gpu_for_standard_n_sizes(vm_size: str, machine_type: str) -> None:
    labels = pool_spec(claim("ws0123abcde", instance_type=vm_size)).node_labels

    assert labels["kaito.sh/machine-type"] == machine_type


def test_taints_are_rendered_key_value_effect() -> None:
    taints = (
        {"key": "sku", "value": "gpu", "effect": "NoSchedule"},
        {"key": "dedicated", "value": "ml", "effect": "NoExecute"},
        {"key": "nvidia.com/gpu", "value": "present", "effect": "PreferNoSchedule"},
    )

    spec = pool_spec(claim("ws0123abcde", taints=taints))

    assert spec.node_taints == (
        "sku=gpu:NoSchedule",
        "dedicated=ml:NoExecute",
        "nvidia.com/gpu=present:PreferNoSchedule",
    )


def test_agent_pool_body_is_one_linux_vmss_node() -> None:
    spec = PoolSpec(
        name="ws0123abcde",
        vm_size=A100,
        os_sku="AzureLinux",
        os_disk_gib=256,
        node_labels={"kaito.sh/workspace": "phi-3"},
        node_taints=("sku=gpu:NoSchedule",),
    )

    props = agent_pool_body(spec)["properties"]

    assert props["type"] == "VirtualMachineScaleSets"
    assert props["count"] == 1
    assert props["vmSize"] == A100
    assert props["osType"] == "Linux"
    assert props["osSKU"] == "AzureLinux"
    assert props["osDiskSizeGB"] == 256
    assert props["nodeLabels"] == {"kaito.sh/workspace": "phi-3"}
    assert props["nodeTaints"] == ["sku=gpu:NoSchedule"]


# --- node_for_pool ------------------------------------------------------------------------------


def pool_node(name: str, pool: str, *, provider_id: str | None = PROVIDER_ID, **labels: str) -> Obj:
    both = {"agentpool": pool, "kubernetes.azure.com/agentpool": pool, **labels}
    return node(name, labels=both, provider_id=provider_id)


def test_the_pool_node_has_both_agentpool_labels_and_a_provider_id() -> None:
    joined = pool_node("aks-ws0123abcde-vmss000000", "ws0123abcde")
    others = [
        pool_node("aks-other-vmss000000", "wsfedcba987"),
        node("half", labels={"agentpool": "ws0123abcde"}),
        node("other-half", labels={"kubernetes.azure.com/agentpool": "ws0123abcde"}),
        pool_node("no-provider", "ws0123abcde", provider_id=None),
        pool_node("empty-provider", "ws0123abcde", provider_id=""),
    ]

    assert node_for_pool([*others, joined], "ws0123abcde") is joined


@pytest.mark.parametrize(
    "nodes",
    [
        [],
        [node("half", labels={"agentpool": "ws0123abcde"}, provider_id=PROVIDER_ID)],
        [pool_node("no-provider", "ws0123abcde", provider_id=None)],
        [pool_node("a", "ws0123abcde"), pool_node("b", "ws0123abcde")],
    ],
)
def test_no_node_or_more_than_one_is_no_pool_node(nodes: list[Obj]) -> None:
    assert node_for_pool(nodes, "ws0123abcde") is None


# --- claim_status -------------------------------------------------------------------------------


def joined_node(*, ready: str = "True", gpus: int | None = 1) -> Obj:
    """The node AKS joined for pool ws0123abcde, as gpu-provisioner labelled it."""
    labels = {
        "agentpool": "ws0123abcde",
        "kubernetes.azure.com/agentpool": "ws0123abcde",
        "kaito.sh/machine-type": "gpu",
        "karpenter.sh/nodepool": "kaito",
    }
    return node(
        "aks-ws0123abcde-vmss000000",
        labels=labels,
        provider_id=PROVIDER_ID,
        ready=ready,
        gpus=gpus,
    )


def test_launched_without_a_node_waits_for_registration() -> None:
    status = claim_status(claim("ws0123abcde"), Launch("True", "Launched"), None, NOW)

    conds = conditions_of(status)
    assert conds["Launched"]["status"] == "True"
    assert conds["Registered"]["status"] == "Unknown"
    assert conds["Ready"]["status"] != "True"
    assert conds.get("Initialized", {}).get("status") != "True"
    assert "nodeName" not in status


def test_a_ready_gpu_node_makes_the_claim_registered_initialized_and_ready() -> None:
    joined = joined_node()

    status = claim_status(
        claim("ws0123abcde"),
        Launch("True", "Launched", image_id="AKSUbuntu-2204gen2-2026.04.1"),
        joined,
        NOW,
    )

    conds = conditions_of(status)
    for ctype in ("Launched", "Registered", "Initialized", "Ready"):
        assert conds[ctype]["status"] == "True", ctype
        assert conds[ctype]["lastTransitionTime"] == "2026-05-01T12:30:00Z", ctype
        assert conds[ctype]["observedGeneration"] == 1, ctype
    assert status["nodeName"] == "aks-ws0123abcde-vmss000000"
    assert status["providerID"] == PROVIDER_ID
    assert status["imageID"] == "AKSUbuntu-2204gen2-2026.04.1"
    assert status["capacity"]["nvidia.com/gpu"] == "1"


@pytest.mark.parametrize(("ready", "gpus"), [("False", 1), ("True", None), ("True", 0)])
def test_a_gpu_node_not_ready_or_without_gpus_is_not_initialized(
    ready: str, gpus: int | None
) -> None:
    status = claim_status(
        claim("ws0123abcde"), Launch("True", "Launched"), joined_node(ready=ready, gpus=gpus), NOW
    )

    conds = conditions_of(status)
    assert conds["Registered"]["status"] == "True"
    assert conds["Initialized"]["status"] != "True"
    assert conds["Ready"]["status"] != "True"


def test_a_failed_launch_makes_the_claim_not_ready_with_the_same_reason() -> None:
    launch = Launch("False", "QuotaExceeded", "Operation could not be completed ... quota.")

    status = claim_status(claim("ws0123abcde"), launch, None, NOW)

    conds = conditions_of(status)
    assert (conds["Launched"]["status"], conds["Launched"]["reason"]) == ("False", "QuotaExceeded")
    assert conds["Launched"]["message"] == launch.message
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "QuotaExceeded")
    assert conds["Ready"]["message"] == launch.message
    assert conds.get("Registered", {}).get("status") != "True"


def test_the_transition_time_stays_while_a_status_does_not_change() -> None:
    earlier = claim(
        "ws0123abcde",
        conditions=[
            lifecycle("Launched", "True"),
            lifecycle("Registered", "Unknown", "AwaitingReconciliation"),
            lifecycle("Ready", "Unknown", "AwaitingReconciliation"),
        ],
    )
    later = NOW + timedelta(minutes=5)

    status = claim_status(earlier, Launch("True", "Launched"), joined_node(), later)

    conds = conditions_of(status)
    assert conds["Launched"]["lastTransitionTime"] == "2026-05-01T10:00:00Z"  # True -> True
    assert conds["Registered"]["lastTransitionTime"] == "2026-05-01T12:35:00Z"  # Unknown -> True
    assert conds["Ready"]["lastTransitionTime"] == "2026-05-01T12:35:00Z"
    assert conds["Initialized"]["lastTransitionTime"] == "2026-05-01T12:35:00Z"  # new


def test_a_reason_change_alone_does_not_move_the_transition_time() -> None:
    earlier = claim(
        "ws0123abcde", conditions=[lifecycle("Launched", "False", "Throttled", "try later")]
    )

    status = claim_status(earlier, Launch("False", "QuotaExceeded", "no quota"), None, NOW)

    launched = conditions_of(status)["Launched"]
    assert (launched["reason"], launched["message"]) == ("QuotaExceeded", "no quota")
    assert launched["lastTransitionTime"] == "2026-05-01T10:00:00Z"


def test_claim_status_keeps_other_status_fields_and_conditions() -> None:
    earlier: dict[str, Any] = claim("ws0123abcde", conditions=[lifecycle("Drifted", "False")])
    earlier["status"]["lastPodEventTime"] = "2026-05-01T09:00:00Z"

    status = claim_status(earlier, Launch("True", "Launched"), None, NOW)

    assert status["lastPodEventTime"] == "2026-05-01T09:00:00Z"
    assert conditions_of(status)["Drifted"] == lifecycle("Drifted", "False")
