"""The web face: ``tether ui`` (and, later, the team server) as one ASGI app over the
library API. Pages are rendered on the server (Jinja2, autoescaped); the charts and the
lineage graph are drawn in the browser from the same JSON the ``/api`` routes serve."""
