"""Digests: the one identity scheme of tether, ``sha256:<64 lowercase hex>``.

The same string names a blob in the store, an OCI descriptor and a layer in a
registry, so a user can check any object with ``sha256sum``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tether.errors import UsageError

ALGORITHM = "sha256"
CHUNK = 4 << 20  # 4 MiB: large enough that hashlib releases the GIL and syscalls amortize
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_HEX_RE = re.compile(r"^[a-f0-9]{64}$")


@dataclass(frozen=True, order=True)
class Digest:
    """A validated ``sha256:<hex>`` content digest."""

    hex: str

    def __post_init__(self) -> None:
        # A digest becomes a file name in the store: validating here means no caller can
        # smuggle "sha256:../../x" onto disk (Ollama CVE-2024-37032).
        if not _HEX_RE.match(self.hex):
            raise UsageError(
                f"invalid digest hex {self.hex[:80]!r}",
                hint="a digest is 'sha256:' followed by 64 lowercase hex characters",
                code="bad-digest",
            )

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``sha256:<hex>``; anything else (other algorithms, case, length) is refused."""
        if not isinstance(text, str) or not _DIGEST_RE.match(text):
            raise UsageError(
                f"invalid digest {str(text)[:80]!r}",
                hint="a digest is 'sha256:' followed by 64 lowercase hex characters",
                code="bad-digest",
            )
        return cls._checked(text[len("sha256:") :])

    @classmethod
    def _checked(cls, hex_: str) -> Digest:
        # Already matched by the caller's pattern: skip __post_init__'s second regex
        # (trees of a million entries parse a million digests).
        obj = object.__new__(cls)
        object.__setattr__(obj, "hex", hex_)
        return obj

    @classmethod
    def is_valid(cls, text: str) -> bool:
        return isinstance(text, str) and bool(_DIGEST_RE.match(text))

    @classmethod
    def of_bytes(cls, data: bytes) -> Digest:
        return cls._checked(hashlib.sha256(data).hexdigest())

    @property
    def short(self) -> str:
        return self.hex[:12]

    def __str__(self) -> str:
        return f"{ALGORITHM}:{self.hex}"


EMPTY = Digest.of_bytes(b"")


def hash_stream(stream: IO[bytes]) -> tuple[Digest, int]:
    """Hash a binary stream to its end; returns the digest and the byte count."""
    h = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while True:
        n = stream.readinto(view)  # type: ignore[attr-defined]
        if not n:
            break
        h.update(view[:n])
        size += n
    return Digest(h.hexdigest()), size


def hash_file(path: str | Path) -> tuple[Digest, int]:
    with open(path, "rb", buffering=0) as f:
        return hash_stream(f)
