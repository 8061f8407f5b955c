"""The embedded stack really runs models: Workspaces of instance type local-cpu run their pods as
local processes. A tiny-chat Workspace answers ``POST /chat`` and ``/v1/chat/completions``
through ``kaiten port-forward``; a tuning Workspace trains a LoRA adapter on the tiny model with
the real tuning runtime and pushes it to a local registry; an inference Workspace then serves that
adapter and gives the trained answer, which the base model does not. Deleting each Workspace
removes everything Kaiten made."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from presets.oci import Credentials, push_directory
from presets.tiny import ANSWER, QUESTION
from tests.runtime.tuning_support import GOLDEN_CONFIG, write_golden_dataset
from tests.support.registry import RunningRegistry, running_registry
from tests.support.stack import Stack, running_stack, wait_until

KAITEN = str(Path(sys.executable).parent / "kaiten")
WAIT_S = 240  # a pod imports torch and transformers: seconds each, slower on a busy CI machine


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, bundled_nats_url: str, postgres_server_url: str
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("local-runner-stack")
    store = tmp_path_factory.mktemp("model-store")
    with running_stack(
        home,
        bundled_nats_url,
        postgres_server_url,
        KAITEN_MODEL_STORE=str(store),
    ) as running:
        yield running


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Forward:
    """``kaiten port-forward svc/NAME LOCAL:80`` as a user runs it, until the test ends."""

    def __init__(self, stack: Stack, namespace: str, service: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [KAITEN, "port-forward", f"svc/{service}", f"{self.port}:80", "-n", namespace],
            env=stack.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert "Forwarding from" in line, line

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"http://127.0.0.1:{self.port}{path}", json=body, timeout=120)

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)


def apply(stack: Stack, namespace: str, *objects: dict[str, Any]) -> None:
    stack.apply(*({**o, "metadata": {**o["metadata"], "namespace": namespace}} for o in objects))


def wait_succeeded(stack: Stack, namespace: str, name: str) -> None:
    """Until WorkspaceSucceeded is True; fail at once with the Workspace's status and its pods
    when it fails (``workspaceFailed``; False with another reason means not yet)."""

    def verdict() -> str:
        got = stack.kubectl("get", "workspace", name, "-n", namespace, "-o", "json").stdout
        for condition in json.loads(got).get("status", {}).get("conditions") or []:
            if condition["type"] == "WorkspaceSucceeded":
                if condition["status"] == "True":
                    return "True"
                if condition.get("reason") == "workspaceFailed":
                    return "Failed"
        return ""

    if wait_until(verdict, timeout=WAIT_S, what=f"{name} to finish") != "True":
        status = stack.kubectl("get", "workspace", name, "-n", namespace, "-o", "yaml").stdout
        pods = stack.kubectl("get", "pods", "-n", namespace, "-o", "wide").stdout
        pytest.fail(f"{name} failed:\n{status}\n{pods}")


def chat(forward: Forward, question: str) -> str:
    reply = forward.post(
        "/v1/chat/completions",
        {
            "model": "tiny-chat",
            "messages": [{"role": "user", "content": question}],
            "temperature": 0,
            "max_tokens": 24,
        },
    )
    assert reply.status_code == 200, reply.text
    content: str = reply.json()["choices"][0]["message"]["content"]
    return content


def workspace(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "resource": {"instanceType": "local-cpu", "labelSelector": {"matchLabels": {"app": name}}},
        **spec,
    }


def docker_config_secret(name: str, registry: RunningRegistry) -> dict[str, Any]:
    auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    config = json.dumps({"auths": {registry.host: {"auth": auth}}})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name},
        "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()},
    }


def leftovers(stack: Stack, namespace: str, name: str) -> str:
    kinds = "deployments,statefulsets,services,configmaps,jobs,pods"
    selector = f"kaito.sh/workspace={name}"
    found = stack.kubectl("get", kinds, "-n", namespace, "-l", selector, "-o", "name").stdout
    found += stack.kubectl("get", "nodeclaims", "-l", selector, "-o", "name").stdout
    return found.strip()


def delete_and_check(stack: Stack, namespace: str, name: str) -> None:
    stack.kubectl("delete", "workspace", name, "-n", namespace, "--timeout=60s")
    assert not stack.kubectl("get", "workspace", "-n", namespace, "-o", "name").stdout.count(
        f"/{name}\n"
    )
    assert leftovers(stack, namespace, name) == ""


def test_tiny_chat_answers_through_port_forward(stack: Stack) -> None:
    ns = "chat"
    stack.namespace(ns)
    apply(stack, ns, workspace("tiny", inference={"preset": {"name": "tiny-chat"}}))
    wait_succeeded(stack, ns, "tiny")
    table = stack.kubectl("get", "workspace", "tiny", "-n", ns).stdout
    assert table.split("\n")[1].split()[1:5] == ["local-cpu", "True", "True", "True"], table

    forward = Forward(stack, ns, "tiny")
    try:
        reply = forward.post("/chat", {"prompt": "Hello, who are you?"})
        assert reply.status_code == 200, reply.text
        assert isinstance(reply.json()["Result"], str)
        assert isinstance(chat(forward, "Hello"), str)
    finally:
        forward.close()
    delete_and_check(stack, ns, "tiny")


def test_a_tuned_adapter_is_pushed_then_served(
    stack: Stack, registry: RunningRegistry, tmp_path: Path
) -> None:
    ns = "tuning"
    stack.namespace(ns)
    credentials = Credentials(registry.username, registry.password)
    dataset = write_golden_dataset(tmp_path / "dataset").parent
    data_image = f"{registry.host}/datasets/peru:1"
    push_directory(dataset, data_image, credentials=credentials, insecure=True)
    adapter_image = f"{registry.host}/adapters/peru:0.0.1"
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "peru-config"},
        "data": {"training_config.yaml": GOLDEN_CONFIG},
    }
    tuning = workspace(
        "peru-tuning",
        tuning={
            "preset": {"name": "tiny-chat"},
            "method": "lora",
            "config": "peru-config",
            "input": {"image": data_image, "imagePullSecrets": ["registry"]},
            "output": {"image": adapter_image, "imagePushSecret": "registry"},
        },
    )
    apply(stack, ns, docker_config_secret("registry", registry), config, tuning)
    wait_succeeded(stack, ns, "peru-tuning")
    manifest = registry.get(
        "/v2/adapters/peru/manifests/0.0.1", Accept="application/vnd.oci.image.manifest.v1+json"
    )
    assert manifest.status_code == 200, manifest.text

    served = workspace(
        "peru",
        inference={
            "preset": {"name": "tiny-chat"},
            "adapters": [
                {
                    "source": {
                        "name": "peru",
                        "image": adapter_image,
                        "imagePullSecrets": ["registry"],
                    },
                    "strength": "1.0",
                }
            ],
        },
    )
    base = workspace("base", inference={"preset": {"name": "tiny-chat"}})
    apply(stack, ns, served, base)
    wait_succeeded(stack, ns, "peru")
    wait_succeeded(stack, ns, "base")
    with_adapter, without = Forward(stack, ns, "peru"), Forward(stack, ns, "base")
    try:
        assert chat(with_adapter, QUESTION) == ANSWER
        assert chat(without, QUESTION) != ANSWER
    finally:
        with_adapter.close()
        without.close()
    for name in ("peru-tuning", "peru", "base"):
        delete_and_check(stack, ns, name)
