"""A fake Azure Resource Manager (ARM) for tests: AKS agent pools, plus the two Compute reads a
quota check makes, served over HTTPS on a free port of 127.0.0.1 so that the real
``azure-mgmt-containerservice`` and ``azure-mgmt-compute`` clients run unchanged against it.

What it emulates (the contract measured in ``../shared/research/feasibility-k8s.md`` section 4):

- ``.../managedClusters/{cluster}/agentPools[/{name}]``: PUT answers 201 for a create (200 for an
  update) with ``Azure-AsyncOperation``; the operation answers ``InProgress`` for ``poll_steps``
  polls, then ``Succeeded`` or ``Failed`` with an ARM error. GET answers the pool or 404
  ``NotFound``; the collection pages with ``nextLink`` (``page_size`` items a page). DELETE of a
  pool answers 202 with ``Azure-AsyncOperation`` and ``Location``; of a missing pool 404.
- ``Microsoft.Compute/locations/{location}/usages`` (from ``usages``) and ``Microsoft.Compute/skus``
  with ``$filter=location eq '...'`` (from ``vm_skus``), both paged.
- Every request needs ``Authorization: Bearer ...`` (401 otherwise). Errors use the ARM envelope
  ``{"error": {"code", "message"}}``. Any ``api-version`` is accepted and recorded.
- Operations advance only when polled: a client that never polls leaves them ``InProgress``.

Trusting the certificate: the server's self-signed certificate (IP SAN 127.0.0.1) is ``ca_file``.
Both SDK clients (aio on aiohttp, sync on requests) take it as a constructor keyword::

    ContainerServiceClient(FakeCredential(), arm.subscription, base_url=arm.url,
                           connection_verify=str(arm.ca_file), retry_total=1)

Keep ``polling_interval=0`` on ``begin_*`` calls; the fake answers ``Retry-After: 0`` on LROs.

Knobs, usable while the server runs: ``fail_next_create`` (the operation fails),
``reject_next_create`` (the PUT itself fails), ``throttle`` (429 with ``Retry-After``),
``server_errors`` (5xx), ``add_pool`` (seed a pool), ``poll_steps``, ``page_size``, ``usages``,
``vm_skus``, ``sku_gpus``; records ``requests``, ``pools``, ``creates``, ``deletes``; hooks
``on_pool_ready`` and ``on_pool_deleted``. The code ``MissingSubscriptionRegistration`` is never
answered: the SDK would react by trying to register the resource provider."""

from __future__ import annotations

import copy
import re
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiohttp import web
from azure.core.credentials import AccessToken

from services.watcher.webhook import ensure_certificate

POOL_TYPE = "Microsoft.ContainerService/managedClusters/agentPools"
POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
NODE_IMAGE = "AKSUbuntu-2204gen2containerd-202601.07.0"
_SUB = r"^/subscriptions/(?P<sub>[^/]+)"
POOLS_PATH = re.compile(
    _SUB + r"/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerService"
    r"/managedClusters/(?P<cluster>[^/]+)/agentPools(?:/(?P<name>[^/]+))?/?$",
    re.IGNORECASE,
)
OPERATION_PATH = re.compile(
    _SUB + r"/providers/Microsoft\.ContainerService/locations/(?P<location>[^/]+)"
    r"/(?P<kind>operations|operationresults)/(?P<op>[^/]+)$",
    re.IGNORECASE,
)
USAGES_PATH = re.compile(
    _SUB + r"/providers/Microsoft\.Compute/locations/(?P<location>[^/]+)/usages$", re.IGNORECASE
)
SKUS_PATH = re.compile(_SUB + r"/providers/Microsoft\.Compute/skus$", re.IGNORECASE)
LOCATION_FILTER = re.compile(r"^\s*location\s+eq\s+'(?P<location>[^']+)'\s*$", re.IGNORECASE)

DEFAULT_USAGES: dict[str, tuple[int, int]] = {
    "cores": (24, 100),
    "standardNCADSA100v4Family": (24, 48),
    "standardNVADSA10v5Family": (0, 36),
    "standardNCSv3Family": (0, 24),
}
_SKUS: dict[str, tuple[str, int, int]] = {  # name: (family, vCPUs, GPUs)
    "Standard_NC24ads_A100_v4": ("standardNCADSA100v4Family", 24, 1),
    "Standard_NC48ads_A100_v4": ("standardNCADSA100v4Family", 48, 2),
    "Standard_NC96ads_A100_v4": ("standardNCADSA100v4Family", 96, 4),
    "Standard_NV36ads_A10_v5": ("standardNVADSA10v5Family", 36, 1),
    "Standard_NC6s_v3": ("standardNCSv3Family", 6, 1),
    "Standard_NC12s_v3": ("standardNCSv3Family", 12, 2),
    "Standard_NC24s_v3": ("standardNCSv3Family", 24, 4),
}
DEFAULT_VM_SKUS = {name: (family, vcpus) for name, (family, vcpus, _) in _SKUS.items()}
DEFAULT_SKU_GPUS = {name: gpus for name, (_, _, gpus) in _SKUS.items()}

