"""The team server's face: an ASGI app that authenticates every request, then serves
each project the user was granted through the same UI and API as ``tether ui``."""
