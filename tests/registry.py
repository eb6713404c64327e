"""A real OCI registry for tests: Debian's ``docker-registry`` (CNCF distribution 2.8)
on 127.0.0.1, with a temporary config and storage, optionally behind htpasswd Basic
auth, a token server of our own, or TLS with a CA made here."""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

BINARY = shutil.which("docker-registry") or shutil.which("registry")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    root: Path
    port: int
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    tls: bool = False
    ca_file: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.root / "registry.log", "ab") as log:  # the child keeps its own fd
            self.proc = subprocess.Popen(
                [str(BINARY), "serve", str(self.config)],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            if self.proc.poll() is not None:
                raise RuntimeError((self.root / "registry.log").read_text()[-2000:])
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def start_registry(
    root: Path, *, auth: dict[str, Any] | None = None, tls: tuple[Path, Path] | None = None
) -> Registry:
    if BINARY is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    http: dict[str, Any] = {
        "addr": f"127.0.0.1:{port}",
        # A fixed secret: upload sessions survive a restart, so pushes can resume.
        "secret": "tether-test-secret",
    }
    if tls:
        http["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "data")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": http,
    }
    if auth:
        config["auth"] = auth
    path = root / "config.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    reg = Registry(root, port, path, tls=tls is not None)
    reg.start()
    return reg


# -- htpasswd -------------------------------------------------------------------------


def htpasswd_auth(root: Path, users: dict[str, str]) -> dict[str, Any]:
    import bcrypt

    path = root / "htpasswd"
    root.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}"
        for u, p in users.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return {"htpasswd": {"realm": "tether-test", "path": str(path)}}


# -- certificates -----------------------------------------------------------------------


def make_ca_and_cert(root: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for ``host``: (ca.pem, cert.pem, key.pem)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    root.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tether test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = root / "ca.pem", root / "cert.pem", root / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


# -- a token server ----------------------------------------------------------------------


class TokenServer:
    """The Docker token flow's auth server: checks Basic credentials, answers a JWT
    signed with a key whose certificate the registry trusts (``x5c`` chain).

    ``expired_first`` hands out one token that the registry already considers expired
    (while claiming a long ``expires_in``), to exercise refresh on 401."""

    def __init__(self, root: Path, users: dict[str, str]) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        root.mkdir(parents=True, exist_ok=True)
        self.users = users
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tether token signer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = root / "token-ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[dict[str, Any]] = []
        self.expired_first = False
        self.port = free_port()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def auth_config(self) -> dict[str, Any]:
        return {
            "token": {
                "realm": self.realm,
                "service": "tether-test",
                "issuer": "tether-test-issuer",
                "rootcertbundle": str(self.bundle),
            }
        }

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        query = parse_qs(urlsplit(h.path).query)
        auth = h.headers.get("Authorization", "")
        self.requests.append({"query": query, "authorization": bool(auth)})
        user = None
        if auth.startswith("Basic "):
            u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            if self.users.get(u) != p:
                h.send_response(401)
                h.end_headers()
                return
            user = u
        access = []
        for scope in query.get("scope", []):
            for part in scope.split():
                kind, name, actions = part.split(":")
                allowed = actions.split(",") if user else []
                access.append({"type": kind, "name": name, "actions": allowed})
        now = int(time.time())
        if self.expired_first:
            self.expired_first = False
            exp = now - 3600  # beyond any leeway the registry allows
        else:
            exp = now + 300
        claims = {
            "iss": "tether-test-issuer",
            "sub": user or "",
            "aud": "tether-test",
            "exp": exp,
            "nbf": now - 60,
            "iat": now - 60,
            "jti": os.urandom(8).hex(),
            "access": access,
        }
        body = json.dumps({"token": self._jwt(claims), "expires_in": 300}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _jwt(self, claims: dict[str, Any]) -> str:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64(sig)}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def running(reg: Registry) -> Iterator[Registry]:
    try:
        yield reg
    finally:
        reg.stop()
