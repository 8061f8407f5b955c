"""Composition root of the planner service."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from presets.catalog import default_catalog
from presets.catalog.prices import default_prices
from services.planner.kubeapi import ConfigMapReader
from services.planner.planning import Images, PlanOptions
from services.planner.service import Planner
from services.planner.store import PlannerStore
from shared.bus import Subscription
from shared.events import EventType
from shared.runner import ServiceContext, ServiceSpec

_DEFAULT_IMAGES = Images()


class PlannerSettings(BaseSettings):
    """``KAITEN_PLANNER_*``: the runtime images plans name."""

    model_config = SettingsConfigDict(env_prefix="KAITEN_PLANNER_", extra="ignore", frozen=True)

    vllm_image: str = Field(
        default=_DEFAULT_IMAGES.vllm, description="Image of the vLLM runtime (GPU nodes)."
    )
    transformers_image: str = Field(
        default=_DEFAULT_IMAGES.transformers,
        description="Image of the transformers runtime, also used for tuning.",
    )


def make_planner(ctx: ServiceContext) -> Planner:
    if ctx.kube is None:
        raise RuntimeError("the planner needs a Kubernetes client to read ConfigMaps")
    settings = PlannerSettings()
    options = PlanOptions(
        catalog=default_catalog(),
        prices=default_prices(),
        cloud=ctx.settings.cloud_provider,
        node_auto_provisioning=ctx.settings.node_auto_provisioning,
        images=Images(vllm=settings.vllm_image, transformers=settings.transformers_image),
        local_cpu=ctx.settings.local_cpu,
    )
    reader = ConfigMapReader(ctx.kube)
    return Planner(PlannerStore(ctx.db), ctx.bus, reader.read, options, ctx.clock)


def build_service() -> ServiceSpec:
    def handlers(ctx: ServiceContext) -> list[Subscription]:
        planner = make_planner(ctx)
        return [Subscription(EventType.WORKSPACE_OBSERVED, planner.on_observed)]

    return ServiceSpec(name="planner", handlers=handlers, uses_kube=True)
