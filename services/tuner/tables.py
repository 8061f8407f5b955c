"""Tables of the tuner service, in its own schema `tuner`."""

from shared.db import handled_generations_table, service_metadata
from shared.targets import targets_table

metadata = service_metadata("tuner")
handled_generations = handled_generations_table(metadata)
targets = targets_table(metadata)
