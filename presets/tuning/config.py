"""Kaito's ``training_config.yaml`` (top key ``training_config``) parsed and checked into a frozen
``TuningConfig`` of plain values, with Kaito's defaults; every problem is collected into one
``ConfigError`` that names its key. Nothing here imports torch: the TRL and PEFT classes that
TrainingArguments and LoraConfig keys are checked against are imported only when needed."""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    StrictBool,
    StrictInt,
    ValidationError,
)

__all__ = [
    "METHODS",
    "SECTIONS",
    "ConfigError",
    "TuningConfig",
    "default_config",
    "detect_method",
    "fit_dtypes",
    "merge_with_template",
    "parse_config",
]

METHODS = ("lora", "qlora")
MOUNT_ROOT = "/mnt"
DEFAULT_OUTPUT_DIR = "/mnt/results"
# Directories under /mnt the tuning Job mounts for something else: the results cannot go there.
RESERVED_MOUNTS = {
    "/mnt/config": "training configuration (read-only)",
    "/mnt/data": "dataset",
    "/mnt/secrets": "registry credentials",
}
DTYPES = frozenset({"auto", "bfloat16", "float16", "float32", "float64", "half", "float", "double"})


class ConfigError(ValueError):
    """A training config that cannot be used; ``problems`` lists every problem, each naming its
    key (``Section.key: ...``)."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, slots=True)
class TuningConfig:
    """The checked config: one dict of keyword values per section, Kaito's defaults filled in.
    ``training`` holds only Kaito's defaults and the keys the user gave (TRL fills the rest)."""

    method: Literal["lora", "qlora"]
    model: dict[str, Any]
    quantization: dict[str, Any]
    lora: dict[str, Any]
    training: dict[str, Any]
    dataset: dict[str, Any]
    collator: dict[str, Any]

    @property
    def output_dir(self) -> str:
        return str(self.training["output_dir"])

    @property
    def quantized(self) -> bool:
        return bool(self.quantization["load_in_4bit"] or self.quantization["load_in_8bit"])


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_dtype(value: str) -> str:
    if value not in DTYPES:
        raise ValueError(f"must be one of {', '.join(sorted(DTYPES))}")
    return value


DType = Annotated[str, AfterValidator(_check_dtype)]


class ModelSection(_Section):
    """Kaito's ModelConfig: ``AutoModelForCausalLM.from_pretrained`` keywords."""

    pretrained_model_name_or_path: str = "/workspace/tfs/weights"
    state_dict: dict[str, Any] | None = None
    cache_dir: str | None = None
    from_tf: StrictBool = False
    force_download: StrictBool = False
    resume_download: StrictBool = False
    proxies: dict[str, str] | None = None
    output_loading_info: StrictBool = False
    local_files_only: StrictBool = False
    revision: str = "main"
    trust_remote_code: StrictBool = False
    torch_dtype: DType | None = None
    device_map: str | dict[str, Any] = "auto"
    chat_template: str | None = None


class QuantizationSection(_Section):
    """Kaito's QuantizationConfig: ``transformers.BitsAndBytesConfig`` keywords."""

    quant_method: Literal["bitsandbytes"] = "bitsandbytes"
    load_in_8bit: StrictBool = False
    load_in_4bit: StrictBool = False
    llm_int8_threshold: float = 6.0
    llm_int8_skip_modules: list[str] | None = None
    llm_int8_enable_fp32_cpu_offload: StrictBool = False
    llm_int8_has_fp16_weight: StrictBool = False
    bnb_4bit_compute_dtype: DType = "float32"
    bnb_4bit_quant_type: Literal["fp4", "nf4"] = "fp4"
    bnb_4bit_use_double_quant: StrictBool = False
    bnb_4bit_quant_storage: DType | None = None


