"""Composition root of the deployer service."""

from __future__ import annotations

from services.deployer import tables
from services.deployer.service import Deployer
from shared.bus import Bus, Clock
from shared.cluster import ClusterApi
from shared.runner import ServiceContext, ServiceSpec
from shared.targets import TargetStore
from shared.workloads import LoopOptions, workload_spec


def build_service() -> ServiceSpec:
    def build(
        store: TargetStore, bus: Bus, cluster: ClusterApi, clock: Clock, ctx: ServiceContext
    ) -> Deployer:
        options = LoopOptions(
            resync_s=ctx.settings.resync_period_s,
            retry_base_s=ctx.settings.retry_base_s,
            retry_max_s=ctx.settings.retry_max_s,
        )
        return Deployer(store, bus, cluster, clock, options)

    return workload_spec("deployer", build, tables)
