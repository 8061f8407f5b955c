"""Admission webhooks over HTTPS, fault injection, persistence, and `kaiten cluster`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio.client.exceptions import ApiException

from localdev import infra
from localdev.kubeapi.cluster import DevCluster
from tests.kubeapi.conftest import register_webhook
from tests.kubeapi.crds import GROUP, PLURAL, widget
from tests.support.polling import eventually

V = "v1beta1"


async def test_a_webhook_denial_reaches_the_client_verbatim(
    widgets: aclient.CustomObjectsApi,
    api_client: aclient.ApiClient,
    webhook: tuple[str, bytes, list[dict[str, Any]]],
) -> None:
    url, pem, reviews = webhook
    await register_webhook(api_client, url, pem)

    await widgets.create_namespaced_custom_object(GROUP, V, "default", PLURAL, widget("fine"))
    with pytest.raises(ApiException) as caught:
        await widgets.create_namespaced_custom_object(
            GROUP, V, "default", PLURAL, widget("forbidden")
        )
    status = json.loads(caught.value.body)
    assert caught.value.status == 403
    assert status["message"] == (
        'admission webhook "validation.widgets.example.kaiten.dev" denied the request: '
        "resource.instanceType: Standard_NC6s_v3 is not allowed in this namespace"
    )
    assert [(r["operation"], r["name"], r["kind"]["kind"]) for r in reviews] == [
        ("CREATE", "fine", "Widget"),
        ("CREATE", "forbidden", "Widget"),
    ]
    configmaps = aclient.CoreV1Api(api_client)
    await configmaps.create_namespaced_config_map("default", {"metadata": {"name": "untouched"}})
    assert len(reviews) == 2  # rules decide what is sent


async def test_an_unreachable_webhook_fails_closed(
    widgets: aclient.CustomObjectsApi,
    api_client: aclient.ApiClient,
) -> None:
    port = infra.free_port()
    await aclient.AdmissionregistrationV1Api(api_client).create_validating_webhook_configuration(
        {
            "metadata": {"name": "down"},
            "webhooks": [
                {
                    "name": "down.example",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "clientConfig": {"url": f"https://127.0.0.1:{port}/x"},
                    "rules": [
                        {
                            "operations": ["*"],
                            "apiGroups": ["*"],
                            "apiVersions": ["*"],
                            "resources": [PLURAL],
                        }
                    ],
                }
            ],
        }
    )
    with pytest.raises(ApiException) as caught:
        await widgets.create_namespaced_custom_object(GROUP, V, "default", PLURAL, widget("w"))
    assert caught.value.status == 500
    assert 'failed calling webhook "down.example"' in json.loads(caught.value.body)["message"]


@pytest.mark.parametrize(
    ("code", "reason"), [(500, "InternalError"), (429, "TooManyRequests"), (409, "Conflict")]
)
async def test_injected_failures_answer_the_next_requests_then_stop(
    cluster: DevCluster, code: int, reason: str
) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{cluster.url}/_kaiten/faults",
            json={"fail": {"count": 2, "code": code, "retry_after": 3}},
        ) as r:
            assert r.status == 200
        results = []
        for _ in range(3):
            async with s.get(f"{cluster.url}/api/v1/namespaces/default/configmaps") as r:
                results.append(
                    (r.status, (await r.json()).get("reason"), r.headers.get("Retry-After"))
                )
    retry_after = "3" if code == 429 else None
    assert results == [(code, reason, retry_after)] * 2 + [(200, None, None)]


async def test_state_file_keeps_objects_and_crds_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = DevCluster(state_file=state)
    await first.start()
    async with aiohttp.ClientSession() as s:
        from tests.kubeapi.crds import WIDGET_CRD  # noqa: PLC0415

        await s.post(
            f"{first.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=WIDGET_CRD
        )
        async with s.post(
            f"{first.url}/apis/{GROUP}/{V}/namespaces/default/{PLURAL}", json=widget("kept")
        ) as r:
            created = await r.json()
    await first.stop()

    second = DevCluster(state_file=state)
    await second.start()
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{second.url}/apis/{GROUP}/{V}/namespaces/default/{PLURAL}/kept") as r,
        ):
            assert r.status == 200
            kept = await r.json()
    finally:
        await second.stop()
    assert kept["metadata"]["uid"] == created["metadata"]["uid"]
    assert int(kept["metadata"]["resourceVersion"]) >= int(created["metadata"]["resourceVersion"])


async def test_kaiten_cluster_starts_fast_writes_a_kubeconfig_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    port = infra.free_port()
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "kaiten"),
        "cluster",
        "--port",
        str(port),
        "--kubeconfig",
        str(kubeconfig),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20) if proc.stdout else b""
        ready_after = time.monotonic() - started
        assert f"127.0.0.1:{port}" in line.decode()
        config = json.loads(kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/version") as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    print(f"kaiten cluster answered after {ready_after:.2f} s (process start included)")
    await eventually(lambda: not infra.tcp_open("127.0.0.1", port), what="the port to close")
