"""AKS agent pools through Azure Resource Manager: the gpu-provisioner role (reference 6) with
the real ``azure-mgmt-containerservice`` async client, and the regional quota check behind
``kaiten plan --check-azure`` with ``azure-mgmt-compute``.

Errors are sorted by what retrying can do: throttling (429, after the SDK's own retries that
honour Retry-After), 5xx, lost connections and "another operation is in progress" are
``TransientError`` (with the server's Retry-After as the delay); everything else, quota and
capacity included, is a ``CloudError`` carrying Azure's code and message verbatim.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.mgmt.containerservice.models import AgentPool
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.provisioner.claims import RAGENGINE_LABEL, PoolSpec, created_from_labels
from services.provisioner.cloud import CloudError, Instance
from services.provisioner.nodes import NODEPOOL_LABEL
from shared.errors import ConfigError, KaitenError, TransientError
from shared.labels import WORKSPACE_LABEL

# Codes that say "later", whatever the HTTP status of the response that carried them.
TRANSIENT_CODES = frozenset(
    {
        "TooManyRequests",
        "Throttled",
        "InternalServerError",
        "InternalOperationError",
        "ServiceUnavailable",
        "GatewayTimeout",
        "RequestTimeout",
        "OperationPreempted",
        "Canceled",
    }
)
HTTP_TOO_MANY = 429
HTTP_CONFLICT = 409
HTTP_SERVER_ERROR = 500


class AzureSettings(BaseSettings):
    """Where the cluster's agent pools live; the variable names are gpu-provisioner's."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    subscription_id: str = Field(
        default="", validation_alias=AliasChoices("ARM_SUBSCRIPTION_ID", "AZURE_SUBSCRIPTION_ID")
    )
    resource_group: str = Field(default="", validation_alias="ARM_RESOURCE_GROUP")
    cluster_name: str = Field(default="", validation_alias="AZURE_CLUSTER_NAME")
    location: str = Field(default="", validation_alias="LOCATION")
    endpoint: str = Field(
        default="https://management.azure.com",
        validation_alias="KAITEN_ARM_ENDPOINT",
        description="Azure Resource Manager URL (another cloud, or a proxy).",
    )
    ca_file: str | None = Field(
        default=None,
        validation_alias="KAITEN_ARM_CA_FILE",
        description="PEM bundle to trust for the ARM endpoint; unset: the system's.",
    )
    poll_interval_s: float = Field(
        default=10.0,
        ge=0,
        validation_alias="KAITEN_ARM_POLL_INTERVAL_S",
        description="Seconds between polls of a long-running operation without Retry-After.",
    )
    retries: int = Field(
        default=4,
        ge=0,
        validation_alias="KAITEN_ARM_RETRIES",
        description="Retries of one ARM request on 429/5xx (Retry-After honoured).",
    )

    def require(self, *fields: str) -> None:
        names = {
            "subscription_id": "ARM_SUBSCRIPTION_ID",
            "resource_group": "ARM_RESOURCE_GROUP",
            "cluster_name": "AZURE_CLUSTER_NAME",
            "location": "LOCATION",
        }
        missing = [names[f] for f in fields if not getattr(self, f)]
        if missing:
            raise ConfigError(f"the Azure backend needs {', '.join(missing)} set")

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the ARM clients: endpoint, TLS trust and retry policy."""
        kwargs: dict[str, Any] = {
            "base_url": self.endpoint,
            "retry_total": self.retries,
            "polling_interval": self.poll_interval_s,
        }
        if self.ca_file:
            kwargs["connection_verify"] = self.ca_file
        return kwargs


class AgentPoolsApi(Protocol):
    """The part of ``ContainerServiceClient.agent_pools`` (aio) that is used."""

    async def get(
        self, resource_group_name: str, resource_name: str, agent_pool_name: str
    ) -> Any: ...

    async def begin_create_or_update(
        self,
        resource_group_name: str,
        resource_name: str,
        agent_pool_name: str,
        parameters: Any,
        **kwargs: Any,
    ) -> Any: ...

    async def begin_delete(
        self, resource_group_name: str, resource_name: str, agent_pool_name: str, **kwargs: Any
    ) -> Any: ...

    def list(self, resource_group_name: str, resource_name: str, **kwargs: Any) -> Any: ...


class AzureCloud:
    """One AKS agent pool (count 1) per NodeClaim, in the cluster ``cluster`` of ``group``."""

    name = "azure"

    def __init__(self, client: Any, group: str, cluster: str, *, credential: Any = None) -> None:
        self.client = client
        self.credential = credential  # closed with the client when this object owns it
        self.pools: AgentPoolsApi = client.agent_pools
        self.group = group
        self.cluster = cluster

    async def create(self, spec: PoolSpec) -> Instance:
        try:
            poller = await self.pools.begin_create_or_update(
                self.group, self.cluster, spec.name, AgentPool(agent_pool_body(spec))
            )
            pool = await poller.result()
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as e:
            raise azure_error(e, f"create agent pool {spec.name}") from e
        return _instance(pool)

    async def delete(self, name: str) -> None:
        try:
            pool = await self.pools.get(self.group, self.cluster, name)
            if str(pool.provisioning_state or "") == "Deleting":
                return
            poller = await self.pools.begin_delete(self.group, self.cluster, name)
            await poller.result()
        except ResourceNotFoundError:
            return
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as e:
            raise azure_error(e, f"delete agent pool {name}") from e

    async def list(self) -> list[Instance]:
        found: list[Instance] = []
        try:
            async for pool in self.pools.list(self.group, self.cluster):
                labels = dict(pool.node_labels or {})
                owned = WORKSPACE_LABEL in labels or RAGENGINE_LABEL in labels
                if owned and NODEPOOL_LABEL in labels:
                    found.append(_instance(pool))
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as e:
            raise azure_error(e, "list agent pools") from e
        return found

    async def close(self) -> None:
        await self.client.close()
        if self.credential is not None:
            await self.credential.close()


def agent_pool_body(spec: PoolSpec) -> dict[str, Any]:
    """The ARM body of the pool (reference 6.2)."""
    return {
        "properties": {
            "type": "VirtualMachineScaleSets",
            "mode": "User",
            "count": spec.count,
            "vmSize": spec.vm_size,
            "osType": "Linux",
            "osSKU": spec.os_sku,
            "osDiskSizeGB": spec.os_disk_gib,
            "nodeLabels": dict(spec.node_labels),
            "nodeTaints": list(spec.node_taints),
        }
    }


def _instance(pool: Any) -> Instance:
    return Instance(
        name=str(pool.name),
        state=str(pool.provisioning_state or "Unknown"),
        created_at=created_from_labels(dict(pool.node_labels or {})),
        image_id=pool.node_image_version,
    )


def azure_error(e: Exception, action: str) -> KaitenError:
    """Sort an Azure SDK error into ``TransientError`` or ``CloudError`` (see the module doc)."""
    if isinstance(e, (ServiceRequestError, ServiceResponseError)):
        return TransientError(f"{action}: {e}")
    if not isinstance(e, HttpResponseError):
        return TransientError(f"{action}: {e}")
    error = getattr(e, "error", None)
    code = str(getattr(error, "code", None) or "") or _code_from_message(str(e.message or ""))
    message = str(getattr(error, "message", None) or e.message or e)
    status = int(e.status_code or 0)
    retry_after = _retry_after(getattr(e.response, "headers", None))
    quota = "quota" in message.lower()
    if (
        status == HTTP_TOO_MANY
        or status >= HTTP_SERVER_ERROR
        or code in TRANSIENT_CODES
        or (status == HTTP_CONFLICT and not quota)
    ):
        return TransientError(f"{action}: ({code or status}) {message}", delay=retry_after)
    return CloudError(code or "AzureError", message)


def _code_from_message(message: str) -> str:
    """``(QuotaExceeded) text`` -> ``QuotaExceeded``: how the SDK words a failed operation."""
    if message.startswith("(") and ")" in message:
        return message[1 : message.index(")")]
    return ""


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("Retry-After") if headers is not None else None
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


# --- regional quota -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    name: str
    current: int
    limit: int


@dataclass(frozen=True, slots=True)
class QuotaCheck:
    """Whether ``nodes`` VMs of ``sku`` fit the subscription's vCPU quota in ``location``."""

    sku: str
    location: str
    nodes: int
    vcpus_per_node: int
    family: QuotaUsage
    regional: QuotaUsage | None

    @property
    def needed(self) -> int:
        return self.nodes * self.vcpus_per_node

    @property
    def fits(self) -> bool:
        return all(u.current + self.needed <= u.limit for u in self._usages())

    def _usages(self) -> Iterable[QuotaUsage]:
        yield self.family
        if self.regional is not None:
            yield self.regional

    def render(self) -> str:
        lines = [
            f"Azure quota in {self.location} for {self.nodes} x {self.sku} "
            f"({self.vcpus_per_node} vCPUs each, {self.needed} vCPUs):"
        ]
        for usage in self._usages():
            free = usage.limit - usage.current
            verdict = "fits" if self.needed <= free else f"short by {self.needed - free}"
            lines.append(
                f"  {usage.name}: {usage.current} of {usage.limit} vCPUs used, {free} free "
                f"-> {verdict}"
            )
        lines.append(
            "fits: the planned nodes can be created"
            if self.fits
            else "does not fit: request a quota increase for the family above (Azure portal, "
            "Quotas), or choose another instance type or region"
        )
        return "\n".join(lines)


