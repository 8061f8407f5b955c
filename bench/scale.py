"""How fast Kaiten converges at scale, what it costs, and how far it is from a lower bound.

Usage: python bench/scale.py [--burst 10,100,1000] [--rate 20 --duration 60] [--replicas 1,2]

On the embedded stack (every service its own process, the development cluster with simulated
nodes and pods that turn Ready at once: KAITEN_PROVISIONER_SIMULATED_DELAY_S=0 and
KAITEN_CLUSTER_POD_READY_S=0), for one and then two replicas of each service:

- burst: N copies of the phi-3 seed created at once (64 requests in flight), for each N;
- steady: RATE Workspaces per second for DURATION seconds.

Per Workspace it takes the time from the create request to the client seeing
``WorkspaceSucceeded=True`` (a watch), and splits it into hops from the audit log's phases
(``watcher.audit_phases``): observe (create -> watcher's workspace.observed), plan (-> planner's
plan.ready), provision (-> nodes ready), deploy (-> pods ready: the deployer's objects and the
simulated pods), status (-> the status the client sees). Per service process: CPU seconds and
peak RSS (VmHWM, reset before each run), and with two replicas each replica's share of the events
its service handled (``kaiten_events_handled_total`` on its /metrics).

The lower bound (``bench/scale_lower_bound.py``): one sequential loop that creates the same
objects with the same client and writes the same status, with no bus and no database, on a
development cluster of its own. Kaiten's burst time is reported as a ratio to it.

Prints a table, writes bench/results/scale.json and bench/results/scale.png (latency percentiles
against N).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import config as aconfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from localdev import infra  # noqa: E402
from localdev.stack import _ready  # noqa: E402
from shared.kube import call_raw, follow  # noqa: E402
from tests.support.seeds import seed_copies  # noqa: E402
from tests.support.stack import Stack, running_stack  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GROUP, VERSION, PLURAL = "kaito.sh", "v1alpha1", "workspaces"
SERVICES = ("watcher", "planner", "provisioner", "deployer", "tuner")
IN_FLIGHT = 64
HOPS = ("observe", "plan", "provision", "deploy", "status")
INSTANT = {
    "KAITEN_PROVISIONER_SIMULATED_DELAY_S": "0",
    "KAITEN_CLUSTER_POD_READY_S": "0",
    # The services' own defaults, not the tests' quick ones (tests/support/stack.py FAST): a
    # launch heartbeat every 0.5 s and a takeover after 3 s are for kill tests, and under a
    # burst they turn every slow launch into a takeover.
    "KAITEN_PROVISIONER_LAUNCH_HEARTBEAT_S": "30",
    "KAITEN_PROVISIONER_RELAUNCH_AFTER_S": "120",
    "KAITEN_TUNING_PROGRESS_S": "15",
    "KAITEN_GRACEFUL_TIMEOUT_S": "10",
    "KAITEN_RETRY_BASE_S": "0.5",
    "KAITEN_RETRY_MAX_S": "60",
}


def succeeded(obj: Mapping[str, Any]) -> bool:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "WorkspaceSucceeded" and cond.get("status") == "True":
            return True
    return False


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


# --- driving the API -----------------------------------------------------------------------------


async def api_client(kubeconfig: Path) -> aclient.ApiClient:
    conf = aclient.Configuration()
    await aconfig.load_kube_config(config_file=str(kubeconfig), client_configuration=conf)
    conf.connection_pool_maxsize = IN_FLIGHT
    return aclient.ApiClient(conf)


async def roll_out(
    kubeconfig: Path,
    docs: Sequence[Mapping[str, Any]],
    *,
    rate: float | None,
    timeout_s: float,
) -> tuple[dict[str, float], dict[str, float]]:
    """Create ``docs`` (all at once, or ``rate`` per second) and watch until every one succeeded;
    (name -> when its create was sent, name -> when it was seen succeeded), in epoch seconds."""
    namespace = str(docs[0]["metadata"]["namespace"])
    created: dict[str, float] = {}
    seen: dict[str, float] = {}
    everyone = asyncio.Event()

    async def on_change(kind: str, obj: Mapping[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        fresh = kind in ("LISTED", "ADDED", "MODIFIED") and name and name not in seen
        if fresh and succeeded(obj):
            seen[str(name)] = time.time()
            if len(seen) == len(docs):
                everyone.set()

    async with await api_client(kubeconfig) as api:
        custom = aclient.CustomObjectsApi(api)
        watch = asyncio.create_task(
            follow(
                custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                on_change=on_change,
            )
        )
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def create(doc: Mapping[str, Any]) -> None:
            async with gate:
                created[str(doc["metadata"]["name"])] = time.time()
                await call_raw(
                    custom.create_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    dict(doc),
                )

        try:
            if rate is None:
                await asyncio.gather(*(create(d) for d in docs))
            else:
                start = time.monotonic()
                tasks = []
                for i, doc in enumerate(docs):
                    await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                    tasks.append(asyncio.create_task(create(doc)))
                await asyncio.gather(*tasks)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(everyone.wait(), timeout_s)
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
    return created, seen


async def phases(database_url: str, namespace: str, names: int, wait_s: float = 60) -> Any:
    """name -> phase -> epoch seconds, from the audit log once it holds every Workspace's
    ``succeeded`` phase (the audit sink may lag the status)."""
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            done = await conn.fetchval(
                "SELECT count(*) FROM watcher.audit_phases WHERE namespace=$1 AND phase=$2",
                namespace,
                "succeeded",
            )
            if done >= names or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        rows = await conn.fetch(
            "SELECT name, phase, at FROM watcher.audit_phases WHERE namespace=$1 AND generation=1",
            namespace,
        )
    finally:
        await conn.close()
    found: dict[str, dict[str, float]] = {}
    for row in rows:
        at: datetime = row["at"]
        found.setdefault(row["name"], {})[row["phase"]] = at.timestamp()
    return found


def hops(
    created: Mapping[str, float], seen: Mapping[str, float], marks: Mapping[str, Any]
) -> dict[str, list[float]]:
    """Seconds per hop per Workspace (only Workspaces with every mark)."""
    found: dict[str, list[float]] = {h: [] for h in HOPS}
    for name, done in seen.items():
        m = marks.get(name) or {}
        need = ("observed", "planned", "nodesReady", "podsReady")
        if name not in created or any(k not in m for k in need):
            continue
        points = [created[name], m["observed"], m["planned"], m["nodesReady"], m["podsReady"]]
        points.append(done)
        for hop, (a, b) in zip(HOPS, itertools.pairwise(points), strict=True):
            found[hop].append(b - a)
    return found


# --- processes -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak(pid: int) -> None:
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class Replica:
    service: str
    pid: int
    health_port: int
    process: subprocess.Popen[bytes] | None = None  # None: started by `kaiten up`


def first_replicas(stack: Stack) -> list[Replica]:
    found = []
    for name, (pid, _) in stack.processes().items():
        if name in SERVICES:
            env = environ_of(pid)
            found.append(Replica(name, pid, int(env["KAITEN_HEALTH_PORT"])))
    return found


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def second_replicas(stack: Stack, first: Sequence[Replica]) -> list[Replica]:
    """Start one more process of each service, with the first one's environment."""
    started = []
    for replica in first:
        env = environ_of(replica.pid)
        port = infra.free_port()
        env["KAITEN_HEALTH_PORT"] = str(port)
        if replica.service == "watcher":
            env["KAITEN_WEBHOOK_ENABLED"] = "false"  # one admission webhook is enough
        out = (stack.home / "logs" / f"{replica.service}-2.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{replica.service}"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(Replica(replica.service, proc.pid, port, proc))
    deadline = time.monotonic() + 60
    for replica in started:
        while not _ready(replica.health_port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the second {replica.service} did not become ready")
            time.sleep(0.2)
    return started


def handled(port: int) -> float:
    """Events this replica handled so far (every type and outcome)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("kaiten_events_handled_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class Usage:
    """What each process used during one run."""

    before: dict[str, float] = field(default_factory=dict)
    handled_before: dict[str, float] = field(default_factory=dict)


def measure_start(procs: Mapping[str, int], replicas: Sequence[Replica]) -> Usage:
    usage = Usage()
    for label, pid in procs.items():
        reset_peak(pid)
        usage.before[label] = cpu_seconds(pid)
    for r in replicas:
        usage.handled_before[f"{r.service}#{r.pid}"] = handled(r.health_port)
    return usage


def measure_end(
    usage: Usage, procs: Mapping[str, int], replicas: Sequence[Replica], workspaces: int
) -> dict[str, Any]:
    per_process = {
        label: {
            "cpu_s": round(cpu_seconds(pid) - usage.before[label], 2),
            "peak_rss_mb": round(peak_rss_mb(pid), 1),
        }
        for label, pid in procs.items()
    }
    shares: dict[str, list[float]] = {}
    for r in replicas:
        key = f"{r.service}#{r.pid}"
        shares.setdefault(r.service, []).append(handled(r.health_port) - usage.handled_before[key])
    split = {
        service: [round(n / sum(counts), 3) if sum(counts) else 0.0 for n in counts]
        for service, counts in shares.items()
    }
    kaiten_cpu = sum(v["cpu_s"] for k, v in per_process.items() if k.split("#")[0] in SERVICES)
    return {
        "processes": per_process,
        "event_share": split,
        "kaiten_cpu_ms_per_workspace": round(1000 * kaiten_cpu / workspaces, 2),
    }


def processes_of(stack: Stack, replicas: Sequence[Replica]) -> dict[str, int]:
    """label -> pid: each service replica (watcher#1, watcher#2, ...) and the cluster."""
    procs: dict[str, int] = {}
    for r in replicas:
        index = sum(1 for label in procs if label.startswith(f"{r.service}#")) + 1
        procs[f"{r.service}#{index}"] = r.pid
    for name, (pid, _) in stack.processes().items():
        if name not in SERVICES:
            procs[name] = pid
    return procs


# --- one scenario --------------------------------------------------------------------------------


@dataclass
class Row:
    replicas: int
    mode: str
    workspaces: int
    succeeded: int
    seconds: float
    per_s: float
    p50_s: float
    p95_s: float
    p99_s: float
    hop_p50_ms: dict[str, float]
    hop_p95_ms: dict[str, float]
    usage: dict[str, Any]
    lower_bound_s: float | None = None
    ratio: float | None = None


def scenario(
    stack: Stack,
    replicas: Sequence[Replica],
    mode: str,
    count: int,
    rate: float | None,
) -> Row:
    namespace = f"scale-r{len(replicas) // len(SERVICES)}-{mode}-{count}"
    stack.namespace(namespace)
    docs = seed_copies(namespace, count)
    procs = processes_of(stack, replicas)
    usage = measure_start(procs, replicas)
    timeout = 120 + count * 0.5
    created, seen = asyncio.run(
        roll_out(stack.home / "kubeconfig", docs, rate=rate, timeout_s=timeout)
    )
    measured = measure_end(usage, procs, replicas, count)
    marks = asyncio.run(phases(stack.database_url, namespace, len(seen)))
    latencies = [seen[n] - created[n] for n in seen if n in created]
    seconds = (max(seen.values()) - min(created.values())) if seen else float("nan")
    split = hops(created, seen, marks)
    return Row(
        replicas=len(replicas) // len(SERVICES),
        mode=mode,
        workspaces=count,
        succeeded=len(seen),
        seconds=round(seconds, 2),
        per_s=round(len(seen) / seconds, 1) if seen else 0.0,
        p50_s=round(percentile(latencies, 50), 3),
        p95_s=round(percentile(latencies, 95), 3),
        p99_s=round(percentile(latencies, 99), 3),
        hop_p50_ms={h: round(1000 * percentile(v, 50), 1) for h, v in split.items()},
        hop_p95_ms={h: round(1000 * percentile(v, 95), 1) for h, v in split.items()},
        usage=measured,
    )


@contextlib.contextmanager
def stack_with(replicas: int, home: Path) -> Iterator[tuple[Stack, list[Replica]]]:
    nats_url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    pg_url = os.environ.get("DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    with running_stack(home, nats_url, pg_url, start=True, **INSTANT) as stack:
        first = first_replicas(stack)
        extra = second_replicas(stack, first) if replicas == 2 else []  # noqa: PLR2004
        try:
            yield stack, first + extra
        finally:
            for r in extra:
                if r.process is not None:
                    r.process.send_signal(signal.SIGTERM)
            for r in extra:
                if r.process is not None:
                    try:
                        r.process.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        r.process.kill()


# --- the lower bound -----------------------------------------------------------------------------


def run_lower_bound(count: int, home: Path) -> float:
    """Seconds the sequential loop takes for ``count`` Workspaces on a cluster of its own."""
    port = infra.free_port()
    kubeconfig = home / f"lower-bound-{count}.kubeconfig"
    env = {**os.environ, **INSTANT}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "kaiten", "cluster", "--simulate"),
            *("--port", str(port), "--kubeconfig", str(kubeconfig)),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (kubeconfig.exists() and infra.tcp_open("127.0.0.1", port)):
            if time.monotonic() > deadline:
                raise RuntimeError("the lower bound's cluster did not start")
            time.sleep(0.1)
        from scale_lower_bound import lower_bound  # noqa: PLC0415 -- bench/ is on sys.path

        from localdev.stack import _install_crd  # noqa: PLC0415

        _install_crd(f"http://127.0.0.1:{port}")
        namespace = f"lower-{count}"
        body = json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/namespaces",
            data=body.encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310
        result = asyncio.run(lower_bound(kubeconfig, seed_copies(namespace, count)))
        return float(result.seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- output --------------------------------------------------------------------------------------


def table(rows: Sequence[Row]) -> str:
    head = (
        f"{'rep':>3} {'mode':<7} {'N':>5} {'ok':>5} {'secs':>7} {'ws/s':>6} {'p50':>6} "
        f"{'p95':>6} {'p99':>6} {'lower':>6} {'ratio':>5}  hop p50 ms (observe/plan/provision/"
        "deploy/status)  cpu ms/ws  max rss MB  event share"
    )
    lines = [head]
    for r in rows:
        procs = r.usage["processes"]
        rss = max(
            (v["peak_rss_mb"] for k, v in procs.items() if k.split("#")[0] in SERVICES),
            default=0,
        )
        share = ",".join(
            f"{s[:4]}:" + "/".join(f"{x:.0%}" for x in v)
            for s, v in r.usage["event_share"].items()
            if len(v) > 1
        )
        lower = f"{r.lower_bound_s:6.2f}" if r.lower_bound_s is not None else f"{'-':>6}"
        ratio = f"{r.ratio:5.2f}" if r.ratio is not None else f"{'-':>5}"
        hop = "/".join(f"{r.hop_p50_ms[h]:.0f}" for h in HOPS)
        lines.append(
            f"{r.replicas:>3} {r.mode:<7} {r.workspaces:>5} {r.succeeded:>5} {r.seconds:>7.2f} "
            f"{r.per_s:>6.1f} {r.p50_s:>6.2f} {r.p95_s:>6.2f} {r.p99_s:>6.2f} {lower} {ratio}  "
            f"{hop:<37} {r.usage['kaiten_cpu_ms_per_workspace']:>9.1f} {rss:>10.0f}  {share or '-'}"
        )
    return "\n".join(lines)


def plot(rows: Sequence[Row], path: Path) -> None:
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles: dict[int, str] = {1: "-", 2: "--"}
    for replicas in sorted({r.replicas for r in rows}):
        burst = sorted(
            (r for r in rows if r.mode == "burst" and r.replicas == replicas),
            key=lambda r: r.workspaces,
        )
        if not burst:
            continue
        xs = [r.workspaces for r in burst]
        for q, marker in (("p50_s", "o"), ("p95_s", "s"), ("p99_s", "^")):
            ax.plot(
                xs,
                [getattr(r, q) for r in burst],
                styles.get(replicas, ":"),
                marker=marker,
                label=f"{q[:3]}, {replicas} replica{'s' if replicas > 1 else ''}",
            )
    ax.set_xscale("log")
    ax.set_xlabel("Workspaces created at once (N)")
    ax.set_ylabel("create -> WorkspaceSucceeded (s)")
    ax.set_title("Kaiten burst latency, simulated nodes and pods")
    ax.grid(visible=True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", default="10,100,1000", help="Ns to create at once")
    parser.add_argument("--rate", type=float, default=20.0, help="steady Workspaces per second")
    parser.add_argument("--duration", type=float, default=60.0, help="steady seconds (0: none)")
    parser.add_argument("--replicas", default="1,2", help="replicas of each service to run")
    parser.add_argument("--no-lower-bound", action="store_true")
    parser.add_argument("--out", default="scale", help="name of the JSON and PNG under results")
    args = parser.parse_args(argv)
    bursts = [int(n) for n in args.burst.split(",") if n]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="kaiten-scale-") as tmp:
        for replicas in [int(n) for n in args.replicas.split(",") if n]:
            with stack_with(replicas, Path(tmp) / f"r{replicas}") as (stack, procs):
                for count in bursts:
                    rows.append(scenario(stack, procs, "burst", count, None))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
                if args.duration > 0:
                    steady = round(args.rate * args.duration)
                    rows.append(scenario(stack, procs, "steady", steady, args.rate))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
        if not args.no_lower_bound:
            bounds = {n: run_lower_bound(n, Path(tmp)) for n in bursts}
            for row in rows:
                if row.mode == "burst":
                    row.lower_bound_s = round(bounds[row.workspaces], 2)
                    row.ratio = round(row.seconds / bounds[row.workspaces], 2)
    print(table(rows))
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()} cpus={os.cpu_count()} {platform.node()}"
    (RESULTS / f"{args.out}.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "when": datetime.now().astimezone().isoformat(timespec="seconds"),
                "rows": [asdict(r) for r in rows],
            },
            indent=2,
        )
        + "\n"
    )
    plot(rows, RESULTS / f"{args.out}.png")
    print(f"wrote {RESULTS / args.out}.json and .png")
    ok = all(r.succeeded == r.workspaces for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
