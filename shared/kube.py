"""The Kubernetes client factory and the few helpers every service needs to talk to the API.

Kaiten uses ``kubernetes-asyncio``: the official generated API surface, async on aiohttp (which
the services already run), and a watch that resumes from a resourceVersion. Two of its pitfalls
are handled here so no service meets them: a custom-object PATCH with a dict body is sent as
JSON Patch unless the content type is explicit, and its errors are raw HTTP exceptions. This
module translates them into Kaiten's errors (``PermanentError``/``TransientError``), so the
bus's ack/retry decision works on Kubernetes failures too.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import structlog
from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.client.rest import RESTResponse
from yarl import URL

from shared.errors import ConfigError, KaitenError, PermanentError, TransientError
from shared.settings import Settings

log = structlog.get_logger(__name__)

Manifest = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@dataclass(frozen=True, slots=True)
class CustomResource:
    """Where a custom resource lives in the API."""

    group: str
    version: str
    plural: str


WORKSPACES = CustomResource("kaito.sh", "v1beta1", "workspaces")


class NotFoundError(KaitenError):
    """The object does not exist (HTTP 404)."""


class AlreadyExistsError(KaitenError):
    """A create found an object with the same name (HTTP 409, reason AlreadyExists)."""


async def new_api_client(settings: Settings, user_agent: str = "kaiten") -> client.ApiClient:
    """An ApiClient from ``KUBECONFIG`` (or ~/.kube/config), else the pod's service account.

    Every request it sends says ``User-Agent: <user_agent>/<Kaiten's version>`` (the runner
    passes ``kaiten-<service>``), so API server audit logs, and the development cluster's request
    log, tell the services apart. Raises ``ConfigError`` naming what was tried when neither
    configuration is there.
    """
    cfg = client.Configuration()
    kubeconfig = kubeconfig_path(settings)
    if kubeconfig is not None:
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    else:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    if cfg.proxy is None and cfg.host and (found := env_proxy(cfg.host)) is not None:
        cfg.proxy, authorization = found
        if authorization is not None:
            cfg.proxy_headers = {"Proxy-Authorization": authorization}
    api = client.ApiClient(cfg)
    api.user_agent = f"{user_agent}/{_kaiten_version()}"
    # With trust_env, aiohttp looks up the proxy variables and ~/.netrc in a worker thread for
    # every request: two thread hops per API call, a tenth of a busy watcher's CPU. The proxy is
    # decided once above; the API server authenticates by token or certificate, never netrc.
    api.rest_client.pool_manager._trust_env = False  # no public setter
    return api


def env_proxy(url: str) -> tuple[str, str | None] | None:
    """The proxy ``HTTPS_PROXY``/``HTTP_PROXY`` give for ``url`` (``NO_PROXY`` respected), and
    its Proxy-Authorization value when the variable carries credentials."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(url))
    except LookupError:
        return None
    return str(proxy), auth.encode() if auth is not None else None


def _kaiten_version() -> str:
    try:
        return metadata.version("kaiten")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def kubeconfig_path(settings: Settings) -> Path | None:
    """The kubeconfig to load, or None for the in-cluster service account."""
    if settings.kubeconfig:
        first = Path(settings.kubeconfig.split(os.pathsep)[0])
        if not first.is_file():
            raise ConfigError(f"KUBECONFIG names {first}, which does not exist")
        return first
    default = Path("~/.kube/config").expanduser()
    if default.is_file():
        return default
    if SERVICE_ACCOUNT_TOKEN.is_file():
        return None
    raise ConfigError(
        "no Kubernetes configuration: set KUBECONFIG to a kubeconfig file, create "
        "~/.kube/config, or run in a pod with a service account"
    )


async def merge_patch_custom_object(
    api: client.CustomObjectsApi,
    resource: CustomResource,
    namespace: str,
    name: str,
    patch: Mapping[str, Any],
    *,
    status: bool = False,
) -> Manifest:
    """RFC 7386 merge patch of a namespaced custom object (or its ``status`` subresource)."""
    return await _patch(
        api, resource, namespace, name, body=dict(patch), content_type=MERGE_PATCH, status=status
    )


def older_version(version: str, than: str) -> bool:
    """Whether resourceVersion ``version`` is older than ``than``. The API calls them opaque;
    etcd's (and the development cluster's) are increasing integers, compared as such. Anything
    else is not known older."""
    if version.isdigit() and than.isdigit():
        return int(version) < int(than)
    return False