class LoraSection(_Section):
    """Kaito's LoraConfig: ``peft.LoraConfig`` keywords; any other peft key is allowed."""

    model_config = ConfigDict(extra="allow", frozen=True)

    r: PositiveInt = 8
    lora_alpha: PositiveInt | PositiveFloat = 8
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    init_lora_weights: StrictBool | str = True
    target_modules: list[str] | str | None = None
    layers_to_transform: list[StrictInt] | StrictInt | None = None
    layers_pattern: list[str] | str | None = None
    loftq_config: dict[str, Any] = Field(default_factory=dict)
    task_type: Literal["CAUSAL_LM"] = "CAUSAL_LM"


class TrainingSection(_Section):
    """Kaito's TrainingArguments: TRL ``SFTConfig`` keywords; any other SFTConfig key is allowed.
    The common numeric keys are typed so that ``"2e-2"`` or ``"abc"`` is caught here."""

    model_config = ConfigDict(extra="allow", frozen=True)

    output_dir: str = DEFAULT_OUTPUT_DIR
    ddp_find_unused_parameters: StrictBool = False
    save_strategy: str = "no"
    per_device_train_batch_size: PositiveInt = 1
    learning_rate: float | None = Field(default=None, gt=0)
    num_train_epochs: float | None = Field(default=None, gt=0)
    max_steps: StrictInt | None = None
    gradient_accumulation_steps: PositiveInt | None = None
    logging_steps: float | None = Field(default=None, gt=0)
    warmup_steps: float | None = Field(default=None, ge=0)
    weight_decay: float | None = Field(default=None, ge=0)
    seed: StrictInt | None = None
    max_length: PositiveInt | None = None


class DatasetSection(_Section):
    """Kaito's DatasetConfig (the tuning template's ``train_test_split: 1`` is the default)."""

    dataset_path: str | None = None
    dataset_extension: Literal["csv", "json", "parquet", "arrow"] | None = None
    shuffle_dataset: StrictBool = True
    shuffle_seed: StrictInt = 42
    context_column: str | None = None
    response_column: str = "text"
    messages_column: str | None = None
    train_test_split: float = Field(default=1.0, gt=0.0, le=1.0)


class CollatorSection(_Section):
    """Kaito's DataCollator (``DataCollatorForLanguageModeling`` keywords)."""

    mlm: StrictBool = True
    whole_word_mask: StrictBool = False
    mlm_probability: float = Field(default=0.15, ge=0.0, le=1.0)
    mask_replace_prob: float = Field(default=0.8, ge=0.0, le=1.0)
    random_replace_prob: float = Field(default=0.1, ge=0.0, le=1.0)
    pad_to_multiple_of: PositiveInt | None = None
    return_tensors: Literal["pt"] = "pt"
    seed: StrictInt | None = None


SECTIONS: dict[str, type[_Section]] = {
    "ModelConfig": ModelSection,
    "QuantizationConfig": QuantizationSection,
    "LoraConfig": LoraSection,
    "TrainingArguments": TrainingSection,
    "DatasetConfig": DatasetSection,
    "DataCollator": CollatorSection,
}

# Keys whose defaults are Kaito's, not TRL's; other TrainingArguments keys appear only when given.
_KAITO_TRAINING_KEYS = (
    "output_dir",
    "ddp_find_unused_parameters",
    "save_strategy",
    "per_device_train_batch_size",
)


def _sft_config_keys() -> frozenset[str]:
    from trl.trainer.sft_config import SFTConfig  # noqa: PLC0415 -- heavy: only when needed

    return frozenset(f.name for f in dataclasses.fields(SFTConfig) if f.init)


def _peft_lora_keys() -> frozenset[str]:
    import peft  # noqa: PLC0415 -- heavy (torch); only when an unlisted key must be checked

    return frozenset(f.name for f in dataclasses.fields(peft.LoraConfig) if f.init)


# Sections whose unlisted keys are checked against a library class: (its name, its keys).
_OPEN_SECTIONS: dict[str, tuple[str, Callable[[], frozenset[str]]]] = {
    "TrainingArguments": ("TRL SFTConfig", _sft_config_keys),
    "LoraConfig": ("PEFT LoraConfig", _peft_lora_keys),
}


