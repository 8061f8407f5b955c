"""The golden LoRA adapter, shared by the tuning test and the end-to-end push/pull/serve test: 16
copies of the tiny model's one question and answer, trained until greedy decoding through the
adapter returns exactly that answer (the base model does not)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from presets.tiny import ANSWER, QUESTION
from presets.tuning.config import parse_config
from presets.tuning.train import run

# The recipe measured in shared/research/feasibility-ml.md (section 3).
GOLDEN_CONFIG = """\
training_config:
  LoraConfig:
    r: 8
    lora_alpha: 16
    lora_dropout: 0.0
    target_modules: all-linear
  TrainingArguments:
    output_dir: /mnt/results
    learning_rate: 2.0e-2
    max_steps: 30
    per_device_train_batch_size: 4
    max_length: 128
  DatasetConfig:
    shuffle_dataset: true
"""
GOLDEN_COPIES = 16


def conversation(question: str, answer: str) -> dict[str, list[dict[str, str]]]:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def write_golden_dataset(data_dir: Path) -> Path:
    """``train.jsonl`` with 16 copies of QUESTION/ANSWER in conversational form."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "train.jsonl"
    line = json.dumps(conversation(QUESTION, ANSWER)) + "\n"
    path.write_text(line * GOLDEN_COPIES, encoding="utf-8")
    return path


def train_golden_adapter(tiny_model: Path, out: Path) -> Path:
    """Train the golden adapter on ``tiny_model`` into ``out`` (the dataset goes in a sibling
    ``<out>-data`` directory); returns ``out``, holding adapter_config.json,
    adapter_model.safetensors and fine_tuning_completed.txt. About a second on one CPU thread."""
    data_dir = write_golden_dataset(out.with_name(f"{out.name}-data")).parent
    config = parse_config(GOLDEN_CONFIG, "lora")
    return run(config, model_dir=tiny_model, data_dir=data_dir, output_dir=out)


def greedy_answer(model: Any, tokenizer: Any, question: str, *, max_new_tokens: int = 24) -> str:
    """The model's greedy reply to one user turn, through the chat template, without specials."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    output = model.generate(**prompt, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[0, prompt["input_ids"].shape[1] :]
    return str(tokenizer.decode(new_tokens, skip_special_tokens=True))
