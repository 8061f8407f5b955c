"""What one workspace needs from the cluster's nodes, decided from data (no I/O): which Ready
nodes it uses and in what order, which NodeClaims to create and what they look like (reference
2.3), whether the GPUs are usable (2.4), and the conditions Kaito would report (1.6).

The handler in ``service.py`` lists nodes and NodeClaims, calls ``assess`` and applies the
answer: creates the NodeClaims, labels the nodes, publishes the outcome.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from shared.events import Condition, WorkspaceRef
from shared.labels import IMAGE_FAMILY_ANNOTATION, WORKSPACE_LABEL, WORKSPACE_NAMESPACE_LABEL
from shared.plan import NodeSelection, Plan

Manifest = dict[str, Any]

NODEPOOL_LABEL = "karpenter.sh/nodepool"
NODEPOOL = "kaito"
MACHINE_TYPE_LABEL = "kaito.sh/machine-type"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
OS_LABEL = "kubernetes.io/os"
AZURE_SKU_LABEL = "karpenter.azure.com/sku-name"
ACCELERATOR_LABEL = "accelerator"
ACCELERATOR = "nvidia"
GPU_RESOURCE = "nvidia.com/gpu"
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
GPU_TAINT: Manifest = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
NODECLAIM_API_VERSION = "karpenter.sh/v1"
# The Karpenter lifecycle conditions Kaito reads, in the order it reads them.
LIFECYCLE = ("Launched", "Registered", "Initialized")
BENIGN_REASON = "AwaitingReconciliation"
MAX_REASON_MESSAGE = 256

Cloud = Literal["azure", "aws", "arc"]


@dataclass(frozen=True, slots=True)
class Target:
    """What one workspace generation needs, from its plan."""

    ref: WorkspaceRef
    instance_type: str | None
    node_count: int
    selection: NodeSelection
    disk_gib: int
    nvidia: bool  # the instance type is a known NVIDIA SKU: the GPU plugin is checked

    @classmethod
    def from_plan(cls, ref: WorkspaceRef, plan: Plan) -> Target:
        return cls(
            ref=ref,
            instance_type=plan.instance_type,
            node_count=plan.node_count,
            selection=plan.nodes,
            disk_gib=plan.disk_gib,
            nvidia=plan.gpu is not None and plan.gpu.vendor == "nvidia",
        )

    @property
    def owner_labels(self) -> dict[str, str]:
        return {WORKSPACE_LABEL: self.ref.name, WORKSPACE_NAMESPACE_LABEL: self.ref.namespace}


@dataclass(frozen=True, slots=True)
class Ready:
    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Pending:
    reason: str
    message: str
    ready_nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str
    message: str


Outcome = Ready | Pending | Failed


@dataclass(frozen=True, slots=True)
class Assessment:
    selected: tuple[str, ...]  # nodes the workload will use, in Kaito's order
    create: tuple[Manifest, ...]  # NodeClaims to create
    label: tuple[str, ...]  # nodes to label accelerator=nvidia
    outcome: Outcome
    conditions: tuple[Condition, ...]


# --- nodes --------------------------------------------------------------------------------------


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def name_of(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def is_deleting(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def condition_of(obj: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def node_ready(node: Mapping[str, Any]) -> bool:
    cond = condition_of(node, "Ready")
    return not is_deleting(node) and cond is not None and cond.get("status") == "True"


def gpu_capacity(node: Mapping[str, Any]) -> int:
    raw = ((node.get("status") or {}).get("capacity") or {}).get(GPU_RESOURCE, "0")
    try:
        return int(str(raw))
    except ValueError:
        return 0


def is_provisioned(node: Mapping[str, Any]) -> bool:
    """Created by a node provisioner (gpu-provisioner or Karpenter), not brought by the user."""
    labels = labels_of(node)
    return MACHINE_TYPE_LABEL in labels or NODEPOOL_LABEL in labels


def owner_of(node: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (namespace, name) of the Workspace a provisioned node was made for, from its labels."""
    labels = labels_of(node)
    if WORKSPACE_LABEL not in labels:
        return None
    return labels.get(WORKSPACE_NAMESPACE_LABEL, ""), labels[WORKSPACE_LABEL]


def matches(node: Mapping[str, Any], target: Target) -> bool:
    """Ready, not made for another Workspace, carries the selector's labels, and is preferred or
    of the instance type (any type when the plan names none, as in bring-your-own mode)."""
    if not node_ready(node):
        return False
    owner = owner_of(node)
    if owner is not None and owner != (target.ref.namespace, target.ref.name):
        return False  # another Workspace's GPU node: taking it would starve that Workspace
    labels = labels_of(node)
    if any(labels.get(k) != v for k, v in target.selection.label_selector.items()):
        return False
    if name_of(node) in target.selection.preferred_nodes or target.instance_type is None:
        return True
    return labels.get(INSTANCE_TYPE_LABEL, "").lower() == target.instance_type.lower()


