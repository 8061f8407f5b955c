"""The transformers inference server (an ASGI app): Kaito's ``POST /chat``, the OpenAI API
(``/v1/chat/completions`` with server-sent-event streaming, ``/v1/completions``, ``/v1/models``),
``/health`` and Prometheus ``/metrics``. Requests queue for the single generation worker; bad or
oversized input gets a 4xx; a client that disconnects mid-stream stops its generation.

``python -m presets.inference.server --model DIR ...`` is the image's entry point; nothing heavy
happens at import (``build_app`` takes a loaded engine)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from presets.inference.engine import Cancel, ContextLengthError, Engine, Generation
from presets.inference.protocol import (
    ChatCompletionRequest,
    ChatRequest,
    CompletionRequest,
    chat_kwargs,
    openai_kwargs,
)

DEFAULT_PORT = 5000
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_WAITING = 256


@dataclass(frozen=True, slots=True)
class ServerOptions:
    served_model_name: str
    pipeline: str = "text-generation"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_waiting: int = DEFAULT_MAX_WAITING


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "kaiten_inference_requests_total",
            "Requests by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "kaiten_inference_request_seconds", "Request latency.", ["endpoint"], registry=registry
        )
        self.tokens_in = Counter(
            "kaiten_inference_prompt_tokens_total", "Prompt tokens.", registry=registry
        )
        self.tokens_out = Counter(
            "kaiten_inference_completion_tokens_total", "Generated tokens.", registry=registry
        )
        self.ttft = Histogram(
            "kaiten_inference_time_to_first_token_seconds",
            "Seconds from the start of generation to the first new token.",
            registry=registry,
        )

    def count(self, gen: Generation) -> None:
        self.tokens_in.inc(gen.prompt_tokens)
        self.tokens_out.inc(gen.completion_tokens)
        if gen.ttft_s is not None:
            self.ttft.observe(gen.ttft_s)


def openai_error(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": status}},
        status_code=status,
    )


class InferenceApi:
    """The endpoints; ``build_app`` mounts them. Generation runs on the engine's worker thread;
    at most ``max_waiting`` requests wait for it, the rest get 429."""

    def __init__(self, engine: Engine, options: ServerOptions, registry: CollectorRegistry) -> None:
        self.engine, self.options, self.registry = engine, options, registry
        self.metrics = Metrics(registry)
        self.waiting = asyncio.Semaphore(options.max_waiting)
        self.generation_config = _generation_config(engine)

    async def run(
        self,
        ids: list[int],
        kwargs: dict[str, Any],
        cancel: Cancel | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> Generation:
        if self.waiting.locked():
            raise HTTPException(
                429, f"more than {self.options.max_waiting} requests are waiting; retry later"
            )
        async with self.waiting:
            loop = asyncio.get_running_loop()
            gen = await loop.run_in_executor(
                self.engine.executor, self.engine.generate, ids, kwargs, cancel, on_token
            )
        self.metrics.count(gen)
        return gen

    async def limit_and_measure(self, request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        limit = self.options.max_body_bytes
        length = int(request.headers.get("content-length") or 0)
        if length > limit:
            response: Response = JSONResponse(
                {"detail": f"request body of {length} bytes exceeds {limit}"}, status_code=413
            )
        elif "content-length" not in request.headers and not await _body_within(request, limit):
            # A chunked body announces no length: count it as it arrives.
            response = JSONResponse(
                {"detail": f"request body exceeds {limit} bytes"}, status_code=413
            )
        else:
            response = await call_next(request)
        endpoint = request.url.path
        self.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    async def root(self) -> dict[str, str]:
        return {"message": "Server is running"}

    async def health(self) -> dict[str, str]:
        return {"status": "Healthy"}

    async def prometheus(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def chat(self, body: ChatRequest) -> dict[str, Any]:
        """Kaito's /chat: ``messages`` for a conversation, else ``prompt``."""
        pipeline = self.options.pipeline
        if body.messages is not None:
            ids = self.engine.encode_chat([m.model_dump() for m in body.messages])
        elif body.prompt is not None and pipeline == "text-generation":
            ids = self.engine.encode_prompt((body.prefix or "") + body.prompt)
        elif pipeline == "conversational":
            raise HTTPException(400, "Conversational parameter messages required")
        else:
            raise HTTPException(400, "Text generation parameter prompt required")
        try:
            kwargs = chat_kwargs(body.generate_kwargs, self.generation_config, len(ids))
        except ValueError as e:
            raise HTTPException(400, str(e)) from e
        gen = await self.run(ids, kwargs)
        if body.prompt is not None and body.messages is None and body.return_full_text:
            return {"Result": body.prompt + gen.text}
        return {"Result": gen.text}

    async def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.options.served_model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "kaito",
                }
            ],
        }

    def wrong_model(self, name: str | None) -> JSONResponse | None:
        served = self.options.served_model_name
        if name is None or name == served:
            return None
        return openai_error(
            404,
            f"The model `{name}` does not exist. Valid models: {served}.",
            "NotFoundError",
            "model",
        )

    async def chat_completions(self, body: ChatCompletionRequest, request: Request) -> Response:
        if (wrong := self.wrong_model(body.model)) is not None:
            return wrong
        ids = self.engine.encode_chat([m.model_dump() for m in body.messages])
        max_tokens = body.max_completion_tokens or body.max_tokens or 256
        kwargs = openai_kwargs(max_tokens, body.temperature, body.top_p, body.seed, body.min_tokens)
        self.engine.check_fits(len(ids), max_tokens)
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            return StreamingResponse(
                self.stream_chat(rid, ids, kwargs, request), media_type="text/event-stream"
            )
        gen = await self.run(ids, kwargs)
        message = {"message": {"role": "assistant", "content": gen.text}}
        return JSONResponse(
            _completion_body(rid, "chat.completion", self.options.served_model_name, gen, message)
        )

    async def stream_chat(
        self, rid: str, ids: list[int], kwargs: dict[str, Any], request: Request
    ) -> AsyncIterator[bytes]:
        """Server-sent events: a role chunk, content chunks as tokens come, a finish chunk."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        cancel = Cancel()

        def on_token(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, text)

        task = asyncio.ensure_future(self.run(ids, kwargs, cancel, on_token))
        task.add_done_callback(lambda _t: loop.call_soon_threadsafe(queue.put_nowait, None))
        chunk = _chunker(rid, self.options.served_model_name)
        try:
            yield chunk({"role": "assistant", "content": ""}, None)
            while (text := await queue.get()) is not None:
                if await request.is_disconnected():
                    break
                yield chunk({"content": text}, None)
            gen = await task
            yield chunk({}, gen.finish_reason)
            yield b"data: [DONE]\n\n"
        finally:
            cancel.set()  # a client that went away stops generation at the next token

    async def completions(self, body: CompletionRequest) -> Response:
        if (wrong := self.wrong_model(body.model)) is not None:
            return wrong
        ids = self.engine.encode_prompt(body.prompt)
        kwargs = openai_kwargs(body.max_tokens, body.temperature, body.top_p, body.seed)
        gen = await self.run(ids, kwargs)
        text = body.prompt + gen.text if body.echo else gen.text
        return JSONResponse(
            _completion_body(
                f"cmpl-{uuid.uuid4().hex}",
                "text_completion",
                self.options.served_model_name,
                gen,
                {"text": text},
            )
        )


def build_app(
    engine: Engine, options: ServerOptions, registry: CollectorRegistry | None = None
) -> FastAPI:
    api = InferenceApi(engine, options, registry or CollectorRegistry())
    app = FastAPI(title="Kaiten transformers inference server")
    app.middleware("http")(api.limit_and_measure)
    app.add_exception_handler(ContextLengthError, _context_too_long)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_api_route("/", api.root, methods=["GET"])
    app.add_api_route("/health", api.health, methods=["GET"])
    app.add_api_route("/metrics", api.prometheus, methods=["GET"])
    app.add_api_route("/chat", api.chat, methods=["POST"])
    app.add_api_route("/v1/models", api.models, methods=["GET"])
    app.add_api_route(
        "/v1/chat/completions", api.chat_completions, methods=["POST"], response_model=None
    )
    app.add_api_route("/v1/completions", api.completions, methods=["POST"], response_model=None)
    return app


async def _body_within(request: Request, limit: int) -> bool:
    """Read a body of unknown length, giving up past ``limit`` bytes. A body that fits is kept
    on the request, where Starlette hands it to the endpoint."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return False
        chunks.append(chunk)
    request._body = b"".join(chunks)
    return True


