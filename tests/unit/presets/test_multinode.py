"""``presets.inference.multinode``: which pod is the Ray head and serves, which joins it, the health
probe against a local HTTP server, and the exits of ``run`` without a server command or without
Ray. No Ray is started: the commands that would run it are replaced where a test gets that far."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import pytest

from presets.inference import multinode
from presets.inference.multinode import EXIT_UNAVAILABLE, Role, main, role

LEADER = "workspace-phi-3-0.workspace-phi-3-headless.team-a.svc.cluster.local"
SERVE = ("python3", "-m", "presets.inference.vllm_launcher", "--pipeline-parallel-size=2")


# --- role -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [6379, 6380], ids=["default-port", "other-port"])
def test_pod_zero_is_the_head_and_serves(port: int) -> None:
    plan = role("0", LEADER, port, list(SERVE))

    assert plan == Role(
        leader=True, start=("ray", "start", "--head", f"--port={port}"), serve=SERVE
    )


@pytest.mark.parametrize("index", ["1", "2", "15"], ids=["pod-1", "pod-2", "pod-15"])
def test_other_pods_join_the_head_and_serve_nothing(index: str) -> None:
    plan = role(index, LEADER, 6379, list(SERVE))

    assert plan == Role(
        leader=False,
        start=("ray", "start", f"--address={LEADER}:6379", "--block"),
        serve=(),
    )


def test_role_copies_the_server_argv() -> None:
    serve = list(SERVE)
    plan = role("0", LEADER, 6379, serve)
    serve.append("--changed")

    assert plan.serve == SERVE


# --- health ---------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = {"/health": 200, "/sick": 503, "/empty": 204}.get(self.path, 404)
        body = {200: b"ok", 204: b""}.get(status, b"unavailable")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_health_is_0_when_the_server_answers_200(server_url: str) -> None:
    assert main(["health", f"{server_url}/health"]) == 0


@pytest.mark.parametrize("path", ["/sick", "/missing"], ids=["503", "404"])
def test_health_is_1_when_the_server_answers_an_error(
    server_url: str, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["health", f"{server_url}{path}"]) == 1
    assert path in capsys.readouterr().err


def test_health_is_1_when_the_server_answers_another_success(server_url: str) -> None:
    assert main(["health", f"{server_url}/empty"]) == 1


def test_health_is_1_when_the_connection_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_unused_port()}/health"

    assert main(["health", url, "--timeout", "2"]) == 1
    assert url in capsys.readouterr().err


# --- run ------------------------------------------------------------------------------------------


def _never(*args: Any, **kwargs: Any) -> NoReturn:
    raise AssertionError(f"nothing may be started here: {args}")


@pytest.fixture
def nothing_started(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("presets.inference.multinode.os.execvp", _never)
    monkeypatch.setattr("presets.inference.multinode.subprocess.run", _never)
    monkeypatch.setattr(multinode, "alive_nodes", _never)


@pytest.fixture
def no_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.mark.usefixtures("nothing_started")
@pytest.mark.parametrize("rest", [[], ["--"]], ids=["nothing", "bare-separator"])
def test_run_without_a_server_command_is_a_usage_error(
    rest: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--leader", "x", "--nodes", "2", *rest])

    assert exited.value.code == 2
    assert "give the server's command after --" in capsys.readouterr().err


@pytest.mark.usefixtures("nothing_started", "no_ray")
@pytest.mark.parametrize("index", ["0", "1"], ids=["leader", "worker"])
def test_run_without_ray_exits_3_with_a_message(
    index: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POD_INDEX", index)

    code = main(["run", "--leader", "x", "--nodes", "2", "--", "python3", "-m", "x"])

    assert code == EXIT_UNAVAILABLE == 3
    assert "ray" in capsys.readouterr().err


class _Exec(Exception):  # noqa: N818 -- stands for the exec that replaces the process
    """Raised where ``os.execvp`` would replace the process."""


@pytest.fixture
def fake_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``ray`` on PATH that is never run (the calls that would run it are replaced)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ray = bin_dir / "ray"
    ray.write_text("#!/bin/sh\nexit 99\n")
    ray.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


@pytest.mark.usefixtures("fake_ray")
def test_run_on_a_worker_execs_the_join(monkeypatch: pytest.MonkeyPatch) -> None:
    execs: list[tuple[str, list[str]]] = []

    def execvp(file: str, argv: list[str]) -> NoReturn:
        execs.append((file, argv))
        raise _Exec

    monkeypatch.setattr("presets.inference.multinode.os.execvp", execvp)
    monkeypatch.setattr("presets.inference.multinode.subprocess.run", _never)
    monkeypatch.setattr(multinode, "alive_nodes", _never)
    monkeypatch.setenv("WORKER_INDEX", "1")
    monkeypatch.setenv("POD_INDEX", "0")  # not the variable named: this pod is a worker

    with pytest.raises(_Exec):
        main(
            [
                *("run", "--pod-index-env", "WORKER_INDEX", "--leader", LEADER, "--nodes", "2"),
                *("--ray-port", "6380", "--", *SERVE),
            ]
        )

    assert execs == [("ray", ["ray", "start", f"--address={LEADER}:6380", "--block"])]


@pytest.mark.usefixtures("fake_ray")
@pytest.mark.parametrize("separator", [["--"], []], ids=["with-separator", "without"])
def test_run_on_the_leader_waits_for_every_node_then_serves(
    separator: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[list[str]] = []
    polled: list[str] = []
    execs: list[tuple[str, list[str]]] = []
    joined = iter([1, 2, 3])

    def run(argv: list[str], *, check: bool) -> None:
        assert check
        started.append(argv)

    def alive_nodes(address: str) -> int:
        polled.append(address)
        return next(joined)

    def execvp(file: str, argv: list[str]) -> NoReturn:
        execs.append((file, argv))
        raise _Exec

    monkeypatch.setattr("presets.inference.multinode.subprocess.run", run)
    monkeypatch.setattr(multinode, "alive_nodes", alive_nodes)
    monkeypatch.setattr("presets.inference.multinode.os.execvp", execvp)
    monkeypatch.setattr(multinode, "JOIN_POLL_S", 0.0)
    monkeypatch.setenv("POD_INDEX", "0")

    with pytest.raises(_Exec):
        main(["run", "--leader", LEADER, "--nodes", "2", *separator, *SERVE])

    assert started == [["ray", "start", "--head", "--port=6379"]]
    assert polled == ["127.0.0.1:6379", "127.0.0.1:6379"]
    assert execs == [(SERVE[0], list(SERVE))]