PoolReadyHook = Callable[[dict[str, Any]], Awaitable[None]]
PoolDeletedHook = Callable[[str], Awaitable[None]]


class FakeCredential:
    """An ``AsyncTokenCredential`` handing out a fixed bearer token; no AAD involved."""

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        return None


class SyncFakeCredential:
    """A ``TokenCredential`` for the sync clients (``azure.mgmt.compute``'s, for one)."""

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any | None  # the JSON body, None when there was none
    at: float  # time.monotonic() on arrival


@dataclass
class _Operation:
    pool: str
    kind: Literal["create", "update", "delete"]
    polls_left: int
    failure: tuple[str, str] | None = None  # (code, message) the operation ends with
    status: str = "InProgress"


@dataclass(frozen=True)
class _Armed:
    pool: str | None  # None: any pool
    status: int
    code: str
    message: str


def arm_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    """An ARM error response: ``{"error": {"code": ..., "message": ...}}``."""
    body = {"error": {"code": code, "message": message}}
    return web.json_response(body, status=status, headers=headers)


class FakeArm:
    """The fake ARM server; ``async with FakeArm(tmp_path) as arm:`` serves on ``arm.url``."""

    subscription = "00000000-0000-0000-0000-000000000000"
    resource_group = "kaiten-rg"
    cluster = "kaiten-aks"
    location = "eastus"

    def __init__(self, cert_dir: Path, *, poll_steps: int = 2, page_size: int = 2) -> None:
        self.cert_dir = cert_dir / "fake-arm-tls"
        self.poll_steps = poll_steps
        self.page_size = page_size
        self.url = ""
        self.ca_file = self.cert_dir / "ca-bundle.pem"
        self.requests: list[RecordedRequest] = []
        self.pools: dict[str, dict[str, Any]] = {}
        self.creates: list[str] = []
        self.deletes: list[str] = []
        self.on_pool_ready: list[PoolReadyHook] = []
        self.on_pool_deleted: list[PoolDeletedHook] = []
        self.usages: dict[str, tuple[int, int]] = dict(DEFAULT_USAGES)
        self.vm_skus: dict[str, tuple[str, int]] = dict(DEFAULT_VM_SKUS)
        self.sku_gpus: dict[str, int] = dict(DEFAULT_SKU_GPUS)
        self._operations: dict[str, _Operation] = {}
        self._failures: list[_Armed] = []
        self._rejections: list[_Armed] = []
        self._throttled = 0
        self._retry_after = 1
        self._errors = 0
        self._error_status = 500
        self._runner: web.AppRunner | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> str:
        crt, key, bundle = ensure_certificate(self.cert_dir, "127.0.0.1")
        self.ca_file.write_bytes(bundle)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(crt, key)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"https://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeArm:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # --- knobs -----------------------------------------------------------------------------

    def fail_next_create(self, code: str, message: str, *, pool: str | None = None) -> None:
        """The next create (of ``pool``, or of any pool) ends with a Failed operation."""
        self._failures.append(_Armed(pool, 0, code, message))

    def reject_next_create(
        self, status: int, code: str, message: str, *, pool: str | None = None
    ) -> None:
        """The next agent-pool PUT (of ``pool``, or any) is answered at once with this error."""
        self._rejections.append(_Armed(pool, status, code, message))

    def throttle(self, count: int, retry_after: int = 1) -> None:
        """The next ``count`` authenticated requests get 429 ``TooManyRequests``."""
        self._throttled, self._retry_after = count, retry_after

    def server_errors(self, count: int, status: int = 500) -> None:
        """The next ``count`` authenticated requests get ``status`` ``InternalServerError``."""
        self._errors, self._error_status = count, status

    def add_pool(self, name: str, properties: dict[str, Any], state: str = "Succeeded") -> None:
        """Seed a pool directly, as if created earlier (e.g. an orphan to collect)."""
        self.pools[name] = self._pool_json(name, {**properties, "provisioningState": state})

    def pool_url(self, name: str | None = None) -> str:
        """The ARM path of the agent-pool collection, or of one pool."""
        path = (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ContainerService/managedClusters/{self.cluster}/agentPools"
        )
        return f"{path}/{name}" if name else path

    @property
    def api_versions(self) -> set[str]:
        """Every ``api-version`` the clients sent."""
        return {r.query["api-version"] for r in self.requests if "api-version" in r.query}

    # --- dispatch --------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body: Any | None = None
        not_json = False
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                not_json = True
        at, query = time.monotonic(), dict(request.query)
        self.requests.append(RecordedRequest(request.method, request.path, query, body, at))
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token.strip():
            message = "Authentication failed. The 'Authorization' header is missing or invalid."
            return arm_error(401, "AuthenticationFailed", message)
        if self._throttled > 0:
            self._throttled -= 1
            wait = {"Retry-After": str(self._retry_after)}
            return arm_error(429, "TooManyRequests", "The request is being throttled.", **wait)
        if self._errors > 0:
            self._errors -= 1
            return arm_error(self._error_status, "InternalServerError", "Internal server error.")
        if not_json:
            return arm_error(400, "InvalidRequestContent", "The request content is not valid JSON.")
        return await self._route(request, body)

    async def _route(self, request: web.Request, body: Any | None) -> web.StreamResponse:
        path, get = request.path, request.method == "GET"
        if match := POOLS_PATH.match(path):
            return self._missing(match) or self._pools(request, match["name"], body)
        if (match := OPERATION_PATH.match(path)) and get and match["sub"] == self.subscription:
            results = match["kind"].lower() == "operationresults"
            return await self._poll(match["op"], results=results)
        if (match := USAGES_PATH.match(path)) and get and match["sub"] == self.subscription:
            at_home = match["location"].lower() == self.location
            return self._page(request, self._usages_json() if at_home else [])
        if (match := SKUS_PATH.match(path)) and get and match["sub"] == self.subscription:
            return self._skus(request)
        return arm_error(404, "ResourceNotFound", f"No {request.method} route for '{path}'.")

    def _pools(self, request: web.Request, name: str | None, body: Any | None) -> web.Response:
        if name is None and request.method == "GET":
            return self._page(request, list(self.pools.values()))
        if name is not None and request.method == "GET":
            return self._get_pool(name)
        if name is not None and request.method == "PUT":
            return self._put_pool(name, body)
        if name is not None and request.method == "DELETE":
            return self._delete_pool(name)
        return arm_error(405, "MethodNotAllowed", f"{request.method} is not supported here.")

    def _missing(self, match: re.Match[str]) -> web.Response | None:
        """The 404 for an unknown subscription, resource group or cluster; None if all known."""
        sub, rg, cluster = match["sub"], match["rg"], match["cluster"]
        if sub != self.subscription:
            return arm_error(404, "ResourceNotFound", f"Subscription '{sub}' could not be found.")
        if rg.lower() != self.resource_group:
            return arm_error(404, "ResourceNotFound", f"Resource group '{rg}' could not be found.")
        if cluster.lower() != self.cluster:
            message = (
                f"The Resource 'Microsoft.ContainerService/managedClusters/{cluster}' under "
                f"resource group '{rg}' was not found."
            )
            return arm_error(404, "ResourceNotFound", message)
        return None

    def _page(self, request: web.Request, items: list[dict[str, Any]]) -> web.Response:
        """One page of ``items`` starting at ``$skiptoken``, with a ``nextLink`` if more."""
        token = request.query.get("$skiptoken", "0")
        if not token.isdigit():
            return arm_error(400, "InvalidParameter", f"Invalid $skiptoken '{token}'.")
        start = int(token)
        end = start + self.page_size
        page: dict[str, Any] = {"value": items[start:end]}
        if end < len(items):
            query = {k: v for k, v in request.query.items() if k != "$skiptoken"}
            query["$skiptoken"] = str(end)
            page["nextLink"] = str(request.url.with_query(query))
        return web.json_response(page)

    # --- agent pools -----------------------------------------------------------------------

    def _pool_json(self, name: str, props: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.pool_url(name), "name": name, "type": POOL_TYPE, "properties": props}

    def _get_pool(self, name: str) -> web.Response:
        pool = self.pools.get(name)
        if pool is None:
            return arm_error(404, "NotFound", "Agent Pool not found")
        return web.json_response(pool)

    def _put_pool(self, name: str, body: Any | None) -> web.Response:
        if not POOL_NAME.match(name):
            message = (
                f"The agent pool name '{name}' is invalid: it must start with a lowercase letter, "
                "contain only lowercase letters and numbers, and be at most 12 characters long."
            )
            return arm_error(400, "InvalidParameter", message)
        if (rejection := _take(self._rejections, name)) is not None:
            return arm_error(rejection.status, rejection.code, rejection.message)
        given = body.get("properties") if isinstance(body, dict) else None
        properties = copy.deepcopy(given) if isinstance(given, dict) else {}
        existing = name in self.pools
        properties["provisioningState"] = "Updating" if existing else "Creating"
        self.pools[name] = self._pool_json(name, properties)
        failure = None
        if not existing:
            self.creates.append(name)
            armed = _take(self._failures, name)
            failure = (armed.code, armed.message) if armed is not None else None
        op = _Operation(name, "update" if existing else "create", self.poll_steps, failure)
        return web.json_response(
            self.pools[name], status=200 if existing else 201, headers=self._lro_headers(op)
        )

    def _delete_pool(self, name: str) -> web.Response:
        pool = self.pools.get(name)
        if pool is None:
            return arm_error(404, "NotFound", "Agent Pool not found")
        pool["properties"]["provisioningState"] = "Deleting"
        headers = self._lro_headers(_Operation(name, "delete", self.poll_steps))
        return web.Response(status=202, headers=headers)

    def _lro_headers(self, op: _Operation) -> dict[str, str]:
        op_id = str(uuid.uuid4())
        self._operations[op_id] = op
        base = (
            f"{self.url}/subscriptions/{self.subscription}/providers/"
            f"Microsoft.ContainerService/locations/{self.location}"
        )
        headers = {"Azure-AsyncOperation": f"{base}/operations/{op_id}", "Retry-After": "0"}
        if op.kind == "delete":
            headers["Location"] = f"{base}/operationresults/{op_id}"
        return headers

    async def _poll(self, op_id: str, *, results: bool) -> web.Response:
        op = self._operations.get(op_id)
        if op is None:
            return arm_error(404, "NotFound", f"Operation '{op_id}' not found.")
        if op.status == "InProgress":
            if op.polls_left > 0:
                op.polls_left -= 1
            else:
                await self._finish(op)
        if results:  # the Location flavour: 202 while running, then 204 (delete only)
            if op.status == "InProgress":
                return web.Response(status=202, headers={"Retry-After": "0"})
            return web.Response(status=204)
        status: dict[str, Any] = {"id": op_id, "name": op_id, "status": op.status}
        if op.status == "Failed" and op.failure is not None:
            status["error"] = {"code": op.failure[0], "message": op.failure[1]}
        return web.json_response(status)

    async def _finish(self, op: _Operation) -> None:
        pool = self.pools.get(op.pool)
        if op.kind == "delete":
            op.status = "Succeeded"
            if pool is not None:
                del self.pools[op.pool]
                self.deletes.append(op.pool)
                for deleted in self.on_pool_deleted:
                    await deleted(op.pool)
            return
        op.status = "Failed" if op.failure is not None else "Succeeded"
        if pool is None:
            return
        pool["properties"]["provisioningState"] = op.status
        if op.status == "Succeeded":
            pool["properties"]["nodeImageVersion"] = NODE_IMAGE
            if op.kind == "create":
                for ready in self.on_pool_ready:
                    await ready(copy.deepcopy(pool))

    # --- compute ---------------------------------------------------------------------------

    def _usages_json(self) -> list[dict[str, Any]]:
        def localized(family: str) -> str:
            if family == "cores":
                return "Total Regional vCPUs"
            middle = family.removeprefix("standard").removesuffix("Family")
            return f"Standard {middle} Family vCPUs"

        return [
            {
                "name": {"value": family, "localizedValue": localized(family)},
                "currentValue": current,
                "limit": limit,
                "unit": "Count",
            }
            for family, (current, limit) in self.usages.items()
        ]

    def _skus(self, request: web.Request) -> web.Response:
        location = None
        if flt := request.query.get("$filter"):
            match = LOCATION_FILTER.match(flt)
            if match is None:
                message = f"Unsupported $filter '{flt}': only \"location eq '<location>'\"."
                return arm_error(400, "InvalidParameter", message)
            location = match["location"].lower()
        if location not in (None, self.location):
            return self._page(request, [])
        skus = []
        for name, (family, vcpus) in self.vm_skus.items():
            capabilities = [{"name": "vCPUs", "value": str(vcpus)}]
            if name in self.sku_gpus:
                capabilities.append({"name": "GPUs", "value": str(self.sku_gpus[name])})
            skus.append(
                {
                    "resourceType": "virtualMachines",
                    "name": name,
                    "tier": "Standard",
                    "size": name.removeprefix("Standard_"),
                    "family": family,
                    "locations": [self.location],
                    "locationInfo": [{"location": self.location, "zones": ["1", "2", "3"]}],
                    "capabilities": capabilities,
                    "restrictions": [],
                }
            )
        return self._page(request, skus)


def _take(armed: list[_Armed], pool: str) -> _Armed | None:
    """Remove and return the first armed entry that applies to ``pool``."""
    for i, entry in enumerate(armed):
        if entry.pool in (None, pool):
            return armed.pop(i)
    return None
