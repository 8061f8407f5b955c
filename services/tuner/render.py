"""From a tuning plan to the objects of one fine-tuning run (reference 5.4). Pure: data in,
manifests out; ``service.py`` applies them.

What is rendered, in apply order:
- the ConfigMap ``<ws>-tuning-params`` with the effective ``training_config.yaml`` the planner
  decided (Kaito's template for the method, merged with the user's ``tuning.config``), mounted
  at ``/mnt/config``: the run reads the configuration its plan was checked against;
- the Job ``<ws>`` (``backoffLimit: 0``: a failed run is reported with its cause rather than
  retried on the GPU), whose pod has
  - init containers: the model weights puller when the preset ships weights as an artifact, then
    the input: ``data-downloader`` (``presets.tuning.download``: retries, status and size checks,
    safe file names, the failing URL in the termination message) for ``urls``, ``data-puller``
    (``presets.oci pull`` of the image's ``/data``) for ``image``; a ``volumeSource`` is mounted
    at ``/mnt/data`` instead;
  - the trainer container, named after the workspace: the plan's command (``presets.tuning.cli``)
    with GPU resources, ``/dev/shm``, the config, the data and the results volume at the
    config's ``output_dir``, and its progress port;
  - for ``output.image`` the ``pusher`` container (``presets.tuning.pusher``): it waits for the
    trainer's completion marker and pushes the adapter with the ``imagePushSecret`` credentials
    (the pod shares its process namespace so the pusher can tell a trainer that died); for
    ``output.volumeSource`` the results directory is that volume and nothing is pushed.

Every object carries the workspace labels and a controller ownerReference to the Workspace; the
Job carries the revision annotation, and a Job of another revision is replaced (``service.py``):
Jobs are immutable, and a new dataset or output image means a new run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from presets.layout import CONFIG_DIR, DATA_DIR, HTTP_PORT, TFS_WEIGHTS, TRAINING_CONFIG_KEY
from shared.events import WorkspaceRef
from shared.labels import REVISION_ANNOTATION
from shared.manifests import (
    SHM_DIR,
    SHM_VOLUME,
    TERMINATION_POLICY,
    TOLERATIONS,
    Manifest,
    Rendered,
    Target,
    docker_config_file,
    docker_config_mount,
    docker_config_volume,
    gpu_resources,
    model_access_env,
    node_affinity,
    object_metadata,
    oci_pull_command,
    plain_http_flags,
    weights_downloader,
    workspace_labels,
)
from shared.plan import Plan, TuningPlan

CONFIG_VOLUME = "config-volume"
WEIGHTS_VOLUME = "model-weights-volume"
DATA_VOLUME = "data-volume"
RESULTS_VOLUME = "results-volume"
DOWNLOADER = "data-downloader"
PULLER = "data-puller"
PUSHER = "pusher"
TRAINER_MATCH = "presets.tuning.cli"  # how the pusher recognises the trainer's process


def render(target: Target) -> Rendered:
    tuning = tuning_of(target.plan)
    return Rendered((training_config(target.ref, tuning), job(target)))


def tuning_of(plan: Plan) -> TuningPlan:
    if plan.mode != "tuning" or plan.tuning is None:
        raise ValueError("the plan is not a tuning plan: the tuner renders only those")
    return plan.tuning


def config_name(ref: WorkspaceRef) -> str:
    return f"{ref.name}-tuning-params"


def training_config(ref: WorkspaceRef, tuning: TuningPlan) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_metadata(ref, config_name(ref)),
        "data": {TRAINING_CONFIG_KEY: tuning.config_yaml},
    }


def output_image(tuning: TuningPlan) -> str | None:
    image = tuning.output.get("image")
    return str(image) if image else None


def job(target: Target) -> Manifest:
    ref, plan = target.ref, target.plan
    annotations = {REVISION_ANNOTATION: str(plan.revision)} if plan.revision is not None else {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_metadata(ref, ref.name, annotations=annotations),
        "spec": {"backoffLimit": 0, "template": pod(target)},
    }


def pod(target: Target) -> Manifest:
    ref, plan = target.ref, target.plan
    tuning = tuning_of(plan)
    image = _required(plan.image, "image")
    volumes: list[Manifest] = [
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}},
        {"name": CONFIG_VOLUME, "configMap": {"name": config_name(ref)}},
        {"name": WEIGHTS_VOLUME, "emptyDir": {}},
        _source_volume(DATA_VOLUME, tuning.input.get("volumeSource")),
        _source_volume(RESULTS_VOLUME, tuning.output.get("volumeSource")),
    ]
    init: list[Manifest] = []
    if plan.weights_image is not None:
        init.append(weights_downloader(plan.weights_image, image, WEIGHTS_VOLUME, TFS_WEIGHTS))
    data_mount = {"name": DATA_VOLUME, "mountPath": DATA_DIR}
    secrets: list[str] = []
    urls = [str(u) for u in tuning.input.get("urls") or []]
    pull_secrets = [str(s) for s in tuning.input.get("imagePullSecrets") or []]
    if urls:
        init.append(_init(DOWNLOADER, image, download_command(urls), [data_mount]))
    elif tuning.input.get("image"):
        command = oci_pull_command(str(tuning.input["image"]), DATA_DIR, pull_secrets)
        mounts = [data_mount] + [docker_config_mount(s) for s in pull_secrets]
        init.append(_init(PULLER, image, command, mounts))
        secrets += pull_secrets
    containers = [trainer(target, image)]
    pushed = output_image(tuning)
    if pushed is not None:
        secret = str(tuning.output.get("imagePushSecret") or "")
        containers.append(pusher(plan, tuning, image, pushed, secret))
        secrets += [secret] if secret else []
    # One volume per Secret, even when it both pulls the data and pushes the adapter.
    volumes += [docker_config_volume(s) for s in dict.fromkeys(secrets)]
    spec: Manifest = {
        "restartPolicy": "Never",
        "containers": containers,
        "volumes": volumes,
        "tolerations": [dict(t) for t in TOLERATIONS],
    }
    affinity = node_affinity(plan, target.nodes)
    if affinity:
        spec["affinity"] = affinity
    if init:
        spec["initContainers"] = init
    if len(containers) > 1:  # the pusher watches the trainer's process
        spec["shareProcessNamespace"] = True
    return {"metadata": {"labels": workspace_labels(ref)}, "spec": spec}


def trainer(target: Target, image: str) -> Manifest:
    ref, plan = target.ref, target.plan
    tuning = tuning_of(plan)
    container: Manifest = {
        "name": ref.name,
        "image": image,
        "command": list(plan.command),
        "ports": [{"name": p.name, "containerPort": p.port, "protocol": "TCP"} for p in plan.ports]
        or [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "volumeMounts": [
            {"name": SHM_VOLUME, "mountPath": SHM_DIR},
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR},
            {"name": WEIGHTS_VOLUME, "mountPath": TFS_WEIGHTS},
            {"name": DATA_VOLUME, "mountPath": DATA_DIR},
            {"name": RESULTS_VOLUME, "mountPath": tuning.output_dir},
        ],
        "terminationMessagePolicy": TERMINATION_POLICY,
    }
    env = [{"name": k, "value": v} for k, v in sorted(plan.env.items())] + model_access_env(plan)
    if env:
        container["env"] = env
    resources = gpu_resources(plan)
    if resources is not None:
        container["resources"] = resources
    return container


def pusher(plan: Plan, tuning: TuningPlan, image: str, target: str, secret: str) -> Manifest:
    command = [
        "python3",
        "-m",
        "presets.tuning.pusher",
        "--results",
        tuning.output_dir,
        "--image",
        target,
        "--trainer-match",
        TRAINER_MATCH,
        *plain_http_flags(target),
    ]
    mounts: list[Manifest] = [
        {"name": RESULTS_VOLUME, "mountPath": tuning.output_dir, "readOnly": True}
    ]
    if secret:
        command += ["--docker-config", docker_config_file(secret)]
        mounts.append(docker_config_mount(secret))
    if plan.preset:
        command += ["--preset", plan.preset]
    return {
        "name": PUSHER,
        "image": image,
        "command": command,
        "volumeMounts": mounts,
        "terminationMessagePolicy": TERMINATION_POLICY,
    }


def download_command(urls: Sequence[str]) -> list[str]:
    return ["python3", "-m", "presets.tuning.download", "--dest", DATA_DIR, "--", *urls]


def _init(name: str, image: str, command: list[str], mounts: list[Manifest]) -> Manifest:
    return {
        "name": name,
        "image": image,
        "command": command,
        "volumeMounts": mounts,
        "terminationMessagePolicy": TERMINATION_POLICY,
    }


def _source_volume(name: str, source: Any) -> Manifest:
    """The user's volume source under ``name``, or an emptyDir when there is none."""
    if isinstance(source, Mapping) and source:
        return {"name": name, **source}
    return {"name": name, "emptyDir": {}}


def _required(value: str | None, field: str) -> str:
    if value is None:
        raise ValueError(f"the plan has no {field}: a tuning Job needs one")
    return value
