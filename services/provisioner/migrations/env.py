"""Alembic environment of the provisioner service (schema `provisioner`)."""

from services.provisioner.tables import metadata
from shared.migrations import run_env

run_env(metadata)
