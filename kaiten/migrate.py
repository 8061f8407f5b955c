"""``kaiten migrate``: every service's Alembic environment, in its own schema."""

from __future__ import annotations

import importlib
from pathlib import Path

from shared import migrations
from shared.settings import SERVICE_NAMES


def script_location(service: str) -> Path:
    if service not in SERVICE_NAMES:
        raise ValueError(f"unknown service {service!r}; choose one of {', '.join(SERVICE_NAMES)}")
    package = importlib.import_module(f"services.{service}")
    return Path(package.__file__ or "").parent / "migrations"


def upgrade_all(url: str, services: tuple[str, ...] = SERVICE_NAMES) -> None:
    for service in services:
        migrations.upgrade(script_location(service), service, url)


def downgrade_all(url: str, revision: str, services: tuple[str, ...] = SERVICE_NAMES) -> None:
    for service in services:
        migrations.downgrade(script_location(service), service, url, revision)
