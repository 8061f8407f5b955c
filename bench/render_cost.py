"""What the deployer's and the tuner's pure part costs per workspace and pass: render the
objects of a plan,
stamp them with their hash, and decide against the live objects (here: the stamped objects
themselves, the common case of a pass that finds nothing to change). Every watch event and resync
runs this for the workspace concerned. Prints figures; never fails.

Usage: python -m bench.render_cost [--runs N]   (from the repository root)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

from services.deployer.render import render as render_inference
from services.tuner.render import render as render_tuning
from shared.apply import decide, stamp
from shared.manifests import Manifest, Target
from tests.unit.deployer import cases as inference
from tests.unit.tuner import cases as tuning


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    runs = parser.parse_args().runs
    print(f"render + stamp + decide, {runs} runs each (median, p95):")
    print(" deployer")
    for case in inference.CASES:
        target = inference.target_for(case)  # planning is not part of the pass
        _measure(case.name, target, lambda t: render_inference(t).objects, runs)
    print(" tuner")
    for tcase in tuning.CASES:
        _measure(tcase.name, tuning.target_for(tcase), lambda t: render_tuning(t).objects, runs)


def _measure(
    name: str, target: Target, objects: Callable[[Target], Sequence[Manifest]], runs: int
) -> None:
    times = []
    unchanged = True
    stamped: list[Manifest] = []
    for _ in range(runs):
        started = time.perf_counter()
        stamped = [stamp(o) for o in objects(target)]
        unchanged = all(decide(o, o) == "none" for o in stamped)
        times.append((time.perf_counter() - started) * 1000)
    p95 = statistics.quantiles(times, n=20)[-1]
    median = statistics.median(times)
    note = "" if unchanged else "  (a pass would rewrite: a bug)"
    print(f"  {name:36} {len(stamped)} objects {median:6.2f} ms  {p95:6.2f} ms{note}")


if __name__ == "__main__":
    main()