async def json_patch_custom_object(
    api: client.CustomObjectsApi,
    resource: CustomResource,
    namespace: str,
    name: str,
    operations: Sequence[Mapping[str, Any]],
    *,
    status: bool = False,
) -> Manifest:
    """RFC 6902 JSON Patch (a list of operations), for example a ``test`` of the
    resourceVersion followed by a ``replace``."""
    ops = [dict(op) for op in operations]
    return await _patch(
        api, resource, namespace, name, body=ops, content_type=JSON_PATCH, status=status
    )


async def _patch(
    api: client.CustomObjectsApi,
    resource: CustomResource,
    namespace: str,
    name: str,
    *,
    body: object,
    content_type: str,
    status: bool,
) -> Manifest:
    call = (
        api.patch_namespaced_custom_object_status if status else api.patch_namespaced_custom_object
    )
    what = f"{resource.plural}.{resource.group} {namespace}/{name}" + ("/status" if status else "")
    try:
        result: Manifest = await call(
            resource.group,
            resource.version,
            namespace,
            resource.plural,
            name,
            body,
            # Accepted by the generated method at run time; its signature does not list it.
            _content_type=content_type,  # type: ignore[call-arg]
        )
    except ApiException as e:
        raise api_error(e, f"patch {what}") from e
    return result


def api_error(e: ApiException, action: str) -> KaitenError:
    """Translate an API error into the error that decides its fate on the bus."""
    status = int(e.status or 0)
    body = _status_body(e)
    message = f"{action}: {body.get('message') or e.reason or 'HTTP ' + str(status)}"
    if status == 404:  # noqa: PLR2004
        return NotFoundError(message)
    if status == 409 and body.get("reason") == "AlreadyExists":  # noqa: PLR2004
        return AlreadyExistsError(message)
    if status == 429 or status >= 500 or status in (0, 409):  # noqa: PLR2004
        return TransientError(message, delay=_retry_after(e))
    reason = str(body.get("reason") or "KubernetesAPIError")
    return PermanentError(reason, message)


def _status_body(e: ApiException) -> dict[str, Any]:
    raw: object = e.body
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {"message": raw[:500]}
    return parsed if isinstance(parsed, dict) else {}


def _retry_after(e: ApiException) -> float | None:
    headers: Any = e.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def call_raw(call: Any, *args: Any, **kwargs: Any) -> Manifest:
    """Call a generated API method and return the body as a plain dict, skipping the generated
    models (``_preload_content=False``: they refuse objects a real cluster can serve, and cost
    time for nothing). The client does not check the status on that path, so this does: an
    answer outside 2xx raises ``ApiException`` exactly as the preloaded path would."""
    response = await call(*args, _preload_content=False, **kwargs)
    data = await response.read()
    if not 200 <= response.status <= 299:  # noqa: PLR2004
        raise ApiException(http_resp=RESTResponse(response, data))  # type: ignore[arg-type]
    body: Manifest = json.loads(data) if data else {}
    return body


async def follow(
    list_call: Any,
    *args: Any,
    on_change: Any,
    label_selector: str | None = None,
    timeout_s: int = 300,
) -> None:
    """List, then watch from the list's resourceVersion, until cancelled: awaits
    ``on_change(kind, obj)`` for every object listed (kind ``LISTED``, then ``SYNCED`` with an
    empty object once the list is done) and for every watch event. A stream that ends resumes;
    410 Gone or an error lists again, after a doubling delay on errors. ``list_call`` is a
    generated ``list_*`` method (``list_node``, ``list_cluster_custom_object``)."""
    delay = 0.2
    extra = {"label_selector": label_selector} if label_selector else {}
    while True:
        try:
            body = await call_raw(list_call, *args, **extra)
            version = str(body["metadata"]["resourceVersion"])
            for obj in body.get("items") or []:
                await on_change("LISTED", obj)
            await on_change("SYNCED", {})
            delay = 0.2
            while True:
                # Plain dicts: the generated models would refuse objects a real cluster can
                # serve (a Node without nodeInfo.architecture), and cost time for nothing.
                async with watch.Watch(return_type="object").stream(
                    list_call,
                    *args,
                    resource_version=version,
                    timeout_seconds=timeout_s,
                    allow_watch_bookmarks=True,
                    **extra,
                ) as events:
                    async for event in events:
                        obj = event["raw_object"]
                        version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                        if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            await on_change(str(event["type"]), obj)
        except ApiException as e:
            if e.status == 410:  # noqa: PLR2004 -- too old: list again at once
                continue
            log.warning("watch.error", error=str(api_error(e, "watch")))
        except (KaitenError, OSError, TimeoutError, ValueError) as e:
            log.warning("watch.error", error=str(e))
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)
