"""An OCI Distribution client: the protocol only, nothing about ModelKits.

Endpoints (distribution-spec v1.1), relative to ``https://<registry>/v2/``::

    GET  /                                   ping (and the auth challenge)
    HEAD|GET|DELETE <name>/blobs/<digest>
    POST <name>/blobs/uploads/[?mount=<digest>&from=<other>]   start an upload / mount
    PATCH <upload-location>  Content-Range: <start>-<end>       one chunk
    GET  <upload-location>   -> Range: 0-<end>                  where a broken upload stands
    PUT  <upload-location>?digest=<digest>                      finish
    HEAD|GET|PUT|DELETE <name>/manifests/<tag|digest>
    GET  <name>/tags/list?n=<n>              paginated by the Link header
    GET  <name>/referrers/<digest>           falls back to the tag 'sha256-<hex>'

Everything read from the registry is bounded or verified: manifests and referrer
indexes at 4 MiB, error bodies and tokens at 1 MiB, blobs counted against their
descriptor size and hashed while streaming (the store's writer refuses a mismatch and
leaves nothing behind). Redirects are followed by hand, so that ``Authorization`` is
dropped whenever scheme, host or port change and HTTPS never downgrades to HTTP.

One client serves many threads: httpx's connection pool is thread-safe, and the token
cache is guarded by a lock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from tether.errors import ModelKitNotFound, ObjectCorrupted, RegistryError
from tether.hashing import Digest
from tether.oci import mediatypes as mt
from tether.oci.manifest import MAX_MANIFEST_BYTES, Descriptor
from tether.oci.session import (
    Progress,
    corrupt,
    delete_scope,
    origin_of,
    pull_scope,
    push_scope,
    read_bounded,
    stream_errors,
)
from tether.oci.uploads import BlobUploads

if TYPE_CHECKING:
    import httpx

    from tether.store.objects import ContentStore

MANIFEST_ACCEPT = ", ".join(
    (
        mt.OCI_MANIFEST,
        mt.OCI_INDEX,
        mt.DOCKER_MANIFEST,
        mt.DOCKER_MANIFEST_LIST,
    )
)


@dataclass(frozen=True)
class Manifest:
    """A manifest as served: exact bytes, their digest and media type."""

    data: bytes
    digest: Digest
    media_type: str

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.data))


class RegistryClient(BlobUploads):
    """One registry (``host[:port]``); ``http`` may be injected (tests, proxies)."""

    # -- blobs ----------------------------------------------------------------------

    def blob_size(self, repo: str, digest: Digest) -> int | None:
        """Size of a blob the repository has, or None."""
        with self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=pull_scope(repo)) as resp:
            if resp.status_code == 404:
                return None
            if resp.status_code != 200:
                self._fail(resp, f"HEAD of blob {digest.short}")
            length = resp.headers.get("content-length")
            return int(length) if length and length.isdigit() else -1

    def download_blob(
        self, repo: str, desc: Descriptor, store: ContentStore, progress: Progress | None = None
    ) -> None:
        """Stream a blob into the store, verifying its size and digest as it arrives."""
        what = f"blob {desc.digest.short} of {repo}"
        with self._get_blob(repo, desc.digest, what) as resp:
            length = resp.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) != desc.size:
                raise corrupt(self.registry, what, f"is {length} bytes, expected {desc.size}")
            try:
                with store.writer(expected=desc.digest, size_hint=desc.size) as w:
                    for chunk in resp.iter_bytes():
                        if w.size + len(chunk) > desc.size:
                            raise corrupt(self.registry, what, f"is more than {desc.size} bytes")
                        w.write(chunk)
                        if progress:
                            progress(len(chunk))
                    if w.size != desc.size:
                        raise corrupt(self.registry, what, f"is {w.size} bytes, not {desc.size}")
            except ObjectCorrupted:
                raise corrupt(self.registry, what, "does not match its digest") from None
            except stream_errors() as exc:
                raise self._unreachable(self.base, exc) from None

    def read_blob(self, repo: str, digest: Digest, limit: int) -> bytes:
        """A small blob (a config) in memory, bounded and verified."""
        what = f"blob {digest.short} of {repo}"
        with self._get_blob(repo, digest, what) as resp:
            data = read_bounded(resp, limit, what)
        if Digest.of_bytes(data) != digest:
            raise corrupt(self.registry, what, "does not match its digest")
        return data

    @contextmanager
    def _get_blob(self, repo: str, digest: Digest, what: str) -> Iterator[httpx.Response]:
        # identity: the bytes on the wire are the blob, nothing decodes them first.
        with self.request(
            "GET",
            f"/v2/{repo}/blobs/{digest}",
            scope=pull_scope(repo),
            headers={"Accept-Encoding": "identity"},
        ) as resp:
            if resp.status_code == 404:
                raise ModelKitNotFound(
                    f"{self.registry} has no {what}",
                    hint="the ModelKit on the registry is incomplete; push it again",
                )
            if resp.status_code != 200:
                self._fail(resp, f"download of {what}")
            yield resp

    # -- manifests ------------------------------------------------------------------

    def get_manifest(self, repo: str, reference: str) -> Manifest:
        """Fetch a manifest (by tag or digest), verified and bounded."""
        what = f"{repo}:{reference}" if ":" not in reference else f"{repo}@{reference}"
        headers = {"Accept": MANIFEST_ACCEPT}
        with self.request(
            "GET", f"/v2/{repo}/manifests/{reference}", scope=pull_scope(repo), headers=headers
        ) as resp:
            if resp.status_code == 404:
                raise ModelKitNotFound(
                    f"{self.registry} has no {what}",
                    hint=f"see 'tether list {self.registry}/{repo}'",
                )
            if resp.status_code != 200:
                self._fail(resp, f"the manifest {what}")
            data = read_bounded(resp, MAX_MANIFEST_BYTES, f"the manifest of {what}")
            content_type = resp.headers.get("content-type", "").split(";")[0].strip()
            claimed = resp.headers.get("docker-content-digest")
        digest = Digest.of_bytes(data)
        if reference.startswith("sha256:") and str(digest) != reference:
            raise corrupt(self.registry, f"the manifest {what}", f"hashes to {digest}")
        if claimed is not None:
            if not Digest.is_valid(claimed):
                raise corrupt(self.registry, f"the manifest {what}", "has a malformed digest")
            if claimed != str(digest):
                raise corrupt(self.registry, f"the manifest {what}", "does not match its digest")
        media_type = _manifest_media_type(data, content_type, self.registry, what)
        return Manifest(data, digest, media_type)

    def head_manifest(self, repo: str, reference: str) -> Descriptor | None:
        headers = {"Accept": MANIFEST_ACCEPT}
        with self.request(
            "HEAD", f"/v2/{repo}/manifests/{reference}", scope=pull_scope(repo), headers=headers
        ) as resp:
            if resp.status_code == 404:
                return None
            if resp.status_code != 200:
                self._fail(resp, f"HEAD of {repo}:{reference}")
            claimed = resp.headers.get("docker-content-digest", "")
            length = resp.headers.get("content-length", "")
            media_type = resp.headers.get("content-type", mt.OCI_MANIFEST).split(";")[0]
        if not Digest.is_valid(claimed) or not length.isdigit():
            # Some registries do not answer HEAD fully: fetch and hash instead.
            return self.get_manifest(repo, reference).descriptor
        return Descriptor(media_type, Digest.parse(claimed), int(length))

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> bool:
        """Store a manifest under a tag or its digest. True when the registry handled
        its ``subject`` itself (``OCI-Subject``), so no fallback referrers tag is needed."""
        headers = {"Content-Type": media_type}
        with self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            scope=push_scope(repo),
            headers=headers,
            body=data,
        ) as resp:
            if resp.status_code not in (200, 201):
                self._fail(resp, f"the manifest {repo}:{reference}")
            claimed = resp.headers.get("docker-content-digest")
            if claimed and claimed != str(Digest.of_bytes(data)):
                raise corrupt(
                    self.registry,
                    f"the stored manifest {repo}:{reference}",
                    f"has the digest {claimed[:80]}",
                )
            return "oci-subject" in resp.headers

    def delete_manifest(self, repo: str, reference: str) -> None:
        with self.request(
            "DELETE", f"/v2/{repo}/manifests/{reference}", scope=delete_scope(repo)
        ) as resp:
            if resp.status_code == 404:
                raise ModelKitNotFound(
                    f"{self.registry} has no {repo}:{reference}", hint="nothing to remove"
                )
            if resp.status_code in (400, 405) and not Digest.is_valid(reference):
                # Deleting a tag alone is new in distribution-spec 1.1; older registries
                # answer 400 (distribution: DIGEST_INVALID) or 405.
                raise RegistryError(
                    f"{self.registry} cannot delete the tag {repo}:{reference} alone",
                    hint="delete the manifest by digest instead",
                    code="unsupported",
                )
            if resp.status_code not in (200, 202):
                self._fail(resp, f"deleting {repo}:{reference}")

    # -- tags and referrers ------------------------------------------------------------

    def list_tags(self, repo: str, *, page_size: int = 1000) -> list[str]:
        """Every tag of a repository, following the Link header across pages."""
        tags: list[str] = []
        url: str | None = f"/v2/{repo}/tags/list?n={page_size}"
        pages = 0
        while url is not None:
            pages += 1
            if pages > 10_000:
                raise RegistryError(
                    f"{self.registry} paginates {repo}'s tags without end",
                    hint="the registry is misbehaving",
                )
            with self.request("GET", url, scope=pull_scope(repo)) as resp:
                if resp.status_code == 404:
                    raise ModelKitNotFound(
                        f"{self.registry} has no repository {repo}",
                        hint="check the name; repositories appear with their first push",
                    )
                if resp.status_code != 200:
                    self._fail(resp, f"the tag list of {repo}")
                body = read_bounded(resp, MAX_MANIFEST_BYTES, "a tag list")
                url = _next_link(resp.headers.get("link"), str(resp.url), self._origin)
            try:
                page = json.loads(body).get("tags") or []
            except (ValueError, AttributeError):
                page = None
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise RegistryError(
                    f"{self.registry} sent a tag list that does not parse",
                    hint="the registry is misbehaving",
                )
            tags.extend(page)
        return tags

    def referrers(
        self, repo: str, digest: Digest, artifact_type: str | None = None
    ) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``digest``: the referrers API, or the
        ``sha256-<hex>`` tag where the registry has no such API."""
        params = {"artifactType": artifact_type} if artifact_type else None
        with self.request(
            "GET",
            f"/v2/{repo}/referrers/{digest}",
            scope=pull_scope(repo),
            params=params,
            headers={"Accept": mt.OCI_INDEX},
        ) as resp:
            if resp.status_code == 200:
                data = read_bounded(resp, MAX_MANIFEST_BYTES, "a referrers index")
                found = _index_descriptors(data, self.registry)
            elif resp.status_code in (404, 400, 405):
                found = None
            else:
                self._fail(resp, f"the referrers of {digest.short}")
        if found is None:
            try:
                found = _index_descriptors(
                    self.get_manifest(repo, _fallback_tag(digest)).data, self.registry
                )
            except ModelKitNotFound:
                found = []
        if artifact_type:
            found = [d for d in found if d.artifact_type == artifact_type]
        return found

    def attach(
        self, repo: str, data: bytes, media_type: str, subject: Digest, artifact_type: str
    ) -> Digest:
        """Push a manifest whose ``subject`` is ``subject`` (its blobs already pushed),
        and list it in the fallback tag when the registry lacks the referrers API."""
        digest = Digest.of_bytes(data)
        if self.put_manifest(repo, str(digest), data, media_type):
            return digest
        tag = _fallback_tag(subject)
        try:
            current = _index_descriptors(self.get_manifest(repo, tag).data, self.registry)
        except ModelKitNotFound:
            current = []
        if any(d.digest == digest for d in current):
            return digest
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [d.to_json() for d in current]
            + [Descriptor(media_type, digest, len(data), {}, artifact_type).to_json()],
        }
        index = json.dumps(doc, separators=(",", ":")).encode()
        self.put_manifest(repo, tag, index, mt.OCI_INDEX)
        return digest