class _Loader(yaml.SafeLoader):
    """YAML 1.1 with YAML 1.2 floats, so ``2e-2`` is a number (PyYAML reads it as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def _load_sections(text: str) -> tuple[dict[str, Any], list[str]]:
    """The ``training_config`` mapping of the YAML text (empty when absent), and problems."""
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader
    except yaml.YAMLError as e:
        return {}, [f"training_config.yaml: not valid YAML: {e}"]
    if document is None:
        return {}, []
    if not isinstance(document, Mapping):
        return {}, ["training_config.yaml: must be a mapping with the key training_config"]
    problems = [
        f"Unrecognized top-level key: {key} (allowed: training_config)"
        for key in document
        if key != "training_config"
    ]
    sections = document.get("training_config")
    if sections is None:
        return {}, problems
    if not isinstance(sections, Mapping):
        return {}, [*problems, "training_config: must be a mapping of sections"]
    return dict(sections), problems


def _describe(error: Mapping[str, Any]) -> str:
    kind = str(error["type"])
    simple = {
        "bool_type": "must be true or false",
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
        "int_from_float": "must be an integer",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "string_type": "must be a string",
        "list_type": "must be a list",
        "dict_type": "must be a mapping",
    }
    if kind in simple:
        return simple[kind]
    message = str(error["msg"])
    return message.removeprefix("Value error, ").replace("Input should be", "must be")


def _pydantic_problems(section: str, error: ValidationError) -> list[str]:
    by_key: dict[str, list[str]] = {}
    for item in error.errors():
        loc = item["loc"]
        key = str(loc[0]) if loc else "?"
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(SECTIONS[section].model_fields)
            message = f"unknown key (allowed: {allowed})"
        else:
            message = _describe(item)
        if message not in by_key.setdefault(key, []):
            by_key[key].append(message)
    problems = []
    for key, messages in by_key.items():
        text = messages[0]
        if len(messages) > 1:  # a union: "must be a list or must be a string" reads badly
            text = "must be " + " or ".join(m.removeprefix("must be ") for m in messages)
        problems.append(f"{section}.{key}: {text}")
    return problems


def _parse_section(name: str, raw: Any) -> tuple[_Section | None, list[str]]:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        return None, [f"{name}: must be a mapping of keys to values"]
    bad_keys = [key for key in raw if not isinstance(key, str)]
    if bad_keys:
        return None, [f"{name}.{key}: keys must be strings" for key in bad_keys]
    problems = _unknown_library_keys(name, raw)
    try:
        return SECTIONS[name].model_validate(dict(raw)), problems
    except ValidationError as e:
        return None, _pydantic_problems(name, e) + problems


def _unknown_library_keys(name: str, raw: Mapping[str, Any]) -> list[str]:
    """For TrainingArguments and LoraConfig: the keys that neither Kaiten nor the library knows."""
    unlisted = [key for key in raw if key not in SECTIONS[name].model_fields]
    if name not in _OPEN_SECTIONS or not unlisted:
        return []
    library, known_keys = _OPEN_SECTIONS[name]
    try:
        known = known_keys()
    except ImportError:
        # A base install (the planner) has no TRL or PEFT: the tuning job checks these keys.
        return []
    return [
        f"{name}.{key}: unknown key (not a {library} argument)"
        for key in unlisted
        if key not in known
    ]


def _check_output_dir(training: Any) -> list[str]:
    """Kaito mounts the results volume under /mnt; a string output_dir elsewhere is refused (a
    wrongly typed one is reported by the section's own check)."""
    output_dir = training.get("output_dir") if isinstance(training, Mapping) else None
    if output_dir is None:
        output_dir = DEFAULT_OUTPUT_DIR
    if not isinstance(output_dir, str):
        return []
    normal = posixpath.normpath(output_dir) if output_dir else ""
    taken = next((d for d in RESERVED_MOUNTS if normal == d or normal.startswith(d + "/")), None)
    if taken is not None:
        return [
            f"TrainingArguments.output_dir: {output_dir} is inside {taken}, where the tuning "
            f"Job mounts its {RESERVED_MOUNTS[taken]}; use another directory under {MOUNT_ROOT}, "
            f"e.g. {DEFAULT_OUTPUT_DIR}"
        ]
    if normal.startswith(MOUNT_ROOT + "/") and posixpath.isabs(output_dir):
        return []
    return [
        f"TrainingArguments.output_dir: {output_dir or '(empty)'} must be a sub-directory of "
        f"{MOUNT_ROOT}; give another directory with --output instead"
    ]


def _check_method(method: str | None, quantization: QuantizationSection | None) -> list[str]:
    if quantization is None:
        return []
    four, eight = quantization.load_in_4bit, quantization.load_in_8bit
    if four and eight:
        return ["QuantizationConfig: load_in_4bit and load_in_8bit cannot both be true"]
    if method == "lora" and (four or eight):
        key = "load_in_4bit" if four else "load_in_8bit"
        return [
            f"method lora cannot use quantization (QuantizationConfig.{key} is true); "
            "use method qlora"
        ]
    if method == "qlora" and not (four or eight):
        return ["method qlora needs QuantizationConfig.load_in_4bit or load_in_8bit"]
    return []


def _normal_method(method: str) -> str | None:
    normal = method.strip().lower()
    return normal if normal in METHODS else None


def parse_config(
    text: str, method: str, *, default_target_modules: Sequence[str] | None = None
) -> TuningConfig:
    """Parse and check ``training_config.yaml`` text for ``method`` (lora or qlora, any case).
    ``default_target_modules`` (Kaito's ``DEFAULT_TARGET_MODULES``) applies when LoraConfig has
    no ``target_modules``. Raises ``ConfigError`` listing every problem."""
    raw_sections, problems = _load_sections(text)
    normal = _normal_method(method)
    if normal is None:
        problems.append(f"method {method!r} is not supported (allowed: {', '.join(METHODS)})")
    problems += [
        f"Unrecognized section: {name} (allowed: {', '.join(SECTIONS)})"
        for name in raw_sections
        if name not in SECTIONS
    ]
    parsed: dict[str, Any] = {}
    for name in SECTIONS:
        parsed[name], section_problems = _parse_section(name, raw_sections.get(name))
        problems += section_problems
        if name == "TrainingArguments":
            problems += _check_output_dir(raw_sections.get(name))
    problems += _check_method(normal, parsed["QuantizationConfig"])
    if problems:
        raise ConfigError(problems)
    return _build(normal or "lora", parsed, default_target_modules)


def _build(
    method: str, parsed: dict[str, Any], default_target_modules: Sequence[str] | None
) -> TuningConfig:
    lora = parsed["LoraConfig"].model_dump()
    if lora["target_modules"] is None and default_target_modules:
        lora["target_modules"] = list(default_target_modules)
    training_section: TrainingSection = parsed["TrainingArguments"]
    training = {key: getattr(training_section, key) for key in _KAITO_TRAINING_KEYS}
    training |= training_section.model_dump(exclude_unset=True)
    return TuningConfig(
        method="qlora" if method == "qlora" else "lora",
        model=parsed["ModelConfig"].model_dump(),
        quantization=parsed["QuantizationConfig"].model_dump(),
        lora=lora,
        training=training,
        dataset=parsed["DatasetConfig"].model_dump(),
        collator=parsed["DataCollator"].model_dump(),
    )


def merge_with_template(method: str, user_text: str | None) -> str:
    """The effective ``training_config.yaml``: Kaito's template for ``method`` with each of the
    user's sections merged over the template's, key by key (the user wins). Text that is not a
    ``training_config`` mapping of mappings is returned as is, for ``parse_config`` to report."""
    template, _ = _load_sections(default_config(method))
    if user_text is None:
        return default_config(method)
    user, problems = _load_sections(user_text)
    if problems or not all(isinstance(v, Mapping) for v in user.values()):
        return user_text
    merged = {name: dict(section) for name, section in template.items()}
    for name, section in user.items():
        merged[name] = {**merged.get(name, {}), **section}
    return yaml.safe_dump({"training_config": merged}, sort_keys=False)


def fit_dtypes(text: str, *, bfloat16: bool, cpu: bool = False) -> tuple[str, list[str]]:
    """``text`` with every bfloat16 setting turned to float16 when the GPU has no bfloat16
    (compute capability below 8.0), or, on a CPU (``cpu``), the model in float32 and no mixed
    precision; a note per change. Unparsable text is returned as is."""
    sections, problems = _load_sections(text)
    if (bfloat16 and not cpu) or problems:
        return text, []
    notes: list[str] = []
    why = "no GPU" if cpu else "no bfloat16 on this GPU"
    changes: tuple[tuple[str, str, object, object], ...] = (
        ("ModelConfig", "torch_dtype", "bfloat16", "float16"),
        ("QuantizationConfig", "bnb_4bit_compute_dtype", "bfloat16", "float16"),
        ("TrainingArguments", "bf16", True, "fp16"),
    )
    if cpu:
        changes = (
            ("ModelConfig", "torch_dtype", "bfloat16", "float32"),
            ("ModelConfig", "torch_dtype", "float16", "float32"),
            ("TrainingArguments", "bf16", True, None),
            ("TrainingArguments", "fp16", True, None),
        )
    for section, key, bad, good in changes:
        values = sections.get(section)
        if isinstance(values, Mapping) and values.get(key) == bad:
            values = dict(values)
            if bad is True:  # a mixed-precision flag: dropped, or swapped for ``good``
                del values[key]
                if good is not None:
                    values[str(good)] = True
                after = f"{good}: true" if good else "off"
                notes.append(f"{section}.{key}: true -> {after} ({why})")
            else:
                values[key] = good
                notes.append(f"{section}.{key}: {bad} -> {good} ({why})")
            sections[section] = values
    if not notes:
        return text, []
    return yaml.safe_dump({"training_config": sections}, sort_keys=False), notes


def detect_method(text: str) -> str:
    """The method a config implies: qlora when QuantizationConfig turns 4- or 8-bit loading on,
    else lora (also for text that does not parse: ``parse_config`` reports that)."""
    sections, _ = _load_sections(text)
    quantization = sections.get("QuantizationConfig")
    if isinstance(quantization, Mapping) and (
        quantization.get("load_in_4bit") is True or quantization.get("load_in_8bit") is True
    ):
        return "qlora"
    return "lora"


_TEMPLATE = """\
training_config:
  ModelConfig:
    torch_dtype: "bfloat16"
    local_files_only: true
    device_map: "auto"
    # chat_template: "/workspace/chat_templates/llama-3-instruct.jinja"

  QuantizationConfig:
{quantization}
  LoraConfig:
    r: 8
    lora_alpha: 8
    lora_dropout: 0.0

  TrainingArguments:
    output_dir: "/mnt/results"
    ddp_find_unused_parameters: false
    save_strategy: "no"
    per_device_train_batch_size: 1

  DataCollator:
    mlm: true

  DatasetConfig:
    shuffle_dataset: true
    train_test_split: 1
"""

_QUANTIZATION = {
    "lora": "    load_in_4bit: false\n",
    "qlora": (
        "    load_in_4bit: true\n"
        '    bnb_4bit_quant_type: "nf4"\n'
        '    bnb_4bit_compute_dtype: "bfloat16"\n'
        "    bnb_4bit_use_double_quant: true\n"
    ),
}


def default_config(method: str) -> str:
    """Kaito's default config for ``method``: the ``lora-params-template`` or
    ``qlora-params-template`` ConfigMap's ``training_config.yaml``, as YAML text."""
    normal = _normal_method(method)
    if normal is None:
        raise ConfigError([f"method {method!r} is not supported (allowed: {', '.join(METHODS)})"])
    return _TEMPLATE.format(quantization=_QUANTIZATION[normal])
