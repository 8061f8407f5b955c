"""A small valid plan for tests that need a PlanReady but not a planner."""

from __future__ import annotations

from typing import Any

from shared.plan import Plan, RuntimeChoice


def minimal_plan(**overrides: Any) -> Plan:
    values: dict[str, Any] = {
        "mode": "inference",
        "preset": "phi-3-mini-4k-instruct",
        "instance_type": "Standard_NC6s_v3",
        "gpu": None,
        "node_count": 1,
        "runtime": RuntimeChoice(name="transformers", reason="test"),
        "disk_gib": 80,
        "image": "example.test/runtime:1",
        "readiness_timeout_s": 1800,
    }
    return Plan(**(values | overrides))
