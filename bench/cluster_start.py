"""How fast the development cluster starts: `kaiten cluster` as a process (interpreter start
included) until /version answers, and DevCluster in process. Prints figures; never fails.

Usage: python bench/cluster_start.py [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from localdev import infra
from localdev.kubeapi.cluster import DevCluster


def process_start(tmp: Path) -> float:
    port = infra.free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kaiten",
            "cluster",
            "--port",
            str(port),
            "--kubeconfig",
            str(tmp / "kubeconfig"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=1):
                    return time.perf_counter() - started
            except OSError:
                time.sleep(0.005)
    finally:
        proc.terminate()
        proc.wait()


async def in_process_start() -> float:
    started = time.perf_counter()
    cluster = DevCluster()
    await cluster.start()
    elapsed = time.perf_counter() - started
    await cluster.stop()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        processes = [process_start(Path(tmp)) for _ in range(runs)]
    in_process = [asyncio.run(in_process_start()) for _ in range(runs * 4)]
    print(
        f"kaiten cluster (process, until /version answers): median "
        f"{statistics.median(processes):.2f} s, max {max(processes):.2f} s over {runs} runs"
    )
    print(
        f"DevCluster.start() in process: median {statistics.median(in_process) * 1000:.1f} ms, "
        f"max {max(in_process) * 1000:.1f} ms over {runs * 4} runs"
    )


if __name__ == "__main__":
    main()
