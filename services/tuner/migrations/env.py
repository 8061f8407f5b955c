"""Alembic environment of the tuner service (schema `tuner`)."""

from services.tuner.tables import metadata
from shared.migrations import run_env

run_env(metadata)
