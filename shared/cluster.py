"""The workload services' calls to the Kubernetes API (the deployer's and the tuner's):
ConfigMaps, Services, Deployments, StatefulSets and Jobs (read, create, replace, delete), the
pods and workloads they watch, and a pod's HTTP port through the API server's pod proxy. Objects
travel as plain dicts (``shared.kube.call_raw``); errors come out as Kaiten's
(``shared.kube.api_error``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from shared.kube import Manifest, NotFoundError, api_error, call_raw, follow

OnChange = Callable[[str, Manifest], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Kind:
    group: str  # "core", "apps" or "batch": which generated API serves it
    suffix: str  # the generated methods' name: read_<suffix>, create_<suffix>, ...


KINDS = {
    "ConfigMap": Kind("core", "namespaced_config_map"),
    "Service": Kind("core", "namespaced_service"),
    "Deployment": Kind("apps", "namespaced_deployment"),
    "StatefulSet": Kind("apps", "namespaced_stateful_set"),
    "Job": Kind("batch", "namespaced_job"),
    "Pod": Kind("core", "namespaced_pod"),
}


class ClusterApi:
    def __init__(self, api: client.ApiClient) -> None:
        self.apis: dict[str, Any] = {
            "core": client.CoreV1Api(api),
            "apps": client.AppsV1Api(api),
            "batch": client.BatchV1Api(api),
        }

    def _method(self, verb: str, kind: str) -> Any:
        spec = KINDS[kind]
        return getattr(self.apis[spec.group], f"{verb}_{spec.suffix}")

    async def read(self, kind: str, namespace: str, name: str) -> Manifest | None:
        try:
            found = await call_raw(self._method("read", kind), name, namespace)
        except ApiException as e:
            error = api_error(e, f"read {kind.lower()} {namespace}/{name}")
            if isinstance(error, NotFoundError):
                return None
            raise error from e
        found.setdefault("kind", kind)
        return found

    async def create(self, obj: Manifest) -> Manifest:
        meta = obj["metadata"]
        try:
            return await call_raw(self._method("create", obj["kind"]), meta["namespace"], obj)
        except ApiException as e:
            raise api_error(e, f"create {_describe(obj)}") from e

    async def replace(self, obj: Manifest) -> Manifest:
        """PUT: conditional on ``metadata.resourceVersion`` when the body carries one."""
        meta = obj["metadata"]
        try:
            return await call_raw(
                self._method("replace", obj["kind"]), meta["name"], meta["namespace"], obj
            )
        except ApiException as e:
            raise api_error(e, f"replace {_describe(obj)}") from e

    async def delete(
        self, kind: str, namespace: str, name: str, *, propagation: str = "Background"
    ) -> bool:
        """Delete (``propagation``: Background, or Foreground to keep the object until its
        dependents are gone); False when it was already gone."""
        try:
            await call_raw(
                self._method("delete", kind), name, namespace, propagation_policy=propagation
            )
        except ApiException as e:
            error = api_error(e, f"delete {kind.lower()} {namespace}/{name}")
            if isinstance(error, NotFoundError):
                return False
            raise error from e
        return True

    async def list(self, kind: str, namespace: str, label_selector: str) -> list[Manifest]:
        try:
            body = await call_raw(
                self._method("list", kind), namespace, label_selector=label_selector
            )
        except ApiException as e:
            raise api_error(e, f"list {kind.lower()}s in {namespace}") from e
        return list(body.get("items") or [])

    async def nodes(self, names: set[str]) -> dict[str, Manifest]:
        """The named nodes that exist, by name (a missing node is left out)."""
        found: dict[str, Manifest] = {}
        for name in sorted(names):
            try:
                node = await call_raw(self.apis["core"].read_node, name)
            except ApiException as e:
                error = api_error(e, f"read node {name}")
                if isinstance(error, NotFoundError):
                    continue
                raise error from e
            found[name] = node
        return found

    async def pod_get(self, namespace: str, pod: str, port: int, path: str) -> Manifest:
        """GET ``path`` on the pod's ``port`` through the API server (``pods/proxy``), as JSON:
        the tuner needs no network route to the pod network, only the API server's."""
        try:
            body = await call_raw(
                self.apis["core"].connect_get_namespaced_pod_proxy_with_path,
                f"{pod}:{port}",
                namespace,
                path.lstrip("/"),
            )
        except ApiException as e:
            raise api_error(e, f"get {path} of pod {namespace}/{pod}:{port}") from e
        if not isinstance(body, dict):
            raise TypeError(f"pod {namespace}/{pod}:{port}{path} did not answer a JSON object")
        return body

    async def follow(self, kind: str, label_selector: str, on_change: OnChange) -> None:
        """Watch ``kind`` in every namespace until cancelled."""
        spec = KINDS[kind]
        call = getattr(self.apis[spec.group], f"list_{_all_namespaces(spec.suffix)}")
        await follow(call, on_change=on_change, label_selector=label_selector)


def _all_namespaces(suffix: str) -> str:
    return suffix.removeprefix("namespaced_") + "_for_all_namespaces"


def _describe(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{str(obj.get('kind', '')).lower()} {meta.get('namespace')}/{meta.get('name')}"
