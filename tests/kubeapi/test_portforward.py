"""``kaiten port-forward`` against the development cluster: pods and Services are objects in the
emulator, the pod's IP is a loopback address where a real HTTP server of the test listens, and
bytes go through the forwarder both in process and as the ``kaiten`` command."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kubernetes_asyncio import client as aclient

from kaiten.portforward import NotLocalError, Options, port_forward
from localdev import infra
from tests.support.polling import eventually

KAITEN = Path(sys.executable).parent / "kaiten"
MERGE_PATCH = "application/merge-patch+json"
MEGABYTE = 1024 * 1024


@dataclass
class Backend:
    """An HTTP server standing in for a pod's process."""

    host: str
    port: int
    greeting: str
    requests: list[str] = field(default_factory=list)


@asynccontextmanager
async def http_server(host: str, greeting: str, port: int = 0) -> AsyncIterator[Backend]:
    backend = Backend(host, port or infra.free_port(), greeting)

    async def hello(request: web.Request) -> web.Response:
        backend.requests.append(f"GET {request.path}")
        return web.Response(text=greeting)

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        backend.requests.append(f"POST {request.path} {len(body)}")
        return web.Response(body=body, content_type="application/octet-stream")

    app = web.Application(client_max_size=4 * MEGABYTE)
    app.router.add_get("/hello", hello)
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, host, backend.port).start()
    try:
        yield backend
    finally:
        await runner.cleanup()


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with http_server("127.0.0.1", "hello from the pod") as server:
        yield server


@pytest.fixture
def core(api_client: aclient.ApiClient) -> aclient.CoreV1Api:
    return aclient.CoreV1Api(api_client)


async def create_pod(
    core: aclient.CoreV1Api,
    name: str,
    *,
    ip: str = "127.0.0.1",
    ready: bool = True,
    ports: list[dict[str, Any]] | None = None,
) -> None:
    """A pod object labelled app=web, with the status a kubelet would write."""
    await core.create_namespaced_pod(
        "default",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {"name": "server", "image": "example.com/server:1", "ports": ports or []}
                ]
            },
        },
    )
    await set_status(core, name, ip=ip, ready=ready)


async def set_status(core: aclient.CoreV1Api, name: str, *, ip: str, ready: bool) -> None:
    status = {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    await core.patch_namespaced_pod_status(
        name, "default", {"status": status}, _content_type=MERGE_PATCH
    )


async def create_service(
    core: aclient.CoreV1Api, name: str, target_port: int | str, selector: str = "web"
) -> None:
    await core.create_namespaced_service(
        "default",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {
                "selector": {"app": selector},
                "ports": [{"name": "http", "port": 80, "targetPort": target_port}],
            },
        },
    )


@dataclass
class Forwarding:
    task: asyncio.Task[int]
    stop: asyncio.Event
    out: io.StringIO
    err: io.StringIO
    ports: list[int]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"


@asynccontextmanager
async def forwarding(
    kubeconfig: Path, target: str, *ports: str, ready: bool = True, address: str = "127.0.0.1"
) -> AsyncIterator[Forwarding]:
    """The forwarder running in this process; waits until it listens (with ``ready``)."""
    stop = asyncio.Event()
    bound: list[int] = []
    out, err = io.StringIO(), io.StringIO()
    options = Options(target, ports, namespace="default", address=address, kubeconfig=kubeconfig)
    task = asyncio.create_task(
        port_forward(options, stop=stop, out=out, err=err, on_ready=bound.extend)
    )
    run = Forwarding(task, stop, out, err, bound)
    try:
        if ready:
            await eventually(lambda: bound or task.done(), what="the forwarder to listen")
            assert bound, f"port-forward ended: {err.getvalue()}"
        yield run
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.shield(task), 10)


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def raw_exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection and read until the peer closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


HELLO = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def test_service_with_int_target_port(
    kubeconfig: Path, core: aclient.CoreV1Api, backend: Backend
) -> None:
    await create_pod(core, "web-0")
    await create_service(core, "web", backend.port)
    local = infra.free_port()
    async with forwarding(kubeconfig, "svc/web", f"{local}:80") as fwd:
        assert fwd.ports == [local]
        assert f"Forwarding from 127.0.0.1:{local} -> {backend.port}\n" in fwd.out.getvalue()

        assert await get(f"{fwd.url}/hello") == (200, "hello from the pod")

        payload = os.urandom(MEGABYTE)
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{fwd.url}/echo", data=payload) as response,
        ):
            assert response.status == 200
            assert await response.read() == payload
        assert f"POST /echo {MEGABYTE}" in backend.requests

        # Two connections at once: the first waits half-sent while the second is served.
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        writer.write(HELLO[:20])
        await writer.drain()
        assert b"hello from the pod" in await raw_exchange(local, HELLO)
        writer.write(HELLO[20:])
        await writer.drain()
        first = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await writer.wait_closed()
        assert first.startswith(b"HTTP/1.1 200")
        assert first.endswith(b"hello from the pod")
        assert fwd.err.getvalue() == ""
    assert fwd.task.result() == 0


