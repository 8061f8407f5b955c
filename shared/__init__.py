"""What every Kaiten service needs and nothing service-specific: settings, event models, the bus,
the database, the Kubernetes client factory, errors, logging, health and metrics."""
