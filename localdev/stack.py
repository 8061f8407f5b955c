"""The embedded local stack behind ``make up`` / ``kaiten up``: NATS and PostgreSQL (the running
ones, else started from the ``local`` extra's wheels), the migrations, the development cluster
(``kaiten cluster --simulate``) and the five services as background processes with their logs in
one folder. ``kaiten down`` stops what ``up`` started; ``kaiten status`` says what answers;
``kaiten logs`` prints the logs (``localdev.logs``).

State lives in ``$KAITEN_HOME`` (default ``./.kaiten``): ``stack.json`` (what was started, on
which ports), ``logs/``, ``cluster.json`` (the cluster's objects), ``webhook/`` (the admission
webhook's certificate), and ``nats/`` and ``postgres/`` when ``up`` started those servers. All of
it but ``stack.json`` survives ``down``, so the next ``up`` finds the Workspaces it had.

Ports. By default the stack uses the fixed ports of a laptop's single stack: health servers
8471-8475 (watcher, planner, provisioner, deployer, tuner), the watcher's admission webhook 9443,
the cluster 6443 (a free port if 6443 is taken), NATS 4222 and PostgreSQL 5432 (used when
running, else started there). ``KAITEN_PORT_BASE=N`` moves every one of them into N..N+9 so a
second stack (the e2e tests) runs beside the first: health N..N+4, webhook N+5, cluster N+6,
NATS N+7, PostgreSQL N+8 (N+9 is kept free). Give it its own ``KAITEN_HOME`` too. ``NATS_URL`` and
``DATABASE_URL`` still override the servers, and ``KAITEN_STREAM`` / ``KAITEN_SUBJECT_PREFIX``
(like every ``KAITEN_*`` setting) reach the services unchanged.
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
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from localdev import infra
from shared.settings import DEFAULT_HEALTH_PORTS, SERVICE_NAMES

DATABASE = "kaiten"
PORT_BASE_ENV = "KAITEN_PORT_BASE"
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Ports:
    """The ports one stack listens on (``KAITEN_PORT_BASE``)."""

    health: dict[str, int]
    webhook: int
    cluster: int
    nats: int
    postgres: int

    @classmethod
    def from_base(cls, base: int | None) -> Ports:
        if base is None:
            return cls(
                dict(DEFAULT_HEALTH_PORTS), webhook=9443, cluster=6443, nats=4222, postgres=5432
            )
        health = {name: base + i for i, name in enumerate(SERVICE_NAMES)}
        return cls(health, webhook=base + 5, cluster=base + 6, nats=base + 7, postgres=base + 8)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Ports:
        """The ports ``KAITEN_PORT_BASE`` in ``environ`` chooses (unset: the defaults)."""
        raw = environ.get(PORT_BASE_ENV, "").strip()
        if not raw:
            return cls.from_base(None)
        try:
            base = int(raw)
        except ValueError:
            base = -1
        if not 1024 <= base <= 65535 - 9:  # noqa: PLR2004
            raise ValueError(f"{PORT_BASE_ENV}={raw!r}: give a port from 1024 to 65526")
        return cls.from_base(base)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Ports:
        return cls(
            health={k: int(v) for k, v in data["health"].items()},
            webhook=int(data["webhook"]),
            cluster=int(data["cluster"]),
            nats=int(data["nats"]),
            postgres=int(data["postgres"]),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def home() -> Path:
    return Path(os.environ.get("KAITEN_HOME", ".kaiten")).resolve()


def _state_file() -> Path:
    return home() / "stack.json"


def _load_state() -> dict[str, Any]:
    path = _state_file()
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_state(state: dict[str, Any]) -> None:
    _state_file().write_text(json.dumps(state, indent=2))


def process_alive(pid: int | None, marker: str = "") -> bool:
    """Whether ``pid`` runs (a zombie does not: an orphan's exit may be reaped late) and, where
    /proc says, its command line contains ``marker`` (a reused pid is not ours)."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        if Path("/proc/self").is_dir():
            return False  # Linux and no such process
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X") and marker in cmdline


def _service_marker(name: str) -> str:
    return f"services.{name}"


CLUSTER_MARKER = "kaiten cluster"
NATS_MARKER = "nats-server"


def _ensure_nats(state: dict[str, Any], port: int) -> str:
    if url := os.environ.get("NATS_URL"):
        state["nats"] = {"url": url, "started": False}
        return url
    url = f"nats://127.0.0.1:{port}"
    previous = state.get("nats") or {}
    if infra.tcp_open("127.0.0.1", port):
        ours = previous.get("url") == url and process_alive(previous.get("pid"), NATS_MARKER)
        state["nats"] = previous if ours else {"url": url, "started": False}
        return url
    proc = infra.start_nats(home() / "nats", port, home() / "logs" / "nats-server.log")
    state["nats"] = {"url": url, "started": True, "pid": proc.pid}
    return url


def _ensure_postgres(state: dict[str, Any], port: int) -> str:
    if url := os.environ.get("DATABASE_URL"):
        state["postgres"] = {"url": url, "started": False}
        return url
    server = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    previous = state.get("postgres") or {}
    datadir = home() / "postgres"
    if infra.tcp_open("127.0.0.1", port):
        ours = previous.get("started") and previous.get("port", port) == port
        state["postgres"] = previous if ours else {"started": False, "port": port}
    else:
        log_file = home() / "logs" / "postgres.log"
        server = infra.start_postgres(datadir, port, log_file)
        state["postgres"] = {"started": True, "datadir": str(datadir), "port": port}
    url = asyncio.run(infra.create_database(server, DATABASE, exist_ok=True))
    state["postgres"]["url"] = url
    return url


def _ensure_cluster(state: dict[str, Any], port: int) -> str:
    """The development cluster (simulated nodes and pods, state in $KAITEN_HOME/cluster.json);
    returns the kubeconfig path."""
    kubeconfig = home() / "kubeconfig"
    cluster = state.get("cluster") or {}
    if process_alive(cluster.get("pid"), CLUSTER_MARKER) and kubeconfig.is_file():
        return str(kubeconfig)
    if infra.tcp_open("127.0.0.1", port):
        port = infra.free_port()
    argv = [sys.executable, "-m", "kaiten", "cluster", "--port", str(port)]
    argv += ["--kubeconfig", str(kubeconfig), "--simulate", "--state", str(home() / "cluster.json")]
    log_file = home() / "logs" / "cluster.log"
    _mark_start(log_file, "cluster", port=port)
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    state["cluster"] = {"pid": proc.pid, "url": f"http://127.0.0.1:{port}", "port": port}
    _save_state(state)
    infra.wait_for_port("127.0.0.1", port, 20, "the development cluster")
    return str(kubeconfig)


def _mark_start(log_file: Path, name: str, **fields: Any) -> None:
    """A line in ``name``'s log saying `kaiten up` starts it, so restarts are easy to find."""
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    record = {**fields, "event": "stack.starting", "service": name, "level": "info"}
    with log_file.open("a") as f:
        f.write(json.dumps({**record, "timestamp": stamp}) + "\n")


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


def stack_env(
    environ: Mapping[str, str], *, nats_url: str, database_url: str, kubeconfig: str, ports: Ports
) -> dict[str, str]:
    """The environment every service of the stack gets: ``environ`` (so ``KAITEN_STREAM``,
    ``KAITEN_SUBJECT_PREFIX`` and any other setting reach them), the stack's defaults where
    ``environ`` does not say, and what the stack decides."""
    defaults = {
        # GPU nodes join the development cluster as AKS's would (set it to byo to bring your own).
        "KAITEN_PROVISIONER_BACKEND": "simulated",
    }
    decided = {
        "NATS_URL": nats_url,
        "DATABASE_URL": database_url,
        "KUBECONFIG": kubeconfig,
        "KAITEN_LOG_FORMAT": "json",  # what `kaiten logs` reads
        "KAITEN_WEBHOOK_CERT_DIR": str(home() / "webhook"),
        "KAITEN_WEBHOOK_PORT": str(ports.webhook),
        # The development cluster runs pods of local-cpu nodes as local processes.
        "KAITEN_LOCAL_CPU": "true",
    }
    return {**defaults, **environ, **decided}


def service_env(name: str, env: Mapping[str, str], ports: Ports) -> dict[str, str]:
    """``env`` for service ``name``: its own health port."""
    return {**env, "KAITEN_HEALTH_PORT": str(ports.health[name])}


def _start_service(name: str, env: dict[str, str]) -> int:
    log_file = home() / "logs" / f"{name}.log"
    _mark_start(log_file, name, health_port=int(env["KAITEN_HEALTH_PORT"]))
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


def _anything_running(state: Mapping[str, Any]) -> bool:
    services = state.get("services") or {}
    cluster = state.get("cluster") or {}
    return process_alive(cluster.get("pid"), CLUSTER_MARKER) or any(
        process_alive(pid, _service_marker(name)) for name, pid in services.items()
    )


def _choose_ports(state: Mapping[str, Any]) -> Ports:
    """The stored ports while part of the stack still runs, else ``KAITEN_PORT_BASE``'s."""
    if state.get("ports") and _anything_running(state):
        return Ports.from_json(state["ports"])
    return Ports.from_env(os.environ)


def _busy_ports(state: Mapping[str, Any], ports: Ports) -> list[str]:
    """The ports this `up` must listen on that something else already holds."""
    services = state.get("services") or {}
    busy = []
    for name in SERVICE_NAMES:
        if process_alive(services.get(name), _service_marker(name)):
            continue
        wanted = [(ports.health[name], f"{name}'s health server")]
        if name == "watcher":
            wanted.append((ports.webhook, "the watcher's admission webhook"))
        busy += [f"{port} ({what})" for port, what in wanted if infra.tcp_open("127.0.0.1", port)]
    return busy


def up() -> int:
    (home() / "logs").mkdir(parents=True, exist_ok=True)
    state = _load_state()
    try:
        ports = _choose_ports(state)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if busy := _busy_ports(state, ports):
        print(
            f"error: in use: {', '.join(busy)}. Another Kaiten stack? Stop it (`make down` with "
            f"its KAITEN_HOME), or give this one its own KAITEN_HOME and {PORT_BASE_ENV}.",
            file=sys.stderr,
        )
        return 1
    state["ports"] = ports.to_json()
    nats_url = _ensure_nats(state, ports.nats)
    _save_state(state)
    database_url = _ensure_postgres(state, ports.postgres)
    _save_state(state)
    kubeconfig = _ensure_cluster(state, ports.cluster)
    _install_crd(state["cluster"]["url"])
    _save_state(state)

    from kaiten.migrate import upgrade_all  # noqa: PLC0415

    upgrade_all(database_url)
    env = stack_env(
        os.environ,
        nats_url=nats_url,
        database_url=database_url,
        kubeconfig=kubeconfig,
        ports=ports,
    )
    services = state.setdefault("services", {})
    for name in SERVICE_NAMES:
        if not process_alive(services.get(name), _service_marker(name)):
            services[name] = _start_service(name, service_env(name, env, ports))
            _save_state(state)

    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = set(SERVICE_NAMES)
    while pending and time.monotonic() < deadline:
        pending = {n for n in pending if not _ready(ports.health[n])}
        for name in sorted(pending):
            if not process_alive(services[name], _service_marker(name)):
                log = home() / "logs" / f"{name}.log"
                print(f"{name} exited; see `kaiten logs {name}` ({log})", file=sys.stderr)
                return 1
        time.sleep(0.1)
    if pending:
        print(
            f"not ready after {READY_TIMEOUT_S:.0f} s: {', '.join(sorted(pending))}; "
            "see `kaiten logs`",
            file=sys.stderr,
        )
        return 1
    _print_summary(state, ports)
    return 0


def _print_summary(state: dict[str, Any], ports: Ports) -> None:
    nats, pg = state["nats"], state["postgres"]
    how = {True: "started by kaiten up", False: "already running"}
    print("Kaiten is up on the embedded local stack.")
    print(f"  NATS        {nats['url']} ({how[nats['started']]})")
    print(f"  PostgreSQL  {pg['url']} ({how[pg['started']]})")
    print(
        f"  cluster     {state['cluster']['url']} (development cluster: simulated GPU nodes; "
        "local-cpu pods run as processes)"
    )
    for name in SERVICE_NAMES:
        port = ports.health[name]
        print(f"  {name:<11} ready, http://127.0.0.1:{port}/readyz and /metrics")
    print(f"  webhook     https://127.0.0.1:{ports.webhook}/validate (served by the watcher)")
    print(f"  logs        {home() / 'logs'} (kaiten logs [SERVICE] [-f])")
    kubectl = Path(sys.executable).parent / "kubectl"
    kaiten = Path(sys.executable).parent / "kaiten"
    print("Try:")
    print(f"  export KUBECONFIG={home() / 'kubeconfig'}")
    print(f"  {kubectl} apply -f examples/tiny-chat.yaml   # a tiny model that really runs here")
    print(f"  {kubectl} wait --for=condition=WorkspaceSucceeded workspace/tiny-chat --timeout=300s")
    print(f"  {kaiten} port-forward svc/tiny-chat 8080:80 &")
    print(
        "  curl -s localhost:8080/chat -H 'content-type: application/json' "
        '-d \'{"prompt": "Hello"}\''
    )
    print(f"  {kubectl} get workspaces,nodeclaims,pods   # the README walks through more")
    print("Stop everything with: make down")


def _terminate(pids: Mapping[str, tuple[int, str]], timeout: float = 30) -> None:
    """SIGTERM every (pid, marker) of ``pids`` that is still ours, wait for all of them
    together, then SIGKILL what is left after ``timeout`` seconds."""
    running = {name: pid for name, (pid, marker) in pids.items() if process_alive(pid, marker)}
    for pid in running.values():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    markers = {name: marker for name, (_, marker) in pids.items()}
    while running and time.monotonic() < deadline:
        time.sleep(0.05)
        running = {n: p for n, p in running.items() if process_alive(p, markers[n])}
    for pid in running.values():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def down() -> int:
    state = _load_state()
    services = state.get("services") or {}
    _terminate({name: (pid, _service_marker(name)) for name, pid in services.items()})
    for name in services:
        print(f"stopped {name}")
    state["services"] = {}
    cluster = state.pop("cluster", {})
    if cluster.get("pid"):
        _terminate({"cluster": (cluster["pid"], CLUSTER_MARKER)})
        print("stopped the development cluster (its objects are kept in cluster.json)")
    nats = state.get("nats", {})
    if nats.get("started"):
        _terminate({"nats": (nats["pid"], NATS_MARKER)})
        print("stopped nats-server (its streams are kept in nats/)")
    pg = state.get("postgres", {})
    if pg.get("started"):
        infra.stop_postgres(Path(pg["datadir"]))
        print("stopped PostgreSQL (its data is kept in postgres/)")
    _state_file().unlink(missing_ok=True)
    return 0


def _server_up(url: str, default_port: int) -> bool:
    parts = urlsplit(url.split(",", maxsplit=1)[0])
    return infra.tcp_open(parts.hostname or "127.0.0.1", parts.port or default_port)


def status() -> int:
    state = _load_state()
    if not state:
        print("nothing started (run `make up`)")
        return 1
    ports = Ports.from_json(state["ports"]) if state.get("ports") else Ports.from_base(None)
    ok = True
    services = state.get("services") or {}
    for name in SERVICE_NAMES:
        pid = services.get(name)
        port = ports.health[name]
        ready = process_alive(pid, _service_marker(name)) and _ready(port)
        ok &= ready
        print(f"{name:<12} {'ready' if ready else 'DOWN':<5} pid {pid}, :{port}/readyz")
    cluster = state.get("cluster") or {}
    cluster_up = process_alive(cluster.get("pid"), CLUSTER_MARKER) and _server_up(
        cluster.get("url", ""), ports.cluster
    )
    ok &= cluster_up
    print(f"{'cluster':<12} {'ready' if cluster_up else 'DOWN':<5} {cluster.get('url')}")
    for what, default in (("nats", ports.nats), ("postgres", ports.postgres)):
        url = (state.get(what) or {}).get("url", "")
        answers = bool(url) and _server_up(url, default)
        ok &= answers
        print(f"{what:<12} {'ready' if answers else 'DOWN':<5} {url or '(not started)'}")
    return 0 if ok else 1


def logs(source: str | None, *, lines: int, follow: bool, raw: bool) -> int:
    """Print the last ``lines`` lines of ``source``'s log (None: every log, interleaved by time),
    then with ``follow`` what is written next, until Ctrl-C. ``source`` must be one of
    ``localdev.logs.SOURCES`` (the CLI checks)."""
    from localdev.logs import SOURCES, LogReader, output_lines  # noqa: PLC0415

    folder = home() / "logs"
    if not folder.is_dir():
        print(f"no logs in {folder} (run `make up`, or set KAITEN_HOME)", file=sys.stderr)
        return 1
    names = SOURCES if source is None else (source,)
    files = {name: folder / f"{name}.log" for name in names}
    if source is not None and not files[source].is_file() and not follow:
        why = " (kaiten up did not start it)" if source in ("nats-server", "postgres") else ""
        print(f"no log for {source} in {folder}{why}", file=sys.stderr)
        return 1
    reader = LogReader(files)
    prefixed = source is None
    out = output_lines(reader.read(), raw=raw, prefixed=prefixed)
    for text in out[-lines:] if lines > 0 else []:
        print(text)
    if not follow:
        return 0
    try:
        while True:
            sys.stdout.flush()
            time.sleep(0.2)
            for text in output_lines(reader.read(), raw=raw, prefixed=prefixed):
                print(text)
    except KeyboardInterrupt:
        return 0