async def test_named_target_port_and_a_free_local_port(
    kubeconfig: Path, core: aclient.CoreV1Api, backend: Backend
) -> None:
    await create_pod(core, "web-0", ports=[{"name": "api", "containerPort": backend.port}])
    await create_service(core, "web", "api")
    async with forwarding(kubeconfig, "service/web", ":http") as fwd:
        (local,) = fwd.ports
        assert local > 0
        assert f"Forwarding from 127.0.0.1:{local} -> {backend.port}" in fwd.out.getvalue()
        assert await get(f"{fwd.url}/hello") == (200, "hello from the pod")


async def test_localhost_listens_on_both_loopback_addresses(
    kubeconfig: Path, core: aclient.CoreV1Api, backend: Backend
) -> None:
    await create_pod(core, "web-0")
    async with forwarding(kubeconfig, "web-0", f":{backend.port}", address="localhost") as fwd:
        (local,) = fwd.ports
        lines = fwd.out.getvalue().splitlines()
        assert lines[0] == f"Forwarding from 127.0.0.1:{local} -> {backend.port}"
        assert lines[1:] in ([], [f"Forwarding from [::1]:{local} -> {backend.port}"])
        assert await get(f"http://localhost:{local}/hello") == (200, "hello from the pod")


async def test_pod_target_follows_the_pods_new_ip(
    kubeconfig: Path, core: aclient.CoreV1Api, backend: Backend
) -> None:
    await create_pod(core, "web-0")
    # The restarted pod: the same port on another loopback IP.
    async with (
        http_server("127.0.0.2", "hello from the new pod", backend.port),
        forwarding(kubeconfig, "pod/web-0", f"{infra.free_port()}:{backend.port}") as fwd,
    ):
        assert await get(f"{fwd.url}/hello") == (200, "hello from the pod")
        await set_status(core, "web-0", ip="127.0.0.2", ready=True)

        async def moved() -> bool:
            return await get(f"{fwd.url}/hello") == (200, "hello from the new pod")

        await eventually(moved, what="the forwarder to follow the pod to its new IP")
        assert fwd.err.getvalue() == ""


async def test_a_pod_that_stops_being_ready_closes_connections_with_an_error(
    kubeconfig: Path, core: aclient.CoreV1Api, backend: Backend
) -> None:
    await create_pod(core, "web-0")
    await create_service(core, "web", backend.port)
    async with forwarding(kubeconfig, "svc/web", f"{infra.free_port()}:80") as fwd:
        assert await get(f"{fwd.url}/hello") == (200, "hello from the pod")
        await set_status(core, "web-0", ip="127.0.0.1", ready=False)

        async def refused() -> bool:
            answer = await raw_exchange(fwd.ports[0], HELLO)
            return answer == b"" and "Running (not ready)" in fwd.err.getvalue()

        await eventually(refused, what="a closed connection and an error")
        assert fwd.err.getvalue().splitlines()[-1] == (
            f"error: forwarding {fwd.ports[0]} -> 80: no Running and Ready pod behind "
            "service web (selector app=web): web-0 Running (not ready)"
        )
        assert not fwd.task.done()  # it goes on forwarding

        await set_status(core, "web-0", ip="127.0.0.1", ready=True)

        async def served() -> bool:
            return await get(f"{fwd.url}/hello") == (200, "hello from the pod")

        await eventually(served, what="forwarding to resume")


async def test_a_pod_that_does_not_answer(kubeconfig: Path, core: aclient.CoreV1Api) -> None:
    closed = infra.free_port()  # nothing listens there
    await create_pod(core, "web-0")
    await create_service(core, "web", closed)
    async with forwarding(kubeconfig, "svc/web", f"{infra.free_port()}:80") as fwd:
        assert await raw_exchange(fwd.ports[0], HELLO) == b""
        await eventually(lambda: "does not answer" in fwd.err.getvalue(), what="the error")
        line = fwd.err.getvalue().strip()
        assert line.startswith(f"error: forwarding {fwd.ports[0]} -> 80: pod web-0 ")
        assert f"(127.0.0.1:{closed}) does not answer" in line
        assert "\n" not in line


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("svc/web", "error: no pods match service web's selector app=nobody\n"),
        ("svc/missing", 'error: services "missing" not found in namespace "default"\n'),
        ("pod/missing", 'error: pods "missing" not found in namespace "default"\n'),
        ("svc/web", None),  # a port the service does not have: see below
    ],
)
async def test_nothing_to_forward_to_fails_at_start(
    kubeconfig: Path, core: aclient.CoreV1Api, target: str, message: str | None
) -> None:
    await create_pod(core, "web-0")
    await create_service(core, "web", 5000, selector="nobody" if message else "web")
    port = "8080:80" if message else "8080:81"
    async with forwarding(kubeconfig, target, port, ready=False) as fwd:
        await asyncio.wait_for(asyncio.shield(fwd.task), 10)
        assert fwd.task.result() == 1
        assert fwd.err.getvalue() == (
            message or "error: service web has no port 81; its ports: 80/TCP (http -> 5000)\n"
        )
        assert fwd.out.getvalue() == ""