async def _context_too_long(_request: Request, exc: ContextLengthError) -> JSONResponse:
    return openai_error(400, str(exc), "BadRequestError", "messages")


async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"] if p != "body")
    return JSONResponse(
        {
            "detail": f"{where}: {first['msg']}" if where else first["msg"],
            "errors": json.loads(json.dumps(errors, default=str)),
        },
        status_code=422,
    )


def _chunker(rid: str, model: str) -> Callable[[dict[str, str], str | None], bytes]:
    created = int(time.time())

    def chunk(delta: dict[str, str], finish: str | None) -> bytes:
        body = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body)}\n\n".encode()

    return chunk


def _completion_body(
    rid: str, obj: str, model: str, gen: Generation, choice: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": gen.finish_reason, **choice}],
        "usage": {
            "prompt_tokens": gen.prompt_tokens,
            "completion_tokens": gen.completion_tokens,
            "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        },
    }


def _generation_config(engine: Engine) -> dict[str, Any]:
    config = getattr(engine.model, "generation_config", None)
    keep = ("pad_token_id", "eos_token_id", "bos_token_id")
    values = {k: getattr(config, k, None) for k in keep} if config is not None else {}
    if values.get("pad_token_id") is None:
        values["pad_token_id"] = engine.tokenizer.pad_token_id
    return {k: v for k, v in values.items() if v is not None}


# --- entry point ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Kaito's flag names (``--pretrained_model_name_or_path``, ``--torch_dtype``, ...) and
    Kaiten's (``--model``, ``--adapters-dir``); each also reads a ``KAITEN_*`` variable."""
    env = os.environ.get
    p = argparse.ArgumentParser(description="Kaiten transformers inference server")
    p.add_argument(
        "--model",
        "--pretrained_model_name_or_path",
        dest="model",
        default=env("KAITEN_MODEL", "/workspace/tfs/weights"),
    )
    p.add_argument(
        "--adapters-dir",
        "--adapters_dir",
        dest="adapters_dir",
        default=env("KAITEN_ADAPTERS_DIR", "/mnt/adapter"),
    )
    p.add_argument(
        "--served-model-name",
        "--served_model_name",
        dest="served_model_name",
        default=env("KAITEN_SERVED_MODEL_NAME"),
    )
    p.add_argument(
        "--port", type=int, default=int(env("KAITEN_PORT", str(DEFAULT_PORT + _local_rank())))
    )
    p.add_argument("--host", default=env("KAITEN_HOST", "0.0.0.0"))  # noqa: S104 -- in a pod
    p.add_argument(
        "--pipeline",
        default=env("KAITEN_PIPELINE", "text-generation"),
        choices=["text-generation", "conversational"],
    )
    p.add_argument(
        "--torch_dtype",
        "--torch-dtype",
        dest="torch_dtype",
        default=env("KAITEN_TORCH_DTYPE", "auto"),
    )
    p.add_argument(
        "--trust_remote_code", "--trust-remote-code", dest="trust_remote_code", action="store_true"
    )
    p.add_argument("--chat_template", "--chat-template", dest="chat_template", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    args, _unknown = p.parse_known_args(argv)  # Kaito passes extra --key value pairs
    return args


def main(argv: list[str] | None = None) -> int:
    import uvicorn  # noqa: PLC0415

    from presets.inference.engine import LoadOptions, load_engine  # noqa: PLC0415

    args = parse_args(argv)
    engine = load_engine(
        LoadOptions(
            model=Path(args.model),
            adapters_dir=Path(args.adapters_dir),
            torch_dtype=args.torch_dtype,
            trust_remote_code=args.trust_remote_code,
            chat_template=args.chat_template,
            threads=args.threads,
        )
    )
    name = args.served_model_name or Path(args.model).name
    app = build_app(
        engine,
        ServerOptions(
            served_model_name=name, pipeline=args.pipeline, max_body_bytes=args.max_body_bytes
        ),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _local_rank() -> int:
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
