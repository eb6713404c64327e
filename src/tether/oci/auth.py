"""Registry authentication: parsing ``WWW-Authenticate`` and deciding where secrets may go.

The Docker/OCI token flow: a request without a usable token gets ``401`` with
``WWW-Authenticate: Bearer realm="…",service="…",scope="…"``; the client asks the
realm for a token for those scopes (sending the user's credential as Basic auth) and
retries with ``Authorization: Bearer <token>``. A registry may instead answer
``Basic realm="…"`` and take the credential on every request.

The realm comes from the server, so it is an attacker's lever (Ollama CVE-2025-51471:
a pull that sent the user's token to a realm of the attacker's choosing). tether sends
the credential to a realm only over HTTPS (or plain HTTP when the registry itself was
asked to be plain HTTP and the realm is on the same host), and only to the registry's
own origin (scheme, host and port), a sibling under the same parent domain over HTTPS
(``auth.docker.io`` for ``registry-1.docker.io``), or a realm the user listed in
``registry.token_realms``. Anywhere else it asks for an anonymous token.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from tether.errors import AuthError

MAX_HEADER = 8 << 10
# scheme, then key=value pairs where value is a token or a quoted string with \-escapes.
_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "bearer" | "basic" (lowercased)
    params: dict[str, str]

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


def parse_challenge(header: str, registry: str) -> Challenge:
    """Parse the first challenge of a ``WWW-Authenticate`` header, strictly."""
    header = header.strip()
    if not header or len(header) > MAX_HEADER:
        raise _bad(registry, "an empty or oversized WWW-Authenticate header")
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if not m or m.end() == pos:
            raise _bad(registry, "a WWW-Authenticate header that does not parse")
        key = m.group(1).lower()
        value = m.group(2) if m.group(2) is not None else m.group(3)
        value = re.sub(r"\\(.)", r"\1", value or "")
        if key in params:
            raise _bad(registry, f"a WWW-Authenticate header with '{key}' twice")
        params[key] = value
        pos = m.end()
    kind = scheme.lower()
    if kind not in ("bearer", "basic"):
        raise AuthError(
            f"{registry} asks for {scheme!r} authentication, which tether does not speak",
            hint="tether supports anonymous, Basic and Bearer-token registries",
        )
    if kind == "bearer" and not params.get("realm"):
        raise _bad(registry, "a Bearer challenge without a realm")
    return Challenge(kind, params)


def realm_policy(
    realm: str, registry_host: str, *, plain_http: bool, trusted: frozenset[str] = frozenset()
) -> bool:
    """Check a token realm; True when the user's credential may be sent to it.

    Credentials follow origins, as in browsers: (scheme, host, port). They go to the
    registry's own origin; over HTTPS on the default port also to a sibling host under
    the same parent domain; and to any realm whose ``host:port`` the user listed in
    ``trusted`` (``registry.token_realms``). The same host on another port is another
    origin: it gets an anonymous request unless listed. Raises when the realm is
    unusable at all (not http(s), or plain HTTP where TLS was expected)."""
    parts = urlsplit(realm)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise _bad(registry_host, f"a token realm {realm[:100]!r} that is not an http(s) URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise _bad(registry_host, f"a token realm {realm[:100]!r} with a bad port") from None
    reg = urlsplit(f"//{registry_host}")
    reg_scheme = "http" if plain_http else "https"
    reg_host = (reg.hostname or "").lower()
    reg_port = reg.port or (80 if plain_http else 443)
    listed = f"{host}:{port}" in trusted
    if parts.scheme == "http" and not (plain_http and host == reg_host):
        raise AuthError(
            f"{registry_host} sends its token requests to {host} over plain HTTP",
            hint="tether only sends credentials over HTTPS, except to a --plain-http "
            "registry's own host",
            code="unsafe-realm",
        )
    if (parts.scheme, host, port) == (reg_scheme, reg_host, reg_port) or listed:
        return True
    return parts.scheme == "https" and port == 443 and _same_parent(host, reg_host)


def _same_parent(a: str, b: str) -> bool:
    for name in (a, b):
        try:
            ipaddress.ip_address(name)
            return False  # addresses have no parent domain
        except ValueError:
            pass
    # Siblings: both hosts have a parent of two or more labels, and it is the same.
    pa, pb = a.split(".", 1), b.split(".", 1)
    return len(pa) == 2 and len(pb) == 2 and "." in pa[1] and pa[1] == pb[1]


def _bad(registry: str, what: str) -> AuthError:
    return AuthError(
        f"{registry} answered with {what}",
        hint="the registry (or something between you and it) is misbehaving",
        code="bad-challenge",
    )
