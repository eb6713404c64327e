"""Lineage: what made a model, and what a data file or run went into."""
