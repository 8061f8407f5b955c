"""Tables of the provisioner service, in its own schema `provisioner`."""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from shared.db import handled_generations_table, service_metadata

metadata = service_metadata("provisioner")
handled_generations = handled_generations_table(metadata)

# What each workspace needs (from its latest plan), what was last published for it, and the
# nodes it runs on: the node and NodeClaim watches re-assess every target from here.
targets = sa.Table(
    "targets",
    metadata,
    sa.Column("workspace_uid", sa.String(64), primary_key=True),
    sa.Column("namespace", sa.String(63), nullable=False),
    sa.Column("name", sa.String(253), nullable=False),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("target", JSONB, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # active | deleting
    sa.Column("worker_nodes", JSONB, nullable=False),
    # sha256 of the last published outcome and conditions: unchanged assessments stay quiet.
    sa.Column("published_key", sa.String(64), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
