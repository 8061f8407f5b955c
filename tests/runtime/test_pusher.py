"""The tuning job's pusher against a real OCI registry (Debian's docker-registry with htpasswd
auth) and a fake process table: it pushes once the completion marker is there, gives up when the
trainer exits without it or never starts, and reports the digest (or why not) on its streams and
in the termination log, never a password."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from presets.layout import COMPLETION_MARKER
from presets.oci import Credentials, pull_directory
from presets.tuning.pusher import (
    PushError,
    main,
    own_lineage,
    trainer_processes,
    wait_for_completion,
)
from tests.support.registry import RunningRegistry, running_registry

PRESET = "phi-3-mini-4k-instruct"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TRAINER_PID = 4242
TRAINER = ["python3", "-m", "presets.tuning.cli", "--config", "/mnt/config/training_config.yaml"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


def _adapter(results: Path) -> dict[str, bytes]:
    """Writes an adapter into ``results`` and returns its files."""
    results.mkdir(parents=True, exist_ok=True)
    files = {
        "adapter_config.json": json.dumps({"peft_type": "LORA", "r": 8}).encode(),
        "adapter_model.safetensors": os.urandom(50_000),
    }
    for name, data in files.items():
        (results / name).write_bytes(data)
    return files


def _finish(results: Path) -> dict[str, bytes]:
    """What the trainer does at the end: the adapter, then the marker."""
    files = _adapter(results)
    (results / COMPLETION_MARKER).write_text("done\n", encoding="utf-8")
    return files


def _process(proc: Path, pid: int, argv: list[str]) -> None:
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    (proc / str(pid) / "cmdline").write_bytes(b"".join(f"{a}\0".encode() for a in argv))


def _fake_proc(tmp_path: Path, *, trainer: bool) -> Path:
    """A process table with the pod's pause process, a zombie and maybe the trainer."""
    proc = tmp_path / "proc"
    _process(proc, 1, ["/pause"])
    _process(proc, 77, [])  # a zombie has an empty command line
    (proc / "self").mkdir()
    if trainer:
        _process(proc, TRAINER_PID, TRAINER)
    return proc


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    log: str | None


def _push(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], results: Path, image: str, *flags: str
) -> Run:
    log = tmp_path / "termination-log"
    argv = ["--results", str(results), "--image", image, "--termination-log", str(log)]
    code = main([*argv, "--poll", "0.05", "--retry-delay", "0", *flags])
    captured = capsys.readouterr()
    text = log.read_text(encoding="utf-8") if log.exists() else None
    return Run(code, captured.out, captured.err, text)


def _connection(reg: RunningRegistry, tmp_path: Path, proc: Path) -> tuple[str, ...]:
    config = reg.docker_config(tmp_path / "docker-config.json")
    return ("--insecure", "--docker-config", str(config), "--proc", str(proc))


def _pulled(reg: RunningRegistry, image: str, dest: Path) -> dict[str, bytes]:
    credentials = Credentials(reg.username, reg.password)
    pull_directory(image, dest, credentials=credentials, insecure=True)
    return {p.name: p.read_bytes() for p in dest.iterdir()}


def _pushed(run: Run, image: str) -> str:
    """Checks a successful run and returns the digest it reported."""
    assert run.code == 0, run.err
    assert run.log is not None
    assert run.log.startswith(f"pushed {image}@sha256:")
    assert run.out.splitlines()[-1] == run.log
    return run.log.rpartition("@")[2]


def _failed(run: Run, message: str) -> None:
    assert run.code == 1
    assert run.err.splitlines()[-1] == message
    assert run.log == message


# ---------------------------------------------------------------- pushing


