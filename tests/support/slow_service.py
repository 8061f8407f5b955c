"""A service for the runner tests: its handler takes a while and leaves marker files, so a test
can stop the process mid-event and see whether the event finished."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from shared.bus import Subscription
from shared.events import Envelope, EventType
from shared.runner import ServiceContext, ServiceSpec, run


def build_service() -> ServiceSpec:
    markers = Path(os.environ["SLOW_SERVICE_MARKERS"])
    seconds = float(os.environ.get("SLOW_SERVICE_SECONDS", "1.5"))

    async def on_resources_ready(event: Envelope[Any]) -> None:
        node = event.data.node_names[0]
        (markers / f"{node}.started").touch()
        await asyncio.sleep(seconds)
        (markers / f"{node}.finished").touch()

    def handlers(_ctx: ServiceContext) -> list[Subscription]:
        return [Subscription(EventType.RESOURCES_READY, on_resources_ready)]

    return ServiceSpec(name="deployer", handlers=handlers)


if __name__ == "__main__":
    raise SystemExit(run(build_service()))
