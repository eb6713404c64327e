"""ModelKit references, parsed as Docker and OCI tools parse image references.

Grammar: ``[registry/]repository[:tag][@sha256:<hex>]``. The first path component is a
registry when there is more than one component and it contains ``.`` or ``:`` or is
``localhost``. Repository components are lowercase alphanumerics joined by ``.``,
``_``, ``__`` or dashes; tags match ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``. A reference
with neither tag nor digest means ``:latest``. A bare ``sha256:<hex>`` names a ModelKit
by digest alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from tether.errors import ReferenceFormatError
from tether.hashing import Digest

DEFAULT_TAG = "latest"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REGISTRY = re.compile(
    r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)
_MAX_NAME = 255

_HINT = "write REF as [registry/]repository[:tag][@sha256:<hex>], e.g. movie-recommend:v1.0.0"


@dataclass(frozen=True)
class Reference:
    """A parsed reference; ``repository`` is None for a bare digest."""

    repository: str | None
    tag: str | None = None
    digest: Digest | None = None
    registry: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository`` (or just the repository for the local store)."""
        repo = self.repository or ""
        return f"{self.registry}/{repo}" if self.registry else repo

    def with_tag(self, tag: str) -> Reference:
        _check_tag(tag)
        return replace(self, tag=tag, digest=None)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text = f"{text}@{self.digest}" if text else str(self.digest)
        return text


_MODEL_VERSION = re.compile(r"^v[1-9][0-9]{0,8}$")


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse one reference. ``default_tag`` fills in ``latest`` when no tag or digest."""
    if not isinstance(text, str) or not text.strip():
        raise ReferenceFormatError("empty ModelKit reference", hint=_HINT)
    text = text.strip()
    if any(c.isspace() for c in text) or "," in text:
        raise ReferenceFormatError(f"invalid reference {text!r}", hint=_HINT)

    digest: Digest | None = None
    if Digest.is_valid(text):
        return Reference(repository=None, digest=Digest.parse(text))
    if "@" in text and _MODEL_VERSION.match(text.rpartition("@")[2]):
        # The model registry's NAME@v3: its versions are the tags vN, so one grammar
        # serves 'tether inspect recs@v3' and 'tether model show recs@v3'.
        name, _, version = text.rpartition("@")
        if ":" in name[name.rfind("/") + 1 :]:
            raise ReferenceFormatError(f"invalid reference {text!r}", hint=_HINT)
        text = f"{name}:{version}"
    elif "@" in text:
        text, _, digest_text = text.rpartition("@")
        if not Digest.is_valid(digest_text):
            raise ReferenceFormatError(
                f"invalid digest {digest_text!r} in reference",
                hint="a digest is 'sha256:' followed by 64 lowercase hex characters",
            )
        digest = Digest.parse(digest_text)

    tag: str | None = None
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > last_slash:
        text, tag = text[:colon], text[colon + 1 :]
        _check_tag(tag)

    registry: str | None = None
    parts = text.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry = parts.pop(0)
        if not _REGISTRY.match(registry):
            raise ReferenceFormatError(f"invalid registry {registry!r}", hint=_HINT)
    for part in parts:
        if not _COMPONENT.match(part):
            raise ReferenceFormatError(
                f"invalid repository name {'/'.join(parts)!r}",
                hint="repository names are lowercase letters, digits and . _ - separators, "
                "e.g. movie-recommend",
            )
    repository = "/".join(parts)
    if len(repository) + len(registry or "") > _MAX_NAME:
        raise ReferenceFormatError("repository name is longer than 255 characters", hint=_HINT)
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(repository=repository, tag=tag, digest=digest, registry=registry)


def parse_tag_list(text: str) -> list[Reference]:
    """Parse ``repo:tag1,tag2`` (as ``tether pack -t`` takes it) into references."""
    head, *more = text.split(",")
    first = parse_reference(head)
    if first.repository is None or first.digest is not None:
        raise ReferenceFormatError(
            f"{head!r} cannot be used as a tag target", hint="give REPO:TAG, e.g. model:v1"
        )
    refs = [first]
    for extra in more:
        extra = extra.strip()
        if ":" in extra or "/" in extra:
            refs.append(parse_reference(extra))
        else:
            refs.append(first.with_tag(extra))
    return refs


def _check_tag(tag: str) -> None:
    if not _TAG.match(tag):
        raise ReferenceFormatError(
            f"invalid tag {tag!r}",
            hint="tags are up to 128 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'",
        )
