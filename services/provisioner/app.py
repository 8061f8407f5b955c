"""Composition root of the provisioner service."""

from shared.runner import ServiceSpec


def build_service() -> ServiceSpec:
    return ServiceSpec(
        name="provisioner",
        handlers=lambda _ctx: [],
        pending="no event handlers yet: they arrive with issue #9",
    )
