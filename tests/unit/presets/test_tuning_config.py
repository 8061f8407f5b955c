"""Parsing and checking Kaito's training_config.yaml: defaults, templates, and every rejected
config with the message that names its key."""

from __future__ import annotations

import pytest
import yaml

from presets.tuning.config import (
    ConfigError,
    TuningConfig,
    default_config,
    detect_method,
    parse_config,
)


def config_text(**sections: object) -> str:
    return yaml.safe_dump({"training_config": sections})


def test_an_empty_config_gets_kaitos_class_defaults() -> None:
    config = parse_config("", "lora")
    assert config.method == "lora"
    assert config.lora["r"] == 8
    assert config.lora["lora_alpha"] == 8
    assert config.lora["lora_dropout"] == 0.0
    assert config.lora["target_modules"] is None
    assert config.training == {
        "output_dir": "/mnt/results",
        "ddp_find_unused_parameters": False,
        "save_strategy": "no",
        "per_device_train_batch_size": 1,
    }
    assert config.output_dir == "/mnt/results"
    assert config.dataset["shuffle_dataset"] is True
    assert config.dataset["shuffle_seed"] == 42
    assert config.dataset["train_test_split"] == 1
    assert config.dataset["response_column"] == "text"
    assert config.dataset["messages_column"] is None
    assert config.dataset["context_column"] is None
    assert config.model["pretrained_model_name_or_path"] == "/workspace/tfs/weights"
    assert config.model["device_map"] == "auto"
    assert config.quantization["load_in_4bit"] is False
    assert config.quantization["load_in_8bit"] is False
    assert config.quantization["bnb_4bit_quant_type"] == "fp4"
    assert config.collator["mlm"] is True
    assert not config.quantized


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_the_default_templates_parse_for_their_method(method: str) -> None:
    text = default_config(method)
    config = parse_config(text, method)
    assert detect_method(text) == method
    assert config.quantized == (method == "qlora")
    assert config.model["torch_dtype"] == "bfloat16"
    assert config.model["local_files_only"] is True
    assert config.training["save_strategy"] == "no"


def test_the_qlora_template_uses_nf4_double_quantization() -> None:
    config = parse_config(default_config("qlora"), "qlora")
    assert config.quantization["load_in_4bit"] is True
    assert config.quantization["bnb_4bit_quant_type"] == "nf4"
    assert config.quantization["bnb_4bit_compute_dtype"] == "bfloat16"
    assert config.quantization["bnb_4bit_use_double_quant"] is True


def test_any_sft_config_and_peft_key_is_accepted_and_kept() -> None:
    text = config_text(
        LoraConfig={"r": 4, "lora_alpha": 16, "target_modules": "all-linear", "use_dora": True},
        TrainingArguments={"max_steps": 30, "gradient_checkpointing": False, "bf16": False},
    )
    config = parse_config(text, "LoRA")
    assert config.lora["use_dora"] is True
    assert config.lora["target_modules"] == "all-linear"
    assert config.training["max_steps"] == 30
    assert config.training["gradient_checkpointing"] is False
    assert config.training["per_device_train_batch_size"] == 1


def test_exponent_floats_without_a_dot_are_numbers() -> None:
    """PyYAML alone reads ``2e-2`` as a string; Kaito passed it through argparse as a float."""
    config = parse_config(
        "training_config:\n  TrainingArguments:\n    learning_rate: 2e-2\n", "lora"
    )
    assert config.training["learning_rate"] == pytest.approx(0.02)


def test_default_target_modules_apply_only_when_the_config_names_none() -> None:
    targets = ["q_proj", "v_proj"]
    assert parse_config("", "lora", default_target_modules=targets).lora["target_modules"] == [
        "q_proj",
        "v_proj",
    ]
    named = config_text(LoraConfig={"target_modules": ["o_proj"]})
    assert parse_config(named, "lora", default_target_modules=targets).lora["target_modules"] == [
        "o_proj"
    ]


def test_an_output_dir_under_mnt_is_kept() -> None:
    config = parse_config(config_text(TrainingArguments={"output_dir": "/mnt/out/a"}), "lora")
    assert config.output_dir == "/mnt/out/a"


def test_the_config_is_frozen() -> None:
    config = parse_config("", "lora")
    assert isinstance(config, TuningConfig)
    with pytest.raises(AttributeError):
        config.method = "qlora"  # type: ignore[misc]  # the point of the test


