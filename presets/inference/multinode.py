"""Multi-node vLLM (reference 2.5, "Multi-node"): the pods of one StatefulSet form a Ray cluster.
Pod 0 starts the Ray head, waits until every node joined, then runs the vLLM launcher, which
spreads the pipeline stages over the cluster; the other pods join the head and stay there.

``python -m presets.inference.multinode run --leader HOST --nodes N -- <launcher argv>`` is the
container command the deployer writes; ``health URL`` is every pod's probe (workers serve no
HTTP, so they report the leader's health, as Kaito's ``multi-node-health-check.py`` does).
Ray is only in the GPU image: without it, ``run`` exits with a clear message.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

EXIT_UNAVAILABLE = 3
EXIT_BAD_INDEX = 2
JOIN_POLL_S = 5.0


@dataclass(frozen=True, slots=True)
class Role:
    leader: bool
    start: tuple[str, ...]  # the ray command this pod runs first
    serve: tuple[str, ...]  # what it runs once the cluster is complete (empty for workers)


def role(pod_index: str, leader: str, ray_port: int, serve: Sequence[str]) -> Role:
    """What pod ``pod_index`` runs: the head and the server, or a worker joining the head."""
    if pod_index == "0":
        return Role(True, ("ray", "start", "--head", f"--port={ray_port}"), tuple(serve))
    return Role(False, ("ray", "start", f"--address={leader}:{ray_port}", "--block"), ())


def alive_nodes(address: str) -> int:
    import ray  # noqa: PLC0415 -- only in the vLLM image

    ray.init(address=address, logging_level="ERROR")
    try:
        return sum(1 for node in ray.nodes() if node.get("Alive"))
    finally:
        ray.shutdown()


def run(args: argparse.Namespace) -> int:
    if shutil.which("ray") is None:
        print(
            "error: ray is not installed in this image: multi-node needs the vLLM image",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    index = os.environ.get(args.pod_index_env, "")
    if not index.isdigit():
        print(
            f"error: ${args.pod_index_env} is {index!r}, not a pod index: the StatefulSet sets it "
            "from the pod label apps.kubernetes.io/pod-index",
            file=sys.stderr,
        )
        return EXIT_BAD_INDEX
    plan = role(index, args.leader, args.ray_port, args.serve)
    if not plan.leader:
        os.execvp(plan.start[0], list(plan.start))  # noqa: S606 -- argv, no shell
    subprocess.run(list(plan.start), check=True)
    while (joined := alive_nodes(f"127.0.0.1:{args.ray_port}")) < args.nodes:
        print(f"waiting for Ray nodes: {joined} of {args.nodes}", file=sys.stderr, flush=True)
        time.sleep(JOIN_POLL_S)
    os.execvp(plan.serve[0], list(plan.serve))  # noqa: S606 -- argv, no shell


def health(url: str, timeout_s: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:  # noqa: S310 -- http only
            return 0 if reply.status == 200 else 1  # noqa: PLR2004
    except (urllib.error.URLError, OSError) as error:
        print(f"{url}: {error}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m presets.inference.multinode")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("run", help="start this pod's part of the Ray cluster")
    start.add_argument("--pod-index-env", default="POD_INDEX")
    start.add_argument("--leader", required=True, help="pod 0's DNS name")
    start.add_argument("--ray-port", type=int, default=6379)
    start.add_argument("--nodes", type=int, required=True)
    start.add_argument("serve", nargs=argparse.REMAINDER, help="-- then the launcher's argv")
    check = commands.add_parser("health", help="exit 0 when URL answers 200")
    check.add_argument("url")
    check.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.command == "health":
        return health(args.url, args.timeout)
    if args.serve[:1] == ["--"]:
        args.serve = args.serve[1:]
    if not args.serve:
        parser.error("run: give the server's command after --")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
