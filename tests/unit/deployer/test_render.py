"""``services.deployer.render``: from a real plan to the inference objects of one Workspace.

The two seed Workspaces are compared whole with golden files (``tests/fixtures/deployer``; set
``KAITEN_UPDATE_GOLDEN=1`` to rewrite them). Everything else is asserted field by field over the
named cases of ``cases.py``: apply order and ownership, the workload kind (Deployment, or a
StatefulSet across nodes), GPUs, adapters and their secrets, rolling on a revision, the user's
pod template, the user's ConfigMap, the LoadBalancer, gated models and node affinity."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from presets.inference.vllm_launcher import read_config
from presets.layout import ADAPTERS_DIR, CONFIG_DIR, INFERENCE_CONFIG_KEY
from services.deployer.render import (
    config_name,
    headless_name,
    is_multi_node,
    leader_host,
    render,
    workload_kind,
)
from shared.labels import REVISION_ANNOTATION, WORKSPACE_LABEL, WORKSPACE_NAMESPACE_LABEL
from shared.manifests import HOSTNAME_LABEL, Manifest, Target, manifest_key, node_affinity
from shared.plan import NodeSelection, Plan
from tests.unit.deployer.cases import (
    CASE_NAMES,
    NAMESPACE,
    NODE,
    PHI_3_ADAPTER_SEED,
    SECOND_NODE,
    TEMPLATE,
    UID,
    USER_CONFIG,
    Case,
    as_observed,
    case,
    named,
    object_id,
    plan_for,
    ref_for,
    rendered,
    target_for,
)
from tests.unit.planner.workspaces import V100, Doc, expect_plan, inference, seed

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "deployer"
GOLDEN_CASES = ("seed-phi-3-mini", "seed-phi-3-mini-adapter")
UPDATE_GOLDEN = "KAITEN_UPDATE_GOLDEN"
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
SHM_DIR = "/dev/shm"  # noqa: S108 -- a mount point in the pod
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
KAITEN_TOLERATIONS = [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
]

# Each case: does it get Kaiten's default ConfigMap, and which workload kind.
LAYOUTS: dict[str, tuple[bool, str]] = {
    "seed-phi-3-mini": (True, "Deployment"),
    "seed-phi-3-mini-adapter": (True, "Deployment"),
    "multi-gpu": (True, "Deployment"),
    "tensor-parallel": (True, "Deployment"),
    "multi-node": (True, "StatefulSet"),
    "adapters-with-secrets": (True, "Deployment"),
    "template": (False, "Deployment"),
    "user-config": (False, "Deployment"),
    "load-balancer": (True, "Deployment"),
    "gated-model": (True, "Deployment"),
}
DEPLOYMENT_CASES = [name for name, (_, kind) in LAYOUTS.items() if kind == "Deployment"]
PRESET_CASES = [name for name in CASE_NAMES if name != "template"]
GPUS = {
    "seed-phi-3-mini": "1",
    "seed-phi-3-mini-adapter": "1",
    "multi-gpu": "2",
    "tensor-parallel": "2",
    "multi-node": "1",
    "adapters-with-secrets": "1",
    "user-config": "1",
    "load-balancer": "1",
    "gated-model": "1",
}


# --- helpers -----------------------------------------------------------------------------------


def ws_name(c: Case) -> str:
    name: str = c.workspace["metadata"]["name"]
    return name


def pod_spec(workload: Manifest) -> Manifest:
    spec: Manifest = workload["spec"]["template"]["spec"]
    return spec


def main_container(workload: Manifest) -> Manifest:
    container: Manifest = pod_spec(workload)["containers"][0]
    return container


def by_name(items: list[Manifest]) -> dict[str, Manifest]:
    return {item["name"]: item for item in items}


def init_containers(workload: Manifest) -> dict[str, Manifest]:
    return by_name(pod_spec(workload).get("initContainers", []))


def volumes(workload: Manifest) -> dict[str, Manifest]:
    return by_name(pod_spec(workload)["volumes"])


def mounts(container: Manifest) -> dict[str, str]:
    """mountPath -> volume name."""
    return {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}


def env(container: Manifest) -> dict[str, Any]:
    """name -> value, or the valueFrom mapping when the variable has no literal value."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def match_expressions(workload: Manifest) -> list[Manifest]:
    affinity = pod_spec(workload)["affinity"]["nodeAffinity"]
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 1
    expressions: list[Manifest] = terms[0]["matchExpressions"]
    return expressions


