"""Composition root of the provisioner service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from presets.catalog import default_catalog
from services.provisioner.azure import AzureCloud, AzureSettings
from services.provisioner.cloud import CloudProvider, SimulatedCloud, SimulatedNodes
from services.provisioner.kubeapi import ClusterApi
from services.provisioner.service import (
    Backend,
    ClaimController,
    ClaimOptions,
    Provisioner,
    ProvisionerOptions,
)
from services.provisioner.store import ProvisionerStore
from shared.bus import Subscription
from shared.errors import ConfigError
from shared.events import EventType
from shared.runner import ServiceContext, ServiceSpec


class ProvisionerSettings(BaseSettings):
    """``KAITEN_PROVISIONER_*``."""

    model_config = SettingsConfigDict(env_prefix="KAITEN_PROVISIONER_", extra="ignore", frozen=True)

    backend: Backend = Field(
        default="karpenter",
        description="karpenter: create NodeClaims for Karpenter or gpu-provisioner; azure: also "
        "turn them into AKS agent pools (Kaiten plays gpu-provisioner); simulated: also "
        "register simulated GPU nodes (development cluster); byo: never provision. "
        "KAITEN_NODE_AUTO_PROVISIONING=false means byo.",
    )
    simulated_delay_s: float = Field(
        default=1.0, ge=0, description="Seconds before a simulated node joins."
    )
    simulated_failures: str = Field(
        default="",
        description="INSTANCE_TYPE=CODE pairs, comma separated (* for every type): simulated "
        "creates fail as Azure would. Codes: QuotaExceeded, SkuNotAvailable, AllocationFailed.",
    )
    gc_interval_s: float = Field(
        default=120.0, gt=0, description="Seconds between collections of orphan instances."
    )
    gc_grace_s: float = Field(
        default=30.0, ge=0, description="Age before an instance without NodeClaim is collected."
    )
    retry_base_s: float = Field(
        default=2.0, gt=0, description="First wait after a transient cloud error (doubles)."
    )
    launch_heartbeat_s: float = Field(
        default=30.0, gt=0, description="Seconds between a launcher's heartbeats on its claim."
    )
    relaunch_after_s: float = Field(
        default=120.0,
        gt=0,
        description="Seconds without a heartbeat before a launch (its process died) is taken over.",
    )

    def failures(self) -> dict[str, str]:
        pairs: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in self.simulated_failures.split(","))):
            sku, sep, code = item.partition("=")
            if not sep:
                raise ConfigError(
                    f"KAITEN_PROVISIONER_SIMULATED_FAILURES: {item!r} is not INSTANCE_TYPE=CODE"
                )
            pairs[sku.strip()] = code.strip()
        return pairs


class Parts:
    """What the handlers and the lifespan share, built once per process."""

    def __init__(self, ctx: ServiceContext) -> None:
        if ctx.kube is None:
            raise RuntimeError("the provisioner needs a Kubernetes client")
        settings = ProvisionerSettings()
        backend: Backend = settings.backend if ctx.settings.node_auto_provisioning else "byo"
        self.cluster = ClusterApi(ctx.kube)
        self.provisioner = Provisioner(
            ProvisionerStore(ctx.db),
            ctx.bus,
            self.cluster,
            ctx.clock,
            ProvisionerOptions(
                backend=backend,
                cloud=ctx.settings.cloud_provider,
                resync_s=ctx.settings.resync_period_s,
                retry_base_s=ctx.settings.retry_base_s,
                retry_max_s=ctx.settings.retry_max_s,
            ),
        )
        self.cloud = make_cloud(backend, settings, self.cluster)
        options = ClaimOptions(
            retry_base_s=settings.retry_base_s,
            gc_interval_s=settings.gc_interval_s,
            gc_grace_s=settings.gc_grace_s,
            heartbeat_s=settings.launch_heartbeat_s,
            relaunch_after_s=settings.relaunch_after_s,
        )
        self.claims = (
            ClaimController(self.cluster, self.cloud, ctx.clock, options) if self.cloud else None
        )


def make_cloud(
    backend: Backend, settings: ProvisionerSettings, cluster: ClusterApi
) -> CloudProvider | None:
    if backend == "simulated":
        nodes = SimulatedNodes(
            register=cluster.register_node, list=cluster.list_nodes, delete=cluster.delete_node
        )
        try:
            return SimulatedCloud(
                nodes,
                default_catalog(),
                delay_s=settings.simulated_delay_s,
                failures=settings.failures(),
            )
        except ValueError as e:
            raise ConfigError(f"KAITEN_PROVISIONER_SIMULATED_FAILURES: {e}") from e
    if backend == "azure":
        return azure_cloud(AzureSettings())
    return None


def azure_cloud(settings: AzureSettings, credential: Any = None) -> AzureCloud:
    """The ARM client for the cluster's agent pools; ``credential`` defaults to
    ``DefaultAzureCredential`` (workload identity in a pod, the Azure CLI on a laptop)."""
    from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415
    from azure.mgmt.containerservice.aio import ContainerServiceClient  # noqa: PLC0415

    settings.require("subscription_id", "resource_group", "cluster_name")
    owned = None if credential is not None else DefaultAzureCredential()
    chosen: Any = credential if credential is not None else owned
    client = ContainerServiceClient(
        chosen,
        settings.subscription_id,
        **settings.client_kwargs(),
    )
    return AzureCloud(client, settings.resource_group, settings.cluster_name, credential=owned)


def build_service() -> ServiceSpec:
    holder: dict[str, Parts] = {}

    def parts(ctx: ServiceContext) -> Parts:
        if "parts" not in holder:
            holder["parts"] = Parts(ctx)
        return holder["parts"]

    def handlers(ctx: ServiceContext) -> list[Subscription]:
        p = parts(ctx).provisioner
        return [
            Subscription(EventType.PLAN_READY, p.on_plan_ready),
            Subscription(EventType.WORKSPACE_DELETING, p.on_deleting),
        ]

    @asynccontextmanager
    async def lifespan(ctx: ServiceContext) -> AsyncIterator[None]:
        p = parts(ctx)
        ctx.background.start(p.provisioner.run(), "provisioner-watch")
        if p.claims is not None:
            ctx.background.start(p.claims.run(), "nodeclaim-controller")
        try:
            yield
        finally:
            await ctx.background.close()
            if p.cloud is not None:
                await p.cloud.close()

    return ServiceSpec(name="provisioner", handlers=handlers, uses_kube=True, lifespan=lifespan)
