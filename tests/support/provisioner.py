"""Helpers for tests that run the provisioner, the deployer or the tuner."""

from __future__ import annotations

import sqlalchemy as sa

from services.deployer.tables import targets as deployer_targets
from services.provisioner.tables import targets as provisioner_targets
from services.tuner.tables import targets as tuner_targets
from shared.db import Database
from shared.settings import Settings


async def forget_other_tests(settings: Settings) -> None:
    """The database lives for the test session but each test has a cluster of its own: the
    workspaces earlier tests left in the provisioner's, deployer's and tuner's state must not be
    assessed here."""
    db = Database(settings.database_url)
    try:
        async with db.sessions.begin() as session:
            for table in (provisioner_targets, deployer_targets, tuner_targets):
                await session.execute(sa.delete(table))
    finally:
        await db.close()
