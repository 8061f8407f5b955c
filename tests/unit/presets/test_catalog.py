"""The packaged preset and GPU SKU catalog: contents, lookups, validation and text tables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from presets.catalog import Catalog, CatalogError, default_catalog, load_catalog
from presets.catalog.cli import format_presets, format_skus

EXPECTED_PRESETS = (
    "phi-2",
    "phi-3-mini-4k-instruct",
    "phi-3-mini-128k-instruct",
    "phi-3-medium-4k-instruct",
    "phi-3-medium-128k-instruct",
    "phi-3.5-mini-instruct",
    "phi-4",
    "phi-4-mini-instruct",
    "falcon-7b",
    "falcon-7b-instruct",
    "falcon-40b",
    "falcon-40b-instruct",
    "mistral-7b",
    "mistral-7b-instruct",
    "ministral-3-3b-instruct",
    "ministral-3-8b-instruct",
    "ministral-3-14b-instruct",
    "mistral-large-3-675b-instruct",
    "qwen2.5-coder-7b-instruct",
    "qwen2.5-coder-32b-instruct",
    "deepseek-r1-distill-llama-8b",
    "deepseek-r1-distill-qwen-14b",
    "deepseek-r1-0528",
    "deepseek-v3-0324",
    "llama-3.1-8b-instruct",
    "llama-3.3-70b-instruct",
    "gemma-3-4b-instruct",
    "gemma-3-27b-instruct",
    "gpt-oss-20b",
    "gpt-oss-120b",
    "tiny-chat",  # Kaiten's own: the offline demo model (presets/tiny.py)
)

GOOD_PRESET: dict[str, object] = {
    "name": "tiny-model",
    "aliases": ["org/Tiny-Model"],
    "hf_repo": "org/Tiny-Model",
    "revision": None,
    "weights_gib": 1.5,
    "bytes_per_token": 1024,
    "token_limit": 4096,
    "disk_gib": 80,
    "gpu_count": 1,
    "total_gpu_memory_gib": 2,
    "per_gpu_memory_gib": 0,
    "runtimes": ["vllm"],
    "distributed": False,
    "vllm_lora": True,
    "tuning": None,
    "gated": False,
    "download_at_runtime": True,
    "deprecated": False,
    "image": "mcr.microsoft.com/aks/kaito/kaito-base",
    "tag": "0.5.0",
    "readiness_timeout_s": 1800,
    "dtype": "bfloat16",
    "vllm_dtype": "bfloat16",
    "chat_template": None,
    "reasoning_parser": None,
    "architecture": "Llama",
    "quantization": None,
}

GOOD_SKU: dict[str, object] = {
    "name": "Standard_Test_v1",
    "cloud": "azure",
    "gpu_count": 2,
    "total_memory_gib": 48,
    "gpu_model": "NVIDIA A10",
    "compute_capability": 8.6,
    "vendor": "nvidia",
    "nvme": False,
    "source": "current",
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def write_catalog(
    tmp_path: Path, presets: list[dict[str, object]], skus: list[dict[str, object]]
) -> tuple[Path, Path]:
    models_file, skus_file = tmp_path / "models.yaml", tmp_path / "skus.yaml"
    models_file.write_text(yaml.safe_dump({"presets": presets}), encoding="utf-8")
    skus_file.write_text(yaml.safe_dump({"skus": skus}), encoding="utf-8")
    return models_file, skus_file


def test_the_packaged_catalog_loads_with_every_expected_preset(catalog: Catalog) -> None:
    names = [p.name for p in catalog.presets()]
    assert sorted(names) == sorted(EXPECTED_PRESETS)
    assert default_catalog() is default_catalog()
    assert len(default_catalog().skus()) == len(catalog.skus())


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("phi-3-mini-4k-instruct", "phi-3-mini-4k-instruct"),
        ("PHI-3-MINI-4K-INSTRUCT", "phi-3-mini-4k-instruct"),
        ("microsoft/Phi-3-mini-4k-instruct", "phi-3-mini-4k-instruct"),
        ("microsoft/phi-3-mini-4k-instruct", "phi-3-mini-4k-instruct"),
        ("Microsoft/Phi-3-Mini-128k-Instruct", "phi-3-mini-128k-instruct"),
        ("google/gemma-3-4b-it", "gemma-3-4b-instruct"),
        ("META-LLAMA/LLAMA-3.3-70B-INSTRUCT", "llama-3.3-70b-instruct"),
    ],
    ids=[
        "the exact name finds the preset",
        "an upper-case name finds the preset",
        "the HF repo id finds the preset",
        "a lower-case HF repo id finds the preset",
        "a mixed-case HF repo id finds the preset",
        "an HF id unlike the name finds the preset",
        "an upper-case gated HF id finds the preset",
    ],
)
def test_presets_are_found_by_name_or_alias_in_any_case(
    catalog: Catalog, query: str, expected: str
) -> None:
    preset = catalog.preset(query)
    assert preset is not None
    assert preset.name == expected


def test_an_unknown_preset_is_not_found(catalog: Catalog) -> None:
    assert catalog.preset("no-such-model") is None
    assert catalog.sku("Standard_Nope_v9") is None


@pytest.mark.parametrize(
    ("name", "gpus", "total", "per_gpu", "cc", "vendor"),
    [
        ("Standard_NC6s_v3", 1, 16, 16, 7.0, "nvidia"),
        ("standard_nc24ads_a100_v4", 1, 80, 80, 8.0, "nvidia"),
        ("STANDARD_ND96ASR_A100_V4", 8, 320, 40, 8.0, "nvidia"),
        ("Standard_ND96isr_H200_v5", 8, 1128, 141, 9.0, "nvidia"),
        ("standard_nc16_a2", 2, 32, 16, 8.6, "nvidia"),
        ("g6.12xlarge", 4, 96, 24, 8.9, "nvidia"),
        ("P3.8XLARGE", 4, 64, 16, 7.0, "nvidia"),
        ("Standard_NG32ads_V620_v1", 1, 32, 32, 0, "amd"),
        ("inf2.48xlarge", 12, 384, 32, 0, "aws-neuron"),
    ],
    ids=[
        "the seeds' V100 SKU has one 16 GiB GPU of compute capability 7.0",
        "a lower-case A100 SKU has one 80 GiB GPU",
        "an upper-case ND96asr splits 320 GiB over 8 GPUs",
        "the H200 SKU has 141 GiB per GPU",
        "an Azure Arc SKU is found in any case",
        "an AWS L4 SKU splits 96 GiB over 4 GPUs",
        "a classic AWS V100 SKU is found in upper case",
        "an AMD SKU carries compute capability 0",
        "an AWS Neuron SKU carries compute capability 0",
    ],
)
def test_skus_are_found_in_any_case_with_their_gpus(
    catalog: Catalog, name: str, gpus: int, total: float, per_gpu: float, cc: float, vendor: str
) -> None:
    sku = catalog.sku(name)
    assert sku is not None
    assert (sku.gpu_count, sku.total_memory_gib, sku.compute_capability, sku.vendor) == (
        gpus,
        total,
        cc,
        vendor,
    )
    assert sku.per_gpu_memory_gib == per_gpu


@pytest.mark.parametrize(
    ("cloud", "count", "clouds"),
    [
        ("azure", 29, {"azure"}),
        ("azure-arc", 10, {"azure-arc"}),
        ("arc", 10, {"azure-arc"}),
        ("AWS", 59, {"aws"}),
        (None, 98, {"azure", "azure-arc", "aws"}),
    ],
    ids=[
        "Azure has 14 current and 15 classic SKUs",
        "Azure Arc has 10 SKUs",
        "arc is the Azure Arc cloud",
        "the cloud name is case-insensitive",
        "no cloud lists every SKU",
    ],
)
def test_skus_are_listed_per_cloud(
    catalog: Catalog, cloud: str | None, count: int, clouds: set[str]
) -> None:
    skus = catalog.skus(cloud)
    assert len(skus) == count
    assert {s.cloud for s in skus} == clouds


def test_the_seed_presets_fit_the_seed_gpu(catalog: Catalog) -> None:
    sku = catalog.sku("Standard_NC6s_v3")
    assert sku is not None
    for name in ("phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct"):
        preset = catalog.preset(name)
        assert preset is not None
        assert preset.gpu_count <= sku.gpu_count
        assert preset.total_gpu_memory_gib <= sku.total_memory_gib
        assert preset.supports("transformers")
        assert preset.supports("VLLM")
        assert preset.image_ref == f"mcr.microsoft.com/aks/kaito/kaito-{name}:0.1.1"


def test_preset_flags_match_the_reference(catalog: Catalog) -> None:
    phi2, falcon, llama, ministral = (
        catalog.preset(n)
        for n in ("phi-2", "falcon-7b", "llama-3.1-8b-instruct", "ministral-3-3b-instruct")
    )
    assert phi2 is not None
    assert phi2.deprecated
    assert falcon is not None
    assert not falcon.vllm_lora
    assert falcon.tuning == {"lora": 16, "qlora": 16}
    assert falcon.supports_tuning
    assert llama is not None
    assert llama.gated
    assert llama.download_at_runtime
    assert llama.image_ref == "mcr.microsoft.com/aks/kaito/kaito-base:0.0.1"
    assert not llama.supports_tuning
    assert ministral is not None
    assert not ministral.supports("transformers")
    assert ministral.quantization == "fp8"


def test_presets_are_immutable(catalog: Catalog) -> None:
    preset = catalog.preset("phi-4")
    assert preset is not None
    assert preset.tuning is not None
    with pytest.raises(AttributeError):
        preset.gpu_count = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        preset.tuning["lora"] = 1  # type: ignore[index]


def test_a_valid_custom_catalog_loads(tmp_path: Path) -> None:
    loaded = load_catalog(*write_catalog(tmp_path, [GOOD_PRESET], [GOOD_SKU]))
    assert loaded.preset("ORG/tiny-model") is not None
    sku = loaded.sku("standard_test_v1")
    assert sku is not None
    assert sku.per_gpu_memory_gib == 24


@pytest.mark.parametrize(
    ("presets", "skus", "message"),
    [
        (
            [{**GOOD_PRESET, "onnx_opset": 17}],
            [GOOD_SKU],
            "models.yaml: preset 'tiny-model': field 'onnx_opset': Extra inputs",
        ),
        (
            [{**GOOD_PRESET, "gpu_count": -1}],
            [GOOD_SKU],
            "preset 'tiny-model': field 'gpu_count': Input should be greater than or equal to 1",
        ),
        (
            [GOOD_PRESET, {**GOOD_PRESET, "name": "other", "aliases": ["org/tiny-model"]}],
            [GOOD_SKU],
            "preset 'other': field 'aliases': 'org/tiny-model' is already used by preset "
            "'tiny-model'",
        ),
        (
            [{**GOOD_PRESET, "runtimes": ["vllm", "onnx"]}],
            [GOOD_SKU],
            "preset 'tiny-model': field 'runtimes.1': Input should be 'vllm' or 'transformers'",
        ),
        (
            [{**GOOD_PRESET, "aliases": ["tiny"]}],
            [GOOD_SKU],
            "preset 'tiny-model': field 'aliases': must include the hf_repo 'org/Tiny-Model'",
        ),
        (
            [GOOD_PRESET],
            [{**GOOD_SKU, "cloud": "gcp"}],
            "skus.yaml: sku 'Standard_Test_v1': field 'cloud'",
        ),
        (
            [GOOD_PRESET],
            [GOOD_SKU, {**GOOD_SKU, "name": "STANDARD_TEST_V1"}],
            "sku 'STANDARD_TEST_V1': field 'name': duplicate instance type",
        ),
    ],
    ids=[
        "an unknown field is refused",
        "a negative gpu_count is refused",
        "an alias used by another preset is refused",
        "a runtime other than vllm or transformers is refused",
        "aliases without the HF repo id are refused",
        "an unknown cloud is refused",
        "an instance type listed twice is refused",
    ],
)
def test_a_bad_catalog_file_is_refused_naming_the_entry_and_field(
    tmp_path: Path,
    presets: list[dict[str, object]],
    skus: list[dict[str, object]],
    message: str,
) -> None:
    with pytest.raises(CatalogError, match=re.escape(message)):
        load_catalog(*write_catalog(tmp_path, presets, skus))


def test_a_file_without_the_top_level_key_is_refused(tmp_path: Path) -> None:
    models_file, skus_file = write_catalog(tmp_path, [GOOD_PRESET], [GOOD_SKU])
    models_file.write_text("- name: x\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="must be a mapping with the single key 'presets'"):
        load_catalog(models_file, skus_file)


def test_the_preset_table_has_a_row_per_preset(catalog: Catalog) -> None:
    table = format_presets(catalog)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["NAME", "RUNTIMES", "GPUS"]
    assert len(lines) == 1 + len(EXPECTED_PRESETS)
    row = next(line for line in lines if line.startswith("phi-3-mini-4k-instruct "))
    assert row.split()[:7] == [
        "phi-3-mini-4k-instruct",
        "vllm,transformers",
        "1",
        "9Gi",
        "7.12Gi",
        "4K",
        "lora,qlora",
    ]
    assert "deprecated" in next(line for line in lines if line.startswith("phi-2 "))


def test_the_sku_table_lists_one_cloud(catalog: Catalog) -> None:
    lines = format_skus(catalog, "azure").splitlines()
    assert lines[0].split() == ["NAME", "CLOUD", "GPUS", "GPU", "MEM/GPU", "TOTAL", "CC"]
    assert len(lines) == 1 + 29
    row = next(line for line in lines if line.startswith("Standard_NC6s_v3 "))
    assert row.split() == [
        "Standard_NC6s_v3",
        "azure",
        "1",
        "NVIDIA",
        "V100",
        "16Gi",
        "16Gi",
        "7.0",
    ]
    assert all(" aws " not in line for line in lines)