def objects_of(c: Case, kind: str) -> list[Manifest]:
    return [o for o in rendered(c).objects if o["kind"] == kind]


def service(c: Case) -> Manifest:
    """The workspace's own Service (not the headless one)."""
    (main,) = [o for o in objects_of(c, "Service") if o["metadata"]["name"] == ws_name(c)]
    return main


def render_doc(doc: Doc, nodes: tuple[str, ...] = (NODE,)) -> Manifest:
    """The workload rendered from a Workspace document planned now."""
    return render(Target(ref_for(doc), expect_plan(doc), nodes)).workload


def adapter_seed(adapters: list[Doc], revision: str) -> Doc:
    """The adapter seed with other adapters, at another revision."""
    doc = seed(PHI_3_ADAPTER_SEED)
    doc["inference"]["adapters"] = adapters
    return as_observed(doc, revision=revision)


def pod_name_problems(workload: Manifest) -> list[str]:
    """What the API server would refuse in the pod's container and volume names: duplicates
    and names that are not DNS-1123 labels."""
    spec = pod_spec(workload)
    groups = {
        "container": [c["name"] for c in spec["containers"] + spec.get("initContainers", [])],
        "volume": [v["name"] for v in spec.get("volumes", [])],
    }
    problems = []
    for what, names in groups.items():
        problems += [
            f"duplicate {what} name {n!r}" for n in sorted(set(names)) if names.count(n) > 1
        ]
        problems += [
            f"{what} name {n!r} is not a DNS-1123 label"
            for n in names
            if len(n) > 63 or not DNS_LABEL.match(n)
        ]
    return problems


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
        f"tests/unit/deployer/test_render.py -k golden` and review it"
    )
    expected = list(yaml.safe_load_all(path.read_text()))
    how = f"if the change is intended, rewrite {path} with {UPDATE_GOLDEN}=1 and review the diff"
    assert [object_id(o) for o in objects] == [object_id(o) for o in expected], how
    for got, want in zip(objects, expected, strict=True):
        assert got == want, f"{name}: {object_id(got)} differs from the golden file; {how}"


# --- every case --------------------------------------------------------------------------------


def test_every_case_has_a_layout() -> None:
    assert set(LAYOUTS) == set(CASE_NAMES)
    assert set(GPUS) == set(PRESET_CASES)


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_objects_come_in_apply_order_with_the_workload_last(name: str) -> None:
    c = case(name)
    ws = ws_name(c)
    has_config, kind = LAYOUTS[name]
    expected = [f"ConfigMap/{ws}-inference-params"] if has_config else []
    expected += [f"Service/{ws}", f"Service/{ws}-headless", f"{kind}/{ws}"]
    result = rendered(c)
    assert [object_id(o) for o in result.objects] == expected
    assert result.workload is result.objects[-1]
    assert workload_kind(plan_for(c)) == kind
    assert is_multi_node(plan_for(c)) == (kind == "StatefulSet")


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_every_object_belongs_to_the_workspace(name: str) -> None:
    c = case(name)
    for obj in rendered(c).objects:
        meta = obj["metadata"]
        assert meta["namespace"] == NAMESPACE, object_id(obj)
        assert meta["labels"][WORKSPACE_LABEL] == ws_name(c), object_id(obj)
        assert meta["labels"][WORKSPACE_NAMESPACE_LABEL] == NAMESPACE, object_id(obj)
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "kaito.sh/v1beta1",
                "kind": "Workspace",
                "name": ws_name(c),
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], object_id(obj)


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_the_workload_carries_the_revision_and_selects_its_pods(name: str) -> None:
    c = case(name)
    workload = rendered(c).workload
    assert workload["metadata"]["annotations"] == {REVISION_ANNOTATION: "1"}
    selector = {WORKSPACE_LABEL: ws_name(c)}
    assert workload["spec"]["selector"] == {"matchLabels": selector}
    assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_the_services_expose_http_and_torch(name: str) -> None:
    c = case(name)
    ws = ws_name(c)
    main, headless = objects_of(c, "Service")
    assert main["metadata"]["name"] == ws
    assert [(p["name"], p["port"], p["targetPort"]) for p in main["spec"]["ports"]] == [
        ("http", 80, 5000),
        ("torch", 29500, 29500),
    ]
    assert headless["metadata"]["name"] == headless_name(ref_for(c.workspace)) == f"{ws}-headless"
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == {WORKSPACE_LABEL: ws}
    assert [(p["name"], p["port"]) for p in headless["spec"]["ports"]] == [("torch", 29500)]


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_container_and_volume_names_are_valid_and_unique(name: str) -> None:
    assert pod_name_problems(rendered(case(name)).workload) == []


