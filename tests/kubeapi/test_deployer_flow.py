"""kubectl apply -> watcher -> planner -> provisioner (simulated) -> deployer -> Workspace status,
on the development cluster with its simulated kubelet, real NATS JetStream and real PostgreSQL:
the inference path of `make up`, its failure reasons, drift repair, adapter rollouts and
deletion."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from localdev.kubeapi.simulate import Simulator
from services.deployer.app import build_service as build_deployer
from services.planner.app import build_service as build_planner
from services.provisioner.app import build_service as build_provisioner
from services.watcher.app import build_service as build_watcher
from shared.runner import ServiceSpec, serve
from shared.settings import Settings
from tests.kubeapi.conftest import Kubectl
from tests.support.polling import eventually
from tests.support.provisioner import forget_other_tests

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "deploy" / "crds"
SEEDS = ROOT / "tests" / "fixtures" / "seeds"
SEED = SEEDS / "inference-phi-3-mini.yaml"
ADAPTER_SEED = SEEDS / "inference-phi-3-mini-adapter.yaml"
WS = "workspace-phi-3-mini"


@pytest.fixture
async def services(
    kubectl: Kubectl,
    kubeconfig: Path,
    settings: Settings,
    simulator: Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Simulator]:
    """The four services of the inference path, as `kaiten run` starts them; the simulator
    plays kubelet and the workload controllers."""
    builds = (build_watcher, build_planner, build_provisioner, build_deployer)
    async with running_path(builds, kubectl, kubeconfig, settings, monkeypatch):
        yield simulator


@contextlib.asynccontextmanager
async def running_path(
    builds: Sequence[Callable[[], ServiceSpec]],
    kubectl: Kubectl,
    kubeconfig: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    **updates: Any,
) -> AsyncIterator[None]:
    """The CRDs applied and ``builds``' services running as `kaiten run` starts them (no
    webhook, simulated provisioner), with ``updates`` to their settings; stopped on exit."""
    for crd in ("kaito.sh_workspaces.yaml", "karpenter.sh_nodeclaims.yaml"):
        await kubectl("apply", "-f", str(CRDS / crd))
    await kubectl("wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "--timeout=10s")
    await forget_other_tests(settings)
    for key, value in {
        "KAITEN_WEBHOOK_ENABLED": "false",
        "KAITEN_PROVISIONER_BACKEND": "simulated",
        "KAITEN_PROVISIONER_SIMULATED_DELAY_S": "0.1",
    }.items():
        monkeypatch.setenv(key, value)
    configured = settings.model_copy(update={"kubeconfig": str(kubeconfig), **updates})
    stop = asyncio.Event()
    tasks = [asyncio.create_task(serve(build(), configured, stop)) for build in builds]
    try:
        yield
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=30)


async def get_json(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    code, out, _ = await kubectl("get", *args, "-o", "json", check=False)
    if code != 0:
        return {}
    obj: dict[str, Any] = json.loads(out)
    return obj


def conditions(workspace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (workspace.get("status") or {}).get("conditions") or []}


async def wait_condition(
    kubectl: Kubectl,
    name: str,
    ctype: str,
    reason: str,
    *,
    generation: int | None = None,
    namespace: str = "default",
    timeout: float = 30,
) -> dict[str, dict[str, Any]]:
    async def reached() -> dict[str, dict[str, Any]] | None:
        found = conditions(await get_json(kubectl, "workspace", name, "-n", namespace))
        cond = found.get(ctype)
        if cond is None or cond.get("reason") != reason:
            return None
        if generation is not None and cond.get("observedGeneration") != generation:
            return None
        return found

    found: dict[str, dict[str, Any]] = await eventually(
        reached, timeout=timeout, what=f"{name}: {ctype} {reason}"
    )
    return found


async def ready(kubectl: Kubectl, name: str = WS, **kw: Any) -> dict[str, dict[str, Any]]:
    found = await wait_condition(kubectl, name, "WorkspaceSucceeded", "workspaceSucceeded", **kw)
    await wait_condition(kubectl, name, "InferenceReady", "WorkspaceInferenceStatusSuccess", **kw)
    return found


async def pods_of(kubectl: Kubectl, name: str = WS) -> list[dict[str, Any]]:
    body = await get_json(kubectl, "pods", "-l", f"kaito.sh/workspace={name}")
    return list(body.get("items") or [])


async def test_a_seed_becomes_ready_with_kaitos_service_and_columns(
    services: Simulator, kubectl: Kubectl
) -> None:
    await kubectl("apply", "-f", str(SEED))
    found = await ready(kubectl)
    assert found["InferenceReady"]["status"] == "True"
    assert found["ResourceReady"]["status"] == "True"

    _, out, _ = await kubectl("get", "svc", WS)
    assert "80/TCP,29500/TCP" in out
    assert "ClusterIP" in out
    _, out, _ = await kubectl("get", "workspace", WS)
    header, row = out.splitlines()[:2]
    for column in ("INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY"):
        assert column in header
    assert row.split()[1:5] == ["Standard_NC6s_v3", "True", "True", "True"]

    deployment = await get_json(kubectl, "deployment", WS)
    assert deployment["metadata"]["annotations"]["workspace.kaito.io/revision"] == "1"
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Workspace", WS, True)
    workspace = await get_json(kubectl, "workspace", WS)
    assert owner["uid"] == workspace["metadata"]["uid"]
    (pod,) = await pods_of(kubectl)
    assert pod["spec"]["nodeName"] == workspace["status"]["workerNodes"][0]
    assert await get_json(kubectl, "configmap", f"{WS}-inference-params")
    assert (await get_json(kubectl, "svc", f"{WS}-headless"))["spec"]["clusterIP"] == "None"


async def replace_pod(kubectl: Kubectl) -> None:
    """Delete the workspace's pod and wait until its replacement is Ready again."""
    (old,) = await pods_of(kubectl)
    await kubectl("delete", "pod", old["metadata"]["name"], "--wait=false")

    async def fresh() -> str | None:
        pods = [
            p for p in await pods_of(kubectl) if p["metadata"]["name"] != old["metadata"]["name"]
        ]
        return pods[0]["metadata"]["name"] if pods else None

    await eventually(fresh, timeout=20, what="a replacement pod")
    await ready(kubectl)


