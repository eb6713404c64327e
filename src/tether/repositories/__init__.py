"""Repositories: one module per aggregate, the only place that writes SQL.

``runs`` (runs, params, tags, metrics, files, links, environments), ``models`` (the model
registry), ``kits`` (tag history, layer listings, registry blob sightings, kit→run links)
and ``lineage`` (the read model lineage walks). They speak to the database through
``db/connection.py`` and return typed records.
"""
