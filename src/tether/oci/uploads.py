"""Blob uploads: monolithic below a threshold, chunked and resumable above it, and
cross-repository mounts.

A chunked upload writes a journal (upload location, bytes acknowledged) next to the
store, so an interrupted push resumes where the registry says it stands (``GET`` on the
upload location answers ``Range: 0-<end>``) instead of starting over.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urljoin

from tether.errors import RegistryError
from tether.hashing import Digest
from tether.oci.manifest import Descriptor
from tether.oci.session import (
    Progress,
    RegistrySession,
    pull_scope,
    push_scope,
)

if TYPE_CHECKING:
    import httpx


_READ = 1 << 20


class BlobUploads(RegistrySession):
    """The upload half of the client (``RegistryClient`` adds everything else)."""

    def mount_blob(self, repo: str, digest: Digest, source_repo: str) -> bool:
        """Ask the registry to link a blob from another repository; True when it did.

        A registry that cannot mount starts an ordinary upload instead; that session
        is cancelled here and the caller uploads."""
        scope = f"{push_scope(repo)} {pull_scope(source_repo)}"
        params = {"mount": str(digest), "from": source_repo}
        with self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope, params=params) as resp:
            if resp.status_code == 201:
                return True
            location = resp.headers.get("location") if resp.status_code == 202 else None
        if location:
            self._cancel_upload(repo, location)
        return False

    def upload_blob(
        self,
        repo: str,
        desc: Descriptor,
        open_source: Callable[[], BinaryIO],
        progress: Progress | None = None,
    ) -> int:
        """Upload a blob the repository lacks; returns the bytes sent.

        Small blobs go up in one PUT. Big ones go in chunks whose upload location is
        kept in the journal, so that after a dropped connection or a killed process
        the next push asks the registry where the upload stands and sends the rest."""
        if desc.size < self.chunk_threshold:
            location = self._start_upload(repo)
            self._send_range(
                repo, location, open_source, 0, desc.size, progress, finish=desc.digest
            )
            return desc.size
        journal = self._journal_file(repo, desc.digest)
        resumed, offset = self._resume_point(repo, journal)
        location = resumed or self._start_upload(repo)
        if progress and offset:
            progress(offset)
        sent = 0
        while desc.size - offset > self.chunk_size:
            end = offset + self.chunk_size
            location = self._send_range(repo, location, open_source, offset, end, progress)
            sent += end - offset
            offset = end
            self._save_journal(journal, location, offset)
        self._send_range(
            repo, location, open_source, offset, desc.size, progress, finish=desc.digest
        )
        sent += desc.size - offset
        if journal is not None:
            journal.unlink(missing_ok=True)
        return sent

    def _start_upload(self, repo: str) -> str:
        with self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=push_scope(repo)) as resp:
            if resp.status_code != 202:
                self._fail(resp, f"an upload to {repo}")
            return self._location(resp)

    def _send_range(
        self,
        repo: str,
        location: str,
        open_source: Callable[[], BinaryIO],
        start: int,
        end: int,
        progress: Progress | None,
        *,
        finish: Digest | None = None,
    ) -> str:
        """Send bytes ``start:end`` of the blob: a PATCH chunk (returns the session's
        next location) or, with ``finish``, the closing PUT that names the digest."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(end - start)}
        if finish is None:
            method, expect, params = "PATCH", 202, None
            headers["Content-Range"] = f"{start}-{end - 1}"
            what = f"a chunk of an upload to {repo}"
        else:
            method, expect, params = "PUT", 201, {"digest": str(finish)}
            what = f"the upload of blob {finish.short} to {repo}"
        body = _file_body(open_source, start, end, progress)
        with self.request(
            method, location, scope=push_scope(repo), headers=headers, body=body, params=params
        ) as resp:
            if resp.status_code != expect:
                self._fail(resp, what)
            return self._location(resp) if finish is None else location

    def _cancel_upload(self, repo: str, location: str) -> None:
        # Best effort: an abandoned session expires on the registry by itself.
        with suppress(RegistryError), self.request("DELETE", location, scope=push_scope(repo)):
            pass

    def _location(self, resp: httpx.Response) -> str:
        location = resp.headers.get("location")
        if not location:
            raise RegistryError(
                f"{self.registry} started an upload without a Location",
                hint="the registry is misbehaving",
            )
        # An upload session on another host gets no Authorization: _send strips it.
        return str(urljoin(str(resp.url), location))

    # An upload journal entry: where a chunked upload stands, to resume after a crash.
    def _journal_file(self, repo: str, digest: Digest) -> Path | None:
        if self.upload_journal is None:
            return None
        key = Digest.of_bytes(f"{self.registry}/{repo}@{digest}".encode()).hex[:32]
        return self.upload_journal / f"{key}.json"

    def _resume_point(self, repo: str, journal: Path | None) -> tuple[str | None, int]:
        if journal is None or not journal.is_file():
            return None, 0
        try:
            saved = json.loads(journal.read_text())
            location = str(saved["location"])
        except (ValueError, KeyError, OSError):
            return None, 0
        with self.request("GET", location, scope=push_scope(repo)) as resp:
            if resp.status_code != 204:
                return None, 0  # expired or unknown: start again
            rng = resp.headers.get("range", "")
            new_location = self._location(resp)
        start, _, end = rng.partition("-")
        if start != "0" or not end.isdigit():
            return None, 0
        return new_location, int(end) + 1

    def _save_journal(self, journal: Path | None, location: str, offset: int) -> None:
        if journal is None:
            return
        from tether.store.atomic import write_atomic

        journal.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"location": location, "offset": offset}).encode()
        write_atomic(journal, data, mode=0o600)


def _file_body(
    open_source: Callable[[], BinaryIO], start: int, end: int, progress: Progress | None
) -> Callable[[], Iterator[bytes]]:
    """A body that can be produced again (a retry after a token expired)."""

    def gen() -> Iterator[bytes]:
        with open_source() as f:
            f.seek(start)
            left = end - start
            while left > 0:
                chunk = f.read(min(_READ, left))
                if not chunk:
                    raise RegistryError(
                        "a blob being uploaded got shorter", hint="the store changed; run gc"
                    )
                left -= len(chunk)
                if progress:
                    progress(len(chunk))
                yield chunk

    return gen
