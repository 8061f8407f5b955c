"""Tables of the tuner service, in its own schema `tuner`."""

from shared.db import handled_generations_table, service_metadata

metadata = service_metadata("tuner")
handled_generations = handled_generations_table(metadata)
