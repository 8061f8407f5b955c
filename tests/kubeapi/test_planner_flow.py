"""kubectl apply -> watcher -> planner -> status, with the real services (as `kaiten run` starts
them) on the development cluster, real NATS JetStream and real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.planner.app import build_service as build_planner
from services.watcher.app import build_service as build_watcher
from shared.runner import serve
from shared.settings import Settings
from tests.kubeapi.conftest import Kubectl
from tests.support.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "deploy" / "crds" / "kaito.sh_workspaces.yaml"
SEEDS = sorted((ROOT / "tests" / "fixtures" / "seeds").glob("*.yaml"))


@pytest.fixture
async def services(
    kubectl: Kubectl, kubeconfig: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    await kubectl("apply", "-f", str(CRD_FILE))
    await kubectl("wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "--timeout=10s")
    monkeypatch.setenv("KAITEN_WEBHOOK_ENABLED", "false")
    configured = settings.model_copy(update={"kubeconfig": str(kubeconfig)})
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(serve(build(), configured, stop))
        for build in (build_watcher, build_planner)
    ]
    yield
    stop.set()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)


async def get_workspace(kubectl: Kubectl, name: str, namespace: str = "default") -> dict[str, Any]:
    _, out, _ = await kubectl("get", "workspace", name, "-n", namespace, "-o", "json")
    obj: dict[str, Any] = json.loads(out)
    return obj


@pytest.mark.usefixtures("services")
async def test_every_seed_applied_unchanged_is_planned_on_one_node(kubectl: Kubectl) -> None:
    # Two seeds share a name (an inference and a tuning Workspace): one namespace per seed.
    placed = []
    for i, seed in enumerate(SEEDS):
        namespace = f"seed-{i}"
        await kubectl.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
        await kubectl("apply", "-n", namespace, "-f", str(seed))
        placed.append((namespace, yaml.safe_load(seed.read_text())["metadata"]["name"]))

    async def all_planned() -> bool:
        counts = [
            ((await get_workspace(kubectl, name, ns)).get("status") or {}).get("targetNodeCount")
            for ns, name in placed
        ]
        return all(c == 1 for c in counts)

    await eventually(all_planned, timeout=30, what="targetNodeCount 1 on every seed")


@pytest.mark.usefixtures("services")
async def test_a_model_that_cannot_fit_shows_why_on_the_workspace(
    kubectl: Kubectl, tmp_path: Path
) -> None:
    body = yaml.safe_load(SEEDS[0].read_text())
    body["metadata"] = {"name": "too-big", "namespace": "default"}
    body.pop("tuning", None)
    body["inference"] = {"preset": {"name": "phi-3-medium-4k-instruct"}}
    manifest = tmp_path / "too-big.yaml"
    manifest.write_text(yaml.safe_dump(body))
    # The admission webhook is off here, as if bypassed: the planner is the last line.
    await kubectl("apply", "-f", str(manifest))

    async def rejected() -> dict[str, Any] | None:
        conditions = ((await get_workspace(kubectl, "too-big")).get("status") or {}).get(
            "conditions"
        ) or []
        found = [c for c in conditions if c["type"] == "WorkspaceSucceeded"]
        return found[0] if found else None

    condition = await eventually(rejected, timeout=30, what="the planner's condition")
    assert condition["status"] == "False"
    assert condition["reason"] == "InsufficientGPUMemory"
    assert "Instance types that fit" in condition["message"]
