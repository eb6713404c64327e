"""A project's blobs in an S3-compatible bucket, for the team server (``--blobs s3://…``).

In the bucket::

    PREFIX/projects/NAME/blobs/sha256/<hex>   blobs, written only by the server, after it
                                              checked their bytes against <hex>
    PREFIX/projects/NAME/incoming/<hex>       uploads in progress: clients write here
                                              with short-lived presigned URLs

A client uploads a big blob straight to ``incoming/`` (in parts, each with its own
presigned URL, so an interrupted upload resumes with the parts the bucket lacks); the
server then reads it back, hashes it, copies it under ``blobs/`` and records it in its
ledger (a table of the server's database). The ledger, not a listing, answers "is this
blob here?" — in one query for any number of digests. Downloads are presigned GETs: the
server never carries a big body either way.

``BucketStore`` is a ``ContentStore`` whose local folder is a disposable cache: what the
server itself reads (a log to show, a ModelKit manifest) is fetched into it, verified;
what it writes (small blobs of a pack, streamed runs' files) goes to the bucket too.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Protocol

from tether.errors import ConfigError, ObjectCorrupted, StoreError
from tether.hashing import Digest
from tether.store.objects import BlobBatch, BlobWriter, ContentStore

URL_SECONDS = 900  # presigned URLs live 15 minutes
MIN_PART = 5 << 20  # S3's smallest part (but the last)
MAX_PARTS = 10_000  # S3's most parts in one upload


class Ledger(Protocol):
    """Where verified blobs are recorded (the server's database)."""

    def record(self, digest: str, size: int) -> None: ...

    def sizes(self, digests: list[str]) -> dict[str, int]: ...


@dataclass(frozen=True)
class BucketURL:
    bucket: str
    prefix: str  # no leading or trailing slash; may be empty

    @classmethod
    def parse(cls, url: str) -> BucketURL:
        rest = url.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not url.startswith("s3://") or not bucket:
            raise ConfigError(f"{url[:80]!r} is not a bucket URL", hint="s3://BUCKET[/PREFIX]")
        return cls(bucket, prefix.strip("/"))


def s3_client(env: Mapping[str, str]) -> Any:
    """A boto3 S3 client; credentials, region and endpoint come from the usual AWS
    variables and files (``AWS_ENDPOINT_URL_S3`` for an S3-compatible service)."""
    import boto3
    from botocore.config import Config

    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint or None,
        config=Config(signature_version="s3v4", retries={"max_attempts": 5, "mode": "standard"}),
    )


@dataclass(frozen=True)
class PartURL:
    number: int
    url: str


@dataclass(frozen=True)
class UploadPlan:
    """What a client needs to send one blob to the bucket: the parts the bucket lacks,
    each with its presigned PUT URL. ``upload_id`` is None for a one-request upload."""

    digest: str
    size: int
    part_size: int
    upload_id: str | None
    parts: tuple[PartURL, ...]
    done: tuple[tuple[int, str], ...]  # (part number, etag) already in the bucket

    def to_json(self) -> dict[str, Any]:
        return {
            "via": "bucket",
            "digest": self.digest,
            "size": self.size,
            "part_size": self.part_size,
            "upload_id": self.upload_id,
            "parts": [{"number": p.number, "url": p.url} for p in self.parts],
            "done": [{"number": n, "etag": e} for n, e in self.done],
        }