@pytest.mark.parametrize("name", CASE_NAMES, ids=CASE_NAMES)
def test_rendering_is_deterministic_and_leaves_the_plan_alone(name: str) -> None:
    target = target_for(case(name))
    before = target.plan.model_dump()
    first = render(target)
    assert render(target) == first
    assert target.plan.model_dump() == before


def test_manifest_key_names_kind_and_name() -> None:
    workload = rendered(case("seed-phi-3-mini")).workload
    assert manifest_key(workload) == "Deployment/workspace-phi-3-mini"


# --- workload kind, strategy, GPUs -------------------------------------------------------------


@pytest.mark.parametrize("name", DEPLOYMENT_CASES, ids=DEPLOYMENT_CASES)
def test_a_deployment_rolls_without_surge(name: str) -> None:
    spec = rendered(case(name)).workload["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    assert spec["replicas"] == 1
    assert "serviceName" not in spec


@pytest.mark.parametrize("name", PRESET_CASES, ids=PRESET_CASES)
def test_the_container_requests_every_gpu_of_its_node(name: str) -> None:
    container = main_container(rendered(case(name)).workload)
    gpus = {"nvidia.com/gpu": GPUS[name]}
    assert container["resources"] == {"requests": gpus, "limits": gpus}


@pytest.mark.parametrize("name", PRESET_CASES, ids=PRESET_CASES)
def test_a_preset_pod_tolerates_gpu_nodes_and_has_shared_memory(name: str) -> None:
    workload = rendered(case(name)).workload
    assert pod_spec(workload)["tolerations"] == KAITEN_TOLERATIONS
    assert volumes(workload)["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory"}}
    assert mounts(main_container(workload))[SHM_DIR] == "dshm"


@pytest.mark.parametrize("name", PRESET_CASES, ids=PRESET_CASES)
def test_a_preset_container_runs_the_plans_command_with_its_probes(name: str) -> None:
    c = case(name)
    plan = plan_for(c)
    container = main_container(rendered(c).workload)
    assert container["name"] == ws_name(c)
    assert container["image"] == plan.image
    if not is_multi_node(plan):
        assert container["command"] == list(plan.command)
        for key in PROBES:
            assert container[key]["httpGet"] == {"path": "/health", "port": 5000}
    assert plan.probes is not None
    probes = (plan.probes.startup, plan.probes.liveness, plan.probes.readiness)
    for key, expected in zip(PROBES, probes, strict=True):
        timing = {k: v for k, v in container[key].items() if k not in {"httpGet", "exec"}}
        assert timing == {
            "initialDelaySeconds": expected.initial_delay_s,
            "periodSeconds": expected.period_s,
            "timeoutSeconds": expected.timeout_s,
            "failureThreshold": expected.failure_threshold,
        }
    assert {"name": "http", "containerPort": 5000, "protocol": "TCP"} in container["ports"]


