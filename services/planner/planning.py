"""From a Workspace, the ConfigMaps it names and the catalog to a complete plan, or a rejection
that says what to change. Pure: no I/O, no clock; the service and ``kaiten plan`` share it.

Sizing follows Kaito (reference 2.9, 3.2, 4): the vLLM node estimator, tensor/pipeline/data
parallelism tiers, gpu-memory-utilization, and the transformers runtime on GPUs older than compute
capability 8.0. Tuning memory is Kaiten's own estimate by method (QLoRA keeps 4-bit weights), so a
QLoRA run of a 3.8B model plans on a 16 GiB V100 where Kaito's flat per-preset figure would not."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from presets.catalog import LOCAL_CPU, Catalog, GpuSku, ModelPreset
from presets.catalog.prices import PriceTable
from presets.inference.vllm_launcher import read_config
from presets.layout import (
    ADAPTERS_DIR,
    CONFIG_DIR,
    DATA_DIR,
    HTTP_PORT,
    INFERENCE_CONFIG_KEY,
    TFS_WEIGHTS,
    TRAINING_CONFIG_KEY,
    VLLM_WEIGHTS,
)
from presets.selection import select_runtime, vllm_supports
from presets.tuning.config import (
    ConfigError,
    TuningConfig,
    fit_dtypes,
    merge_with_template,
    parse_config,
)
from shared.events import FieldProblem
from shared.labels import ENABLE_LB_ANNOTATION, IMAGE_FAMILY_ANNOTATION, REVISION_ANNOTATION
from shared.plan import (
    AdapterPlan,
    GpuInfo,
    MemoryBudget,
    NodeSelection,
    Plan,
    Port,
    Price,
    Probe,
    Probes,
    RuntimeChoice,
    TuningMemory,
    TuningPlan,
)
from shared.workspace.models import InferenceSpec, TuningSpec, Workspace
from shared.workspace.validation import (
    RESERVED_LABELS,
    ValidationContext,
    is_local_cpu,
    parse_workspace,
    validate_workspace,
)

GIB = 1024**3

# Kaito's estimator (reference 2.9).
DEFAULT_CONTEXT = 2048
RESERVE_GIB = 2.3
WEIGHT_OVERHEAD = 1.02  # the safetensors files understate the loaded weights a little
LOAD_OVERHEAD = 1.05
VLLM_UTILIZATION = 0.84
A10_UTILIZATION = 0.82  # Kaito leaves A10s more headroom (reference 4.4)
TRANSFORMERS_UTILIZATION = 0.95  # no preallocation: a margin against fragmentation
DATA_PARALLEL_WEIGHT_SHARE = 0.5  # tier 1: weights under half of one GPU replicate per GPU
KV_BLOCK = 256  # a capped max-model-len is rounded down to this

# Kaiten's tuning estimate (see estimate_tuning_memory).
QLORA_4BIT_SHARE = 0.30  # NF4 + double quantization, embeddings and head kept in 16 bits
QLORA_8BIT_SHARE = 0.55
ADAPTER_STATE_SHARE = 0.04  # LoRA r=8 params with fp32 grads and AdamW moments, per weight byte
TUNING_OVERHEAD_GIB = 1.5  # CUDA context, logits and temporaries
FRAGMENTATION = 1.10
DEFAULT_SEQUENCE_LENGTH = 1024  # TRL SFTConfig.max_length

MAX_SUGGESTIONS = 5
LOCAL_NOTE = f"{LOCAL_CPU}: no GPU; the pods run as processes on the embedded stack's machine"
BFLOAT16_MIN_COMPUTE_CAPABILITY = 8.0  # Ampere


@dataclass(frozen=True)
class Images:
    vllm: str = "ghcr.io/kaiten-dev/runtime-vllm:0.1.0"
    transformers: str = "ghcr.io/kaiten-dev/runtime-transformers:0.1.0"


@dataclass(frozen=True)
class PlanOptions:
    catalog: Catalog
    prices: PriceTable | None = None
    cloud: str = "azure"
    node_auto_provisioning: bool = True
    images: Images = field(default_factory=Images)
    local_cpu: bool = False  # the cluster runs local-cpu pods (the embedded stack)


@dataclass(frozen=True)
class Rejection:
    """Why no plan: a condition reason, one message saying what to change, and the fields."""

    reason: str
    message: str
    problems: tuple[FieldProblem, ...] = ()


class _Rejected(Exception):  # noqa: N818 -- control flow inside this module only
    def __init__(self, rejection: Rejection) -> None:
        self.rejection = rejection


def _reject(reason: str, field_path: str, message: str) -> _Rejected:
    return _Rejected(Rejection(reason, message, (FieldProblem(field=field_path, message=message),)))


# ConfigMaps by name: their ``data``, or None when the ConfigMap does not exist.
ConfigMaps = Mapping[str, Mapping[str, str] | None]


def configmaps_needed(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """The ConfigMaps a plan for ``obj`` reads (the caller fetches them)."""
    names = []
    for section in ("inference", "tuning"):
        spec = obj.get(section)
        if isinstance(spec, Mapping) and isinstance(spec.get("config"), str):
            names.append(spec["config"])
    return tuple(names)


def plan_workspace(
    obj: Mapping[str, Any], configmaps: ConfigMaps, options: PlanOptions
) -> Plan | Rejection:
    """The plan for ``obj`` (a Workspace as the API serves it), or why there is none."""
    ctx = ValidationContext(
        options.catalog, options.cloud, options.node_auto_provisioning, options.local_cpu
    )
    # The classic per-preset GPU checks ("Insufficient ...") are replaced by the estimator below,
    # which also says which instance types would fit.
    problems = [
        p for p in validate_workspace(obj, None, ctx) if not p.message.startswith("Insufficient ")
    ]
    ws, _ = parse_workspace(obj)
    if problems or ws is None:
        return Rejection(_reason_for(problems), _render(problems), tuple(problems))
    try:
        if ws.tuning is not None:
            plan = _plan_tuning(ws, ws.tuning, configmaps, options)
        elif ws.inference is not None:
            plan = _plan_inference(ws, ws.inference, configmaps, options)
        else:
            plan = None
    except _Rejected as rejected:
        return rejected.rejection
    if plan is not None:
        return plan.model_copy(update={"nodes": node_selection(ws), "revision": _revision(ws)})
    message = "Either Inference or Tuning must be specified, not neither"
    return Rejection("InvalidWorkspace", message, (FieldProblem(field="", message=message),))


def _reason_for(problems: list[FieldProblem]) -> str:
    first = problems[0] if problems else FieldProblem(field="", message="")
    if first.field.endswith("preset.name"):
        return "PresetDeprecated" if "deprecated" in first.message else "UnsupportedPreset"
    if first.field == "resource.instanceType" and first.message.startswith("Unsupported"):
        return "UnsupportedInstanceType"
    return "InvalidWorkspace"


def _render(problems: list[FieldProblem]) -> str:
    return "; ".join(f"{p.field}: {p.message}" if p.field else p.message for p in problems)


# --- inference ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """The vLLM sizing of one preset on one SKU."""

    nodes: int
    min_gpus: int
    utilization: float
    capacity_gib: float  # weights one GPU holds after the reserve and the KV minimum
    needed_gib: float  # the weights with overhead


def vllm_utilization(sku: GpuSku) -> float:
    return A10_UTILIZATION if "A10" in sku.gpu_model.upper().split() else VLLM_UTILIZATION


def estimate_nodes(preset: ModelPreset, sku: GpuSku, context: int) -> Estimate | str:
    """Kaito's node estimator for vLLM (reference 2.9), or why the GPU is too small."""
    per_gpu = sku.per_gpu_memory_gib
    utilization = vllm_utilization(sku)
    usable = per_gpu * utilization
    reserve = RESERVE_GIB + context * preset.bytes_per_token / sku.gpu_count / GIB
    needed = preset.weights_gib * WEIGHT_OVERHEAD
    if usable <= reserve:
        return (
            f"one {sku.gpu_model} GPU of {sku.name} has {_g(usable)} usable "
            f"({_g(per_gpu)} x {utilization}), less than the {_g(reserve)} reserve for "
            f"activations and the KV cache of {context} tokens before any weights: "
            f"{_g(reserve - usable + needed)} short"
        )
    capacity = (usable - reserve) / LOAD_OVERHEAD
    min_gpus = math.floor(needed / capacity) + 1
    return Estimate(
        nodes=math.ceil(min_gpus / sku.gpu_count),
        min_gpus=min_gpus,
        utilization=utilization,
        capacity_gib=capacity,
        needed_gib=needed,
    )


