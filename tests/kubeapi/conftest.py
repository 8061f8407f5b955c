"""A development cluster per test, reached over HTTP through a kubeconfig, exactly as a service
or kubectl reaches a real cluster."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import config as aconfig

from localdev import infra
from localdev.kubeapi.cluster import DevCluster
from localdev.kubeapi.simulate import SimOptions, Simulator
from services.watcher.webhook import ensure_certificate
from tests.kubeapi.crds import GROUP, PLURAL, WIDGET_CRD

KUBECTL = Path(sys.executable).parent / "kubectl"


@dataclass
class Kubectl:
    kubeconfig: Path
    cache_dir: Path

    async def __call__(
        self, *args: str, stdin: str | None = None, timeout: float = 30, check: bool = True
    ) -> tuple[int, str, str]:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig))
        proc = await asyncio.create_subprocess_exec(
            str(KUBECTL),
            "--cache-dir",
            str(self.cache_dir),
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout
        )
        code = proc.returncode or 0
        if check and code != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {code}: {err.decode()}")
        return code, out.decode(), err.decode()

    async def apply(self, manifest: dict[str, Any] | str, *extra: str) -> str:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return (await self("apply", "-f", "-", *extra, stdin=text))[1]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[DevCluster]:
    dev = DevCluster(bookmark_interval=0.2)
    await dev.start()
    yield dev
    await dev.stop()


@pytest.fixture
def kubeconfig(cluster: DevCluster, tmp_path: Path) -> Path:
    return cluster.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Kubectl:
    return Kubectl(kubeconfig, tmp_path / "kube-cache")


@pytest.fixture
async def api_client(kubeconfig: Path) -> AsyncIterator[aclient.ApiClient]:
    client = await aconfig.new_client_from_config(config_file=str(kubeconfig))
    yield client
    await client.close()


@pytest.fixture
async def widgets(cluster: DevCluster, api_client: aclient.ApiClient) -> aclient.CustomObjectsApi:
    """The test CRD registered; returns the custom objects API."""
    await aclient.ApiextensionsV1Api(api_client).create_custom_resource_definition(WIDGET_CRD)
    return aclient.CustomObjectsApi(api_client)


@pytest.fixture
async def simulator(cluster: DevCluster) -> AsyncIterator[Simulator]:
    sim = Simulator(cluster.api, SimOptions(pod_ready_delay_s=0.05, job_run_s=0.2))
    sim.start()
    cluster.server.pod_proxy = sim.pod_proxy
    yield sim
    await sim.stop()


def self_signed(tmp: Path) -> tuple[ssl.SSLContext, bytes]:
    """A TLS server context and its CA bundle, made the way the watcher makes its own."""
    crt, key, bundle = ensure_certificate(tmp / "tls", "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)
    return context, bundle


@pytest.fixture
async def webhook(tmp_path: Path) -> AsyncIterator[tuple[str, bytes, list[dict[str, Any]]]]:
    """An HTTPS admission webhook that denies widgets named 'forbidden'."""
    reviews: list[dict[str, Any]] = []

    async def review(request: web.Request) -> web.Response:
        body = await request.json()
        reviews.append(body["request"])
        obj = body["request"]["object"] or {}
        allowed = obj.get("metadata", {}).get("name") != "forbidden"
        response: dict[str, Any] = {"uid": body["request"]["uid"], "allowed": allowed}
        if not allowed:
            response["status"] = {
                "code": 403,
                "message": "resource.instanceType: "
                "Standard_NC6s_v3 is not allowed in this namespace",
            }
        return web.json_response(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        )

    context, pem = self_signed(tmp_path)
    app = web.Application()
    app.router.add_post("/validate", review)
    runner = web.AppRunner(app)
    await runner.setup()
    port = infra.free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    yield f"https://127.0.0.1:{port}/validate", pem, reviews
    await runner.cleanup()


async def register_webhook(api_client: aclient.ApiClient, url: str, pem: bytes) -> None:
    """A ValidatingWebhookConfiguration sending widget creates and updates to ``url``."""
    await aclient.AdmissionregistrationV1Api(api_client).create_validating_webhook_configuration(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "validation.widgets"},
            "webhooks": [
                {
                    "name": "validation.widgets.example.kaiten.dev",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "clientConfig": {"url": url, "caBundle": base64.b64encode(pem).decode()},
                    "rules": [
                        {
                            "operations": ["CREATE", "UPDATE"],
                            "apiGroups": [GROUP],
                            "apiVersions": ["*"],
                            "resources": [PLURAL],
                        }
                    ],
                }
            ],
        }
    )
