"""The Workspace API: models, the generated CRD, and validation."""
