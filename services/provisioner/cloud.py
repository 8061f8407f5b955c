"""The cloud behind NodeClaims (the gpu-provisioner role): one instance (an AKS agent pool with
one node) per NodeClaim. ``AzureCloud`` (``azure.py``) talks to ARM; ``SimulatedCloud`` here
registers Nodes in the cluster itself, for the embedded stack and tests, and can be told to
fail the way Azure does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from presets.catalog import Catalog, vcpus_of
from services.provisioner.claims import AGENTPOOL_LABELS, PoolSpec, created_from_labels
from services.provisioner.nodes import (
    GPU_RESOURCE,
    INSTANCE_TYPE_LABEL,
    OS_LABEL,
    Manifest,
    labels_of,
    name_of,
)
from shared.errors import PermanentError
from shared.labels import WORKSPACE_LABEL

SIMULATED_PROVIDER = "kaiten-simulated://"


class CloudError(PermanentError):
    """The cloud refused (quota, capacity, a bad request): ``reason`` is the cloud's error code
    and ``message`` its own words. Retrying the same request cannot help."""


@dataclass(frozen=True, slots=True)
class Instance:
    name: str
    state: str  # the provisioning state: Creating, Succeeded, Failed, Deleting, ...
    created_at: datetime | None
    image_id: str | None = None


class CloudProvider(Protocol):
    name: str

    async def create(self, spec: PoolSpec) -> Instance:
        """Create (or finish creating) the instance and wait until it is done. Raises
        ``CloudError`` when the cloud refuses, ``TransientError`` when it may work later."""
        ...

    async def delete(self, name: str) -> None:
        """Delete the instance and wait; already gone is success, already deleting a no-op."""
        ...

    async def list(self) -> list[Instance]:
        """The Kaito-owned instances."""
        ...

    async def close(self) -> None: ...


# Azure's own wording, so the simulated failures read like the real ones.
SIMULATED_ERRORS = {
    "QuotaExceeded": (
        "Operation could not be completed as it results in exceeding approved {family} Cores "
        "quota. Additional details - Deployment Model: Resource Manager, Location: "
        "{location}, Current Limit: 0, Current Usage: 0, Additional Required: {cores}, "
        "(Minimum) New Limit Required: {cores}. Submit a request for Quota increase."
    ),
    "SkuNotAvailable": (
        "The requested VM size for resource 'Following SKUs have failed for Capacity "
        "Restrictions: {sku}' is currently not available in location '{location}'. Please "
        "try another size or deploy to a different location or different zone."
    ),
    "AllocationFailed": (
        "Allocation failed. We do not have sufficient capacity for the requested VM size "
        "{sku} in this region. Read more about improving likelihood of allocation success at "
        "http://aka.ms/allocation-guidance"
    ),
}

NodeWriter = Callable[[Manifest], Awaitable[None]]
NodeLister = Callable[[], Awaitable[list[Manifest]]]
NodeDeleter = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SimulatedNodes:
    """The Kubernetes calls the simulated cloud makes (a kubelet registering its node)."""

    register: NodeWriter
    list: NodeLister
    delete: NodeDeleter


class SimulatedCloud:
    """Nodes that join after ``delay_s`` with the SKU's GPUs, AKS's labels and the pool's
    labels and taints. ``failures`` maps an instance type (or ``*``) to one of
    ``SIMULATED_ERRORS``: creates of that type fail as Azure would."""

    name = "simulated"

    def __init__(
        self,
        nodes: SimulatedNodes,
        catalog: Catalog,
        *,
        delay_s: float = 1.0,
        failures: Mapping[str, str] | None = None,
        location: str = "local",
    ) -> None:
        self.nodes = nodes
        self.catalog = catalog
        self.delay_s = delay_s
        self.failures = {k.lower(): v for k, v in (failures or {}).items()}
        self.location = location
        for code in self.failures.values():
            if code not in SIMULATED_ERRORS:
                raise ValueError(
                    f"unknown simulated failure {code!r}; choose one of "
                    f"{', '.join(sorted(SIMULATED_ERRORS))}"
                )

    async def create(self, spec: PoolSpec) -> Instance:
        code = self.failures.get(spec.vm_size.lower()) or self.failures.get("*")
        sku = self.catalog.sku(spec.vm_size)
        if code is not None:
            # The vCPUs the name says (as Azure counts quota), else a guess from the GPUs.
            cores = vcpus_of(spec.vm_size) or (sku.gpu_count * 12 if sku else 24)
            raise CloudError(
                code,
                SIMULATED_ERRORS[code].format(
                    family=f"standard{spec.vm_size.split('_')[1]}Family",
                    location=self.location,
                    cores=cores,
                    sku=spec.vm_size,
                ),
            )
        existing = await self._node(spec.name)
        if existing is None or not _joined(existing):
            # A node created but never given its status was left by a launcher that died
            # between the two writes of a join: finish it (a real kubelet keeps trying).
            if existing is None:
                await asyncio.sleep(self.delay_s)
            await self.nodes.register(self.node_manifest(spec, sku.gpu_count if sku else 0))
        return Instance(spec.name, "Succeeded", created_from_labels(spec.node_labels))

    def node_manifest(self, spec: PoolSpec, gpus: int) -> Manifest:
        """The Node AKS would join for the pool, with status Ready and its capacity."""
        name = f"aks-{spec.name}-00000000-vmss000000"
        capacity = {"cpu": "24", "memory": "220Gi", "pods": "110", "ephemeral-storage": "128Gi"}
        if gpus:
            capacity[GPU_RESOURCE] = str(gpus)
        labels = {
            **spec.node_labels,
            **dict.fromkeys(AGENTPOOL_LABELS, spec.name),
            INSTANCE_TYPE_LABEL: spec.vm_size,
            OS_LABEL: "linux",
            "kubernetes.io/hostname": name,
        }
        taints = []
        for text in spec.node_taints:
            key_value, _, effect = text.partition(":")
            key, _, value = key_value.partition("=")
            taints.append({"key": key, "value": value, "effect": effect})
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"providerID": f"{SIMULATED_PROVIDER}{spec.name}", "taints": taints},
            "status": {
                "capacity": capacity,
                "allocatable": dict(capacity),
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status (simulated)",
                    }
                ],
            },
        }

    async def delete(self, name: str) -> None:
        node = await self._node(name)
        if node is not None:
            await self.nodes.delete(name_of(node))

    async def list(self) -> list[Instance]:
        return [
            Instance(
                labels_of(n)[AGENTPOOL_LABELS[0]], "Succeeded", created_from_labels(labels_of(n))
            )
            for n in await self.nodes.list()
            if _simulated(n) and WORKSPACE_LABEL in labels_of(n)
        ]

    async def _node(self, pool: str) -> Manifest | None:
        for node in await self.nodes.list():
            if _simulated(node) and labels_of(node).get(AGENTPOOL_LABELS[0]) == pool:
                return node
        return None

    async def close(self) -> None:
        return None


def _simulated(node: Mapping[str, Any]) -> bool:
    return str((node.get("spec") or {}).get("providerID", "")).startswith(SIMULATED_PROVIDER)


def _joined(node: Manifest) -> bool:
    """The node has posted its status (a Ready condition of any value)."""
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" for c in conditions)
