"""The plan: everything the provisioner, deployer and tuner need to act on one Workspace
generation, decided once by the planner and carried in ``PlanReady``. It is data, not code: the
services read it and never recompute what it says (node count, runtime, command line, memory)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PLAN_SCHEMA_VERSION = 1


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuInfo(_Part):
    """The instance type's GPUs, from the catalog."""

    model: str
    vendor: str
    count_per_node: int = Field(ge=1)
    memory_gib_per_gpu: float = Field(gt=0)
    compute_capability: float = Field(ge=0)
    nvme: bool


class MemoryBudget(_Part):
    """How one GPU's memory is spent, in GiB: ``usable`` = ``gpu_memory`` x ``utilization``
    = ``weights`` + ``kv_cache`` + ``reserve`` (activations, CUDA context and graphs)."""

    gpu_memory_gib: float
    utilization: float = Field(gt=0, le=1)
    usable_gib: float
    weights_gib: float
    kv_cache_gib: float
    reserve_gib: float
    context_tokens: int | None = Field(
        default=None, description="Tokens of context the KV cache holds (vLLM)."
    )


class RuntimeChoice(_Part):
    name: Literal["vllm", "transformers", "template"]
    reason: str


class Probe(_Part):
    path: str
    port: int
    initial_delay_s: int = Field(ge=0)
    period_s: int = Field(ge=1)
    timeout_s: int = Field(ge=1)
    failure_threshold: int = Field(ge=1)


class Probes(_Part):
    startup: Probe
    liveness: Probe
    readiness: Probe


class Port(_Part):
    name: str
    port: int = Field(ge=1, le=65535)


class AdapterPlan(_Part):
    name: str
    image: str | None = None
    volume: dict[str, Any] | None = None
    strength: float | None = None
    image_pull_secrets: tuple[str, ...] = ()


class TuningMemory(_Part):
    """The planner's estimate of one tuning run's GPU memory, in GiB (all GPUs of the node)."""

    weights_gib: float
    adapter_and_optimizer_gib: float
    activations_gib: float
    overhead_gib: float
    total_gib: float
    sequence_length: int
    batch_size: int


class TuningPlan(_Part):
    method: Literal["lora", "qlora"]
    config_source: str = Field(description="configmap/<name>, or template/<method>.")
    config_yaml: str = Field(description="The effective training_config.yaml.")
    memory: TuningMemory
    input: dict[str, Any] = Field(description="The Workspace's tuning.input, as written.")
    output: dict[str, Any] = Field(description="The Workspace's tuning.output, as written.")
    output_dir: str = Field(
        default="/mnt/results",
        description="TrainingArguments.output_dir: where the results volume is mounted.",
    )


class Price(_Part):
    usd_per_hour_per_node: float = Field(gt=0)
    usd_per_hour: float = Field(gt=0)
    source: str


class NodeSelection(_Part):
    """Which nodes may run the workload, from ``resource`` and the workspace's annotations."""

    label_selector: dict[str, str] = Field(
        default_factory=dict,
        description="resource.labelSelector.matchLabels without Kaito's reserved keys; copied "
        "onto provisioned nodes.",
    )
    preferred_nodes: tuple[str, ...] = Field(
        default=(), description="resource.preferredNodes: existing nodes to use first."
    )
    node_image_family: Literal["ubuntu", "azurelinux"] = Field(
        default="ubuntu", description="kaito.sh/node-image-family: the node OS image."
    )


class Plan(_Part):
    schema_version: int = PLAN_SCHEMA_VERSION
    mode: Literal["inference", "tuning"]
    preset: str | None = Field(description="The resolved preset name; None for a template.")
    model: str | None = Field(default=None, description="HuggingFace repo id.")
    model_revision: str | None = None
    instance_type: str | None
    gpu: GpuInfo | None = Field(description="None when the instance type is not in the catalog.")
    node_count: int = Field(ge=1)
    gpus_per_node: int | None = None
    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    data_parallel_size: int = Field(default=1, ge=1)
    runtime: RuntimeChoice
    dtype: str | None = None
    max_model_len: int | None = Field(default=None, description="Set when it must be capped.")
    gpu_memory_utilization: float | None = None
    memory: MemoryBudget | None = None
    disk_gib: int = Field(ge=1)
    nodes: NodeSelection = Field(default_factory=NodeSelection)
    image: str | None = Field(description="The runtime image; None for a template.")
    weights_image: str | None = Field(
        default=None, description="OCI artifact with the weights; None when downloaded at start."
    )
    command: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    model_access_secret: str | None = Field(
        default=None, description="Secret (key HF_TOKEN) for gated downloads, by name only."
    )
    ports: tuple[Port, ...] = ()
    probes: Probes | None = None
    readiness_timeout_s: int = Field(ge=1)
    inference_config: str | None = Field(
        default=None,
        description="The user's ConfigMap (key inference_config.yaml); None: the default template.",
    )
    load_balancer: bool = Field(
        default=False, description="kaito.sh/enablelb: True: the Service is a LoadBalancer."
    )
    template: dict[str, Any] | None = Field(
        default=None, description="inference.template: the user's PodTemplateSpec, as written."
    )
    revision: int | None = Field(
        default=None,
        description="workspace.kaito.io/revision of the generation planned; set on workloads.",
    )
    adapters: tuple[AdapterPlan, ...] = ()
    tuning: TuningPlan | None = None
    price: Price | None = None
    notes: tuple[str, ...] = ()