@pytest.mark.parametrize(
    ("name", "weights_dir"),
    [("seed-phi-3-mini", "/workspace/tfs/weights"), ("multi-gpu", "/workspace/vllm/weights")],
    ids=["transformers", "vllm"],
)
def test_the_weights_are_pulled_by_an_init_container(name: str, weights_dir: str) -> None:
    c = case(name)
    plan = plan_for(c)
    workload = rendered(c).workload
    downloader = init_containers(workload)["model-weights-downloader"]
    assert plan.weights_image is not None
    assert downloader["image"] == plan.image
    assert downloader["command"] == [
        "python3",
        "-m",
        "presets.oci",
        "pull",
        plan.weights_image,
        weights_dir,
    ]
    assert mounts(downloader) == {weights_dir: "model-weights-volume"}
    assert mounts(main_container(workload))[weights_dir] == "model-weights-volume"
    assert volumes(workload)["model-weights-volume"]["emptyDir"] == {}


def test_multi_gpu_plans_are_what_the_cases_say() -> None:
    data_parallel = plan_for(case("multi-gpu"))
    tensor_parallel = plan_for(case("tensor-parallel"))
    assert (data_parallel.data_parallel_size, data_parallel.tensor_parallel_size) == (2, 1)
    assert (tensor_parallel.tensor_parallel_size, tensor_parallel.node_count) == (2, 1)


# --- multi-node --------------------------------------------------------------------------------


def test_a_model_across_nodes_is_a_statefulset_behind_a_headless_service() -> None:
    c = case("multi-node")
    plan = plan_for(c)
    assert (plan.node_count, plan.pipeline_parallel_size) == (2, 2)
    spec = rendered(c).workload["spec"]
    assert spec["replicas"] == 2
    assert spec["serviceName"] == "multi-node-headless"
    assert spec["podManagementPolicy"] == "Parallel"
    assert "strategy" not in spec


def test_only_the_leader_serves_behind_the_service() -> None:
    c = case("multi-node")
    assert service(c)["spec"]["selector"] == {
        WORKSPACE_LABEL: "multi-node",
        "statefulset.kubernetes.io/pod-name": "multi-node-0",
    }
    headless = objects_of(c, "Service")[1]
    assert headless["spec"]["selector"] == {WORKSPACE_LABEL: "multi-node"}


def test_every_multi_node_pod_asks_the_leader_for_health() -> None:
    c = case("multi-node")
    leader = leader_host(ref_for(c.workspace))
    assert leader == "multi-node-0.multi-node-headless.default.svc.cluster.local"
    container = main_container(rendered(c).workload)
    for key in PROBES:
        assert "httpGet" not in container[key]
        assert container[key]["exec"]["command"] == [
            "python3",
            "-m",
            "presets.inference.multinode",
            "health",
            f"http://{leader}:5000/health",
        ]


