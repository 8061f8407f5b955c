"""Composition root of the tuner service."""

from shared.runner import ServiceSpec


def build_service() -> ServiceSpec:
    return ServiceSpec(
        name="tuner",
        handlers=lambda _ctx: [],
        pending="no event handlers yet: they arrive with issue #11",
    )
