"""From a plan to the inference objects of one Workspace (reference 2.5 and 2.6). Pure: data in,
manifests out; ``service.py`` applies them.

What is rendered, in apply order:
- the inference ConfigMap ``<ws>-inference-params`` with Kaito's default ``inference_config.yaml``
  (only when the Workspace names none: the user's ConfigMap, validated by the planner, is mounted
  as it is);
- the Service ``<ws>`` (ClusterIP, or LoadBalancer with ``kaito.sh/enablelb: "True"``; ports
  ``http`` 80->5000 and ``torch`` 29500) and the headless Service ``<ws>-headless``;
- the workload ``<ws>``: a StatefulSet when one model spans several nodes (vLLM with pipeline
  parallelism over Ray: pods need stable names), otherwise a Deployment with one full replica of
  the model per node. A template Workspace gets the user's pod template in a Deployment.

Every object carries the workspace labels and a controller ownerReference to the Workspace, so
the cluster's garbage collector removes it with the Workspace. The workload carries the revision
annotation; its pod template changes, and so the workload rolls, whenever an adapter is added,
removed or re-weighted.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

from presets.inference.vllm_launcher import DEFAULT_INFERENCE_CONFIG
from presets.layout import (
    ADAPTERS_DIR,
    CONFIG_DIR,
    HTTP_PORT,
    INFERENCE_CONFIG_KEY,
    RAY_PORT,
    TFS_WEIGHTS,
    TORCH_PORT,
    VLLM_WEIGHTS,
)
from shared.events import WorkspaceRef
from shared.labels import REVISION_ANNOTATION, WORKSPACE_LABEL
from shared.manifests import (
    SHM_DIR,
    SHM_VOLUME,
    TOLERATIONS,
    Manifest,
    Rendered,
    Target,
    docker_config_mount,
    docker_config_volume,
    gpu_resources,
    model_access_env,
    node_affinity,
    object_metadata,
    oci_pull_command,
    pod_local_name,
    weights_downloader,
    workspace_labels,
)
from shared.plan import AdapterPlan, Plan, Probe

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
SERVICE_PORT = 80
WEIGHTS_VOLUME = "model-weights-volume"
ADAPTERS_VOLUME = "adapter-volume"
CONFIG_VOLUME = "config-volume"


def render(target: Target) -> Rendered:
    plan = target.plan
    objects: list[Manifest] = []
    if plan.template is None and plan.inference_config is None:
        objects.append(default_config(target.ref))
    stateful = is_multi_node(plan)
    objects += [
        service(target.ref, plan, stateful=stateful),
        headless_service(target.ref),
        workload(target),
    ]
    return Rendered(tuple(objects))


def is_multi_node(plan: Plan) -> bool:
    """One model across several nodes: vLLM with pipeline parallelism over Ray."""
    return plan.template is None and plan.pipeline_parallel_size > 1


def workload_kind(plan: Plan) -> str:
    return "StatefulSet" if is_multi_node(plan) else "Deployment"


def config_name(ref: WorkspaceRef) -> str:
    return f"{ref.name}-inference-params"


def headless_name(ref: WorkspaceRef) -> str:
    return f"{ref.name}-headless"


# --- metadata --------------------------------------------------------------------------------


def selector(ref: WorkspaceRef) -> dict[str, str]:
    return {WORKSPACE_LABEL: ref.name}


# --- ConfigMap and Services ------------------------------------------------------------------


def default_config(ref: WorkspaceRef) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_metadata(ref, config_name(ref)),
        "data": {INFERENCE_CONFIG_KEY: DEFAULT_INFERENCE_CONFIG},
    }


def service(ref: WorkspaceRef, plan: Plan, *, stateful: bool) -> Manifest:
    pods = selector(ref)
    if stateful:  # the leader serves; workers only join its Ray cluster
        pods[POD_NAME_LABEL] = f"{ref.name}-0"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(ref, ref.name),
        "spec": {
            "type": "LoadBalancer" if plan.load_balancer else "ClusterIP",
            "selector": pods,
            "publishNotReadyAddresses": True,
            "ports": [
                _port("http", SERVICE_PORT, HTTP_PORT),
                _port("torch", TORCH_PORT, TORCH_PORT),
            ],
        },
    }


def headless_service(ref: WorkspaceRef) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(ref, headless_name(ref)),
        "spec": {
            "clusterIP": "None",
            "selector": selector(ref),
            "publishNotReadyAddresses": True,
            "ports": [_port("torch", TORCH_PORT, TORCH_PORT)],
        },
    }


def _port(name: str, port: int, target: int) -> Manifest:
    return {"name": name, "port": port, "targetPort": target, "protocol": "TCP"}


# --- workload --------------------------------------------------------------------------------


def workload(target: Target) -> Manifest:
    ref, plan = target.ref, target.plan
    pod = template_pod(target) if plan.template is not None else preset_pod(target)
    annotations = {REVISION_ANNOTATION: str(plan.revision)} if plan.revision is not None else {}
    spec: Manifest = {
        "replicas": plan.node_count,
        "selector": {"matchLabels": selector(ref)},
        "template": pod,
    }
    kind = workload_kind(plan)
    if kind == "StatefulSet":
        spec["serviceName"] = headless_name(ref)
        spec["podManagementPolicy"] = "Parallel"
    else:
        # One GPU node per replica: a surge pod would wait for a node that is not there.
        spec["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
        }
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": object_metadata(ref, ref.name, annotations=annotations),
        "spec": spec,
    }


def preset_pod(target: Target) -> Manifest:
    ref, plan = target.ref, target.plan
    weights_dir = VLLM_WEIGHTS if plan.runtime.name == "vllm" else TFS_WEIGHTS
    image = _required(plan.image, "image")
    mounts = [
        {"name": SHM_VOLUME, "mountPath": SHM_DIR},
        {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR},
        {"name": WEIGHTS_VOLUME, "mountPath": weights_dir},
    ]
    volumes: list[Manifest] = [
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}},
        {
            "name": CONFIG_VOLUME,
            "configMap": {"name": plan.inference_config or config_name(ref)},
        },
        {"name": WEIGHTS_VOLUME, "emptyDir": {}},
    ]
    init: list[Manifest] = []
    if plan.weights_image is not None:
        init.append(weights_downloader(plan.weights_image, image, WEIGHTS_VOLUME, weights_dir))
    adapters = _adapters(plan.adapters, image)
    init += adapters.init_containers
    mounts += adapters.mounts
    volumes += adapters.volumes
    multi_node = is_multi_node(plan)
    container: Manifest = {
        "name": ref.name,
        "image": image,
        "command": _multi_node_command(ref, plan) if multi_node else list(plan.command),
        "ports": [{"name": p.name, "containerPort": p.port, "protocol": "TCP"} for p in plan.ports]
        + ([{"name": "ray", "containerPort": RAY_PORT, "protocol": "TCP"}] if multi_node else []),
        "volumeMounts": mounts,
    }
    env = _env(plan, multi_node=multi_node)
    if env:  # the API server drops an empty list: rendering one would look like drift
        container["env"] = env
    resources = gpu_resources(plan)
    if resources is not None:
        container["resources"] = resources
    if plan.probes is not None:
        probes = plan.probes
        container["startupProbe"] = _probe(probes.startup, ref, plan, multi_node=multi_node)
        container["livenessProbe"] = _probe(probes.liveness, ref, plan, multi_node=multi_node)
        container["readinessProbe"] = _probe(probes.readiness, ref, plan, multi_node=multi_node)
    spec: Manifest = {
        "containers": [container],
        "volumes": volumes,
        "tolerations": [dict(t) for t in TOLERATIONS],
        "affinity": node_affinity(plan, target.nodes),
    }
    if init:
        spec["initContainers"] = init
    if adapters.pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in adapters.pull_secrets]
    return {"metadata": {"labels": workspace_labels(ref)}, "spec": spec}


def template_pod(target: Target) -> Manifest:
    """The user's pod template with Kaiten's labels, node affinity and tolerations added."""
    pod = copy.deepcopy(dict(target.plan.template or {}))
    meta = pod.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **workspace_labels(target.ref)}
    spec = pod.setdefault("spec", {})
    spec["affinity"] = {
        **(spec.get("affinity") or {}),
        **node_affinity(target.plan, target.nodes),
    }
    present = spec.get("tolerations") or []
    spec["tolerations"] = present + [dict(t) for t in TOLERATIONS if t not in present]
    return pod


def _env(plan: Plan, *, multi_node: bool) -> list[Manifest]:
    env: list[Manifest] = [{"name": k, "value": v} for k, v in sorted(plan.env.items())]
    env += model_access_env(plan)
    if multi_node:
        env.append(
            {
                "name": "POD_INDEX",
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}},
            }
        )
    return env


@dataclass(frozen=True, slots=True)
class _Adapters:
    init_containers: list[Manifest]
    mounts: list[Manifest]
    volumes: list[Manifest]
    pull_secrets: tuple[str, ...]


def _adapters(adapters: Sequence[AdapterPlan], image: str) -> _Adapters:
    """One puller init container per image adapter (into ``/mnt/adapter/<name>``), the user's
    volume for a volume adapter, and the registry secrets mounted as Docker config files."""
    if not adapters:
        return _Adapters([], [], [], ())
    init: list[Manifest] = []
    mounts: list[Manifest] = [{"name": ADAPTERS_VOLUME, "mountPath": ADAPTERS_DIR}]
    volumes: list[Manifest] = [{"name": ADAPTERS_VOLUME, "emptyDir": {}}]
    secrets = tuple(dict.fromkeys(s for a in adapters for s in a.image_pull_secrets))
    volumes += [docker_config_volume(name) for name in secrets]
    for adapter in adapters:
        path = f"{ADAPTERS_DIR}/{adapter.name}"
        if adapter.image is not None:
            command = oci_pull_command(adapter.image, path, adapter.image_pull_secrets)
            init.append(
                {
                    "name": pod_local_name("puller-", adapter.name),
                    "image": image,
                    "command": command,
                    "volumeMounts": [{"name": ADAPTERS_VOLUME, "mountPath": ADAPTERS_DIR}]
                    + [docker_config_mount(name) for name in adapter.image_pull_secrets],
                }
            )
        elif adapter.volume is not None:
            volume = pod_local_name("adapter-source-", adapter.name)
            volumes.append({"name": volume, **adapter.volume})
            mounts.append({"name": volume, "mountPath": path, "readOnly": True})
    return _Adapters(init, mounts, volumes, secrets)


def _probe(probe: Probe, ref: WorkspaceRef, plan: Plan, *, multi_node: bool) -> Manifest:
    timing = {
        "initialDelaySeconds": probe.initial_delay_s,
        "periodSeconds": probe.period_s,
        "timeoutSeconds": probe.timeout_s,
        "failureThreshold": probe.failure_threshold,
    }
    if multi_node:  # every pod asks the leader: workers serve no HTTP themselves
        url = f"http://{leader_host(ref)}:{probe.port}{probe.path}"
        command = ["python3", "-m", "presets.inference.multinode", "health", url]
        return {"exec": {"command": command}, **timing}
    return {"httpGet": {"path": probe.path, "port": probe.port}, **timing}


def leader_host(ref: WorkspaceRef) -> str:
    return f"{ref.name}-0.{headless_name(ref)}.{ref.namespace}.svc.cluster.local"


def _multi_node_command(ref: WorkspaceRef, plan: Plan) -> list[str]:
    """Pod 0 starts the Ray head and then vLLM over all nodes; the others join it."""
    return [
        "python3",
        "-m",
        "presets.inference.multinode",
        "run",
        "--pod-index-env",
        "POD_INDEX",
        "--leader",
        leader_host(ref),
        "--ray-port",
        str(RAY_PORT),
        "--nodes",
        str(plan.node_count),
        "--",
        *plan.command,
    ]


def _required(value: str | None, field: str) -> str:
    if value is None:
        raise ValueError(f"the plan has no {field}: a preset workload needs one")
    return value