BAD_CONFIGS = [
    pytest.param(
        config_text(Foo={}),
        "lora",
        "Unrecognized section: Foo (allowed: ModelConfig, QuantizationConfig, LoraConfig, "
        "TrainingArguments, DatasetConfig, DataCollator)",
        id="unknown-section",
    ),
    pytest.param(
        config_text(QuantizationConfig={"load_in_4bit": True}),
        "lora",
        "method lora cannot use quantization (QuantizationConfig.load_in_4bit is true); "
        "use method qlora",
        id="lora-with-4bit",
    ),
    pytest.param(
        config_text(QuantizationConfig={"load_in_8bit": True}),
        "lora",
        "method lora cannot use quantization (QuantizationConfig.load_in_8bit is true); "
        "use method qlora",
        id="lora-with-8bit",
    ),
    pytest.param(
        config_text(QuantizationConfig={"load_in_4bit": False}),
        "qlora",
        "method qlora needs QuantizationConfig.load_in_4bit or load_in_8bit",
        id="qlora-without-quantization",
    ),
    pytest.param(
        config_text(TrainingArguments={"output_dir": "/srv/results"}),
        "lora",
        "TrainingArguments.output_dir: /srv/results must be a sub-directory of /mnt; "
        "give another directory with --output instead",
        id="output-dir-outside-mnt",
    ),
    pytest.param(
        config_text(TrainingArguments={"output_dir": "/mnt"}),
        "lora",
        "TrainingArguments.output_dir: /mnt must be a sub-directory of /mnt; "
        "give another directory with --output instead",
        id="output-dir-is-mnt",
    ),
    pytest.param(
        config_text(TrainingArguments={"output_dir": "/mnt/../etc"}),
        "lora",
        "TrainingArguments.output_dir: /mnt/../etc must be a sub-directory of /mnt; "
        "give another directory with --output instead",
        id="output-dir-escapes-mnt",
    ),
    pytest.param(
        config_text(TrainingArguments={"output_dir": "results"}),
        "lora",
        "TrainingArguments.output_dir: results must be a sub-directory of /mnt; "
        "give another directory with --output instead",
        id="output-dir-relative",
    ),
    pytest.param(
        config_text(QuantizationConfig={"load_in_4bit": "yes"}),
        "qlora",
        "QuantizationConfig.load_in_4bit: must be true or false",
        id="non-bool-4bit",
    ),
    pytest.param(
        config_text(TrainingArguments={"max_stepz": 3}),
        "lora",
        "TrainingArguments.max_stepz: unknown key (not a TRL SFTConfig argument)",
        id="unknown-training-argument",
    ),
    pytest.param(
        config_text(LoraConfig={"rank": 3}),
        "lora",
        "LoraConfig.rank: unknown key (not a PEFT LoraConfig argument)",
        id="unknown-lora-key",
    ),
    pytest.param(
        config_text(QuantizationConfig={"load_in_4bit": True, "load_in_8bit": True}),
        "qlora",
        "QuantizationConfig: load_in_4bit and load_in_8bit cannot both be true",
        id="both-4bit-and-8bit",
    ),
    pytest.param("", "full", "method 'full' is not supported (allowed: lora, qlora)", id="method"),
    pytest.param(
        config_text(ModelConfig={"torch_dtype": "int3"}),
        "lora",
        "ModelConfig.torch_dtype: must be one of auto, bfloat16, double, float, float16, float32, "
        "float64, half",
        id="bad-dtype",
    ),
    pytest.param(
        config_text(ModelConfig={"weights": "/w"}),
        "lora",
        "ModelConfig.weights: unknown key (allowed: pretrained_model_name_or_path,",
        id="unknown-model-key",
    ),
    pytest.param(
        config_text(DatasetConfig={"train_test_split": 0}),
        "lora",
        "DatasetConfig.train_test_split: must be greater than 0",
        id="split-zero",
    ),
    pytest.param(
        config_text(DatasetConfig={"train_test_split": 1.5}),
        "lora",
        "DatasetConfig.train_test_split: must be less than or equal to 1",
        id="split-above-one",
    ),
    pytest.param(
        config_text(LoraConfig={"r": "eight"}),
        "lora",
        "LoraConfig.r: must be an integer",
        id="non-integer-rank",
    ),
    pytest.param(
        config_text(LoraConfig={"target_modules": 3}),
        "lora",
        "LoraConfig.target_modules: must be a list or a string",
        id="target-modules-type",
    ),
    pytest.param(
        config_text(TrainingArguments={"learning_rate": "fast"}),
        "lora",
        "TrainingArguments.learning_rate: must be a number",
        id="non-number-learning-rate",
    ),
    pytest.param(
        config_text(DatasetConfig="all"),
        "lora",
        "DatasetConfig: must be a mapping of keys to values",
        id="section-not-a-mapping",
    ),
    pytest.param(
        "training_config: [1]",
        "lora",
        "training_config: must be a mapping of sections",
        id="training-config-not-a-mapping",
    ),
    pytest.param(
        "tuning: {}",
        "lora",
        "Unrecognized top-level key: tuning (allowed: training_config)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        "training_config: [",
        "lora",
        "training_config.yaml: not valid YAML",
        id="not-yaml",
    ),
]


@pytest.mark.parametrize(("text", "method", "message"), BAD_CONFIGS)
def test_a_bad_config_is_rejected_naming_its_key(text: str, method: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, method)
    assert any(problem.startswith(message) for problem in caught.value.problems), (
        caught.value.problems
    )


def test_every_problem_is_reported_at_once() -> None:
    text = config_text(
        Foo={},
        QuantizationConfig={"load_in_4bit": "true"},
        TrainingArguments={"output_dir": "/srv/results", "bogus": 1},
        DatasetConfig={"shuffle_seed": "x"},
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "qlora")
    keys = [problem.split(":", 1)[0] for problem in caught.value.problems]
    assert keys == [
        "Unrecognized section",
        "QuantizationConfig.load_in_4bit",
        "TrainingArguments.bogus",
        "TrainingArguments.output_dir",
        "DatasetConfig.shuffle_seed",
    ]
    assert str(caught.value) == "\n".join(caught.value.problems)


@pytest.mark.parametrize(
    ("text", "method"),
    [
        pytest.param("", "lora", id="empty"),
        pytest.param(config_text(QuantizationConfig={"load_in_8bit": True}), "qlora", id="8bit"),
        pytest.param(config_text(QuantizationConfig={"load_in_4bit": False}), "lora", id="off"),
        pytest.param("training_config: [", "lora", id="broken-yaml"),
    ],
)
def test_the_method_follows_the_quantization_setting(text: str, method: str) -> None:
    assert detect_method(text) == method


def test_default_config_refuses_an_unknown_method() -> None:
    with pytest.raises(ConfigError, match="method 'full' is not supported"):
        default_config("full")
