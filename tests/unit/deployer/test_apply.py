"""``shared.apply``: the rendered-hash stamp, the create/replace/none decision against
what the API server returns, the field-by-field ``covers`` check, and the body of a replace.

The objects are a rendered Deployment and Service as Kaiten writes them; ``served`` turns one into
what a read returns once the API server and other controllers have had it (server metadata,
status, defaulted fields, empty lists and maps dropped)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from shared.apply import HASH_ANNOTATION, Manifest, covers, decide, replacement, stamp

Path = tuple[str | int, ...]
Edit = Callable[[Manifest], None]

NAMESPACE = "team-a"
NAME = "workspace-phi-3"
SELECTOR = {"kaito.sh/workspace": NAME}
CLUSTER_IP = "10.0.113.7"


# --- the objects ----------------------------------------------------------------------------------


def deployment(
    *,
    replicas: int = 1,
    env: list[dict[str, Any]] | None = None,
    node_selector: dict[str, str] | None = None,
) -> Manifest:
    """A Deployment as the renderer writes it (not stamped)."""
    if env is None:
        env = [
            {"name": "MODEL_ID", "value": "microsoft/Phi-3-mini-4k-instruct"},
            {"name": "HF_HOME", "value": "/workspace/cache"},
        ]
    pod_spec: dict[str, Any] = {
        "containers": [
            {
                "name": NAME,
                "image": "mcr.microsoft.com/aks/kaito/kaito-base:0.1.1",
                "command": ["python3", "-m", "presets.inference.vllm_launcher"],
                "args": ["--served-model-name=phi-3-mini-4k-instruct"],
                "env": env,
                "ports": [{"name": "http", "containerPort": 5000, "protocol": "TCP"}],
                "resources": {
                    "requests": {"nvidia.com/gpu": "1"},
                    "limits": {"nvidia.com/gpu": "1"},
                },
                "readinessProbe": {
                    "httpGet": {"path": "/health", "port": 5000},
                    "periodSeconds": 10,
                },
                "volumeMounts": [{"name": "config", "mountPath": "/mnt/config"}],
            }
        ],
        "volumes": [{"name": "config", "configMap": {"name": f"{NAME}-inference-params"}}],
        "tolerations": [
            {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
        ],
    }
    if node_selector is not None:
        pod_spec["nodeSelector"] = node_selector
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "labels": dict(SELECTOR),
            "annotations": {"kaito.sh/revision": "1"},
            "ownerReferences": [
                {
                    "apiVersion": "kaito.sh/v1beta1",
                    "kind": "Workspace",
                    "name": NAME,
                    "uid": "6f1d3c2e-0000-4000-8000-000000000001",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(SELECTOR)},
            "template": {"metadata": {"labels": dict(SELECTOR)}, "spec": pod_spec},
        },
    }


def service(*, headless: bool = False) -> Manifest:
    """The workspace's Service, or the headless Service of a multi-node StatefulSet."""
    spec: dict[str, Any] = {
        "selector": dict(SELECTOR),
        "ports": [{"name": "http", "port": 80, "targetPort": 5000, "protocol": "TCP"}],
        "type": "ClusterIP",
    }
    if headless:
        spec = {
            "clusterIP": "None",
            "selector": dict(SELECTOR),
            "ports": [{"name": "torch", "port": 29500, "targetPort": 29500, "protocol": "TCP"}],
            "publishNotReadyAddresses": True,
        }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"{NAME}-headless" if headless else NAME,
            "namespace": NAMESPACE,
            "labels": dict(SELECTOR),
        },
        "spec": spec,
    }


def headless_service() -> Manifest:
    return service(headless=True)


def scaled_deployment() -> Manifest:
    return deployment(replicas=2)


