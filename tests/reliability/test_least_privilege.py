"""Least privilege, from what the services actually do (issue 14, item 6): the whole local stack
runs the five seed Workspaces to WorkspaceSucceeded and deletes them (so the finalizer and
cleanup paths run too), while the development cluster records, per client, every
(verb, API group, resource) its requests needed (``localdev/kubeapi/requestlog.py``; each
service's Kubernetes client says ``User-Agent: kaiten-<service>/<version>``). Then, per service:

- everything it used is granted to it by the Helm chart's RBAC contract (``EXPECTED_RBAC`` of
  ``tests/contract/test_helm_chart.py``, which that test checks equals the rendered ClusterRoles),
  but for ``NOT_THE_SERVICES``: what the development cluster's simulated cloud does in the
  provisioner's process and a real cluster's kubelet does with its own credentials;
- everything granted to it was used, but for ``NOT_EXERCISED``: grants whose paths this run
  cannot reach, each with its reason. A rule in neither list that no path uses is one too many.

The embedded stack runs the watcher with ``KAITEN_WEBHOOK_SELF_REGISTER`` on (its default), so
the watcher is held to the chart's ``self-register`` mode; it runs the provisioner with the
``simulated`` backend, which is the ``azure`` backend's ClaimController over a simulated cloud,
so the provisioner is held to the ``azure`` mode.

The recorder keeps (verb, group, resource), not the object's name: the ``resourceNames``
restriction of the self-register grants is checked by the chart test, not here."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from localdev.kubeapi.requestlog import RequestLog, client_of, rbac_verb
from presets.layout import INFERENCE_CONFIG_KEY
from services.watcher.core import MAX_REVISIONS
from shared.settings import SERVICE_NAMES
from tests.contract.test_helm_chart import (
    AZURE_RBAC,
    EXPECTED_RBAC,
    SELF_REGISTER_RBAC,
)
from tests.contract.test_helm_chart import Rule as ChartRule
from tests.e2e.test_seeds import SEED_DIR, SEED_FILES, Seed, leftovers
from tests.support.stack import Stack, running_stack, wait_until

Used = tuple[str, str, str]  # verb, API group, resource[/subresource]
SERVICE_CLIENT = "kaiten-{}"

# The chart's grants for the modes the embedded stack runs in (see the docstring).
GRANTED: dict[str, frozenset[ChartRule]] = dict(
    EXPECTED_RBAC,
    watcher=EXPECTED_RBAC["watcher"] | SELF_REGISTER_RBAC,
    provisioner=EXPECTED_RBAC["provisioner"] | AZURE_RBAC,
)

# Used, but not the service's to be granted: the simulated cloud (services/provisioner/cloud.py
# SimulatedCloud, through services/provisioner/kubeapi.py register_node) registers the Node of a
# new agent pool as a kubelet joining the cluster does. On AKS that kubelet, not Kaiten, creates
# the Node and writes its status, with the node's own credentials.
NOT_THE_SERVICES: dict[str, frozenset[Used]] = {
    "provisioner": frozenset(
        {
            ("create", "", "nodes"),
            # register_node reads the Node back when it already exists (a restart mid-join).
            ("get", "", "nodes"),
            ("update", "", "nodes/status"),
        }
    ),
}

# Granted, and needed, but not reached by a run of the seeds on the development cluster.
NOT_EXERCISED: dict[str, dict[Used, str]] = {
    "watcher": {
        ("update", "kaito.sh", "workspaces/finalizers"): (
            "not a request: kube-apiserver's OwnerReferencesPermissionEnforcement admission "
            "checks it when a write sets blockOwnerDeletion on an owner reference to a Workspace "
            "(the ControllerRevisions); the development cluster does not model that check"
        ),
        ("update", "admissionregistration.k8s.io", "validatingwebhookconfigurations"): (
            "webhook.register replaces the configuration only when its create answers 409 "
            "(a watcher restarted on a cluster that has it); the stack starts on a new cluster"
        ),
        ("get", "admissionregistration.k8s.io", "validatingwebhookconfigurations"): (
            "read before that replace, for its resourceVersion: the same 409 path"
        ),
    },
    "provisioner": {
        ("patch", "", "nodes"): (
            "label_node labels a node that joined without the Workspace's labels (Karpenter "
            "mode, or a node brought with the byo backend); simulated nodes join labelled"
        ),
    },
    "deployer": {
        ("update", "kaito.sh", "workspaces/finalizers"): (
            "the OwnerReferencesPermissionEnforcement check of blockOwnerDeletion on the "
            "workloads it creates (shared/manifests.py owner_reference), not a request"
        ),
        # A StatefulSet is the workload of a model spanning several nodes
        # (services/deployer/render.py is_multi_node); the seeds' models fit one GPU node.
        ("create", "apps", "statefulsets"): "multi-node inference only; no seed is multi-node",
        ("update", "apps", "statefulsets"): "multi-node inference only; no seed is multi-node",
        ("delete", "apps", "statefulsets"): "multi-node inference only; no seed is multi-node",
        ("update", "", "configmaps"): (
            "shared/workloads.py apply replaces the <ws>-inference-params ConfigMap only when "
            "its rendering changes; a Workspace naming its own inference.config (the spec "
            "changes of this run) gets none, and the default one never changes"
        ),
        ("update", "", "services"): (
            "apply replaces the Services only when their rendering changes (ports, selector); "
            "no spec change of this run changes them"
        ),
        ("get", "", "nodes"): (
            "ClusterApi.nodes reads the nodes of pods still waiting (WorkloadService."
            "pods_and_nodes), for the Workspace's readiness message; the simulated kubelet "
            "starts pods before the deployer looks (the tuner, slower, did read them)"
        ),
    },
    "tuner": {
        ("update", "kaito.sh", "workspaces/finalizers"): (
            "the OwnerReferencesPermissionEnforcement check of blockOwnerDeletion on the Job and "
            "ConfigMap it creates (shared/manifests.py owner_reference), not a request"
        ),
        ("update", "", "configmaps"): (
            "the training ConfigMap is replaced only when a tuning Workspace's spec changes its "
            "rendering; the run changes only an inference Workspace"
        ),
    },
}

# One rule each service cannot work without: the record cannot pass by being empty.
ANCHORS: dict[str, Used] = {
    "watcher": ("watch", "kaito.sh", "workspaces"),
    "planner": ("get", "", "configmaps"),
    "provisioner": ("create", "karpenter.sh", "nodeclaims"),
    "deployer": ("create", "apps", "deployments"),
    "tuner": ("create", "batch", "jobs"),
}


def as_used(grants: frozenset[ChartRule]) -> frozenset[Used]:
    """The chart's (group, resource, verb, name) rules as (verb, group, resource), names
    dropped: the recorder does not keep them."""
    return frozenset((verb, group, resource) for group, resource, verb, _ in grants)


def per_service(record: Mapping[str, list[list[str]]]) -> dict[str, frozenset[Used]]:
    """The record of ``/_kaiten/requests``, by service; other clients (kubectl, the stack's own
    tools) are left out."""
    clients = {SERVICE_CLIENT.format(s): s for s in SERVICE_NAMES}
    return {
        clients[client]: frozenset((verb, group, resource) for verb, group, resource in rules)
        for client, rules in record.items()
        if client in clients
    }


def show(rules: frozenset[Used] | set[Used]) -> str:
    return "\n  ".join(" ".join(r).replace("  ", " (core) ") for r in sorted(rules)) or "(none)"


# --- the run -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, bundled_nats_url: str, postgres_server_url: str
) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("least-privilege"), bundled_nats_url, postgres_server_url
    ) as running:
        yield running


def run_seed(
    stack: Stack,
    seed: Seed,
    *extra: dict[str, Any],
    then: Callable[[Stack, Seed], None] | None = None,
) -> None:
    """Apply ``seed`` (and ``extra`` objects before it) in a namespace of its own, wait for it
    to succeed, do ``then``, delete it and wait for everything of it to be gone (one after the
    other, as tests/e2e/test_seeds.py explains)."""
    ns = ("-n", seed.namespace)
    workspace = f"workspace/{seed.name}"
    stack.namespace(seed.namespace)
    if extra:
        stack.kubectl("apply", *ns, "-f", "-", input=yaml.safe_dump_all(extra))
    stack.kubectl("apply", *ns, "-f", str(seed.path))
    stack.kubectl(
        "wait", "--for=condition=WorkspaceSucceeded", workspace, *ns, "--timeout=60s", timeout=70
    )
    if then is not None:
        then(stack, seed)
    stack.kubectl("delete", workspace, *ns, "--wait", "--timeout=60s", timeout=70)
    wait_until(
        lambda: not leftovers(stack, seed), timeout=20, what=f"every object of {seed.name} gone"
    )


def inference_config(index: int) -> dict[str, Any]:
    """ConfigMap ``phi-3-mini-config-<index>``: a vLLM config of its own."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"phi-3-mini-config-{index}"},
        "data": {INFERENCE_CONFIG_KEY: f"vllm:\n  max-model-len: {2048 - index}\n"},
    }


