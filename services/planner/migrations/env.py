"""Alembic environment of the planner service (schema `planner`)."""

from services.planner.tables import metadata
from shared.migrations import run_env

run_env(metadata)
