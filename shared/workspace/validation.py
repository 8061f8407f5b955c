"""Workspace admission rules (Kaito's webhook, reference section 1.8) as one pure function of the
Workspace, the old Workspace and the catalog. It collects every problem with its field path and
never raises on bad input; the webhook and ``kaiten validate`` only render what it returns.

Checks that need the cluster (ConfigMap contents, BYO node labels) are left to the services that
read those objects; this module does no I/O."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from presets.catalog import LOCAL_CPU, Catalog, GpuSku, ModelPreset
from presets.selection import RUNTIME_ANNOTATION, select_runtime, vllm_supports
from shared.events import FieldProblem
from shared.labels import IMAGE_FAMILY_ANNOTATION
from shared.workspace.models import (
    AdapterSpec,
    DataDestination,
    DataSource,
    InferenceSpec,
    TuningSpec,
    Workspace,
)

BYPASS_ANNOTATION = "kaito.sh/bypass-resource-checks"
PERFORMANCE_ANNOTATION = "kaito.sh/performance-mode"
LOCAL_WEIGHTS_ANNOTATION = "kaito.sh/use-local-weights"
MAX_ADAPTERS = 10
RESERVED_LABELS = frozenset(
    {
        "kaito.sh/workspace",
        "kaito.sh/workspacenamespace",
        "kaito.sh/ragengine",
        "kaito.sh/ragenginenamespace",
        "karpenter.kaito.sh/workspace-name",
        "karpenter.kaito.sh/workspace-namespace",
        "karpenter.kaito.sh/inferenceset",
        "karpenter.kaito.sh/inferenceset-namespace",
    }
)
METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.google",
        "instance-data.ec2.internal",
    }
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# An image reference: [registry[:port]/]path[:tag][@digest]. Case is not checked in the path,
# because the seeds' placeholders (ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1) are upper case.
_IMAGE = re.compile(
    r"^([A-Za-z0-9.-]+(:[0-9]+)?/)?[A-Za-z0-9]+([._-]+[A-Za-z0-9]+)*(/[A-Za-z0-9]+([._-]+[A-Za-z0-9]+)*)*"
    r"(:[\w][\w.-]{0,127})?(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)


@dataclass(frozen=True, slots=True)
class ValidationContext:
    """What validation depends on besides the Workspace: the catalog and the cluster's mode."""

    catalog: Catalog
    cloud: str = "azure"
    node_auto_provisioning: bool = True
    # The embedded stack's cluster runs pods of instance type local-cpu as local processes.
    local_cpu: bool = False


Problems = Iterator[FieldProblem]


def validate_workspace(
    obj: Mapping[str, Any], old: Mapping[str, Any] | None, ctx: ValidationContext
) -> list[FieldProblem]:
    """Every problem of ``obj`` (a create when ``old`` is None, else an update)."""
    ws, problems = parse_workspace(obj)
    if ws is None:
        return problems
    problems += list(_check_top(ws, ctx))
    problems += list(_check_local_cpu(ws, ctx))
    if ws.inference is not None and ws.tuning is None:
        problems += list(_check_resource_for_inference(ws, ctx))
        problems += list(_check_inference(ws, ws.inference, ctx))
    if ws.tuning is not None and ws.inference is None:
        problems += list(_check_tuning(ws, ws.tuning, ctx))
    if old is not None:
        old_ws, _ = parse_workspace(old)
        if old_ws is not None:
            problems += list(_check_update(ws, old_ws))
    return problems


def render(problems: list[FieldProblem]) -> str:
    """Kaito's (knative's) style: ``<message>: <field>``, one per problem."""
    return "; ".join(f"{p.message}: {p.field}" if p.field else p.message for p in problems)


def parse_workspace(obj: Mapping[str, Any]) -> tuple[Workspace | None, list[FieldProblem]]:
    body = {k: v for k, v in obj.items() if k != "status"}
    try:
        return Workspace.model_validate(body), []
    except ValidationError as e:
        return None, [_from_pydantic(err) for err in e.errors()]
    except (TypeError, ValueError) as e:  # not even a mapping of the right shapes
        return None, [FieldProblem(field="", message=f"invalid value: {e}")]


