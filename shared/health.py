"""A small HTTP server per service: ``/healthz`` (the process answers), ``/readyz`` (every
readiness check passes: bus connected, database answers) and Prometheus ``/metrics``."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Check = Callable[[], Awaitable[bool]]


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        checks: Mapping[str, Check],
    ) -> None:
        self._host, self._port = host, port
        self._registry = registry
        self._checks = dict(checks)
        self._runner: web.AppRunner | None = None
        self.draining = False
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._app = app

    @property
    def port(self) -> int:
        """The bound port (the real one when started on port 0)."""
        return self._port

    async def start(self) -> None:
        sock = socket.create_server((self._host, self._port))
        self._port = int(sock.getsockname()[1])
        self._runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self.draining:  # stopping: take no new traffic, whatever the checks say
            return web.json_response({"ready": False, "draining": True, "checks": {}}, status=503)
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(self._checks[n]) for n in names))
        checks = dict(zip(names, results, strict=True))
        ready = all(results)
        body = {"ready": ready, "draining": False, "checks": checks}
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    @staticmethod
    async def _run(check: Check) -> bool:
        try:
            return await asyncio.wait_for(check(), timeout=2.0)
        except (TimeoutError, OSError):
            return False
