"""Which inference runtime a Workspace gets: one pure function of its annotations, its preset and
its GPU, used by the admission checks and by the planner. vLLM needs an NVIDIA GPU of compute
capability 8.0 or newer; older GPUs (the V100 of ``Standard_NC6s_v3``) get transformers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from presets.catalog import GpuSku, ModelPreset

RUNTIME_ANNOTATION = "kaito.sh/runtime"
VLLM_MIN_COMPUTE_CAPABILITY = 8.0
Runtime = Literal["vllm", "transformers"]


@dataclass(frozen=True, slots=True)
class RuntimeChoice:
    runtime: Runtime
    reason: str


def select_runtime(  # noqa: PLR0911 -- one return per decision, in priority order
    annotations: Mapping[str, str] | None, preset: ModelPreset | None, sku: GpuSku | None
) -> RuntimeChoice:
    """The annotation when it names a runtime, else vLLM where the model and the GPU support it,
    else transformers. The reason says why, for the plan and for people."""
    requested = (annotations or {}).get(RUNTIME_ANNOTATION, "").strip().lower()
    if requested in ("vllm", "transformers"):
        return RuntimeChoice(requested, f"requested by the {RUNTIME_ANNOTATION} annotation")  # type: ignore[arg-type]
    if preset is None:
        return RuntimeChoice("vllm", "no preset: the default runtime")
    if not preset.supports("vllm"):
        return RuntimeChoice("transformers", f"{preset.name} runs on transformers only")
    if sku is None:
        return RuntimeChoice("vllm", "vLLM: the default runtime (instance type not in the catalog)")
    if not vllm_supports(sku):
        gpu = f"{sku.gpu_model} (compute capability {sku.compute_capability:g})"
        if preset.supports("transformers"):
            return RuntimeChoice(
                "transformers",
                f"transformers: vLLM needs compute capability "
                f"{VLLM_MIN_COMPUTE_CAPABILITY:g}+, and {sku.name} has {gpu}",
            )
        return RuntimeChoice(
            "vllm", f"vLLM: the only runtime of {preset.name}, though {sku.name} has {gpu}"
        )
    return RuntimeChoice(
        "vllm",
        f"vLLM: {preset.name} and {sku.gpu_model} (compute capability "
        f"{sku.compute_capability:g}) support it",
    )


def vllm_supports(sku: GpuSku) -> bool:
    return sku.vendor == "nvidia" and sku.compute_capability >= VLLM_MIN_COMPUTE_CAPABILITY
