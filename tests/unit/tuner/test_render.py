"""``services.tuner.render``: from a real tuning plan to the ConfigMap and the Job of one run.

The seed Workspaces are compared whole with golden files (``tests/fixtures/tuner``; set
``KAITEN_UPDATE_GOLDEN=1`` to rewrite them). Everything else is asserted field by field over the
named cases of ``cases.py``: metadata and ownership, the Job's retry and restart policy, the
input (downloader, puller and its secrets, the user's volume), the output (pusher and its secret,
or the user's volume at ``output_dir``), the trainer (command, GPUs, mounts, port, scheduling),
the weights artifact, and refusal of a plan that is not a tuning plan."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from presets.layout import CONFIG_DIR, DATA_DIR, HTTP_PORT, TFS_WEIGHTS, TRAINING_CONFIG_KEY
from services.tuner.render import (
    CONFIG_VOLUME,
    DATA_VOLUME,
    DOWNLOADER,
    PULLER,
    PUSHER,
    RESULTS_VOLUME,
    TRAINER_MATCH,
    WEIGHTS_VOLUME,
    config_name,
    download_command,
    job,
    pod,
    render,
    trainer,
)
from shared.labels import REVISION_ANNOTATION, WORKSPACE_LABEL, WORKSPACE_NAMESPACE_LABEL
from shared.manifests import HOSTNAME_LABEL, Manifest, Target
from shared.plan import Plan
from tests.unit.planner.workspaces import expect_plan, inference, training_config, tuning
from tests.unit.planner.workspaces import plan as plan_or_rejection
from tests.unit.tuner.cases import (
    CASE_NAMES,
    DATA_IMAGE,
    DATA_PVC,
    MODEL_ACCESS_SECRET,
    NAMESPACE,
    NODE,
    OUTPUT_IMAGE,
    PULL_SECRETS,
    PUSH_SECRET,
    RESULTS_PVC,
    REVISION,
    SEED_CASES,
    SEED_OUTPUT_IMAGE,
    SEED_PUSH_SECRET,
    SEED_URL,
    UID,
    URLS,
    USER_OUTPUT_DIR,
    Case,
    as_observed,
    case,
    cases_where,
    object_id,
    plan_for,
    ref_for,
    rendered,
    target_for,
    with_data,
)

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "tuner"
GOLDEN_CASES = tuple(c.name for c in SEED_CASES)
UPDATE_GOLDEN = "KAITEN_UPDATE_GOLDEN"
SHM_DIR = "/dev/shm"  # noqa: S108 -- a mount point in the pod
WEIGHTS_DOWNLOADER = "model-weights-downloader"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
KAITEN_TOLERATIONS = [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
]
GPUS: dict[str, str | None] = {name: "1" for name in CASE_NAMES}
GPUS.update({"two-gpus": "2", "unknown-instance-type": None})

URL_CASES = cases_where(source="urls")
IMAGE_INPUT_CASES = cases_where(source="image")
VOLUME_INPUT_CASES = cases_where(source="volumeSource")
IMAGE_OUTPUT_CASES = cases_where(destination="image")
VOLUME_OUTPUT_CASES = cases_where(destination="volumeSource")


# --- helpers -----------------------------------------------------------------------------------


def ws_name(c: Case) -> str:
    name: str = c.workspace["metadata"]["name"]
    return name


def the_job(c: Case) -> Manifest:
    return rendered(c).workload


def the_configmap(c: Case) -> Manifest:
    configmap: Manifest = rendered(c).objects[0]
    return configmap


def pod_spec(c: Case) -> Manifest:
    spec: Manifest = the_job(c)["spec"]["template"]["spec"]
    return spec


def by_name(items: list[Manifest]) -> dict[str, Manifest]:
    return {item["name"]: item for item in items}


def containers(c: Case) -> dict[str, Manifest]:
    return by_name(pod_spec(c)["containers"])


def init_containers(c: Case) -> dict[str, Manifest]:
    return by_name(pod_spec(c).get("initContainers", []))


def the_trainer(c: Case) -> Manifest:
    return containers(c)[ws_name(c)]


def the_pusher(c: Case) -> Manifest:
    return containers(c)[PUSHER]


def volumes(c: Case) -> dict[str, Manifest]:
    return by_name(pod_spec(c)["volumes"])


def mounts(container: Manifest) -> dict[str, str]:
    """mountPath -> volume name."""
    return {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}


def mount(container: Manifest, volume: str) -> Manifest:
    found: list[Manifest] = [m for m in container.get("volumeMounts", []) if m["name"] == volume]
    assert len(found) == 1, f"{container['name']} mounts {volume} {len(found)} times"
    return found[0]


def flag_values(command: list[str], flag: str) -> list[str]:
    """Every value given after ``flag`` in ``command``."""
    return [command[i + 1] for i, arg in enumerate(command[:-1]) if arg == flag]


def flag_value(command: list[str], flag: str) -> str:
    (value,) = flag_values(command, flag)
    return value


def output_dir(c: Case) -> str:
    tuning_plan = plan_for(c).tuning
    assert tuning_plan is not None
    return tuning_plan.output_dir


def secret_volume_for(c: Case, secret: str) -> tuple[str, Manifest]:
    """The volume holding ``secret``: (its name, its ``secret`` source)."""
    found = [
        (name, v["secret"])
        for name, v in volumes(c).items()
        if "secret" in v and v["secret"]["secretName"] == secret
    ]
    assert len(found) == 1, f"{c.name}: expected one volume for Secret {secret}, got {found}"
    return found[0]


# --- golden files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GOLDEN_CASES, ids=GOLDEN_CASES)
def test_a_seed_renders_as_its_golden_file(name: str) -> None:
    objects = list(rendered(case(name)).objects)
    path = GOLDEN_DIR / f"{name}.yaml"
    if os.environ.get(UPDATE_GOLDEN) == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        return
    assert path.is_file(), (
        f"{path} is missing: create it with `{UPDATE_GOLDEN}=1 .venv/bin/pytest "
        f"tests/unit/tuner/test_render.py -k golden` and review it"
    )
    expected = list(yaml.safe_load_all(path.read_text()))
    how = f"if the change is intended, rewrite {path} with {UPDATE_GOLDEN}=1 and review the diff"
    assert [object_id(o) for o in objects] == [object_id(o) for o in expected], how
    for got, want in zip(objects, expected, strict=True):
        assert got == want, f"{name}: {object_id(got)} differs from the golden file; {how}"


def test_the_golden_files_are_the_seeds_as_kaito_lays_them_out() -> None:
    """Read back, the golden file says what reference 5.4 says, not merely what render said."""
    (configmap, job_obj) = yaml.safe_load_all((GOLDEN_DIR / "seed-tuning-phi-3.yaml").read_text())
    assert object_id(configmap) == "ConfigMap/workspace-tuning-phi-3-tuning-params"
    assert object_id(job_obj) == "Job/workspace-tuning-phi-3"
    assert job_obj["apiVersion"] == "batch/v1"
    spec = job_obj["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["workspace-tuning-phi-3", PUSHER]
    assert [c["name"] for c in spec["initContainers"]] == [WEIGHTS_DOWNLOADER, DOWNLOADER]
    assert spec["initContainers"][1]["command"][-2:] == ["--", SEED_URL]
    pusher_command = spec["containers"][1]["command"]
    assert flag_value(pusher_command, "--image") == SEED_OUTPUT_IMAGE
    assert flag_value(pusher_command, "--docker-config") == (
        f"/mnt/secrets/{SEED_PUSH_SECRET}/config.json"
    )
    assert spec["containers"][0]["ports"] == [
        {"name": "http", "containerPort": 5000, "protocol": "TCP"}
    ]


# --- objects and metadata ----------------------------------------------------------------------


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_the_configmap_comes_first_and_the_job_last(name: str) -> None:
    c = case(name)
    result = rendered(c)
    objects = result.objects
    assert [object_id(o) for o in objects] == [
        f"ConfigMap/{ws_name(c)}-tuning-params",
        f"Job/{ws_name(c)}",
    ]
    assert result.workload is objects[-1]
    assert objects[0]["apiVersion"] == "v1"
    assert objects[1]["apiVersion"] == "batch/v1"


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_every_object_is_labelled_and_owned_by_the_workspace(name: str) -> None:
    c = case(name)
    for obj in rendered(c).objects:
        meta = obj["metadata"]
        assert meta["namespace"] == NAMESPACE
        assert meta["labels"] == {
            WORKSPACE_LABEL: ws_name(c),
            WORKSPACE_NAMESPACE_LABEL: NAMESPACE,
            "app.kubernetes.io/managed-by": "kaiten",
        }
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "kaito.sh/v1beta1",
                "kind": "Workspace",
                "name": ws_name(c),
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_the_job_is_named_after_the_workspace_and_carries_its_revision(name: str) -> None:
    c = case(name)
    meta = the_job(c)["metadata"]
    assert meta["name"] == ws_name(c)
    expected = REVISION if name == "revised" else "1"
    assert meta["annotations"] == {REVISION_ANNOTATION: expected}


def test_a_plan_without_a_revision_gives_a_job_without_the_annotation() -> None:
    c = case("seed-tuning-phi-3")
    plan = plan_for(c).model_copy(update={"revision": None})
    meta = job(target_for(c, plan))["metadata"]
    assert REVISION_ANNOTATION not in meta.get("annotations", {})


def test_the_revision_is_the_workspaces_annotation() -> None:
    assert plan_for(case("revised")).revision == int(REVISION)
    assert the_job(case("revised"))["metadata"]["annotations"][REVISION_ANNOTATION] == REVISION


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_the_configmap_holds_the_planned_training_config(name: str) -> None:
    c = case(name)
    tuning_plan = plan_for(c).tuning
    assert tuning_plan is not None
    configmap = the_configmap(c)
    assert configmap["metadata"]["name"] == config_name(ref_for(c.workspace))
    assert configmap["data"] == {TRAINING_CONFIG_KEY: tuning_plan.config_yaml}
    assert configmap["data"]["training_config.yaml"] == tuning_plan.config_yaml


def test_the_user_config_moves_the_output_dir() -> None:
    configmap = the_configmap(case("output-dir-to-image"))
    sections = yaml.safe_load(configmap["data"][TRAINING_CONFIG_KEY])["training_config"]
    assert sections["TrainingArguments"]["output_dir"] == USER_OUTPUT_DIR
    assert output_dir(case("output-dir-to-image")) == USER_OUTPUT_DIR


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_a_failed_run_is_not_retried_nor_restarted(name: str) -> None:
    c = case(name)
    spec = the_job(c)["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_the_pod_carries_the_workspace_labels(name: str) -> None:
    c = case(name)
    labels = the_job(c)["spec"]["template"]["metadata"]["labels"]
    assert labels[WORKSPACE_LABEL] == ws_name(c)
    assert labels[WORKSPACE_NAMESPACE_LABEL] == NAMESPACE


# --- the pod's consistency ---------------------------------------------------------------------


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_names_are_unique_valid_and_every_mount_has_its_volume(name: str) -> None:
    c = case(name)
    spec = pod_spec(c)
    all_containers = spec["containers"] + spec.get("initContainers", [])
    names = [x["name"] for x in all_containers]
    assert len(names) == len(set(names)), names
    volume_names = [v["name"] for v in spec["volumes"]]
    assert len(volume_names) == len(set(volume_names)), volume_names
    for item in names + volume_names:
        assert DNS_LABEL.fullmatch(item), f"{item!r} is not a DNS-1123 label"
        assert len(item) <= 63
    for container in all_containers:
        paths = [m["mountPath"] for m in container.get("volumeMounts", [])]
        assert len(paths) == len(set(paths)), f"{container['name']}: {paths}"
        for m in container.get("volumeMounts", []):
            assert m["name"] in volume_names, f"{container['name']} mounts unknown {m['name']}"


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_every_volume_is_used(name: str) -> None:
    c = case(name)
    spec = pod_spec(c)
    used = {
        m["name"]
        for x in spec["containers"] + spec.get("initContainers", [])
        for m in x.get("volumeMounts", [])
    }
    assert set(volumes(c)) == used


# --- input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [c.name for c in SEED_CASES])
def test_the_downloader_gets_exactly_the_seed_url_after_the_separator(name: str) -> None:
    downloader = init_containers(case(name))[DOWNLOADER]
    command = downloader["command"]
    assert command == [
        "python3",
        "-m",
        "presets.tuning.download",
        "--dest",
        DATA_DIR,
        "--",
        SEED_URL,
    ]
    assert command[command.index("--") + 1 :] == [SEED_URL]
    assert "?download=true" in command[-1]


@pytest.mark.parametrize("name", URL_CASES, ids=URL_CASES)
def test_urls_are_downloaded_into_the_data_volume(name: str) -> None:
    c = case(name)
    init = init_containers(c)
    assert PULLER not in init
    downloader = init[DOWNLOADER]
    urls = [str(u) for u in c.workspace["tuning"]["input"]["urls"]]
    assert downloader["command"] == download_command(urls)
    assert downloader["command"][downloader["command"].index("--") + 1 :] == urls
    assert downloader["image"] == plan_for(c).image
    assert mounts(downloader) == {DATA_DIR: DATA_VOLUME}
    assert downloader["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert volumes(c)[DATA_VOLUME] == {"name": DATA_VOLUME, "emptyDir": {}}


def test_several_urls_keep_their_order() -> None:
    command = init_containers(case("urls-to-image"))[DOWNLOADER]["command"]
    assert command[-len(URLS) - 1 :] == ["--", *URLS]


def test_download_command_puts_every_url_after_the_separator() -> None:
    odd = "https://example.com/--dest?x=1&y=2"
    assert download_command([odd, "https://example.com/b"]) == [
        "python3",
        "-m",
        "presets.tuning.download",
        "--dest",
        DATA_DIR,
        "--",
        odd,
        "https://example.com/b",
    ]


@pytest.mark.parametrize("name", IMAGE_INPUT_CASES, ids=IMAGE_INPUT_CASES)
def test_an_image_input_is_pulled_by_the_data_puller(name: str) -> None:
    c = case(name)
    init = init_containers(c)
    assert DOWNLOADER not in init
    puller = init[PULLER]
    secrets = [str(s) for s in c.workspace["tuning"]["input"].get("imagePullSecrets", [])]
    command = puller["command"]
    assert command[:6] == ["python3", "-m", "presets.oci", "pull", DATA_IMAGE, DATA_DIR]
    assert flag_values(command, "--docker-config") == [
        f"/mnt/secrets/{s}/config.json" for s in secrets
    ]
    assert puller["image"] == plan_for(c).image
    assert mounts(puller)[DATA_DIR] == DATA_VOLUME
    assert puller["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert volumes(c)[DATA_VOLUME] == {"name": DATA_VOLUME, "emptyDir": {}}
    for secret in secrets:
        volume_name, source = secret_volume_for(c, secret)
        assert source == {
            "secretName": secret,
            "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
        }
        assert mount(puller, volume_name) == {
            "name": volume_name,
            "mountPath": f"/mnt/secrets/{secret}",
            "readOnly": True,
        }


def test_a_public_image_input_needs_no_secret() -> None:
    c = case("public-image-to-volume")
    puller = init_containers(c)[PULLER]
    assert "--docker-config" not in puller["command"]
    assert mounts(puller) == {DATA_DIR: DATA_VOLUME}
    assert not [v for v in volumes(c).values() if "secret" in v]


def test_each_pull_secret_gets_its_own_volume() -> None:
    c = case("image-to-volume")
    secret_volumes = [v for v in volumes(c).values() if "secret" in v]
    assert sorted(v["secret"]["secretName"] for v in secret_volumes) == sorted(PULL_SECRETS)


@pytest.mark.parametrize("name", VOLUME_INPUT_CASES, ids=VOLUME_INPUT_CASES)
def test_a_volume_input_is_the_users_volume_at_mnt_data(name: str) -> None:
    c = case(name)
    init = init_containers(c)
    assert DOWNLOADER not in init
    assert PULLER not in init
    assert list(init) == [WEIGHTS_DOWNLOADER]
    assert volumes(c)[DATA_VOLUME] == {"name": DATA_VOLUME, **DATA_PVC}
    assert mounts(the_trainer(c))[DATA_DIR] == DATA_VOLUME


# --- output --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGE_OUTPUT_CASES, ids=IMAGE_OUTPUT_CASES)
def test_an_image_output_is_pushed_by_the_pusher(name: str) -> None:
    c = case(name)
    plan = plan_for(c)
    out = c.workspace["tuning"]["output"]
    image, secret, results = out["image"], out["imagePushSecret"], output_dir(c)
    assert list(containers(c)) == [ws_name(c), PUSHER]
    pusher = the_pusher(c)
    command = pusher["command"]
    assert command[:3] == ["python3", "-m", "presets.tuning.pusher"]
    assert flag_value(command, "--image") == image
    assert flag_value(command, "--docker-config") == f"/mnt/secrets/{secret}/config.json"
    assert flag_value(command, "--results") == results
    assert flag_value(command, "--preset") == plan.preset
    assert flag_value(command, "--trainer-match") == TRAINER_MATCH
    assert TRAINER_MATCH in plan.command  # the pusher can recognise the trainer's process
    assert pusher["image"] == plan.image
    assert mount(pusher, RESULTS_VOLUME) == {
        "name": RESULTS_VOLUME,
        "mountPath": results,
        "readOnly": True,
    }
    volume_name, source = secret_volume_for(c, secret)
    assert source["items"] == [{"key": ".dockerconfigjson", "path": "config.json"}]
    assert mount(pusher, volume_name) == {
        "name": volume_name,
        "mountPath": f"/mnt/secrets/{secret}",
        "readOnly": True,
    }
    assert pusher["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "resources" not in pusher  # the GPUs are the trainer's
    assert pod_spec(c)["shareProcessNamespace"] is True
    assert volumes(c)[RESULTS_VOLUME] == {"name": RESULTS_VOLUME, "emptyDir": {}}


def test_the_seed_pusher_pushes_to_the_seed_image() -> None:
    command = the_pusher(case("seed-tuning-phi-3"))["command"]
    assert flag_value(command, "--image") == SEED_OUTPUT_IMAGE
    assert flag_value(command, "--docker-config") == (
        f"/mnt/secrets/{SEED_PUSH_SECRET}/config.json"
    )
    assert flag_value(command, "--preset") == "phi-3-mini-128k-instruct"
    assert flag_value(command, "--results") == "/mnt/results"


def test_the_image_output_case_names_its_image_and_secret() -> None:
    command = the_pusher(case("urls-to-image"))["command"]
    assert flag_value(command, "--image") == OUTPUT_IMAGE
    assert flag_value(command, "--docker-config") == f"/mnt/secrets/{PUSH_SECRET}/config.json"


@pytest.mark.parametrize("name", VOLUME_OUTPUT_CASES, ids=VOLUME_OUTPUT_CASES)
def test_a_volume_output_is_the_users_volume_at_the_output_dir(name: str) -> None:
    c = case(name)
    assert list(containers(c)) == [ws_name(c)]
    assert "shareProcessNamespace" not in pod_spec(c)
    assert volumes(c)[RESULTS_VOLUME] == {"name": RESULTS_VOLUME, **RESULTS_PVC}
    assert mounts(the_trainer(c))[output_dir(c)] == RESULTS_VOLUME
    assert "readOnly" not in mount(the_trainer(c), RESULTS_VOLUME)
    assert PUSH_SECRET not in {
        v["secret"]["secretName"] for v in volumes(c).values() if "secret" in v
    }


@pytest.mark.parametrize("name", ["output-dir-to-image", "output-dir-to-volume"])
def test_the_results_volume_follows_the_users_output_dir(name: str) -> None:
    c = case(name)
    assert mounts(the_trainer(c))[USER_OUTPUT_DIR] == RESULTS_VOLUME
    assert "/mnt/results" not in mounts(the_trainer(c))
    if name.endswith("image"):
        assert flag_value(the_pusher(c)["command"], "--results") == USER_OUTPUT_DIR
        assert mount(the_pusher(c), RESULTS_VOLUME)["mountPath"] == USER_OUTPUT_DIR


# --- the trainer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_the_trainer_runs_the_plans_command(name: str) -> None:
    c = case(name)
    plan = plan_for(c)
    container = pod_spec(c)["containers"][0]
    assert container["name"] == ws_name(c)
    assert container["image"] == plan.image
    assert container["command"] == list(plan.command)
    assert container["command"][:3] == ["python3", "-m", "presets.tuning.cli"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_the_trainer_asks_for_the_nodes_gpus(name: str) -> None:
    c = case(name)
    gpus = GPUS[name]
    container = the_trainer(c)
    if gpus is None:
        assert "resources" not in container
    else:
        assert container["resources"] == {
            "requests": {"nvidia.com/gpu": gpus},
            "limits": {"nvidia.com/gpu": gpus},
        }
        assert plan_for(c).gpus_per_node == int(gpus)


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_the_trainer_mounts_shm_config_weights_data_and_results(name: str) -> None:
    c = case(name)
    assert mounts(the_trainer(c)) == {
        SHM_DIR: "dshm",
        CONFIG_DIR: CONFIG_VOLUME,
        TFS_WEIGHTS: WEIGHTS_VOLUME,
        DATA_DIR: DATA_VOLUME,
        output_dir(c): RESULTS_VOLUME,
    }
    vols = volumes(c)
    assert vols["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory"}}
    assert vols[CONFIG_VOLUME] == {
        "name": CONFIG_VOLUME,
        "configMap": {"name": f"{ws_name(c)}-tuning-params"},
    }
    assert vols[WEIGHTS_VOLUME] == {"name": WEIGHTS_VOLUME, "emptyDir": {}}
    assert plan_for(c).command[plan_for(c).command.index("--config") + 1] == (
        f"{CONFIG_DIR}/{TRAINING_CONFIG_KEY}"
    )


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_the_trainer_serves_its_progress_on_port_5000(name: str) -> None:
    assert the_trainer(case(name))["ports"] == [
        {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}
    ]
    assert HTTP_PORT == 5000


def test_a_plan_without_ports_still_gets_the_progress_port() -> None:
    c = case("urls-to-volume")
    plan = plan_for(c).model_copy(update={"ports": ()})
    assert trainer(target_for(c, plan), "img:1")["ports"] == [
        {"name": "http", "containerPort": 5000, "protocol": "TCP"}
    ]


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_the_pod_tolerates_gpu_nodes_and_is_pinned_to_its_node(name: str) -> None:
    c = case(name)
    spec = pod_spec(c)
    assert spec["tolerations"] == KAITEN_TOLERATIONS
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (term,) = terms["nodeSelectorTerms"]
    selector = c.workspace["resource"]["labelSelector"]["matchLabels"]
    assert term["matchExpressions"] == [
        *({"key": k, "operator": "In", "values": [v]} for k, v in sorted(selector.items())),
        {"key": HOSTNAME_LABEL, "operator": "In", "values": [NODE]},
    ]


def test_the_seed_is_pinned_to_its_label_and_node() -> None:
    terms = pod_spec(case("seed-tuning-phi-3"))["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "app", "operator": "In", "values": ["tuning-phi-3"]},
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE]},
            ]
        }
    ]


def test_the_model_access_secret_becomes_hf_token() -> None:
    env = the_trainer(case("model-access"))["env"]
    assert env == [
        {
            "name": "HF_TOKEN",
            "valueFrom": {
                "secretKeyRef": {"name": MODEL_ACCESS_SECRET, "key": "HF_TOKEN", "optional": True}
            },
        }
    ]
    assert "env" not in the_trainer(case("seed-tuning-phi-3"))


# --- the weights -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_the_weights_artifact_is_pulled_first(name: str) -> None:
    c = case(name)
    plan = plan_for(c)
    assert plan.weights_image is not None  # every tunable preset ships its weights
    init = pod_spec(c)["initContainers"]
    assert init[0]["name"] == WEIGHTS_DOWNLOADER
    assert init[0]["command"] == [
        "python3",
        "-m",
        "presets.oci",
        "pull",
        plan.weights_image,
        TFS_WEIGHTS,
    ]
    assert mounts(init[0]) == {TFS_WEIGHTS: WEIGHTS_VOLUME}
    expected_data = (
        [DOWNLOADER] if name in URL_CASES else [PULLER] if name in IMAGE_INPUT_CASES else []
    )
    assert [x["name"] for x in init[1:]] == expected_data


def test_a_plan_without_a_weights_image_has_no_weights_downloader() -> None:
    c = case("seed-tuning-phi-3")
    plan = plan_for(c).model_copy(update={"weights_image": None})
    spec = pod(target_for(c, plan))["spec"]
    assert [x["name"] for x in spec["initContainers"]] == [DOWNLOADER]
    volume = case("volume-to-volume")
    plan = plan_for(volume).model_copy(update={"weights_image": None})
    assert "initContainers" not in pod(target_for(volume, plan))["spec"]


# --- refusals ----------------------------------------------------------------------------------


def test_an_inference_plan_is_refused() -> None:
    doc = as_observed(inference("phi-3-mini-4k-instruct", "Standard_NC24ads_A100_v4"))
    target = Target(ref_for(doc), expect_plan(doc), (NODE,))
    with pytest.raises(ValueError, match="not a tuning plan"):
        render(target)
    with pytest.raises(ValueError, match="not a tuning plan"):
        job(target)


def test_a_tuning_plan_without_its_tuning_part_is_refused() -> None:
    c = case("seed-tuning-phi-3")
    with pytest.raises(ValueError, match="not a tuning plan"):
        render(target_for(c, plan_for(c).model_copy(update={"tuning": None})))


def test_a_plan_without_an_image_is_refused() -> None:
    c = case("seed-tuning-phi-3")
    with pytest.raises(ValueError, match="no image"):
        render(target_for(c, plan_for(c).model_copy(update={"image": None})))


def test_render_is_pure() -> None:
    c = case("image-to-image")
    target = target_for(c)
    before = copy.deepcopy(target.plan.model_dump())
    first = render(target)
    assert render(target) == first
    assert target.plan.model_dump() == before
    first.workload["spec"]["template"]["spec"]["volumes"].clear()
    assert render(target).workload["spec"]["template"]["spec"]["volumes"]


# --- what the API server would refuse (found while writing these tests) ------------------------


def test_one_secret_for_pulling_the_data_and_pushing_the_adapter_is_one_volume() -> None:
    """A registry Secret used both as ``imagePullSecrets`` of the input and as the
    ``imagePushSecret`` of the output (one ACR, one credential) must give one pod volume: the API
    server refuses a pod whose volumes share a name (``Duplicate value``)."""
    doc = as_observed(
        with_data(
            "same-secret",
            {"image": DATA_IMAGE, "imagePullSecrets": ["acr"]},
            {"image": OUTPUT_IMAGE, "imagePushSecret": "acr"},
        )
    )
    spec = render(Target(ref_for(doc), expect_plan(doc), (NODE,))).workload["spec"]["template"][
        "spec"
    ]
    names = [v["name"] for v in spec["volumes"]]
    assert len(names) == len(set(names)), f"duplicate pod volumes: {names}"


@pytest.mark.parametrize("directory", [DATA_DIR, CONFIG_DIR])
def test_a_planned_output_dir_never_shares_a_mount_path(directory: str) -> None:
    """The planner accepts any ``output_dir`` under /mnt; when it plans one, the trainer's mount
    paths must stay unique (the API server refuses ``mountPath: must be unique``)."""
    doc: dict[str, Any] = as_observed(tuning(config="tuning-cm"))
    configmaps = training_config(
        f"training_config:\n  TrainingArguments:\n    output_dir: {directory}\n"
    )
    result = plan_or_rejection(doc, configmaps)
    if not isinstance(result, Plan):
        return  # refused by the planner: nothing is rendered
    container = trainer(Target(ref_for(doc), result, (NODE,)), "img:1")
    paths = [m["mountPath"] for m in container["volumeMounts"]]
    assert len(paths) == len(set(paths)), f"output_dir {directory}: duplicate mount paths {paths}"
