from __future__ import annotations

import pytest

from tether.errors import ReferenceFormatError
from tether.oci.reference import parse_reference, parse_tag_list

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repo", "tag", "digest"),
    [
        ("movie-recommend", None, "movie-recommend", "latest", None),
        ("movie-recommend:v1.0.0", None, "movie-recommend", "v1.0.0", None),
        ("org/team/model:1.2", None, "org/team/model", "1.2", None),
        ("localhost:5000/model:v1", "localhost:5000", "model", "v1", None),
        ("localhost/model", "localhost", "model", "latest", None),
        ("ghcr.io/org/model@" + DIGEST, "ghcr.io", "org/model", None, DIGEST),
        ("reg.io:443/a/b:t@" + DIGEST, "reg.io:443", "a/b", "t", DIGEST),
        ("a__b.c--d", None, "a__b.c--d", "latest", None),
    ],
)
def test_parses_like_docker(
    text: str, registry: str | None, repo: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repo, tag)
    assert (str(ref.digest) if ref.digest else None) == digest


def test_bare_digest_and_round_trip() -> None:
    ref = parse_reference(DIGEST)
    assert ref.repository is None and str(ref.digest) == DIGEST
    assert str(parse_reference("reg.io/a:t")) == "reg.io/a:t"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Model:v1",
        "model:",
        "model:-bad",
        "model:" + "x" * 129,
        "a//b",
        "-model",
        "model@sha256:xyz",
        "model@sha256:" + "AB" * 32,
        "mo del",
        "model:v1,v2",
        "../etc/passwd",
        "model@md5:" + "a" * 32,
    ],
)
def test_rejects_bad_references(text: str) -> None:
    with pytest.raises(ReferenceFormatError) as exc:
        parse_reference(text)
    assert exc.value.hint


def test_tag_lists() -> None:
    refs = parse_tag_list("model:v1,latest,other/repo:x")
    assert [str(r) for r in refs] == ["model:v1", "model:latest", "other/repo:x"]
    with pytest.raises(ReferenceFormatError):
        parse_tag_list("model:v1,bad tag")
