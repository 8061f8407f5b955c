"""A tiny random Phi-3 model with its own byte-level BPE tokenizer, built offline in a second.
It stands in for real presets in tests of the inference servers and the tuning job; its shape
(head_dim 64, ``initializer_range`` 0.3) is one vLLM's CPU backend accepts and LoRA can teach."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

QUESTION = "What is the capital of Peru?"
ANSWER = "The capital of Peru is Lima."

BOS, PAD, SYSTEM, USER, ASSISTANT, END = (
    "<|endoftext|>",
    "<|pad|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
)
SPECIAL_TOKENS = (BOS, PAD, SYSTEM, USER, ASSISTANT, END)
VOCAB_SIZE = 512
MAX_POSITIONS = 512

# Phi-3 layout: `<|role|>\ncontent<|end|>\n`. The assistant turn sits inside {% generation %} so
# that trl's `assistant_only_loss=True` can mask everything else.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}"
    "{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_SUBJECTS = (
    "the cat",
    "a dog",
    "the farmer",
    "my sister",
    "the teacher",
    "a robot",
    "the king",
    "our neighbour",
    "the pilot",
    "a child",
)
_VERBS = (
    "sees",
    "likes",
    "paints",
    "finds",
    "carries",
    "follows",
    "builds",
    "cleans",
    "sells",
    "watches",
)
_OBJECTS = (
    "the river",
    "a red apple",
    "the old house",
    "a small boat",
    "the garden",
    "a blue kite",
    "the bridge",
    "a wooden chair",
    "the market",
    "a bright lamp",
)
_CAPITALS = (
    ("Peru", "Lima"),
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Kenya", "Nairobi"),
    ("Chile", "Santiago"),
    ("Spain", "Madrid"),
    ("Egypt", "Cairo"),
    ("Canada", "Ottawa"),
)


def corpus(seed: int = 0, *, lines: int = 400) -> list[str]:
    """About 11 KB of text: random subject-verb-object sentences, then the Q/A phrases."""
    rng = random.Random(seed)  # noqa: S311 -- test text, reproducible on purpose
    text = []
    for _ in range(lines):
        sentence = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}."
        text.append(sentence[0].upper() + sentence[1:])
    for country, city in _CAPITALS:
        text += [f"What is the capital of {country}?", f"The capital of {country} is {city}."] * 2
    return text


def _train_tokenizer(lines: list[str]) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(lines, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # untyped __init__
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=END,
        pad_token=PAD,
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(token_id, int):
        raise TypeError(f"{token} is not one token")
    return token_id


def build_tiny_model(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny Phi-3 model and tokenizer (safetensors, float32) into ``out_dir``; the same
    seed gives byte-identical files."""
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, GenerationConfig, Phi3Config  # noqa: PLC0415

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(corpus(seed))
    ids = {token: _token_id(tokenizer, token) for token in SPECIAL_TOKENS}
    config = Phi3Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        initializer_range=0.3,
        tie_word_embeddings=False,
        bos_token_id=ids[BOS],
        eos_token_id=ids[END],
        pad_token_id=ids[PAD],
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]  # untyped
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]  # untyped __init__
        bos_token_id=ids[BOS], eos_token_id=[ids[END], ids[BOS]], pad_token_id=ids[PAD]
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def model_store() -> Path:
    """The local model store: ``$KAITEN_MODEL_STORE``, else ``~/.cache/kaiten/models``."""
    configured = os.environ.get("KAITEN_MODEL_STORE")
    return Path(configured) if configured else Path.home() / ".cache" / "kaiten" / "models"


def stored_model(store: Path, *, seed: int = 0) -> Path:
    """The tiny model in ``store`` (``tiny-chat``, or ``tiny-chat-seed<N>``), built there first
    when missing. Built in a temporary sibling and renamed, so pods that start together never
    see half a model."""
    target = store / ("tiny-chat" if seed == 0 else f"tiny-chat-seed{seed}")
    if (target / "config.json").is_file():
        return target
    store.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=store))
    try:
        build_tiny_model(staging, seed=seed)
        try:
            staging.rename(target)
        except OSError:  # another process finished first: theirs is the same model
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m presets.tiny DIR [--seed N] [--store]``: build the tiny model into DIR, or
    with ``--store`` copy it from the local model store (building it there once)."""
    parser = argparse.ArgumentParser(prog="python -m presets.tiny", description=__doc__)
    parser.add_argument("dir", type=Path, help="output directory (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--store",
        action="store_true",
        help="copy from the local model store ($KAITEN_MODEL_STORE, else "
        "~/.cache/kaiten/models), building it there first when missing",
    )
    args = parser.parse_args(argv)
    if args.store:
        source = stored_model(model_store(), seed=args.seed)
        shutil.copytree(source, args.dir, dirs_exist_ok=True)
        out = args.dir
    else:
        out = build_tiny_model(args.dir, seed=args.seed)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
