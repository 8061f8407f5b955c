"""Tables of the planner service, in its own schema `planner`."""

from shared.db import handled_generations_table, service_metadata

metadata = service_metadata("planner")
handled_generations = handled_generations_table(metadata)
