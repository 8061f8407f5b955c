"""Tables of the provisioner service, in its own schema `provisioner`."""

from shared.db import handled_generations_table, service_metadata

metadata = service_metadata("provisioner")
handled_generations = handled_generations_table(metadata)