def _fallback_tag(digest: Digest) -> str:
    return f"sha256-{digest.hex}"


def _manifest_media_type(data: bytes, content_type: str, registry: str, what: str) -> str:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise corrupt(registry, f"the manifest {what}", "is not JSON") from None
    if not isinstance(doc, dict):
        raise corrupt(registry, f"the manifest {what}", "is not a JSON object")
    embedded = doc.get("mediaType")
    if "manifests" in doc and "layers" in doc:
        raise corrupt(registry, f"the manifest {what}", "is both an index and a manifest")
    # CVE-2021-41190: a document that means one thing by its header, another by its body.
    generic = ("application/json", "application/octet-stream")
    if isinstance(embedded, str) and content_type and content_type not in (embedded, *generic):
        raise corrupt(
            registry, f"the manifest {what}", f"is served as {content_type} but says {embedded}"
        )
    if isinstance(embedded, str) and embedded:
        return embedded
    if "manifests" in doc:
        return mt.OCI_INDEX
    return content_type if content_type.startswith("application/vnd.") else mt.OCI_MANIFEST


def _index_descriptors(data: bytes, registry: str) -> list[Descriptor]:
    try:
        doc = json.loads(data)
        raw = doc["manifests"]
        if not isinstance(raw, list):
            raise TypeError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise corrupt(registry, "a referrers index", "does not parse") from None
    return [Descriptor.from_json(d) for d in raw]


def _next_link(link: str | None, current: str, origin: tuple[str, str, int]) -> str | None:
    if not link:
        return None
    for part in link.split(","):
        url, _, rest = part.partition(";")
        if 'rel="next"' in rest.replace(" ", "") or "rel=next" in rest.replace(" ", ""):
            target = urljoin(current, url.strip().strip("<>"))
            if origin_of(target) != origin:
                return None  # never follow pagination to another host
            return target
    return None
