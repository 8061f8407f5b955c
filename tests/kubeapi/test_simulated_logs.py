"""A container that fails in the simulated cluster leaves a log, as a real one would: the failure's
message is its termination message and the last line of its log, served by the API server's pod
log endpoint (in process and through ``kaiten cluster``), and ``kaiten why`` shows it."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client as aclient

from kaiten import why
from localdev import infra
from localdev.kubeapi.cluster import DevCluster, serve_cluster
from localdev.kubeapi.simulate import Simulator
from shared.settings import Settings
from tests.support.polling import eventually

CRD_FILE = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "kaito.sh_workspaces.yaml"
MESSAGE = "Traceback (most recent call last):\nValueError: max_model_len 131072 is too large"
IMAGE = "ghcr.io/kaiten-dev/runtime-vllm:0.1.0"


def pod_body(
    name: str, *, restart_policy: str = "Always", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """A pod already bound to a node: the simulated kubelet starts it at once."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "nodeName": "node-1",
            "restartPolicy": restart_policy,
            "containers": [{"name": "server", "image": IMAGE}],
        },
    }


def running(cluster: DevCluster, name: str) -> Callable[[], dict[str, Any] | None]:
    def probe() -> dict[str, Any] | None:
        pod = cluster.store.get(("", "pods"), "default", name)
        return pod if pod and (pod.get("status") or {}).get("phase") == "Running" else None

    return probe


async def start_pod(
    cluster: DevCluster, api_client: aclient.ApiClient, body: dict[str, Any]
) -> None:
    await aclient.CoreV1Api(api_client).create_namespaced_pod("default", body)
    await eventually(running(cluster, body["metadata"]["name"]), what="a running pod")


def container_status(cluster: DevCluster, name: str) -> dict[str, Any]:
    pod = cluster.store.get(("", "pods"), "default", name) or {}
    statuses: list[dict[str, Any]] = pod["status"]["containerStatuses"]
    return statuses[0]


async def test_a_crash_loop_message_is_the_termination_message_and_the_log(
    cluster: DevCluster, simulator: Simulator, api_client: aclient.ApiClient
) -> None:
    cluster.server.pod_log = simulator.log_file
    await start_pod(cluster, api_client, pod_body("crasher"))
    await simulator.fail_pod("default", "crasher", "CrashLoopBackOff", MESSAGE)
    status = container_status(cluster, "crasher")
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["lastState"]["terminated"]["message"] == MESSAGE
    core = aclient.CoreV1Api(api_client)
    full = await core.read_namespaced_pod_log("crasher", "default", container="server")
    assert MESSAGE in full  # verbatim, after a start line
    assert full.splitlines()[0].endswith(f"simulated container server started ({IMAGE})")
    last = await core.read_namespaced_pod_log(
        "crasher", "default", container="server", tail_lines=1
    )
    assert last == "ValueError: max_model_len 131072 is too large\n"


async def test_a_pod_that_fails_outright_keeps_the_message_in_its_state(
    cluster: DevCluster, simulator: Simulator
) -> None:
    rt = cluster.api.types[("", "pods")]
    await cluster.api.create(rt, "v1", "default", pod_body("once", restart_policy="Never"))
    await eventually(running(cluster, "once"), what="a running pod")
    await simulator.fail_pod("default", "once", "OOMKilled", "CUDA out of memory")
    status = container_status(cluster, "once")
    assert status["state"]["terminated"]["reason"] == "OOMKilled"
    assert status["state"]["terminated"]["message"] == "CUDA out of memory"
    log = simulator.log_file("default", "once", None)  # the pod's only container
    assert log is not None
    assert log.read_text().endswith("CUDA out of memory\n")


async def test_without_a_message_the_log_says_how_it_ended_and_stop_removes_it(
    cluster: DevCluster, simulator: Simulator
) -> None:
    rt = cluster.api.types[("", "pods")]
    await cluster.api.create(rt, "v1", "default", pod_body("quiet"))
    await eventually(running(cluster, "quiet"), what="a running pod")
    assert simulator.log_file("default", "quiet", "server") is None  # nothing failed yet
    await simulator.fail_pod("default", "quiet", "Error")
    log = simulator.log_file("default", "quiet", "server")
    assert log is not None
    assert "exited with status 1" in log.read_text()
    assert simulator.log_file("default", "quiet", "other") is None
    await simulator.stop()
    assert not log.exists()


