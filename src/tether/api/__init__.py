"""The library API every face calls (the CLI, the web UI, the team server): use cases
that take a Workspace and plain arguments and return typed results owning their JSON
form. Modules: ``runs``, ``kits``, ``models``."""