def _from_pydantic(err: Any) -> FieldProblem:
    path = ""
    for part in err["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    value = err.get("input")
    shown = value if isinstance(value, str | int | float | bool) else type(value).__name__
    return FieldProblem(field=path, message=f"invalid value: {shown}: {err['msg']}")


# --- create: top level ----------------------------------------------------------------------


def _check_top(ws: Workspace, ctx: ValidationContext) -> Problems:
    meta = ws.metadata or {}
    name = str(meta.get("name") or "")
    if not _DNS_LABEL.match(name) or len(name) > 63:  # noqa: PLR2004
        yield FieldProblem(
            field="name",
            message=f"invalid value: {name}: must be a DNS-1123 "
            "label (lower case letters, digits and '-', at most 63 characters)",
        )
    if ws.inference is None and ws.tuning is None:
        yield FieldProblem(
            field="", message="Either Inference or Tuning must be specified, not neither"
        )
    if ws.inference is not None and ws.tuning is not None:
        yield FieldProblem(
            field="", message="Either Inference or Tuning must be specified, but not both"
        )
    yield from _check_annotations(_annotations(ws))
    if ws.resource is None:
        yield FieldProblem(field="resource", message="missing field(s)")
        return
    if ws.resource.count is not None and ws.resource.count < 1:
        yield FieldProblem(
            field="resource.count",
            message=f"invalid value: {ws.resource.count}: must be at least 1",
        )
    if ctx.node_auto_provisioning and not ws.resource.instance_type:
        yield FieldProblem(
            field="resource.instanceType",
            message="missing field(s): "
            "instanceType is required when node auto-provisioning is enabled",
        )
    if not ctx.node_auto_provisioning and ws.resource.instance_type:
        yield FieldProblem(
            field="resource.instanceType",
            message="instanceType must be empty "
            "when node auto-provisioning is disabled (BYO scenario)",
        )
    yield from _check_label_selector(ws)


def _check_annotations(annotations: Mapping[str, str]) -> Problems:
    allowed = {
        IMAGE_FAMILY_ANNOTATION: ("ubuntu", "azurelinux"),
        RUNTIME_ANNOTATION: ("vllm", "transformers"),
        PERFORMANCE_ANNOTATION: ("balanced", "interactivity", "throughput"),
        LOCAL_WEIGHTS_ANNOTATION: ("true", "false"),
    }
    for key, values in allowed.items():
        value = annotations.get(key)
        if value is None or value.lower() in values:
            continue
        field = f"metadata.annotations[{key}]"
        if key == IMAGE_FAMILY_ANNOTATION:
            yield FieldProblem(
                field=field,
                message=f'unsupported node image family "{value}", '
                "supported values are azurelinux, ubuntu",
            )
        else:
            yield FieldProblem(
                field=field,
                message=f"invalid value: {value}: supported values are {', '.join(values)}",
            )


def _check_label_selector(ws: Workspace) -> Problems:
    selector = ws.resource.label_selector if ws.resource else None
    if selector is None:
        return
    for i, expr in enumerate(selector.match_expressions or []):
        if expr.operator != "In" or len(expr.values or []) != 1:
            yield FieldProblem(
                field=f"resource.labelSelector.matchExpressions[{i}]",
                message="invalid value: Only allow matchLabels or 'IN' "
                "matchExpression with one value",
            )
    labels = set(selector.match_labels or {}) | {
        e.key for e in selector.match_expressions or [] if e.operator == "In"
    }
    if not labels - RESERVED_LABELS:
        yield FieldProblem(
            field="resource.labelSelector.matchLabels",
            message="matchLabels must contain at least one non-reserved label",
        )


def is_local_cpu(instance_type: str | None) -> bool:
    return (instance_type or "").lower() == LOCAL_CPU


def _check_local_cpu(ws: Workspace, ctx: ValidationContext) -> Problems:
    """local-cpu: no GPU, the pods run as processes on the embedded stack's machine. Only that
    cluster offers it; there the transformers runtime serves and LoRA (not QLoRA) tunes."""
    if ws.resource is None or not is_local_cpu(ws.resource.instance_type):
        return
    field = "resource.instanceType"
    if not ctx.local_cpu:
        yield FieldProblem(
            field=field,
            message=f"invalid value: {LOCAL_CPU}: this cluster does not offer it (only the "
            "embedded stack of `make up` runs pods as local processes); choose a GPU "
            "instance type",
        )
        return
    if (ws.resource.count or 1) > 1:
        yield FieldProblem(
            field="resource.count",
            message=f"invalid value: {ws.resource.count}: {LOCAL_CPU} is this one machine; "
            "set count to 1",
        )
    inference = ws.inference
    preset = ctx.catalog.preset(inference.preset.name) if inference and inference.preset else None
    if preset is not None and not preset.supports("transformers"):
        yield FieldProblem(
            field="inference.preset.name",
            message=f"invalid value: {preset.name}: {LOCAL_CPU} has no GPU and runs the "
            "transformers runtime only, which this preset does not support",
        )
    if ws.tuning is not None and (ws.tuning.method or "").lower() == "qlora":
        yield FieldProblem(
            field="tuning.method",
            message=f"invalid value: qlora: QLoRA needs a CUDA GPU (bitsandbytes); use lora on "
            f"{LOCAL_CPU}",
        )


# --- create: inference ----------------------------------------------------------------------


def _check_resource_for_inference(ws: Workspace, ctx: ValidationContext) -> Problems:
    inference = ws.inference
    if ws.resource is None or inference is None or inference.preset is None:
        return
    preset = ctx.catalog.preset(inference.preset.name)
    if preset is None:
        return  # reported by _check_inference
    if preset.deprecated:
        yield FieldProblem(
            field="inference.preset.name",
            message=f"Model {inference.preset.name} is deprecated and no longer supported",
        )
        return
    instance = ws.resource.instance_type
    if not instance or is_local_cpu(instance):
        return  # local-cpu: _check_local_cpu
    sku = ctx.catalog.sku(instance)
    if sku is None:
        if ctx.cloud == "azure" and instance.lower().startswith(("standard_n", "standard_d")):
            return  # Kaito accepts any Azure N- or D-series size without GPU checks
        supported = sorted(s.name for s in ctx.catalog.skus(_cloud_table(ctx.cloud)))
        yield FieldProblem(
            field="resource.instanceType",
            message=f"Unsupported instance type {instance}. "
            f"Supported SKUs: [{', '.join(supported)}]",
        )
        return
    if BYPASS_ANNOTATION not in _annotations(ws):
        yield from _check_gpu_fit(ws.resource.count or 1, sku, preset)
    runtime = select_runtime(_annotations(ws), preset, sku).runtime
    if runtime == "transformers" and preset.gpu_count > sku.gpu_count:
        yield FieldProblem(
            field="resource.instanceType",
            message="Multi-node distributed inference is not supported with "
            "Huggingface Transformers runtime",
        )
    if runtime == "vllm" and not vllm_supports(sku):
        yield FieldProblem(
            field="resource.instanceType",
            message=f"Runtime validation: "
            f"{preset.name} needs vLLM, which needs an NVIDIA GPU of compute "
            f"capability 8.0 or newer; {sku.name} has {sku.gpu_model} "
            f"({sku.compute_capability:g})",
        )


def _check_gpu_fit(count: int, sku: GpuSku, preset: ModelPreset) -> Problems:
    field = "resource.instanceType"
    if count * sku.gpu_count < preset.gpu_count:
        yield FieldProblem(
            field=field,
            message=f"Insufficient number of GPUs: Instance type "
            f"{sku.name} provides {count * sku.gpu_count}, but preset "
            f"{preset.name} requires at least {preset.gpu_count}",
        )
    if preset.per_gpu_memory_gib and sku.per_gpu_memory_gib < preset.per_gpu_memory_gib:
        yield FieldProblem(
            field=field,
            message=f"Insufficient per GPU memory: Instance type "
            f"{sku.name} provides {_gib(sku.per_gpu_memory_gib)} per GPU, but "
            f"preset {preset.name} requires at least "
            f"{_gib(preset.per_gpu_memory_gib)}",
        )
    total = count * sku.total_memory_gib
    if total < preset.total_gpu_memory_gib:
        yield FieldProblem(
            field=field,
            message=f"Insufficient total GPU memory: Instance type "
            f"{sku.name} has a total of {_gib(total)}, but preset {preset.name} "
            f"requires at least {_gib(preset.total_gpu_memory_gib)}",
        )


def _check_inference(ws: Workspace, inference: InferenceSpec, ctx: ValidationContext) -> Problems:
    if inference.preset is None and inference.template is None:
        yield FieldProblem(
            field="inference", message="missing field(s): Preset or Template must be specified"
        )
    if inference.preset is not None and inference.template is not None:
        yield FieldProblem(
            field="inference", message="Preset and Template cannot be set at the same time"
        )
    if inference.config is not None and not _DNS_SUBDOMAIN.match(inference.config):
        yield FieldProblem(
            field="inference.config",
            message=f"invalid value: {inference.config}: must be the name of a ConfigMap",
        )
    yield from _check_adapters(inference.adapters or [])
    if inference.preset is None:
        return
    preset = ctx.catalog.preset(inference.preset.name)
    if preset is None:
        yield FieldProblem(
            field="inference.preset.name",
            message=f"invalid value: Unsupported inference preset name {inference.preset.name}",
        )
        return
    yield from _check_preset_options(inference, preset)
    sku = ctx.catalog.sku(ws.resource.instance_type or "") if ws.resource else None
    yield from _check_runtime(ws, inference, preset, sku)


def _check_preset_options(inference: InferenceSpec, preset: ModelPreset) -> Problems:
    spec = inference.preset
    if spec is None:
        return
    options = spec.preset_options
    if spec.access_mode == "private" and not (options and options.image):
        yield FieldProblem(
            field="inference.preset.presetOptions.image",
            message="When AccessMode is private, an image must be provided in PresetOptions",
        )
    secret = options.model_access_secret if options else None
    field = "inference.preset.presetOptions.modelAccessSecret"
    if preset.download_at_runtime and preset.gated and not secret:
        yield FieldProblem(
            field=field,
            message="This preset requires authentication and needs "
            "a modelAccessSecret with HF_TOKEN key under presetOptions to download "
            "the model",
        )
    if secret and not preset.download_at_runtime:
        yield FieldProblem(
            field=field,
            message="This preset does not require a "
            "modelAccessSecret with HF_TOKEN key under presetOptions",
        )


def _check_runtime(
    ws: Workspace, inference: InferenceSpec, preset: ModelPreset, sku: GpuSku | None
) -> Problems:
    runtime = select_runtime(_annotations(ws), preset, sku).runtime
    if runtime == "transformers" and not preset.supports("transformers"):
        yield FieldProblem(
            field=f"metadata.annotations[{RUNTIME_ANNOTATION}]",
            message=f"Runtime "
            f"validation: model {preset.name} does not support inference with "
            "Huggingface Transformers runtime",
        )
    adapters = inference.adapters or []
    if runtime != "vllm" or not adapters:
        return
    if not preset.vllm_lora:
        yield FieldProblem(
            field="inference.adapters",
            message="Runtime validation: vLLM does not "
            f"support LoRA adapters for this model: {preset.name}",
        )
    for i, adapter in enumerate(adapters):
        if adapter.strength is not None:
            yield FieldProblem(
                field=f"inference.adapters[{i}].strength",
                message="Runtime validation: vLLM does not support adapter strength",
            )


def _check_adapters(adapters: list[AdapterSpec]) -> Problems:
    """Kaito checks each adapter on update only (a TODO upstream); Kaiten checks on create too,
    so a bad adapter is refused before it costs a GPU."""
    if len(adapters) > MAX_ADAPTERS:
        yield FieldProblem(
            field="inference.adapters",
            message="Number of Adapters exceeds the "
            f"maximum limit, maximum of {MAX_ADAPTERS} allowed",
        )
    seen: set[str] = set()
    for i, adapter in enumerate(adapters):
        field = f"inference.adapters[{i}]"
        name = adapter.source.name if adapter.source else None
        if name and name in seen:
            yield FieldProblem(
                field="inference.adapters", message=f"Duplicate adapter source name found: {name}"
            )
        seen.add(name or "")
        yield from _check_adapter(field, adapter)


def _check_adapter(field: str, adapter: AdapterSpec) -> Problems:
    source = adapter.source
    if source is None:
        yield FieldProblem(field=f"{field}.source", message="missing field(s): Source")
    else:
        if not source.name:
            yield FieldProblem(
                field=f"{field}.source.name", message="Name of Adapter field must be specified"
            )
        elif not _DNS_SUBDOMAIN.match(source.name):
            yield FieldProblem(
                field=f"{field}.source.name",
                message=f"invalid value: {source.name}: must be a DNS-1123 subdomain",
            )
        if source.urls:
            yield FieldProblem(
                field=f"{field}.source.urls",
                message="URLs are not supported for adapters; use image or volumeSource",
            )
        if not source.image and not source.volume_source:
            yield FieldProblem(
                field=f"{field}.source",
                message="Image or VolumeSource of Adapter field must be specified",
            )
        if source.image:
            yield from _check_image(f"{field}.source.image", source.image)
    if adapter.strength is None:
        return
    label = source.name if source and source.name else str(field)
    try:
        strength = float(adapter.strength)
    except ValueError as e:
        yield FieldProblem(
            field=f"{field}.strength", message=f"Invalid strength value for Adapter '{label}': {e}"
        )
        return
    if not 0.0 <= strength <= 1.0 or math.isnan(strength):
        yield FieldProblem(
            field=f"{field}.strength",
            message=f"Strength value for Adapter '{label}' must be between 0 and 1",
        )


# --- create: tuning -------------------------------------------------------------------------


def _check_tuning(ws: Workspace, tuning: TuningSpec, ctx: ValidationContext) -> Problems:
    if ws.resource is not None and (ws.resource.count or 1) > 1:
        yield FieldProblem(
            field="resource.count",
            message="Tuning does not currently support "
            "multinode configurations. Please set the node count to 1. Future "
            "support with DeepSpeed will allow this.",
        )
    if tuning.method is None or tuning.method.lower() not in ("lora", "qlora"):
        yield FieldProblem(
            field="tuning.method",
            message=f"invalid value: {tuning.method}: supported methods are lora, qlora",
        )
    if tuning.config is not None and not _DNS_SUBDOMAIN.match(tuning.config):
        yield FieldProblem(
            field="tuning.config",
            message=f"invalid value: {tuning.config}: must be the name of a ConfigMap",
        )
    if tuning.preset is None:
        yield FieldProblem(field="tuning.preset", message="missing field(s): Preset")
    else:
        preset = ctx.catalog.preset(tuning.preset.name)
        if preset is None:
            yield FieldProblem(
                field="tuning.preset.name",
                message=f"invalid value: Unsupported tuning preset name {tuning.preset.name}",
            )
        elif preset.deprecated:
            yield FieldProblem(
                field="tuning.preset.name",
                message=f"Model {preset.name} is deprecated and no longer supported",
            )
        elif not preset.supports_tuning:
            yield FieldProblem(
                field="tuning.preset.name",
                message=f"invalid value: Preset {preset.name} does not support tuning",
            )
    if tuning.input is None:
        yield FieldProblem(field="tuning.input", message="missing field(s): Input")
    else:
        yield from _check_input(tuning.input)
    if tuning.output is None:
        yield FieldProblem(field="tuning.output", message="missing field(s): Output")
    else:
        yield from _check_output(tuning.output)


def _check_input(source: DataSource) -> Problems:
    given = [bool(source.urls), source.volume_source is not None, bool(source.image)]
    if sum(given) != 1:
        yield FieldProblem(
            field="tuning.input", message="Exactly one of URLs, Volume, or Image must be specified"
        )
    if source.image:
        yield from _check_image("tuning.input.image", source.image)
    for i, url in enumerate(source.urls or []):
        problem = url_problem(url)
        if problem:
            yield FieldProblem(
                field=f"tuning.input.urls[{i}]", message=f"invalid value: {url}: {problem}"
            )


def _check_output(dest: DataDestination) -> Problems:
    if (dest.volume_source is not None) == bool(dest.image):
        yield FieldProblem(
            field="tuning.output", message="Exactly one of Volume or Image must be specified"
        )
    if dest.image:
        yield from _check_image("tuning.output.image", dest.image)
        if not dest.image_push_secret:
            yield FieldProblem(
                field="tuning.output.imagePushSecret",
                message="Must specify imagePushSecret with destination image",
            )


def url_problem(url: str) -> str | None:  # noqa: PLR0911 -- one return per reason
    """Why ``url`` cannot be downloaded by a tuning job, or None. No DNS lookups: literal
    hosts only (a name that resolves to a private address is caught by the downloader)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "URL scheme must be http or https"
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        return "URL must have a host"
    if host == "localhost" or host.endswith(".localhost"):
        return "URL must not point to localhost"
    if host in METADATA_HOSTS:
        return "URL must not point to a cloud metadata service"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
    ):
        return f"URL must not point to a loopback, private or link-local address ({ip})"
    return None


def _check_image(field: str, image: str) -> Problems:
    if not _IMAGE.match(image):
        yield FieldProblem(
            field=field,
            message=f"invalid value: {image}: not a valid image "
            "reference ([registry/]repository[:tag][@digest])",
        )


# --- update ---------------------------------------------------------------------------------


def _check_update(ws: Workspace, old: Workspace) -> Problems:
    for part in ("inference", "tuning"):
        if (getattr(ws, part) is None) != (getattr(old, part) is None):
            yield FieldProblem(
                field=part, message=f"{part.capitalize()} field cannot be toggled once set"
            )
    if ws.resource and old.resource:
        for attr, field in (
            ("count", "count"),
            ("instance_type", "instanceType"),
            ("label_selector", "labelSelector"),
        ):
            if getattr(old.resource, attr) != getattr(ws.resource, attr):
                yield FieldProblem(field=f"resource.{field}", message="field is immutable")
    if ws.inference and old.inference:
        if old.inference.preset != ws.inference.preset:
            yield FieldProblem(field="inference.preset", message="field is immutable")
        if (old.inference.template is None) != (ws.inference.template is None):
            yield FieldProblem(
                field="inference.template", message="field cannot be unset/set if it was set/unset"
            )
    if ws.tuning and old.tuning:
        yield from _check_tuning_update(ws.tuning, old.tuning)


def _check_tuning_update(new: TuningSpec, old: TuningSpec) -> Problems:
    if old.preset != new.preset:
        yield FieldProblem(field="tuning.preset", message="Preset cannot be changed")
    if (old.method or "").lower() != (new.method or "").lower():
        yield FieldProblem(field="tuning.method", message="Method cannot be changed")
    if old.input and new.input and old.input.name != new.input.name:
        yield FieldProblem(field="tuning.input.name", message="field is immutable")


# --- helpers --------------------------------------------------------------------------------


def _annotations(ws: Workspace) -> dict[str, str]:
    raw = (ws.metadata or {}).get("annotations") or {}
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}


def _cloud_table(cloud: str) -> str:
    return {"arc": "azure-arc"}.get(cloud, cloud)


def _gib(value: float) -> str:
    return f"{value:g}Gi"
