"""The reliability suite at a larger scale, in one table: kills and restarts survived, faults
injected per kind, inputs fuzzed, Workspaces lost and duplicates created (both must be 0).

Usage: python bench/reliability.py [--scale N] [--rounds R]
Runs ``pytest tests/reliability`` R times with KAITEN_RELIABILITY_SCALE=N (the kill and restart
tests roll out N times as many Workspaces; hypothesis draws new inputs each round), reads what
each test recorded (``record_property``, through pytest's JUnit XML) and sums it. Prints the
table and writes bench/results/reliability.json. Exit status: pytest's, so a failure shows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "reliability.json"
# Counters summed over tests and rounds; the rest are the largest value seen.
SUMMED = ("kills_survived", "restarts_survived", "fuzzed_inputs", "workspaces_lost")
SUMMED_SUFFIX = ("_fired", "_configured")


def run_round(scale: int, junit: Path) -> tuple[int, float]:
    env = {**os.environ, "KAITEN_RELIABILITY_SCALE": str(scale)}
    started = time.perf_counter()
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "tests/reliability", "-q"),
            *("-o", "junit_family=xunit1", f"--junitxml={junit}"),  # xunit1 keeps properties
        ],
        cwd=ROOT,
        env=env,
        check=False,
    )
    return done.returncode, time.perf_counter() - started


def properties(junit: Path) -> tuple[Counter[str], dict[str, int]]:
    """Summed counters and test outcomes from one JUnit XML report."""
    found: Counter[str] = Counter()
    outcomes = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    tree = ET.parse(junit)  # noqa: S314 -- pytest's own report
    for suite in tree.iter("testsuite"):
        for key in outcomes:
            outcomes[key] += int(suite.get(key, "0"))
    for prop in tree.iter("property"):
        name, value = prop.get("name", ""), prop.get("value", "")
        try:
            number = int(float(value))
        except ValueError:
            continue
        if name in SUMMED or name.endswith(SUMMED_SUFFIX) or name == "duplicates_created":
            found[name] += number
        else:
            found[name] = max(found[name], number)
    return found, outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    totals: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    status, seconds = 0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            junit = Path(tmp) / f"round-{round_}.xml"
            code, took = run_round(args.scale, junit)
            status, seconds = status or code, seconds + took
            if junit.is_file():
                found, counts = properties(junit)
                totals.update(found)
                outcomes.update(counts)
    rows = [(name, totals[name]) for name in sorted(totals)]
    print(f"\nreliability suite: scale {args.scale}, {args.rounds} round(s), {seconds:.0f} s")
    print(
        f"tests {outcomes['tests']}, failures {outcomes['failures']}, "
        f"errors {outcomes['errors']}, skipped {outcomes['skipped']}"
    )
    width = max((len(n) for n, _ in rows), default=10)
    print(f"{'measure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": f"{platform.node()} {platform.machine()} cpus={os.cpu_count()}",
                "scale": args.scale,
                "rounds": args.rounds,
                "seconds": round(seconds),
                "outcomes": dict(outcomes),
                "measures": dict(rows),
            },
            indent=2,
        )
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
