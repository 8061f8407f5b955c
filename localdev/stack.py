"""The embedded local stack behind ``make up`` / ``kaiten up``: NATS and PostgreSQL (the running
ones, else started from the ``local`` extra's wheels), the migrations, and the five services as
background processes with their logs in one folder. ``kaiten down`` stops what ``up`` started.

State lives in ``$KAITEN_HOME`` (default ``./.kaiten``): ``stack.json`` (what was started),
``logs/``, ``nats/`` and ``postgres/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from localdev import infra
from shared.settings import DEFAULT_HEALTH_PORTS, SERVICE_NAMES

NATS_PORT = 4222
POSTGRES_PORT = 5432
CLUSTER_PORT = 6443
DATABASE = "kaiten"

# What `up` cannot start yet, and the issue that brings it. Shrinks as the stack grows.
NOT_YET: tuple[str, ...] = ()


def home() -> Path:
    return Path(os.environ.get("KAITEN_HOME", ".kaiten")).resolve()


def _state_file() -> Path:
    return home() / "stack.json"


def _load_state() -> dict[str, Any]:
    path = _state_file()
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_state(state: dict[str, Any]) -> None:
    _state_file().write_text(json.dumps(state, indent=2))


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _ensure_nats(state: dict[str, Any]) -> str:
    if url := os.environ.get("NATS_URL"):
        state["nats"] = {"url": url, "started": False}
        return url
    url = f"nats://127.0.0.1:{NATS_PORT}"
    if infra.tcp_open("127.0.0.1", NATS_PORT):
        state.setdefault("nats", {"url": url, "started": False})
        return url
    proc = infra.start_nats(home() / "nats", NATS_PORT, home() / "logs" / "nats-server.log")
    state["nats"] = {"url": url, "started": True, "pid": proc.pid}
    return url


def _ensure_postgres(state: dict[str, Any]) -> str:
    if url := os.environ.get("DATABASE_URL"):
        state["postgres"] = {"url": url, "started": False}
        return url
    if infra.tcp_open("127.0.0.1", POSTGRES_PORT):
        server = f"postgresql+asyncpg://postgres@127.0.0.1:{POSTGRES_PORT}/postgres"
        state.setdefault("postgres", {"started": False})
    else:
        datadir = home() / "postgres"
        log_file = home() / "logs" / "postgres.log"
        server = infra.start_postgres(datadir, POSTGRES_PORT, log_file)
        state["postgres"] = {"started": True, "datadir": str(datadir)}
    url = asyncio.run(infra.create_database(server, DATABASE, exist_ok=True))
    state["postgres"]["url"] = url
    return url


def _ensure_cluster(state: dict[str, Any]) -> str:
    """The development cluster (simulated nodes and pods, state in $KAITEN_HOME/cluster.json);
    returns the kubeconfig path."""
    kubeconfig = home() / "kubeconfig"
    cluster = state.get("cluster") or {}
    if _alive(cluster.get("pid")) and kubeconfig.is_file():
        return str(kubeconfig)
    port = CLUSTER_PORT if not infra.tcp_open("127.0.0.1", CLUSTER_PORT) else infra.free_port()
    argv = [
        sys.executable,
        "-m",
        "kaiten",
        "cluster",
        "--port",
        str(port),
        "--kubeconfig",
        str(kubeconfig),
        "--simulate",
        "--state",
        str(home() / "cluster.json"),
    ]
    with (home() / "logs" / "cluster.log").open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    infra.wait_for_port("127.0.0.1", port, 20, "the development cluster")
    state["cluster"] = {"pid": proc.pid, "url": f"http://127.0.0.1:{port}"}
    return str(kubeconfig)


def _install_crd(cluster_url: str) -> None:
    """Create or update the Workspace CRD, and Karpenter's NodeClaim CRD for the provisioner's
    simulated backend, in the development cluster (Helm does this in a real cluster)."""
    from services.provisioner.crd import nodeclaim_crd  # noqa: PLC0415
    from shared.workspace.crd import workspace_crd  # noqa: PLC0415

    base = f"{cluster_url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    for crd in (workspace_crd(), nodeclaim_crd()):
        try:
            _http("POST", base, crd)
        except urllib.error.HTTPError as e:
            if e.code != 409:  # noqa: PLR2004
                raise
            current = _http("GET", f"{base}/{crd['metadata']['name']}")
            crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            _http("PUT", f"{base}/{crd['metadata']['name']}", crd)


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 -- the local development cluster
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
        result: dict[str, Any] = json.load(resp)
        return result


def _start_service(name: str, env: dict[str, str]) -> int:
    log_file = home() / "logs" / f"{name}.log"
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return proc.pid


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)  # noqa: PLR2004
    except OSError:
        return False


def up() -> int:
    (home() / "logs").mkdir(parents=True, exist_ok=True)
    state = _load_state()
    nats_url = _ensure_nats(state)
    database_url = _ensure_postgres(state)
    kubeconfig = _ensure_cluster(state)
    _install_crd(state["cluster"]["url"])
    _save_state(state)

    from kaiten.migrate import upgrade_all  # noqa: PLC0415

    upgrade_all(database_url)
    env = dict(
        os.environ,
        NATS_URL=nats_url,
        DATABASE_URL=database_url,
        KUBECONFIG=kubeconfig,
        KAITEN_LOG_FORMAT="json",
        KAITEN_WEBHOOK_CERT_DIR=str(home() / "webhook"),
        # GPU nodes join the development cluster as AKS's would (set it to byo to bring your own).
        KAITEN_PROVISIONER_BACKEND=os.environ.get("KAITEN_PROVISIONER_BACKEND", "simulated"),
    )
    services = state.setdefault("services", {})
    for name in SERVICE_NAMES:
        if not _alive(services.get(name)):
            services[name] = _start_service(name, env)
    _save_state(state)

    deadline = time.monotonic() + 60
    pending = set(SERVICE_NAMES)
    while pending and time.monotonic() < deadline:
        pending = {n for n in pending if not _ready(DEFAULT_HEALTH_PORTS[n])}
        for name in list(pending):
            if not _alive(services[name]):
                print(f"{name} exited; see {home() / 'logs' / (name + '.log')}", file=sys.stderr)
                return 1
        time.sleep(0.2)
    if pending:
        print(f"not ready after 60 s: {', '.join(sorted(pending))}", file=sys.stderr)
        return 1
    _print_summary(state)
    return 0


def _print_summary(state: dict[str, Any]) -> None:
    nats, pg = state["nats"], state["postgres"]
    how = {True: "started by kaiten up", False: "already running"}
    print("Kaiten is up on the embedded local stack.")
    print(f"  NATS        {nats['url']} ({how[nats['started']]})")
    print(f"  PostgreSQL  {pg['url']} ({how[pg['started']]})")
    print(f"  cluster     {state['cluster']['url']} (development cluster, simulated nodes)")
    for name in SERVICE_NAMES:
        port = DEFAULT_HEALTH_PORTS[name]
        print(f"  {name:<11} ready, http://127.0.0.1:{port}/readyz and /metrics")
    print(f"  logs        {home() / 'logs'}")
    kubectl = Path(sys.executable).parent / "kubectl"
    print("Try:")
    print(f"  export KUBECONFIG={home() / 'kubeconfig'}")
    print(f"  {kubectl} get nodes,namespaces")
    print(f"  {kubectl} apply -f /path/to/workspace.yaml   # admission runs in the watcher")
    print(f"  {kubectl} get workspaces")
    if NOT_YET:
        print("Not there yet:")
        for item in NOT_YET:
            print(f"  - {item}")
    print("Stop everything with: make down")


def _terminate(pid: int, timeout: float = 30) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def down() -> int:
    state = _load_state()
    for name, pid in state.get("services", {}).items():
        _terminate(pid)
        print(f"stopped {name}")
    state["services"] = {}
    cluster = state.pop("cluster", {})
    if cluster.get("pid"):
        _terminate(cluster["pid"])
        print("stopped the development cluster (its objects are kept in cluster.json)")
    nats = state.get("nats", {})
    if nats.get("started"):
        _terminate(nats["pid"])
        print("stopped nats-server")
    pg = state.get("postgres", {})
    if pg.get("started"):
        infra.stop_postgres(Path(pg["datadir"]))
        print("stopped PostgreSQL")
    _state_file().unlink(missing_ok=True)
    return 0


def status() -> int:
    state = _load_state()
    if not state:
        print("nothing started (run `make up`)")
        return 1
    ok = True
    for name in SERVICE_NAMES:
        pid = state.get("services", {}).get(name)
        ready = _alive(pid) and _ready(DEFAULT_HEALTH_PORTS[name])
        ok &= ready
        print(f"{name:<12} {'ready' if ready else 'DOWN'} (pid {pid})")
    cluster = state.get("cluster", {})
    cluster_up = _alive(cluster.get("pid"))
    ok &= cluster_up
    print(f"{'cluster':<12} {'ready' if cluster_up else 'DOWN'} ({cluster.get('url')})")
    return 0 if ok else 1
