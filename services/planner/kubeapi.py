"""What the planner reads from Kubernetes: the ConfigMaps a Workspace names. Read-only."""

from __future__ import annotations

from collections.abc import Sequence

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from services.planner.planning import ConfigMaps
from shared.kube import NotFoundError, api_error


class ConfigMapReader:
    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)

    async def read(self, namespace: str, names: Sequence[str]) -> ConfigMaps:
        """Each named ConfigMap's data, or None for one that does not exist. Other API errors
        raise the bus's transient or permanent errors."""
        found: dict[str, dict[str, str] | None] = {}
        for name in names:
            try:
                cm = await self.core.read_namespaced_config_map(name, namespace)
            except ApiException as e:
                error = api_error(e, f"read ConfigMap {namespace}/{name}")
                if isinstance(error, NotFoundError):
                    found[name] = None
                    continue
                raise error from None
            found[name] = dict(cm.data or {})
        return found
