"""What the transformers server accepts and answers: Kaito's ``POST /chat`` and the OpenAI API
(chat completions, completions, models), as pydantic models, plus the mapping from a request
to ``generate`` keyword arguments (Kaito's defaults, overridden by the request)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Kaito's classic /chat defaults; max_length counts prompt and new tokens.
CHAT_DEFAULTS: dict[str, Any] = {
    "max_length": 200,
    "min_length": 0,
    "do_sample": True,
    "early_stopping": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 10,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
}
# generate() arguments a request may set; anything else is refused rather than passed blindly.
ALLOWED_GENERATE_KWARGS = frozenset(CHAT_DEFAULTS) | {
    "max_new_tokens",
    "min_new_tokens",
    "no_repeat_ngram_size",
    "length_penalty",
    "seed",
}


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class ChatRequest(BaseModel):
    """Kaito's ``POST /chat``: ``prompt`` for text generation, ``messages`` for conversations."""

    model_config = ConfigDict(extra="ignore")
    prompt: str | None = None
    messages: list[Message] | None = None
    return_full_text: bool = True
    clean_up_tokenization_spaces: bool = False
    prefix: str | None = None
    handle_long_generation: str | None = None
    generate_kwargs: dict[str, Any] = Field(default_factory=dict)


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    seed: int | None = None
    min_tokens: int = Field(default=0, ge=0, description="vLLM's extension: no EOS before this.")


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    prompt: str
    max_tokens: int = Field(default=16, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=1)
    echo: bool = False
    seed: int | None = None


def chat_kwargs(
    requested: dict[str, Any], generation_config: dict[str, Any], prompt_tokens: int
) -> dict[str, Any]:
    """``generate`` arguments for /chat: the model's generation config, then Kaito's defaults,
    then the request. ``max_length`` becomes ``max_new_tokens`` so the context check is exact."""
    unknown = set(requested) - ALLOWED_GENERATE_KWARGS
    if unknown:
        raise ValueError(f"unsupported generate_kwargs: {', '.join(sorted(unknown))}")
    merged = {**generation_config, **CHAT_DEFAULTS, **requested}
    if "max_new_tokens" not in requested:
        merged["max_new_tokens"] = max(1, int(merged["max_length"]) - prompt_tokens)
    merged.pop("max_length", None)
    return _sampling(merged)


def openai_kwargs(
    max_tokens: int,
    temperature: float | None,
    top_p: float | None,
    seed: int | None,
    min_tokens: int = 0,
) -> dict[str, Any]:
    """OpenAI semantics: temperature 0 is greedy; the default temperature is 1."""
    kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "top_k": 0}
    if min_tokens:
        kwargs["min_new_tokens"] = min(min_tokens, max_tokens)
    temp = 1.0 if temperature is None else temperature
    kwargs.update(do_sample=temp > 0, temperature=temp if temp > 0 else 1.0, top_p=top_p or 1.0)
    if seed is not None:
        kwargs["seed"] = seed
    return _sampling(kwargs)


def _sampling(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Drop sampling knobs when decoding is greedy (transformers warns about them otherwise)."""
    out = dict(kwargs)
    if not out.get("do_sample", False):
        for key in ("temperature", "top_k", "top_p", "typical_p"):
            out.pop(key, None)
    return out
