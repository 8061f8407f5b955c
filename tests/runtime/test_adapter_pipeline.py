"""The whole adapter path, as a tuning Workspace and then an inference Workspace use it: train an
adapter on one question, push it as an image to an authenticated registry (the tuning Job's
pusher), pull it into the adapters folder (the deployer's init container), and serve it: the
server gives the exact trained answer, the base model does not."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from presets.inference.engine import LoadOptions, load_engine
from presets.inference.server import ServerOptions, build_app
from presets.oci import Credentials, pull_directory, push_adapter
from presets.tiny import ANSWER, QUESTION
from tests.runtime.tuning_support import train_golden_adapter
from tests.support.registry import RunningRegistry, running_registry

KAITEN = str(Path(sys.executable).parent / "kaiten")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


def answer(model: Path, adapters: Path | None) -> str:
    engine = load_engine(LoadOptions(model=model, adapters_dir=adapters, threads=1))
    try:
        client = TestClient(build_app(engine, ServerOptions(served_model_name="phi")))
        reply = client.post(
            "/v1/chat/completions",
            json={
                "model": "phi",
                "messages": [{"role": "user", "content": QUESTION}],
                "temperature": 0,
                "max_tokens": 24,
            },
        )
        assert reply.status_code == 200, reply.text
        content: str = reply.json()["choices"][0]["message"]["content"]
        return content
    finally:
        engine.close()


def test_a_tuned_adapter_travels_through_a_registry_and_serves_its_answer(
    tiny_model: Path, registry: RunningRegistry, tmp_path: Path
) -> None:
    adapter = train_golden_adapter(tiny_model, tmp_path / "results")
    assert (adapter / "fine_tuning_completed.txt").is_file()
    reference = f"{registry.host}/adapters/peru:0.0.1"
    credentials = Credentials(registry.username, registry.password)
    push_adapter(adapter, reference, preset="tiny", credentials=credentials, insecure=True)

    pulled = tmp_path / "mnt-adapter" / "peru"
    pull_directory(reference, pulled, credentials=credentials, insecure=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (pulled / name).read_bytes() == (adapter / name).read_bytes()

    assert answer(tiny_model, pulled.parent).strip() == ANSWER
    assert answer(tiny_model, None).strip() != ANSWER


def test_kaiten_oci_pull_with_a_wrong_password_says_so(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    config = registry.docker_config(tmp_path / "config.json", password="wrong")
    result = subprocess.run(
        [
            KAITEN,
            "oci",
            "pull",
            f"{registry.host}/adapters/peru:0.0.1",
            str(tmp_path / "out"),
            "--docker-config",
            str(config),
            "--insecure",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "rejected the credentials for user bob" in result.stderr


def test_kaiten_tune_writes_where_output_says_and_refuses_a_config_dir_outside_mnt(
    tiny_model: Path, tmp_path: Path
) -> None:
    from tests.runtime.tuning_support import GOLDEN_CONFIG, write_golden_dataset  # noqa: PLC0415

    data = tmp_path / "data"
    write_golden_dataset(data)
    config = tmp_path / "training_config.yaml"
    config.write_text(GOLDEN_CONFIG.replace("max_steps: 30", "max_steps: 2"))
    output = tmp_path / "my-adapter"
    run = [
        KAITEN,
        "tune",
        "--config",
        str(config),
        "--data",
        str(data),
        "--model",
        str(tiny_model),
        "--progress-port",
        "0",
    ]
    result = subprocess.run(
        [*run, "--output", str(output)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in output.iterdir()) >= [
        "adapter_config.json",
        "adapter_model.safetensors",
        "fine_tuning_completed.txt",
    ]

    config.write_text(GOLDEN_CONFIG.replace("/mnt/results", str(tmp_path / "elsewhere")))
    refused = subprocess.run(run, capture_output=True, text=True, timeout=300, check=False)
    assert refused.returncode == 2
    assert "TrainingArguments.output_dir" in refused.stderr
    assert "--output" in refused.stderr
