"""The planner's ConfigMap reads against the Kubernetes API emulator."""

from __future__ import annotations

import aiohttp
import pytest
from kubernetes_asyncio import client as aclient

from localdev.kubeapi.cluster import DevCluster
from services.planner.kubeapi import ConfigMapReader
from shared.errors import TransientError


async def test_configmaps_are_read_and_a_missing_one_is_none(
    api_client: aclient.ApiClient,
) -> None:
    core = aclient.CoreV1Api(api_client)
    await core.create_namespaced_config_map(
        "default",
        {
            "metadata": {"name": "tuning-cfg"},
            "data": {"training_config.yaml": "training_config: {}\n"},
        },
    )
    found = await ConfigMapReader(api_client).read("default", ["tuning-cfg", "absent"])
    assert found == {
        "tuning-cfg": {"training_config.yaml": "training_config: {}\n"},
        "absent": None,
    }


async def test_a_server_error_is_transient_so_the_event_is_retried(
    api_client: aclient.ApiClient, cluster: DevCluster
) -> None:
    async with aiohttp.ClientSession() as s:
        await s.post(f"{cluster.url}/_kaiten/faults", json={"fail": {"count": 1, "code": 503}})
    with pytest.raises(TransientError, match="read ConfigMap default/cfg"):
        await ConfigMapReader(api_client).read("default", ["cfg"])