def configured_seed(folder: Path) -> Seed:
    """The phi-3-mini inference seed with ``inference.config`` naming a ConfigMap (the planner
    reads it; no seed has one)."""
    doc = yaml.safe_load((SEED_DIR / "inference-phi-3-mini.yaml").read_text())
    doc["metadata"]["name"] = "workspace-phi-3-mini-configured"
    doc["inference"]["config"] = "phi-3-mini-config-0"
    path = folder / "configured-phi-3-mini.yaml"
    path.write_text(yaml.safe_dump(doc))
    return Seed.load(path)


def service_used(stack: Stack, service: str, rule: Used) -> bool:
    record = json.loads(stack.kubectl("get", "--raw", "/_kaiten/requests").stdout)
    return rule in per_service(record).get(service, frozenset())


def update_it_past_the_revision_limit(stack: Stack, seed: Seed) -> None:
    """Change the Workspace's spec ``MAX_REVISIONS`` times (a new ConfigMap each time), each
    change recorded as a ControllerRevision before the next: the deployer updates what it made,
    and the watcher prunes the oldest revision."""
    ns = ("-n", seed.namespace)
    for index in range(1, MAX_REVISIONS + 1):
        stack.kubectl("apply", *ns, "-f", "-", input=yaml.safe_dump(inference_config(index)))
        patch = {"inference": {"config": f"phi-3-mini-config-{index}"}}
        stack.kubectl(
            "patch", f"workspace/{seed.name}", *ns, "--type=merge", "-p", json.dumps(patch)
        )
        wait_until(
            partial(mounts, stack, seed, f"phi-3-mini-config-{index}"),
            timeout=20,
            what=f"the deployer to apply spec change {index}",
        )
    wait_until(
        lambda: service_used(stack, "watcher", ("delete", "apps", "controllerrevisions")),
        timeout=20,
        what="the watcher to prune the oldest ControllerRevision",
    )


