"""Composition root of the tuner service."""

from __future__ import annotations

from services.tuner import tables
from services.tuner.service import Tuner, TunerOptions
from shared.bus import Bus, Clock
from shared.cluster import ClusterApi
from shared.runner import ServiceContext, ServiceSpec
from shared.targets import TargetStore
from shared.workloads import workload_spec


def build_service() -> ServiceSpec:
    def build(
        store: TargetStore, bus: Bus, cluster: ClusterApi, clock: Clock, ctx: ServiceContext
    ) -> Tuner:
        options = TunerOptions(
            resync_s=ctx.settings.resync_period_s,
            retry_base_s=ctx.settings.retry_base_s,
            retry_max_s=ctx.settings.retry_max_s,
            progress_s=ctx.settings.tuning_progress_s,
        )
        return Tuner(store, bus, cluster, clock, options)

    return workload_spec("tuner", build, tables)
