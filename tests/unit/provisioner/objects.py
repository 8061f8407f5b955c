"""Nodes, NodeClaims, workspaces and targets for the provisioner tests, shaped as the API server
(and Karpenter) serve them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from services.provisioner.nodes import Target
from shared.events import Condition, WorkspaceRef
from shared.plan import GpuInfo, NodeSelection
from tests.support.plans import minimal_plan

Obj = dict[str, Any]

V100 = "Standard_NC6s_v3"  # 1 x NVIDIA V100
V100_X2 = "Standard_NC12s_v3"  # 2 x NVIDIA V100
A100 = "Standard_NC24ads_A100_v4"
NVIDIA_V100 = GpuInfo(
    model="NVIDIA V100",
    vendor="nvidia",
    count_per_node=1,
    memory_gib_per_gpu=16,
    compute_capability=7.0,
    nvme=False,
)
REF = WorkspaceRef(
    uid="2f1c8a4e-0b7d-4c55-9a1e-5d3b7f0c9e21", namespace="team-a", name="phi-3", generation=3
)
OTHER_REF = WorkspaceRef(
    uid="9e0b6a1d-7c44-4f0e-8d2b-1a3c5e7f9b02", namespace="team-a", name="phi-3", generation=3
)
EARLIER = "2026-05-01T10:00:00Z"
ImageFamily = Literal["ubuntu", "azurelinux"]


def target(
    *,
    ref: WorkspaceRef = REF,
    instance_type: str | None = V100,
    node_count: int = 1,
    labels: Mapping[str, str] | None = None,
    preferred: Sequence[str] = (),
    image_family: ImageFamily = "ubuntu",
    gpu: GpuInfo | None = None,
    disk_gib: int = 80,
) -> Target:
    """The target of a plan built by ``minimal_plan``."""
    plan = minimal_plan(
        instance_type=instance_type,
        node_count=node_count,
        gpu=gpu,
        disk_gib=disk_gib,
        nodes=NodeSelection(
            label_selector=dict(labels or {}),
            preferred_nodes=tuple(preferred),
            node_image_family=image_family,
        ),
    )
    return Target.from_plan(ref, plan)


def node(
    name: str,
    *,
    instance_type: str | None = V100,
    labels: Mapping[str, str] | None = None,
    ready: str | None = "True",
    deleting: bool = False,
    gpus: int | None = None,
    provider_id: str | None = None,
) -> Obj:
    """A Node as the API server serves it; ``ready`` None: no Ready condition at all."""
    all_labels = {"kubernetes.io/os": "linux", "kubernetes.io/hostname": name}
    if instance_type is not None:
        all_labels["node.kubernetes.io/instance-type"] = instance_type
    all_labels.update(labels or {})
    metadata: Obj = {"name": name, "labels": all_labels}
    if deleting:
        metadata["deletionTimestamp"] = EARLIER
    capacity: Obj = {"cpu": "6", "memory": "112Gi", "pods": "110"}
    if gpus is not None:
        capacity["nvidia.com/gpu"] = str(gpus)
    conditions: list[Obj] = [
        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
    ]
    if ready is not None:
        conditions.append({"type": "Ready", "status": ready, "reason": "KubeletReady"})
    spec: Obj = {}
    if provider_id is not None:
        spec["providerID"] = provider_id
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": metadata,
        "spec": spec,
        "status": {"capacity": capacity, "allocatable": dict(capacity), "conditions": conditions},
    }


def provisioned(name: str, **kwargs: Any) -> Obj:
    """A node a NodeClaim brought: it carries ``karpenter.sh/nodepool``."""
    labels = {"karpenter.sh/nodepool": "kaito", **dict(kwargs.pop("labels", None) or {})}
    return node(name, labels=labels, **kwargs)


def lifecycle(ctype: str, status: str, reason: str = "", message: str = "") -> Obj:
    return {
        "type": ctype,
        "status": status,
        "reason": reason or ctype,
        "message": message,
        "lastTransitionTime": EARLIER,
        "observedGeneration": 1,
    }


def claim(
    name: str,
    *,
    ref: WorkspaceRef = REF,
    conditions: Sequence[Obj] = (),
    node_name: str | None = None,
    deleting: bool = False,
    instance_type: str = V100,
    storage: str | None = "80Gi",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    created: str | None = "2026-05-01T10:00:00Z",
    taints: Sequence[Obj] = ({"key": "sku", "value": "gpu", "effect": "NoSchedule"},),
) -> Obj:
    """A NodeClaim of ``ref`` as Karpenter serves it."""
    metadata: Obj = {
        "name": name,
        "generation": 1,
        "labels": {
            "karpenter.sh/nodepool": "kaito",
            "kaito.sh/workspace": ref.name,
            "kaito.sh/workspacenamespace": ref.namespace,
            **dict(labels or {}),
        },
        "annotations": {"karpenter.sh/do-not-disrupt": "true", **dict(annotations or {})},
        "finalizers": ["karpenter.sh/termination"],
    }
    if created is not None:
        metadata["creationTimestamp"] = created
    if deleting:
        metadata["deletionTimestamp"] = EARLIER
    spec: Obj = {
        "nodeClassRef": {"group": "kaito.sh", "kind": "KaitoNodeClass", "name": "default"},
        "taints": [dict(t) for t in taints],
        "requirements": [
            {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["kaito"]},
            {
                "key": "node.kubernetes.io/instance-type",
                "operator": "In",
                "values": [instance_type],
            },
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        ],
        "resources": {"requests": {"storage": storage}} if storage is not None else {},
    }
    status: Obj = {"conditions": [dict(c) for c in conditions]}
    if node_name is not None:
        status["nodeName"] = node_name
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": metadata,
        "spec": spec,
        "status": status,
    }


def ready_claim(name: str, node_name: str, **kwargs: Any) -> Obj:
    """A NodeClaim whose node joined and is initialized (all lifecycle conditions True)."""
    conditions = [lifecycle(t, "True") for t in ("Launched", "Registered", "Initialized", "Ready")]
    return claim(name, conditions=conditions, node_name=node_name, **kwargs)


def by_type(conditions: Sequence[Condition]) -> dict[str, Condition]:
    """The conditions by type; a type reported twice is a test failure."""
    found = {c.type: c for c in conditions}
    assert len(found) == len(conditions), [c.type for c in conditions]
    return found
