"""Composition root of the planner service."""

from shared.runner import ServiceSpec


def build_service() -> ServiceSpec:
    return ServiceSpec(
        name="planner",
        handlers=lambda _ctx: [],
        pending="no event handlers yet: they arrive with issue #8",
    )