def test_multi_node_pods_run_the_plans_command_under_the_ray_runner() -> None:
    c = case("multi-node")
    plan = plan_for(c)
    container = main_container(rendered(c).workload)
    command = container["command"]
    assert command[:5] == ["python3", "-m", "presets.inference.multinode", "run", "--pod-index-env"]
    separator = command.index("--")
    assert command[separator + 1 :] == list(plan.command)
    options = command[5:separator]
    assert options == [
        "POD_INDEX",
        "--leader",
        leader_host(ref_for(c.workspace)),
        "--ray-port",
        "6379",
        "--nodes",
        "2",
    ]
    assert env(container)["POD_INDEX"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    assert {"name": "ray", "containerPort": 6379, "protocol": "TCP"} in container["ports"]


def test_multi_node_pods_may_run_on_either_node() -> None:
    expressions = match_expressions(rendered(case("multi-node")).workload)
    assert {"key": HOSTNAME_LABEL, "operator": "In", "values": [NODE, SECOND_NODE]} in expressions


# --- adapters ----------------------------------------------------------------------------------


def test_an_image_adapter_is_pulled_with_its_registry_secret() -> None:
    workload = rendered(case("adapters-with-secrets")).workload
    pullers = [n for n in init_containers(workload) if n.startswith("puller-")]
    assert pullers == ["puller-image-adapter"]
    puller = init_containers(workload)["puller-image-adapter"]
    assert puller["command"] == [
        "python3",
        "-m",
        "presets.oci",
        "pull",
        "registry.example.test/adapters/image-adapter:0.0.1",
        "/mnt/adapter/image-adapter",
        "--docker-config",
        "/mnt/secrets/regcred/config.json",
    ]
    (secret,) = [v for v in pod_spec(workload)["volumes"] if "secret" in v]
    assert secret["secret"] == {
        "secretName": "regcred",
        "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
    }
    adapters_volume = mounts(main_container(workload))[ADAPTERS_DIR]
    assert puller["volumeMounts"] == [
        {"name": adapters_volume, "mountPath": ADAPTERS_DIR},
        {"name": secret["name"], "mountPath": "/mnt/secrets/regcred", "readOnly": True},
    ]
    assert volumes(workload)[adapters_volume] == {"name": adapters_volume, "emptyDir": {}}
    assert pod_spec(workload)["imagePullSecrets"] == [{"name": "regcred"}]


def test_a_volume_adapter_is_mounted_read_only_and_has_no_puller() -> None:
    workload = rendered(case("adapters-with-secrets")).workload
    assert "puller-volume-adapter" not in init_containers(workload)
    volume = next(v for v in pod_spec(workload)["volumes"] if "persistentVolumeClaim" in v)
    assert volume["persistentVolumeClaim"] == {"claimName": "adapters"}
    container = main_container(workload)
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert mount == {
        "name": volume["name"],
        "mountPath": "/mnt/adapter/volume-adapter",
        "readOnly": True,
    }
    assert mounts(container)[ADAPTERS_DIR] == "adapter-volume"


def test_adapter_strengths_are_environment_variables() -> None:
    container = main_container(rendered(case("adapters-with-secrets")).workload)
    assert env(container) == {"image-adapter": "0.5", "volume-adapter": "1"}


def test_the_seed_adapter_is_pulled_into_its_directory() -> None:
    workload = rendered(case("seed-phi-3-mini-adapter")).workload
    puller = init_containers(workload)["puller-phi-3-adapter"]
    assert puller["command"][-2:] == [
        "ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1",
        "/mnt/adapter/phi-3-adapter",
    ]
    assert "--docker-config" not in puller["command"]
    assert "imagePullSecrets" not in pod_spec(workload)
    assert env(main_container(workload)) == {"phi-3-adapter": "1"}


@pytest.mark.parametrize("name", ["seed-phi-3-mini", "multi-gpu"], ids=["seed", "multi-gpu"])
def test_without_adapters_there_is_no_adapter_plumbing(name: str) -> None:
    workload = rendered(case(name)).workload
    assert list(init_containers(workload)) == ["model-weights-downloader"]
    assert "adapter-volume" not in volumes(workload)
    assert ADAPTERS_DIR not in mounts(main_container(workload))
    assert "imagePullSecrets" not in pod_spec(workload)


# --- revisions ---------------------------------------------------------------------------------


def test_reweighting_an_adapter_changes_only_the_env_and_the_revision() -> None:
    before = rendered(case("seed-phi-3-mini-adapter")).workload
    adapter = copy.deepcopy(seed(PHI_3_ADAPTER_SEED)["inference"]["adapters"][0])
    adapter["strength"] = "0.5"
    after = render_doc(adapter_seed([adapter], revision="2"))
    assert after["metadata"]["annotations"] == {REVISION_ANNOTATION: "2"}
    assert after["spec"]["template"] != before["spec"]["template"]
    assert env(main_container(after)) == {"phi-3-adapter": "0.5"}
    same_env = copy.deepcopy(after)
    main_container(same_env)["env"] = main_container(before)["env"]
    assert same_env["spec"]["template"] == before["spec"]["template"]


def test_removing_the_adapter_removes_its_puller_volume_and_env() -> None:
    before = rendered(case("seed-phi-3-mini-adapter")).workload
    after = render_doc(adapter_seed([], revision="2"))
    assert after["metadata"]["annotations"] == {REVISION_ANNOTATION: "2"}
    assert after["spec"]["template"] != before["spec"]["template"]
    assert list(init_containers(after)) == ["model-weights-downloader"]
    assert "adapter-volume" not in volumes(after)
    assert ADAPTERS_DIR not in mounts(main_container(after))
    assert env(main_container(after)) == {}


# --- template ----------------------------------------------------------------------------------


def test_a_template_runs_the_users_container_as_written() -> None:
    workload = rendered(case("template")).workload
    assert pod_spec(workload)["containers"] == TEMPLATE["spec"]["containers"]
    assert "initContainers" not in pod_spec(workload)
    assert "volumes" not in pod_spec(workload)


def test_a_template_keeps_the_users_labels_and_adds_the_workspaces() -> None:
    labels = rendered(case("template")).workload["spec"]["template"]["metadata"]["labels"]
    assert labels == {
        "team": "x",
        WORKSPACE_LABEL: "template",
        WORKSPACE_NAMESPACE_LABEL: NAMESPACE,
    }


def test_a_template_keeps_the_users_toleration_and_adds_kaitens_once() -> None:
    target = target_for(case("template"))
    tolerations = pod_spec(render(target).workload)["tolerations"]
    assert tolerations == TEMPLATE["spec"]["tolerations"] + KAITEN_TOLERATIONS
    assert target.plan.template == TEMPLATE  # the plan's template was not touched
    assert pod_spec(render(target).workload)["tolerations"] == tolerations


def test_a_template_with_kaitens_toleration_already_gets_it_once() -> None:
    plan = plan_for(case("template"))
    template = copy.deepcopy(TEMPLATE)
    template["spec"]["tolerations"].append(dict(KAITEN_TOLERATIONS[0]))
    target = Target(
        ref_for(case("template").workspace), plan.model_copy(update={"template": template}), (NODE,)
    )
    tolerations = pod_spec(render(target).workload)["tolerations"]
    assert tolerations == [*TEMPLATE["spec"]["tolerations"], *KAITEN_TOLERATIONS]


def test_a_template_is_pinned_to_the_selected_node() -> None:
    assert match_expressions(rendered(case("template")).workload) == [
        {"key": "apps", "operator": "In", "values": ["template"]},
        {"key": HOSTNAME_LABEL, "operator": "In", "values": [NODE]},
    ]


# --- ConfigMaps --------------------------------------------------------------------------------


def test_the_default_config_is_valid_for_the_launcher() -> None:
    c = case("seed-phi-3-mini")
    (config,) = objects_of(c, "ConfigMap")
    assert config["metadata"]["name"] == config_name(ref_for(c.workspace))
    assert list(config["data"]) == [INFERENCE_CONFIG_KEY]
    parsed = read_config(config["data"][INFERENCE_CONFIG_KEY])
    assert isinstance(parsed["vllm"], dict)


@pytest.mark.parametrize(
    ("name", "configmap"),
    [("multi-gpu", "multi-gpu-inference-params"), ("user-config", USER_CONFIG)],
    ids=["default", "user"],
)
def test_the_config_is_mounted_where_the_launcher_reads_it(name: str, configmap: str) -> None:
    c = case(name)
    workload = rendered(c).workload
    assert volumes(workload)["config-volume"]["configMap"] == {"name": configmap}
    assert mounts(main_container(workload))[CONFIG_DIR] == "config-volume"
    command = main_container(workload)["command"]
    flag = command.index("--kaito-config-file")
    assert command[flag + 1] == f"{CONFIG_DIR}/{INFERENCE_CONFIG_KEY}"


def test_a_users_config_is_not_rendered() -> None:
    c = case("user-config")
    assert plan_for(c).inference_config == USER_CONFIG
    assert objects_of(c, "ConfigMap") == []


# --- Service type, gated models ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "service_type"),
    [
        ("load-balancer", "LoadBalancer"),
        ("seed-phi-3-mini", "ClusterIP"),
        ("template", "ClusterIP"),
    ],
    ids=["enablelb", "default", "template"],
)
def test_the_service_type(name: str, service_type: str) -> None:
    assert service(case(name))["spec"]["type"] == service_type


