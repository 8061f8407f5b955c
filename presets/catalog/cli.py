"""Plain-text tables of the catalog for the ``kaiten presets`` command. Pure functions: they take
a Catalog and return the text, without printing."""

from __future__ import annotations

from collections.abc import Sequence

from presets.catalog import Catalog, GpuSku, ModelPreset

PRESET_COLUMNS = (
    "NAME",
    "RUNTIMES",
    "GPUS",
    "GPU MEM",
    "WEIGHTS",
    "CONTEXT",
    "TUNING",
    "GATED",
    "NOTES",
)
SKU_COLUMNS = ("NAME", "CLOUD", "GPUS", "GPU", "MEM/GPU", "TOTAL", "CC")
_RUNTIME_ORDER = ("vllm", "transformers")


def _gib(value: float) -> str:
    return f"{value:g}Gi"


def _tokens(count: int) -> str:
    return f"{count // 1024}K" if count % 1024 == 0 else str(count)


def _render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
    return "\n".join(lines)


def _notes(preset: ModelPreset) -> str:
    notes = []
    if preset.deprecated:
        notes.append("deprecated")
    if preset.quantization:
        notes.append(preset.quantization)
    if preset.distributed:
        notes.append("distributed")
    if not preset.vllm_lora:
        notes.append("no vLLM LoRA")
    if preset.download_at_runtime:
        notes.append("downloads weights")
    return ", ".join(notes) or "-"


def _preset_row(preset: ModelPreset) -> list[str]:
    return [
        preset.name,
        ",".join(r for r in _RUNTIME_ORDER if r in preset.runtimes),
        str(preset.gpu_count),
        _gib(preset.total_gpu_memory_gib),
        _gib(preset.weights_gib),
        _tokens(preset.token_limit),
        ",".join(sorted(preset.tuning)) if preset.tuning else "-",
        "yes" if preset.gated else "no",
        _notes(preset),
    ]


def _sku_row(sku: GpuSku) -> list[str]:
    return [
        sku.name,
        sku.cloud,
        str(sku.gpu_count),
        sku.gpu_model,
        _gib(round(sku.per_gpu_memory_gib, 2)),
        _gib(sku.total_memory_gib),
        f"{sku.compute_capability:.1f}" if sku.compute_capability else "-",
    ]


def format_presets(catalog: Catalog) -> str:
    """One row per preset, in catalog order."""
    return _render(PRESET_COLUMNS, [_preset_row(p) for p in catalog.presets()])


def format_skus(catalog: Catalog, cloud: str | None) -> str:
    """One row per instance type, optionally only those of ``cloud``."""
    return _render(SKU_COLUMNS, [_sku_row(s) for s in catalog.skus(cloud)])
