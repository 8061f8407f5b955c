"""kubectl apply -> watcher -> planner -> provisioner (simulated backend) -> Workspace status,
with the real services as `kaiten run` starts them, on the development cluster, real NATS
JetStream and real PostgreSQL: what `make up` does."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from localdev.kubeapi.cluster import DevCluster
from localdev.kubeapi.simulate import Simulator
from services.planner.app import build_service as build_planner
from services.provisioner.app import build_service as build_provisioner
from services.watcher.app import build_service as build_watcher
from shared.runner import serve
from shared.settings import Settings
from tests.kubeapi.conftest import Kubectl
from tests.support.polling import eventually
from tests.support.provisioner import forget_other_tests

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "deploy" / "crds"
SEED = ROOT / "tests" / "fixtures" / "seeds" / "inference-phi-3-mini.yaml"


@pytest.fixture
async def services(
    request: pytest.FixtureRequest,
    kubectl: Kubectl,
    kubeconfig: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[None]:
    """Watcher, planner and provisioner (simulated backend unless the test's parameter, a dict
    of environment variables, says otherwise), as `kaiten run` starts them."""
    for crd in ("kaito.sh_workspaces.yaml", "karpenter.sh_nodeclaims.yaml"):
        await kubectl("apply", "-f", str(CRDS / crd))
    await kubectl("wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "--timeout=10s")
    await forget_other_tests(settings)
    env = {
        "KAITEN_WEBHOOK_ENABLED": "false",
        "KAITEN_PROVISIONER_BACKEND": "simulated",
        "KAITEN_PROVISIONER_SIMULATED_DELAY_S": "0.2",
        **getattr(request, "param", {}),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    configured = settings.model_copy(update={"kubeconfig": str(kubeconfig)})
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(serve(build(), configured, stop))
        for build in (build_watcher, build_planner, build_provisioner)
    ]
    yield
    stop.set()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)


QUOTA_EXHAUSTED = {"KAITEN_PROVISIONER_SIMULATED_FAILURES": "Standard_NC6s_v3=QuotaExceeded"}
BRING_YOUR_OWN = {"KAITEN_PROVISIONER_BACKEND": "byo"}


async def get_json(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    _, out, _ = await kubectl("get", *args, "-o", "json")
    obj: dict[str, Any] = json.loads(out)
    return obj


def conditions(workspace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (workspace.get("status") or {}).get("conditions") or []}


@pytest.mark.usefixtures("services")
async def test_a_seed_gets_a_simulated_gpu_node_and_resource_ready(kubectl: Kubectl) -> None:
    await kubectl("apply", "-f", str(SEED))

    async def worker_nodes() -> list[str] | None:
        ws = await get_json(kubectl, "workspace", "workspace-phi-3-mini")
        return (ws.get("status") or {}).get("workerNodes")

    nodes = await eventually(worker_nodes, timeout=30, what="status.workerNodes")
    claims = (await get_json(kubectl, "nodeclaims"))["items"]
    assert len(claims) == 1
    claim = claims[0]
    assert claim["metadata"]["labels"]["apps"] == "phi-3"  # the seed's labelSelector
    assert nodes == [claim["status"]["nodeName"]]

    node = await get_json(kubectl, "node", nodes[0])
    assert node["metadata"]["labels"]["accelerator"] == "nvidia"
    assert node["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "Standard_NC6s_v3"
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in node["spec"]["taints"]

    async def resource_ready() -> dict[str, Any] | None:
        found = conditions(await get_json(kubectl, "workspace", "workspace-phi-3-mini"))
        wanted = ("NodeClaimReady", "NodesReady", "ResourceReady")
        all_true = all(found.get(t, {}).get("status") == "True" for t in wanted)
        return found if all_true else None

    found = await eventually(resource_ready, timeout=20, what="the resource conditions True")
    assert found["NodeClaimReady"]["reason"] == "NodeClaimsReady"
    assert found["NodesReady"]["status"] == "True"

    # Deleting the Workspace removes its NodeClaim and node, and releases the finalizer.
    await kubectl("delete", "workspace", "workspace-phi-3-mini", "--wait=false")
    await kubectl(
        "wait", "--for=delete", "workspace/workspace-phi-3-mini", "--timeout=30s", timeout=40
    )

    async def all_gone() -> bool:
        left = (await get_json(kubectl, "nodeclaims"))["items"]
        nodes_left = (await get_json(kubectl, "nodes"))["items"]
        return not left and not any(n["metadata"]["name"] == nodes[0] for n in nodes_left)

    await eventually(all_gone, timeout=20, what="the NodeClaim and its node removed")


@pytest.mark.parametrize("services", [QUOTA_EXHAUSTED], indirect=True)
@pytest.mark.usefixtures("services")
async def test_a_quota_failure_shows_azures_words_on_the_workspace(kubectl: Kubectl) -> None:
    await kubectl("apply", "-f", str(SEED))

    async def failed() -> dict[str, Any] | None:
        found = conditions(await get_json(kubectl, "workspace", "workspace-phi-3-mini"))
        ready = found.get("ResourceReady")
        failed = ready and ready["reason"] == "QuotaExceeded" and "WorkspaceSucceeded" in found
        return found if failed else None

    found = await eventually(failed, timeout=30, what="ResourceReady=False/QuotaExceeded")
    assert found["ResourceReady"]["status"] == "False"
    assert "exceeding approved" in found["ResourceReady"]["message"]
    assert found["WorkspaceSucceeded"]["reason"] == "workspaceFailed"
    _, out, _ = await kubectl("get", "workspace", "workspace-phi-3-mini")
    assert "workspace-phi-3-mini" in out


@pytest.mark.parametrize("services", [BRING_YOUR_OWN], indirect=True)
@pytest.mark.usefixtures("services")
async def test_bring_your_own_waits_for_a_matching_node_and_never_provisions(
    kubectl: Kubectl, cluster: DevCluster
) -> None:
    await kubectl("apply", "-f", str(SEED))

    async def waiting() -> dict[str, Any] | None:
        found = conditions(await get_json(kubectl, "workspace", "workspace-phi-3-mini"))
        nodes_ready = found.get("NodesReady")
        return found if nodes_ready and nodes_ready["reason"] == "NodeNotReady" else None

    found = await eventually(waiting, timeout=30, what="NodesReady=False/NodeNotReady")
    assert "0 of 1 Ready nodes of instance type Standard_NC6s_v3" in found["NodesReady"]["message"]
    assert "apps=phi-3" in found["NodesReady"]["message"]
    assert "NodeClaimReady" not in found

    # The user's node joins: a V100 labelled as the seed's selector asks.
    labels = {"apps": "phi-3", "node.kubernetes.io/instance-type": "Standard_NC6s_v3"}
    simulator = Simulator(cluster.api)
    await simulator.add_node("my-gpu-node", labels=labels, gpus=1)

    async def worker_nodes() -> list[str] | None:
        ws = await get_json(kubectl, "workspace", "workspace-phi-3-mini")
        return (ws.get("status") or {}).get("workerNodes")

    assert await eventually(worker_nodes, timeout=20, what="workerNodes") == ["my-gpu-node"]
    assert (await get_json(kubectl, "nodeclaims"))["items"] == []