def _plan_inference(
    ws: Workspace, inference: InferenceSpec, configmaps: ConfigMaps, options: PlanOptions
) -> Plan:
    resource = ws.resource
    count = (resource.count if resource else None) or 1
    instance = resource.instance_type if resource else None
    if inference.preset is None:
        return _template_plan(ws, count, options)
    preset = _known_preset(options, inference.preset.name, "inference.preset.name")
    sku = options.catalog.sku(instance) if instance else None
    choice = select_runtime(_annotations(ws), preset, sku)
    config = _inference_config(inference, configmaps, preset)
    notes: list[str] = []
    local = is_local_cpu(instance)
    if local:
        choice = replace(choice, runtime="transformers", reason=f"{LOCAL_CPU}: no GPU for vLLM")
        notes.append(LOCAL_NOTE)
    elif sku is None:
        notes.append(_unknown_gpu_note(instance))
    if local:
        sizing = _Sizing(nodes=1)
    elif choice.runtime == "vllm":
        sizing = _vllm_sizing(
            preset, sku=sku, count=count, config=config, options=options, notes=notes
        )
    else:
        sizing = _transformers_sizing(preset, sku, count, options, notes)
    dtype = _fit_dtype(preset.vllm_dtype if choice.runtime == "vllm" else preset.dtype, sku, notes)
    if local:
        dtype = "float32"  # half precision on a CPU is slow where it works at all
    adapters = tuple(_adapter_plans(inference))
    presets_opts = inference.preset.preset_options
    plan = Plan(
        mode="inference",
        **_model_and_gpu(preset, instance, sku),
        node_count=sizing.nodes,
        tensor_parallel_size=sizing.tp,
        pipeline_parallel_size=sizing.pp,
        data_parallel_size=sizing.dp,
        runtime=RuntimeChoice(name=choice.runtime, reason=choice.reason),
        dtype=dtype,
        max_model_len=sizing.max_model_len,
        gpu_memory_utilization=sizing.utilization if choice.runtime == "vllm" else None,
        memory=sizing.memory,
        disk_gib=preset.disk_gib,
        image=options.images.vllm if choice.runtime == "vllm" else options.images.transformers,
        weights_image=None if preset.download_at_runtime else preset.image_ref,
        env={a.name: _strength(a.strength) for a in adapters if a.strength is not None},
        model_access_secret=presets_opts.model_access_secret if presets_opts else None,
        ports=(Port(name="http", port=HTTP_PORT),),
        probes=probes_for(preset.readiness_timeout_s),
        readiness_timeout_s=preset.readiness_timeout_s,
        inference_config=inference.config,
        load_balancer=_load_balancer(ws),
        adapters=adapters,
        price=_price(options, sku, sizing.nodes),
        notes=tuple(notes),
    )
    return plan.model_copy(update={"command": inference_command(plan, preset)})


