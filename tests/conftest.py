"""Session-wide real infrastructure: NATS JetStream and a fresh PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.js.errors import NotFoundError

from kaiten.migrate import upgrade_all
from localdev import infra
from shared.settings import Settings
from tests.support.infra import postgres_server, private_nats

NATS_SERVERS = ["bundled"] + (["external"] if os.environ.get("NATS_URL") else [])


@pytest.fixture(scope="session")
def bundled_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with private_nats(tmp_path_factory.mktemp("nats")) as url:
        yield url


@pytest.fixture(scope="session", params=NATS_SERVERS)
def nats_url(request: pytest.FixtureRequest) -> str:
    """Each NATS test runs on the bundled server, and also on NATS_URL's server when set."""
    if request.param == "external":
        return os.environ["NATS_URL"]
    return str(request.getfixturevalue("bundled_nats_url"))


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with postgres_server(tmp_path_factory.mktemp("postgres")) as url:
        yield url


@pytest.fixture(scope="session")
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A database of this test session's own, with every service's migrations applied."""
    name = f"kaiten_test_{uuid.uuid4().hex[:12]}"
    url = await infra.create_database(postgres_server_url, name)
    await asyncio.to_thread(upgrade_all, url)
    yield url
    await infra.drop_database(postgres_server_url, name)


@pytest.fixture
async def settings(nats_url: str, database_url: str) -> AsyncIterator[Settings]:
    """Settings with a stream and subject prefix of this test's own, removed afterwards."""
    tag = uuid.uuid4().hex[:10]
    s = Settings(
        nats_url=nats_url,
        database_url=database_url,
        stream=f"KAITEN_TEST_{tag}",
        subject_prefix=f"kaitentest{tag}",
        retry_base_s=0.1,
        retry_max_s=0.5,
        max_deliver=3,
        ack_wait_s=5.0,
        graceful_timeout_s=10.0,
        health_port=0,
    )
    yield s
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().delete_stream(s.stream)
    except NotFoundError:
        pass
    finally:
        await nc.close()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
