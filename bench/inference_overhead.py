"""The transformers server's per-request overhead: the same 16-token greedy generation on the
tiny model, called directly (``engine.generate``) and through HTTP (``/v1/chat/completions``
on uvicorn). Prints median and p95 of both and their difference. Figures, not pass/fail.

Usage: OMP_NUM_THREADS=1 python bench/inference_overhead.py [--requests N] [--model DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx2
import uvicorn

from localdev import infra
from presets.inference.engine import LoadOptions, load_engine
from presets.inference.protocol import openai_kwargs
from presets.inference.server import ServerOptions, build_app
from shared.logs import configure_logging

MESSAGES = [{"role": "user", "content": "What is the capital of Peru?"}]
TOKENS = 16


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--model", type=Path)
    args = parser.parse_args()
    configure_logging("WARNING", "json")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from presets.tiny import build_tiny_model  # noqa: PLC0415

            model = build_tiny_model(Path(tmp) / "tiny")
        engine = load_engine(LoadOptions(model=model, threads=1))
        kwargs = openai_kwargs(TOKENS, 0, None, None, TOKENS)
        ids = engine.encode_chat(MESSAGES)
        direct = []
        for _ in range(args.requests):
            started = time.perf_counter()
            gen = engine.generate(ids, kwargs)
            direct.append(time.perf_counter() - started)
            assert gen.completion_tokens == TOKENS  # noqa: S101
        served = asyncio.run(http_latencies(engine, args.requests))
    for label, values in (("direct generate", direct), ("HTTP /v1/chat/completions", served)):
        print(
            f"{label:<28} median {statistics.median(values) * 1000:7.1f} ms   "
            f"p95 {percentile(values, 0.95) * 1000:7.1f} ms"
        )
    print(
        f"{'server overhead':<28} median "
        f"{(statistics.median(served) - statistics.median(direct)) * 1000:7.1f} ms   "
        f"p95 {(percentile(served, 0.95) - percentile(direct, 0.95)) * 1000:7.1f} ms   "
        f"({args.requests} requests of {TOKENS} tokens)"
    )


async def http_latencies(engine: object, count: int) -> list[float]:
    app = build_app(engine, ServerOptions(served_model_name="tiny"))  # type: ignore[arg-type]
    port = infra.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    infra.wait_for_port("127.0.0.1", port, 30, "the server")
    body = {"messages": MESSAGES, "max_tokens": TOKENS, "min_tokens": TOKENS, "temperature": 0}
    latencies = []
    try:
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await client.post("/v1/chat/completions", json=body)  # warm-up
            for _ in range(count):
                started = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body)
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return latencies


if __name__ == "__main__":
    main()
