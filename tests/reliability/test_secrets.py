"""Secrets never leave the cluster's Secrets (issue 14, item 5): a full run on the whole local
stack with secrets configured -- a model access token (``presetOptions.modelAccessSecret``), a
docker-registry Secret with a password used to pull adapters and tuning data and to push the
tuning output, Azure client credentials and a database password in the services' environment --
then every event on the stream, every log line and every database row is scanned for the secret
values (as they are, base64-encoded, and inside any base64 found there) and none is found.

The scan cannot pass vacuously: it must have read many events, log lines and rows, and the
Secrets' *names* must be on the stream (secrets travel by name, ``shared/events.py``)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import nats
import pytest

from localdev import infra
from shared.settings import async_database_url
from tests.support.stack import Stack, run_async, running_stack, wait_until

NAMESPACE = "secrets-scan"
# Schemas of the stack's database that are PostgreSQL's own, not Kaiten's.
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
KAITEN_SCHEMAS = ("watcher", "planner", "provisioner", "deployer", "tuner")
# A run of base64 (either alphabet) long enough to hide a secret.
BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{16,}={0,2}")


def _b64(value: bytes) -> bytes:
    return base64.b64encode(value)


@dataclass(frozen=True)
class Credentials:
    """The secret values of one run, unique and recognisable (``leakcheck``)."""

    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    hf_token: str = field(default_factory=lambda: f"hf_leakcheck{secrets.token_hex(16)}")
    registry_user: str = field(default_factory=lambda: f"leakcheck-user-{secrets.token_hex(8)}")
    registry_password: str = field(default_factory=lambda: f"leakcheck-pw-{secrets.token_hex(16)}")
    azure_client_secret: str = field(
        default_factory=lambda: f"leakcheck-azure-{secrets.token_hex(16)}"
    )
    database_password: str = field(default_factory=lambda: f"leakcheck-db-{secrets.token_hex(16)}")
    registry_host: str = "registry.leakcheck.example:5000"

    @property
    def hf_secret(self) -> str:
        return f"hf-token-{self.tag}"

    @property
    def registry_secret(self) -> str:
        return f"registry-creds-{self.tag}"

    @property
    def auth(self) -> bytes:
        """The ``auth`` of a Docker config: base64 of ``user:password``."""
        return _b64(f"{self.registry_user}:{self.registry_password}".encode())

    @property
    def docker_config(self) -> bytes:
        entry = {
            "username": self.registry_user,
            "password": self.registry_password,
            "auth": self.auth.decode(),
        }
        return json.dumps({"auths": {self.registry_host: entry}}).encode()

    def values(self) -> dict[str, bytes]:
        """What must never be seen, by what it is."""
        return {
            "model access token": self.hf_token.encode(),
            "registry password": self.registry_password.encode(),
            "registry user:password": f"{self.registry_user}:{self.registry_password}".encode(),
            "registry auth": self.auth,
            "docker config": self.docker_config,
            "Azure client secret": self.azure_client_secret.encode(),
            "database password": self.database_password.encode(),
        }

    def needles(self) -> dict[str, bytes]:
        """Every value, also base64-encoded (both alphabets, without padding)."""
        out: dict[str, bytes] = {}
        for what, value in self.values().items():
            out[what] = value
            out[f"{what} (base64)"] = _b64(value).rstrip(b"=")
            out[f"{what} (urlsafe base64)"] = base64.urlsafe_b64encode(value).rstrip(b"=")
        return out

    def secret_manifests(self) -> list[dict[str, Any]]:
        return [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": self.hf_secret, "namespace": NAMESPACE},
                "data": {"HF_TOKEN": _b64(self.hf_token.encode()).decode()},
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": self.registry_secret, "namespace": NAMESPACE},
                "data": {".dockerconfigjson": _b64(self.docker_config).decode()},
            },
        ]

    def workspaces(self) -> dict[str, dict[str, Any]]:
        """name -> manifest: a gated model with its access token, a model with an adapter from
        the private registry, and a tuning job reading data from and pushing to it."""
        image = f"{self.registry_host}/leakcheck"
        pull = [self.registry_secret]
        return {
            "gated-llama": _workspace(
                "gated-llama",
                "Standard_NC24ads_A100_v4",
                inference={
                    "preset": {
                        "name": "llama-3.1-8b-instruct",
                        "presetOptions": {
                            "modelAccessSecret": self.hf_secret,
                            "imagePullSecrets": pull,
                        },
                    }
                },
            ),
            "phi-adapter": _workspace(
                "phi-adapter",
                "Standard_NC6s_v3",
                inference={
                    "preset": {"name": "phi-3-mini-128k-instruct"},
                    "adapters": [
                        {
                            "source": {
                                "name": "leak-adapter",
                                "image": f"{image}/adapter:0.0.1",
                                "imagePullSecrets": pull,
                            },
                            "strength": "1.0",
                        }
                    ],
                },
            ),
            "phi-tuning": _workspace(
                "phi-tuning",
                "Standard_NC6s_v3",
                tuning={
                    "preset": {"name": "phi-3-mini-4k-instruct"},
                    "method": "qlora",
                    "input": {"image": f"{image}/data:1", "imagePullSecrets": pull},
                    "output": {
                        "image": f"{image}/tuned:0.0.1",
                        "imagePushSecret": self.registry_secret,
                    },
                },
            ),
        }


def _workspace(name: str, instance_type: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "resource": {
            "instanceType": instance_type,
            "labelSelector": {"matchLabels": {"apps": f"leakcheck-{name}"}},
        },
        **spec,
    }


def asyncpg_dsn(url: str) -> str:
    return async_database_url(url).replace("postgresql+asyncpg://", "postgresql://", 1)


def with_password(server_url: str, password: str) -> str | None:
    """``server_url`` with ``password``, when it has none and the server lets that in (trust
    authentication ignores it); else None, and the run goes without a database password."""
    parts = urlsplit(server_url)
    if parts.password is not None or not parts.username:
        return None
    netloc = f"{parts.username}:{password}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    url = urlunsplit(parts._replace(netloc=netloc))

    async def accepted() -> bool:
        try:
            dsn = asyncpg_dsn(infra.with_database(url, "postgres"))
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    return url if run_async(accepted()) else None


@dataclass
class Run:
    stack: Stack
    credentials: Credentials
    database_password_used: bool


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, bundled_nats_url: str, postgres_server_url: str
) -> Iterator[Run]:
    credentials = Credentials()
    server_url = with_password(postgres_server_url, credentials.database_password)
    with running_stack(
        tmp_path_factory.mktemp("secrets"),
        bundled_nats_url,
        server_url or postgres_server_url,
        # Harmless beside the simulated backend, which never asks Azure: the variables the
        # Azure SDK's credential chain reads, as a real deployment sets them.
        AZURE_CLIENT_ID=f"leakcheck-client-{credentials.tag}",
        AZURE_TENANT_ID=f"leakcheck-tenant-{credentials.tag}",
        AZURE_CLIENT_SECRET=credentials.azure_client_secret,
    ) as stack:
        yield Run(stack, credentials, server_url is not None)


def full_run(stack: Stack, credentials: Credentials) -> list[str]:
    """Apply the Secrets and Workspaces, wait for every Workspace to succeed, delete one and
    wait for its cleanup; returns what the CLI printed about them (scanned too)."""
    stack.namespace(NAMESPACE)
    workspaces = credentials.workspaces()
    stack.apply(*credentials.secret_manifests(), *workspaces.values())
    names = [f"workspace/{name}" for name in workspaces]
    stack.kubectl(
        "wait",
        "--for=condition=WorkspaceSucceeded",
        *names,
        "-n",
        NAMESPACE,
        "--timeout=60s",
        timeout=70,
    )
    printed = [stack.kubectl("get", "workspaces", "-n", NAMESPACE, "-o", "yaml").stdout]
    printed += [stack.kaiten("why", f"{NAMESPACE}/{n}", check=False).stdout for n in workspaces]
    deleted = "phi-adapter"
    stack.kubectl(
        "delete", f"workspace/{deleted}", "-n", NAMESPACE, "--wait", "--timeout=60s", timeout=70
    )

    def cleaned_up() -> bool:
        selector = f"kaito.sh/workspace={deleted}"
        kinds = "deployments,statefulsets,services,configmaps,jobs,pods"
        own = stack.kubectl("get", kinds, "-n", NAMESPACE, "-l", selector, "-o", "name").stdout
        nodes = stack.kubectl("get", "nodeclaims,nodes", "-l", selector, "-o", "name").stdout
        return not (own + nodes).strip()

    wait_until(cleaned_up, timeout=30, what=f"every object of {deleted} gone")
    quiet_stream(stack)
    printed.append(stack.kaiten("events", "-n", NAMESPACE, "-o", "json").stdout)
    return printed


def quiet_stream(stack: Stack, quiet_s: float = 1.5, timeout: float = 20) -> None:
    """Until the stream has taken no new event for ``quiet_s``: the run's last events are in."""
    deadline = time.monotonic() + timeout
    last, since = stack.stream_messages(), time.monotonic()
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.25)
        now = stack.stream_messages()
        if now != last:
            last, since = now, time.monotonic()


