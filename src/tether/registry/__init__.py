"""The model registry: versions, aliases and their history, locally and on an OCI
registry."""
