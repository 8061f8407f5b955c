"""The development cluster's HTTP layer: kube-apiserver's URLs, discovery, ``/openapi/v3``,
lists, watches and the Table format, in front of ``api.Api``. Also the ``/_kaiten/faults``
control endpoint that tests use to break things on purpose, and ``/_kaiten/requests``, what each
client (by User-Agent) used in RBAC's terms (``requestlog``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from localdev.kubeapi.api import WARNINGS, Api, selected
from localdev.kubeapi.errors import ApiError
from localdev.kubeapi.requestlog import RequestLog, rbac_verb, resource_of
from localdev.kubeapi.resources import ResourceType
from localdev.kubeapi.selectors import (
    FieldSelector,
    LabelSelector,
    parse_field_selector,
    parse_label_selector,
)
from localdev.kubeapi.store import Obj, Watch
from localdev.kubeapi.tables import to_table, wants_table

KUBERNETES_VERSION = {"major": "1", "minor": "37", "gitVersion": "v1.37.0-kaiten-dev"}
_TRUE = {"true", "True", "1"}


Control = Callable[[web.Request], Awaitable[web.Response]]
# GET through ``pods/<name>[:port]/proxy/<path>``: (namespace, pod, port, path) -> response.
PodProxy = Callable[[str, str, int | None, str], Awaitable[web.Response]]
# The log of a pod's container: (namespace, pod, container or None) -> the log file, or None when
# no process ran it (a simulated pod prints nothing).
PodLog = Callable[[str, str, str | None], Path | None]


@dataclass
class Faults:
    """Failures to inject: the next ``fail_count`` resource requests answer ``fail_code``
    (with Retry-After for 429); the next watch answers 410 Gone."""

    fail_count: int = 0
    fail_code: int = 500
    retry_after: int = 1
    gone_next_watch: bool = False

    def take(self) -> ApiError | None:
        if self.fail_count <= 0:
            return None
        self.fail_count -= 1
        if self.fail_code == 429:  # noqa: PLR2004
            return ApiError(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
                headers={"Retry-After": str(self.retry_after)},
            )
        if self.fail_code == 409:  # noqa: PLR2004
            return ApiError(
                409,
                "Conflict",
                "Operation cannot be fulfilled: the object has been "
                "modified; please apply your changes to the latest version and try "
                "again (injected)",
            )
        return ApiError(
            self.fail_code, "InternalError", "Internal error occurred: injected failure"
        )


@dataclass(frozen=True, slots=True)
class Target:
    rt: ResourceType
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None


def _warning_header(text: str) -> str:
    """A ``Warning`` header as kube-apiserver writes it (client-go's NewWarningHeader): code 299,
    no agent, the text quoted with ``"`` and ``\\`` escaped. kubectl drops one it cannot parse."""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 - "{quoted}"'


class Server:
    """Routes one request at a time to the API; see ``build_app``."""

    def __init__(self, api: Api, faults: Faults, bookmark_interval: float = 5.0) -> None:
        # Handlers of /_kaiten/<name>[/...]: test and development controls, not Kubernetes.
        self.requests = RequestLog()
        self.controls: dict[str, Control] = {
            "faults": self._faults,
            "requests": self.requests.control,
        }
        # Who answers the pod proxy: the simulated kubelet when there is one.
        self.pod_proxy: PodProxy | None = None
        # Who keeps containers' logs: the local pod runner when there is one.
        self.pod_log: PodLog | None = None
        self.api = api
        self.faults = faults
        self.bookmark_interval = bookmark_interval

    async def handle(self, request: web.Request) -> web.StreamResponse:
        WARNINGS.set([])
        try:
            response = await self._route(request)
        except ApiError as e:
            response = web.json_response(e.status(), status=e.code, headers=e.headers)
        for warning in WARNINGS.get():
            response.headers.add("Warning", _warning_header(warning))
        return response

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts[:1] == ["_kaiten"]:
            control = self.controls.get(parts[1] if len(parts) > 1 else "")
            if control is None:
                raise ApiError(404, "NotFound", f"no control {request.path}")
            return await control(request)
        if request.method == "GET":
            discovery = self._discovery(parts)
            if discovery is not None:
                return web.json_response(discovery)
            if parts[:2] == ["openapi", "v3"]:
                return web.json_response(self._openapi(parts[2:]))
        user_agent = request.headers.get("User-Agent", "")
        if _is_pod_proxy(parts):
            verb = rbac_verb(request.method, named=True, watch=False)
            self.requests.record(user_agent, verb, "", "pods/proxy")
            return await self._proxy(request, parts)
        if _is_pod_log(parts) and request.method == "GET":
            self.requests.record(user_agent, "get", "", "pods/log")
            return self._log(request, parts)
        target = self._target(parts)
        verb = rbac_verb(
            request.method,
            named=target.name is not None,
            watch=request.query.get("watch") in _TRUE,
        )
        self.requests.record(
            user_agent, verb, target.rt.group, resource_of(target.rt.plural, target.subresource)
        )
        injected = self.faults.take()
        if injected is not None:
            raise injected
        return await self._dispatch(request, target)

    async def _proxy(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        """``/api/v1/namespaces/<ns>/pods/<name>[:<port>]/proxy[/<path>]`` (GET only)."""
        if request.method != "GET":
            raise _method_not_allowed(request)
        namespace, target = parts[3], parts[5]
        name, _, port = target.partition(":")
        self.api.get(self.api.types[("", "pods")], "v1", namespace, name)  # 404 when absent
        if self.pod_proxy is None:
            raise ApiError(503, "ServiceUnavailable", f"no kubelet serves pod {name}")
        path = "/" + "/".join(parts[7:])
        return await self.pod_proxy(namespace, name, int(port) if port.isdigit() else None, path)

    def _log(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        """``GET /api/v1/namespaces/<ns>/pods/<name>/log[?container=&tailLines=]``: what the
        container wrote so far (``follow`` is answered with the same snapshot)."""
        namespace, name = parts[3], parts[5]
        self.api.get(self.api.types[("", "pods")], "v1", namespace, name)  # 404 when absent
        container = request.query.get("container") or None
        path = self.pod_log(namespace, name, container) if self.pod_log is not None else None
        text = ""
        if path is not None:
            try:
                text = path.read_bytes().decode(errors="replace")
            except FileNotFoundError:
                text = ""
        tail = request.query.get("tailLines", "")
        if tail.isdigit():
            lines = text.splitlines(keepends=True)
            text = "".join(lines[len(lines) - int(tail) :]) if int(tail) else ""
        return web.Response(text=text, content_type="text/plain")

    # --- routing ---------------------------------------------------------------------------

    def _target(self, parts: list[str]) -> Target:
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":  # noqa: PLR2004
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":  # noqa: PLR2004
            candidate = self.api.types.get((group, rest[2]))
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:  # noqa: PLR2004
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = self.api.resolve(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None  # noqa: PLR2004
        if sub is not None and not (sub == "status" and rt.status_subresource):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return Target(rt, version, namespace, name, sub)

    async def _dispatch(self, request: web.Request, t: Target) -> web.StreamResponse:
        if t.name is None:
            return await self._collection(request, t)
        return await self._item(request, t, t.name)

    async def _collection(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        dry_run = q.get("dryRun") == "All"
        validation = q.get("fieldValidation", "Warn")
        labels, fields = _selectors(q)
        if request.method == "GET" and q.get("watch") in _TRUE:
            return await self._watch(request, t, labels, fields)
        if request.method == "GET":
            return self._list(request, t, labels, fields)
        if request.method == "POST":
            obj = await self.api.create(
                t.rt,
                t.version,
                t.namespace,
                await _body(request),
                dry_run=dry_run,
                field_validation=validation,
            )
            return _object(request, t, obj, 201)
        if request.method == "DELETE":
            body = await _body(request, optional=True) or {}
            gone = await self.api.delete_collection(
                t.rt, t.version, t.namespace, labels=labels, fields=fields, options=body
            )
            return web.json_response(
                {
                    "kind": t.rt.list_kind,
                    "apiVersion": t.rt.api_version(t.version),
                    "metadata": {},
                    "items": gone,
                }
            )
        raise _method_not_allowed(request)

    async def _item(self, request: web.Request, t: Target, name: str) -> web.StreamResponse:
        q = request.query
        dry_run = q.get("dryRun") == "All"
        validation = q.get("fieldValidation", "Warn")
        if request.method == "GET":
            return _object(request, t, self.api.get(t.rt, t.version, t.namespace, name))
        if request.method == "PUT":
            obj = await self.api.update(
                t.rt,
                t.version,
                t.namespace,
                name,
                await _body(request),
                subresource=t.subresource,
                dry_run=dry_run,
                field_validation=validation,
            )
            return _object(request, t, obj)
        if request.method == "PATCH":
            content_type = request.content_type
            obj, created = await self.api.patch(
                t.rt,
                t.version,
                t.namespace,
                name,
                content_type=content_type,
                body=await _body(request),
                subresource=t.subresource,
                dry_run=dry_run,
                field_validation=validation,
            )
            return _object(request, t, obj, 201 if created else 200)
        if request.method == "DELETE" and t.subresource is None:
            options = await _body(request, optional=True) or {}
            if q.get("propagationPolicy"):
                options["propagationPolicy"] = q["propagationPolicy"]
            obj = await self.api.delete(
                t.rt, t.version, t.namespace, name, options, dry_run=dry_run
            )
            pending = bool(obj["metadata"].get("finalizers"))
            return _object(request, t, obj, 202 if pending else 200)
        raise _method_not_allowed(request)

    def _list(
        self,
        request: web.Request,
        t: Target,
        labels: LabelSelector | None,
        fields: FieldSelector | None,
    ) -> web.Response:
        items, rv = self.api.list(t.rt, t.version, t.namespace, labels, fields)
        if wants_table(request.headers.get("Accept", "")):
            return web.json_response(to_table(t.rt, t.version, items, str(rv)))
        return web.json_response(
            {
                "kind": t.rt.list_kind,
                "apiVersion": t.rt.api_version(t.version),
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            }
        )

    # --- watch -----------------------------------------------------------------------------

    async def _watch(
        self,
        request: web.Request,
        t: Target,
        labels: LabelSelector | None,
        fields: FieldSelector | None,
    ) -> web.StreamResponse:
        q = request.query
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        table = wants_table(request.headers.get("Accept", ""))

        async def send(kind: str, obj: Obj) -> None:
            rv = str(obj["metadata"].get("resourceVersion", ""))
            out = to_table(t.rt, t.version, [obj], rv) if table and kind != "ERROR" else obj
            await response.write(json.dumps({"type": kind, "object": out}).encode() + b"\n")

        if self.faults.gone_next_watch:
            self.faults.gone_next_watch = False
            await send(
                "ERROR", ApiError(410, "Expired", "too old resource version (injected)").status()
            )
            return response
        since_text = q.get("resourceVersion", "")
        send_initial = q.get("sendInitialEvents") in _TRUE or since_text in ("", "0")
        since = int(since_text) if since_text not in ("", "0") else None
        watch = Watch(t.rt.key, t.namespace, lambda o: selected(o, labels, fields))
        initial = (
            self.api.list(t.rt, t.version, t.namespace, labels, fields)[0] if send_initial else []
        )
        try:
            replay = self.api.store.open_watch(watch, None if send_initial else since)
        except ApiError as e:
            await send("ERROR", e.status())
            return response
        try:
            await self._stream(t, q, send, watch, initial=initial, replay=replay)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.api.store.close_watch(watch)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _stream(
        self,
        t: Target,
        q: Any,
        send: Any,
        watch: Watch,
        *,
        initial: list[Obj],
        replay: list[tuple[str, int, Obj]],
    ) -> None:
        bookmarks = q.get("allowWatchBookmarks") in _TRUE
        timeout = float(q.get("timeoutSeconds") or 0) or None
        deadline = time.monotonic() + timeout if timeout else None
        for obj in initial:
            await send("ADDED", obj)
        if q.get("sendInitialEvents") in _TRUE:
            await send("BOOKMARK", self._bookmark(t, initial_end=True))
        for kind, _, obj in replay:
            await send(kind, self._versioned(t, obj))
        while True:
            wait = self.bookmark_interval
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return
            try:
                item = await asyncio.wait_for(watch.queue.get(), timeout=wait)
            except TimeoutError:
                if bookmarks:
                    await send("BOOKMARK", self._bookmark(t, initial_end=False))
                continue
            if item is None:
                return
            kind, _, obj = item
            await send(kind, self._versioned(t, obj))

    def _versioned(self, t: Target, obj: Obj) -> Obj:
        out = dict(obj)
        out["apiVersion"], out["kind"] = t.rt.api_version(t.version), t.rt.kind
        return out

    def _bookmark(self, t: Target, *, initial_end: bool) -> Obj:
        meta: Obj = {"resourceVersion": str(self.api.store.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": t.rt.kind, "apiVersion": t.rt.api_version(t.version), "metadata": meta}

    # --- discovery and OpenAPI ---------------------------------------------------------------

    def _discovery(self, parts: list[str]) -> Obj | None:  # noqa: PLR0911 -- one return per URL
        groups = self.api.by_group_version()
        if parts == ["version"]:
            return dict(KUBERNETES_VERSION, platform="linux/amd64", goVersion="go1.25")
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if parts == ["api", "v1"]:
            return _resource_list("v1", groups.get(("", "v1"), []))
        if parts == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": _groups(self.api)}
        if len(parts) == 2 and parts[0] == "apis":  # noqa: PLR2004
            found = [g for g in _groups(self.api) if g["name"] == parts[1]]
            return dict(found[0], kind="APIGroup", apiVersion="v1") if found else None
        if len(parts) == 3 and parts[0] == "apis" and (parts[1], parts[2]) in groups:  # noqa: PLR2004
            return _resource_list(f"{parts[1]}/{parts[2]}", groups[(parts[1], parts[2])])
        return None

    def _openapi(self, rest: list[str]) -> Obj:
        docs = {
            ("api/v1" if not group else f"apis/{group}/{version}"): (group, version, rts)
            for (group, version), rts in self.api.by_group_version().items()
        }
        if not rest:
            return {
                "paths": {
                    path: {
                        "serverRelativeURL": f"/openapi/v3/{path}?hash={_hash(self._gv_doc(*d))}"
                    }
                    for path, d in docs.items()
                }
            }
        found = docs.get("/".join(rest))
        if found is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return self._gv_doc(*found)

    def _gv_doc(self, group: str, version: str, rts: list[ResourceType]) -> Obj:
        prefix = f"/apis/{group}/{version}" if group else "/api/v1"
        paths: Obj = {}
        schemas: Obj = {}
        for rt in rts:
            gvk = {"group": rt.group, "version": version, "kind": rt.kind}
            ns = "/namespaces/{namespace}" if rt.namespaced else ""
            schema_id = _schema_id(rt, version)
            operation = {
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [
                    {
                        "name": "fieldValidation",
                        "in": "query",
                        "schema": {"type": "string", "uniqueItems": True},
                    }
                ],
                "responses": {
                    "200": {
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{schema_id}"}
                            }
                        }
                    }
                },
            }
            paths[f"{prefix}{ns}/{rt.plural}/{{name}}"] = {"patch": operation}
            body = rt.schemas.get(version) or {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
            }
            schemas[schema_id] = dict(body, **{"x-kubernetes-group-version-kind": [gvk]})
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.37.0"},
            "paths": paths,
            "components": {"schemas": schemas},
        }

    # --- fault injection -------------------------------------------------------------------

    async def _faults(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await _body(request)
            fail = body.get("fail") or {}
            if fail:
                self.faults.fail_count = int(fail.get("count", 1))
                self.faults.fail_code = int(fail.get("code", 500))
                self.faults.retry_after = int(fail.get("retry_after", 1))
            if body.get("gone_next_watch"):
                self.faults.gone_next_watch = True
            if body.get("compact"):
                self.api.store.compact()
            cut = self.api.store.cut_watches() if body.get("cut_watches") else 0
            return web.json_response({"cut_watches": cut, **self.faults.__dict__})
        return web.json_response(self.faults.__dict__)


def _is_pod_proxy(parts: list[str]) -> bool:
    return (
        len(parts) >= 7  # noqa: PLR2004
        and parts[:3] == ["api", "v1", "namespaces"]
        and parts[4] == "pods"
        and parts[6] == "proxy"
    )


def _is_pod_log(parts: list[str]) -> bool:
    return (
        len(parts) == 7  # noqa: PLR2004
        and parts[:3] == ["api", "v1", "namespaces"]
        and parts[4] == "pods"
        and parts[6] == "log"
    )


def build_app(server: Server) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", server.handle)
    return app


def _selectors(q: Any) -> tuple[LabelSelector | None, FieldSelector | None]:
    labels = parse_label_selector(q["labelSelector"]) if q.get("labelSelector") else None
    fields = parse_field_selector(q["fieldSelector"]) if q.get("fieldSelector") else None
    return labels, fields


async def _body(request: web.Request, *, optional: bool = False) -> Any:
    if "protobuf" in request.content_type:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            "the development cluster reads JSON and YAML bodies only, not protobuf (which "
            "`kubectl create <kind>`, `scale` and `set` send): write the object to a file and use "
            "`kubectl apply -f`",
        )
    raw = await request.read()
    if not raw:
        if optional:
            return None
        raise ApiError(400, "BadRequest", "the request has no body")
    try:
        if "yaml" in request.content_type:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise ApiError(
            400, "BadRequest", f"the body of the request could not be decoded: {e}"
        ) from e


def _object(request: web.Request, t: Target, obj: Obj, status: int = 200) -> web.Response:
    if wants_table(request.headers.get("Accept", "")):
        return web.json_response(
            to_table(t.rt, t.version, [obj], obj["metadata"].get("resourceVersion", "")),
            status=status,
        )
    return web.json_response(obj, status=status)


def _method_not_allowed(request: web.Request) -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        f"the server does not allow this method on the requested resource ({request.method})",
    )


def _resource_list(group_version: str, rts: list[ResourceType]) -> Obj:
    resources: list[Obj] = []
    for rt in sorted(rts, key=lambda r: r.plural):
        resources.append(
            {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "shortNames": list(rt.short_names),
                "categories": list(rt.categories),
                "verbs": [
                    "create",
                    "delete",
                    "deletecollection",
                    "get",
                    "list",
                    "patch",
                    "update",
                    "watch",
                ],
            }
        )
        if rt.status_subresource:
            resources.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def _groups(api: Api) -> list[Obj]:
    by_group: dict[str, list[str]] = {}
    for rt in api.types.values():
        if rt.group:
            versions = by_group.setdefault(rt.group, [])
            versions.extend(v for v in rt.versions if v not in versions)
    return [
        {
            "name": group,
            "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
        }
        for group, versions in sorted(by_group.items())
    ]


def _schema_id(rt: ResourceType, version: str) -> str:
    reverse = ".".join(reversed(rt.group.split("."))) if rt.group else "io.k8s.api.core"
    return f"{reverse}.{version}.{rt.kind}"


def _hash(doc: Obj) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16].upper()
