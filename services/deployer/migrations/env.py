"""Alembic environment of the deployer service (schema `deployer`)."""

from services.deployer.tables import metadata
from shared.migrations import run_env

run_env(metadata)