def _drop_empty(value: Any) -> Any:
    """What the API server returns for empty lists and maps: nothing."""
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def served(obj: Manifest) -> Manifest:
    """``obj`` as a read returns it once created: server metadata, status, defaults."""
    live: Manifest = _drop_empty(copy.deepcopy(obj))
    meta = live["metadata"]
    meta.update(
        uid="0b3f6a58-1111-4222-8333-444455556666",
        resourceVersion="81234",
        generation=1,
        creationTimestamp="2025-01-01T00:00:00Z",
        managedFields=[{"manager": "kaiten", "operation": "Update"}],
    )
    spec = live["spec"]
    if live["kind"] == "Deployment":
        meta.setdefault("annotations", {})["deployment.kubernetes.io/revision"] = "1"
        spec.update(
            revisionHistoryLimit=10,
            progressDeadlineSeconds=600,
            strategy={
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
        )
        spec["template"]["metadata"]["creationTimestamp"] = None
        pod = spec["template"]["spec"]
        pod.update(
            restartPolicy="Always",
            dnsPolicy="ClusterFirst",
            schedulerName="default-scheduler",
            securityContext={},
            terminationGracePeriodSeconds=30,
        )
        for container in pod["containers"]:
            container.update(
                imagePullPolicy="IfNotPresent",
                terminationMessagePath="/dev/termination-log",
                terminationMessagePolicy="File",
            )
            container["readinessProbe"].update(
                timeoutSeconds=1, successThreshold=1, failureThreshold=3
            )
            container["readinessProbe"]["httpGet"]["scheme"] = "HTTP"
        pod["volumes"][0]["configMap"]["defaultMode"] = 420
        live["status"] = {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1}
    elif live["kind"] == "Service":
        headless = spec.get("clusterIP") == "None"
        ip = "None" if headless else CLUSTER_IP
        spec.update(
            clusterIP=ip,
            clusterIPs=[ip],
            ipFamilies=["IPv4"],
            ipFamilyPolicy="SingleStack",
            sessionAffinity="None",
            internalTrafficPolicy="Cluster",
            type="ClusterIP",
        )
        live["status"] = {"loadBalancer": {}}
    return live


def at(obj: Any, path: Path) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def setting(path: Path, value: Any) -> Edit:
    def edit(obj: Manifest) -> None:
        at(obj, path[:-1])[path[-1]] = value

    return edit


def appending(path: Path, item: Any) -> Edit:
    def edit(obj: Manifest) -> None:
        at(obj, path).append(item)

    return edit


def removing(path: Path) -> Edit:
    def edit(obj: Manifest) -> None:
        del at(obj, path[:-1])[path[-1]]

    return edit


CONTAINER: Path = ("spec", "template", "spec", "containers", 0)


def _reordered(value: Any) -> Any:
    """The same value with every map's keys in reverse order."""
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def _hash(obj: Manifest) -> str:
    return str(obj["metadata"]["annotations"][HASH_ANNOTATION])


# --- stamp ----------------------------------------------------------------------------------------


def test_stamp_annotates_the_sha256_of_the_object_without_the_annotation() -> None:
    obj = deployment()
    expected = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()

    stamped = stamp(obj)

    assert stamped["metadata"]["annotations"] == {
        "kaito.sh/revision": "1",
        HASH_ANNOTATION: expected,
    }
    without = copy.deepcopy(stamped)
    del without["metadata"]["annotations"][HASH_ANNOTATION]
    assert without == obj


@pytest.mark.parametrize("make", [deployment, service], ids=["deployment", "service"])
def test_stamp_is_stable_under_key_order(make: Callable[[], Manifest]) -> None:
    obj = make()
    reordered = _reordered(obj)
    assert list(reordered) != list(obj)

    assert _hash(stamp(reordered)) == _hash(stamp(obj))


@pytest.mark.parametrize("make", [deployment, service], ids=["deployment", "service"])
def test_stamping_a_stamped_object_gives_the_same_hash(make: Callable[[], Manifest]) -> None:
    once = stamp(make())

    assert stamp(once) == once


def test_stamp_replaces_a_stale_hash() -> None:
    obj = deployment()
    stale = copy.deepcopy(obj)
    stale["metadata"]["annotations"][HASH_ANNOTATION] = "0" * 64

    assert stamp(stale) == stamp(obj)


def test_stamp_adds_annotations_to_an_object_without_any() -> None:
    stamped = stamp(service())

    assert list(stamped["metadata"]["annotations"]) == [HASH_ANNOTATION]
    assert len(_hash(stamped)) == 64


@pytest.mark.parametrize(
    "edit",
    [
        setting((*CONTAINER, "env", 1, "value"), "/workspace/hf-cache"),
        setting(("spec", "replicas"), 2),
        setting((*CONTAINER, "image"), "mcr.microsoft.com/aks/kaito/kaito-base:0.1.2"),
        setting((*CONTAINER, "resources", "limits", "nvidia.com/gpu"), "2"),
        setting(("metadata", "labels", "team"), "a"),
        setting(("metadata", "annotations", "kaito.sh/revision"), "2"),
        appending((*CONTAINER, "args"), "--max-model-len=4096"),
        removing(("spec", "template", "spec", "tolerations")),
    ],
    ids=[
        "env-value",
        "replicas",
        "image",
        "gpu-limit",
        "new-label",
        "other-annotation",
        "extra-arg",
        "removed-field",
    ],
)
def test_a_change_anywhere_changes_the_hash(edit: Edit) -> None:
    changed = deployment()
    edit(changed)

    assert _hash(stamp(changed)) != _hash(stamp(deployment()))


@pytest.mark.parametrize("make", [deployment, service], ids=["deployment", "service"])
def test_stamp_does_not_mutate_its_input(make: Callable[[], Manifest]) -> None:
    obj = make()
    before = copy.deepcopy(obj)

    stamped = stamp(obj)
    stamped["metadata"]["labels"]["changed"] = "yes"
    stamped["spec"]["selector"].clear()

    assert obj == before


# --- decide ---------------------------------------------------------------------------------------


def test_decide_creates_a_missing_object() -> None:
    assert decide(stamp(deployment()), None) == "create"


@pytest.mark.parametrize(
    "live_edit",
    [
        setting(("metadata", "uid"), "0b3f6a58-1111-4222-8333-444455556666"),
        setting(("metadata", "annotations", HASH_ANNOTATION), "0" * 64),
        setting(("spec", "replicas"), 5),
    ],
    ids=["same", "other-hash", "hand-edited"],
)
def test_decide_waits_for_an_object_being_deleted(live_edit: Edit) -> None:
    desired = stamp(deployment())
    live = served(desired)
    live["metadata"]["deletionTimestamp"] = "2025-01-01T00:05:00Z"
    live_edit(live)

    assert decide(desired, live) == "none"


def test_decide_leaves_an_object_just_as_created() -> None:
    desired = stamp(deployment())

    assert decide(desired, copy.deepcopy(desired)) == "none"


@pytest.mark.parametrize(
    "live_edit",
    [
        setting(("status",), {"replicas": 1, "readyReplicas": 1, "conditions": []}),
        setting(("metadata", "resourceVersion"), "99999"),
        setting(("spec", "revisionHistoryLimit"), 10),
        setting((*CONTAINER, "imagePullPolicy"), "Always"),
        setting((*CONTAINER, "terminationMessagePath"), "/dev/termination-log"),
        setting(("metadata", "labels", "app.kubernetes.io/managed-by"), "someone-else"),
        setting(("spec", "template", "metadata", "labels", "injected"), "by-a-webhook"),
        setting(("metadata", "annotations", "deployment.kubernetes.io/revision"), "4"),
        setting((*CONTAINER, "resources", "limits", "nvidia.com/gpu"), 1),
        setting((*CONTAINER, "ports", 0, "containerPort"), "5000"),
        setting((*CONTAINER, "readinessProbe", "httpGet", "port"), "5000"),
    ],
    ids=[
        "status",
        "resource-version",
        "revision-history-limit",
        "image-pull-policy",
        "termination-message-path",
        "label-by-others",
        "pod-label-by-others",
        "annotation-by-others",
        "quantity-as-number",
        "port-as-string",
        "probe-port-as-string",
    ],
)
def test_decide_leaves_an_up_to_date_object_with_server_set_fields(live_edit: Edit) -> None:
    desired = stamp(deployment())
    live = served(desired)
    live_edit(live)

    assert decide(desired, live) == "none"


@pytest.mark.parametrize(
    "make",
    [deployment, service, headless_service],
    ids=["deployment", "service", "headless-service"],
)
def test_decide_leaves_an_object_as_the_server_returns_it(make: Callable[[], Manifest]) -> None:
    desired = stamp(make())

    assert decide(desired, served(desired)) == "none"


@pytest.mark.parametrize(
    ("env", "node_selector"),
    [([], None), (None, {}), ([], {})],
    ids=["empty-env", "empty-node-selector", "both"],
)
def test_decide_matches_empty_lists_and_maps_the_server_dropped(
    env: list[dict[str, Any]] | None, node_selector: dict[str, str] | None
) -> None:
    desired = stamp(deployment(env=env, node_selector=node_selector))
    live = served(desired)
    pod = live["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod
    if env == []:
        assert "env" not in pod["containers"][0]

    assert decide(desired, live) == "none"


def test_decide_replaces_a_new_rendering() -> None:
    old = stamp(deployment())
    new_env = [{"name": "MODEL_ID", "value": "microsoft/Phi-3-mini-128k-instruct"}]
    desired = stamp(deployment(env=new_env))

    assert decide(desired, served(old)) == "replace"


@pytest.mark.parametrize(
    "live_edit",
    [
        removing(("metadata", "annotations", HASH_ANNOTATION)),
        removing(("metadata", "annotations")),
    ],
    ids=["no-hash-annotation", "no-annotations"],
)
def test_decide_replaces_an_object_made_by_someone_else(live_edit: Edit) -> None:
    desired = stamp(deployment())
    live = served(desired)
    live_edit(live)

    assert decide(desired, live) == "replace"


@pytest.mark.parametrize(
    "live_edit",
    [
        setting(("spec", "replicas"), 3),
        setting((*CONTAINER, "env", 0, "value"), "microsoft/Phi-3-medium-4k-instruct"),
        setting((*CONTAINER, "image"), "docker.io/someone/else:latest"),
        setting((*CONTAINER, "args", 0), "--served-model-name=other"),
        setting((*CONTAINER, "resources", "limits", "nvidia.com/gpu"), "2"),
        setting(("metadata", "labels", "kaito.sh/workspace"), "other"),
        appending((*CONTAINER, "env"), {"name": "EXTRA", "value": "1"}),
        removing((*CONTAINER, "env", 1)),
        appending(("spec", "template", "spec", "containers"), {"name": "sidecar", "image": "x"}),
        removing(("spec", "template", "spec", "tolerations")),
    ],
    ids=[
        "replicas",
        "list-element-value",
        "image",
        "list-element-scalar",
        "quantity",
        "rendered-label",
        "longer-list",
        "shorter-list",
        "extra-container",
        "removed-field",
    ],
)
def test_decide_replaces_a_hand_edit_with_the_hash_unchanged(live_edit: Edit) -> None:
    desired = stamp(deployment())
    live = served(desired)
    live_edit(live)

    assert _hash(live) == _hash(desired)
    assert decide(desired, live) == "replace"


def test_decide_replaces_a_hand_edited_service_port() -> None:
    desired = stamp(service())
    live = served(desired)
    live["spec"]["ports"][0]["targetPort"] = 8080

    assert decide(desired, live) == "replace"


# --- covers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("desired", "live", "expected"),
    [
        ({"a": 1}, {"a": 1}, True),
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": 1, "b": 2}, {"a": 1}, False),
        ({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}, True),
        ({"a": {"b": 1}}, {"a": "b"}, False),
        ({"a": {}}, {}, True),
        ({"a": []}, {}, True),
        ({"a": None}, {}, True),
        ({"a": ""}, {"a": ""}, True),
        ({"a": 0}, {}, False),
        ({"a": False}, {}, False),
        ({"a": "x"}, {}, False),
        ({"a": []}, {"a": [1]}, False),
        ({"a": {}}, {"a": {"b": 1}}, True),
        ([1, 2], [1, 2], True),
        ([1, 2], [2, 1], False),
        ([1, 2], [1, 2, 3], False),
        ([1, 2, 3], [1, 2], False),
        ([{"a": 1}], [{"a": 1, "b": 2}], True),
        ([{"a": 1}], [{"a": 2}], False),
        ([1], {"0": 1}, False),
        ({"a": 1}, [1], False),
        ([1], 1, False),
        ("1", 1, True),
        (1, "1", True),
        ("5000", 5000, True),
        ("1", 2, False),
        ("1Gi", "1Gi", True),
        ("1Gi", "2Gi", False),
        ("x", None, False),
        (None, None, True),
    ],
    ids=[
        "same-map",
        "map-with-more-keys",
        "map-missing-key",
        "nested-map-with-more-keys",
        "map-against-scalar",
        "empty-map-absent",
        "empty-list-absent",
        "none-absent",
        "empty-string",
        "zero-absent",
        "false-absent",
        "string-absent",
        "empty-list-against-elements",
        "empty-map-against-keys",
        "same-list",
        "list-order",
        "longer-live-list",
        "shorter-live-list",
        "list-of-maps-with-more-keys",
        "list-of-maps-differing",
        "list-against-map",
        "map-against-list",
        "list-against-scalar",
        "string-quantity-number",
        "number-quantity-string",
        "port",
        "different-numbers",
        "same-quantity",
        "different-quantity",
        "string-against-none",
        "none-against-none",
    ],
)
def test_covers(desired: Any, live: Any, expected: bool) -> None:
    assert covers(desired, live) is expected


# --- replacement ----------------------------------------------------------------------------------


def test_replacement_keeps_labels_and_annotations_others_added() -> None:
    desired = stamp(deployment())
    desired["metadata"]["labels"]["tier"] = "inference"
    live = served(stamp(deployment(replicas=2)))
    live["metadata"]["labels"].update({"tier": "manual", "team": "a"})
    live["metadata"]["annotations"].update({"kaito.sh/revision": "0", "note": "by hand"})

    body = replacement(desired, live)

    assert body["metadata"]["labels"] == {**SELECTOR, "tier": "inference", "team": "a"}
    assert body["metadata"]["annotations"] == {
        "kaito.sh/revision": "1",
        HASH_ANNOTATION: _hash(desired),
        "deployment.kubernetes.io/revision": "1",
        "note": "by hand",
    }


def test_replacement_is_conditional_on_the_resource_version_read() -> None:
    desired = stamp(deployment())
    live = served(stamp(deployment(replicas=2)))

    body = replacement(desired, live)

    assert body["metadata"]["resourceVersion"] == "81234"


def test_replacement_of_a_deployment_is_the_desired_object() -> None:
    desired = stamp(deployment())
    live = served(stamp(deployment(replicas=2)))
    live["spec"]["template"]["spec"]["initContainers"] = [{"name": "adapter", "image": "x"}]

    body = replacement(desired, live)

    assert body["spec"] == desired["spec"]
    assert {k: v for k, v in body.items() if k != "metadata"} == {
        k: v for k, v in desired.items() if k != "metadata"
    }
    assert "status" not in body
    for key in ("uid", "creationTimestamp", "managedFields", "generation"):
        assert key not in body["metadata"]


def test_replacement_of_a_service_keeps_its_allocated_addresses() -> None:
    desired = stamp(service())
    old = stamp(service())
    old["spec"]["ports"][0]["targetPort"] = 8080
    live = served(old)

    body = replacement(desired, live)

    assert body["spec"] == {
        **desired["spec"],
        "clusterIP": CLUSTER_IP,
        "clusterIPs": [CLUSTER_IP],
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
    }
    assert body["spec"]["ports"][0]["targetPort"] == 5000


def test_replacement_of_a_headless_service_keeps_cluster_ip_none() -> None:
    desired = stamp(service(headless=True))
    live = served(desired)
    live["spec"]["publishNotReadyAddresses"] = False

    body = replacement(desired, live)

    assert body["spec"]["clusterIP"] == "None"
    assert body["spec"]["clusterIPs"] == ["None"]
    assert body["spec"]["publishNotReadyAddresses"] is True


def test_replacement_of_a_service_prefers_what_desired_sets() -> None:
    desired_obj = service()
    desired_obj["spec"]["ipFamilyPolicy"] = "PreferDualStack"
    desired = stamp(desired_obj)
    live = served(stamp(service()))

    body = replacement(desired, live)

    assert body["spec"]["ipFamilyPolicy"] == "PreferDualStack"
    assert body["spec"]["clusterIP"] == CLUSTER_IP


def test_replacement_copies_no_service_fields_into_other_kinds() -> None:
    desired = stamp(deployment())
    live = served(stamp(deployment(replicas=2)))
    live["spec"]["clusterIP"] = CLUSTER_IP

    assert "clusterIP" not in replacement(desired, live)["spec"]


def test_replacement_of_an_object_without_labels_or_annotations() -> None:
    desired = stamp(service())
    live = served(service())
    del live["metadata"]["labels"]

    body = replacement(desired, live)

    assert body["metadata"]["labels"] == SELECTOR
    assert body["metadata"]["annotations"] == {HASH_ANNOTATION: _hash(desired)}


@pytest.mark.parametrize(
    ("make_desired", "make_old"),
    [
        (deployment, scaled_deployment),
        (service, service),
        (headless_service, headless_service),
    ],
    ids=["deployment", "service", "headless-service"],
)
def test_replacement_does_not_mutate_its_inputs(
    make_desired: Callable[[], Manifest], make_old: Callable[[], Manifest]
) -> None:
    desired = stamp(make_desired())
    live = served(make_old())
    desired_before, live_before = copy.deepcopy(desired), copy.deepcopy(live)

    body = replacement(desired, live)
    body["metadata"]["labels"]["changed"] = "yes"
    body["metadata"]["annotations"]["changed"] = "yes"
    body["spec"]["selector"]["changed"] = "yes"

    assert desired == desired_before
    assert live == live_before


@pytest.mark.parametrize(
    "make",
    [deployment, service, headless_service],
    ids=["deployment", "service", "headless-service"],
)
def test_a_replaced_object_is_then_up_to_date(make: Callable[[], Manifest]) -> None:
    desired = stamp(make())
    stale = served(make())
    stale["metadata"]["labels"]["team"] = "a"

    after = served(replacement(desired, stale))

    assert decide(desired, stale) == "replace"
    assert decide(desired, after) == "none"
    assert after["metadata"]["labels"]["team"] == "a"


@pytest.mark.parametrize(
    ("desired", "live", "same"),
    [
        ("0.5", "500m", True),
        ("1000m", "1", True),
        ("1024Mi", "1Gi", True),
        ("1e3", "1k", True),
        ("2", "1", False),
        ("1Gi", "1G", False),
        ("phi-3", "phi-3", True),
        ("abc", "abd", False),
    ],
    ids=[
        "half-cpu",
        "millis",
        "binary",
        "exponent",
        "different",
        "binary-vs-decimal",
        "text",
        "other-text",
    ],
)
def test_quantities_the_server_rewrites_still_cover(desired: str, live: str, same: bool) -> None:
    assert covers({"cpu": desired}, {"cpu": live}) is same
