"""The gpu-provisioner side of a NodeClaim, decided from data (reference section 6): the agent
pool one NodeClaim becomes, the node that joins for it, and the NodeClaim status and
conditions Karpenter core would write (Launched, Registered, Initialized, Ready)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from services.provisioner.nodes import (
    INSTANCE_TYPE_LABEL,
    MACHINE_TYPE_LABEL,
    NODEPOOL,
    NODEPOOL_LABEL,
    Manifest,
    condition_of,
    gpu_capacity,
    labels_of,
    name_of,
    node_ready,
)
from shared.errors import PermanentError
from shared.labels import IMAGE_FAMILY_ANNOTATION, WORKSPACE_LABEL

TERMINATION_FINALIZER = "karpenter.sh/termination"
RAGENGINE_LABEL = "kaito.sh/ragengine"
CREATION_LABEL = "kaito.sh/creation-timestamp"
CREATION_FORMAT = "%Y-%m-%dT%H-%M-%SZ"
AGENTPOOL_LABELS = ("agentpool", "kubernetes.azure.com/agentpool")
POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
GIB = 1 << 30
_SUFFIXES = {
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "Pi": 1 << 50,
    "Ei": 1 << 60,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}

Status = Literal["True", "False", "Unknown"]


class InvalidNodeClaimError(PermanentError):
    """The NodeClaim cannot become an agent pool; the message says which field and why."""

    def __init__(self, message: str) -> None:
        super().__init__("InvalidNodeClaim", message)


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """One AKS agent pool (VM scale set) with exactly one node, for one NodeClaim."""

    name: str
    vm_size: str
    os_sku: Literal["Ubuntu", "AzureLinux"]
    os_disk_gib: int
    node_labels: dict[str, str] = field(default_factory=dict)
    node_taints: tuple[str, ...] = ()
    count: int = 1


def is_kaito_owned(claim: Mapping[str, Any]) -> bool:
    labels = labels_of(claim)
    return WORKSPACE_LABEL in labels or RAGENGINE_LABEL in labels


def pool_spec(claim: Mapping[str, Any]) -> PoolSpec:
    """The agent pool for ``claim`` (reference 6.2). Raises ``InvalidNodeClaim``."""
    name = name_of(claim)
    if not POOL_NAME.fullmatch(name):
        raise InvalidNodeClaimError(
            f"agentpool name({name}) is invalid, it must match ^[a-z][a-z0-9]{{0,11}}$: "
            "1-12 lowercase letters or digits, starting with a letter"
        )
    spec = claim.get("spec") or {}
    vm_size = next(
        (
            str(r["values"][0])
            for r in spec.get("requirements") or []
            if r.get("key") == INSTANCE_TYPE_LABEL and r.get("values")
        ),
        None,
    )
    if vm_size is None:
        raise InvalidNodeClaimError("nodeClaim spec has no requirement for instance type")
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    disk = quantity_bytes(str(storage)) // GIB if storage else 0
    if disk <= 0:
        raise InvalidNodeClaimError(
            f"storage request of nodeclaim({name}) should be more than 0: set "
            "spec.resources.requests.storage (for example 128Gi)"
        )
    created = _created(claim)
    labels = {
        NODEPOOL_LABEL: NODEPOOL,
        **labels_of(claim),
        MACHINE_TYPE_LABEL: "gpu" if "Standard_N" in vm_size else "cpu",
        CREATION_LABEL: created.strftime(CREATION_FORMAT),
    }
    taints = tuple(
        f"{t['key']}={t.get('value', '')}:{t['effect']}" for t in spec.get("taints") or []
    )
    return PoolSpec(
        name=name,
        vm_size=vm_size,
        os_sku=os_sku(claim),
        os_disk_gib=int(disk),
        node_labels=labels,
        node_taints=taints,
    )


def os_sku(claim: Mapping[str, Any]) -> Literal["Ubuntu", "AzureLinux"]:
    """From the annotation only (labels are ignored): azurelinux -> AzureLinux, else Ubuntu."""
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    family = str(annotations.get(IMAGE_FAMILY_ANNOTATION, "")).lower()
    return "AzureLinux" if family == "azurelinux" else "Ubuntu"


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes quantity (``128Gi``, ``100G``, ``1.5Ti``, ``1e9``) in bytes."""
    text = quantity.strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            number, factor = text[: -len(suffix)], _SUFFIXES[suffix]
            break
    else:
        number, factor = text, 1
    try:
        return int(Decimal(number) * factor)
    except InvalidOperation as e:
        raise InvalidNodeClaimError(f"storage request {quantity!r} is not a quantity") from e


