"""The development cluster's request log (``/_kaiten/requests``), over HTTP: a Kaiten client
identified by its User-Agent, each request recorded once in RBAC's verbs."""

from __future__ import annotations

import json
from pathlib import Path

from kubernetes_asyncio import client

from localdev.kubeapi.cluster import DevCluster
from shared.kube import new_api_client
from shared.settings import Settings
from tests.kubeapi.conftest import Kubectl


async def test_requests_are_recorded_per_client_in_rbac_verbs(
    cluster: DevCluster, kubeconfig: Path, kubectl: Kubectl
) -> None:
    api = await new_api_client(Settings(kubeconfig=str(kubeconfig)), user_agent="kaiten-test")
    assert str(api.user_agent).startswith("kaiten-test/")
    core = client.CoreV1Api(api)
    try:
        body = {"metadata": {"name": "cm"}, "data": {"a": "1"}}
        await core.create_namespaced_config_map("default", body)
        await core.read_namespaced_config_map("cm", "default")
        await core.list_namespaced_config_map("default")
        watched = await core.list_namespaced_config_map(
            "default", watch=True, timeout_seconds=1, _preload_content=False
        )
        await watched.read()  # type: ignore[attr-defined]  # a raw response, not a list
        await core.patch_namespaced_config_map("cm", "default", {"data": {"a": "2"}})
        await core.delete_namespaced_config_map("cm", "default")
        await core.delete_collection_namespaced_config_map("default", _preload_content=False)
        await core.list_node()
    finally:
        await api.close()
    _, out, _ = await kubectl("get", "--raw", "/_kaiten/requests")
    record = json.loads(out)
    assert record["kaiten-test"] == [
        ["create", "", "configmaps"],
        ["delete", "", "configmaps"],
        ["deletecollection", "", "configmaps"],
        ["get", "", "configmaps"],
        ["list", "", "configmaps"],
        ["list", "", "nodes"],
        ["patch", "", "configmaps"],
        ["watch", "", "configmaps"],
    ]
    # kubectl is recorded apart (its discovery is not a resource and is not recorded).
    assert "kubectl" not in record or all(r[2] != "configmaps" for r in record["kubectl"])
    _, out, _ = await kubectl("delete", "--raw", "/_kaiten/requests")
    assert json.loads(out) == {}
