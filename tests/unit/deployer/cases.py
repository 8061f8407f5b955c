"""The named Workspaces the deployer's render tests and the manifest contract test share: each is
planned by the real planner (as the watcher would hand it over, at revision 1) and rendered for
the node(s) the provisioner would have found."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from services.deployer.render import render
from shared.events import WorkspaceRef
from shared.labels import ENABLE_LB_ANNOTATION, REVISION_ANNOTATION
from shared.manifests import Manifest, Rendered, Target
from shared.plan import Plan
from tests.unit.planner.workspaces import (
    A100,
    A100_X2,
    V100,
    ConfigMapData,
    Doc,
    expect_plan,
    inference,
    inference_config,
    seed,
)

UID = "3f6c2a1e-8b4d-4e7a-9c15-2d0f7b9e6a41"
NAMESPACE = "default"
NODE = "aks-ws-12345678-vmss000000"
SECOND_NODE = "aks-ws-12345678-vmss000001"

PHI_3_MINI_SEED = "inference-phi-3-mini.yaml"
PHI_3_ADAPTER_SEED = "inference-phi-3-mini-adapter.yaml"

TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"team": "x"}},
    "spec": {
        "containers": [
            {
                "name": "server",
                "image": "example.test/server:1",
                "ports": [{"containerPort": 8080}],
            }
        ],
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    },
}
USER_CONFIG = "my-config"


@dataclass(frozen=True)
class Case:
    """One Workspace to render: the document, the ConfigMaps it names, and the nodes it got."""

    name: str
    workspace: Doc
    configmaps: ConfigMapData = field(default_factory=dict)
    nodes: tuple[str, ...] = (NODE,)


def as_observed(doc: Doc, revision: str = "1") -> Doc:
    """``doc`` in the default namespace with the revision annotation the watcher sets."""
    observed = copy.deepcopy(doc)
    metadata = observed.setdefault("metadata", {})
    metadata["namespace"] = NAMESPACE
    metadata.setdefault("annotations", {})[REVISION_ANNOTATION] = revision
    return observed


def named(doc: Doc, name: str) -> Doc:
    renamed = copy.deepcopy(doc)
    renamed["metadata"]["name"] = name
    return renamed


def ref_for(doc: Doc) -> WorkspaceRef:
    return WorkspaceRef(uid=UID, namespace=NAMESPACE, name=doc["metadata"]["name"], generation=1)


def plan_for(case: Case) -> Plan:
    return expect_plan(case.workspace, case.configmaps)


def target_for(case: Case, plan: Plan | None = None) -> Target:
    return Target(ref_for(case.workspace), plan or plan_for(case), case.nodes)


def rendered(case: Case) -> Rendered:
    return render(target_for(case))


def object_id(obj: Manifest) -> str:
    """``Kind/name``, as the test ids name rendered objects."""
    return f"{obj['kind']}/{obj['metadata']['name']}"


# --- the Workspaces ----------------------------------------------------------------------------


def _adapters_with_secrets() -> Doc:
    doc = named(inference("phi-3-mini-128k-instruct", V100), "adapters-with-secrets")
    doc["inference"]["adapters"] = [
        {
            "source": {
                "name": "image-adapter",
                "image": "registry.example.test/adapters/image-adapter:0.0.1",
                "imagePullSecrets": ["regcred"],
            },
            "strength": "0.5",
        },
        {
            "source": {
                "name": "volume-adapter",
                "volumeSource": {"persistentVolumeClaim": {"claimName": "adapters"}},
            },
            "strength": "1.0",
        },
    ]
    return doc


def _template() -> Doc:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "template"},
        "resource": {
            "instanceType": V100,
            "count": 1,
            "labelSelector": {"matchLabels": {"apps": "template"}},
        },
        "inference": {"template": copy.deepcopy(TEMPLATE)},
    }


def _load_balancer() -> Doc:
    doc = seed(PHI_3_MINI_SEED)
    doc.setdefault("metadata", {})["annotations"] = {ENABLE_LB_ANNOTATION: "True"}
    return doc


CASES: tuple[Case, ...] = (
    Case("seed-phi-3-mini", as_observed(seed(PHI_3_MINI_SEED))),
    Case("seed-phi-3-mini-adapter", as_observed(seed(PHI_3_ADAPTER_SEED))),
    # vLLM, data parallel over the node's 2 A100s.
    Case(
        "multi-gpu", as_observed(named(inference("phi-3-mini-4k-instruct", A100_X2), "multi-gpu"))
    ),
    # vLLM, tensor parallel over the node's 2 A100s.
    Case(
        "tensor-parallel",
        as_observed(named(inference("qwen2.5-coder-32b-instruct", A100_X2), "tensor-parallel")),
    ),
    # vLLM, pipeline parallel over two one-A100 nodes: a StatefulSet.
    Case(
        "multi-node",
        as_observed(named(inference("qwen2.5-coder-32b-instruct", A100), "multi-node")),
        nodes=(NODE, SECOND_NODE),
    ),
    Case("adapters-with-secrets", as_observed(_adapters_with_secrets())),
    Case("template", as_observed(_template())),
    Case(
        "user-config",
        as_observed(
            named(inference("phi-3-mini-4k-instruct", A100, config=USER_CONFIG), "user-config")
        ),
        configmaps=inference_config("vllm:\n  max-model-len: 2048\n", name=USER_CONFIG),
    ),
    Case("load-balancer", as_observed(_load_balancer())),
    # Gated and downloaded at start: the planner's helper names the hf-token secret.
    Case(
        "gated-model", as_observed(named(inference("llama-3.1-8b-instruct", A100), "gated-model"))
    ),
)
CASE_NAMES = tuple(c.name for c in CASES)


def case(name: str) -> Case:
    for known in CASES:
        if known.name == name:
            return known
    raise KeyError(f"no case {name!r}; the cases are {', '.join(CASE_NAMES)}")
