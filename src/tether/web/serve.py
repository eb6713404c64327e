"""Serving the app: bind first (so ``--port 0`` can print the port it got), then hand
the socket to uvicorn."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

from tether.workspace import Workspace


@dataclass(frozen=True)
class UiOptions:
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    writable: bool = False  # allow alias moves, rollbacks and deletes (POST + CSRF token)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(options: UiOptions) -> tuple[socket.socket, str]:
    """A listening socket and the URL it answers at."""
    host = options.host.strip("[]")
    sock = socket.create_server((host, options.port), reuse_port=False)
    # Accepted sockets inherit this. Without it a response written as headers then body
    # waits out the client's delayed ACK (40 ms) on a kept-alive connection: asyncio
    # sets it only on sockets whose protocol number says TCP, and create_server's is 0.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return sock, f"http://{shown}:{bound_port}/"


def serve(
    ws: Workspace, options: UiOptions, *, ready: Callable[[str], None] = lambda url: None
) -> None:
    """Serve until interrupted; ``ready`` is called with the URL once it listens."""
    import uvicorn

    from tether.web.app import Site, create_app

    app = create_app(Site(ws, writable=options.writable))
    sock, url = bind(options)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        server_header=False,
        # Loopback by default; behind a proxy the server (not this UI) handles headers.
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    ready(url)
    server.run(sockets=[sock])