def test_a_gated_model_gets_the_token_from_its_secret() -> None:
    workload = rendered(case("gated-model")).workload
    assert env(main_container(workload))["HF_TOKEN"] == {
        "secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN", "optional": True}
    }
    assert "initContainers" not in pod_spec(workload)  # downloaded at start: no weights image


@pytest.mark.parametrize("name", ["seed-phi-3-mini", "multi-gpu"], ids=["seed", "multi-gpu"])
def test_an_open_model_gets_no_token(name: str) -> None:
    assert "HF_TOKEN" not in env(main_container(rendered(case(name)).workload))


# --- node affinity -----------------------------------------------------------------------------


def test_the_pod_needs_the_selector_labels_and_one_of_the_nodes() -> None:
    assert match_expressions(rendered(case("seed-phi-3-mini")).workload) == [
        {"key": "apps", "operator": "In", "values": ["phi-3"]},
        {"key": HOSTNAME_LABEL, "operator": "In", "values": [NODE]},
    ]


@pytest.mark.parametrize("name", ["seed-phi-3-mini", "template"], ids=["preset", "template"])
def test_without_nodes_there_is_no_hostname_requirement(name: str) -> None:
    c = case(name)
    workload = render(Target(ref_for(c.workspace), plan_for(c), ())).workload
    keys = [e["key"] for e in match_expressions(workload)]
    assert keys == ["apps"]


