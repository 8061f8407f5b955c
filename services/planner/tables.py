"""Tables of the planner service, in its own schema `planner`."""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from shared.db import handled_generations_table, service_metadata

metadata = service_metadata("planner")
handled_generations = handled_generations_table(metadata)

# One decision per Workspace generation: the events that announce it, kept so a redelivery
# re-publishes the very same events (same ids, same Nats-Msg-Id) instead of planning again.
plans = sa.Table(
    "plans",
    metadata,
    sa.Column("workspace_uid", sa.String(64), primary_key=True),
    sa.Column("generation", sa.BigInteger, primary_key=True),
    sa.Column("namespace", sa.String(63), nullable=False),
    sa.Column("name", sa.String(253), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # ready | rejected
    # sha256 of what the decision read (the spec and its ConfigMaps): a rejection is revisited
    # when these change (a ConfigMap created later); a ready plan never is.
    sa.Column("inputs_hash", sa.String(64), nullable=False),
    sa.Column("events", JSONB, nullable=False),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
)
