"""Helpers for tests that run the provisioner."""

from __future__ import annotations

import sqlalchemy as sa

from services.provisioner.tables import targets
from shared.db import Database
from shared.settings import Settings


async def forget_other_tests(settings: Settings) -> None:
    """The database lives for the test session but each test has a cluster of its own: the
    workspaces earlier tests left in the provisioner's state must not be assessed here."""
    db = Database(settings.database_url)
    try:
        async with db.sessions.begin() as session:
            await session.execute(sa.delete(targets))
    finally:
        await db.close()
