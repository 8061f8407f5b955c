"""One LoRA or QLoRA fine-tuning run, as Kaito's tuning job does it: the base model and tokenizer
loaded from local files, TRL's SFTTrainer with a PEFT LoRA config, progress reported every step,
and only the adapter (``adapter_config.json``, ``adapter_model.safetensors``) saved, followed by
the ``fine_tuning_completed.txt`` marker that the output pusher waits for."""

from __future__ import annotations

import codecs
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from presets.layout import COMPLETION_MARKER
from presets.tuning.config import ConfigError, TuningConfig
from presets.tuning.data import DatasetError, Shape, TrainingData, load_training_data
from presets.tuning.progress import ProgressSink

if TYPE_CHECKING:
    from transformers import TrainerCallback

__all__ = [
    "ADAPTER_FILES",
    "COMPLETION_MARKER",
    "QLORA_NEEDS_GPU",
    "QloraNeedsGpuError",
    "run",
]

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
QLORA_NEEDS_GPU = (
    "QLoRA needs an NVIDIA GPU (bitsandbytes 4/8-bit); none is visible. Use method lora on CPU."
)


class QloraNeedsGpuError(RuntimeError):
    """Method qlora was asked for where no CUDA device is visible (checked before any loading)."""


def run(
    config: TuningConfig,
    *,
    model_dir: Path,
    data_dir: Path,
    output_dir: Path,
    progress: ProgressSink | None = None,
) -> Path:
    """Fine-tune the model in ``model_dir`` on the dataset in ``data_dir`` and write the adapter
    and the completion marker to ``output_dir`` (which wins over TrainingArguments.output_dir);
    returns ``output_dir``. Progress goes to ``progress`` (default: a sink writing
    ``output_dir/progress.json``). Raises ``QloraNeedsGpuError``, ``DatasetError`` or
    ``ConfigError`` before any training."""
    import torch  # noqa: PLC0415 -- heavy; config parsing and the CLI's checks do not need it

    gpu = torch.cuda.is_available()
    if config.method == "qlora" and not gpu:
        raise QloraNeedsGpuError(QLORA_NEEDS_GPU)
    data = load_training_data(data_dir, config.dataset)
    tokenizer = _load_tokenizer(model_dir, config.model)
    assistant_only = _use_assistant_only_loss(data, tokenizer)
    args = _sft_config(config.training, output_dir, gpu=gpu, assistant_only=assistant_only)
    model = _load_model(model_dir, config, gpu=gpu)
    sink = progress if progress is not None else ProgressSink(output_dir)
    trainer = _trainer(
        config,
        model=model,
        tokenizer=tokenizer,
        data=data,
        args=args,
        callback=_progress_callback(sink),
    )
    trainer.train()
    if trainer.is_world_process_zero():
        _save_adapter(trainer.accelerator.unwrap_model(trainer.model), output_dir)
        timestamp = datetime.now(UTC).isoformat(timespec="seconds")
        (output_dir / COMPLETION_MARKER).write_text(f"Fine-Tuning completed at {timestamp}\n")
        sink.complete()
    return output_dir


def _load_tokenizer(model_dir: Path, model_config: Mapping[str, Any]) -> Any:
    from transformers import AutoTokenizer  # noqa: PLC0415

    tokenizer = AutoTokenizer.from_pretrained(
        model_dir,
        local_files_only=True,
        revision=model_config["revision"],
        trust_remote_code=model_config["trust_remote_code"],
        cache_dir=model_config["cache_dir"],
    )
    template = _chat_template(model_config["chat_template"])
    if template is not None:
        tokenizer.chat_template = template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _chat_template(value: str | None) -> str | None:
    """Kaito's rule: text with Jinja characters is the template itself (with ``\\n`` escapes),
    anything else is the path of a template file."""
    if value is None:
        return None
    if any(c in value for c in "{}\n"):
        return codecs.decode(value, "unicode_escape")
    try:
        return Path(value).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"ModelConfig.chat_template: cannot read {value}: {e}"]) from e


def _use_assistant_only_loss(data: TrainingData, tokenizer: Any) -> bool:
    """Conversational data trains on the assistant turns only when the chat template marks them
    with ``{% generation %}``; otherwise on the whole conversation."""
    from trl.chat_template_utils import has_generation_markers  # noqa: PLC0415

    if data.shape is not Shape.CONVERSATIONAL:
        return False
    if not tokenizer.chat_template:
        raise DatasetError(
            f"{data.source} is conversational but the model has no chat template; "
            "set ModelConfig.chat_template"
        )
    return bool(has_generation_markers(tokenizer.chat_template))


