"""Alembic environment of the watcher service (schema `watcher`)."""

from services.watcher.tables import metadata
from shared.migrations import run_env

run_env(metadata)
