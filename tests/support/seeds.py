"""Many Workspaces from one seed, for tests and benchmarks that roll out dozens or thousands."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
PHI3_SEED = SEEDS / "inference-phi-3-mini.yaml"


def seed_copies(
    namespace: str, count: int, *, prefix: str = "ws", seed: Path = PHI3_SEED
) -> list[dict[str, Any]]:
    """``count`` copies of ``seed`` named ``{prefix}-000``... in ``namespace``, each selecting
    GPU nodes by a label of its own (``apps: {namespace}-{name}``), so none takes another's."""
    doc: dict[str, Any] = yaml.safe_load(seed.read_text())
    width = max(3, len(str(count - 1)))
    docs = []
    for i in range(count):
        name = f"{prefix}-{i:0{width}d}"
        item = copy.deepcopy(doc)
        item["metadata"] = {"name": name, "namespace": namespace}
        item["resource"]["labelSelector"] = {"matchLabels": {"apps": f"{namespace}-{name}"}}
        docs.append(item)
    return docs
