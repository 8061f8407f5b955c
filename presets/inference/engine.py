"""The model behind the transformers server: loading it (with its LoRA adapters combined at their
strengths, as Kaito does) and generating from it, one request at a time on one worker thread.
HTTP, limits and metrics are the server's (``server.py``)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

COMBINED_ADAPTER = "combined_adapter"


@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"
    ttft_s: float | None  # seconds until the first new token


@dataclass
class Cancel:
    """Set by the server when the client went away; generation stops at the next token."""

    event: threading.Event = field(default_factory=threading.Event)

    def set(self) -> None:
        self.event.set()


class ContextLengthError(ValueError):
    """The prompt and the requested new tokens do not fit the model's context."""


@dataclass
class Engine:
    """A loaded model and tokenizer. ``generate`` and ``stream`` run on one worker thread, so
    concurrent requests queue in order and PEFT's global adapter state is never shared."""

    model: Any
    tokenizer: Any
    context_length: int
    adapters: dict[str, float]
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
    )

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._executor

    def encode_prompt(self, prompt: str) -> list[int]:
        ids: list[int] = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return ids

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return self.encode_prompt(str(text))

    def check_fits(self, prompt_tokens: int, max_new_tokens: int) -> None:
        if prompt_tokens + max_new_tokens > self.context_length:
            raise ContextLengthError(
                f"This model's maximum context length is {self.context_length} tokens; the "
                f"prompt has {prompt_tokens} tokens and {max_new_tokens} new tokens were "
                "requested. Shorten the prompt or ask for fewer tokens."
            )

    def generate(
        self,
        ids: list[int],
        kwargs: dict[str, Any],
        cancel: Cancel | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> Generation:
        """Generate from ``ids`` (blocking: call it on ``executor``)."""
        import torch  # noqa: PLC0415 -- torch is imported by the worker that has it

        started = time.perf_counter()
        first: list[float] = []
        kwargs = dict(kwargs)
        seed = kwargs.pop("seed", None)
        if seed is not None:
            torch.manual_seed(int(seed))
        max_new = int(kwargs.get("max_new_tokens", 16))
        self.check_fits(len(ids), max_new)
        streamer = _Streamer(self.tokenizer, len(ids), on_token) if on_token else None
        criteria = _StopOn(cancel, first, started)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                stopping_criteria=[criteria],
                streamer=streamer,
                **kwargs,
            )
        new = output[0][len(ids) :].tolist()
        eos = _eos_ids(self.model, self.tokenizer)
        finish = "stop" if (new and new[-1] in eos) or len(new) < max_new else "length"
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Generation(text, len(ids), len(new), finish, first[0] if first else None)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class _StopOn:
    """A stopping criterion that records when the first token came and stops on cancel."""

    def __init__(self, cancel: Cancel | None, first: list[float], started: float) -> None:
        self._cancel, self._first, self._started = cancel, first, started

    def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
        import torch  # noqa: PLC0415

        if not self._first:
            self._first.append(time.perf_counter() - self._started)
        stop = self._cancel is not None and self._cancel.event.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool)


class _Streamer:
    """Feeds decoded text increments to ``on_token`` as tokens are generated."""

    def __init__(self, tokenizer: Any, prompt_len: int, on_token: Callable[[str], None]) -> None:
        self._tokenizer, self._on_token = tokenizer, on_token
        self._skip_prompt = True
        self._ids: list[int] = []
        self._sent = ""

    def put(self, value: Any) -> None:
        if self._skip_prompt:  # generate() first passes the whole prompt
            self._skip_prompt = False
            return
        self._ids.extend(int(v) for v in value.reshape(-1).tolist())
        self._flush(final=False)

    def end(self) -> None:
        self._flush(final=True)

    def _flush(self, *, final: bool) -> None:
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\ufffd") and not final:
            return  # maybe an incomplete multi-byte character: wait for the next token
        delta, self._sent = text[len(self._sent) :], text
        if delta:
            self._on_token(delta)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
    return set(eos) if isinstance(eos, list) else {int(eos)} if eos is not None else set()


# --- loading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadOptions:
    model: Path
    adapters_dir: Path | None = None
    torch_dtype: str = "auto"
    trust_remote_code: bool = False
    chat_template: str | None = None
    device_map: str | None = None
    threads: int | None = None


def load_engine(options: LoadOptions) -> Engine:
    """Load the model and tokenizer from a local folder (never from a hub), and the adapters."""
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    if options.threads:
        torch.set_num_threads(options.threads)
    if not (options.model / "config.json").is_file():
        raise FileNotFoundError(f"no model at {options.model} (config.json missing)")
    dtype: Any = (
        options.torch_dtype
        if options.torch_dtype == "auto"
        else getattr(torch, options.torch_dtype)
    )
    tokenizer = AutoTokenizer.from_pretrained(
        options.model, local_files_only=True, trust_remote_code=options.trust_remote_code
    )
    if options.chat_template:
        tokenizer.chat_template = _template_text(options.chat_template)
    model = AutoModelForCausalLM.from_pretrained(
        options.model,
        local_files_only=True,
        dtype=dtype,
        trust_remote_code=options.trust_remote_code,
        device_map=options.device_map,
    )
    model.eval()  # type: ignore[no-untyped-call]
    adapters = adapter_strengths(options.adapters_dir, os.environ)
    if adapters:
        model = _with_adapters(model, options.adapters_dir, adapters)
    context = int(getattr(model.config, "max_position_embeddings", 2048))
    log.info("engine.loaded", model=str(options.model), adapters=adapters, context=context)
    return Engine(model=model, tokenizer=tokenizer, context_length=context, adapters=adapters)


def adapter_strengths(adapters_dir: Path | None, env: Any) -> dict[str, float]:
    """Each adapter folder (with ``adapter_config.json``) and its strength: the environment
    variable named exactly like the folder (Kaito's convention), else 1.0."""
    if adapters_dir is None or not adapters_dir.is_dir():
        return {}
    found: dict[str, float] = {}
    for folder in sorted(adapters_dir.iterdir()):
        if (folder / "adapter_config.json").is_file():
            raw = env.get(folder.name)
            try:
                found[folder.name] = float(raw) if raw is not None else 1.0
            except ValueError as e:
                raise ValueError(
                    f"strength of adapter {folder.name} ({raw!r}) is not a number"
                ) from e
    return found


def _with_adapters(model: Any, adapters_dir: Path | None, strengths: dict[str, float]) -> Any:
    """Load every adapter, then combine them at their strengths into one active adapter. Kaito
    combines with SVD; Kaiten concatenates ("cat"), which is exact for any ranks."""
    from peft import PeftModel  # noqa: PLC0415

    assert adapters_dir is not None  # noqa: S101 -- strengths are only found in a folder
    names = list(strengths)
    peft_model = PeftModel.from_pretrained(model, adapters_dir / names[0], adapter_name=names[0])
    for name in names[1:]:
        peft_model.load_adapter(adapters_dir / name, adapter_name=name)
    peft_model.add_weighted_adapter(
        names, [strengths[n] for n in names], adapter_name=COMBINED_ADAPTER, combination_type="cat"
    )
    peft_model.set_adapter(COMBINED_ADAPTER)
    for name in names:
        peft_model.delete_adapter(name)
    peft_model.eval()
    return peft_model


def _template_text(value: str) -> str:
    """A chat template given inline (it has braces or newlines) or as a file path."""
    if any(c in value for c in "{}\n"):
        return value
    return Path(value).read_text()
