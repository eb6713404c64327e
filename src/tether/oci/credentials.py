"""Registry credentials, kept where Docker, Podman, skopeo, oras and kit look for them.

The file is Docker's ``config.json`` (``$DOCKER_CONFIG/config.json``, default
``~/.docker/config.json``)::

    {
      "auths": {"registry.example.com": {"auth": "<base64 user:password>"}},
      "credsStore": "desktop",                         # helper for every registry
      "credHelpers": {"123.dkr.ecr.aws": "ecr-login"}  # helper for one registry
    }

A registry with a helper (``credHelpers`` first, then ``credsStore``) is served by the
program ``docker-credential-<helper>`` (``get``/``store``/``erase``, JSON on stdin and
stdout); otherwise its entry in ``auths`` holds the secret. The file is rewritten
atomically with mode 0600 and every key tether does not own is kept. A secret never
reaches a log, an error message or ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.errors import AuthError, ConfigError
from tether.store.atomic import write_atomic

# Docker Hub's historical key; ``docker login`` without a server writes it.
_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")


@dataclass(frozen=True)
class Credential:
    """A username with a password or an identity token (``username`` is then
    ``<token>``, as Docker writes it)."""

    username: str
    secret: str = field(repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.secret}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    return Path(env.get("HOME") or "~").expanduser() / ".docker" / "config.json"


def lookup(registry: str, env: Mapping[str, str] | None = None) -> Credential | None:
    """The stored credential for ``registry`` (``host[:port]``), or None."""
    path = config_path(env)
    doc = _read(path)
    helper = _helper_for(doc, registry)
    if helper:
        return _helper_get(helper, registry)
    auths = doc.get("auths") or {}
    for key in _keys_for(registry):
        entry = auths.get(key)
        if isinstance(entry, dict):
            cred = _decode_entry(entry, path, key)
            if cred is not None:
                return cred
    return None


def store(registry: str, credential: Credential, env: Mapping[str, str] | None = None) -> str:
    """Save ``credential`` for ``registry``; returns where it went (helper or file)."""
    path = config_path(env)
    doc = _read(path)
    helper = _helper_for(doc, registry)
    if helper:
        _helper_call(
            helper,
            "store",
            json.dumps(
                {
                    "ServerURL": registry,
                    "Username": credential.username,
                    "Secret": credential.secret,
                }
            ),
        )
        return f"credential helper docker-credential-{helper}"
    auths = doc.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise ConfigError(f"{path}: 'auths' is not an object", hint="fix or move the file")
    raw = f"{credential.username}:{credential.secret}".encode()
    auths[registry] = {"auth": base64.b64encode(raw).decode()}
    _write(path, doc)
    return str(path)


def erase(registry: str, env: Mapping[str, str] | None = None) -> bool:
    """Forget the credential for ``registry``; False when there was none."""
    path = config_path(env)
    doc = _read(path)
    helper = _helper_for(doc, registry)
    if helper:
        _helper_call(helper, "erase", registry)
        return True
    auths = doc.get("auths") or {}
    found = [k for k in _keys_for(registry) if k in auths]
    for key in found:
        del auths[key]
    if found:
        _write(path, doc)
    return bool(found)


# -- the file ---------------------------------------------------------------------------


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path} is not valid JSON ({exc})", hint="fix or move the file"
        ) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} is not a JSON object", hint="fix or move the file")
    return doc


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = json.dumps(doc, indent="\t").encode() + b"\n"
    # The temp file is made by mkstemp (0600) and keeps that mode: the secret is never
    # readable by others, not even for a moment.
    write_atomic(path, data, tmp_dir=path.parent, mode=0o600)


def _keys_for(registry: str) -> list[str]:
    keys = [registry, f"https://{registry}", f"http://{registry}"]
    if registry in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        keys += list(_DOCKER_HUB_KEYS)
    return keys


def _decode_entry(entry: dict[str, Any], path: Path, key: str) -> Credential | None:
    token = entry.get("identitytoken")
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, secret = base64.b64decode(auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep, user, secret = "", "", ""
        if not sep:
            raise ConfigError(
                f"{path}: the 'auth' entry for {key} does not decode to USER:PASSWORD",
                hint=f"run 'tether login {key}' again",
            )
        if isinstance(token, str) and token:
            return Credential("<token>", token)
        return Credential(user, secret)
    if isinstance(token, str) and token:
        return Credential("<token>", token)
    return None


# -- credential helpers -----------------------------------------------------------------


def _helper_for(doc: dict[str, Any], registry: str) -> str | None:
    helpers = doc.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for key in _keys_for(registry):
            if isinstance(helpers.get(key), str) and helpers[key]:
                return str(helpers[key])
    store_ = doc.get("credsStore")
    return store_ if isinstance(store_, str) and store_ else None


def _helper_get(helper: str, registry: str) -> Credential | None:
    out = _helper_call(helper, "get", registry, missing_ok=True)
    if out is None:
        return None
    try:
        doc = json.loads(out)
        user, secret = doc["Username"], doc["Secret"]
    except (ValueError, KeyError, TypeError):
        raise AuthError(
            f"docker-credential-{helper} returned something that is not a credential",
            hint="check the helper with 'docker-credential-" + helper + " list'",
        ) from None
    return Credential(str(user), str(secret))


def _helper_call(helper: str, action: str, payload: str, *, missing_ok: bool = False) -> str | None:
    program = f"docker-credential-{helper}"
    exe = shutil.which(program)
    if exe is None:
        raise AuthError(
            f"the credential helper {program} is not installed",
            hint="install it, or remove it from ~/.docker/config.json (credsStore/credHelpers)",
        )
    proc = subprocess.run(
        [exe, action], input=payload.encode(), capture_output=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        text = proc.stdout.decode(errors="replace").strip()
        if missing_ok and "credentials not found" in text.lower():
            return None
        # The helper's output may echo what it was given: never show it, it can hold secrets.
        raise AuthError(
            f"{program} {action} failed (exit {proc.returncode})",
            hint=f"run '{program} list' to check the helper",
        )
    return proc.stdout.decode()
