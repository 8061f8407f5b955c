"""``plan_workspace``: the seeds' plans, rejections that say what to change (and whose suggested
instance types really fit), ConfigMaps, the runtime choice, memory budget invariants over the
whole catalog, plan round trips and prices."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import yaml

from presets.catalog import ModelPreset
from services.planner.planning import KV_BLOCK, PlanOptions, Rejection, plan_workspace
from shared.plan import Plan
from tests.unit.planner.workspaces import (
    A10,
    A100,
    A100_X2,
    CATALOG,
    H100_UNPRICED,
    PRICES,
    SEEDS,
    V100,
    V100_X2,
    ConfigMapData,
    Doc,
    expect_plan,
    expect_rejection,
    fitting_instance_types,
    flag_value,
    inference,
    inference_config,
    on_instance_type,
    plan,
    seed,
    shortfall_gib,
    training_config,
    tuning,
)

SEED_FILES = sorted(p.name for p in SEEDS.glob("*.yaml"))
INFERENCE_SEEDS = [n for n in SEED_FILES if n.startswith("inference-")]
TUNING_SEEDS = [n for n in SEED_FILES if n.startswith("tuning-")]
VLLM_PROGRAM = ("python3", "-m", "presets.inference.vllm_launcher")
TRANSFORMERS_PROGRAM = ("python3", "-m", "presets.inference.server")


# --- the seeds ---------------------------------------------------------------------------------


def test_the_seed_directory_holds_the_five_seed_workspaces() -> None:
    assert SEED_FILES == [
        "inference-phi-3-mini-adapter.yaml",
        "inference-phi-3-mini.yaml",
        "tuning-phi-3-mini-128k-adapter.yaml",
        "tuning-phi-3-mini.yaml",
        "tuning-phi-3.yaml",
    ]


@pytest.mark.parametrize("name", SEED_FILES)
def test_every_seed_gets_a_one_node_float16_plan(name: str) -> None:
    plan = expect_plan(seed(name))
    assert plan.node_count == 1
    assert plan.runtime.name == "transformers"
    assert plan.dtype == "float16"
    assert plan.instance_type == V100
    assert plan.gpu is not None
    assert plan.gpu.compute_capability < 8
    assert Plan.model_validate_json(plan.model_dump_json()) == plan


@pytest.mark.parametrize("name", INFERENCE_SEEDS)
def test_inference_seeds_run_transformers_in_float16_on_the_v100(name: str) -> None:
    plan = expect_plan(seed(name))
    assert plan.mode == "inference"
    assert plan.command[:3] == TRANSFORMERS_PROGRAM
    assert flag_value(plan.command, "--torch_dtype") == "float16"
    assert "compute capability" in plan.runtime.reason
    assert plan.gpu_memory_utilization is None
    assert plan.memory is not None


@pytest.mark.parametrize("name", TUNING_SEEDS)
def test_tuning_seeds_plan_qlora_within_the_v100s_16_gib(name: str) -> None:
    plan = expect_plan(seed(name))
    assert plan.mode == "tuning"
    assert plan.tuning is not None
    assert plan.tuning.method == "qlora"
    assert plan.tuning.config_source == "template/qlora"
    assert plan.tuning.memory.total_gib <= 16
    assert "bfloat16" not in plan.tuning.config_yaml
    config = yaml.safe_load(plan.tuning.config_yaml)["training_config"]
    assert config["ModelConfig"]["torch_dtype"] == "float16"
    assert config["QuantizationConfig"]["load_in_4bit"] is True
    assert config["QuantizationConfig"]["bnb_4bit_compute_dtype"] == "float16"
    assert any("bfloat16" in note for note in plan.notes), plan.notes
    assert plan.tuning.output["image"].endswith(":0.0.1")
    assert "--method" in plan.command
    assert flag_value(plan.command, "--method") == "qlora"


def test_the_adapter_seed_plans_its_adapter_with_strength_one() -> None:
    plan = expect_plan(seed("inference-phi-3-mini-adapter.yaml"))
    assert len(plan.adapters) == 1
    adapter = plan.adapters[0]
    assert adapter.name == "phi-3-adapter"
    assert adapter.strength == 1.0
    assert adapter.image == "ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1"
    assert plan.env == {"phi-3-adapter": "1"}


def test_the_plain_inference_seed_has_no_adapters() -> None:
    plan = expect_plan(seed("inference-phi-3-mini.yaml"))
    assert plan.adapters == ()
    assert plan.env == {}


# --- rejections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TooBig:
    id: str
    make: Callable[[], Doc]
    short_gib: float  # the shortfall the message names, to 0.1 GiB


TOO_BIG = [
    TooBig(
        "phi-3-medium-inference-on-v100",
        lambda: inference("phi-3-medium-4k-instruct", V100),
        13.6,
    ),
    TooBig(
        "falcon-40b-inference-cannot-span-a100-nodes",
        lambda: inference("falcon-40b", A100),
        17.7,
    ),
    TooBig(
        "qwen-32b-lora-on-v100",
        lambda: tuning("qwen2.5-coder-32b-instruct", V100, "lora"),
        56.0,
    ),
    TooBig(
        "qwen-32b-qlora-on-v100",
        lambda: tuning("qwen2.5-coder-32b-instruct", V100, "qlora"),
        9.0,
    ),
    TooBig(
        "phi-3-medium-lora-on-v100",
        lambda: tuning("phi-3-medium-4k-instruct", V100, "lora"),
        15.8,
    ),
]


@pytest.mark.parametrize("case", TOO_BIG, ids=[c.id for c in TOO_BIG])
def test_a_model_that_does_not_fit_is_rejected_with_the_shortfall(case: TooBig) -> None:
    rejection = expect_rejection(case.make())
    assert rejection.reason == "InsufficientGPUMemory"
    assert "short" in rejection.message
    assert shortfall_gib(rejection.message) == pytest.approx(case.short_gib, abs=0.05)
    assert "Instance types that fit" in rejection.message
    assert [p.field for p in rejection.problems] == ["resource.instanceType"]
    assert rejection.problems[0].message == rejection.message


@pytest.mark.parametrize("case", TOO_BIG, ids=[c.id for c in TOO_BIG])
def test_every_instance_type_a_rejection_suggests_really_fits(case: TooBig) -> None:
    doc = case.make()
    rejection = expect_rejection(doc)
    suggested = fitting_instance_types(rejection.message)
    assert 1 <= len(suggested) <= 5
    assert doc["resource"]["instanceType"] not in suggested
    for instance_type in suggested:
        replanned = plan(on_instance_type(doc, instance_type))
        assert isinstance(replanned, Plan), f"{instance_type}: {replanned}"
        assert replanned.node_count == 1, instance_type


def test_suggestions_for_a_long_configured_context_really_fit() -> None:
    doc = inference("ministral-3-3b-instruct", A10, config="inference-cm")
    configmaps = inference_config("vllm:\n  max-model-len: 262144\n")
    rejection = expect_rejection(doc, configmaps)
    assert rejection.reason == "InsufficientGPUMemory"
    suggested = fitting_instance_types(rejection.message)
    assert A10 not in suggested
    for instance_type in suggested:
        replanned = plan(on_instance_type(doc, instance_type), configmaps)
        assert isinstance(replanned, Plan), f"{instance_type}: {replanned}"
        assert replanned.node_count == 1, instance_type


def test_suggestions_are_cheapest_first() -> None:
    rejection = expect_rejection(inference("phi-3-medium-4k-instruct", V100))
    prices = []
    for name in fitting_instance_types(rejection.message):
        entry = PRICES.price(name)
        assert entry is not None, name
        prices.append(entry.usd_per_hour)
    assert prices == sorted(prices)


def test_lora_that_does_not_fit_points_to_qlora() -> None:
    rejection = expect_rejection(tuning("qwen2.5-coder-32b-instruct", V100, "lora"))
    assert "qlora needs far less" in rejection.message


@dataclass(frozen=True)
class Refused:
    id: str
    make: Callable[[], Doc]
    reason: str
    field: str
    message: str = ""


REFUSED = [
    Refused(
        "unknown-inference-preset",
        lambda: inference("no-such-model", A100),
        "UnsupportedPreset",
        "inference.preset.name",
        "no-such-model",
    ),
    Refused(
        "unknown-tuning-preset",
        lambda: tuning("no-such-model"),
        "UnsupportedPreset",
        "tuning.preset.name",
        "no-such-model",
    ),
    Refused(
        "deprecated-preset",
        lambda: inference("phi-2", A100),
        "PresetDeprecated",
        "inference.preset.name",
        "deprecated",
    ),
    Refused(
        "unknown-instance-type",
        lambda: inference("phi-3-mini-4k-instruct", "Bad_SKU"),
        "UnsupportedInstanceType",
        "resource.instanceType",
        "Bad_SKU",
    ),
    Refused(
        "vllm-only-preset-on-v100",
        lambda: inference("ministral-3-3b-instruct", V100),
        "InvalidWorkspace",
        "resource.instanceType",
        "compute capability 8.0",
    ),
    Refused(
        "tuning-on-two-nodes",
        lambda: {**tuning(), "resource": {**tuning()["resource"], "count": 2}},
        "InvalidWorkspace",
        "resource.count",
        "multinode",
    ),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_an_invalid_workspace_is_rejected_with_its_reason_and_field(case: Refused) -> None:
    rejection = expect_rejection(case.make())
    assert rejection.reason == case.reason
    fields = [p.field for p in rejection.problems]
    assert case.field in fields, rejection
    assert case.message in rejection.message


def test_an_azure_n_series_size_missing_from_the_catalog_is_planned_unchecked() -> None:
    plan = expect_plan(inference("phi-3-mini-4k-instruct", "Standard_NC999ads_X1_v9"))
    assert plan.gpu is None
    assert plan.memory is None
    assert plan.price is None
    assert plan.node_count == 1
    assert any("not in the catalog" in note for note in plan.notes), plan.notes


# --- ConfigMaps --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigCase:
    id: str
    doc: Callable[[], Doc]
    configmaps: ConfigMapData
    reason: str
    field: str
    message: str


def _phi_on_a100(name: str = "inference-cm") -> Doc:
    return inference("phi-3-mini-4k-instruct", A100, config=name)


CONFIG_REJECTIONS = [
    ConfigCase(
        "inference-configmap-missing",
        _phi_on_a100,
        {},
        "ConfigMapNotFound",
        "inference.config",
        "inference-cm",
    ),
    ConfigCase(
        "inference-configmap-explicitly-absent",
        _phi_on_a100,
        {"inference-cm": None},
        "ConfigMapNotFound",
        "inference.config",
        "not found",
    ),
    ConfigCase(
        "inference-configmap-without-its-key",
        _phi_on_a100,
        {"inference-cm": {"other.yaml": "vllm: {}"}},
        "InvalidConfigMap",
        "inference.config",
        "inference_config.yaml",
    ),
    ConfigCase(
        "max-model-len-above-the-model-limit",
        _phi_on_a100,
        inference_config("vllm:\n  max-model-len: 999999\n"),
        "InvalidInferenceConfig",
        "inference.config",
        "4096",
    ),
    ConfigCase(
        "max-model-len-not-a-number",
        _phi_on_a100,
        inference_config("vllm:\n  max-model-len: lots\n"),
        "InvalidInferenceConfig",
        "inference.config",
        "positive integer",
    ),
    ConfigCase(
        "max-model-len-zero",
        _phi_on_a100,
        inference_config("vllm:\n  max-model-len: 0\n"),
        "InvalidInferenceConfig",
        "inference.config",
        "positive integer",
    ),
    ConfigCase(
        "max-model-len-boolean",
        _phi_on_a100,
        inference_config("vllm:\n  max-model-len: true\n"),
        "InvalidInferenceConfig",
        "inference.config",
        "positive integer",
    ),
    ConfigCase(
        "inference-config-not-a-mapping",
        _phi_on_a100,
        inference_config("- 1\n- 2\n"),
        "InvalidInferenceConfig",
        "inference.config",
        "mapping",
    ),
    ConfigCase(
        "inference-config-vllm-not-a-mapping",
        _phi_on_a100,
        inference_config("vllm: [1, 2]\n"),
        "InvalidInferenceConfig",
        "inference.config",
        "vllm",
    ),
    ConfigCase(
        "inference-config-not-yaml",
        _phi_on_a100,
        inference_config("vllm: [unclosed\n"),
        "InvalidInferenceConfig",
        "inference.config",
        "YAML",
    ),
    ConfigCase(
        "tuning-configmap-missing",
        lambda: tuning(config="tuning-cm"),
        {},
        "ConfigMapNotFound",
        "tuning.config",
        "tuning-cm",
    ),
    ConfigCase(
        "tuning-configmap-without-its-key",
        lambda: tuning(config="tuning-cm"),
        {"tuning-cm": {"inference_config.yaml": ""}},
        "InvalidConfigMap",
        "tuning.config",
        "training_config.yaml",
    ),
    ConfigCase(
        "lora-with-load-in-4bit",
        lambda: tuning("phi-3-mini-4k-instruct", A100, "lora", config="tuning-cm"),
        training_config("training_config:\n  QuantizationConfig:\n    load_in_4bit: true\n"),
        "InvalidTuningConfig",
        "tuning.config",
        "load_in_4bit",
    ),
    ConfigCase(
        "qlora-with-quantization-off",
        lambda: tuning(config="tuning-cm"),
        training_config("training_config:\n  QuantizationConfig:\n    load_in_4bit: false\n"),
        "InvalidTuningConfig",
        "tuning.config",
        "qlora",
    ),
    ConfigCase(
        "tuning-output-dir-outside-mnt",
        lambda: tuning(config="tuning-cm"),
        training_config("training_config:\n  TrainingArguments:\n    output_dir: /tmp/out\n"),
        "InvalidTuningConfig",
        "tuning.config",
        "output_dir",
    ),
    ConfigCase(
        "tuning-unknown-section",
        lambda: tuning(config="tuning-cm"),
        training_config("training_config:\n  NoSuchSection:\n    a: 1\n"),
        "InvalidTuningConfig",
        "tuning.config",
        "NoSuchSection",
    ),
]


@pytest.mark.parametrize("case", CONFIG_REJECTIONS, ids=[c.id for c in CONFIG_REJECTIONS])
def test_a_bad_configmap_is_rejected(case: ConfigCase) -> None:
    rejection = expect_rejection(case.doc(), case.configmaps)
    assert rejection.reason == case.reason
    assert [p.field for p in rejection.problems] == [case.field] * len(rejection.problems)
    assert rejection.problems
    assert case.message in rejection.message


def test_a_valid_max_model_len_is_planned_and_the_config_file_passed() -> None:
    plan = expect_plan(_phi_on_a100(), inference_config("vllm:\n  max-model-len: 2048\n"))
    assert plan.runtime.name == "vllm"
    assert plan.inference_config == "inference-cm"
    assert plan.memory is not None
    assert plan.memory.context_tokens == 2048
    assert plan.max_model_len is None  # the user's value stands; nothing to cap
    assert flag_value(plan.command, "--kaito-config-file") == "/mnt/config/inference_config.yaml"


def test_an_empty_inference_config_is_the_defaults() -> None:
    plan = expect_plan(_phi_on_a100(), inference_config(""))
    assert plan.inference_config == "inference-cm"
    assert plan.memory is not None
    assert plan.memory.context_tokens == 4096


def test_a_tuning_configmap_is_merged_over_the_template() -> None:
    configmaps = training_config(
        "training_config:\n  TrainingArguments:\n    num_train_epochs: 2\n", name="my-tuning"
    )
    plan = expect_plan(tuning(config="my-tuning"), configmaps)
    assert plan.tuning is not None
    assert plan.tuning.config_source == "configmap/my-tuning"
    sections = yaml.safe_load(plan.tuning.config_yaml)["training_config"]
    training = sections["TrainingArguments"]
    assert training["num_train_epochs"] == 2
    assert training["per_device_train_batch_size"] == 1
    assert training["output_dir"] == "/mnt/results"
    assert sections["LoraConfig"]["r"] == 8
    assert sections["QuantizationConfig"]["load_in_4bit"] is True
    assert "bfloat16" not in plan.tuning.config_yaml  # still fitted to the V100


def test_a_tuning_configmap_asking_for_bfloat16_gets_float16_on_a_v100() -> None:
    configmaps = training_config(
        "training_config:\n  ModelConfig:\n    torch_dtype: bfloat16\n"
        "  QuantizationConfig:\n    bnb_4bit_compute_dtype: bfloat16\n"
    )
    plan = expect_plan(tuning(config="tuning-cm"), configmaps)
    assert plan.tuning is not None
    assert plan.dtype == "float16"
    sections = yaml.safe_load(plan.tuning.config_yaml)["training_config"]
    assert sections["ModelConfig"]["torch_dtype"] == "float16"
    assert sections["QuantizationConfig"]["bnb_4bit_compute_dtype"] == "float16"
    assert "bfloat16" not in plan.tuning.config_yaml


def test_the_tuning_template_keeps_bfloat16_on_an_a100() -> None:
    plan = expect_plan(tuning(instance_type=A100))
    assert plan.tuning is not None
    assert plan.dtype == "bfloat16"
    assert "bfloat16" in plan.tuning.config_yaml


def test_a_bigger_batch_raises_the_tuning_estimate_until_it_does_not_fit() -> None:
    configmaps = training_config(
        "training_config:\n  TrainingArguments:\n"
        "    per_device_train_batch_size: 64\n    max_length: 4096\n"
    )
    rejection = expect_rejection(tuning(config="tuning-cm"), configmaps)
    assert rejection.reason == "InsufficientGPUMemory"
    assert "short" in rejection.message


# --- runtime choice ----------------------------------------------------------------------------


def test_the_runtime_annotation_picks_transformers_on_an_a100() -> None:
    doc = inference(
        "phi-3-mini-4k-instruct", A100, annotations={"kaito.sh/runtime": "transformers"}
    )
    plan = expect_plan(doc)
    assert plan.runtime.name == "transformers"
    assert "kaito.sh/runtime" in plan.runtime.reason
    assert "annotation" in plan.runtime.reason
    assert plan.command[:3] == TRANSFORMERS_PROGRAM
    assert plan.gpu_memory_utilization is None
    assert plan.image is not None
    assert "transformers" in plan.image


@dataclass(frozen=True)
class VllmCase:
    id: str
    preset: str
    sku: str
    utilization: str
    dtype: str = "float16"
    data_parallel: int = 1
    extra: dict[str, str] = field(default_factory=dict)


VLLM_CASES = [
    VllmCase("phi-3-mini-on-a100", "phi-3-mini-4k-instruct", A100, "0.84"),
    VllmCase("phi-3-mini-on-a10", "phi-3-mini-4k-instruct", A10, "0.82"),
    VllmCase("falcon-7b-on-a10-uses-vllm-dtype", "falcon-7b", A10, "0.82"),
    VllmCase(
        "small-model-on-two-a100s-replicates",
        "phi-3-mini-4k-instruct",
        A100_X2,
        "0.84",
        data_parallel=2,
        extra={"--data-parallel-size": "2", "--tensor-parallel-size": "1"},
    ),
    VllmCase(
        "big-model-on-two-a100s-shards",
        "falcon-40b",
        A100_X2,
        "0.84",
        extra={"--tensor-parallel-size": "2"},
    ),
    VllmCase("gemma-keeps-bfloat16", "gemma-3-4b-instruct", A100, "0.84", dtype="bfloat16"),
]


@pytest.mark.parametrize("case", VLLM_CASES, ids=[c.id for c in VLLM_CASES])
def test_vllm_on_ampere_and_newer(case: VllmCase) -> None:
    plan = expect_plan(inference(case.preset, case.sku))
    assert plan.runtime.name == "vllm"
    assert plan.command[:3] == VLLM_PROGRAM
    assert flag_value(plan.command, "--gpu-memory-utilization") == case.utilization
    assert plan.gpu_memory_utilization == float(case.utilization)
    assert flag_value(plan.command, "--dtype") == case.dtype
    assert plan.dtype == case.dtype
    assert plan.data_parallel_size == case.data_parallel
    if case.data_parallel == 1:
        assert "--data-parallel-size" not in plan.command
    for flag, value in case.extra.items():
        assert flag_value(plan.command, flag) == value
    assert flag_value(plan.command, "--served-model-name") == case.preset
    assert flag_value(plan.command, "--port") == "5000"


def test_data_parallel_on_a_multi_gpu_node_for_a_small_model() -> None:
    plan = expect_plan(inference("phi-3-mini-4k-instruct", A100_X2))
    assert plan.node_count == 1
    assert plan.gpus_per_node == 2
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size) == (1, 1)
    assert plan.data_parallel_size == 2


def test_a_long_context_model_on_an_a10_gets_a_capped_max_model_len() -> None:
    plan = expect_plan(inference("phi-3-mini-128k-instruct", A10))
    assert plan.max_model_len is not None
    assert plan.max_model_len < 131072
    assert plan.max_model_len % KV_BLOCK == 0
    assert plan.max_model_len >= KV_BLOCK
    assert flag_value(plan.command, "--max-model-len") == str(plan.max_model_len)
    assert plan.memory is not None
    assert plan.memory.context_tokens is not None
    assert plan.max_model_len <= plan.memory.context_tokens
    assert any("max-model-len capped" in note for note in plan.notes), plan.notes


def test_a_short_context_model_is_not_capped() -> None:
    plan = expect_plan(inference("phi-3-mini-4k-instruct", A10))
    assert plan.max_model_len is None
    assert "--max-model-len" not in plan.command


@pytest.mark.parametrize(
    ("sku", "dtype"),
    [(V100_X2, "float16"), (A100, "bfloat16")],
    ids=["v100-has-no-bfloat16", "a100-keeps-bfloat16"],
)
def test_transformers_dtype_follows_the_gpu(sku: str, dtype: str) -> None:
    # falcon-7b's transformers dtype is bfloat16; the V100 (compute capability 7.0) has none.
    doc = inference("falcon-7b", sku, annotations={"kaito.sh/runtime": "transformers"})
    plan = expect_plan(doc)
    assert plan.runtime.name == "transformers"
    assert plan.dtype == dtype
    assert flag_value(plan.command, "--torch_dtype") == dtype
    assert any("bfloat16" in note for note in plan.notes) == (dtype == "float16")


@pytest.mark.parametrize("api_version", ["kaito.sh/v1alpha1", "kaito.sh/v1beta1"])
def test_both_api_versions_plan_alike(api_version: str) -> None:
    plan = expect_plan(inference("phi-3-mini-4k-instruct", A100, api_version=api_version))
    assert plan.runtime.name == "vllm"
    assert plan.node_count == 1


# --- memory budget invariants over the catalog --------------------------------------------------

AZURE_NVIDIA = [s.name for s in CATALOG.skus("azure") if s.vendor == "nvidia"]
EXPECTED_REASONS = {"InsufficientGPUMemory", "PresetDeprecated", "InvalidWorkspace"}


def _check_budget(result: Plan, where: str) -> None:
    memory = result.memory
    assert memory is not None, where
    assert memory.usable_gib == pytest.approx(memory.gpu_memory_gib * memory.utilization, abs=0.01)
    spent = memory.weights_gib + memory.kv_cache_gib + memory.reserve_gib
    assert spent <= memory.usable_gib + 0.05, where
    preset = CATALOG.preset(str(result.preset))
    assert preset is not None, where
    assert memory.weights_gib > 0 or preset.weights_gib < 0.01, where  # tiny-chat rounds to 0
    assert memory.kv_cache_gib >= 0, where
    if result.runtime.name == "vllm":
        assert memory.kv_cache_gib > 0, where
        assert memory.context_tokens is not None
        assert memory.context_tokens > 0, where
        assert result.gpu_memory_utilization == memory.utilization, where
        gpus = result.tensor_parallel_size * result.pipeline_parallel_size
        assert gpus * result.data_parallel_size <= result.node_count * (result.gpus_per_node or 1)


@pytest.mark.parametrize("preset", CATALOG.presets(), ids=lambda p: p.name)
def test_memory_budget_invariants_on_every_azure_nvidia_sku(preset: ModelPreset) -> None:
    plans = 0
    for sku in AZURE_NVIDIA:
        where = f"{preset.name} on {sku}"
        result = plan(inference(preset.name, sku))
        if isinstance(result, Rejection):
            assert result.reason in EXPECTED_REASONS, f"{where}: {result}"
            continue
        plans += 1
        assert result.preset == preset.name
        assert result.instance_type == sku
        assert result.node_count >= 1
        _check_budget(result, where)
        assert Plan.model_validate_json(result.model_dump_json()) == result, where
    if not preset.deprecated:
        assert plans > 0, f"{preset.name} fits no Azure NVIDIA instance type"


TUNABLE = [p for p in CATALOG.presets() if p.supports_tuning and not p.deprecated]


@pytest.mark.parametrize("method", ["lora", "qlora"])
@pytest.mark.parametrize("preset", TUNABLE, ids=lambda p: p.name)
def test_tuning_plans_fit_their_sku(preset: ModelPreset, method: str) -> None:
    for name in AZURE_NVIDIA:
        sku = CATALOG.sku(name)
        assert sku is not None
        result = plan(tuning(preset.name, name, method))
        if isinstance(result, Rejection):
            assert result.reason == "InsufficientGPUMemory", f"{preset.name} on {name}: {result}"
            continue
        assert result.tuning is not None
        assert result.tuning.method == method
        assert result.tuning.memory.total_gib <= sku.total_memory_gib
        assert result.node_count == 1
        if sku.compute_capability < 8:
            assert "bfloat16" not in result.tuning.config_yaml, name
        assert Plan.model_validate_json(result.model_dump_json()) == result


# --- prices ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "nodes"),
    [("phi-3-mini-4k-instruct", 1), ("qwen2.5-coder-32b-instruct", 2)],
    ids=["one-node", "two-nodes"],
)
def test_the_price_is_the_table_price_times_the_nodes(preset: str, nodes: int) -> None:
    plan = expect_plan(inference(preset, A100))
    entry = PRICES.price(A100)
    assert entry is not None
    assert plan.node_count == nodes
    assert plan.price is not None
    assert plan.price.usd_per_hour_per_node == entry.usd_per_hour
    assert plan.price.usd_per_hour == pytest.approx(nodes * entry.usd_per_hour)
    assert plan.price.source == PRICES.describe_source("azure")


@pytest.mark.parametrize(
    "make",
    [
        lambda: inference("phi-3-mini-4k-instruct", H100_UNPRICED),
        lambda: tuning("phi-3-mini-4k-instruct", H100_UNPRICED),
    ],
    ids=["inference", "tuning"],
)
def test_an_instance_type_without_a_price_has_no_price(make: Callable[[], Doc]) -> None:
    assert CATALOG.sku(H100_UNPRICED) is not None
    assert PRICES.price(H100_UNPRICED) is None
    plan = expect_plan(make())
    assert plan.price is None


def test_no_price_table_means_no_price() -> None:
    options = PlanOptions(CATALOG, prices=None)
    result = plan_workspace(inference("phi-3-mini-4k-instruct", A100), {}, options)
    assert isinstance(result, Plan)
    assert result.price is None


def test_the_tuning_seed_is_priced_for_one_node() -> None:
    plan = expect_plan(seed("tuning-phi-3.yaml"))
    entry = PRICES.price(V100)
    assert entry is not None
    assert plan.price is not None
    assert plan.price.usd_per_hour == entry.usd_per_hour


@pytest.mark.parametrize("key", ["max-model-len", "max_model_len"])
def test_max_model_len_is_checked_in_either_spelling(key: str) -> None:
    doc = inference("phi-3-mini-4k-instruct", "Standard_NC24ads_A100_v4", config="inference-cm")
    rejection = expect_rejection(doc, inference_config(f"vllm:\n  {key}: 999999\n"))
    assert rejection.reason == "InvalidInferenceConfig"
    assert "4096" in rejection.message


def test_a_context_whose_kv_cache_alone_exceeds_a_gpu_names_the_shortfall() -> None:
    doc = inference("ministral-3-3b-instruct", A10, config="inference-cm")
    rejection = expect_rejection(doc, inference_config("vllm:\n  max-model-len: 262144\n"))
    assert rejection.reason == "InsufficientGPUMemory"
    assert shortfall_gib(rejection.message) > 0