@pytest.mark.parametrize("name", ["seed-phi-3-mini", "template"], ids=["preset", "template"])
def test_without_selector_labels_or_nodes_there_is_no_affinity(name: str) -> None:
    c = case(name)
    plan = plan_for(c).model_copy(update={"nodes": NodeSelection()})
    assert node_affinity(plan, ()) == {}
    workload = render(Target(ref_for(c.workspace), plan, ())).workload
    assert not pod_spec(workload).get("affinity")


def test_without_selector_labels_the_nodes_still_pin_the_pod() -> None:
    plan = plan_for(case("seed-phi-3-mini")).model_copy(update={"nodes": NodeSelection()})
    assert node_affinity(plan, (SECOND_NODE, NODE)) == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": HOSTNAME_LABEL, "operator": "In", "values": [NODE, SECOND_NODE]}
                        ]
                    }
                ]
            }
        }
    }


# --- known bugs: names the API server refuses --------------------------------------------------


def _with_adapters(adapters: list[Doc]) -> Doc:
    doc = named(inference("phi-3-mini-128k-instruct", V100), "edge")
    doc["inference"]["adapters"] = adapters
    return as_observed(doc)


EDGE_ADAPTERS: dict[str, list[Doc]] = {
    # "adapter-" + "volume" is the name of the shared adapters emptyDir.
    "volume-adapter-named-volume": [
        {
            "source": {
                "name": "volume",
                "volumeSource": {"persistentVolumeClaim": {"claimName": "a"}},
            }
        }
    ],
    # Adapter names are DNS-1123 subdomains (dots allowed); container names are labels.
    "dotted-adapter-name": [
        {"source": {"name": "phi-3.5-adapter", "image": "registry.example.test/adapter:1"}}
    ],
    # Secret names are subdomains too; volume names are labels.
    "dotted-secret-name": [
        {
            "source": {
                "name": "phi-3-adapter",
                "image": "registry.example.test/adapter:1",
                "imagePullSecrets": ["acr.regcred"],
            }
        }
    ],
}


@pytest.mark.parametrize("adapters", EDGE_ADAPTERS.values(), ids=EDGE_ADAPTERS.keys())
def test_adapter_names_give_valid_pod_names(adapters: list[Doc]) -> None:
    doc = _with_adapters(adapters)
    assert isinstance(expect_plan(doc), Plan)  # the planner accepts the Workspace
    assert pod_name_problems(render_doc(doc)) == []
