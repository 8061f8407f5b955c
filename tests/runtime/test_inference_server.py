"""The transformers server with the tiny model: Kaito's /chat, the OpenAI API through the
official client, adapters at their strengths, limits and concurrency."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

from presets.inference.engine import Engine, LoadOptions, adapter_strengths, load_engine
from presets.inference.server import ServerOptions, build_app
from tests.runtime.conftest import ServerThread

NAME = "tiny-phi"


@pytest.fixture(scope="module")
def app(engine: Engine) -> Any:
    return build_app(engine, ServerOptions(served_model_name=NAME, max_body_bytes=64 * 1024))


@pytest.fixture(scope="module")
def http(app: Any) -> TestClient:
    return TestClient(app)


@pytest.fixture(scope="module")
def openai_client(http: TestClient) -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http)


class TestKaitoChat:
    def test_prompt_returns_result_with_the_prompt_and_new_text(self, http: TestClient) -> None:
        body = {
            "prompt": "Hello",
            "generate_kwargs": {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False},
        }
        response = http.post("/chat", json=body)
        assert response.status_code == 200
        result = response.json()["Result"]
        assert result.startswith("Hello")
        assert len(result) > len("Hello")

    def test_messages_return_the_assistant_reply(self, http: TestClient) -> None:
        body = {
            "messages": [{"role": "user", "content": "What is the capital of Peru?"}],
            "generate_kwargs": {"max_new_tokens": 6, "min_new_tokens": 6},
        }
        response = http.post("/chat", json=body)
        assert response.status_code == 200
        assert isinstance(response.json()["Result"], str)

    def test_missing_prompt_is_kaitos_400(self, http: TestClient) -> None:
        response = http.post("/chat", json={"generate_kwargs": {}})
        assert response.status_code == 400
        assert response.json() == {"detail": "Text generation parameter prompt required"}

    def test_conversational_server_wants_messages(self, engine: Engine) -> None:
        client = TestClient(build_app(engine, ServerOptions(NAME, pipeline="conversational")))
        response = client.post("/chat", json={"prompt": "hi"})
        assert response.status_code == 400
        assert response.json() == {"detail": "Conversational parameter messages required"}

    def test_unknown_generate_kwargs_are_refused(self, http: TestClient) -> None:
        response = http.post("/chat", json={"prompt": "x", "generate_kwargs": {"os": "rm"}})
        assert response.status_code == 400
        assert "unsupported generate_kwargs: os" in response.json()["detail"]

    def test_health_and_root(self, http: TestClient) -> None:
        assert http.get("/health").json() == {"status": "Healthy"}
        assert http.get("/").json() == {"message": "Server is running"}


class TestOpenAI:
    def test_models_lists_the_served_name(self, openai_client: OpenAI) -> None:
        assert [m.id for m in openai_client.models.list().data] == [NAME]

    def test_chat_completion(self, openai_client: OpenAI) -> None:
        result = openai_client.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0
        )
        choice = result.choices[0]
        assert choice.finish_reason in ("stop", "length")
        assert choice.message.role == "assistant"
        assert result.usage is not None
        assert 1 <= result.usage.completion_tokens <= 8
        assert result.usage.prompt_tokens > 0

    def test_streamed_chat_completion_matches_the_plain_one(self, openai_client: OpenAI) -> None:
        messages: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": "Tell me about Lima"}
        ]
        plain = openai_client.chat.completions.create(
            model=NAME, messages=messages, max_tokens=12, temperature=0
        )
        chunks = list(
            openai_client.chat.completions.create(
                model=NAME,
                messages=messages,
                max_tokens=12,
                temperature=0,
                stream=True,
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert text == plain.choices[0].message.content
        assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason
        assert len(chunks) >= 3

    def test_completion(self, openai_client: OpenAI) -> None:
        result = openai_client.completions.create(
            model=NAME, prompt="Once", max_tokens=5, temperature=0
        )
        assert result.choices[0].finish_reason in ("stop", "length")

    def test_unknown_model_is_404_in_openai_shape(self, http: TestClient) -> None:
        response = http.post(
            "/v1/chat/completions",
            json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]},
        )
        assert response.status_code == 404
        assert response.json()["error"]["param"] == "model"


class TestLimits:
    @pytest.mark.parametrize(
        ("body", "status"),
        [
            (b"{not json", 422),
            (json.dumps({"messages": "not a list"}).encode(), 422),
            (json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), 422),
            (
                json.dumps(
                    {"messages": [{"role": "user", "content": "x"}], "max_tokens": -3}
                ).encode(),
                422,
            ),
        ],
        ids=["bad-json", "wrong-type", "bad-role", "negative-max-tokens"],
    )
    def test_malformed_requests_get_a_4xx_with_a_message(
        self, http: TestClient, body: bytes, status: int
    ) -> None:
        response = http.post(
            "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == status
        assert response.json()["detail"]

    def test_oversized_body_is_413(self, http: TestClient) -> None:
        response = http.post("/chat", json={"prompt": "x" * 70_000})
        assert response.status_code == 413

    def test_prompt_longer_than_the_context_is_400(self, http: TestClient) -> None:
        long_prompt = "the capital of peru is lima " * 200
        response = http.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": long_prompt}], "max_tokens": 8},
        )
        assert response.status_code == 400
        assert "maximum context length is 512 tokens" in response.json()["error"]["message"]

    def test_metrics_count_requests_and_tokens(self, http: TestClient) -> None:
        http.post("/v1/completions", json={"prompt": "a", "max_tokens": 2})
        text = http.get("/metrics").text
        assert 'kaiten_inference_requests_total{endpoint="/v1/completions",status="200"}' in text
        assert "kaiten_inference_completion_tokens_total" in text
        assert "kaiten_inference_time_to_first_token_seconds_count" in text


async def test_32_concurrent_requests_all_complete_over_http(app: Any) -> None:
    with ServerThread(app) as url:
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")

        async def one(i: int) -> str | None:
            result = await client.chat.completions.create(
                model=NAME, messages=[{"role": "user", "content": f"question {i}"}], max_tokens=4
            )
            return result.choices[0].finish_reason

        reasons = await asyncio.gather(*(one(i) for i in range(32)))
        await client.close()
    assert len(reasons) == 32
    assert set(reasons) <= {"stop", "length"}


def generated_tokens(metrics_text: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith("kaiten_inference_completion_tokens_total "):
            return float(line.split()[1])
    raise AssertionError("no completion token counter")


async def test_a_client_that_disconnects_mid_stream_stops_its_generation(app: Any) -> None:
    with ServerThread(app) as url:
        async with httpx2.AsyncClient(base_url=url, timeout=30) as client:
            before = generated_tokens((await client.get("/metrics")).text)
            body = {
                "messages": [{"role": "user", "content": "go on"}],
                "max_tokens": 400,
                "min_tokens": 400,
                "stream": True,
            }
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                async for _line in response.aiter_lines():
                    break  # read one event, then hang up
            quick = await client.post("/v1/completions", json={"prompt": "a", "max_tokens": 2})
            after = generated_tokens((await client.get("/metrics")).text)
    assert quick.status_code == 200
    # the abandoned stream stopped early: far fewer than its 400 tokens were generated
    assert after - before < 100


def make_adapter(base: Path, out: Path) -> Path:
    """A LoRA adapter with random (non-zero) weights, so it visibly changes the logits."""
    import torch  # noqa: PLC0415
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    )
    peft.save_pretrained(str(out))
    return out


def logits(engine: Engine) -> Any:
    import torch  # noqa: PLC0415

    ids = torch.tensor([engine.encode_prompt("The capital of Peru is")])
    with torch.inference_mode():
        return engine.model(input_ids=ids).logits


def test_adapter_strength_one_changes_logits_and_zero_does_not(
    tiny_model: Path, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch  # noqa: PLC0415

    adapters = tmp_path / "adapters"
    make_adapter(tiny_model, adapters / "my-adapter")
    base = logits(engine)

    monkeypatch.setenv("my-adapter", "1.0")
    full = load_engine(LoadOptions(model=tiny_model, adapters_dir=adapters, threads=1))
    monkeypatch.setenv("my-adapter", "0")
    none = load_engine(LoadOptions(model=tiny_model, adapters_dir=adapters, threads=1))

    assert full.adapters == {"my-adapter": 1.0}
    assert not torch.allclose(logits(full), base, atol=1e-3)
    assert torch.allclose(logits(none), base, atol=1e-5)


def test_strengths_come_from_variables_named_like_the_adapters(tmp_path: Path) -> None:
    for name in ("a", "b", "not-an-adapter"):
        (tmp_path / name).mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text("{}")
    (tmp_path / "b" / "adapter_config.json").write_text("{}")
    assert adapter_strengths(tmp_path, {"a": "0.25"}) == {"a": 0.25, "b": 1.0}
    with pytest.raises(ValueError, match="strength of adapter a"):
        adapter_strengths(tmp_path, {"a": "strong"})
