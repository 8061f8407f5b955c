"""Tables of the deployer service, in its own schema `deployer`."""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from shared.db import handled_generations_table, service_metadata

metadata = service_metadata("deployer")
handled_generations = handled_generations_table(metadata)

# Each inference workspace's latest plan, the nodes the provisioner reported for it, and what was
# last published: the watches and the resync re-render and re-assess every target from here.
targets = sa.Table(
    "targets",
    metadata,
    sa.Column("workspace_uid", sa.String(64), primary_key=True),
    sa.Column("namespace", sa.String(63), nullable=False),
    sa.Column("name", sa.String(253), nullable=False),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("plan", JSONB(none_as_null=True), nullable=True),  # None until the PlanReady arrives
    sa.Column(
        "nodes", JSONB(none_as_null=True), nullable=True
    ),  # None until a ResourcesReady arrives
    sa.Column("nodes_generation", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # active | deleting
    # sha256 of the last published readiness and conditions: unchanged assessments stay quiet.
    sa.Column("published_key", sa.String(64), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("targets_by_name", "namespace", "name"),
)