async def check_quota(compute: Any, location: str, sku: str, nodes: int) -> QuotaCheck:
    """Ask ARM (``azure.mgmt.compute.aio.ComputeManagementClient``) for the SKU's family and
    vCPUs in ``location`` and the family's and the region's vCPU usage and limit."""
    try:
        found = None
        async for item in compute.resource_skus.list(filter=f"location eq '{location}'"):
            if item.resource_type == "virtualMachines" and str(item.name).lower() == sku.lower():
                found = item
                break
        if found is None:
            raise CloudError(
                "SkuNotAvailable", f"{sku} is not offered in {location} to this subscription"
            )
        vcpus = next((int(c.value) for c in found.capabilities or [] if c.name == "vCPUs"), None)
        if vcpus is None:
            raise CloudError("SkuNotAvailable", f"Azure lists no vCPU count for {sku}")
        family_name = str(found.family)
        family = regional = None
        async for usage in compute.usage.list(location):
            entry = QuotaUsage(
                str(usage.name.localized_value or usage.name.value),
                int(usage.current_value),
                int(usage.limit),
            )
            if str(usage.name.value).lower() == family_name.lower():
                family = entry
            elif str(usage.name.value) == "cores":
                regional = entry
    except (HttpResponseError, ServiceRequestError, ServiceResponseError) as e:
        raise azure_error(e, f"read the quota of {location}") from e
    if family is None:
        family = QuotaUsage(f"{family_name} vCPUs", 0, 0)
    return QuotaCheck(sku, location, nodes, vcpus, family, regional)


def quota_lookup(settings: AzureSettings) -> Callable[[str, int], QuotaCheck]:
    """A blocking quota check for command-line use: each call asks ARM with the
    ``DefaultAzureCredential`` chain (workload identity, managed identity, ``az login``...)."""
    settings.require("subscription_id", "location")

    async def check(sku: str, nodes: int) -> QuotaCheck:
        from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415
        from azure.mgmt.compute.aio import ComputeManagementClient  # noqa: PLC0415

        kwargs = {k: v for k, v in settings.client_kwargs().items() if k != "polling_interval"}
        async with (
            DefaultAzureCredential() as credential,
            ComputeManagementClient(credential, settings.subscription_id, **kwargs) as compute,
        ):
            try:
                return await check_quota(compute, settings.location, sku, nodes)
            except ClientAuthenticationError as e:
                raise ConfigError(
                    f"no Azure credentials: {str(e).splitlines()[0]} (run `az login`, or set "
                    "AZURE_CLIENT_ID/AZURE_TENANT_ID with a secret or a federated token)"
                ) from e

    def lookup(sku: str, nodes: int) -> QuotaCheck:
        return asyncio.run(check(sku, nodes))

    return lookup