def test_pushes_when_the_marker_is_already_there(
    registry: RunningRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    files = _finish(results)
    (results / "checkpoint-1").mkdir()  # other output stays behind
    (results / "progress.json").write_text("{}", encoding="utf-8")
    image = f"{registry.host}/adapters/pusher-ready:v1"
    proc = _fake_proc(tmp_path, trainer=False)

    run = _push(
        tmp_path, capsys, results, image, "--preset", PRESET, *_connection(registry, tmp_path, proc)
    )

    digest = _pushed(run, image)
    assert _pulled(registry, image, tmp_path / "pulled") == files
    reply = registry.get("/v2/adapters/pusher-ready/manifests/v1", Accept=OCI_MANIFEST)
    assert reply.headers["Docker-Content-Digest"] == digest
    assert reply.json()["annotations"]["sh.kaito.model.name"] == PRESET
    assert registry.password not in run.out + run.err


def test_pushes_once_the_trainer_writes_the_marker(
    registry: RunningRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    proc = _fake_proc(tmp_path, trainer=True)
    image = f"{registry.host}/adapters/pusher-later:v1"
    finished: dict[str, bytes] = {}
    timer = threading.Timer(0.3, lambda: finished.update(_finish(results)))
    timer.start()
    try:
        run = _push(tmp_path, capsys, results, image, *_connection(registry, tmp_path, proc))
    finally:
        timer.join()

    _pushed(run, image)
    assert f"the trainer is running (pid {TRAINER_PID})" in run.out
    assert _pulled(registry, image, tmp_path / "pulled") == finished
    assert (proc / str(TRAINER_PID)).is_dir()  # pushed while the trainer still ran


def test_wrong_password(
    registry: RunningRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    _finish(results)
    config = registry.docker_config(tmp_path / "wrong.json", password="Wr0ng-Passw0rd")
    image = f"{registry.host}/adapters/pusher-denied:v1"
    flags = ("--insecure", "--docker-config", str(config), "--attempts", "2")

    run = _push(tmp_path, capsys, results, image, *flags)

    _failed(
        run,
        f"pushing {image} failed after 2 attempts: registry {registry.host} rejected the "
        "credentials for user bob (401 Unauthorized)",
    )
    assert "push attempt 1 of 2 failed" in run.err
    for text in (run.out, run.err, run.log or ""):
        assert "Wr0ng-Passw0rd" not in text
        assert registry.password not in text


def test_first_docker_config_with_the_registry_wins(
    registry: RunningRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    _finish(results)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"auths": {"elsewhere.example:5000": {"auth": ""}}}), "utf-8")
    good = registry.docker_config(tmp_path / "good.json")
    late = registry.docker_config(tmp_path / "late.json", password="not-used")
    image = f"{registry.host}/adapters/pusher-configs:v1"
    flags = ["--insecure"] + [f"--docker-config={path}" for path in (other, good, late)]

    _pushed(_push(tmp_path, capsys, results, image, *flags), image)


def test_marker_without_adapter_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / COMPLETION_MARKER).write_text("done\n", encoding="utf-8")
    (results / "adapter_config.json").write_text("{}", encoding="utf-8")
    image = "127.0.0.1:1/adapters/pusher-empty:v1"

    run = _push(tmp_path, capsys, results, image, "--insecure")

    _failed(
        run,
        f"pushing {image} failed: {results} is not a LoRA adapter: "
        "adapter_model.safetensors is missing",
    )
    assert "push attempt" not in run.err  # refused at once, not retried


# ---------------------------------------------------------------- waiting for the trainer


def test_trainer_exits_without_the_marker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    proc = _fake_proc(tmp_path, trainer=True)
    timer = threading.Timer(0.3, shutil.rmtree, args=(proc / str(TRAINER_PID),))
    timer.start()
    try:
        run = _push(
            tmp_path, capsys, results, "127.0.0.1:1/a/b:v1", "--insecure", "--proc", str(proc)
        )
    finally:
        timer.join()

    _failed(run, f"the trainer exited without writing {COMPLETION_MARKER}: nothing to push")
    assert f"the trainer is running (pid {TRAINER_PID})" in run.out