def _load_model(model_dir: Path, config: TuningConfig, *, gpu: bool) -> Any:
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig  # noqa: PLC0415

    settings = config.model
    dtype = settings["torch_dtype"]
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "revision": settings["revision"],
        "trust_remote_code": settings["trust_remote_code"],
        "cache_dir": settings["cache_dir"],
        "dtype": dtype if dtype in {None, "auto"} else getattr(torch, dtype),
    }
    if gpu:  # on CPU a device map only gets in the Trainer's way
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        kwargs["device_map"] = {"": local_rank} if world > 1 else settings["device_map"]
    if config.method == "qlora":
        quantization = {k: v for k, v in config.quantization.items() if k != "quant_method"}
        kwargs["quantization_config"] = BitsAndBytesConfig(**quantization)  # type: ignore[no-untyped-call]  # untyped __init__
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if config.method == "qlora":
        from peft import prepare_model_for_kbit_training  # noqa: PLC0415

        model = prepare_model_for_kbit_training(model)  # type: ignore[no-untyped-call]  # untyped
    model.config.use_cache = False  # the cache only helps generation
    return model


def _sft_config(
    training: Mapping[str, Any], output_dir: Path, *, gpu: bool, assistant_only: bool
) -> Any:
    from trl.trainer.sft_config import SFTConfig  # noqa: PLC0415

    values = dict(training)
    values["output_dir"] = str(output_dir)
    values.setdefault("report_to", "none")
    values.setdefault("disable_tqdm", True)
    values.setdefault("logging_steps", 1)  # every step's loss reaches the progress sink
    values.setdefault("assistant_only_loss", assistant_only)
    if not gpu:
        values["use_cpu"] = True
    try:
        return SFTConfig(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError([f"TrainingArguments: {e}"]) from e


def _lora_config(lora: Mapping[str, Any], model: Any) -> Any:
    from peft import LoraConfig  # noqa: PLC0415
    from peft.utils.constants import (  # noqa: PLC0415
        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as KNOWN_TARGETS,
    )

    values = dict(lora)
    if values.get("target_modules") is None and model.config.model_type not in KNOWN_TARGETS:
        values["target_modules"] = "all-linear"  # PEFT has no default for this architecture
    try:
        return LoraConfig(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError([f"LoraConfig: {e}"]) from e


def _trainer(
    config: TuningConfig,
    *,
    model: Any,
    tokenizer: Any,
    data: TrainingData,
    args: Any,
    callback: TrainerCallback,
) -> Any:
    from trl import SFTTrainer  # type: ignore[attr-defined]  # lazy module, no explicit export  # noqa: PLC0415

    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        peft_config=_lora_config(config.lora, model),
        callbacks=[callback],
    )


def _save_adapter(model: Any, output_dir: Path) -> None:
    """Only the adapter files: PEFT also writes a model card, which the pushed image leaves out."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".adapter-") as staging:
        model.save_pretrained(staging, safe_serialization=True)
        for name in ADAPTER_FILES:
            shutil.move(Path(staging) / name, output_dir / name)


def _progress_callback(sink: ProgressSink) -> TrainerCallback:
    """A TrainerCallback that reports step, total steps, loss, epoch, elapsed and ETA."""
    from transformers import TrainerCallback  # noqa: PLC0415

    class ProgressCallback(TrainerCallback):
        def __init__(self) -> None:
            self.started = time.monotonic()
            self.loss: float | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            self.started = time.monotonic()
            self._report(state)

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            self._report(state)

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
        ) -> None:
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])
                self._report(state)

        def _report(self, state: Any) -> None:
            step, total = int(state.global_step), int(state.max_steps) or None
            elapsed = time.monotonic() - self.started
            eta = None
            if total is not None and step > 0:
                eta = elapsed / step * max(total - step, 0)
            sink.report(
                step=step,
                total_steps=total,
                loss=self.loss,
                eta_seconds=eta,
                epoch=None if state.epoch is None else round(float(state.epoch), 4),
                elapsed_seconds=elapsed,
            )

    return ProgressCallback()