def select_nodes(
    nodes: Iterable[Mapping[str, Any]], target: Target, previous: Sequence[str]
) -> list[Mapping[str, Any]]:
    """Matching nodes in Kaito's order: preferred, then the workspace's current worker nodes,
    then the nodes made for it, then provisioned nodes, then by name; at most ``node_count``."""
    preferred = set(target.selection.preferred_nodes)
    workers = set(previous)
    own = (target.ref.namespace, target.ref.name)

    def key(node: Mapping[str, Any]) -> tuple[bool, bool, bool, bool, str]:
        name = name_of(node)
        return (
            name not in preferred,
            name not in workers,
            owner_of(node) != own,
            not is_provisioned(node),
            name,
        )

    candidates = sorted((n for n in nodes if matches(n, target)), key=key)
    return candidates[: target.node_count]


# --- NodeClaims ---------------------------------------------------------------------------------


def nodeclaim_name(ref: WorkspaceRef, slot: int) -> str:
    """``ws`` + 9 hex characters: a valid AKS agent pool name (``^[a-z][a-z0-9]{0,11}$``).

    Kaito hashes a timestamp into the name; Kaiten hashes the workspace uid and the slot, so
    replicas handling the same plan at once create the same NodeClaim, and the second create
    is an AlreadyExists no-op instead of a second GPU node."""
    digest = hashlib.sha256(f"{ref.namespace}/{ref.name}/{ref.uid}/{slot}".encode()).hexdigest()
    return "ws" + digest[:9]


def nodeclaim_manifest(target: Target, name: str, cloud: Cloud) -> Manifest:
    """The NodeClaim for one node of ``target`` (reference 2.3)."""
    if target.instance_type is None:
        raise ValueError("a NodeClaim needs resource.instanceType")
    requirements: list[Manifest] = [
        _requirement(NODEPOOL_LABEL, [NODEPOOL]),
        _requirement(INSTANCE_TYPE_LABEL, [target.instance_type]),
        _requirement(OS_LABEL, ["linux"]),
    ]
    if cloud == "aws":
        node_class = {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}
        requirements.append(
            {"key": "karpenter.k8s.aws/instance-gpu-count", "operator": "Gt", "values": ["0"]}
        )
    else:
        node_class = {"group": "kaito.sh", "kind": "KaitoNodeClass", "name": "default"}
        requirements.append(_requirement(AZURE_SKU_LABEL, [target.instance_type]))
    return {
        "apiVersion": NODECLAIM_API_VERSION,
        "kind": "NodeClaim",
        "metadata": {
            "name": name,
            "labels": {
                NODEPOOL_LABEL: NODEPOOL,
                **target.owner_labels,
                **target.selection.label_selector,
            },
            "annotations": {
                DO_NOT_DISRUPT: "true",
                IMAGE_FAMILY_ANNOTATION: target.selection.node_image_family,
            },
        },
        "spec": {
            "nodeClassRef": node_class,
            "taints": [dict(GPU_TAINT)],
            "requirements": requirements,
            "resources": {"requests": {"storage": f"{target.disk_gib}Gi"}},
        },
    }


def _requirement(key: str, values: list[str]) -> Manifest:
    return {"key": key, "operator": "In", "values": values}


def claim_ready(claim: Mapping[str, Any]) -> bool:
    """Kaito's test: condition Ready=True, or (lacking conditions) a node name."""
    if is_deleting(claim):
        return False
    cond = condition_of(claim, "Ready")
    if cond is not None:
        return cond.get("status") == "True"
    return bool((claim.get("status") or {}).get("nodeName"))


def claim_problem(claims: Iterable[Mapping[str, Any]]) -> tuple[str, str] | None:
    """The reason and message of the first non-True lifecycle condition across the claims
    (Launched, then Registered, then Initialized); a real error wins over the benign
    AwaitingReconciliation."""
    benign: tuple[str, str] | None = None
    for ctype in LIFECYCLE:
        for claim in claims:
            cond = condition_of(claim, ctype)
            if cond is None or cond.get("status") == "True":
                continue
            reason = str(cond.get("reason") or "NodeClaimNotReady")
            found = (reason, str(cond.get("message", ""))[:MAX_REASON_MESSAGE])
            if reason != BENIGN_REASON:
                return found
            benign = benign or found
    return benign


def launch_failure(claims: Iterable[Mapping[str, Any]]) -> tuple[str, str] | None:
    """A claim whose launch failed (``Launched=False``): the cloud said no (quota, capacity,
    a bad request). Retrying the same request cannot help, so the workspace fails with the
    cloud's own words; deleting the NodeClaim makes Kaiten try again."""
    for claim in claims:
        cond = condition_of(claim, "Launched")
        if cond is not None and cond.get("status") == "False":
            return str(cond.get("reason") or "LaunchFailed"), str(cond.get("message", ""))
    return None


# --- the decision -------------------------------------------------------------------------------


