"""What provisioning costs Kaiten itself (the cloud's minutes are not Kaiten's).

1. ``assess``, the pure decision, on clusters of 10 to 5000 nodes.
2. The provisioner end to end with the simulated backend (nodes join at once): the time from
   handling PlanReady to ResourcesReady stored in JetStream, for workspaces planned together,
   on an in-process development cluster with real NATS and PostgreSQL (NATS_URL / DATABASE_URL,
   default the local ones). Prints figures; never fails.

Usage: python bench/provision_latency.py [--runs N] [--workspaces N] [--no-service]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import config as aconfig
from prometheus_client import CollectorRegistry

from kaiten.migrate import upgrade_all
from localdev import infra
from localdev.kubeapi.cluster import DevCluster
from presets.catalog import default_catalog
from services.provisioner.cloud import SimulatedCloud, SimulatedNodes
from services.provisioner.crd import nodeclaim_crd
from services.provisioner.kubeapi import ClusterApi
from services.provisioner.nodes import Target, assess
from services.provisioner.service import (
    ClaimController,
    ClaimOptions,
    Provisioner,
    ProvisionerOptions,
)
from services.provisioner.store import ProvisionerStore
from shared.bus import Bus
from shared.db import Database
from shared.events import EventType, PlanReady, WorkspaceRef, new_event
from shared.plan import GpuInfo, NodeSelection, Plan, RuntimeChoice
from shared.settings import Settings

SKU = "Standard_NC24ads_A100_v4"
GPU = GpuInfo(
    model="NVIDIA A100",
    vendor="nvidia",
    count_per_node=1,
    memory_gib_per_gpu=80,
    compute_capability=8.0,
    nvme=True,
)


def plan(node_count: int, selection: NodeSelection | None = None) -> Plan:
    return Plan(
        mode="inference",
        preset="phi-3-mini-4k-instruct",
        instance_type=SKU,
        gpu=GPU,
        node_count=node_count,
        runtime=RuntimeChoice(name="vllm", reason="bench"),
        disk_gib=80,
        image="example.test/runtime:1",
        readiness_timeout_s=1800,
        nodes=selection or NodeSelection(),
    )


def now() -> datetime:
    return datetime.now(UTC)


async def resources_ready(settings: Settings, subject: str) -> int:
    """How many ResourcesReady the stream holds (read with plain nats-py)."""
    import nats  # noqa: PLC0415

    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(settings.stream, subjects_filter=subject)
        return sum((info.state.subjects or {}).values())
    finally:
        await nc.close()


def node(i: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"node-{i:05d}",
            "labels": {
                "apps": "phi-3" if i % 2 else "other",
                "node.kubernetes.io/instance-type": SKU if i % 3 else "Standard_D4s_v5",
            },
        },
        "status": {
            "capacity": {"nvidia.com/gpu": "1"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def ref() -> WorkspaceRef:
    return WorkspaceRef(uid=str(uuid.uuid4()), namespace="default", name="bench", generation=1)


def pure(runs: int) -> None:
    target = Target.from_plan(ref(), plan(2, NodeSelection(label_selector={"apps": "phi-3"})))
    print(f"assess (2 nodes wanted), {runs} runs each (median, p95):")
    for size in (10, 100, 1000, 5000):
        nodes = [node(i) for i in range(size)]
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            assess(target, nodes, [], [], provision=True, cloud="azure")
            times.append((time.perf_counter() - started) * 1000)
        p95 = statistics.quantiles(times, n=20)[-1]
        print(f"  {size:5d} nodes  {statistics.median(times):8.3f} ms  {p95:8.3f} ms")


async def service(workspaces: int) -> None:
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    db_name = f"kaiten_bench_{uuid.uuid4().hex[:8]}"
    db_url = await infra.create_database(server, db_name)
    await asyncio.to_thread(upgrade_all, db_url)
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        nats_url=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        database_url=db_url,
        stream=f"KAITEN_BENCH_{tag}",
        subject_prefix=f"bench{tag}",
    )
    cluster = DevCluster()
    await cluster.start()
    tmp = Path(tempfile.mkdtemp())
    kube = await aconfig.new_client_from_config(
        config_file=str(cluster.write_kubeconfig(tmp / "kubeconfig"))
    )
    db = Database(db_url)
    bus = Bus(settings, "provisioner", registry=CollectorRegistry())
    await bus.start()
    tasks: list[asyncio.Task[None]] = []
    try:
        await aclient.ApiextensionsV1Api(kube).create_custom_resource_definition(
            nodeclaim_crd()  # type: ignore[arg-type]
        )
        api = ClusterApi(kube)
        provisioner = Provisioner(
            ProvisionerStore(db), bus, api, now, ProvisionerOptions(backend="simulated")
        )
        nodes = SimulatedNodes(api.register_node, api.list_nodes, api.delete_node)
        cloud = SimulatedCloud(nodes, default_catalog(), delay_s=0)
        claims = ClaimController(api, cloud, now, ClaimOptions())
        tasks = [asyncio.create_task(provisioner.run()), asyncio.create_task(claims.run())]
        refs = [
            WorkspaceRef(uid=str(uuid.uuid4()), namespace="default", name=f"ws-{i}", generation=1)
            for i in range(workspaces)
        ]
        one = plan(1)
        events = [
            new_event(
                PlanReady(
                    mode="inference",
                    preset="phi-3-mini-4k-instruct",
                    instance_type=SKU,
                    node_count=1,
                    plan=one,
                ),
                source="planner",
                workspace=r,
                now=now(),
            )
            for r in refs
        ]
        started = time.perf_counter()
        await asyncio.gather(*(provisioner.on_plan_ready(e) for e in events))
        handled = time.perf_counter() - started
        subject = f"{settings.subject_prefix}.v1.{EventType.RESOURCES_READY.value}.>"
        while await resources_ready(settings, subject) < workspaces:
            if time.perf_counter() - started > 120:  # noqa: PLR2004
                print("  gave up after 120 s")
                return
            await asyncio.sleep(0.02)
        total = time.perf_counter() - started
        print(
            f"service, {workspaces} workspaces planned together, simulated nodes joining at once:"
        )
        print(f"  PlanReady handled (NodeClaims created)   {handled * 1000:8.0f} ms")
        print(f"  all ResourcesReady stored in JetStream   {total * 1000:8.0f} ms")
        print(f"  per workspace                            {total * 1000 / workspaces:8.0f} ms")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bus.stop()
        await db.close()
        await kube.close()
        await cluster.stop()
        await infra.drop_database(server, db_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--workspaces", type=int, default=10)
    parser.add_argument("--no-service", action="store_true")
    args = parser.parse_args()
    pure(args.runs)
    if not args.no_service:
        asyncio.run(service(args.workspaces))


if __name__ == "__main__":
    main()
