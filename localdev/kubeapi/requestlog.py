"""Who asked the development cluster for what, in RBAC's terms: per client (the product token of
the ``User-Agent``, e.g. ``kaiten-deployer`` of ``kaiten-deployer/0.1.0``), the set of
(verb, API group, resource[/subresource]) its requests needed. ``GET /_kaiten/requests`` answers
it as JSON; ``DELETE`` forgets it. The least-privilege test compares it with the Helm chart's
ClusterRoles.

Verbs are the API server's authorization verbs: ``get``, ``list`` and ``watch`` for reads (a GET
of a collection is ``list``, with ``watch=true`` it is ``watch``), ``create``, ``update``,
``patch``, ``delete`` and ``deletecollection`` for writes. The pod proxy and log are the
``pods/proxy`` and ``pods/log`` subresources. Discovery and ``/openapi`` are non-resource URLs
that every authenticated client may read: they are not recorded."""

from __future__ import annotations

from aiohttp import web

Rule = tuple[str, str, str]  # verb, API group ("" = core), resource[/subresource]

_WRITES = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def client_of(user_agent: str) -> str:
    """The product token of a ``User-Agent`` header: what comes before the first ``/``."""
    return user_agent.strip().split("/", 1)[0].split(" ", 1)[0] or "unknown"


def rbac_verb(method: str, *, named: bool, watch: bool) -> str:
    """The verb an API server authorizes for ``method`` on an object (``named``) or on a
    collection, ``watch`` when the query asks for one."""
    method = method.upper()
    if method in ("GET", "HEAD"):
        if watch:
            return "watch"
        return "get" if named else "list"
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return _WRITES.get(method, method.lower())


def resource_of(plural: str, subresource: str | None) -> str:
    return f"{plural}/{subresource}" if subresource else plural


class RequestLog:
    """The set of rules each client used; one set insert per request."""

    def __init__(self) -> None:
        self.used: dict[str, set[Rule]] = {}

    def record(self, user_agent: str, verb: str, group: str, resource: str) -> None:
        client = client_of(user_agent)
        rules = self.used.get(client)
        if rules is None:
            rules = self.used[client] = set()
        rules.add((verb, group, resource))

    def snapshot(self) -> dict[str, list[list[str]]]:
        return {
            client: [list(rule) for rule in sorted(rules)]
            for client, rules in sorted(self.used.items())
        }

    async def control(self, request: web.Request) -> web.Response:
        """``/_kaiten/requests``: GET the log, DELETE to start a new one."""
        if request.method == "DELETE":
            self.used.clear()
        elif request.method != "GET":
            return web.json_response(
                {"error": f"{request.method} /_kaiten/requests: use GET or DELETE"}, status=405
            )
        return web.json_response(self.snapshot())