@dataclass(frozen=True)
class _Sizing:
    nodes: int
    tp: int = 1
    pp: int = 1
    dp: int = 1
    utilization: float | None = None
    max_model_len: int | None = None
    memory: MemoryBudget | None = None


def _vllm_sizing(
    preset: ModelPreset,
    *,
    sku: GpuSku | None,
    count: int,
    config: Mapping[str, Any],
    options: PlanOptions,
    notes: list[str],
) -> _Sizing:
    if sku is None:
        return _Sizing(nodes=count, tp=1, utilization=VLLM_UTILIZATION)
    requested = requested_max_model_len(config)
    context = requested if isinstance(requested, int) else DEFAULT_CONTEXT
    estimate = estimate_nodes(preset, sku, context)
    if isinstance(estimate, str):
        raise _reject(
            "InsufficientGPUMemory",
            "resource.instanceType",
            f"{preset.name} does not fit {sku.name}: {estimate}. "
            f"{_suggest(preset, options, context)}",
        )
    nodes = estimate.nodes
    if nodes > 1 and not preset.distributed:
        short = estimate.needed_gib - estimate.capacity_gib * sku.gpu_count
        raise _reject(
            "InsufficientGPUMemory",
            "resource.instanceType",
            f"{preset.name} needs {_g(estimate.needed_gib)} of GPU memory for its weights, "
            f"{sku.name} holds {_g(estimate.capacity_gib * sku.gpu_count)} on one node "
            f"({sku.gpu_count} x {sku.gpu_model}, after the {_g(RESERVE_GIB)} reserve and the KV "
            f"cache of {context} tokens): {_g(short)} short, and {preset.name} cannot span "
            f"nodes. {_suggest(preset, options, context)}",
        )
    if nodes != count:
        notes.append(
            f"resource.count {count} is ignored with vLLM: the estimator plans {nodes} node(s)"
        )
    gpus = sku.gpu_count
    data_parallel = (
        nodes == 1
        and gpus > 1
        and estimate.needed_gib < DATA_PARALLEL_WEIGHT_SHARE * sku.per_gpu_memory_gib
    )
    tp, pp, dp = (1, 1, gpus) if data_parallel else (gpus, nodes, 1)
    shards = tp * pp
    usable = sku.per_gpu_memory_gib * estimate.utilization
    weights = estimate.needed_gib / shards * LOAD_OVERHEAD
    kv = usable - weights - RESERVE_GIB
    tokens = int(kv * GIB * shards / preset.bytes_per_token)
    limit = requested if isinstance(requested, int) else preset.token_limit
    max_model_len = None
    if tokens < limit:
        max_model_len = max(KV_BLOCK, tokens // KV_BLOCK * KV_BLOCK)
        notes.append(
            f"max-model-len capped at {max_model_len} tokens: the KV cache left on "
            f"{sku.gpu_model} holds {tokens} of the model's {limit}"
        )
    memory = MemoryBudget(
        gpu_memory_gib=round(sku.per_gpu_memory_gib, 2),
        utilization=estimate.utilization,
        usable_gib=round(usable, 2),
        weights_gib=round(weights, 2),
        kv_cache_gib=round(kv, 2),
        reserve_gib=RESERVE_GIB,
        context_tokens=min(tokens, limit),
    )
    return _Sizing(
        nodes=nodes,
        tp=tp,
        pp=pp,
        dp=dp,
        utilization=estimate.utilization,
        max_model_len=max_model_len,
        memory=memory,
    )


def transformers_fits(preset: ModelPreset, sku: GpuSku) -> float:
    """GiB left on one node after the weights and a reserve per GPU (negative: short)."""
    usable = sku.total_memory_gib * TRANSFORMERS_UTILIZATION
    return usable - preset.weights_gib * WEIGHT_OVERHEAD - RESERVE_GIB * sku.gpu_count


def _transformers_sizing(
    preset: ModelPreset,
    sku: GpuSku | None,
    count: int,
    options: PlanOptions,
    notes: list[str],
) -> _Sizing:
    if sku is None:
        return _Sizing(nodes=count)
    left = transformers_fits(preset, sku)
    if left < 0:
        raise _reject(
            "InsufficientGPUMemory",
            "resource.instanceType",
            f"{preset.name} needs {_g(preset.weights_gib * WEIGHT_OVERHEAD)} of GPU memory for "
            f"its weights plus {_g(RESERVE_GIB)} per GPU, and {sku.name} has "
            f"{_g(sku.total_memory_gib)} ({sku.gpu_count} x {sku.gpu_model}): {_g(-left)} short; "
            f"the transformers runtime cannot span nodes. "
            f"{_suggest(preset, options, DEFAULT_CONTEXT)}",
        )
    if count > 1:
        notes.append(f"{count} nodes: one full replica of the model on each")
    per_gpu_weights = preset.weights_gib * WEIGHT_OVERHEAD / sku.gpu_count
    usable = sku.per_gpu_memory_gib * TRANSFORMERS_UTILIZATION
    memory = MemoryBudget(
        gpu_memory_gib=round(sku.per_gpu_memory_gib, 2),
        utilization=TRANSFORMERS_UTILIZATION,
        usable_gib=round(usable, 2),
        weights_gib=round(per_gpu_weights, 2),
        kv_cache_gib=round(usable - per_gpu_weights - RESERVE_GIB, 2),
        reserve_gib=RESERVE_GIB,
    )
    return _Sizing(nodes=count, memory=memory)


def _inference_config(
    inference: InferenceSpec, configmaps: ConfigMaps, preset: ModelPreset
) -> dict[str, Any]:
    if inference.config is None:
        return {}
    text = _configmap_text(configmaps, inference.config, INFERENCE_CONFIG_KEY, "inference.config")
    try:
        config = read_config(text)
    except ValueError as e:
        raise _reject(
            "InvalidInferenceConfig",
            "inference.config",
            f"ConfigMap {inference.config!r} key {INFERENCE_CONFIG_KEY}: {e}",
        ) from None
    requested = requested_max_model_len(config)
    if requested is not None and (
        not isinstance(requested, int) or isinstance(requested, bool) or requested < 1
    ):
        raise _reject(
            "InvalidInferenceConfig",
            "inference.config",
            f"ConfigMap {inference.config!r}: vllm.max-model-len must be a positive integer, "
            f"not {requested!r}",
        )
    if isinstance(requested, int) and requested > preset.token_limit:
        raise _reject(
            "InvalidInferenceConfig",
            "inference.config",
            f"max-model-len {requested} exceeds model's maximum supported context window "
            f"{preset.token_limit} (ModelTokenLimit): lower vllm.max-model-len in ConfigMap "
            f"{inference.config!r}",
        )
    return config


def requested_max_model_len(config: Mapping[str, Any]) -> object:
    """The ``vllm:`` map's max-model-len, spelled with dashes or underscores (vLLM takes both)."""
    vllm = config.get("vllm") or {}
    if not isinstance(vllm, Mapping):
        return None
    return vllm.get("max-model-len", vllm.get("max_model_len"))


def _configmap_text(configmaps: ConfigMaps, name: str, key: str, field_path: str) -> str:
    data = configmaps.get(name)
    if data is None:
        raise _reject(
            "ConfigMapNotFound",
            field_path,
            f"ConfigMap '{name}' specified in '{field_path}' not found in the workspace "
            "namespace: create it, or remove the field to use the defaults",
        )
    if key not in data:
        raise _reject(
            "InvalidConfigMap",
            field_path,
            f"ConfigMap '{name}' has no key {key} (keys: {', '.join(sorted(data)) or 'none'})",
        )
    return data[key]


def _template_plan(ws: Workspace, count: int, options: PlanOptions) -> Plan:
    instance = ws.resource.instance_type if ws.resource else None
    sku = options.catalog.sku(instance) if instance else None
    return Plan(
        mode="inference",
        preset=None,
        instance_type=instance,
        gpu=_gpu_info(sku),
        node_count=count,
        gpus_per_node=sku.gpu_count if sku else None,
        runtime=RuntimeChoice(name="template", reason="inference.template: the user's pod"),
        disk_gib=1024,  # Kaito requests 1024Gi when the preset is unknown (reference 2.3)
        image=None,
        readiness_timeout_s=600,
        load_balancer=_load_balancer(ws),
        template=dict(ws.inference.template or {}) if ws.inference else None,
        price=_price(options, sku, count),
        notes=("a template workload runs as written; the planner sizes nothing",),
    )


def _adapter_plans(inference: InferenceSpec) -> list[AdapterPlan]:
    plans = []
    for adapter in inference.adapters or []:
        source = adapter.source
        if source is None or source.name is None:
            continue  # validation reported it
        plans.append(
            AdapterPlan(
                name=source.name,
                image=source.image,
                volume=source.volume_source,
                strength=float(adapter.strength) if adapter.strength is not None else None,
                image_pull_secrets=tuple(source.image_pull_secrets or ()),
            )
        )
    return plans


def _strength(value: float) -> str:
    return f"{value:g}"


def probes_for(readiness_timeout_s: int) -> Probes:
    """Kaito's current probes: a startup probe that allows the whole readiness timeout, then
    liveness and readiness every 10 s."""
    period = 10
    health = {"path": "/health", "port": HTTP_PORT, "period_s": period, "timeout_s": 5}
    return Probes(
        startup=Probe(
            **health,
            initial_delay_s=0,
            failure_threshold=max(1, math.ceil(readiness_timeout_s / period)),
        ),
        liveness=Probe(**health, initial_delay_s=0, failure_threshold=3),
        readiness=Probe(**health, initial_delay_s=0, failure_threshold=3),
    )


def inference_command(plan: Plan, preset: ModelPreset) -> tuple[str, ...]:
    """The container's argv: Kaiten's vLLM launcher or transformers server, with Kaito's flags
    (a flag whose value is None is left out; True is a bare flag)."""
    download = preset.download_at_runtime
    template = f"/workspace/chat_templates/{preset.chat_template}" if preset.chat_template else None
    if plan.runtime.name == "vllm":
        program = ["python3", "-m", "presets.inference.vllm_launcher"]
        multi_node = plan.pipeline_parallel_size > 1
        flags: list[tuple[str, object]] = [
            ("--model", preset.hf_repo if download else VLLM_WEIGHTS),
            ("--served-model-name", preset.name),
            ("--port", HTTP_PORT),
            ("--tensor-parallel-size", plan.tensor_parallel_size),
            ("--pipeline-parallel-size", plan.pipeline_parallel_size if multi_node else None),
            ("--distributed-executor-backend", "ray" if multi_node else None),
            (
                "--data-parallel-size",
                plan.data_parallel_size if plan.data_parallel_size > 1 else None,
            ),
            ("--gpu-memory-utilization", plan.gpu_memory_utilization),
            ("--max-model-len", plan.max_model_len),
            ("--dtype", plan.dtype),
            ("--chat-template", template),
            ("--download-dir", VLLM_WEIGHTS if download else None),
            ("--code-revision", preset.revision if download else None),
            ("--reasoning-parser", preset.reasoning_parser),
            ("--enable-lora", bool(plan.adapters)),
            ("--kaito-adapters-dir", ADAPTERS_DIR),
            # The deployer always mounts a config: the user's, or the default template.
            ("--kaito-config-file", f"{CONFIG_DIR}/{INFERENCE_CONFIG_KEY}"),
        ]
    else:
        program = ["python3", "-m", "presets.inference.server"]
        flags = [
            ("--model", preset.hf_repo if download else TFS_WEIGHTS),
            ("--served-model-name", preset.name),
            ("--port", HTTP_PORT),
            ("--pipeline", "text-generation"),
            ("--torch_dtype", plan.dtype),
            ("--chat_template", template),
            ("--adapters-dir", ADAPTERS_DIR),
        ]
    argv = list(program)
    for flag, value in flags:
        if value is True:
            argv.append(flag)
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    return tuple(argv)


# --- tuning ------------------------------------------------------------------------------------


def estimate_tuning_memory(preset: ModelPreset, config: TuningConfig) -> TuningMemory:
    """GPU memory of one LoRA or QLoRA run: the base weights (16-bit for LoRA; about 30 % of that
    in NF4 for QLoRA), the adapter's parameters with fp32 gradients and AdamW moments (scaled by
    the rank), activations of one batch (bytes per token x sequence x batch x 2), a fixed
    overhead, and 10 % for fragmentation."""
    quant = config.quantization
    share = QLORA_4BIT_SHARE if quant["load_in_4bit"] else 1.0
    if quant["load_in_8bit"]:
        share = QLORA_8BIT_SHARE
    weights = preset.weights_gib * share
    rank = int(config.lora.get("r") or 8)
    adapter = preset.weights_gib * ADAPTER_STATE_SHARE * rank / 8
    batch = int(config.training.get("per_device_train_batch_size") or 1)
    sequence = int(config.training.get("max_length") or DEFAULT_SEQUENCE_LENGTH)
    activations = batch * sequence * preset.bytes_per_token * 2 / GIB
    total = (weights + adapter + activations + TUNING_OVERHEAD_GIB) * FRAGMENTATION
    return TuningMemory(
        weights_gib=round(weights, 2),
        adapter_and_optimizer_gib=round(adapter, 2),
        activations_gib=round(activations, 2),
        overhead_gib=TUNING_OVERHEAD_GIB,
        total_gib=round(total, 2),
        sequence_length=sequence,
        batch_size=batch,
    )


def _plan_tuning(
    ws: Workspace, tuning: TuningSpec, configmaps: ConfigMaps, options: PlanOptions
) -> Plan:
    if tuning.preset is None:
        raise _reject("InvalidWorkspace", "tuning.preset", "missing field(s): Preset")
    preset = _known_preset(options, tuning.preset.name, "tuning.preset.name")
    method = "qlora" if (tuning.method or "").lower() == "qlora" else "lora"
    instance = ws.resource.instance_type if ws.resource else None
    sku = options.catalog.sku(instance) if instance else None
    notes: list[str] = []
    local = is_local_cpu(instance)
    if local:
        notes.append(LOCAL_NOTE)
    elif sku is None:
        notes.append(_unknown_gpu_note(instance))
    user_text = None
    source = f"template/{method}"
    if tuning.config is not None:
        user_text = _configmap_text(configmaps, tuning.config, TRAINING_CONFIG_KEY, "tuning.config")
        source = f"configmap/{tuning.config}"
    text = merge_with_template(method, user_text)
    if sku is not None or local:
        text, fitted = fit_dtypes(text, bfloat16=sku is not None and _has_bfloat16(sku), cpu=local)
        notes += fitted
    try:
        config = parse_config(text, method)
    except ConfigError as e:
        field_path = "tuning.config" if tuning.config else "tuning.method"
        problems = tuple(FieldProblem(field=field_path, message=p) for p in e.problems)
        raise _Rejected(
            Rejection(
                "InvalidTuningConfig",
                f"training_config.yaml ({source}): {'; '.join(e.problems)}",
                problems,
            )
        ) from None
    memory = estimate_tuning_memory(preset, config)
    if sku is not None and memory.total_gib > sku.total_memory_gib:
        raise _reject(
            "InsufficientGPUMemory",
            "resource.instanceType",
            f"{method} tuning of {preset.name} needs about {_g(memory.total_gib)} of GPU memory "
            f"and {sku.name} has {_g(sku.total_memory_gib)}: "
            f"{_g(memory.total_gib - sku.total_memory_gib)} short"
            + ("; method qlora needs far less" if method == "lora" else "")
            + f". {_suggest_tuning(preset, memory, options)}",
        )
    plan = Plan(
        mode="tuning",
        **_model_and_gpu(preset, instance, sku),
        node_count=1,
        runtime=RuntimeChoice(name="transformers", reason="tuning runs on PEFT + TRL"),
        dtype=config.model.get("torch_dtype"),
        disk_gib=preset.disk_gib,
        image=options.images.transformers,
        weights_image=None if preset.download_at_runtime else preset.image_ref,
        model_access_secret=(
            tuning.preset.preset_options.model_access_secret
            if tuning.preset.preset_options
            else None
        ),
        ports=(Port(name="http", port=HTTP_PORT),),
        readiness_timeout_s=preset.readiness_timeout_s,
        command=(
            "python3",
            "-m",
            "presets.tuning.cli",
            "--config",
            f"{CONFIG_DIR}/{TRAINING_CONFIG_KEY}",
            "--method",
            method,
            "--data",
            DATA_DIR,
            "--model",
            TFS_WEIGHTS,
            "--output",
            config.output_dir,
        ),
        tuning=TuningPlan(
            method=method,
            config_source=source,
            config_yaml=text,
            memory=memory,
            input=tuning.input.model_dump(by_alias=True, exclude_none=True) if tuning.input else {},
            output=(
                tuning.output.model_dump(by_alias=True, exclude_none=True) if tuning.output else {}
            ),
            output_dir=config.output_dir,
        ),
        price=_price(options, sku, 1),
        notes=tuple(notes),
    )
    return plan


# --- shared bits -------------------------------------------------------------------------------


def node_selection(ws: Workspace) -> NodeSelection:
    """Where the workload may run: the selector (without Kaito's reserved keys, which Kaito
    ignores), the preferred nodes and the node image family."""
    resource = ws.resource
    labels = dict(resource.label_selector.match_labels or {}) if resource else {}
    family = _annotations(ws).get(IMAGE_FAMILY_ANNOTATION, "").lower()
    return NodeSelection(
        label_selector={k: v for k, v in labels.items() if k not in RESERVED_LABELS},
        preferred_nodes=tuple((resource.preferred_nodes or []) if resource else []),
        node_image_family="azurelinux" if family == "azurelinux" else "ubuntu",
    )


def _load_balancer(ws: Workspace) -> bool:
    return _annotations(ws).get(ENABLE_LB_ANNOTATION) == "True"


def _revision(ws: Workspace) -> int | None:
    value = _annotations(ws).get(REVISION_ANNOTATION, "")
    return int(value) if value.isdigit() else None


def _annotations(ws: Workspace) -> dict[str, str]:
    return dict((ws.metadata or {}).get("annotations") or {})


def _known_preset(options: PlanOptions, name: str, field_path: str) -> ModelPreset:
    preset = options.catalog.preset(name)
    if preset is None:  # validation reports it first; kept for callers that skip validation
        raise _reject("UnsupportedPreset", field_path, f"Unsupported preset name {name}")
    return preset


def _has_bfloat16(sku: GpuSku) -> bool:
    return sku.vendor != "nvidia" or sku.compute_capability >= BFLOAT16_MIN_COMPUTE_CAPABILITY


def _fit_dtype(dtype: str, sku: GpuSku | None, notes: list[str]) -> str:
    if dtype == "bfloat16" and sku is not None and not _has_bfloat16(sku):
        notes.append(
            f"dtype float16 instead of bfloat16: {sku.gpu_model} (compute capability "
            f"{sku.compute_capability:g}) has no bfloat16"
        )
        return "float16"
    return dtype


def _model_and_gpu(preset: ModelPreset, instance: str | None, sku: GpuSku | None) -> dict[str, Any]:
    """The Plan fields that name the model and the GPU, the same in every mode."""
    return {
        "preset": preset.name,
        "model": preset.hf_repo,
        "model_revision": preset.revision,
        "instance_type": instance,
        "gpu": _gpu_info(sku),
        "gpus_per_node": sku.gpu_count if sku else None,
    }


def _gpu_info(sku: GpuSku | None) -> GpuInfo | None:
    if sku is None:
        return None
    return GpuInfo(
        model=sku.gpu_model,
        vendor=sku.vendor,
        count_per_node=sku.gpu_count,
        memory_gib_per_gpu=round(sku.per_gpu_memory_gib, 2),
        compute_capability=sku.compute_capability,
        nvme=sku.nvme,
    )


def _unknown_gpu_note(instance: str | None) -> str:
    if not instance:
        return "no instance type (existing nodes): GPU fit is checked on the nodes found"
    return f"instance type {instance} is not in the catalog: GPU fit is not checked"


def _price(options: PlanOptions, sku: GpuSku | None, nodes: int) -> Price | None:
    if options.prices is None or sku is None:
        return None
    entry = options.prices.price(sku.name)
    if entry is None:
        return None
    return Price(
        usd_per_hour_per_node=entry.usd_per_hour,
        usd_per_hour=round(entry.usd_per_hour * nodes, 4),
        source=options.prices.describe_source(sku.cloud),
    )


def _candidates(options: PlanOptions) -> list[GpuSku]:
    cloud = {"arc": "azure-arc"}.get(options.cloud, options.cloud)
    return [s for s in options.catalog.skus(cloud) if s.vendor == "nvidia"]


def _ranked(skus: list[GpuSku], options: PlanOptions) -> str:
    def key(sku: GpuSku) -> tuple[float, float, str]:
        entry = options.prices.price(sku.name) if options.prices else None
        return (entry.usd_per_hour if entry else math.inf, sku.total_memory_gib, sku.name)

    shown = []
    for sku in sorted(skus, key=key)[:MAX_SUGGESTIONS]:
        entry = options.prices.price(sku.name) if options.prices else None
        shown.append(f"{sku.name} (${entry.usd_per_hour:g}/h)" if entry else sku.name)
    if not shown:
        return "No instance type of the catalog fits it on one node."
    return f"Instance types that fit it on one node: {', '.join(shown)}."


def _suggest(preset: ModelPreset, options: PlanOptions, context: int) -> str:
    fitting = []
    for sku in _candidates(options):
        if preset.supports("vllm") and vllm_supports(sku):
            estimate = estimate_nodes(preset, sku, context)
            if isinstance(estimate, Estimate) and estimate.nodes == 1:
                fitting.append(sku)
        elif preset.supports("transformers") and transformers_fits(preset, sku) >= 0:
            fitting.append(sku)
    return _ranked(fitting, options)


def _suggest_tuning(preset: ModelPreset, memory: TuningMemory, options: PlanOptions) -> str:
    return _ranked(
        [s for s in _candidates(options) if s.total_memory_gib >= memory.total_gib], options
    )


def _g(gib: float) -> str:
    return f"{gib:.1f} GiB"
