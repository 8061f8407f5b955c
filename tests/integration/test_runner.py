"""The service runner as a real process: readiness, SIGTERM with events in flight, bad config."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from localdev import infra
from localdev.kubeapi.cluster import DevCluster
from shared.bus import Bus, consumer_name
from shared.events import EventType, ResourcesReady
from shared.runner import ServiceContext, ServiceFailedError, ServiceSpec, serve
from shared.settings import Settings
from tests.support.bus import event, stream_reader
from tests.support.polling import eventually


def service_env(settings: Settings, port: int, **extra: str) -> dict[str, str]:
    return dict(
        os.environ,
        NATS_URL=settings.nats_url,
        DATABASE_URL=settings.database_url,
        KAITEN_STREAM=settings.stream,
        KAITEN_SUBJECT_PREFIX=settings.subject_prefix,
        KAITEN_HEALTH_PORT=str(port),
        KAITEN_GRACEFUL_TIMEOUT_S="10",
        KAITEN_LOG_FORMAT="json",
        **extra,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def spawn(
    argv: list[str], env: dict[str, str], cwd: Path, into: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    into.append(proc)
    return proc


def http_get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
        return str(resp.read().decode())


def readyz(port: int) -> dict[str, Any] | None:
    """The /readyz body (200 or 503), or None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as resp:
            return dict(json.load(resp))
    except urllib.error.HTTPError as e:
        return dict(json.load(e))
    except OSError:
        return None


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    return await asyncio.to_thread(proc.wait, timeout)


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "services.planner"],
        [str(Path(sys.executable).parent / "kaiten"), "run", "planner"],
    ],
    ids=["python-m", "kaiten-run"],
)
async def test_service_becomes_ready_and_exits_zero_on_sigterm(
    argv: list[str],
    settings: Settings,
    repo_root: Path,
    processes: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    cluster = DevCluster()  # the planner reads ConfigMaps: it needs a cluster to start
    await cluster.start()
    try:
        kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        port = infra.free_port()
        env = service_env(settings, port, KUBECONFIG=str(kubeconfig))
        proc = spawn(argv, env, repo_root, processes)
        await _ready_then_sigterm(proc, port)
    finally:
        await cluster.stop()


async def _ready_then_sigterm(proc: subprocess.Popen[bytes], port: int) -> None:

    body = await eventually(
        lambda: (readyz(port) or {}).get("ready") and readyz(port), timeout=30, what="/readyz"
    )
    assert body == {"ready": True, "draining": False, "checks": {"bus": True, "database": True}}
    assert "# TYPE kaiten_events_handled_total counter" in http_get(port, "/metrics")
    assert json.loads(http_get(port, "/healthz")) == {"status": "ok"}
    proc.send_signal(signal.SIGTERM)
    assert await wait_exit(proc) == 0
    output = proc.stdout.read().decode() if proc.stdout else ""
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    started = next(line for line in lines if line["event"] == "service.started")
    assert started["service"] == "planner"
    assert started["consumes"] == ["workspace.observed"]
    assert started["pending"] is None
    assert lines[-1]["event"] == "service.stopped"


async def test_sigterm_lets_the_event_in_flight_finish_and_takes_no_new_one(
    settings: Settings, repo_root: Path, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    port = infra.free_port()
    env = service_env(settings, port, SLOW_SERVICE_MARKERS=str(tmp_path))
    proc = spawn([sys.executable, "-m", "tests.support.slow_service"], env, repo_root, processes)
    await eventually(lambda: (readyz(port) or {}).get("ready"), timeout=30, what="/readyz")

    publisher = Bus(settings, "provisioner", registry=CollectorRegistry())
    await publisher.start()
    try:
        await publisher.publish(event(ResourcesReady(node_names=("first",))))
        await eventually((tmp_path / "first.started").exists, what="the handler")
        proc.send_signal(signal.SIGTERM)
        await eventually(lambda: (readyz(port) or {}).get("draining"), what="draining")
        await publisher.publish(event(ResourcesReady(node_names=("second",))))
        assert await wait_exit(proc) == 0
    finally:
        await publisher.stop()

    assert (tmp_path / "first.finished").exists()
    assert not (tmp_path / "second.started").exists()
    async with stream_reader(settings) as reader:
        info = await reader.consumer(consumer_name("deployer", EventType.RESOURCES_READY))
    assert info.ack_floor is not None
    assert info.ack_floor.consumer_seq == 1  # the first event was acked before exit
    assert info.num_pending == 1  # the second waits for the next replica


async def test_unreachable_nats_fails_start_with_a_message_naming_the_fix(
    settings: Settings,
    repo_root: Path,
    processes: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    port = infra.free_port()
    env = service_env(settings, port)
    env["NATS_URL"] = f"nats://127.0.0.1:{infra.free_port()}"
    env["KAITEN_START_TIMEOUT_S"] = "2"
    # Every service needs a kubeconfig to start; loading one connects nowhere yet.
    kubeconfig = tmp_path / "kubeconfig"
    server = f"http://127.0.0.1:{infra.free_port()}"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "nowhere", "cluster": {"server": server}}],
                "users": [{"name": "nowhere", "user": {"token": "unused"}}],
                "contexts": [
                    {"name": "nowhere", "context": {"cluster": "nowhere", "user": "nowhere"}}
                ],
                "current-context": "nowhere",
            }
        )
    )
    env["KUBECONFIG"] = str(kubeconfig)
    proc = spawn([sys.executable, "-m", "services.tuner"], env, repo_root, processes)
    assert await wait_exit(proc, timeout=60) == 2
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert "NATS JetStream does not answer" in output
    assert "set NATS_URL" in output


async def test_a_background_task_that_dies_stops_the_service_with_an_error(
    settings: Settings,
) -> None:
    """A watch that ends on an error must not leave a process that takes events but no longer
    watches: the service stops, and ``run`` would return 1 so its supervisor restarts it."""

    @asynccontextmanager
    async def lifespan(ctx: ServiceContext) -> AsyncIterator[None]:
        async def broken_watch() -> None:
            await asyncio.sleep(0.1)
            raise ValueError("the watch broke")

        ctx.background.start(broken_watch(), "broken-watch")
        yield

    spec = ServiceSpec(name="planner", handlers=lambda _ctx: [], lifespan=lifespan)
    stop = asyncio.Event()  # never set: the failure alone stops the service
    with pytest.raises(ServiceFailedError, match="the watch broke"):
        await asyncio.wait_for(serve(spec, settings, stop), timeout=30)
