"""``DevCluster``: the development cluster as one object to start and stop, in process (tests,
on port 0) or as ``kaiten cluster``. It writes a kubeconfig that kubectl and the Python clients
use unchanged, and optionally keeps its state in a file across restarts."""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from localdev.kubeapi.admission import Admission
from localdev.kubeapi.api import Api
from localdev.kubeapi.server import Faults, PodLog, Server, build_app
from localdev.kubeapi.store import Change, Store

if TYPE_CHECKING:
    from localdev.kubeapi.localpods import LocalPods
    from localdev.kubeapi.simulate import Simulator

# Writes within this long share one save of the state file (every object, as JSON): a burst
# of writes saved every 0.2 s spent an eighth of the cluster's CPU rewriting it.
SAVE_DELAY_S = 1.0


class DevCluster:
    def __init__(
        self,
        *,
        state_file: Path | None = None,
        bookmark_interval: float = 5.0,
        history: int = 10_000,
    ) -> None:
        self.store = Store(history=history)
        self.api = Api(self.store)
        self.api.admission = Admission(self.store)
        self.faults = Faults()
        self.server = Server(self.api, self.faults, bookmark_interval=bookmark_interval)
        self.state_file = state_file
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._save_handle: asyncio.TimerHandle | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Load saved state (if any), bootstrap, listen; returns the server URL."""
        if self.state_file is not None and self.state_file.is_file():
            self.store.load(json.loads(self.state_file.read_text()))
        await self.api.bootstrap()
        if self.state_file is not None:
            self.store.on_change.append(self._schedule_save)
        sock = socket.create_server((host, port))
        bound = sock.getsockname()[1]
        self._runner = web.AppRunner(build_app(self.server), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        self.store.cut_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._save_handle is not None:
            self._save_handle.cancel()
        self.save()

    def save(self) -> None:
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            self.store.save(self.state_file)

    def _schedule_save(self, _change: Change) -> None:
        if self._save_handle is None or self._save_handle.cancelled():
            loop = asyncio.get_running_loop()
            self._save_handle = loop.call_later(SAVE_DELAY_S, self._save_now)

    def _save_now(self) -> None:
        self._save_handle = None
        self.save()

    def kubeconfig(self, context: str = "kaiten-dev") -> dict[str, Any]:
        """A kubeconfig for this cluster (token auth with a placeholder token: the development
        cluster does not authenticate)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": "kaiten-dev"}}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": context, "user": context, "namespace": "default"},
                }
            ],
            "current-context": context,
            "preferences": {},
        }

    def write_kubeconfig(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.kubeconfig(), indent=2))
        path.chmod(0o600)
        return path


async def serve_cluster(
    host: str,
    port: int,
    kubeconfig: Path,
    *,
    state_file: Path | None,
    simulate: bool,
    stop: asyncio.Event,
    pods_dir: Path | None = None,
    pod_ready_s: float | None = None,
) -> None:
    """Run a development cluster until ``stop`` is set (``kaiten cluster``). With ``simulate``,
    pods of local-cpu nodes run as processes, with their folders under ``pods_dir``, and
    simulated pods turn Ready after ``pod_ready_s`` (default ``SimOptions``')."""
    cluster = DevCluster(state_file=state_file)
    url = await cluster.start(host, port)
    simulator = None
    if simulate:
        from localdev.kubeapi.localpods import LocalPods  # noqa: PLC0415
        from localdev.kubeapi.simulate import SimOptions, Simulator  # noqa: PLC0415

        if pods_dir is None:
            base = state_file.parent if state_file is not None else Path(tempfile.mkdtemp())
            pods_dir = base / "pods"
        local = LocalPods(cluster.api, pods_dir)
        options = SimOptions() if pod_ready_s is None else SimOptions(pod_ready_delay_s=pod_ready_s)
        simulator = Simulator(cluster.api, options, local=local)
        simulator.start()
        cluster.server.controls.update(nodes=simulator.control_nodes, pods=simulator.control_pods)
        cluster.server.pod_proxy = simulator.pod_proxy
        cluster.server.pod_log = _pod_logs(local, simulator)
    cluster.write_kubeconfig(kubeconfig)
    print(f"development cluster at {url}; export KUBECONFIG={kubeconfig}", flush=True)
    try:
        await stop.wait()
    finally:
        if simulator is not None:
            await simulator.stop()
        await cluster.stop()


def _pod_logs(local: LocalPods, simulator: Simulator) -> PodLog:
    """Logs of local pods (processes) from the local runner, else what the simulated kubelet
    kept (the failed containers' logs)."""

    def find(namespace: str, name: str, container: str | None) -> Path | None:
        found = local.log_file(namespace, name, container)
        return found if found is not None else simulator.log_file(namespace, name, container)

    return find