async def test_kaiten_cluster_serves_the_simulated_logs_over_http(tmp_path: Path) -> None:
    port = infra.free_port()
    kubeconfig = tmp_path / "kubeconfig"
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve_cluster(
            "127.0.0.1",
            port,
            kubeconfig,
            state_file=None,
            simulate=True,
            stop=stop,
            pods_dir=tmp_path / "pods",
        )
    )
    base = f"http://127.0.0.1:{port}"
    pods = f"{base}/api/v1/namespaces/default/pods"
    try:
        await eventually(kubeconfig.is_file, what="the kubeconfig")
        async with aiohttp.ClientSession() as http:
            async with http.post(pods, json=pod_body("web")) as created:
                assert created.status == 201, await created.text()

            async def is_running() -> bool:
                async with http.get(f"{pods}/web") as reply:
                    return bool(
                        ((await reply.json()).get("status") or {}).get("phase") == "Running"
                    )

            await eventually(is_running, what="a running pod")
            control = {"namespace": "default", "name": "web", "mode": "CrashLoopBackOff"}
            async with http.post(f"{base}/_kaiten/pods", json={**control, "message": MESSAGE}):
                pass
            url = f"{pods}/web/log?container=server&tailLines=2"
            async with http.get(url) as reply:
                assert reply.status == 200
                assert await reply.text() == f"{MESSAGE}\n"
    finally:
        stop.set()
        await task


# --- kaiten why against the development cluster ----------------------------------------------


@pytest.fixture
async def workspaces(
    cluster: DevCluster, api_client: aclient.ApiClient
) -> aclient.CustomObjectsApi:
    crd = yaml.safe_load(CRD_FILE.read_text())
    await aclient.ApiextensionsV1Api(api_client).create_custom_resource_definition(crd)
    custom = aclient.CustomObjectsApi(api_client)

    async def served() -> bool:
        try:
            await custom.list_namespaced_custom_object(
                "kaito.sh", "v1beta1", "default", "workspaces"
            )
        except aclient.ApiException:
            return False
        return True

    await eventually(served, what="the Workspace CRD served")
    return custom


def run_why(
    target: str, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch, output: str = "text"
) -> tuple[int, str, str]:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{infra.free_port()}/x")
    out, err = io.StringIO(), io.StringIO()
    code = why.main(target, output, Settings(), out, err)
    return code, out.getvalue(), err.getvalue()


async def test_kaiten_why_shows_a_simulated_crash_loop_with_its_log(
    cluster: DevCluster,
    simulator: Simulator,
    api_client: aclient.ApiClient,
    workspaces: aclient.CustomObjectsApi,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster.server.pod_log = simulator.log_file
    workspace = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "phi-3"},
        "resource": {
            "instanceType": "Standard_NC6s_v3",
            "labelSelector": {"matchLabels": {"apps": "phi-3"}},
        },
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }
    await workspaces.create_namespaced_custom_object(
        "kaito.sh", "v1beta1", "default", "workspaces", workspace
    )
    body = pod_body("phi-3-0", labels={"kaito.sh/workspace": "phi-3"})
    await start_pod(cluster, api_client, body)
    await simulator.fail_pod("default", "phi-3-0", "CrashLoopBackOff", MESSAGE)

    code, out, err = await asyncio.to_thread(
        run_why, "default/phi-3", cluster.write_kubeconfig(kubeconfig), monkeypatch
    )
    assert code == 1, err
    assert "default/phi-3 (generation 1): FAILED" in out
    assert (
        "container server of pod phi-3-0 is crash-looping (CrashLoopBackOff); "
        "last exit: Error, exit code 1"
    ) in out
    assert "  | ValueError: max_model_len 131072 is too large" in out
    assert "note: the audit log was not read" in out

    code, out, _ = await asyncio.to_thread(
        run_why, "default/phi-3", kubeconfig, monkeypatch, "json"
    )
    doc = json.loads(out)
    assert (code, doc["state"]) == (1, "failed")
    assert doc["findings"][0]["facts"]["container"] == "server"


async def test_kaiten_why_says_when_the_workspace_does_not_exist(
    workspaces: aclient.CustomObjectsApi, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = await asyncio.to_thread(run_why, "default/absent", kubeconfig, monkeypatch)
    assert (code, out) == (2, "")
    assert err.strip() == "error: workspace default/absent not found"
