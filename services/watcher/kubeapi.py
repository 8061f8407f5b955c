"""The watcher's calls to the Kubernetes API: Workspaces (read, watch, patch, status),
their ControllerRevisions and Events. Errors come out as Kaiten's (shared.kube.api_error)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from shared.kube import (
    WORKSPACES,
    AlreadyExistsError,
    Manifest,
    NotFoundError,
    api_error,
    json_patch_custom_object,
    merge_patch_custom_object,
)
from shared.labels import REVISION_NAME_LABEL
from shared.workspace.models import GROUP, PLURAL, STORAGE_VERSION


class GoneError(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class WorkspaceApi:
    def __init__(self, api: client.ApiClient) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self._client = api

    async def list_workspaces(self, namespace: str | None) -> tuple[list[Manifest], str]:
        try:
            if namespace:
                body = await self.objects.list_namespaced_custom_object(
                    GROUP, STORAGE_VERSION, namespace, PLURAL
                )
            else:
                body = await self.objects.list_cluster_custom_object(GROUP, STORAGE_VERSION, PLURAL)
        except ApiException as e:
            raise api_error(e, f"list {PLURAL}") from e
        return list(body.get("items", [])), str(body["metadata"]["resourceVersion"])

    async def watch(
        self, namespace: str | None, resource_version: str, timeout_s: int
    ) -> AsyncIterator[tuple[str, Manifest]]:
        """(type, object) from ``resource_version`` on; raises ``GoneError`` on 410."""
        call: Any = (
            self.objects.list_namespaced_custom_object
            if namespace
            else self.objects.list_cluster_custom_object
        )
        args: tuple[str, ...] = (
            (GROUP, STORAGE_VERSION, namespace, PLURAL)
            if namespace
            else (GROUP, STORAGE_VERSION, PLURAL)
        )
        try:
            async with watch.Watch().stream(
                call,
                *args,
                resource_version=resource_version,
                timeout_seconds=timeout_s,
                allow_watch_bookmarks=True,
            ) as events:
                async for event in events:
                    yield str(event["type"]), event["raw_object"]
        except ApiException as e:
            if e.status == 410:  # noqa: PLR2004
                raise GoneError(str(e.reason)) from e
            raise api_error(e, f"watch {PLURAL}") from e

    async def get(self, namespace: str, name: str) -> Manifest | None:
        try:
            obj: Manifest = await self.objects.get_namespaced_custom_object(
                GROUP, STORAGE_VERSION, namespace, PLURAL, name
            )
        except ApiException as e:
            if e.status == 404:  # noqa: PLR2004
                return None
            raise api_error(e, f"get workspace {namespace}/{name}") from e
        return obj

    async def json_patch(
        self, namespace: str, name: str, ops: Sequence[Mapping[str, Any]]
    ) -> Manifest:
        return await json_patch_custom_object(self.objects, WORKSPACES, namespace, name, ops)

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any], resource_version: str
    ) -> Manifest:
        """Merge ``status`` in through the status subresource, conditional on the version."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": dict(status)}
        return await merge_patch_custom_object(
            self.objects, WORKSPACES, namespace, name, body, status=True
        )

    async def revisions(self, namespace: str, workspace: str) -> list[Manifest]:
        try:
            listing = await self.apps.list_namespaced_controller_revision(
                namespace, label_selector=f"{REVISION_NAME_LABEL}={workspace}"
            )
        except ApiException as e:
            raise api_error(e, f"list revisions of {namespace}/{workspace}") from e
        return [self._client.sanitize_for_serialization(r) for r in listing.items]

    async def create_revision(self, manifest: Manifest) -> None:
        try:
            # The clients send dict bodies as they are; their stubs declare only model classes.
            await self.apps.create_namespaced_controller_revision(
                manifest["metadata"]["namespace"],
                manifest,  # type: ignore[arg-type]
            )
        except ApiException as e:
            error = api_error(e, f"create revision {manifest['metadata']['name']}")
            if not isinstance(error, AlreadyExistsError):
                raise error from e

    async def delete_revision(self, namespace: str, name: str) -> None:
        try:
            await self.apps.delete_namespaced_controller_revision(name, namespace)
        except ApiException as e:
            error = api_error(e, f"delete revision {namespace}/{name}")
            if not isinstance(error, NotFoundError):
                raise error from e

    async def create_event(self, event: Manifest) -> None:
        try:
            await self.core.create_namespaced_event(
                event["metadata"]["namespace"],
                event,  # type: ignore[arg-type]
            )
        except ApiException as e:
            raise api_error(e, "create event") from e
