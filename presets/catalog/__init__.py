"""The model preset and GPU instance-type catalog: typed, immutable views of the packaged
``models.yaml`` and ``skus.yaml``, validated on load. Lookups are case-insensitive; presets are
found by name or by any alias, HuggingFace repo ids included."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "LOCAL_CPU",
    "Catalog",
    "CatalogError",
    "GpuSku",
    "ModelPreset",
    "default_catalog",
    "load_catalog",
]

RUNTIMES = frozenset({"vllm", "transformers"})
CLOUDS = ("azure", "azure-arc", "aws")
_CLOUD_ALIASES = MappingProxyType({"arc": "azure-arc"})


# The instance type of the embedded stack's local pod runner: no GPU, pods run as processes on
# the developer's machine. Not a SKU: it is valid only where the cluster offers it.
LOCAL_CPU = "local-cpu"


class CatalogError(ValueError):
    """A catalog file that cannot be used: unreadable, malformed, or an entry that fails checks."""


@dataclass(frozen=True, slots=True)
class ModelPreset:
    """One model preset: where its weights come from, what it needs, and how it runs."""

    name: str
    aliases: tuple[str, ...]
    hf_repo: str
    revision: str | None
    weights_gib: float
    bytes_per_token: int
    token_limit: int
    disk_gib: int
    gpu_count: int
    total_gpu_memory_gib: float
    per_gpu_memory_gib: float
    runtimes: frozenset[str]
    distributed: bool
    vllm_lora: bool
    # GiB of total GPU memory per tuning method; None when the preset cannot be tuned.
    tuning: Mapping[str, float] | None = field(hash=False)
    gated: bool
    download_at_runtime: bool
    deprecated: bool
    image: str
    tag: str
    readiness_timeout_s: int
    dtype: str
    vllm_dtype: str
    chat_template: str | None
    reasoning_parser: str | None
    architecture: str
    quantization: str | None

    @property
    def supports_tuning(self) -> bool:
        return bool(self.tuning)

    def supports(self, runtime: str) -> bool:
        """Whether the preset runs on ``runtime`` (``vllm`` or ``transformers``)."""
        return runtime.strip().lower() in self.runtimes

    @property
    def image_ref(self) -> str:
        return f"{self.image}:{self.tag}"


@dataclass(frozen=True, slots=True)
class GpuSku:
    """One instance type with GPUs; ``total_memory_gib`` is the GPU memory of the whole VM."""

    name: str
    cloud: str
    gpu_count: int
    total_memory_gib: float
    gpu_model: str
    compute_capability: float
    vendor: str
    nvme: bool
    source: str

    @property
    def per_gpu_memory_gib(self) -> float:
        return self.total_memory_gib / self.gpu_count


# Azure VM size names: Standard_<family letters><vCPUs><features>_<accelerator>_<version>.
AZURE_SIZE_NAME = re.compile(r"^Standard_([A-Za-z]+)(\d+)(.*)$", re.IGNORECASE)


def vcpus_of(instance_type: str) -> int | None:
    """The vCPUs of an Azure VM size, from its name: the number after the family's letters
    (``Standard_NC24ads_A100_v4`` -> 24); None when the name does not say."""
    match = AZURE_SIZE_NAME.match(instance_type)
    return int(match.group(2)) if match else None


def _key(name: str) -> str:
    return name.strip().lower()


def _index_presets(presets: Iterable[ModelPreset]) -> Mapping[str, ModelPreset]:
    index: dict[str, ModelPreset] = {}
    for preset in presets:
        for field_name, names in (("name", (preset.name,)), ("aliases", preset.aliases)):
            for name in names:
                other = index.get(_key(name))
                if other is not None and other is not preset:
                    raise CatalogError(
                        f"preset {preset.name!r}: field {field_name!r}: {name!r} is already "
                        f"used by preset {other.name!r}"
                    )
                index[_key(name)] = preset
    return MappingProxyType(index)


_Item = TypeVar("_Item")


def _index_unique(
    items: Iterable[_Item], name_of: Callable[[_Item], str], kind: str, field_name: str
) -> Mapping[str, _Item]:
    """``items`` by case-insensitive name; a name used twice is a CatalogError."""
    index: dict[str, _Item] = {}
    for item in items:
        name = name_of(item)
        if _key(name) in index:
            raise CatalogError(f"{kind} {name!r}: field {field_name!r}: duplicate instance type")
        index[_key(name)] = item
    return MappingProxyType(index)


def _index_skus(skus: Iterable[GpuSku]) -> Mapping[str, GpuSku]:
    return _index_unique(skus, lambda sku: sku.name, "sku", "name")


@dataclass(frozen=True)
class Catalog:
    """Every preset and GPU SKU, with case-insensitive lookups. Immutable."""

    preset_entries: tuple[ModelPreset, ...]
    sku_entries: tuple[GpuSku, ...]
    _preset_index: Mapping[str, ModelPreset] = field(init=False, repr=False, compare=False)
    _sku_index: Mapping[str, GpuSku] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_preset_index", _index_presets(self.preset_entries))
        object.__setattr__(self, "_sku_index", _index_skus(self.sku_entries))

    def preset(self, name: str) -> ModelPreset | None:
        """The preset named ``name`` or having it as an alias (HF repo ids too); any case."""
        return self._preset_index.get(_key(name))

    def sku(self, name: str) -> GpuSku | None:
        """The instance type ``name``, in any case."""
        return self._sku_index.get(_key(name))

    def presets(self) -> tuple[ModelPreset, ...]:
        return self.preset_entries

    def skus(self, cloud: str | None = None) -> tuple[GpuSku, ...]:
        """All SKUs, or those of one cloud (``azure``, ``azure-arc`` or ``arc``, ``aws``)."""
        if cloud is None:
            return self.sku_entries
        wanted = _key(cloud)
        wanted = _CLOUD_ALIASES.get(wanted, wanted)
        return tuple(s for s in self.sku_entries if s.cloud == wanted)


# --- file schema -------------------------------------------------------------------------------

_Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")]
_HfRepo = Annotated[str, Field(pattern=r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")]
_Dtype = Literal["auto", "float16", "bfloat16", "float32"]
_NonEmpty = Annotated[str, Field(min_length=1)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _PresetEntry(_Entry):
    name: _Name
    aliases: list[_NonEmpty]
    hf_repo: _HfRepo
    revision: Annotated[str, Field(pattern=r"^[0-9a-f]{7,40}$")] | None
    weights_gib: Annotated[float, Field(gt=0)]
    bytes_per_token: Annotated[int, Field(gt=0)]
    token_limit: Annotated[int, Field(gt=0)]
    disk_gib: Annotated[int, Field(gt=0)]
    gpu_count: Annotated[int, Field(ge=1)]
    total_gpu_memory_gib: Annotated[float, Field(gt=0)]
    per_gpu_memory_gib: Annotated[float, Field(ge=0)]
    runtimes: Annotated[list[Literal["vllm", "transformers"]], Field(min_length=1)]
    distributed: bool
    vllm_lora: bool
    tuning: (
        Annotated[
            dict[Literal["lora", "qlora"], Annotated[float, Field(gt=0)]], Field(min_length=1)
        ]
        | None
    )
    gated: bool
    download_at_runtime: bool
    deprecated: bool
    image: Annotated[str, Field(pattern=r"^[\w.\-]+(:\d+)?(/[\w.\-]+)+$")]
    tag: Annotated[str, Field(pattern=r"^[\w][\w.\-]{0,127}$")]
    readiness_timeout_s: Annotated[int, Field(gt=0)]
    dtype: _Dtype
    vllm_dtype: _Dtype
    chat_template: Annotated[str, Field(pattern=r"^[\w.\-]+\.jinja$")] | None
    reasoning_parser: Annotated[str, Field(pattern=r"^[a-z0-9_]+$")] | None
    architecture: Annotated[str, Field(pattern=r"^[A-Z][A-Za-z0-9]*$")]
    quantization: Annotated[str, Field(pattern=r"^[a-z0-9_\-]+$")] | None

    @model_validator(mode="after")
    def _consistent(self) -> _PresetEntry:
        if len(set(self.runtimes)) != len(self.runtimes):
            raise ValueError("field 'runtimes': a runtime is listed twice")
        if _key(self.hf_repo) not in {_key(a) for a in self.aliases}:
            raise ValueError(f"field 'aliases': must include the hf_repo {self.hf_repo!r}")
        return self

    def to_preset(self) -> ModelPreset:
        values: dict[str, Any] = self.model_dump()
        values["aliases"] = tuple(self.aliases)
        values["runtimes"] = frozenset(self.runtimes)
        values["tuning"] = None if self.tuning is None else MappingProxyType(dict(self.tuning))
        return ModelPreset(**values)


class _SkuEntry(_Entry):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][\w.\-]*$")]
    cloud: Literal["azure", "azure-arc", "aws"]
    gpu_count: Annotated[int, Field(ge=1)]
    total_memory_gib: Annotated[float, Field(gt=0)]
    gpu_model: _NonEmpty
    compute_capability: Annotated[float, Field(ge=0)]
    vendor: Literal["nvidia", "amd", "aws-neuron"]
    nvme: bool
    source: Literal["current", "classic"]

    @model_validator(mode="after")
    def _consistent(self) -> _SkuEntry:
        if self.vendor == "nvidia" and self.compute_capability <= 0:
            raise ValueError("field 'compute_capability': an NVIDIA GPU needs one above 0")
        return self

    def to_sku(self) -> GpuSku:
        return GpuSku(**self.model_dump())


# --- loading -----------------------------------------------------------------------------------

_Source = Path | Traversable
_T = TypeVar("_T")


def _read_yaml(source: _Source) -> Any:
    try:
        return yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"{source}: cannot be read: {exc}") from exc


def _read_entries(source: _Source, key: str) -> list[Any]:
    document = _read_yaml(source)
    if not isinstance(document, dict) or set(document) != {key}:
        raise CatalogError(f"{source}: must be a mapping with the single key {key!r}")
    entries = document[key]
    if not isinstance(entries, list):
        raise CatalogError(f"{source}: {key!r} must be a list of mappings")
    return entries


def _describe(error: ValidationError) -> str:
    parts = []
    for detail in error.errors():
        loc = ".".join(str(p) for p in detail["loc"])
        message = str(detail["msg"]).removeprefix("Value error, ")
        parts.append(f"field {loc!r}: {message}" if loc else message)
    return "; ".join(parts)


def _parse(
    source: _Source,
    key: str,
    kind: str,
    convert: Callable[[Mapping[str, Any]], _T],
) -> tuple[_T, ...]:
    items: list[_T] = []
    for position, raw in enumerate(_read_entries(source, key), start=1):
        if not isinstance(raw, dict):
            raise CatalogError(f"{source}: {kind} #{position}: must be a mapping")
        label = repr(raw["name"]) if isinstance(raw.get("name"), str) else f"#{position}"
        try:
            items.append(convert(raw))
        except ValidationError as exc:
            raise CatalogError(f"{source}: {kind} {label}: {_describe(exc)}") from None
    return tuple(items)


def _load_presets(source: _Source) -> tuple[ModelPreset, ...]:
    presets = _parse(
        source, "presets", "preset", lambda raw: _PresetEntry.model_validate(raw).to_preset()
    )
    try:
        _index_presets(presets)
    except CatalogError as exc:
        raise CatalogError(f"{source}: {exc}") from None
    return presets


def _load_skus(source: _Source) -> tuple[GpuSku, ...]:
    skus = _parse(source, "skus", "sku", lambda raw: _SkuEntry.model_validate(raw).to_sku())
    try:
        _index_skus(skus)
    except CatalogError as exc:
        raise CatalogError(f"{source}: {exc}") from None
    return skus


def _packaged(file_name: str) -> Traversable:
    return resources.files(__name__).joinpath(file_name)


def load_catalog(models: Path | None = None, skus: Path | None = None) -> Catalog:
    """Load and validate the preset and SKU files (the packaged ones by default).

    Raises CatalogError naming the file, the entry and the field of the first problem found.
    """
    presets = _load_presets(models if models is not None else _packaged("models.yaml"))
    instance_types = _load_skus(skus if skus is not None else _packaged("skus.yaml"))
    return Catalog(presets, instance_types)


@functools.cache
def default_catalog() -> Catalog:
    """The packaged catalog, loaded once."""
    return load_catalog()
