"""How long planning takes: the pure planner on each seed Workspace, on a vLLM workspace, and on
a rejection (which ranks every SKU of the cloud). Then the planner service end to end: the time
from publishing WorkspaceObserved to PlanReady stored in JetStream, with real NATS and
PostgreSQL (NATS_URL / DATABASE_URL, default the local ones). Prints figures; never fails.

Usage: python bench/plan_latency.py [--runs N] [--no-service]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from presets.catalog import default_catalog
from presets.catalog.prices import default_prices
from services.planner.planning import PlanOptions, Rejection, plan_workspace

SEEDS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "seeds"


def workspaces() -> dict[str, dict[str, Any]]:
    cases = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(SEEDS.glob("*.yaml"))}
    vllm = yaml.safe_load((SEEDS / "inference-phi-3-mini.yaml").read_text())
    vllm["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"
    cases["vllm-phi-3-mini-on-a100"] = vllm
    too_big = yaml.safe_load((SEEDS / "inference-phi-3-mini.yaml").read_text())
    too_big["inference"]["preset"]["name"] = "phi-3-medium-4k-instruct"
    cases["rejected-phi-3-medium-on-v100"] = too_big
    return cases


def pure(runs: int) -> None:
    options = PlanOptions(default_catalog(), default_prices())
    print(f"plan_workspace, {runs} runs each (median, p95):")
    for name, obj in workspaces().items():
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            result = plan_workspace(obj, {}, options)
            times.append((time.perf_counter() - started) * 1000)
        kind = "rejected" if isinstance(result, Rejection) else "plan"
        p95 = statistics.quantiles(times, n=20)[-1]
        print(f"  {name:34} {kind:8} {statistics.median(times):6.2f} ms  {p95:6.2f} ms")


async def service(runs: int) -> None:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from kaiten.migrate import upgrade_all  # noqa: PLC0415
    from localdev import infra  # noqa: PLC0415
    from services.planner.service import Planner  # noqa: PLC0415
    from services.planner.store import PlannerStore  # noqa: PLC0415
    from shared.bus import Bus, Subscription  # noqa: PLC0415
    from shared.db import Database  # noqa: PLC0415
    from shared.events import EventType, WorkspaceObserved, WorkspaceRef, new_event  # noqa: PLC0415
    from shared.settings import Settings  # noqa: PLC0415

    base = Settings()
    name = f"kaiten_bench_{uuid.uuid4().hex[:8]}"
    url = await infra.create_database(base.database_url, name)
    await asyncio.to_thread(upgrade_all, url)
    tag = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={"database_url": url, "stream": f"BENCH_{tag}", "subject_prefix": f"bench{tag}"}
    )
    db = Database(url)
    done: dict[str, asyncio.Future[float]] = {}
    planner_bus = Bus(settings, "planner", registry=CollectorRegistry())
    watcher_bus = Bus(settings, "watcher", registry=CollectorRegistry())

    async def on_plan(event: Any) -> None:
        future = done.get(event.workspace.uid)
        if future is not None and not future.done():
            future.set_result(time.perf_counter())

    async def reader(_ns: str, names: Any) -> dict[str, None]:
        return dict.fromkeys(names)

    planner = Planner(
        PlannerStore(db),
        planner_bus,
        reader,
        PlanOptions(default_catalog(), default_prices()),
        lambda: datetime.now(UTC),
    )
    planner_bus.subscribe(Subscription(EventType.WORKSPACE_OBSERVED, planner.on_observed))
    watcher_bus.subscribe(Subscription(EventType.PLAN_READY, on_plan))
    await planner_bus.start()
    await watcher_bus.start()
    obj = workspaces()["inference-phi-3-mini"]
    latencies = []
    try:
        for _ in range(runs):
            ref = WorkspaceRef(uid=str(uuid.uuid4()), namespace="default", name="w", generation=1)
            done[ref.uid] = asyncio.get_running_loop().create_future()
            data = WorkspaceObserved(workspace=obj, spec_hash="h", trigger="added")
            started = time.perf_counter()
            await watcher_bus.publish(
                new_event(data, source="watcher", workspace=ref, now=datetime.now(UTC))
            )
            latencies.append((await asyncio.wait_for(done[ref.uid], 30) - started) * 1000)
    finally:
        await planner_bus.stop()
        await watcher_bus.stop()
        await db.close()
        await infra.drop_database(base.database_url, name)
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(
        f"WorkspaceObserved -> PlanReady through NATS + Postgres, {runs} workspaces one at a "
        f"time: median {statistics.median(latencies):.1f} ms, p95 {p95:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--no-service", action="store_true")
    args = parser.parse_args()
    pure(args.runs)
    if not args.no_service:
        asyncio.run(service(min(args.runs, 100)))


if __name__ == "__main__":
    main()
