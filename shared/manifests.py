"""Pieces every Kaiten-rendered Kubernetes object shares (pure, data in and out): the
Workspace's ownerReference and labels, object metadata, node affinity to the nodes the
provisioner chose, GPU tolerations and resources, Docker-config Secret volumes for
``presets.oci``, and valid names for containers and volumes. The deployer's and the tuner's
``render.py`` build on them."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from presets.layout import BUILTIN_REGISTRY
from shared.events import WorkspaceRef
from shared.labels import WORKSPACE_LABEL, WORKSPACE_NAMESPACE_LABEL
from shared.plan import Plan
from shared.workspace.models import GROUP, STORAGE_VERSION

Manifest = dict[str, Any]

GPU_RESOURCE = "nvidia.com/gpu"
HOSTNAME_LABEL = "kubernetes.io/hostname"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kaiten"}
SHM_DIR = "/dev/shm"  # noqa: S108 -- a mount point in the pod, not a temporary file
SHM_VOLUME = "dshm"
SECRETS_DIR = "/mnt/secrets"
DOCKER_CONFIG_KEY = ".dockerconfigjson"
# The kubelet shows the termination-log file, or the log's last lines when a container failed
# without writing one: a puller's or trainer's own error reaches the Workspace's status.
TERMINATION_POLICY = "FallbackToLogsOnError"
TOLERATIONS: tuple[Manifest, ...] = (
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
)


@dataclass(frozen=True, slots=True)
class Target:
    """What a workload service renders from: the workspace, its plan and the nodes it got."""

    ref: WorkspaceRef
    plan: Plan
    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rendered:
    """A workspace's objects in apply order; the workload (Deployment, StatefulSet or Job) is
    last."""

    objects: tuple[Manifest, ...]

    @property
    def workload(self) -> Manifest:
        return self.objects[-1]


def owner_reference(ref: WorkspaceRef) -> Manifest:
    return {
        "apiVersion": f"{GROUP}/{STORAGE_VERSION}",
        "kind": "Workspace",
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def workspace_labels(ref: WorkspaceRef) -> dict[str, str]:
    return {WORKSPACE_LABEL: ref.name, WORKSPACE_NAMESPACE_LABEL: ref.namespace}


def object_metadata(ref: WorkspaceRef, name: str, **extra: Any) -> Manifest:
    meta: Manifest = {
        "name": name,
        "namespace": ref.namespace,
        "labels": {**workspace_labels(ref), **MANAGED_BY},
        "ownerReferences": [owner_reference(ref)],
    }
    meta.update(extra)
    return meta


def node_affinity(plan: Plan, nodes: Sequence[str]) -> Manifest:
    """Required: the workspace's selector labels, and one of the nodes the provisioner chose."""
    expressions = [
        {"key": key, "operator": "In", "values": [value]}
        for key, value in sorted(plan.nodes.label_selector.items())
    ]
    if nodes:
        expressions.append({"key": HOSTNAME_LABEL, "operator": "In", "values": sorted(nodes)})
    if not expressions:
        return {}
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": expressions}]
            }
        }
    }


def secret_volume_name(secret: str) -> str:
    return pod_local_name("secret-", secret)


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_LABEL = 63


def pod_local_name(prefix: str, name: str) -> str:
    """A container or volume name (a DNS-1123 label) for ``prefix + name``: as is when valid,
    otherwise cleaned and suffixed with a hash of ``name``, so that adapters named ``a.b`` and
    ``a-b``, or two long secrets, never share one."""
    raw = prefix + name
    if _DNS_LABEL.fullmatch(raw) and len(raw) <= _MAX_LABEL:
        return raw
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    clean = re.sub(r"[^a-z0-9-]+", "-", raw.lower())[: _MAX_LABEL - len(digest) - 1].strip("-")
    return f"{clean}-{digest}"


def manifest_key(obj: Mapping[str, Any]) -> str:
    """``Kind/name``, as CleanupDone and logs name objects."""
    return f"{obj['kind']}/{obj['metadata']['name']}"


def docker_config_volume(secret: str) -> Manifest:
    """A pod volume holding ``secret``'s Docker config (a kubernetes.io/dockerconfigjson Secret)
    as ``config.json``, for ``python3 -m presets.oci --docker-config``."""
    return {
        "name": secret_volume_name(secret),
        "secret": {
            "secretName": secret,
            "items": [{"key": DOCKER_CONFIG_KEY, "path": "config.json"}],
        },
    }


def docker_config_mount(secret: str) -> Manifest:
    return {
        "name": secret_volume_name(secret),
        "mountPath": f"{SECRETS_DIR}/{secret}",
        "readOnly": True,
    }


def docker_config_file(secret: str) -> str:
    """Where ``docker_config_mount`` puts ``secret``'s Docker config."""
    return f"{SECRETS_DIR}/{secret}/config.json"


def gpu_resources(plan: Plan) -> Manifest | None:
    """The container resources asking for the node's GPUs, or None (no GPU known to Kaiten)."""
    gpus = plan.gpus_per_node
    if not gpus or plan.gpu is None or plan.gpu.vendor != "nvidia":
        return None
    return {"requests": {GPU_RESOURCE: str(gpus)}, "limits": {GPU_RESOURCE: str(gpus)}}


def model_access_env(plan: Plan) -> list[Manifest]:
    """``HF_TOKEN`` from the preset's model access Secret, when it names one."""
    if not plan.model_access_secret:
        return []
    return [
        {
            "name": "HF_TOKEN",
            "valueFrom": {
                "secretKeyRef": {
                    "name": plan.model_access_secret,
                    "key": "HF_TOKEN",
                    "optional": True,
                }
            },
        }
    ]


def plain_http_flags(image: str) -> list[str]:
    """``["--insecure"]`` for an image on a registry of the node itself (localhost, 127.0.0.0/8,
    ::1, any port): such registries speak plain http, as Docker and containerd allow for local
    registries without configuration; ``[]`` for every other registry (https)."""
    registry = image.split("/", 1)[0] if "/" in image else ""
    host = registry[1:].split("]", 1)[0] if registry.startswith("[") else registry.split(":")[0]
    if host == "localhost":
        return ["--insecure"]
    try:
        return ["--insecure"] if ipaddress.ip_address(host).is_loopback else []
    except ValueError:
        return []


def oci_pull_command(image: str, dest: str, pull_secrets: Sequence[str] = ()) -> list[str]:
    """The argv that pulls ``image``'s files into ``dest`` with the pull secrets' Docker
    configs (mounted by ``docker_config_mount``)."""
    command = ["python3", "-m", "presets.oci", "pull", image, dest, *plain_http_flags(image)]
    for name in pull_secrets:
        command += ["--docker-config", docker_config_file(name)]
    return command


def weights_downloader(weights_image: str, image: str, volume: str, weights_dir: str) -> Manifest:
    """The init container that pulls the model's weights artifact into ``weights_dir`` (a model
    on the builtin pseudo-registry is built, or copied from the node's local model store)."""
    if weights_image.split("/", 1)[0] == BUILTIN_REGISTRY:
        command = ["python3", "-m", "presets.tiny", weights_dir, "--store"]
    else:
        command = oci_pull_command(weights_image, weights_dir)
    return {
        "name": "model-weights-downloader",
        "image": image,
        "command": command,
        "volumeMounts": [{"name": volume, "mountPath": weights_dir}],
        "terminationMessagePolicy": TERMINATION_POLICY,
    }