class Bucket:
    """One project's place in a bucket."""

    def __init__(self, client: Any, url: BucketURL, project: str, *, part_size: int) -> None:
        self.client = client
        self.name = url.bucket
        self.base = "/".join(p for p in (url.prefix, "projects", project) if p)
        self.part_size = max(MIN_PART, part_size)

    def key(self, digest: Digest) -> str:
        return f"{self.base}/blobs/sha256/{digest.hex}"

    def incoming(self, digest: Digest) -> str:
        return f"{self.base}/incoming/{digest.hex}"

    def download_url(self, digest: Digest) -> str:
        return self._sign("get_object", {"Key": self.key(digest)})

    def put(self, digest: Digest, path: Path) -> None:
        with open(path, "rb") as f:
            self.client.upload_fileobj(f, self.name, self.key(digest))

    def get(self, digest: Digest) -> BinaryIO:
        body = self.client.get_object(Bucket=self.name, Key=self.key(digest))["Body"]
        return body  # type: ignore[no-any-return]

    def plan(self, digest: Digest, size: int) -> UploadPlan:
        """How to upload ``digest`` (``size`` bytes) to ``incoming/``: in one request when
        it fits in a part, else in parts, resuming the upload a client left unfinished."""
        part = max(self.part_size, -(-size // MAX_PARTS))
        key = self.incoming(digest)
        if size <= part:
            url = self._sign("put_object", {"Key": key})
            return UploadPlan(str(digest), size, part, None, (PartURL(1, url),), ())
        upload_id, done = self._resumable(key, part)
        count = -(-size // part)
        sign = {"Key": key, "UploadId": upload_id}
        parts = tuple(
            PartURL(n, self._sign("upload_part", {**sign, "PartNumber": n}))
            for n in range(1, count + 1)
            if n not in done
        )
        return UploadPlan(str(digest), size, part, upload_id, parts, tuple(sorted(done.items())))

    def _sign(self, method: str, params: dict[str, Any]) -> str:
        return str(
            self.client.generate_presigned_url(
                method, Params={"Bucket": self.name, **params}, ExpiresIn=URL_SECONDS
            )
        )

    def _resumable(self, key: str, part: int) -> tuple[str, dict[int, str]]:
        """The newest unfinished upload of ``key`` and its whole parts, or a new one."""
        found = self.client.list_multipart_uploads(Bucket=self.name, Prefix=key).get("Uploads", [])
        for upload in sorted(found, key=lambda u: u["Initiated"], reverse=True):
            if upload["Key"] != key:
                continue
            listed = self.client.list_parts(
                Bucket=self.name, Key=key, UploadId=upload["UploadId"]
            ).get("Parts", [])
            # A part of another size was cut for another plan: sent again.
            done = {p["PartNumber"]: p["ETag"] for p in listed if p["Size"] == part}
            return str(upload["UploadId"]), done
        created = self.client.create_multipart_upload(Bucket=self.name, Key=key)
        return str(created["UploadId"]), {}

    def complete(
        self, digest: Digest, size: int, upload_id: str | None, parts: Sequence[tuple[int, str]]
    ) -> None:
        """Finish an upload, read it back, and move it under ``blobs/`` only if it hashes
        to ``digest``; refused (ObjectCorrupted) otherwise, and removed."""
        key = self.incoming(digest)
        if upload_id is not None:
            self.client.complete_multipart_upload(
                Bucket=self.name,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
            )
        h = hashlib.sha256()
        got = 0
        body = self.client.get_object(Bucket=self.name, Key=key)["Body"]
        with contextlib.closing(body):
            while chunk := body.read(8 << 20):
                h.update(chunk)
                got += len(chunk)
        if h.hexdigest() != digest.hex or got != size:
            self.client.delete_object(Bucket=self.name, Key=key)
            raise ObjectCorrupted(
                f"the upload of {digest.short} hashes to sha256:{h.hexdigest()[:12]}"
                f" ({got} bytes), not to its digest",
                hint="it was damaged on the way; send it again",
                digest=str(digest),
            )
        self.client.copy({"Bucket": self.name, "Key": key}, self.name, self.key(digest))
        self.client.delete_object(Bucket=self.name, Key=key)


class BucketStore(ContentStore):
    """The server's view of a project's blobs: the bucket and ledger are the truth, the
    local folder a cache (module docstring)."""

    def __init__(self, root: Path, tmp_dir: Path, bucket: Bucket, ledger: Ledger) -> None:
        super().__init__(root, tmp_dir)
        self.bucket = bucket
        self.ledger = ledger

    def has(self, digest: Digest) -> bool:
        # The ledger only: a cached copy whose upload failed is not shared yet.
        return bool(self.ledger.sizes([str(digest)]))

    def sizes(self, digests: list[Digest]) -> dict[Digest, int]:
        recorded = self.ledger.sizes([str(d) for d in digests])
        return {d: recorded[str(d)] for d in digests if str(d) in recorded}

    def size(self, digest: Digest) -> int:
        found = self.sizes([digest])
        if digest not in found:
            raise self._missing(digest)
        return found[digest]

    def path(self, digest: Digest) -> Path:
        self._cache(digest)
        return super().path(digest)

    def read_bytes(self, digest: Digest, *, max_size: int = 16 << 20) -> bytes:
        self._cache(digest)
        return super().read_bytes(digest, max_size=max_size)

    def _cache(self, digest: Digest) -> None:
        """Bring a recorded blob into the local folder, checked on the way in."""
        if super().has(digest) or not self.ledger.sizes([str(digest)]):
            return
        body = self.bucket.get(digest)
        with contextlib.closing(body), BlobWriter(self, expected=digest, size_hint=0) as w:
            while chunk := body.read(8 << 20):
                w.write(chunk)

    def publish(self, digest: Digest) -> None:
        """Send a blob written here to the bucket and record it (once)."""
        if self.ledger.sizes([str(digest)]):
            return
        local = super().path(digest)
        self.bucket.put(digest, local)
        self.ledger.record(str(digest), os.stat(local).st_size)

    def writer(self, *, expected: Digest | None = None, size_hint: int = 0) -> BlobWriter:
        return _PublishingWriter(self, expected=expected, size_hint=size_hint)

    def batch(self) -> BlobBatch:
        return _PublishingBatch(self)

    def delete(self, digest: Digest) -> None:
        super().delete(digest)  # the cached copy only: the bucket's is shared


class _PublishingWriter(BlobWriter):
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        super().__exit__(exc_type, exc, tb)
        if exc_type is None and self.digest is not None:
            assert isinstance(self.store, BucketStore)
            self.store.publish(self.digest)


class _PublishingBatch(BlobBatch):
    def commit(self) -> int:
        count = super().commit()
        assert isinstance(self.store, BucketStore)
        for digest in self.committed:
            self.store.publish(digest)
        return count


def check_reachable(client: Any, url: BucketURL) -> None:
    """Fail early, with a hint, when the bucket cannot be used."""
    try:
        client.head_bucket(Bucket=url.bucket)
    except Exception as e:  # botocore raises many kinds; all mean the same here
        raise StoreError(
            f"bucket {url.bucket} cannot be reached: {type(e).__name__}",
            hint="check AWS_ENDPOINT_URL_S3, the credentials in the environment and the name",
        ) from None