def mounts(stack: Stack, seed: Seed, configmap: str) -> bool:
    """Whether the Workspace's Deployment, as the deployer wrote it, mounts ``configmap``."""
    return (
        f'"{configmap}"'
        in stack.kubectl(
            "get", f"deployment/{seed.name}", "-n", seed.namespace, "-o", "json", check=False
        ).stdout
    )


@pytest.fixture(scope="module")
def record(stack: Stack) -> dict[str, list[list[str]]]:
    """What every client used over the lives of the five seeds and of a configured one."""
    assert len(SEED_FILES) == 5, SEED_FILES
    for path in SEED_FILES:
        run_seed(stack, Seed.load(path))
    run_seed(
        stack,
        configured_seed(stack.home),
        inference_config(0),
        then=update_it_past_the_revision_limit,
    )
    raw = stack.kubectl("get", "--raw", "/_kaiten/requests").stdout
    found: dict[str, list[list[str]]] = json.loads(raw)
    return found


@pytest.fixture(scope="module")
def used(record: dict[str, list[list[str]]]) -> dict[str, frozenset[Used]]:
    return per_service(record)


# --- the checks --------------------------------------------------------------------------------


def test_every_service_is_recorded_and_nothing_else_is_taken_for_one(
    record: dict[str, list[list[str]]], used: dict[str, frozenset[Used]]
) -> None:
    assert sorted(used) == sorted(SERVICE_NAMES), sorted(record)
    for service, anchor in ANCHORS.items():
        assert anchor in used[service], f"{service} used only:\n  {show(used[service])}"
    # The test's own kubectl is recorded under its own name, and none of what only it did (the
    # namespaces, the Workspaces' creation) is attributed to a service.
    kubectl = {tuple(rule) for rule in record["kubectl"]}
    assert ("create", "", "namespaces") in kubectl
    assert ("create", "kaito.sh", "workspaces") in kubectl
    for service, rules in used.items():
        assert ("create", "", "namespaces") not in rules, service
        assert ("create", "kaito.sh", "workspaces") not in rules, service


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_a_service_uses_nothing_the_chart_does_not_grant_it(
    used: dict[str, frozenset[Used]], service: str
) -> None:
    granted = as_used(GRANTED[service])
    beyond = set(used[service]) - granted - NOT_THE_SERVICES.get(service, frozenset())
    assert not beyond, (
        f"{service} used what the chart does not grant it (an RBAC bug: it would be Forbidden "
        f"in a cluster):\n  {show(beyond)}\ngranted:\n  {show(granted)}"
    )


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_the_chart_grants_a_service_nothing_it_does_not_use(
    used: dict[str, frozenset[Used]], service: str
) -> None:
    allowed = NOT_EXERCISED.get(service, {})
    granted = as_used(GRANTED[service])
    assert set(allowed) <= granted, f"NOT_EXERCISED names what is not granted: {allowed}"
    unused = granted - used[service] - set(allowed)
    assert not unused, (
        f"the chart grants {service} what no path of the run used: remove it from "
        f"EXPECTED_RBAC and templates/rbac.yaml, or add it to NOT_EXERCISED with the reason "
        f"the run cannot reach it:\n  {show(unused)}\nused:\n  {show(used[service])}"
    )