def _created(claim: Mapping[str, Any]) -> datetime:
    stamp = (claim.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return datetime.now(UTC)
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).astimezone(UTC)


def created_from_labels(labels: Mapping[str, str]) -> datetime | None:
    """The NodeClaim creation time an agent pool carries in its labels."""
    raw = labels.get(CREATION_LABEL)
    if not raw:
        return None
    try:
        return datetime.strptime(raw, CREATION_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def node_for_pool(nodes: Iterable[Mapping[str, Any]], pool: str) -> Mapping[str, Any] | None:
    """The node AKS joined for ``pool``: both agent pool labels and a provider id."""
    found = [
        n
        for n in nodes
        if all(labels_of(n).get(k) == pool for k in AGENTPOOL_LABELS)
        and (n.get("spec") or {}).get("providerID")
    ]
    return found[0] if len(found) == 1 else None


# --- NodeClaim status, as Karpenter core writes it -------------------------------------------


@dataclass(frozen=True, slots=True)
class Launch:
    """What the cloud said about a NodeClaim's instance."""

    status: Status
    reason: str
    message: str = ""
    image_id: str | None = None


def claim_status(
    claim: Mapping[str, Any],
    launch: Launch,
    node: Mapping[str, Any] | None,
    now: datetime,
) -> Manifest:
    """The NodeClaim's ``status`` given its launch and its node (None: not joined yet)."""
    old = dict(claim.get("status") or {})
    conditions: list[Manifest] = list(old.get("conditions") or [])
    status: Manifest = {k: v for k, v in old.items() if k != "conditions"}
    gen = int((claim.get("metadata") or {}).get("generation") or 1)

    def put(ctype: str, value: Status, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(
            conditions, ctype, status=value, reason=reason, message=message, generation=gen, now=now
        )

    put("Launched", launch.status, launch.reason, launch.message)
    if launch.image_id:
        status["imageID"] = launch.image_id
    registered = initialized = False
    if launch.status == "True":
        if node is None:
            put("Registered", "Unknown", "AwaitingReconciliation", "waiting for the node to join")
        else:
            registered = True
            status["nodeName"] = name_of(node)
            status["providerID"] = (node.get("spec") or {}).get("providerID")
            capacity = (node.get("status") or {}).get("capacity") or {}
            if capacity:
                status["capacity"] = dict(capacity)
                status["allocatable"] = dict((node.get("status") or {}).get("allocatable") or {})
            put("Registered", "True", "Registered", "")
            initialized = node_ready(node) and (
                gpu_capacity(node) > 0 or labels_of(node).get(MACHINE_TYPE_LABEL) != "gpu"
            )
            if initialized:
                put("Initialized", "True", "Initialized", "")
            else:
                put(
                    "Initialized",
                    "Unknown",
                    "AwaitingReconciliation",
                    "waiting for the node to be Ready with its resources registered",
                )
    if launch.status == "False":
        put("Ready", "False", launch.reason, launch.message)
    elif registered and initialized:
        put("Ready", "True", "Ready", "")
    else:
        put("Ready", "Unknown", "AwaitingReconciliation", "the node is not ready yet")
    status["conditions"] = conditions
    return status


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    ctype: str,
    *,
    status: Status,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Manifest]:
    """``conditions`` with ``ctype`` set; its transition time moves only when status changes."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = next((c for c in conditions if c.get("type") == ctype), None)
    if old is not None and old.get("status") == status:
        stamp = str(old.get("lastTransitionTime") or stamp)
    new: Manifest = {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": stamp,
    }
    result = [new if c is old else dict(c) for c in conditions]
    return result if old is not None else [*result, new]


def launched(claim: Mapping[str, Any]) -> Status | None:
    cond = condition_of(claim, "Launched")
    return None if cond is None else cond.get("status")
