"""The tuning job's ``pusher`` container, ``python3 -m presets.tuning.pusher``: waits next to the
trainer for the adapter, then pushes it as Kaito's adapter image.

The pod shares its process namespace (``shareProcessNamespace: true``), so the pusher sees the
trainer's processes in ``/proc``. It polls the results folder for ``fine_tuning_completed.txt``,
which the trainer writes once the adapter is saved, and gives up when the trainer exits without
writing it, or when no trainer process shows up within the startup grace. Then it pushes
``adapter_config.json`` and ``adapter_model.safetensors`` with :func:`presets.oci.push_adapter`
(retrying a failed push) and reports ``pushed <REF>@<digest>`` on stdout and in the termination
log, where the tuner reads the digest. A failure exits 1 with a one-line reason on stderr and in
the termination log. The image reference, the Docker config files and the CA file are checked
before the wait, so a mistake there does not wait for the whole training run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from presets.layout import COMPLETION_MARKER
from presets.oci import (
    ADAPTER_FILES,
    Credentials,
    OciError,
    credentials_from_docker_config,
    parse_reference,
    push_adapter,
)
from presets.tuning.download import (
    non_negative_float,
    positive_int,
    termination_log_path,
    write_termination_log,
)

__all__ = [
    "DEFAULT_TRAINER_MATCH",
    "PushError",
    "main",
    "own_lineage",
    "push_with_retries",
    "trainer_processes",
    "wait_for_completion",
]

DEFAULT_TRAINER_MATCH = "presets.tuning.cli"
DEFAULT_POLL_S = 5.0
DEFAULT_STARTUP_GRACE_S = 600.0
DEFAULT_ATTEMPTS = 3
DEFAULT_RETRY_DELAY_S = 30.0
PROC = "/proc"
_MAX_ANCESTORS = 64


class PushError(Exception):
    """Nothing was pushed; the message says why, on one line."""


# ---------------------------------------------------------------- watching the trainer


def trainer_processes(proc: Path, match: str, *, exclude: Collection[int] = ()) -> list[int]:
    """The pids under ``proc`` whose command line (its NUL-separated arguments joined with
    spaces) contains ``match``, leaving out those in ``exclude``. Zombies (their command line is
    empty) and processes that end while being read are not counted."""
    try:
        entries = list(proc.iterdir())
    except OSError as error:
        raise PushError(f"cannot list the processes in {proc}: {error.strerror}") from error
    found: list[int] = []
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if match in raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace"):
            found.append(int(entry.name))
    return sorted(found)


def own_lineage(proc: Path, pid: int) -> set[int]:
    """``pid`` and its ancestors as ``proc`` shows them: a shell that started the pusher may
    carry the trainer match on its command line too. Stops where ``proc`` has no entry."""
    lineage: set[int] = set()
    while pid > 0 and pid not in lineage and len(lineage) < _MAX_ANCESTORS:
        lineage.add(pid)
        try:
            stat = (proc / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
            pid = int(stat.rpartition(")")[2].split()[1])  # "pid (comm) state ppid ..."
        except (OSError, IndexError, ValueError):
            break
    return lineage


def wait_for_completion(
    results: Path,
    *,
    proc: Path = Path(PROC),
    match: str = DEFAULT_TRAINER_MATCH,
    poll_s: float = DEFAULT_POLL_S,
    startup_grace_s: float = DEFAULT_STARTUP_GRACE_S,
    exclude: Collection[int] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Return once ``results/fine_tuning_completed.txt`` exists, checking every ``poll_s``
    seconds. Raises :class:`PushError` when the trainer (a process matching ``match``, other
    than ``exclude``, by default this process and its ancestors) was seen and is gone while the
    marker is still absent, or when none appeared within ``startup_grace_s`` seconds."""
    marker = results / COMPLETION_MARKER
    skip = own_lineage(proc, os.getpid()) if exclude is None else exclude
    started = monotonic()
    seen = False
    while not marker.exists():
        pids = trainer_processes(proc, match, exclude=skip)
        if pids and not seen:
            seen = True
            listed = ", ".join(map(str, pids))
            print(f"the trainer is running (pid {listed}); waiting for {marker}", flush=True)
        elif not pids and (seen or monotonic() - started >= startup_grace_s):
            if marker.exists():  # written just before the trainer exited
                break
            if seen:
                raise PushError(
                    f"the trainer exited without writing {COMPLETION_MARKER}: nothing to push"
                )
            raise PushError(
                f"no trainer process (matching {match!r}) appeared within {startup_grace_s:g} s"
            )
        sleep(poll_s)
    print(f"found {marker}", flush=True)


# ---------------------------------------------------------------- pushing


