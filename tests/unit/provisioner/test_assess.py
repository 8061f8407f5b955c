"""What ``assess`` decides for one workspace: the NodeClaims to create (reference 2.3), the GPU
plugin gate (2.4) and the conditions it reports (1.6), with and without auto-provisioning."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from services.provisioner.nodes import (
    MAX_REASON_MESSAGE,
    Assessment,
    Failed,
    Pending,
    Ready,
    Target,
    assess,
    claim_problem,
    claim_ready,
    launch_failure,
    nodeclaim_name,
)
from tests.unit.provisioner.objects import (
    NVIDIA_V100,
    OTHER_REF,
    REF,
    V100,
    by_type,
    claim,
    lifecycle,
    node,
    provisioned,
    ready_claim,
    target,
)

CLAIM_NAME = re.compile(r"^ws[0-9a-f]{9}$")
AGENT_POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
QUOTA_MESSAGE = (
    "Operation could not be completed as it results in exceeding approved standardNCSv3Family "
    "Cores quota. Additional details - Deployment Model: Resource Manager, Location: eastus, "
    "Current Limit: 0, Current Usage: 0, Additional Required: 6, (Minimum) New Limit Required: "
    "6. Submit a request for Quota increase at https://aka.ms/ProdportalCRP/#blade/... by "
    "specifying parameters listed in the 'Details' section for deployment to succeed."
)
UNAVAILABLE = "all requested instance types were unavailable during launch"


def run(
    tgt: Target,
    nodes: Sequence[Mapping[str, Any]] = (),
    claims: Sequence[Mapping[str, Any]] = (),
    previous: Sequence[str] = (),
    *,
    provision: bool = True,
) -> Assessment:
    return assess(tgt, nodes, claims, previous, provision=provision, cloud="azure")


def created_names(result: Assessment) -> list[str]:
    return [str(m["metadata"]["name"]) for m in result.create]


# --- NodeClaims to create -----------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 3])
def test_an_empty_cluster_gets_exactly_node_count_nodeclaims(count: int) -> None:
    result = run(target(node_count=count))

    names = created_names(result)
    assert len(names) == count
    assert len(set(names)) == count
    for name in names:
        assert CLAIM_NAME.match(name), name
        assert AGENT_POOL_NAME.match(name), name  # gpu-provisioner can turn it into a pool
    assert all(m["kind"] == "NodeClaim" for m in result.create)
    assert result.selected == ()


def test_nodeclaim_names_are_stable_for_a_workspace_uid_and_differ_for_another() -> None:
    first = created_names(run(target(node_count=2)))
    second = created_names(run(target(node_count=2)))
    other = created_names(run(target(ref=OTHER_REF, node_count=2)))

    assert first == second
    assert not set(first) & set(other)
    assert first == [nodeclaim_name(REF, 0), nodeclaim_name(REF, 1)]


def test_while_creating_the_conditions_say_pending() -> None:
    result = run(target(node_count=2))

    conds = by_type(result.conditions)
    assert set(conds) == {"NodeClaimReady", "NodesReady", "ResourceReady"}
    claim_cond, nodes_cond, resource = (
        conds["NodeClaimReady"],
        conds["NodesReady"],
        conds["ResourceReady"],
    )
    assert (claim_cond.status, claim_cond.reason) == ("Unknown", "CreateNodeClaimPending")
    assert claim_cond.message == "creating 2 nodeClaims"
    assert (nodes_cond.status, nodes_cond.reason) == ("False", "NodeNotReady")
    assert nodes_cond.message.startswith("Not enough Nodes are ready")
    assert resource.status == "False"
    assert isinstance(result.outcome, Pending)
    # ResourceReady copies the failing sub-condition (reference 1.6).
    blocking = next(c for c in (claim_cond, nodes_cond) if c.reason == resource.reason)
    assert resource.message == blocking.message
    assert (result.outcome.reason, result.outcome.message) == (resource.reason, resource.message)
    assert all(c.observed_generation == REF.generation for c in result.conditions)


def test_a_live_claim_for_each_slot_means_no_creates() -> None:
    claims = [claim(nodeclaim_name(REF, 0)), claim(nodeclaim_name(REF, 1))]

    result = run(target(node_count=2), claims=claims)

    assert result.create == ()
    conds = by_type(result.conditions)
    assert conds["NodeClaimReady"].status == "False"
    assert conds["NodeClaimReady"].reason == "NodeClaimNotReady"
    assert isinstance(result.outcome, Pending)


def test_existing_claims_are_counted_whatever_their_names() -> None:
    """toCreate = needed - existing NodeClaims (reference 2.3), not per name."""
    result = run(target(node_count=3), claims=[claim("ws0123abcde")])

    names = created_names(result)
    assert len(names) == 2
    assert "ws0123abcde" not in names


def test_a_deleting_claim_is_replaced_under_another_name() -> None:
    gone = nodeclaim_name(REF, 0)

    result = run(target(node_count=1), claims=[claim(gone, deleting=True)])

    names = created_names(result)
    assert len(names) == 1
    assert names[0] != gone
    assert CLAIM_NAME.match(names[0])
    assert by_type(result.conditions)["NodeClaimReady"].reason == "CreateNodeClaimPending"


def test_a_name_comes_back_once_its_deleting_claim_is_gone() -> None:
    first = created_names(run(target(node_count=1)))
    replaced = created_names(run(target(node_count=1), claims=[claim(first[0], deleting=True)]))
    later = created_names(run(target(node_count=1)))

    assert replaced != first
    assert later == first


def test_matching_user_nodes_reduce_the_claims_needed() -> None:
    """needed = count - ready matching nodes without karpenter.sh/nodepool (reference 2.3)."""
    result = run(target(node_count=3), nodes=[node("user-1"), node("user-2")])

    assert len(result.create) == 1
    assert result.selected == ("user-1", "user-2")
    assert by_type(result.conditions)["NodeClaimReady"].message == "creating 1 nodeClaims"


def test_enough_user_nodes_need_no_claims() -> None:
    result = run(target(node_count=2), nodes=[node("user-1"), node("user-2")])

    assert result.create == ()
    assert result.outcome == Ready(("user-1", "user-2"))


def test_provisioned_nodes_do_not_reduce_the_claims_needed() -> None:
    """A node carrying karpenter.sh/nodepool belongs to a NodeClaim; without live claims it
    does not count against the NodeClaims needed."""
    result = run(target(node_count=2), nodes=[provisioned("leftover")])

    assert len(result.create) == 2


def test_unready_or_mismatched_user_nodes_do_not_reduce_the_claims_needed() -> None:
    nodes = [node("down", ready="False"), node("other", instance_type="Standard_NC24s_v3")]

    assert len(run(target(node_count=2), nodes=nodes).create) == 2


# --- bring your own nodes -----------------------------------------------------------------------


def test_without_provisioning_nothing_is_ever_created_and_no_nodeclaim_condition() -> None:
    result = run(target(node_count=2), provision=False)

    assert result.create == ()
    conds = by_type(result.conditions)
    assert set(conds) == {"NodesReady", "ResourceReady"}
    assert (conds["NodesReady"].status, conds["NodesReady"].reason) == ("False", "NodeNotReady")
    assert conds["ResourceReady"].status == "False"
    assert isinstance(result.outcome, Pending)
    assert result.outcome.reason == "NodeNotReady"


def test_without_provisioning_enough_matching_nodes_are_ready() -> None:
    nodes = [node("byo-1", labels={"apps": "phi"}), node("byo-2", labels={"apps": "phi"})]
    tgt = target(instance_type=None, node_count=2, labels={"apps": "phi"})

    result = run(tgt, nodes=nodes, provision=False)

    assert result.create == ()
    assert result.outcome == Ready(("byo-1", "byo-2"))
    conds = by_type(result.conditions)
    assert set(conds) == {"NodesReady", "ResourceReady"}
    assert conds["ResourceReady"].status == "True"


def test_without_provisioning_claims_that_exist_are_ignored() -> None:
    result = run(target(node_count=1), claims=[claim("ws0123abcde")], provision=False)

    assert result.create == ()
    assert "NodeClaimReady" not in by_type(result.conditions)


# --- GPU plugin (reference 2.4) -----------------------------------------------------------------


def gpu_target(node_count: int = 1) -> Target:
    return target(node_count=node_count, gpu=NVIDIA_V100)


def test_a_selected_nvidia_node_without_the_accelerator_label_is_to_be_labelled() -> None:
    nodes = [
        provisioned("bare", gpus=1),
        provisioned("labelled", gpus=1, labels={"accelerator": "nvidia"}),
        provisioned("other-value", gpus=1, labels={"accelerator": "amd"}),
    ]
    claims = [
        ready_claim(f"ws00000000{i}", n) for i, n in enumerate(("bare", "labelled", "other-value"))
    ]

    result = run(gpu_target(3), nodes=nodes, claims=claims)

    assert set(result.label) == {"bare", "other-value"}


def test_nodes_that_are_not_selected_are_not_labelled() -> None:
    nodes = [provisioned("a-used", gpus=1), provisioned("b-spare", gpus=1)]

    result = run(gpu_target(1), nodes=nodes, claims=[ready_claim("ws000000000", "a-used")])

    assert result.label == ("a-used",)


def test_a_node_without_gpu_capacity_is_not_ready_for_the_plugin() -> None:
    nodes = [provisioned("no-plugin", labels={"accelerator": "nvidia"})]

    result = run(gpu_target(), nodes=nodes, claims=[ready_claim("ws000000000", "no-plugin")])

    nodes_cond = by_type(result.conditions)["NodesReady"]
    assert (nodes_cond.status, nodes_cond.reason) == ("False", "NodePluginsNotReady")
    assert nodes_cond.message.startswith("waiting all node plugins to be ready")
    assert "no-plugin" in nodes_cond.message
    assert isinstance(result.outcome, Pending)
    assert result.outcome.reason == "NodePluginsNotReady"
    assert by_type(result.conditions)["ResourceReady"].reason == "NodePluginsNotReady"


def test_zero_gpu_capacity_is_no_capacity() -> None:
    nodes = [provisioned("zero", gpus=0, labels={"accelerator": "nvidia"})]

    result = run(gpu_target(), nodes=nodes, claims=[ready_claim("ws000000000", "zero")])

    assert by_type(result.conditions)["NodesReady"].reason == "NodePluginsNotReady"


def test_all_fine_is_ready_with_every_condition_true() -> None:
    nodes = [provisioned("gpu-node", gpus=1, labels={"accelerator": "nvidia"})]

    result = run(gpu_target(), nodes=nodes, claims=[ready_claim("ws000000000", "gpu-node")])

    assert result.outcome == Ready(("gpu-node",))
    assert result.create == ()
    assert result.label == ()
    conds = by_type(result.conditions)
    assert (conds["NodeClaimReady"].status, conds["NodeClaimReady"].reason) == (
        "True",
        "NodeClaimsReady",
    )
    assert (conds["NodesReady"].status, conds["NodesReady"].reason) == ("True", "NodesReady")
    assert (conds["ResourceReady"].status, conds["ResourceReady"].reason) == (
        "True",
        "workspaceResourceStatusSuccess",
    )
    assert conds["ResourceReady"].message == "workspace resource is ready"


def test_the_plugin_is_not_checked_for_an_instance_type_outside_the_table() -> None:
    """Only SKUs in the known GPU table get the plugin check (reference 2.4 step 3)."""
    nodes = [provisioned("plain")]  # no nvidia.com/gpu capacity, no accelerator label

    result = run(target(gpu=None), nodes=nodes, claims=[ready_claim("ws000000000", "plain")])

    assert result.label == ()
    assert result.outcome == Ready(("plain",))


def test_a_claim_without_conditions_is_ready_once_it_names_its_node() -> None:
    assert claim_ready(claim("ws000000000", node_name="gpu-node"))
    assert not claim_ready(claim("ws000000000"))
    assert not claim_ready(
        claim("ws000000000", conditions=[lifecycle("Ready", "True")], deleting=True)
    )
    assert not claim_ready(
        claim("ws000000000", conditions=[lifecycle("Ready", "False")], node_name="gpu-node")
    )


# --- NodeClaim lifecycle -> conditions (reference 1.6, 6.2 step 6) --------------------------------


def test_claim_problem_reads_launched_then_registered_then_initialized_across_claims() -> None:
    early = claim(
        "ws00000000a",
        conditions=[
            lifecycle("Launched", "True"),
            lifecycle("Registered", "True"),
            lifecycle("Initialized", "False", "KubeletNotReady", "kubelet is not ready"),
        ],
    )
    late = claim(
        "ws00000000b",
        conditions=[
            lifecycle("Launched", "True"),
            lifecycle("Registered", "False", "NodeNotFound", "no node registered"),
        ],
    )

    assert claim_problem([early, late]) == ("NodeNotFound", "no node registered")
    assert claim_problem([early]) == ("KubeletNotReady", "kubelet is not ready")


def test_claim_problem_prefers_a_real_error_over_awaiting_reconciliation() -> None:
    waiting = claim(
        "ws00000000a",
        conditions=[
            lifecycle("Launched", "Unknown", "AwaitingReconciliation", "object is awaiting")
        ],
    )
    broken = claim(
        "ws00000000b",
        conditions=[
            lifecycle("Launched", "True"),
            lifecycle("Registered", "True"),
            lifecycle("Initialized", "False", "NodeNotReady", "node never became Ready"),
        ],
    )

    assert claim_problem([waiting, broken]) == ("NodeNotReady", "node never became Ready")
    assert claim_problem([waiting]) == ("AwaitingReconciliation", "object is awaiting")


def test_claim_problem_is_none_when_every_lifecycle_condition_is_true() -> None:
    assert claim_problem([ready_claim("ws00000000a", "gpu-node")]) is None


def test_claim_problem_truncates_the_message_to_256_characters() -> None:
    long = "x" * 300
    broken = claim("ws00000000a", conditions=[lifecycle("Launched", "False", "LaunchFailed", long)])

    reason, message = claim_problem([broken]) or ("", "")

    assert reason == "LaunchFailed"
    assert message == long[:MAX_REASON_MESSAGE]
    assert MAX_REASON_MESSAGE == 256


def test_claim_problem_truncates_a_benign_message_too() -> None:
    """Reference 1.6: the surfaced reason+message is at most 256 characters, whichever
    condition it comes from."""
    long = "waiting " * 50
    waiting = claim(
        "ws00000000a",
        conditions=[lifecycle("Launched", "Unknown", "AwaitingReconciliation", long)],
    )

    found = claim_problem([waiting])

    assert found is not None
    assert found[0] == "AwaitingReconciliation"
    assert len(found[1]) <= 256
    assert found[1] == long[:256]


def test_a_lifecycle_problem_is_surfaced_in_nodeclaim_ready() -> None:
    stuck = claim(
        nodeclaim_name(REF, 0),
        conditions=[
            lifecycle("Launched", "True"),
            lifecycle("Registered", "False", "RegistrationFailed", "node did not join in 15m"),
        ],
    )

    result = run(target(), claims=[stuck])

    cond = by_type(result.conditions)["NodeClaimReady"]
    assert (cond.status, cond.reason) == ("False", "RegistrationFailed")
    assert "node did not join in 15m" in cond.message
    assert isinstance(result.outcome, Pending)
    assert result.outcome.reason == "RegistrationFailed"


def test_the_nodeclaim_ready_message_is_at_most_256_characters() -> None:
    """Reference 1.6: NodeClaimReady carries the reason and message (<= 256 characters) of the
    first non-True lifecycle condition."""
    long = "node registration is taking longer than expected; " * 10
    stuck = claim(
        nodeclaim_name(REF, 0),
        conditions=[lifecycle("Launched", "True"), lifecycle("Registered", "False", "Slow", long)],
    )

    cond = by_type(run(target(), claims=[stuck]).conditions)["NodeClaimReady"]

    assert cond.reason == "Slow"
    assert cond.message.startswith(long[:200])
    assert len(cond.message) <= 256


def test_launch_failure_finds_launched_false_only() -> None:
    failed = claim(
        "ws00000000a", conditions=[lifecycle("Launched", "False", "QuotaExceeded", QUOTA_MESSAGE)]
    )
    waiting = claim(
        "ws00000000b", conditions=[lifecycle("Launched", "Unknown", "AwaitingReconciliation")]
    )

    assert launch_failure([waiting, failed]) == ("QuotaExceeded", QUOTA_MESSAGE)
    assert launch_failure([waiting]) is None
    assert launch_failure([ready_claim("ws00000000c", "n")]) is None


@pytest.mark.parametrize(
    ("reason", "message"),
    [("QuotaExceeded", QUOTA_MESSAGE), ("LaunchFailed", f"creating instance, {UNAVAILABLE}")],
)
def test_a_failed_launch_fails_the_workspace_with_the_clouds_words(
    reason: str, message: str
) -> None:
    failed = claim(
        nodeclaim_name(REF, 0), conditions=[lifecycle("Launched", "False", reason, message)]
    )

    result = run(target(), claims=[failed])

    assert result.outcome == Failed(reason, message)
    assert result.create == ()  # not retried: the same request cannot succeed
    conds = by_type(result.conditions)
    assert (conds["ResourceReady"].status, conds["ResourceReady"].reason) == ("False", reason)
    assert conds["ResourceReady"].message == message
    # Scenario 12: the message is surfaced in NodeClaimReady.
    assert (conds["NodeClaimReady"].status, conds["NodeClaimReady"].reason) == ("False", reason)
    assert message[:200] in conds["NodeClaimReady"].message


def test_deleting_the_failed_claim_lets_the_workspace_try_again() -> None:
    failed = claim(
        nodeclaim_name(REF, 0),
        conditions=[lifecycle("Launched", "False", "QuotaExceeded", QUOTA_MESSAGE)],
        deleting=True,
    )

    result = run(target(), claims=[failed])

    assert isinstance(result.outcome, Pending)
    assert len(result.create) == 1
    assert created_names(result) != [nodeclaim_name(REF, 0)]


def test_a_ready_claim_whose_node_is_not_ready_waits_for_nodes() -> None:
    nodes = [provisioned("gpu-node", ready="False", gpus=1)]

    result = run(target(), nodes=nodes, claims=[ready_claim("ws000000000", "gpu-node")])

    conds = by_type(result.conditions)
    assert conds["NodeClaimReady"].status == "True"
    assert (conds["NodesReady"].status, conds["NodesReady"].reason) == ("False", "NodeNotReady")
    assert isinstance(result.outcome, Pending)
    assert result.outcome.reason == "NodeNotReady"
    assert conds["ResourceReady"].reason == "NodeNotReady"


def test_the_instance_type_in_the_plan_is_the_claims_instance_type() -> None:
    result = run(target(instance_type=V100))

    requirement = result.create[0]["spec"]["requirements"][1]
    assert requirement == {
        "key": "node.kubernetes.io/instance-type",
        "operator": "In",
        "values": [V100],
    }