def test_no_trainer_appears(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = _fake_proc(tmp_path, trainer=False)
    _process(proc, os.getpid(), ["python3", "-m", "presets.tuning.cli"])  # itself: not counted
    flags = ("--startup-grace", "0.2", "--proc", str(proc))

    run = _push(tmp_path, capsys, tmp_path / "results", "127.0.0.1:1/a/b:v1", *flags)

    _failed(run, "no trainer process (matching 'presets.tuning.cli') appeared within 0.2 s")


def test_trainer_match_is_configurable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = _fake_proc(tmp_path, trainer=True)
    flags = ("--startup-grace", "0.1", "--proc", str(proc), "--trainer-match", "torchrun")

    run = _push(tmp_path, capsys, tmp_path / "results", "127.0.0.1:1/a/b:v1", *flags)

    _failed(run, "no trainer process (matching 'torchrun') appeared within 0.1 s")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--image", "adapters/demo:v1"), "not a valid reference: 'adapters/demo:v1'"),
        (("--docker-config", "/nonexistent/config.json"), "does not exist"),
        (("--ca-file", "/nonexistent/ca.pem"), "CA file /nonexistent/ca.pem does not exist"),
    ],
)
def test_bad_settings_fail_before_the_wait(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...], message: str
) -> None:
    proc = _fake_proc(tmp_path, trainer=True)  # a trainer that never finishes
    run = _push(
        tmp_path, capsys, tmp_path / "results", "127.0.0.1:1/a/b:v1", "--proc", str(proc), *flags
    )
    assert run.code == 1
    assert message in run.err
    assert run.log is not None
    assert message in run.log
    assert "trainer is running" not in run.out


@pytest.mark.parametrize("flags", [("--attempts", "0"), ("--poll", "-1"), ("--results", "x")])
def test_bad_arguments(flags: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(list(flags))
    assert exit_info.value.code == 2


class FakeClock:
    """A clock for the wait loop: ``sleep`` records the pause and advances ``monotonic``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_notices_the_trainer_exit_without_real_sleeps(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, trainer=True)
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 3:
            shutil.rmtree(proc / str(TRAINER_PID))

    with pytest.raises(PushError, match="the trainer exited without writing"):
        wait_for_completion(
            tmp_path / "results", proc=proc, poll_s=5, sleep=sleep, monotonic=clock.monotonic
        )
    assert clock.sleeps == [5, 5, 5]


def test_wait_gives_the_trainer_its_startup_grace(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, trainer=False)
    clock = FakeClock()
    with pytest.raises(PushError, match=r"appeared within 600 s$"):
        wait_for_completion(
            tmp_path / "results",
            proc=proc,
            poll_s=5,
            startup_grace_s=600,
            sleep=clock.sleep,
            monotonic=clock.monotonic,
        )
    assert clock.sleeps == [5] * 120


def test_wait_checks_the_marker_once_more_before_failing(tmp_path: Path) -> None:
    """The marker shows up between the loop's check and the grace running out."""
    results = tmp_path / "results"
    results.mkdir()
    proc = _fake_proc(tmp_path, trainer=False)
    clock = FakeClock()

    def monotonic() -> float:
        if clock.now - 1000.0 >= 10:
            (results / COMPLETION_MARKER).touch()
        return clock.monotonic()

    wait_for_completion(
        results,
        proc=proc,
        poll_s=5,
        startup_grace_s=10,
        sleep=clock.sleep,
        monotonic=monotonic,
    )
    assert clock.sleeps == [5, 5]


def test_trainer_processes_and_own_lineage(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, trainer=True)
    _process(proc, 300, ["sh", "-c", "python3 -m presets.tuning.pusher --trainer-match x"])
    _process(proc, 301, ["python3", "-m", "presets.tuning.pusher", "--trainer-match", "x"])
    (proc / "300" / "stat").write_text("300 (sh) S 0 300 300 0 -1\n", encoding="utf-8")
    (proc / "301" / "stat").write_text("301 (python (3)) S 300 300 1 0\n", encoding="utf-8")

    lineage = own_lineage(proc, 301)

    assert lineage == {300, 301}
    assert trainer_processes(proc, "presets.tuning", exclude=lineage) == [TRAINER_PID]
    assert trainer_processes(proc, "--trainer-match x") == [300, 301]
    assert trainer_processes(proc, "nothing like it") == []
    assert own_lineage(proc, 999) == {999}  # not in the table: only itself