async def test_a_local_port_in_use_fails_at_start(
    kubeconfig: Path, core: aclient.CoreV1Api, backend: Backend
) -> None:
    await create_pod(core, "web-0")
    free = infra.free_port()
    async with forwarding(
        kubeconfig, "web-0", f"{free}:{backend.port}", f"{backend.port}", ready=False
    ) as fwd:
        await asyncio.wait_for(asyncio.shield(fwd.task), 10)
        assert fwd.task.result() == 1
        assert fwd.err.getvalue().startswith(f"error: cannot listen on 127.0.0.1:{backend.port}: ")
    # The first port, bound before the second failed, was let go.
    with socket.create_server(("127.0.0.1", free)):
        pass


async def test_a_pod_elsewhere_is_left_to_kubectl(
    kubeconfig: Path, core: aclient.CoreV1Api
) -> None:
    await create_pod(core, "remote", ip="10.244.0.10")
    with pytest.raises(NotLocalError, match=r"pod remote has IP 10\.244\.0\.10"):
        async with forwarding(kubeconfig, "pod/remote", "8080:80", ready=False) as fwd:
            await asyncio.wait_for(asyncio.shield(fwd.task), 10)


# --- the command ------------------------------------------------------------------------------


async def start_kaiten(kubeconfig: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(KAITEN),
        "port-forward",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, KUBECONFIG=str(kubeconfig)),
    )


async def read_line(proc: asyncio.subprocess.Process, want: Callable[[str], bool]) -> str:
    """The first stdout line ``want`` accepts (failing when the command ends first)."""
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        if not line:
            assert proc.stderr is not None
            err = await proc.stderr.read()
            raise AssertionError(f"kaiten port-forward ended: {err.decode()}")
        if want(line):
            return line


async def test_the_kaiten_command(
    kubeconfig: Path, core: aclient.CoreV1Api, backend: Backend
) -> None:
    await create_pod(core, "web-0")
    await create_service(core, "web", backend.port)
    local = infra.free_port()
    proc = await start_kaiten(kubeconfig, "svc/web", f"{local}:80", "-n", "default")
    try:
        line = await read_line(proc, lambda text: text.startswith("Forwarding from"))
        assert line == f"Forwarding from 127.0.0.1:{local} -> {backend.port}\n"
        assert await get(f"http://127.0.0.1:{local}/hello") == (200, "hello from the pod")
        assert await read_line(proc, lambda text: "Handling" in text) == (
            f"Handling connection for {local}\n"
        )
        # A connection still open does not hold SIGTERM up.
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        writer.write(HELLO[:20])
        await writer.drain()
        await read_line(proc, lambda text: "Handling" in text)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 10)  # to the end: closes the pipes
        code = proc.returncode
    assert code == 0
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the forwarder
    writer.close()


async def test_the_kaiten_command_fails_at_start_when_no_pod_matches(
    kubeconfig: Path, core: aclient.CoreV1Api
) -> None:
    await create_service(core, "web", 5000)
    proc = await start_kaiten(kubeconfig, "svc/web", "8080:80")
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    assert out == b""
    assert err.decode() == "error: no pods match service web's selector app=web\n"


async def test_the_kaiten_command_runs_kubectl_for_a_pod_elsewhere(
    kubeconfig: Path, core: aclient.CoreV1Api
) -> None:
    await create_pod(core, "remote", ip="10.244.0.10")
    proc = await start_kaiten(kubeconfig, "pod/remote", f"{infra.free_port()}:80")
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    text = err.decode()
    first, _, kubectl_says = text.partition("\n")
    assert first == (
        "pod remote has IP 10.244.0.10, which is not on this machine: running kubectl port-forward"
    )
    # kubectl really ran: the development cluster has no portforward subresource, so it fails.
    assert proc.returncode != 0
    assert kubectl_says.startswith("error: "), text
