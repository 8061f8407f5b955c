"""Composition root of the deployer service."""

from shared.runner import ServiceSpec


def build_service() -> ServiceSpec:
    return ServiceSpec(
        name="deployer",
        handlers=lambda _ctx: [],
        pending="no event handlers yet: they arrive with issue #10",
    )
