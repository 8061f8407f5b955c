"""The local pod runner: pods bound to a local-cpu node run as real processes, with their volumes
as folders, mount paths mapped, their own loopback IP, readiness from their probes, restarts and
termination messages as a kubelet reports them, logs, the pod proxy, and clean-up on delete."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from localdev.kubeapi.cluster import DevCluster
from localdev.kubeapi.localpods import INSTANCE_TYPE_LABEL, LocalPods
from localdev.kubeapi.simulate import SimOptions, Simulator
from presets.catalog import LOCAL_CPU
from tests.support.polling import eventually

# Serves GET / with the file argv[1], $GREETING and argv[3], on $KAITEN_HOST:argv[2].
SERVER = """
import http.server, os, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        parts = [open(sys.argv[1]).read(), os.environ.get("GREETING", ""), sys.argv[3]]
        body = "|".join(parts).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
print("serving on", os.environ["KAITEN_HOST"], flush=True)
http.server.HTTPServer((os.environ["KAITEN_HOST"], int(sys.argv[2])), Handler).serve_forever()
"""


@pytest.fixture
async def local(cluster: DevCluster, tmp_path: Path) -> AsyncIterator[LocalPods]:
    runner = LocalPods(
        cluster.api, tmp_path / "pods", probe_period_cap_s=0.1, backoff_cap_s=0.3, grace_cap_s=2
    )
    sim = Simulator(cluster.api, SimOptions(pod_ready_delay_s=0.05), local=runner)
    sim.start()
    cluster.server.pod_proxy = sim.pod_proxy
    cluster.server.pod_log = runner.log_file
    await sim.add_node("local-node", labels={INSTANCE_TYPE_LABEL: LOCAL_CPU})
    yield runner
    await sim.stop()


async def create(cluster: DevCluster, group: str, plural: str, body: dict[str, Any]) -> None:
    rt = cluster.api.types[(group, plural)]
    await cluster.api.create(rt, rt.storage_version, "default", body)


def pods_of(cluster: DevCluster, owner: str) -> list[dict[str, Any]]:
    return [
        p
        for p in cluster.store.list(("", "pods"), "default")
        if any(r["name"] == owner for r in p["metadata"].get("ownerReferences") or [])
    ]


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        return reply.status, await reply.text()


def server_deployment(name: str, replicas: int, configmap: str) -> dict[str, Any]:
    container = {
        "name": "server",
        "image": "ghcr.io/kaiten-dev/anything:1",
        "command": [
            "python3",
            "-c",
            SERVER,
            "/mnt/config/greeting.txt",
            "5000",
            "--out=/mnt/data/out",
        ],
        "ports": [{"name": "http", "containerPort": 5000}],
        "env": [
            {"name": "WHO", "value": "world"},
            {
                "name": "GREETING",
                "valueFrom": {"secretKeyRef": {"name": "greeting", "key": "word"}},
            },
        ],
        "volumeMounts": [
            {"name": "config", "mountPath": "/mnt/config"},
            {"name": "data", "mountPath": "/mnt/data"},
            {"name": "dshm", "mountPath": "/dev/shm"},  # noqa: S108 -- a pod path
        ],
        "readinessProbe": {"httpGet": {"path": "/", "port": 5000}, "periodSeconds": 10},
    }
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": configmap}},
                        {"name": "data", "emptyDir": {}},
                        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
                    ],
                },
            },
        },
    }


async def make_config(cluster: DevCluster, name: str) -> None:
    await create(
        cluster,
        "",
        "configmaps",
        {"metadata": {"name": name}, "data": {"greeting.txt": "output_dir: /mnt/data/out"}},
    )


async def make_secret(cluster: DevCluster) -> None:
    word = base64.b64encode(b"hola").decode()
    await create(cluster, "", "secrets", {"metadata": {"name": "greeting"}, "data": {"word": word}})


async def test_deployment_pods_run_as_processes_with_their_own_ips_and_mapped_mounts(
    cluster: DevCluster, local: LocalPods, tmp_path: Path
) -> None:
    await make_config(cluster, "greeting")
    await make_secret(cluster)
    await create(cluster, "apps", "deployments", server_deployment("web", 2, "greeting"))

    def both_ready() -> list[dict[str, Any]]:
        pods = pods_of(cluster, "web")
        return pods if len(pods) == 2 and all(map(ready, pods)) else []

    pods = await eventually(both_ready, timeout=30)
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 2, "each pod has its own address, so both listen on port 5000"
    assert all(ip.startswith("127.100.") for ip in ips)
    for pod in pods:
        name = pod["metadata"]["name"]
        status, body = await get(f"{cluster.url}/api/v1/namespaces/default/pods/{name}:5000/proxy/")
        assert status == 200
        text, greeting, flag = body.split("|")
        assert text == "output_dir: /mnt/data/out"  # the ConfigMap's file, as it is
        assert greeting == "hola"  # the Secret's key, through valueFrom
        # A path on the command line is mapped to this pod's data folder.
        assert flag.startswith("--out=" + str(tmp_path / "pods" / "default"))
        assert flag.endswith("/volumes/data/out")
        status, log = await get(f"{cluster.url}/api/v1/namespaces/default/pods/{name}/log")
        assert status == 200
        assert f"serving on {pod['status']['podIP']}" in log
    deployment = cluster.store.get(("apps", "deployments"), "default", "web")
    assert deployment is not None
    await eventually(
        lambda: (
            (cluster.store.get(("apps", "deployments"), "default", "web") or {})
            .get("status", {})
            .get("readyReplicas")
            == 2
        ),
        timeout=10,
    )

    # Deleting the Deployment stops the processes and removes the pods' folders.
    rt = cluster.api.types[("apps", "deployments")]
    await cluster.api.delete(rt, "v1", "default", "web")
    await eventually(lambda: not pods_of(cluster, "web"), timeout=10)
    pods_root = tmp_path / "pods" / "default"
    await eventually(lambda: not any(pods_root.iterdir()), timeout=10)
    for ip in ips:
        with pytest.raises(aiohttp.ClientError):
            await get(f"http://{ip}:5000/")


async def test_a_pod_waits_for_its_configmap_then_runs(
    cluster: DevCluster, local: LocalPods
) -> None:
    await make_secret(cluster)
    await create(cluster, "apps", "deployments", server_deployment("late", 1, "late-config"))

    def mount_event() -> dict[str, Any] | None:
        return next(
            (
                e
                for e in cluster.store.list(("", "events"), "default")
                if e["reason"] == "FailedMount"
            ),
            None,
        )

    event = await eventually(mount_event, timeout=10)
    assert 'configmap "late-config" not found' in event["message"]
    assert not any(map(ready, pods_of(cluster, "late")))
    await make_config(cluster, "late-config")
    await eventually(lambda: any(map(ready, pods_of(cluster, "late"))), timeout=30)


def job(name: str, init: list[str], main: list[str]) -> dict[str, Any]:
    mount = [{"name": "data", "mountPath": "/mnt/data"}]
    return {
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "initContainers": [
                        {"name": "prepare", "image": "x", "command": init, "volumeMounts": mount}
                    ],
                    "containers": [
                        {
                            "name": "work",
                            "image": "x",
                            "command": main,
                            "volumeMounts": mount,
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                        }
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                }
            },
        },
    }


def job_condition(cluster: DevCluster, name: str) -> str | None:
    found = cluster.store.get(("batch", "jobs"), "default", name) or {}
    for condition in (found.get("status") or {}).get("conditions") or []:
        if condition["status"] == "True":
            return str(condition["type"])
    return None


async def test_a_job_runs_its_init_container_then_completes(
    cluster: DevCluster, local: LocalPods
) -> None:
    write = ["python3", "-c", "open('/mnt/data/answer', 'w').write('42')"]
    check = [
        "python3",
        "-c",
        "import sys; sys.exit(0 if open('/mnt/data/answer').read() == '42' else 5)",
    ]
    await create(cluster, "batch", "jobs", job("fine", write, check))
    assert await eventually(lambda: job_condition(cluster, "fine"), timeout=30) == "Complete"
    pod = pods_of(cluster, "fine")[0]
    assert pod["status"]["phase"] == "Succeeded"
    init = pod["status"]["initContainerStatuses"][0]["state"]["terminated"]
    assert init["exitCode"] == 0
    assert init["reason"] == "Completed"


async def test_a_failing_container_reports_its_termination_message(
    cluster: DevCluster, local: LocalPods
) -> None:
    ok = ["python3", "-c", "pass"]
    message = [
        "python3",
        "-c",
        "import os, sys; open(os.environ['KAITEN_TERMINATION_LOG'], 'w').write('no data'); "
        "sys.exit(3)",
    ]
    traceback = ["python3", "-c", "raise RuntimeError('CUDA out of memory')"]
    await create(cluster, "batch", "jobs", job("told", ok, message))
    await create(cluster, "batch", "jobs", job("crashed", ok, traceback))
    for name, code, text in (("told", 3, "no data"), ("crashed", 1, "CUDA out of memory")):
        assert await eventually(partial(job_condition, cluster, name), timeout=30) == "Failed"
        pod = pods_of(cluster, name)[0]
        assert pod["status"]["phase"] == "Failed"
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == code
        assert terminated["reason"] == "Error"
        assert text in terminated["message"]


async def test_a_crashing_deployment_pod_backs_off_and_restarts(
    cluster: DevCluster, local: LocalPods
) -> None:
    body = server_deployment("crash", 1, "none")
    spec = body["spec"]["template"]["spec"]
    spec["volumes"] = []
    container = spec["containers"][0]
    container.pop("env")
    container["volumeMounts"] = []
    container["command"] = ["python3", "-c", "import sys; print('bad config'); sys.exit(2)"]
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    await create(cluster, "apps", "deployments", body)

    def backing_off() -> dict[str, Any] | None:
        for pod in pods_of(cluster, "crash"):
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                if status["restartCount"] >= 2 and "waiting" in status["state"]:
                    return dict(status)
        return None

    status = await eventually(backing_off, timeout=30)
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["lastState"]["terminated"]["exitCode"] == 2
    assert "bad config" in status["lastState"]["terminated"]["message"]
    assert not any(map(ready, pods_of(cluster, "crash")))
