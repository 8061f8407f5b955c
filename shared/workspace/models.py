"""Kaito's ``Workspace`` (``kaito.sh/v1alpha1`` and ``v1beta1``) as pydantic models: top-level
``resource``, ``inference`` and ``tuning`` (there is no ``spec``) and ``status``. Both versions
share one structure; the CRD generator (``crd.py``) adds the per-version differences. Fields that
Kaito keeps schemaless (``template``, ``volumeSource``) stay plain mappings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "kaito.sh"
KIND = "Workspace"
PLURAL = "workspaces"
VERSIONS = ("v1alpha1", "v1beta1")
STORAGE_VERSION = "v1beta1"

# A schemaless Kubernetes object (PodTemplateSpec, VolumeSource): kept as the user wrote it.
Schemaless = Annotated[
    dict[str, Any],
    Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}),
]


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class LabelSelectorRequirement(_Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None


class LabelSelector(_Model):
    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None


class ResourceSpec(_Model):
    count: int | None = Field(
        default=1, description="Number of GPU nodes. Deprecated in v1beta1; immutable."
    )
    instance_type: str | None = Field(
        default=None, description="GPU VM size (e.g. Standard_NC24ads_A100_v4). Immutable."
    )
    label_selector: LabelSelector = Field(
        description="Labels of the nodes to use; copied onto provisioned nodes. Immutable."
    )
    preferred_nodes: list[str] | None = Field(
        default=None, description="Existing nodes to use first. Deprecated in v1beta1."
    )


class PresetOptions(_Model):
    image: str | None = Field(default=None, description="Private model image (deprecated).")
    image_pull_secrets: list[str] | None = None
    model_access_secret: str | None = Field(
        default=None, description="Secret with key HF_TOKEN, for gated models."
    )


class PresetSpec(_Model):
    name: str = Field(min_length=1, description="Preset name or HuggingFace repo id.")
    access_mode: Literal["public", "private"] | None = Field(
        default="public", description="Deprecated in v1beta1."
    )
    preset_options: PresetOptions | None = None


class DataSource(_Model):
    name: str | None = None
    urls: list[str] | None = Field(default=None, description="Public http(s) links to the data.")
    volume_source: Schemaless | None = None
    image: str | None = Field(default=None, description="Image with the data under /data.")
    image_pull_secrets: list[str] | None = None


class DataDestination(_Model):
    volume_source: Schemaless | None = None
    image: str | None = None
    image_push_secret: str | None = Field(
        default=None, description="Secret with the registry credentials to push the image."
    )


class AdapterSpec(_Model):
    source: DataSource | None = None
    strength: str | None = Field(default=None, description="A float from 0 to 1, as a string.")


class InferenceSpec(_Model):
    preset: PresetSpec | None = None
    template: Schemaless | None = Field(default=None, description="A PodTemplateSpec.")
    config: str | None = Field(
        default=None, description="ConfigMap with key inference_config.yaml."
    )
    adapters: list[AdapterSpec] | None = None


class TuningSpec(_Model):
    preset: PresetSpec | None = None
    method: str | None = Field(default=None, description="lora or qlora.")
    config: str | None = Field(default=None, description="ConfigMap with training_config.yaml.")
    input: DataSource | None = None
    output: DataDestination | None = None


class Condition(_Model):
    """``metav1.Condition``."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: Literal["True", "False", "Unknown"]
    observed_generation: int | None = Field(default=None, ge=0)
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})
    reason: str = Field(
        max_length=1024, min_length=1, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    )
    message: str = Field(max_length=32768)


class WorkspacePhases(_Model):
    """Kaiten's addition: when the current generation reached each phase (RFC 3339 with
    milliseconds), from the audit log; ``kaiten history`` shows every generation."""

    generation: int | None = None
    observed: str | None = None
    planned: str | None = None
    nodes_requested: str | None = None
    nodes_ready: str | None = None
    workload_created: str | None = None
    pods_ready: str | None = None
    tuning_started: str | None = None
    tuning_finished: str | None = None
    succeeded: str | None = None
    failed: str | None = None
    deleting: str | None = None


class WorkspaceStatus(_Model):
    worker_nodes: list[str] | None = None
    conditions: list[Condition] | None = None
    state: str | None = Field(
        default=None, description="Pending, Ready, NotReady; Running, Succeeded, Failed."
    )
    target_node_count: int | None = None
    phases: WorkspacePhases | None = None


class Workspace(_Model):
    api_version: str | None = None
    kind: str | None = None
    metadata: dict[str, Any] | None = None
    resource: ResourceSpec | None = None
    inference: InferenceSpec | None = None
    tuning: TuningSpec | None = None
    status: WorkspaceStatus | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)
