"""A real OCI registry for tests: Debian's ``docker-registry`` (distribution 2.8) serving on a
free port of 127.0.0.1 with htpasswd (bcrypt) auth and storage in a temporary folder, over plain
http or over TLS with a self-signed certificate. A machine without the binary fails the test
with what to install; it never skips."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests

from localdev.infra import free_port, wait_for_port

BINARY = "/usr/bin/docker-registry"
USERNAME, PASSWORD = "bob", "s3cret-pw"


@dataclass(frozen=True)
class RunningRegistry:
    """Where the registry listens and who may use it."""

    host: str  # 127.0.0.1:<port>
    username: str
    password: str
    ca_file: Path | None  # set when it serves TLS
    log: Path

    @property
    def insecure(self) -> bool:
        return self.ca_file is None

    @property
    def url(self) -> str:
        return f"{'http' if self.insecure else 'https'}://{self.host}"

    def get(self, path: str, **headers: str) -> requests.Response:
        """``GET <url><path>`` on the registry's HTTP API with basic auth."""
        verify: bool | str = str(self.ca_file) if self.ca_file else True
        reply = requests.get(
            f"{self.url}{path}",
            auth=(self.username, self.password),
            headers=headers,
            verify=verify,
            timeout=10,
        )
        reply.raise_for_status()
        return reply

    def docker_config(self, path: Path, password: str | None = None) -> Path:
        """A Docker config file with this registry's (or the given) credentials."""
        secret = f"{self.username}:{password or self.password}".encode()
        auths = {self.host: {"auth": base64.b64encode(secret).decode()}}
        path.write_text(json.dumps({"auths": auths}), encoding="utf-8")
        return path


def _binary() -> str:
    found = shutil.which("docker-registry") or (BINARY if Path(BINARY).is_file() else None)
    if found is None:
        pytest.fail(
            "no docker-registry binary: install Debian's docker-registry "
            "(apt-get install docker-registry)"
        )
    return found


def _config(workdir: Path, port: int, htpasswd: Path, tls: bool) -> dict[str, Any]:
    http: dict[str, Any] = {"addr": f"127.0.0.1:{port}", "secret": "kaiten-tests"}
    if tls:
        from services.watcher.webhook import ensure_certificate  # noqa: PLC0415

        crt, key, bundle = ensure_certificate(workdir / "certs", "127.0.0.1")
        (workdir / "certs" / "bundle.pem").write_bytes(bundle)
        http["tls"] = {"certificate": str(crt), "key": str(key)}
    return {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")}},
        "http": http,
        "auth": {"htpasswd": {"realm": "kaiten-tests", "path": str(htpasswd)}},
    }


@contextmanager
def running_registry(
    workdir: Path, *, tls: bool = False, username: str = USERNAME, password: str = PASSWORD
) -> Iterator[RunningRegistry]:
    """Starts ``docker-registry serve`` and stops it on exit."""
    binary = _binary()
    workdir.mkdir(parents=True, exist_ok=True)
    htpasswd = workdir / "htpasswd"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"{username}:{hashed}\n", encoding="utf-8")
    port = free_port()
    config = workdir / "config.yml"  # JSON is YAML
    config.write_text(json.dumps(_config(workdir, port, htpasswd, tls)), encoding="utf-8")
    log = workdir / "registry.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=sink, stderr=sink)
    try:
        try:
            wait_for_port("127.0.0.1", port, 15, "docker-registry")
        except TimeoutError:
            pytest.fail(f"docker-registry did not start:\n{log.read_text(errors='replace')}")
        ca_file = workdir / "certs" / "bundle.pem" if tls else None
        yield RunningRegistry(f"127.0.0.1:{port}", username, password, ca_file, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
