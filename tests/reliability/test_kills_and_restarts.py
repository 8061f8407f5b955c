"""Convergence under kills and restarts, on the whole local stack (every service its own process):
SIGKILL each service in turn, then two at once, while 50 Workspaces roll out, and restart them
with `kaiten up`; restart NATS and PostgreSQL mid-rollout. Every Workspace succeeds, none is
lost, and nothing is created twice (one NodeClaim and one Deployment per Workspace)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localdev import infra
from tests.support.seeds import seed_copies
from tests.support.stack import Stack, running_stack

WORKSPACE_LABEL = "kaito.sh/workspace"
KILL_ORDER = ["planner", "provisioner", "deployer", "watcher", "tuner"]
TWO_AT_ONCE = ["provisioner", "deployer"]
# bench/reliability.py runs the suite larger: Workspaces (and waits) times this.
SCALE = max(1, int(os.environ.get("KAITEN_RELIABILITY_SCALE", "1")))


def kill(stack: Stack, *names: str) -> None:
    processes = stack.processes()
    for name in names:
        pid, _ = processes[name]
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(processes[n][0]) for n in names):
        assert time.monotonic() < deadline, f"{names} still alive 10 s after SIGKILL"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child of `kaiten up` may linger as a zombie until reaped.
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and stat.read_text().split(") ")[-1][:1] != "Z"


def succeeded(stack: Stack, namespace: str) -> set[str]:
    listing = json.loads(stack.kubectl("get", "workspaces", "-n", namespace, "-o", "json").stdout)
    done = set()
    for item in listing["items"]:
        conditions = {c["type"]: c for c in (item.get("status") or {}).get("conditions") or []}
        if (conditions.get("WorkspaceSucceeded") or {}).get("status") == "True":
            done.add(item["metadata"]["name"])
    return done


def owners(stack: Stack, kind: str, namespace: str | None) -> Counter[str]:
    """How many objects of ``kind`` each Workspace has (by its label)."""
    where = ["-n", namespace] if namespace else []
    listing = json.loads(
        stack.kubectl("get", kind, *where, "-l", WORKSPACE_LABEL, "-o", "json").stdout
    )
    return Counter(i["metadata"]["labels"][WORKSPACE_LABEL] for i in listing["items"])


def converged(stack: Stack, namespace: str, names: set[str], timeout: float, record: Any) -> None:
    deadline = time.monotonic() + timeout
    while (missing := names - succeeded(stack, namespace)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if missing:
        why = [
            stack.kaiten("why", f"{namespace}/{name}", check=False).stdout
            for name in sorted(missing)[:3]
        ]
        pytest.fail(
            f"{len(missing)} of {len(names)} Workspaces did not succeed within {timeout:g} s: "
            f"{sorted(missing)}\n" + "\n".join(why)
        )
    lost = names - set(json_names(stack, namespace))
    claims = owners(stack, "nodeclaims", None)
    deployments = owners(stack, "deployments", namespace)
    duplicates = sum(max(0, claims[n] - 1) + max(0, deployments[n] - 1) for n in names)
    record("workspaces_lost", len(lost))
    record("duplicates_created", duplicates)
    assert not lost, f"Workspaces lost: {sorted(lost)}"
    assert {n: claims[n] for n in names} == dict.fromkeys(names, 1), "NodeClaims per Workspace"
    assert {n: deployments[n] for n in names} == dict.fromkeys(names, 1), "Deployments"


def json_names(stack: Stack, namespace: str) -> list[str]:
    out = stack.kubectl("get", "workspaces", "-n", namespace, "-o", "name").stdout.split()
    return [n.split("/", 1)[1] for n in out]


# --- process kills -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, bundled_nats_url: str, postgres_server_url: str
) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("kills"), bundled_nats_url, postgres_server_url
    ) as running:
        yield running


def test_fifty_workspaces_converge_while_each_service_is_killed_and_restarted(
    stack: Stack, record_property: Any
) -> None:
    namespace = "kills"
    stack.namespace(namespace)
    docs = seed_copies(namespace, 50 * SCALE)
    half = len(docs) // 2
    stack.apply(*docs[:half])
    kills = 0
    for name in KILL_ORDER:
        kill(stack, name)
        kills += 1
        stack.up()  # restarts what is not running
    stack.apply(*docs[half:])
    kill(stack, *TWO_AT_ONCE)
    kills += len(TWO_AT_ONCE)
    stack.up()
    converged(stack, namespace, {d["metadata"]["name"] for d in docs}, 120 * SCALE, record_property)
    record_property("kills_survived", kills)
    record_property("workspaces", len(docs))


# --- infrastructure restarts -------------------------------------------------------------------


class Infra:
    """A NATS server and a PostgreSQL server of this test's own, restartable in place."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.nats_port = infra.free_port()
        self.pg_port = infra.free_port()
        self.nats: subprocess.Popen[bytes] | None = None
        self.pg_url = ""

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    def start_nats(self) -> None:
        self.nats = infra.start_nats(
            self.folder / "nats-store", self.nats_port, self.folder / "nats.log"
        )

    def stop_nats(self) -> None:
        if self.nats is not None:
            self.nats.terminate()
            self.nats.wait(timeout=10)
            self.nats = None

    def start_postgres(self) -> None:
        self.pg_url = infra.start_postgres(
            self.folder / "pgdata", self.pg_port, self.folder / "postgres.log"
        )

    def stop_postgres(self) -> None:
        infra.stop_postgres(self.folder / "pgdata")


@pytest.fixture(scope="module")
def own_infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    servers = Infra(tmp_path_factory.mktemp("infra"))
    servers.start_nats()
    servers.start_postgres()
    try:
        yield servers
    finally:
        servers.stop_nats()
        servers.stop_postgres()


def test_workspaces_converge_across_a_nats_restart_and_a_postgres_restart(
    tmp_path_factory: pytest.TempPathFactory, own_infra: Infra, record_property: Any
) -> None:
    namespace = "restarts"
    docs = seed_copies(namespace, 20 * SCALE)
    third = len(docs) // 3
    home = tmp_path_factory.mktemp("restarts")
    with running_stack(home, own_infra.nats_url, own_infra.pg_url) as stack:
        stack.namespace(namespace)
        stack.apply(*docs[:third])
        own_infra.stop_nats()
        time.sleep(1.0)
        own_infra.start_nats()
        stack.apply(*docs[third : 2 * third])
        own_infra.stop_postgres()
        time.sleep(1.0)
        own_infra.start_postgres()
        stack.apply(*docs[2 * third :])
        converged(
            stack, namespace, {d["metadata"]["name"] for d in docs}, 150 * SCALE, record_property
        )
        alive = stack.processes()
        assert all(_alive(pid) for pid, _ in alive.values()), "a service died and stayed dead"
    record_property("restarts_survived", 2)
