"""The simulated controllers and kubelet: nodes, workloads, jobs, and named pod failures."""

from __future__ import annotations

from typing import Any

import pytest

from localdev.kubeapi.cluster import DevCluster
from localdev.kubeapi.simulate import FAILURE_ANNOTATION, Simulator
from tests.support.polling import eventually


def pods_of(cluster: DevCluster, owner: str) -> list[dict[str, Any]]:
    return [
        p
        for p in cluster.store.list(("", "pods"), "default")
        if any(r["name"] == owner for r in p["metadata"].get("ownerReferences") or [])
    ]


def workload(
    kind: str,
    name: str,
    *,
    replicas: int = 1,
    gpus: int = 0,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "mcr.microsoft.com/kaito/phi-3:0.1"}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    template = {
        "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
        "spec": {
            "containers": [container],
            "tolerations": [
                {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
            ],
        },
    }
    body: dict[str, Any] = {"metadata": {"name": name}, "spec": {"template": template, **spec}}
    if kind != "Job":
        body["spec"].update(replicas=replicas, selector={"matchLabels": {"app": name}})
    else:
        template["spec"]["restartPolicy"] = "Never"
    return body


async def create(cluster: DevCluster, group: str, plural: str, body: dict[str, Any]) -> None:
    rt = cluster.api.types[(group, plural)]
    await cluster.api.create(rt, rt.storage_version, "default", body)


GPU_NODE = {
    "labels": {
        "node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4",
        "accelerator": "nvidia",
    },
    "gpus": 1,
    "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
}


async def test_a_node_registers_ready_with_gpu_capacity(
    cluster: DevCluster, simulator: Simulator
) -> None:
    node = await simulator.add_node("gpu-1", **GPU_NODE)
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert node["metadata"]["labels"]["accelerator"] == "nvidia"
    assert [c["type"] for c in node["status"]["conditions"] if c["status"] == "True"] == ["Ready"]


async def test_deployment_pods_become_ready_and_ready_replicas_follow(
    cluster: DevCluster, simulator: Simulator
) -> None:
    await simulator.add_node("gpu-1", **GPU_NODE)
    await simulator.add_node("gpu-2", **GPU_NODE)
    await create(
        cluster, "apps", "deployments", workload("Deployment", "infer", replicas=2, gpus=1)
    )

    def ready() -> bool:
        d = cluster.store.get(("apps", "deployments"), "default", "infer") or {}
        return (d.get("status") or {}).get("readyReplicas") == 2

    await eventually(ready, what="2 ready replicas")
    pods = pods_of(cluster, "infer")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["gpu-1", "gpu-2"]
    reasons = {e["reason"] for e in cluster.store.list(("", "events"), "default")}
    assert {"Scheduled", "Pulled", "Started"} <= reasons


async def test_statefulset_pods_have_ordinal_names(
    cluster: DevCluster, simulator: Simulator
) -> None:
    await simulator.add_node("cpu-1")
    await create(cluster, "apps", "statefulsets", workload("StatefulSet", "multi", replicas=2))
    await eventually(lambda: len(pods_of(cluster, "multi")) == 2)
    assert sorted(p["metadata"]["name"] for p in pods_of(cluster, "multi")) == [
        "multi-0",
        "multi-1",
    ]


async def test_a_pod_wanting_more_gpus_than_any_node_has_is_unschedulable(
    cluster: DevCluster, simulator: Simulator
) -> None:
    await simulator.add_node("gpu-1", **GPU_NODE)
    await create(cluster, "apps", "deployments", workload("Deployment", "big", gpus=4))

    def unschedulable() -> bool:
        pods = pods_of(cluster, "big")
        conditions = (pods[0].get("status") or {}).get("conditions") if pods else None
        return bool(conditions) and conditions[0]["reason"] == "Unschedulable"

    await eventually(unschedulable, what="an Unschedulable pod")
    message = pods_of(cluster, "big")[0]["status"]["conditions"][0]["message"]
    assert message == "0/1 nodes are available: Insufficient nvidia.com/gpu."


async def test_a_job_runs_to_completion(cluster: DevCluster, simulator: Simulator) -> None:
    await simulator.add_node("gpu-1", **GPU_NODE)
    await create(cluster, "batch", "jobs", workload("Job", "tune", gpus=1))

    def complete() -> bool:
        job = cluster.store.get(("batch", "jobs"), "default", "tune") or {}
        return any(
            c["type"] == "Complete" for c in (job.get("status") or {}).get("conditions") or []
        )

    await eventually(complete, what="the Job to complete")
    job = cluster.store.get(("batch", "jobs"), "default", "tune") or {}
    assert job["status"]["succeeded"] == 1
    assert pods_of(cluster, "tune")[0]["status"]["phase"] == "Succeeded"


async def test_a_failing_job_stops_at_its_backoff_limit(
    cluster: DevCluster, simulator: Simulator
) -> None:
    await simulator.add_node("cpu-1")
    body = workload("Job", "broken", annotations={FAILURE_ANNOTATION: "Error"}, backoffLimit=1)
    await create(cluster, "batch", "jobs", body)

    def failed() -> dict[str, Any] | None:
        job = cluster.store.get(("batch", "jobs"), "default", "broken") or {}
        return next(
            (c for c in (job.get("status") or {}).get("conditions") or [] if c["type"] == "Failed"),
            None,
        )

    condition = await eventually(failed, what="the Job to fail")
    assert condition["reason"] == "BackoffLimitExceeded"
    assert len(pods_of(cluster, "broken")) == 2


@pytest.mark.parametrize(
    ("mode", "expect"),
    [
        ("CrashLoopBackOff", ("waiting", "CrashLoopBackOff")),
        ("ImagePullBackOff", ("waiting", "ImagePullBackOff")),
        ("OOMKilled", ("lastState", "OOMKilled")),
    ],
)
async def test_pods_fail_in_named_ways_like_a_kubelet_reports_them(
    cluster: DevCluster, simulator: Simulator, mode: str, expect: tuple[str, str]
) -> None:
    await simulator.add_node("cpu-1")
    await create(
        cluster,
        "apps",
        "deployments",
        workload("Deployment", "bad", annotations={FAILURE_ANNOTATION: mode}),
    )

    def container_status() -> dict[str, Any] | None:
        pods = pods_of(cluster, "bad")
        statuses = (pods[0].get("status") or {}).get("containerStatuses") if pods else None
        return statuses[0] if statuses else None

    status = await eventually(container_status, what=f"a {mode} container status")
    where, reason = expect
    if where == "waiting":
        assert status["state"]["waiting"]["reason"] == reason
    else:
        assert status["lastState"]["terminated"]["reason"] == reason
    assert status["ready"] is False
    deployment = cluster.store.get(("apps", "deployments"), "default", "bad") or {}
    assert (deployment.get("status") or {}).get("readyReplicas", 0) == 0


async def test_a_running_pod_can_be_evicted_on_demand(
    cluster: DevCluster, simulator: Simulator
) -> None:
    await simulator.add_node("cpu-1")
    await create(cluster, "apps", "deployments", workload("Deployment", "web"))
    pod = await eventually(
        lambda: next(
            (
                p
                for p in pods_of(cluster, "web")
                if (p.get("status") or {}).get("phase") == "Running"
            ),
            None,
        ),
        what="a running pod",
    )
    await simulator.fail_pod("default", pod["metadata"]["name"], "Evicted")
    evicted = cluster.store.get(("", "pods"), "default", pod["metadata"]["name"]) or {}
    assert evicted["status"]["phase"] == "Failed"
    assert evicted["status"]["reason"] == "Evicted"
    events = [
        e
        for e in cluster.store.list(("", "events"), "default")
        if e["involvedObject"]["name"] == pod["metadata"]["name"]
    ]
    assert any(e["reason"] == "Evicted" and e["type"] == "Warning" for e in events)