def push_with_retries(
    results: Path,
    image: str,
    *,
    preset: str | None = None,
    credentials: Credentials | None = None,
    insecure: bool = False,
    ca_file: Path | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Push the adapter in ``results`` to ``image`` with up to ``attempts`` attempts
    ``retry_delay_s`` apart; returns the manifest digest. A folder without the adapter files is
    refused at once (another attempt would not find them either)."""
    complete = all((results / name).is_file() for name in ADAPTER_FILES)
    tries = attempts if complete else 1
    for attempt in range(1, tries + 1):
        try:
            return push_adapter(
                results,
                image,
                preset=preset,
                credentials=credentials,
                insecure=insecure,
                ca_file=ca_file,
            )
        except OciError as error:
            if attempt == tries:
                after = f" after {attempt} attempts" if attempt > 1 else ""
                raise PushError(f"pushing {image} failed{after}: {error}") from error
            print(
                f"push attempt {attempt} of {tries} failed: {error}; "
                f"retrying in {retry_delay_s:g} s",
                file=sys.stderr,
                flush=True,
            )
            sleep(retry_delay_s)
    raise AssertionError("unreachable: attempts is at least 1")


def _credentials(image: str, configs: Sequence[Path], ca_file: Path | None) -> Credentials | None:
    """The credentials of the first Docker config with an entry for the image's registry, once
    the reference and the CA file are checked (before the wait, not after the training)."""
    registry = parse_reference(image)[0]
    if ca_file is not None and not ca_file.is_file():
        raise PushError(f"CA file {ca_file} does not exist")
    for config in configs:
        found = credentials_from_docker_config(config, registry)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m presets.tuning.pusher",
        description="Wait for the trainer's adapter and push it as an OCI image (the tuning "
        "job's pusher container).",
    )
    parser.add_argument(
        "--results", type=Path, required=True, metavar="DIR", help="the trainer's output folder"
    )
    parser.add_argument(
        "--image", required=True, metavar="REF", help="HOST[:PORT]/REPOSITORY[:TAG] to push to"
    )
    parser.add_argument(
        "--docker-config",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="Docker config JSON holding the registry's credentials (repeatable: the first "
        "with an entry for the registry is used)",
    )
    parser.add_argument(
        "--preset", metavar="NAME", help="annotate the image sh.kaito.model.name=NAME"
    )
    parser.add_argument(
        "--trainer-match",
        default=DEFAULT_TRAINER_MATCH,
        metavar="TEXT",
        help="text in the trainer's command line (default %(default)s)",
    )
    parser.add_argument(
        "--poll",
        type=non_negative_float,
        default=DEFAULT_POLL_S,
        metavar="SECONDS",
        help="pause between checks (default %(default)s)",
    )
    parser.add_argument(
        "--startup-grace",
        type=non_negative_float,
        default=DEFAULT_STARTUP_GRACE_S,
        metavar="SECONDS",
        help="how long the trainer may take to appear (default %(default)s)",
    )
    parser.add_argument(
        "--attempts",
        type=positive_int,
        default=DEFAULT_ATTEMPTS,
        help="push attempts (default %(default)s)",
    )
    parser.add_argument(
        "--retry-delay",
        type=non_negative_float,
        default=DEFAULT_RETRY_DELAY_S,
        metavar="SECONDS",
        help="pause between push attempts (default %(default)s)",
    )
    parser.add_argument("--insecure", action="store_true", help="plain http")
    parser.add_argument(
        "--ca-file",
        type=Path,
        metavar="FILE",
        help="CA bundle that signed the registry's certificate",
    )
    parser.add_argument(
        "--termination-log",
        type=Path,
        default=termination_log_path(),
        metavar="PATH",
        help="where the result line goes too (default %(default)s)",
    )
    parser.add_argument(
        "--proc",
        type=Path,
        default=Path(PROC),
        metavar="DIR",
        help="the process table to watch (default %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Wait for the adapter and push it: exit 0 with ``pushed <REF>@<digest>``, or 1 with the
    reason, each on its stream and in the termination log."""
    args = _parser().parse_args(argv)
    try:
        credentials = _credentials(args.image, args.docker_config, args.ca_file)
        wait_for_completion(
            args.results,
            proc=args.proc,
            match=args.trainer_match,
            poll_s=args.poll,
            startup_grace_s=args.startup_grace,
        )
        digest = push_with_retries(
            args.results,
            args.image,
            preset=args.preset,
            credentials=credentials,
            insecure=args.insecure,
            ca_file=args.ca_file,
            attempts=args.attempts,
            retry_delay_s=args.retry_delay,
        )
    except (PushError, OciError, ValueError, OSError) as error:
        message = " ".join(str(error).split())
        print(message, file=sys.stderr, flush=True)
        write_termination_log(args.termination_log, message)
        return 1
    message = f"pushed {args.image}@{digest}"
    print(message, flush=True)
    write_termination_log(args.termination_log, message)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
