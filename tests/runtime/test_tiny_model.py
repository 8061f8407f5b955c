"""The tiny test model: it reloads with the Auto classes, generates, renders the Phi-3 chat
template, has vLLM's head size and is byte-identical between builds of one seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from presets.tiny import ANSWER, QUESTION, build_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tokenizer(tiny: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny)


def test_the_model_reloads_and_generates_eight_tokens(tiny: Path, tokenizer: Any) -> None:
    model: Any = AutoModelForCausalLM.from_pretrained(tiny)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    out = model.generate(**prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert out.shape[1] - prompt["input_ids"].shape[1] == 8
    assert model.dtype == torch.float32
    assert model.generation_config.eos_token_id == [
        tokenizer.convert_tokens_to_ids("<|end|>"),
        tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    ]


def test_the_chat_template_renders_phi3_turns(tokenizer: Any) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": ANSWER},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert text == (
        f"<|system|>\nBe brief.<|end|>\n<|user|>\n{QUESTION}<|end|>\n"
        f"<|assistant|>\n{ANSWER}<|end|>\n"
    )
    assert prompt.endswith(f"{QUESTION}<|end|>\n<|assistant|>\n")


def test_only_the_assistant_turn_is_marked_for_training(tokenizer: Any) -> None:
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    encoded = tokenizer.apply_chat_template(
        messages, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = encoded["input_ids"]
    marked = [i for i, m in zip(ids, encoded["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(marked) == ANSWER + "<|end|>"


def test_the_tokenizer_has_the_special_tokens_and_round_trips_text(tokenizer: Any) -> None:
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<|endoftext|>",
        "<|end|>",
        "<|pad|>",
    )
    for token in ("<|system|>", "<|user|>", "<|assistant|>"):
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id
    assert tokenizer.decode(tokenizer.encode(ANSWER)) == ANSWER
    assert tokenizer.decode(tokenizer.encode("naïve ☃")) == "naïve ☃"


def test_the_shape_suits_vllms_cpu_backend(tiny: Path, tokenizer: Any) -> None:
    config = AutoModelForCausalLM.from_pretrained(tiny).config
    assert config.hidden_size // config.num_attention_heads == 64
    assert config.num_hidden_layers == 2
    assert config.max_position_embeddings == 512
    assert config.vocab_size == len(tokenizer) <= 512
    assert config.tie_word_embeddings is False


def test_two_builds_of_one_seed_are_byte_identical(tiny: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again")
    names = sorted(p.name for p in tiny.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    assert "model.safetensors" in names
    for name in names:
        assert (tiny / name).read_bytes() == (again / name).read_bytes(), name


def test_another_seed_gives_other_weights(tiny: Path, tmp_path: Path) -> None:
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert (tiny / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()