def test_the_exemptions_are_about_what_the_service_does(
    used: dict[str, frozenset[Used]],
) -> None:
    """NOT_THE_SERVICES is not a blanket: each entry is something the run did use and the chart
    does not grant (else it belongs nowhere, or in the chart)."""
    for service, exempt in NOT_THE_SERVICES.items():
        assert not exempt & as_used(GRANTED[service]), service
        assert ("create", "", "nodes") in used[service], show(used[service])


# --- the recorder, without a stack -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "named", "watch", "verb"),
    [
        ("GET", True, False, "get"),
        ("GET", False, False, "list"),
        ("GET", False, True, "watch"),
        ("GET", True, True, "watch"),
        ("HEAD", True, False, "get"),
        ("POST", False, False, "create"),
        ("PUT", True, False, "update"),
        ("PATCH", True, False, "patch"),
        ("DELETE", True, False, "delete"),
        ("DELETE", False, False, "deletecollection"),
        ("patch", True, False, "patch"),
    ],
)
def test_the_recorder_speaks_rbac(method: str, named: bool, watch: bool, verb: str) -> None:
    assert rbac_verb(method, named=named, watch=watch) == verb


@pytest.mark.parametrize(
    ("user_agent", "client"),
    [
        ("kaiten-deployer/0.1.0", "kaiten-deployer"),
        ("kubectl/v1.37.1 (linux/amd64) kubernetes/abcdef", "kubectl"),
        ("OpenAPI-Generator/33.1.0/python", "OpenAPI-Generator"),
        ("curl 8.0", "curl"),
        ("", "unknown"),
    ],
)
def test_a_client_is_the_user_agents_product(user_agent: str, client: str) -> None:
    assert client_of(user_agent) == client


def test_the_record_is_a_set_per_client() -> None:
    log = RequestLog()
    for _ in range(3):
        log.record("kaiten-tuner/0.1.0", "get", "", "pods/proxy")
    log.record("kaiten-tuner/0.2.0", "create", "batch", "jobs")
    log.record("kubectl/v1.37.1", "list", "", "pods")
    assert log.snapshot() == {
        "kaiten-tuner": [["create", "batch", "jobs"], ["get", "", "pods/proxy"]],
        "kubectl": [["list", "", "pods"]],
    }
    assert per_service(log.snapshot()) == {
        "tuner": frozenset({("create", "batch", "jobs"), ("get", "", "pods/proxy")})
    }
