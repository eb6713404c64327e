"""Users and their access tokens.

A token reads ``tt1.ID.SECRET``: the id finds the row, the secret is checked against its
stored SHA-256 in constant time. The secret exists only in the answer to ``create_token``;
no log, error, audit row or page ever holds it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

from tether.errors import Unauthenticated, UsageError
from tether.repositories import team as repo
from tether.team.audit import Actor, record
from tether.team.deployment import Deployment
from tether.team.records import NewToken, Token, User

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TOKEN = re.compile(r"tt1\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})")
_DURATION = re.compile(r"(\d{1,5})([hdw])")
_UNITS = {"h": 3600, "d": 86400, "w": 604800}
_REFUSED = "the token is unknown, expired or revoked"
_REFUSED_HINT = "ask an admin for a new one: tether server token create USER"


def check_user_name(name: str) -> str:
    if not USER_NAME.fullmatch(name):
        raise UsageError(
            f"{name[:64]!r} is not a user name",
            hint="letters, digits, '.', '_' and '-', starting with a letter or digit",
        )
    return name


def parse_expiry(text: str | None) -> float | None:
    """``90d``, ``12h``, ``2w`` → seconds; None or ``never`` → no expiry."""
    if text is None or text == "never":
        return None
    m = _DURATION.fullmatch(text.strip())
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"{text[:20]!r} is not a duration", hint="e.g. 12h, 90d, 2w or never")
    return int(m.group(1)) * _UNITS[m.group(2)]


def add_user(team: Deployment, name: str, *, admin: bool, actor: Actor) -> User:
    user = repo.add_user(team.team, check_user_name(name), admin=admin, at=time.time())
    if user is None:
        raise UsageError(f"user {name} exists", hint="tether server user list")
    record(team, actor, "user.add", name, {"admin": admin})
    return user


def users(team: Deployment) -> list[User]:
    return repo.users(team.team)


def user(team: Deployment, name: str) -> User:
    found = repo.user_named(team.team, name)
    if found is None:
        raise UsageError(f"no user {name[:64]!r}", hint="tether server user add NAME")
    return found


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    team: Deployment, name: str, *, expires_in: float | None, actor: Actor
) -> NewToken:
    owner = user(team, name)
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    now = time.time()
    expires = None if expires_in is None else now + expires_in
    repo.add_token(team.team, token_id, owner, _digest(secret), at=now, expires=expires)
    record(team, actor, "token.create", token_id, {"user": name, "expires": expires})
    return NewToken(Token(token_id, name, now, expires, None), f"tt1.{token_id}.{secret}")


def revoke_token(team: Deployment, token_id: str, *, actor: Actor) -> None:
    if not repo.revoke_token(team.team, token_id, at=time.time()):
        raise UsageError(f"no live token {token_id[:20]!r}", hint="tether server token list USER")
    record(team, actor, "token.revoke", token_id, {})


def tokens(team: Deployment, name: str) -> list[Token]:
    return repo.tokens_of(team.team, user(team, name))


def authenticate(team: Deployment, presented: str) -> User:
    """The user a token belongs to; refused when it is malformed, unknown, expired or
    revoked (one message for all: a guess learns nothing)."""
    m = _TOKEN.fullmatch(presented.strip())
    found = repo.token(team.team, m.group(1)) if m else None
    if m is None or found is None:
        raise Unauthenticated(_REFUSED, hint=_REFUSED_HINT)
    token, stored, owner = found
    if not hmac.compare_digest(stored, _digest(m.group(2))):
        raise Unauthenticated(_REFUSED, hint=_REFUSED_HINT)
    if token.revoked is not None or (token.expires is not None and token.expires <= time.time()):
        raise Unauthenticated(_REFUSED, hint=_REFUSED_HINT)
    return owner
