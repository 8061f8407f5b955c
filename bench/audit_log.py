"""Audit log throughput on this machine: how fast the watcher's audit sink stores a backlog of
events in Postgres (batched inserts of the events and their phases), with batches of 16 and of
256 (the watcher's default).

Usage: python bench/audit_log.py [--events N] [--workspaces W] [--nats-url URL] [--database-url URL]
Without --nats-url it starts a private nats-server; --database-url names a PostgreSQL server
(default: DATABASE_URL or the local one), on which it makes and drops a scratch database.
Prints a table and writes bench/results/audit_log.json. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from kaiten.migrate import upgrade_all
from localdev import infra
from services.watcher.audit import AuditLog, record_of
from shared.bus import Bus, Delivered, StreamSink, utcnow
from shared.db import Database
from shared.events import (
    EventData,
    ResourcesPending,
    ResourcesReady,
    WorkspaceObserved,
    WorkspaceRef,
    condition_reported,
    new_event,
)
from shared.logs import configure_logging
from shared.settings import Settings

RESULTS = Path(__file__).parent / "results" / "audit_log.json"


def story(ref: WorkspaceRef) -> list[EventData]:
    """The events of one rollout, roughly as the services publish them (no PlanReady: its plan
    is large and built by the planner; a pending report stands in for it)."""
    return [
        WorkspaceObserved(
            workspace={"metadata": {"name": ref.name}}, spec_hash="h", trigger="added"
        ),
        ResourcesPending(
            reason="CreateNodeClaimPending", message="creating 1 nodeClaims", wanted=1
        ),
        condition_reported(ref, "NodeClaimReady", "Unknown", "CreateNodeClaimPending", "creating"),
        ResourcesReady(node_names=(f"node-{ref.name}",)),
        condition_reported(ref, "ResourceReady", "True", "workspaceResourceStatusSuccess", "ok"),
        condition_reported(ref, "InferenceReady", "False", "Pending", "pods starting"),
        condition_reported(ref, "WorkspaceSucceeded", "True", "workspaceSucceeded", "ok"),
    ]


def events(n: int, workspaces: int) -> list[Any]:
    """``n`` events: the rollout story of ``workspaces`` Workspaces, one generation after another
    (each generation's events are new facts, so JetStream keeps them all)."""
    uids = [str(uuid.uuid4()) for _ in range(workspaces)]
    sources = ["watcher", *["provisioner"] * 4, "deployer", "deployer"]
    out: list[Any] = []
    generation = 0
    while len(out) < n:
        generation += 1
        for i, uid in enumerate(uids):
            ref = WorkspaceRef(uid=uid, namespace="bench", name=f"ws-{i}", generation=generation)
            for data, source in zip(story(ref), sources, strict=True):
                out.append(new_event(data, source=source, workspace=ref, now=utcnow()))
    return out[:n]


async def run_case(
    nats_url: str, database_url: str, n: int, workspaces: int, batch: int
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(nats_url=nats_url, stream=f"BENCH_{tag}", subject_prefix=f"bench{tag}")
    db = Database(database_url)
    audit = AuditLog(db)
    stored = 0
    done = asyncio.Event()
    batches: list[int] = []

    async def handler(messages: Sequence[Delivered]) -> None:
        nonlocal stored
        recorded = await audit.record([record_of(m, settings.subject_prefix) for m in messages])
        stored += recorded.stored
        batches.append(len(messages))
        if stored >= n:
            done.set()

    publisher = Bus(settings, "bench", registry=CollectorRegistry())
    await publisher.start()
    todo = events(n, workspaces)
    for i in range(0, n, 256):
        await asyncio.gather(*(publisher.publish(e) for e in todo[i : i + 256]))
    sink = Bus(settings, "watcher", registry=CollectorRegistry())
    sink.sink(StreamSink("audit", handler, batch_size=batch))
    cpu0 = time.process_time()
    started = time.perf_counter()
    await sink.start()
    await asyncio.wait_for(done.wait(), timeout=600)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    await sink.stop()
    await publisher.jetstream.delete_stream(settings.stream)
    await publisher.stop()
    await db.close()
    return {
        "events": n,
        "workspaces": workspaces,
        "batch_size": batch,
        "batches": len(batches),
        "stored_per_s": round(n / elapsed),
        "cpu_ms_per_event": round(cpu * 1000 / n, 3),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--workspaces", type=int, default=500)
    parser.add_argument("--nats-url")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args()
    configure_logging("WARNING", "json")
    name = f"kaiten_bench_{uuid.uuid4().hex[:8]}"
    database_url = await infra.create_database(args.database_url, name)
    await asyncio.to_thread(upgrade_all, database_url)
    with tempfile.TemporaryDirectory() as tmp:
        proc = None
        url = args.nats_url
        if url is None:
            port = infra.free_port()
            proc = infra.start_nats(Path(tmp) / "store", port, Path(tmp) / "nats.log")
            url = f"nats://127.0.0.1:{port}"
        try:
            rows = [
                await run_case(url, database_url, args.events, args.workspaces, batch)
                for batch in (16, 256)
            ]
        finally:
            if proc:
                proc.terminate()
                proc.wait()
            await infra.drop_database(args.database_url, name)
    print(f"{'batch':>6} {'events':>7} {'batches':>8} {'stored/s':>9} {'CPU ms/event':>13}")
    for r in rows:
        print(
            f"{r['batch_size']:>6} {r['events']:>7} {r['batches']:>8} {r['stored_per_s']:>9} "
            f"{r['cpu_ms_per_event']:>13}"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": f"{platform.node()} {platform.machine()} cpus={os.cpu_count()}",
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
