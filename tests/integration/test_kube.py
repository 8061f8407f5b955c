"""The Kubernetes helpers over real HTTP, against a small recording API server: the client
factory reads a kubeconfig, patches carry explicit content types, and API errors become the
errors that decide an event's fate. (The full API emulator arrives with issue #3.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from localdev import infra
from shared.errors import ConfigError, PermanentError, TransientError
from shared.kube import (
    JSON_PATCH,
    MERGE_PATCH,
    WORKSPACES,
    AlreadyExistsError,
    NotFoundError,
    json_patch_custom_object,
    merge_patch_custom_object,
    new_api_client,
)
from shared.settings import Settings

BASE = "/apis/kaito.sh/v1beta1/namespaces/default/workspaces"


@dataclass
class Recorder:
    """What the fake server received, and what it should answer next."""

    requests: list[tuple[str, str, str, Any]] = field(default_factory=list)
    reply_status: int = 200
    reply_body: dict[str, Any] = field(default_factory=dict)
    reply_headers: dict[str, str] = field(default_factory=dict)


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Recorder, client.CustomObjectsApi]]:
    rec = Recorder()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        rec.requests.append(
            (request.method, request.path, request.content_type, json.loads(body or b"null"))
        )
        return web.json_response(rec.reply_body, status=rec.reply_status, headers=rec.reply_headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = infra.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    api_client = await new_api_client(Settings(kubeconfig=str(kubeconfig)))
    try:
        yield rec, client.CustomObjectsApi(api_client)
    finally:
        await api_client.close()
        await runner.cleanup()


async def test_merge_patch_of_status_sends_merge_patch_content_type(
    api: tuple[Recorder, client.CustomObjectsApi],
) -> None:
    rec, objects = api
    rec.reply_body = {"metadata": {"name": "ws"}, "status": {"state": "Ready"}}
    patch = {"status": {"state": "Ready"}}

    result = await merge_patch_custom_object(
        objects, WORKSPACES, "default", "ws", patch, status=True
    )

    assert result == rec.reply_body
    assert rec.requests == [("PATCH", f"{BASE}/ws/status", MERGE_PATCH, patch)]


async def test_json_patch_sends_the_operation_list(
    api: tuple[Recorder, client.CustomObjectsApi],
) -> None:
    rec, objects = api
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "workspace.finalizer.kaito.sh"},
    ]
    await json_patch_custom_object(objects, WORKSPACES, "default", "ws", ops)
    assert rec.requests == [("PATCH", f"{BASE}/ws", JSON_PATCH, ops)]


@pytest.mark.parametrize(
    ("status", "reason", "headers", "expected", "delay"),
    [
        (404, "NotFound", {}, NotFoundError, None),
        (409, "AlreadyExists", {}, AlreadyExistsError, None),
        (409, "Conflict", {}, TransientError, None),
        (429, "TooManyRequests", {"Retry-After": "7"}, TransientError, 7.0),
        (500, "InternalError", {}, TransientError, None),
        (503, "ServiceUnavailable", {}, TransientError, None),
        (422, "Invalid", {}, PermanentError, None),
        (403, "Forbidden", {}, PermanentError, None),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else None,
)
async def test_api_errors_become_kaiten_errors_carrying_the_server_message(
    api: tuple[Recorder, client.CustomObjectsApi],
    status: int,
    reason: str,
    headers: dict[str, str],
    expected: type[Exception],
    delay: float | None,
) -> None:
    rec, objects = api
    rec.reply_status = status
    rec.reply_body = status_body(status, reason, f"server says {reason}")
    rec.reply_headers = headers

    with pytest.raises(expected) as caught:
        await merge_patch_custom_object(objects, WORKSPACES, "default", "ws", {"metadata": {}})

    assert "server says " + reason in str(caught.value)
    assert "workspaces.kaito.sh default/ws" in str(caught.value)
    if isinstance(caught.value, TransientError):
        assert caught.value.delay == delay
    if isinstance(caught.value, PermanentError):
        assert caught.value.reason == reason


async def test_missing_kubeconfig_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        await new_api_client(Settings(kubeconfig=str(tmp_path / "absent")))


async def test_no_configuration_at_all_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    with pytest.raises(ConfigError, match="set KUBECONFIG"):
        await new_api_client(Settings())


async def test_the_proxy_is_decided_once_and_no_request_looks_up_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp's trust_env reads the proxy variables and ~/.netrc in a worker thread on every
    request; the client decides the proxy when it is built instead (NO_PROXY respected)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://api.example:6443"}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    api_client = await new_api_client(Settings(kubeconfig=str(kubeconfig)))
    try:
        assert api_client.rest_client.pool_manager.trust_env is False
        assert api_client.configuration.proxy == "http://proxy.example:3128"
        headers = api_client.configuration.proxy_headers or {}
        assert headers["Proxy-Authorization"].startswith("Basic ")
    finally:
        await api_client.close()
    monkeypatch.setenv("NO_PROXY", "api.example")
    api_client = await new_api_client(Settings(kubeconfig=str(kubeconfig)))
    try:
        assert api_client.configuration.proxy is None
    finally:
        await api_client.close()
