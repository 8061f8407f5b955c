"""The provisioner's calls to the Kubernetes API: Nodes and Karpenter NodeClaims
(``karpenter.sh/v1``, cluster-scoped). Errors come out as Kaiten's (``shared.kube.api_error``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from shared.kube import (
    MERGE_PATCH,
    AlreadyExistsError,
    CustomResource,
    Manifest,
    NotFoundError,
    api_error,
    call_raw,
    follow,
)

NODECLAIMS = CustomResource("karpenter.sh", "v1", "nodeclaims")
OnChange = Callable[[str, Manifest], Awaitable[None]]


class ClusterApi:
    def __init__(self, api: client.ApiClient) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self._client = api

    # --- NodeClaims ----------------------------------------------------------------------

    async def list_claims(self, label_selector: str = "") -> list[Manifest]:
        r = NODECLAIMS
        try:
            body = await self.objects.list_cluster_custom_object(
                r.group, r.version, r.plural, label_selector=label_selector
            )
        except ApiException as e:
            raise api_error(e, "list nodeclaims") from e
        return list(body.get("items") or [])

    async def create_claim(self, manifest: Manifest) -> bool:
        """Create; False when a NodeClaim of that name exists already."""
        r = NODECLAIMS
        try:
            await self.objects.create_cluster_custom_object(r.group, r.version, r.plural, manifest)
        except ApiException as e:
            error = api_error(e, f"create nodeclaim {manifest['metadata']['name']}")
            if isinstance(error, AlreadyExistsError):
                return False
            raise error from e
        return True

    async def delete_claim(self, name: str) -> bool:
        """Delete; False when it was already gone."""
        r = NODECLAIMS
        try:
            await self.objects.delete_cluster_custom_object(r.group, r.version, r.plural, name)
        except ApiException as e:
            error = api_error(e, f"delete nodeclaim {name}")
            if isinstance(error, NotFoundError):
                return False
            raise error from e
        return True

    async def patch_claim(
        self, name: str, patch: Mapping[str, Any], *, status: bool = False
    ) -> Manifest | None:
        """Merge patch of the NodeClaim (or its status); None when it is gone."""
        r = NODECLAIMS
        call = (
            self.objects.patch_cluster_custom_object_status
            if status
            else self.objects.patch_cluster_custom_object
        )
        try:
            result: Manifest = await call(
                r.group,
                r.version,
                r.plural,
                name,
                dict(patch),
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]
            )
        except ApiException as e:
            error = api_error(e, f"patch nodeclaim {name}" + ("/status" if status else ""))
            if isinstance(error, NotFoundError):
                return None
            raise error from e
        return result

    async def follow_claims(self, on_change: OnChange) -> None:
        r = NODECLAIMS
        await follow(
            self.objects.list_cluster_custom_object,
            r.group,
            r.version,
            r.plural,
            on_change=on_change,
        )

    # --- Nodes ---------------------------------------------------------------------------

    async def list_nodes(self, label_selector: str = "") -> list[Manifest]:
        try:
            body = await call_raw(self.core.list_node, label_selector=label_selector)
        except ApiException as e:
            raise api_error(e, "list nodes") from e
        return list(body.get("items") or [])

    async def label_node(self, name: str, labels: Mapping[str, str]) -> None:
        try:
            await call_raw(
                self.core.patch_node,
                name,
                {"metadata": {"labels": dict(labels)}},
                _content_type=MERGE_PATCH,
            )
        except ApiException as e:
            raise api_error(e, f"label node {name}") from e

    async def register_node(self, manifest: Manifest) -> None:
        """Create a Node and write its status, as a kubelet joining the cluster does."""
        name = manifest["metadata"]["name"]
        body = {k: v for k, v in manifest.items() if k != "status"}
        try:
            try:
                current = await call_raw(self.core.create_node, body)
            except ApiException as e:
                if not isinstance(api_error(e, ""), AlreadyExistsError):
                    raise
                current = await call_raw(self.core.read_node, name)
            current["status"] = manifest.get("status") or {}
            await call_raw(self.core.replace_node_status, name, current)
        except ApiException as e:
            raise api_error(e, f"register node {name}") from e

    async def delete_node(self, name: str) -> None:
        try:
            await call_raw(self.core.delete_node, name)
        except ApiException as e:
            error = api_error(e, f"delete node {name}")
            if not isinstance(error, NotFoundError):
                raise error from e

    async def follow_nodes(self, on_change: OnChange) -> None:
        await follow(self.core.list_node, on_change=on_change)
