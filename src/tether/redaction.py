"""What counts as a secret, and how it is kept out of everything tether records or shows.

Three places carry secrets into a run record: environment variables, command-line flags
and URLs. The rules, used by every capture path:

- a variable *name* that looks like a secret (``is_secret_name``: KEY, TOKEN, SECRET,
  PASS, PWD, CRED, AUTH, PRIVATE, CONN, DSN, SESSION, COOKIE anywhere, any case) means its
  value is withheld: not stored, only a keyed digest of it, so ``explain`` can still say
  that it changed between two runs without the value being recoverable from the record;
- a command-line flag named like a password, token or key (``--password X``,
  ``--token=X``, ``--api-key X``) has its value withheld the same way, and ``reproduce``
  asks for it in ``TETHER_SECRET_<FLAG>``;
- a *value* is scrubbed of credentials whatever its name (``redact_text``): the password
  of ``scheme://user:pass@host``, bearer tokens, AWS access keys, JWTs, and the values of
  secret-named URL query parameters.

The digest key is per project (``.tether/redaction.key``, never committed, created on first
use), so digests of short passwords cannot be looked up in a table made elsewhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tether.errors import ReproError

MASK = "***"

_SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASS|PWD|CRED|AUTH|PRIVATE|CONN|DSN|SESSION|COOKIE", re.IGNORECASE
)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s]*):[^@/\s]*@")
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{8,}")
_AWS_KEY = re.compile(r"\b(AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}")
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:[a-z0-9_.-]*(?:key|token|secret|pass|pwd|cred|auth|sig|signature|"
    r"session|cookie)[a-z0-9_.-]*)=)[^&#\s]+"
)
# Flags are judged more narrowly than variable names: '--sort-key rmse' or '--no-auth'
# are ordinary, and a wrongly withheld value would make reproduce ask for it.
_SECRET_FLAG = re.compile(
    r"(?i)^(?!no[-_]|use[-_]|enable[-_]|disable[-_]|with[-_]|without[-_])"
    r".*(pass(word|wd|phrase)?$|^pwd$|token|secret|api[-_]?key|access[-_]?key|"
    r"private[-_]?key|credential|^auth$|auth[-_]?(token|key)|dsn$|"
    r"conn(ection)?[-_]?str(ing)?|cookie|session[-_]?(id|token|key))"
)
_FLAG = re.compile(r"^(--?)([A-Za-z][A-Za-z0-9_.-]*)(=(.*))?$", re.DOTALL)
KEY_FILE = "redaction.key"


def is_secret_name(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


def redact_text(text: str) -> str:
    """``text`` with every credential shape it contains masked."""
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _BEARER.sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)
    text = _AWS_KEY.sub(lambda m: f"{m[1]}{MASK}", text)
    text = _JWT.sub(MASK, text)
    return _QUERY_SECRET.sub(lambda m: f"{m[1]}{MASK}", text)


class Withholder:
    """Keyed digests of withheld values: equal values give equal digests in one project."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def for_project(cls, dot: Path) -> Withholder:
        """The project's key, created on first use (``dot`` is the ``.tether`` folder)."""
        path = dot / KEY_FILE
        try:
            return cls(path.read_bytes())
        except FileNotFoundError:
            pass
        key = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(path.read_bytes())  # another process made it first
        except OSError:
            return cls(key)  # a read-only project: digests still compare within this run
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        # Projects made before the key existed do not ignore it at the top level.
        ignore = dot / ".gitignore"
        if not ignore.exists():
            with contextlib.suppress(OSError):
                ignore.write_text(
                    f"# never commit: it keys the digests of withheld secrets\n{KEY_FILE}\n"
                )
        return cls(key)

    def digest(self, name: str, value: str) -> str:
        mac = hmac.new(self._key, f"{name}\0{value}".encode(), hashlib.sha256)
        return f"hmac-sha256:{mac.hexdigest()[:32]}"


@dataclass(frozen=True)
class EnvSplit:
    kept: dict[str, str]  # values with credentials masked
    withheld: dict[str, str]  # name -> keyed digest of the dropped value


def split_env(env: Mapping[str, str], withholder: Withholder | None) -> EnvSplit:
    kept: dict[str, str] = {}
    withheld: dict[str, str] = {}
    for name, value in sorted(env.items()):
        if is_secret_name(name):
            withheld[name] = withholder.digest(name, value) if withholder else MASK
        else:
            kept[name] = redact_text(value)
    return EnvSplit(kept, withheld)


@dataclass(frozen=True)
class WithheldArg:
    """A command-line value that was not stored: where it was, and where reproduce
    takes it from (an environment variable the user sets)."""

    index: int
    flag: str
    env: str
    digest: str

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "flag": self.flag, "env": self.env, "digest": self.digest}

    @classmethod
    def from_json(cls, doc: Mapping[str, object]) -> WithheldArg:
        return cls(int(str(doc["index"])), str(doc["flag"]), str(doc["env"]), str(doc["digest"]))


@dataclass(frozen=True)
class RedactedCommand:
    argv: tuple[str, ...]  # what is stored and shown
    withheld: tuple[WithheldArg, ...]

    @property
    def capture(self) -> dict[str, object]:
        """What a run's ``capture`` record keeps so reproduce can ask for the values."""
        return {"withheld_args": [w.to_json() for w in self.withheld]} if self.withheld else {}


def redact_command(argv: Sequence[str], withholder: Withholder | None) -> RedactedCommand:
    """Mask the values of secret-looking flags (``--password X``, ``--token=X``,
    ``--api-key X``) and credentials inside any argument."""
    out: list[str] = []
    withheld: list[WithheldArg] = []
    pending: str | None = None  # a secret flag whose value is the next argument
    for i, arg in enumerate(argv):
        if pending is not None and not arg.startswith("-"):
            withheld.append(_withhold(i, pending, arg, withholder))
            out.append(MASK)
            pending = None
            continue
        pending = None
        m = _FLAG.match(arg) if i > 0 else None
        if m is not None and _SECRET_FLAG.search(m[2]):
            if m[3] is not None:
                withheld.append(_withhold(i, m[1] + m[2], m[4], withholder))
                out.append(f"{m[1]}{m[2]}={MASK}")
            else:
                out.append(arg)
                pending = m[1] + m[2]
            continue
        out.append(redact_text(arg))
    return RedactedCommand(tuple(out), tuple(withheld))


def _withhold(index: int, flag: str, value: str, withholder: Withholder | None) -> WithheldArg:
    env = "TETHER_SECRET_" + re.sub(r"[^A-Za-z0-9]+", "_", flag.lstrip("-")).upper()
    digest = withholder.digest(flag, value) if withholder else MASK
    return WithheldArg(index, flag, env, digest)


def restore_command(
    argv: Sequence[str], withheld: Sequence[WithheldArg], env: Mapping[str, str]
) -> list[str]:
    """The runnable command, each withheld value taken from its environment variable."""
    missing = [w for w in withheld if w.env not in env]
    if missing:
        names = ", ".join(sorted({w.env for w in missing}))
        flags = ", ".join(sorted({w.flag for w in missing}))
        raise ReproError(
            f"the run was given secret values ({flags}) that tether did not store",
            hint=f"set {names} to the value(s) the run was given, then reproduce again",
        )
    out = list(argv)
    for w in withheld:
        if out[w.index] == MASK:
            out[w.index] = env[w.env]
        else:
            out[w.index] = f"{w.flag}={env[w.env]}"
    return out
