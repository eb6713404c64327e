"""A TCP proxy on 127.0.0.1 for fault tests: it forwards bytes both ways, can damage
the body of the first blob upload (or pack of blobs) that passes (one byte flipped, as
a bad link would), and counts the server's 503 answers."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

UPLOADS = (b"PUT /p/", b"POST /p/")
BLOBS = (b"/sync/blobs/sha256:", b"/sync/blobs/pack ")
DAMAGE_AT = 200  # past a pack's first header line: inside the first blob's bytes


class Proxy:
    def __init__(self, upstream_port: int, *, damage_one_blob: bool = False) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._damage = damage_one_blob
        self._lock = threading.Lock()
        self.damaged = 0
        self.unavailable = 0  # 503 answers seen
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._upload, args=(client, server), daemon=True).start()
            threading.Thread(target=self._answers, args=(server, client), daemon=True).start()

    def _upload(self, src: socket.socket, dst: socket.socket) -> None:
        armed = False  # a blob upload's headers passed: damage its body's next bytes
        with _closing(src, dst):
            while data := src.recv(1 << 16):
                with self._lock:
                    if self._damage and not self.damaged:
                        at = max(data.find(u) for u in UPLOADS)
                        if at >= 0 and any(data.find(b, at) >= 0 for b in BLOBS):
                            end = data.find(b"\r\n\r\n", at)
                            armed = True
                            start = -1 if end < 0 else end + 4
                            if start >= 0 and len(data) > start + DAMAGE_AT:
                                data = _flip(data, start + DAMAGE_AT)
                                self.damaged, armed = 1, False
                        elif armed and len(data) > DAMAGE_AT:
                            data = _flip(data, DAMAGE_AT)
                            self.damaged, armed = 1, False
                dst.sendall(data)

    def _answers(self, src: socket.socket, dst: socket.socket) -> None:
        with _closing(src, dst):
            while data := src.recv(1 << 16):
                with self._lock:
                    self.unavailable += data.count(b"HTTP/1.1 503")
                dst.sendall(data)


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


@contextlib.contextmanager
def _closing(*sockets: socket.socket) -> Iterator[None]:
    try:
        yield
    except OSError:
        pass
    finally:
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