def stream_events(stack: Stack) -> list[bytes]:
    """Every message of the stack's stream, oldest first: headers and body."""

    async def read() -> list[bytes]:
        nc = await nats.connect(stack.nats_url)
        try:
            js = nc.jetstream()
            expected = (await js.stream_info(stack.stream)).state.messages
            subject = f"{stack.env['KAITEN_SUBJECT_PREFIX']}.>"
            sub = await js.subscribe(subject, stream=stack.stream, ordered_consumer=True)
            out: list[bytes] = []
            try:
                while len(out) < expected:
                    msg = await sub.next_msg(timeout=5)
                    headers = json.dumps(msg.headers or {}).encode()
                    out.append(msg.subject.encode() + b"\n" + headers + b"\n" + msg.data)
            finally:
                await sub.unsubscribe()
            return out
        finally:
            await nc.close()

    return run_async(read())


def log_lines(stack: Stack) -> list[bytes]:
    """Every line of every file under the stack's logs folder."""
    folder = stack.home / "logs"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert files, f"no logs under {folder}"
    return [line for path in files for line in path.read_bytes().splitlines()]


def database_rows(database_url: str) -> dict[str, list[bytes]]:
    """``schema.table`` -> every row as text, for every table outside PostgreSQL's schemas."""

    async def read() -> dict[str, list[bytes]]:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            tables = await conn.fetch(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_type = 'BASE TABLE' AND NOT (table_schema = ANY($1::text[])) "
                "ORDER BY 1, 2",
                list(SYSTEM_SCHEMAS),
            )
            out: dict[str, list[bytes]] = {}
            for schema, table in tables:
                # Names from information_schema, quoted: not user input.
                query = f'SELECT t::text AS row FROM "{schema}"."{table}" AS t'  # noqa: S608
                rows = await conn.fetch(query)
                out[f"{schema}.{table}"] = [str(r["row"]).encode() for r in rows]
            return out
        finally:
            await conn.close()

    return run_async(read())


