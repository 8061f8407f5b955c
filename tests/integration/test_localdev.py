"""The local stack's infrastructure from wheels: the fallbacks used when a machine has no
PostgreSQL or NATS of its own (tests normally find the machine's servers first)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncpg

from localdev import infra


async def test_embedded_postgres_starts_on_a_free_port_serves_and_stops(tmp_path: Path) -> None:
    port = infra.free_port()
    datadir = tmp_path / "pgdata"
    url = infra.start_postgres(datadir, port, tmp_path / "postgres.log")
    try:
        db_url = await infra.create_database(url, "kaiten_embedded")
        conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            assert await conn.fetchval("SELECT current_database()") == "kaiten_embedded"
            assert (await conn.fetchval("SHOW server_version")).startswith("18.")
        finally:
            await conn.close()
    finally:
        infra.stop_postgres(datadir)
    assert not infra.tcp_open("127.0.0.1", port)
    assert (datadir / "PG_VERSION").is_file()  # kept: the next start finds its data


def test_nats_server_comes_from_the_wheel_not_the_system() -> None:
    """Tests and `make up` run the NATS version users run (2.15), not Debian's 2.9."""
    binary = infra.nats_server_binary()
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert binary.parent == Path(sys.executable).parent
    assert version.startswith("nats-server: v2.15.")
