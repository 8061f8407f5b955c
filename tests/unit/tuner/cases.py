"""The named tuning Workspaces the tuner's render tests and the manifest contract test share: each
is planned by the real planner (as the watcher hands it over, with its revision annotation) and
rendered for the one node the provisioner would have found.

The cases cover the three seed Workspaces, every input kind (several ``urls``, an ``image`` with
and without ``imagePullSecrets``, a ``volumeSource``) crossed with every output kind (``image``
with its ``imagePushSecret``, ``volumeSource``), a user ``training_config.yaml`` moving
``output_dir`` to ``/mnt/output``, two GPUs, an instance type the catalog does not know (no GPU
resources), a model access Secret, and another revision. Every tunable preset of the catalog ships
its weights as an artifact (``weights_image`` set); the render tests take it away from a plan to
see the other layout."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from services.tuner.render import render
from shared.events import WorkspaceRef
from shared.labels import REVISION_ANNOTATION
from shared.manifests import Manifest, Rendered, Target
from shared.plan import Plan
from tests.unit.planner.workspaces import (
    A100_X2,
    ConfigMapData,
    Doc,
    expect_plan,
    seed,
    training_config,
    tuning,
)

UID = "9b1f0c2e-4d6a-4f3b-8e21-7c5d3a9f1b60"
NAMESPACE = "default"
NODE = "aks-tuning-12345678-vmss000000"

TUNING_SEED = "tuning-phi-3.yaml"
TUNING_MINI_SEED = "tuning-phi-3-mini.yaml"
TUNING_ADAPTER_SEED = "tuning-phi-3-mini-128k-adapter.yaml"
SEED_URL = (
    "https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/"
    "train-00000-of-00001-54e3756291ca09c6.parquet?download=true"
)
SEED_OUTPUT_IMAGE = "ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1"
SEED_PUSH_SECRET = "ACR_REGISTRY_SECRET_HERE"

URLS = (
    "https://huggingface.co/datasets/example/chat/resolve/main/train-0.parquet?download=true",
    "https://example.com/data/train-1.jsonl",
    "https://example.com/data/train-2.csv",
)
DATA_IMAGE = "registry.example.test/datasets/dolly:1.0"
PULL_SECRETS = ("data-pull", "other-pull")
OUTPUT_IMAGE = "registry.example.test/adapters/phi-3-dolly:0.1.0"
PUSH_SECRET = "adapter-push"
DATA_PVC = {"persistentVolumeClaim": {"claimName": "data"}}
RESULTS_PVC = {"persistentVolumeClaim": {"claimName": "results"}}
USER_CONFIG = "tuning-output"
USER_OUTPUT_DIR = "/mnt/output"
MODEL_ACCESS_SECRET = "hf-token"
REVISION = "7"


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

INPUTS: dict[str, dict[str, Any]] = {
    "urls": {"urls": list(URLS)},
    "image": {"image": DATA_IMAGE, "imagePullSecrets": list(PULL_SECRETS)},
    "public-image": {"image": DATA_IMAGE},
    "volume": {"volumeSource": DATA_PVC},
}
OUTPUTS: dict[str, dict[str, Any]] = {
    "image": {"image": OUTPUT_IMAGE, "imagePushSecret": PUSH_SECRET},
    "volume": {"volumeSource": RESULTS_PVC},
}


def with_data(
    name: str, source: dict[str, Any], destination: dict[str, Any], doc: Doc | None = None
) -> Doc:
    """The tuning seed (or ``doc``) named ``name``, reading ``source`` and writing
    ``destination``."""
    changed = copy.deepcopy(doc if doc is not None else tuning())
    changed["metadata"]["name"] = name
    changed["tuning"]["input"] = copy.deepcopy(source)
    changed["tuning"]["output"] = copy.deepcopy(destination)
    return changed


def _matrix() -> tuple[Case, ...]:
    return tuple(
        Case(
            f"{source}-to-{destination}", as_observed(with_data(f"{source}-to-{destination}", i, o))
        )
        for source, i in INPUTS.items()
        for destination, o in OUTPUTS.items()
    )


def _output_dir(destination: str) -> Case:
    name = f"output-dir-to-{destination}"
    return Case(
        name,
        as_observed(
            with_data(name, INPUTS["urls"], OUTPUTS[destination], tuning(config=USER_CONFIG))
        ),
        configmaps=training_config(
            f"training_config:\n  TrainingArguments:\n    output_dir: {USER_OUTPUT_DIR}\n",
            name=USER_CONFIG,
        ),
    )


def _model_access() -> Doc:
    doc = with_data("model-access", INPUTS["urls"], OUTPUTS["image"])
    doc["tuning"]["preset"]["presetOptions"] = {"modelAccessSecret": MODEL_ACCESS_SECRET}
    return doc


SEED_CASES: tuple[Case, ...] = (
    Case("seed-tuning-phi-3", as_observed(seed(TUNING_SEED))),
    Case("seed-tuning-phi-3-mini", as_observed(seed(TUNING_MINI_SEED))),
    Case("seed-tuning-phi-3-mini-128k-adapter", as_observed(seed(TUNING_ADAPTER_SEED))),
)
CASES: tuple[Case, ...] = (
    *SEED_CASES,
    *_matrix(),
    _output_dir("image"),
    _output_dir("volume"),
    # lora over the node's two A100s.
    Case(
        "two-gpus",
        as_observed(
            with_data(
                "two-gpus",
                INPUTS["urls"],
                OUTPUTS["image"],
                tuning("phi-3-mini-4k-instruct", A100_X2, "lora"),
            )
        ),
    ),
    # Not in the catalog: planned without GPU information, so no GPU resources are asked for.
    Case(
        "unknown-instance-type",
        as_observed(
            with_data(
                "unknown-instance-type",
                INPUTS["urls"],
                OUTPUTS["volume"],
                tuning(instance_type="Standard_D4s_v3"),
            )
        ),
    ),
    Case("model-access", as_observed(_model_access())),
    Case(
        "revised",
        as_observed(with_data("revised", INPUTS["urls"], OUTPUTS["image"]), revision=REVISION),
    ),
)
CASE_NAMES = tuple(c.name for c in CASES)


def case(name: str) -> Case:
    for known in CASES:
        if known.name == name:
            return known
    raise KeyError(f"no case {name!r}; the cases are {', '.join(CASE_NAMES)}")


def cases_where(*, source: str | None = None, destination: str | None = None) -> list[str]:
    """The names of the cases reading from input kind ``source`` and/or writing to output kind
    ``destination`` (``urls``/``image``/``volumeSource``; ``image``/``volumeSource``)."""
    names = []
    for c in CASES:
        spec = c.workspace["tuning"]
        if source is not None and source not in spec["input"]:
            continue
        if destination is not None and destination not in spec["output"]:
            continue
        names.append(c.name)
    return names