def unwrapped(data: bytes, depth: int = 2) -> bytes:
    """``data`` followed by what every base64 run in it decodes to (``depth`` levels deep: a
    Docker config inside a Secret's data holds base64 of its own)."""
    found = [data]
    if depth:
        for run in set(BASE64_RUN.findall(data)):
            padded = run.rstrip(b"=") + b"=" * (-len(run.rstrip(b"=")) % 4)
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                with contextlib.suppress(binascii.Error, ValueError):
                    found.append(unwrapped(decode(padded), depth - 1))
    return b"\n".join(found)


def leaks(where: str, items: list[bytes], needles: dict[str, bytes]) -> list[str]:
    """Where each needle shows in ``items`` (each also searched with its base64 decoded)."""
    found = []
    for i, item in enumerate(items):
        text = unwrapped(item)
        for what, needle in needles.items():
            if needle in text:
                found.append(f"{what} in {where} #{i}: {item[:300]!r}")
    return found


def test_no_secret_value_is_in_any_event_log_line_or_row(run: Run) -> None:
    stack, credentials = run.stack, run.credentials
    printed = full_run(stack, credentials)
    needles = credentials.needles()

    events = stream_events(stack)
    lines = log_lines(stack)
    tables = database_rows(stack.database_url)
    rows = [row for table in tables.values() for row in table]
    cli = [line.encode() for text in printed for line in text.splitlines()]

    found = (
        leaks("event", events, needles)
        + leaks("log line", lines, needles)
        + [f for name, table in tables.items() for f in leaks(f"row of {name}", table, needles)]
        + leaks("CLI output line", cli, needles)
    )
    assert not found, "secret values leaked:\n" + "\n".join(found[:40])

    # The scan saw a whole run: many events, lines and rows, in every Kaiten schema.
    counts = {"events": len(events), "log lines": len(lines), "rows": len(rows)}
    logs = sorted(p.name for p in (stack.home / "logs").rglob("*") if p.is_file())
    print(f"scanned {counts}: {len(tables)} tables, {len(cli)} CLI lines, logs {logs}")
    print(f"database password in DATABASE_URL: {run.database_password_used}")
    print({name: len(table) for name, table in tables.items()})
    assert len(events) >= 30, counts
    assert len(lines) >= 50, counts
    assert len(rows) >= 30, counts
    schemas = {name.split(".")[0] for name in tables}
    assert set(KAITEN_SCHEMAS) <= schemas, sorted(tables)
    assert tables.get("watcher.audit_events"), sorted(tables)
    # Secrets are referred to by name: the names are on the stream, so it was searched where
    # the values would have been.
    stream = b"\n".join(events)
    for name in (credentials.hf_secret, credentials.registry_secret):
        assert name.encode() in stream, f"{name} is on no event"
    # The values were really given to the stack.
    assert stack.env["AZURE_CLIENT_SECRET"] == credentials.azure_client_secret
    if run.database_password_used:
        assert credentials.database_password in stack.env["DATABASE_URL"]
    applied = stack.kubectl(
        "get", "secret", credentials.hf_secret, "-n", NAMESPACE, "-o", "jsonpath={.data.HF_TOKEN}"
    ).stdout
    assert base64.b64decode(applied).decode() == credentials.hf_token


def test_the_scan_would_find_each_value() -> None:
    """The scan finds each value where it would leak: as is, base64-encoded, in a Docker
    config inside base64 (a Secret's data), and in a database URL."""
    credentials = Credentials()
    needles = credentials.needles()
    secret_data = json.dumps(credentials.secret_manifests()).encode()
    found = leaks("Secret manifests", [secret_data], needles)
    for what in ("model access token", "registry password", "registry auth", "docker config"):
        assert any(f.startswith(f"{what} in") for f in found), (what, found)
    for value in credentials.values().values():
        assert leaks("line", [b"x=" + _b64(value) + b" y"], needles)
    url = f"postgresql://u:{credentials.database_password}@h/db".encode()
    assert leaks("line", [url], needles)