FAILURES = [
    ("CrashLoopBackOff", "ContainerCrashLoopBackOff", "back-off 5m0s restarting failed container"),
    ("ImagePullBackOff", "ImagePullError", "Back-off pulling image"),
    ("OOMKilled", "ContainerOOMKilled", "OOMKilled"),
    ("Evicted", "PodEvicted", "The node was low on resource: ephemeral-storage."),
    ("Unschedulable", "Unschedulable", "nodes are available"),
]


async def test_each_failure_kind_gives_its_own_reason_and_the_kubelets_message(
    services: Simulator, kubectl: Kubectl
) -> None:
    simulator = services
    await kubectl("apply", "-f", str(SEED))
    await ready(kubectl)
    for mode, reason, words in FAILURES:
        (pod,) = await pods_of(kubectl)
        await simulator.fail_pod("default", pod["metadata"]["name"], mode)
        found = await wait_condition(kubectl, WS, "InferenceReady", reason)
        assert found["InferenceReady"]["status"] == "False", mode
        assert words in found["InferenceReady"]["message"], (mode, found["InferenceReady"])
        assert pod["metadata"]["name"] in found["InferenceReady"]["message"]
        succeeded = await wait_condition(kubectl, WS, "WorkspaceSucceeded", "workspaceFailed")
        assert succeeded["WorkspaceSucceeded"]["status"] == "False"
        await replace_pod(kubectl)

    # A pod that is not Ready on a node under memory pressure: the node's words.
    (pod,) = await pods_of(kubectl)
    await simulator.set_node_pressure(pod["spec"]["nodeName"], "MemoryPressure")
    await simulator.fail_pod("default", pod["metadata"]["name"], "Unready")
    found = await wait_condition(kubectl, WS, "InferenceReady", "NodeMemoryPressure")
    assert "kubelet has insufficient memory available" in found["InferenceReady"]["message"]
    assert pod["spec"]["nodeName"] in found["InferenceReady"]["message"]


async def test_a_deployment_deleted_or_edited_by_hand_is_restored(
    services: Simulator, kubectl: Kubectl
) -> None:
    await kubectl("apply", "-f", str(SEED))
    await ready(kubectl)
    before = await get_json(kubectl, "deployment", WS)

    await kubectl("delete", "deployment", WS)

    async def recreated() -> dict[str, Any] | None:
        found = await get_json(kubectl, "deployment", WS)
        uid = (found.get("metadata") or {}).get("uid")
        return found if uid and uid != before["metadata"]["uid"] else None

    await eventually(recreated, timeout=20, what="the Deployment recreated")
    await ready(kubectl)

    await kubectl("patch", "deployment", WS, "--type=merge", "-p", '{"spec": {"replicas": 3}}')

    async def restored() -> bool:
        return bool((await get_json(kubectl, "deployment", WS))["spec"]["replicas"] == 1)

    await eventually(restored, timeout=20, what="replicas put back to 1")
    await kubectl("delete", "svc", WS)
    await eventually(lambda: get_json(kubectl, "svc", WS), timeout=20, what="the Service recreated")


async def test_an_adapter_edit_rolls_the_workload_and_bumps_the_revision(
    services: Simulator, kubectl: Kubectl
) -> None:
    name = "workspace-phi-3-mini-adapter"
    await kubectl("apply", "-f", str(ADAPTER_SEED))
    await ready(kubectl, name)
    deployment = await get_json(kubectl, "deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == [
        "model-weights-downloader",
        "puller-phi-3-adapter",
    ]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["phi-3-adapter"] == "1"
    (first_pod,) = await pods_of(kubectl, name)

    doc = yaml.safe_load(ADAPTER_SEED.read_text())
    doc["inference"]["adapters"][0]["strength"] = "0.5"
    await kubectl.apply(doc)
    await ready(kubectl, name, generation=2)

    deployment = await get_json(kubectl, "deployment", name)
    assert deployment["metadata"]["annotations"]["workspace.kaito.io/revision"] == "2"
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["phi-3-adapter"] == "0.5"
    pods = await pods_of(kubectl, name)
    assert first_pod["metadata"]["name"] not in [p["metadata"]["name"] for p in pods]

    # Removing the adapter removes its puller and its strength.
    del doc["inference"]["adapters"]
    await kubectl.apply(doc)
    await ready(kubectl, name, generation=3)
    pod = (await get_json(kubectl, "deployment", name))["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["model-weights-downloader"]
    assert "phi-3-adapter" not in {e["name"] for e in pod["containers"][0].get("env") or []}


async def test_deleting_the_workspace_removes_every_object_the_deployer_made(
    services: Simulator, kubectl: Kubectl
) -> None:
    await kubectl("apply", "-f", str(SEED))
    await ready(kubectl)
    await kubectl("delete", "workspace", WS, "--wait=false")
    await kubectl("wait", "--for=delete", f"workspace/{WS}", "--timeout=30s", timeout=40)
    for kind, name in (
        ("deployment", WS),
        ("svc", WS),
        ("svc", f"{WS}-headless"),
        ("configmap", f"{WS}-inference-params"),
    ):
        assert await get_json(kubectl, kind, name) == {}, f"{kind}/{name} left behind"