def assess(
    target: Target,
    nodes: Sequence[Mapping[str, Any]],
    claims: Sequence[Mapping[str, Any]],
    previous: Sequence[str],
    *,
    provision: bool,
    cloud: Cloud,
) -> Assessment:
    """Everything the provisioner does for ``target`` given the cluster as it is now.

    ``claims`` are the workspace's NodeClaims; ``previous`` its current worker nodes;
    ``provision`` is false in bring-your-own mode (nothing is ever created)."""
    gen = target.ref.generation
    chosen = select_nodes(nodes, target, previous)
    selected = tuple(name_of(n) for n in chosen)
    user_nodes = [n for n in nodes if matches(n, target) and NODEPOOL_LABEL not in labels_of(n)]
    live = [c for c in claims if not is_deleting(c)]
    needed = max(0, target.node_count - len(user_nodes)) if provision else 0
    create: list[Manifest] = []
    if needed > len(live):
        existing = {name_of(c) for c in claims}
        slots = (nodeclaim_name(target.ref, i) for i in range(target.node_count + len(claims)))
        free = [n for n in slots if n not in existing][: needed - len(live)]
        create = [nodeclaim_manifest(target, n, cloud) for n in free]

    conditions: list[Condition] = []
    claim_cond: Condition | None = None
    if provision and (needed or live):
        claim_cond = _nodeclaim_condition(live, needed, len(create), gen)
        conditions.append(claim_cond)

    label = tuple(
        name_of(n)
        for n in chosen
        if target.nvidia and labels_of(n).get(ACCELERATOR_LABEL) != ACCELERATOR
    )
    nodes_cond = _nodes_condition(target, chosen, gen)
    conditions.append(nodes_cond)

    failure = launch_failure(live)
    outcome: Outcome
    if failure is not None:
        outcome = Failed(*failure)
    elif (claim_cond is None or claim_cond.status == "True") and nodes_cond.status == "True":
        outcome = Ready(selected)
    else:
        blocking = claim_cond if claim_cond and claim_cond.status != "True" else nodes_cond
        outcome = Pending(blocking.reason, blocking.message, selected)
    conditions.append(_resource_condition(outcome, gen))
    return Assessment(selected, tuple(create), label, outcome, tuple(conditions))


def _nodeclaim_condition(
    live: Sequence[Mapping[str, Any]], needed: int, creating: int, gen: int
) -> Condition:
    ready = sum(1 for c in live if claim_ready(c))
    if creating:
        return _cond(
            "NodeClaimReady",
            "Unknown",
            "CreateNodeClaimPending",
            f"creating {creating} nodeClaims",
            gen,
        )
    if ready >= needed:
        return _cond(
            "NodeClaimReady", "True", "NodeClaimsReady", f"{ready} nodeClaims are ready", gen
        )
    problem = claim_problem(live)
    reason, message = problem or ("NodeClaimNotReady", "")
    detail = f"{ready} of {needed} nodeClaims are ready"
    text = f"{message} ({detail})" if message else detail
    return _cond("NodeClaimReady", "False", reason, text[:MAX_REASON_MESSAGE], gen)


def _nodes_condition(target: Target, chosen: Sequence[Mapping[str, Any]], gen: int) -> Condition:
    if len(chosen) < target.node_count:
        wanted = _describe_wanted(target)
        return _cond(
            "NodesReady",
            "False",
            "NodeNotReady",
            f"Not enough Nodes are ready: {len(chosen)} of {target.node_count} Ready nodes "
            f"{wanted}",
            gen,
        )
    if target.nvidia:
        missing = [name_of(n) for n in chosen if gpu_capacity(n) <= 0]
        if missing:
            return _cond(
                "NodesReady",
                "False",
                "NodePluginsNotReady",
                "waiting all node plugins to be ready: no nvidia.com/gpu capacity on "
                + ", ".join(missing),
                gen,
            )
    return _cond("NodesReady", "True", "NodesReady", f"{len(chosen)} nodes are ready", gen)


def _describe_wanted(target: Target) -> str:
    parts = []
    if target.instance_type:
        parts.append(f"of instance type {target.instance_type}")
    if target.selection.label_selector:
        labels = ",".join(f"{k}={v}" for k, v in sorted(target.selection.label_selector.items()))
        parts.append(f"labelled {labels}")
    if target.selection.preferred_nodes:
        parts.append(f"(preferred: {', '.join(target.selection.preferred_nodes)})")
    return " ".join(parts) or "in the cluster"


def _resource_condition(outcome: Outcome, gen: int) -> Condition:
    if isinstance(outcome, Ready):
        return _cond(
            "ResourceReady",
            "True",
            "workspaceResourceStatusSuccess",
            "workspace resource is ready",
            gen,
        )
    return _cond("ResourceReady", "False", outcome.reason, outcome.message, gen)


def _cond(
    ctype: str, status: Literal["True", "False", "Unknown"], reason: str, message: str, gen: int
) -> Condition:
    return Condition(
        type=ctype,
        status=status,
        reason=_safe_reason(reason),
        message=message[:32768],
        observed_generation=gen,
    )


def _safe_reason(reason: str) -> str:
    """A metav1.Condition reason: letters, digits, '_', ',' and ':' (Azure codes fit as is)."""
    cleaned = "".join(c if c.isalnum() or c in "_,:" else "_" for c in reason).strip("_,:")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = "Provisioning" + cleaned
    return cleaned
