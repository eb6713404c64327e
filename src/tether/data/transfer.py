"""``tether data push | fetch | pull``: moving tracked content to and from a remote.

A remote holds::

    tether-remote.json        {"format": 1}
    blobs/sha256/<hex>        blobs of 1 MiB and more, one object each (as in the store)
    packs/<hex>.pack          many small blobs back to back; <hex> is the sha256 of its
                              index's blob list (a name: each blob is checked on fetch)
    packs/<hex>.idx           {"format":1,"pack":"sha256:…","blobs":[[hex, offset, size],…]}
    chunklists/sha256/<hex>   the chunk list of a big file kept in chunks (the format of
                              ``store/chunks.py``), named by the WHOLE file's sha256

Packing is what makes many small files cheap: 50,000 files of 4 KiB travel as a few
objects instead of 50,000 requests. A file kept in chunks travels as the chunks the
remote lacks, in packs in the file's order (so fetching it is one ranged read per
pack), and its list is written only once every pack holding its chunks has its index:
a list on a remote never names a missing chunk, and a push of a 20 GB file that stops
at 90% resumes at 90% (what is lost is the packs in flight, at most ``PACK_MAX`` each).
A pulled list is kept only after its chunks add up to the file's digest.

What a remote has is learnt from three listings (``packs/``, ``blobs/sha256/`` and
``chunklists/sha256/``) plus the ``.idx`` files not seen before (they are
immutable, so they are cached in ``.tether/cache/remotes/NAME/``), never by asking per
object. A pack is written before its index, so an index names only complete packs; an
interrupted push leaves at most a pack without an index, and the next push sends what
no index lists. Every blob fetched is hashed and compared with its digest before it
enters the store; a mismatch is refused and named.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tether.data import content, paths
from tether.data.checkout import CheckoutReport, checkout
from tether.data.pointer import Pointer
from tether.data.remote import (
    TEMP_GRACE_S,
    Backend,
    LocalBackend,
    RemoteConfig,
    default_remote,
    list_remotes,
    open_backend,
    resolve,
)
from tether.errors import ObjectCorrupted, RemoteError, StoreError
from tether.hashing import Digest
from tether.reporting import SILENT, Reporter
from tether.store.atomic import write_atomic
from tether.store.chunks import MAX_SIZE, ChunkList
from tether.workspace import Workspace

FORMAT = 1
LARGE = 1 << 20  # blobs from this size travel alone
PACK_MAX = 64 << 20
PACK_MIN = 4 << 20
COALESCE_GAP = 1 << 20  # fetch neighbouring blobs of a pack in one ranged read


@dataclass(frozen=True)
class DataTransferReport:
    remote: str
    objects: int  # objects that travelled
    bytes: int
    packs: int
    skipped: int  # objects the other side already had
    failed: list[str] = field(default_factory=list)
    repaired: int = 0  # corrupt local objects set aside and fetched again (pull)
    chunks: int = 0  # of ``objects``: chunks of files kept in chunks
    chunked_files: int = 0  # files whose chunk list travelled

    def to_json(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "objects": self.objects,
            "chunks": self.chunks,
            "chunked_files": self.chunked_files,
            "bytes": self.bytes,
            "packs": self.packs,
            "already_there": self.skipped,
            "repaired": self.repaired,
        }


@dataclass(frozen=True)
class _Located:
    pack: str | None  # pack hex, or None for a loose blob
    offset: int
    size: int


class RemoteIndex:
    """What a remote holds: loose blobs by listing, packed blobs from the index files."""

    def __init__(self, ws: Workspace, remote: RemoteConfig, backend: Backend, jobs: int) -> None:
        self.backend = backend
        self.cache_dir = ws.dot / "cache" / "remotes" / remote.name
        self.tmp_dir = ws.dot / "tmp"
        self.jobs = jobs
        self.where: dict[Digest, _Located] = {}
        self.chunked: set[Digest] = set()  # files held as a chunk list
        self.pack_sizes: dict[str, int] = {}

    def holds(self, digest: Digest) -> bool:
        """Whether the remote has a file, whole or in chunks."""
        return digest in self.where or digest in self.chunked

    def load(self) -> None:
        self.where.clear()
        self.chunked = {
            Digest(name)
            for name in self.backend.list("chunklists/sha256")
            if Digest.is_valid("sha256:" + name)
        }
        names = self.backend.list("packs")
        idx = [n[: -len(".idx")] for n in names if n.endswith(".idx")]
        todo = [h for h in idx if not (self.cache_dir / f"{h}.idx").is_file()]
        if todo:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with ThreadPoolExecutor(self.jobs) as pool:
                list(pool.map(self._download_idx, todo))
        for h in idx:
            self._add_index(h, (self.cache_dir / f"{h}.idx").read_bytes())
        for name in self.backend.list("blobs/sha256"):
            if Digest.is_valid("sha256:" + name):
                self.where.setdefault(Digest(name), _Located(None, 0, -1))

    def _download_idx(self, pack_hex: str) -> None:
        data = self.backend.read(f"packs/{pack_hex}.idx")
        self._parse_idx(pack_hex, data)  # refuse garbage before caching it
        write_atomic(self.cache_dir / f"{pack_hex}.idx", data, tmp_dir=self.tmp_dir)

    def _parse_idx(self, pack_hex: str, data: bytes) -> list[tuple[Digest, int, int]]:
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT or doc.get("pack") != f"sha256:{pack_hex}":
                raise ValueError("format or pack name")
            return [(Digest(h), int(o), int(s)) for h, o, s in doc["blobs"]]
        except Exception as exc:
            raise RemoteError(
                f"pack index {pack_hex[:12]} on {self.backend.description} is damaged ({exc})",
                hint="delete packs/" + pack_hex + ".idx on the remote and push again",
            ) from None

    def _add_index(self, pack_hex: str, data: bytes) -> None:
        end = 0
        for digest, offset, size in self._parse_idx(pack_hex, data):
            self.where.setdefault(digest, _Located(pack_hex, offset, size))
            end = max(end, offset + size)
        self.pack_sizes[pack_hex] = end

    def record_pack(self, pack_hex: str, idx: bytes) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.cache_dir / f"{pack_hex}.idx", idx, tmp_dir=self.tmp_dir)


def _jobs(jobs: int | None, backend: Backend) -> int:
    if jobs:
        return jobs
    cpus = os.cpu_count() or 2
    # A directory is bound by CPU and disk: more threads than cores only fight over the
    # GIL. Object stores are bound by request latency: keep many requests in flight.
    return cpus if isinstance(backend, LocalBackend) else min(32, 4 * cpus)


def _open(ws: Workspace, remote_name: str | None) -> tuple[RemoteConfig, Backend]:
    remote = resolve(ws, remote_name)
    backend = open_backend(ws, remote)
    marker = "tether-remote.json"
    try:
        if not backend.exists(marker):
            backend.write_bytes(marker, json.dumps({"format": FORMAT}).encode())
    except RemoteError:
        raise
    except Exception as exc:
        raise RemoteError(
            f"remote {remote.name} ({backend.description}) cannot be reached: {exc}",
            hint="check the URL, the network and the credentials in your environment",
        ) from None
    return remote, backend


def _session(
    ws: Workspace,
    targets: list[str | Path] | None,
    remote: str | None,
    base: Path | None,
    jobs: int | None,
) -> tuple[list[Pointer], RemoteConfig, Backend, int, RemoteIndex]:
    """What a transfer works on: the pointers, the remote (reachable), the worker count
    and the remote's (not yet loaded) index."""
    pointers = paths.select_pointers(ws.root, targets, base=base)
    cfg, backend = _open(ws, remote)
    n = _jobs(jobs, backend)
    return pointers, cfg, backend, n, RemoteIndex(ws, cfg, backend, n)


# -- push ---------------------------------------------------------------------------------


def push(
    ws: Workspace,
    targets: list[str | Path] | None = None,
    *,
    remote: str | None = None,
    base: Path | None = None,
    jobs: int | None = None,
    report: Reporter = SILENT,
) -> DataTransferReport:
    """Send the content of the named pointers (default: all) that the remote lacks."""
    pointers, cfg, backend, n, index = _session(ws, targets, remote, base, jobs)
    with contextlib.suppress(OSError):  # housekeeping must never fail a push
        backend.sweep_temps(TEMP_GRACE_S)
    with ws.lock("data", shared=True, on_wait=report.waiting):
        needed = _local_objects(ws, pointers)
        index.load()
        send = {d: s for d, s in needed.items() if not index.holds(d)}
        lists = {
            d: ws.store.chunks.load(d)
            for d in send
            if not ws.store.has_blob(d) and ws.store.chunks.has(d)
        }
        large = [(d, s) for d, s in send.items() if s >= LARGE and d not in lists]
        packed = sorted(((d, s) for d, s in send.items() if s < LARGE), key=lambda x: x[0].hex)
        queued = {d for d, _ in packed}
        chunks = 0
        for listed in lists.values():
            for c, size in listed.chunks:  # in the file's order: a fetch reads packs through
                if c not in index.where and c not in queued:
                    queued.add(c)
                    packed.append((c, size))
                    chunks += 1
        groups = _pack_groups(packed, n)

        def send_pack(group: list[tuple[Digest, int]]) -> int:
            blob_list = []
            parts = []
            offset = 0
            for d, _size in group:
                data = ws.store.read_bytes(d, max_size=MAX_SIZE)  # verified: never push rot
                parts.append(data)
                blob_list.append([d.hex, offset, len(data)])
                offset += len(data)
            # Named by what it holds (its blobs, each already verified as read, and
            # verified again on fetch): hashing the pack's bytes again would double
            # the push's hashing for nothing.
            listing = json.dumps(blob_list, separators=(",", ":")).encode()
            pack_hex = hashlib.sha256(listing).hexdigest()
            idx = json.dumps(
                {"format": FORMAT, "pack": f"sha256:{pack_hex}", "blobs": blob_list},
                separators=(",", ":"),
            ).encode()
            backend.write_parts(f"packs/{pack_hex}.pack", parts)
            backend.write_bytes(f"packs/{pack_hex}.idx", idx)  # last: names a whole pack
            index.record_pack(pack_hex, idx)
            report.advance(offset)
            return offset

        def send_large(item: tuple[Digest, int]) -> int:
            d, s = item
            if not ws.store.verify(d):
                raise ObjectCorrupted(
                    f"blob {d} in the local store is corrupted; it was not pushed",
                    hint="run 'tether fsck', then restore the file and 'tether add' it",
                )
            backend.write_file(f"blobs/sha256/{d.hex}", ws.store.path(d))
            report.advance(s)
            return s

        def send_list(listed: ChunkList) -> None:
            data = listed.to_bytes()
            backend.write_bytes(f"chunklists/sha256/{listed.digest.hex}", data)

        sent = 0
        with ThreadPoolExecutor(n, thread_name_prefix="tether-push") as pool:
            futures = [pool.submit(send_large, item) for item in large]
            futures += [pool.submit(send_pack, g) for g in groups]
            for fut in futures:
                sent += fut.result()
            # Only now: every chunk a list names is on the remote, in an indexed pack.
            list(pool.map(send_list, lists.values()))
    return DataTransferReport(
        cfg.name,
        len(large) + len(packed),
        sent,
        len(groups),
        len(needed) - len(send),
        chunks=chunks,
        chunked_files=len(lists),
    )


def _pack_groups(items: list[tuple[Digest, int]], jobs: int) -> list[list[tuple[Digest, int]]]:
    """Cut ``items`` (in order) into packs: big enough to make few requests, small
    enough that every worker gets some and an interrupted push loses little."""
    target = max(PACK_MIN, min(PACK_MAX, sum(s for _, s in items) // jobs + 1))
    groups: list[list[tuple[Digest, int]]] = [[]]
    size = 0
    for d, s in items:
        if size + s > target and groups[-1]:
            groups.append([])
            size = 0
        groups[-1].append((d, s))
        size += s
    return [g for g in groups if g]


@dataclass(frozen=True)
class RemoteSweep:
    remote: str
    removed: tuple[str, ...]  # temporary files of interrupted pushes

    def to_json(self) -> dict[str, Any]:
        return {"remote": self.remote, "removed_temp_files": list(self.removed)}


def sweep_remote(ws: Workspace, remote: str | None = None) -> RemoteSweep:
    """Remove what interrupted pushes left on a remote (temp files untouched for
    ``TEMP_GRACE_S``)."""
    cfg, backend = _open(ws, remote)
    return RemoteSweep(cfg.name, tuple(backend.sweep_temps(TEMP_GRACE_S)))


def _local_objects(ws: Workspace, pointers: list[Pointer]) -> dict[Digest, int]:
    reader = content.store_reader(ws.store)
    out: dict[Digest, int] = {}
    for ptr in pointers:
        missing = content.missing_locally(ws.store, ws.stat_cache, ptr)
        if missing:
            raise RemoteError(
                f"{ptr.path}: {len(missing)} object(s) are not in the local store, so "
                "they cannot be pushed",
                hint=f"re-add the data (tether add {ptr.path}) or pull it from where it is",
            )
        for d, size in content.objects(reader, ptr):
            if d not in out:
                out[d] = size if size is not None else ws.store.size(d)
    return out


# -- fetch / pull -------------------------------------------------------------------------


def fetch(
    ws: Workspace,
    targets: list[str | Path] | None = None,
    *,
    remote: str | None = None,
    base: Path | None = None,
    jobs: int | None = None,
    report: Reporter = SILENT,
) -> DataTransferReport:
    """Download into the store what the named pointers need and the store lacks."""
    pointers, cfg, backend, n, index = _session(ws, targets, remote, base, jobs)
    with (
        ws.lock("data", on_wait=report.waiting),
        ws.lock("gc", shared=True, on_wait=report.waiting),
    ):
        index_loaded = False
        total = _Got()
        seen_failed: set[Digest] = set()
        while True:
            missing: set[Digest] = set()
            for ptr in pointers:
                missing.update(content.missing_locally(ws.store, ws.stat_cache, ptr))
            missing -= seen_failed
            if not missing:
                break
            if not index_loaded:
                index.load()
                index_loaded = True
            _refuse_absent(cfg, index, missing)
            got = _get(_Source(ws, cfg, backend, index, n, report), missing)
            total = total.plus(got)
            seen_failed.update(got.bad)
            if got.done == 0:
                break
        failed = [str(d) for d in total.bad]
        _refuse_corrupt(cfg, failed)
    return DataTransferReport(
        cfg.name,
        total.objects,
        total.bytes,
        total.packs,
        0,
        failed,
        chunks=total.chunks,
        chunked_files=total.chunked_files,
    )


@dataclass(frozen=True)
class _Got:
    """What one round of downloads did."""

    objects: int = 0  # blobs and chunks that travelled
    bytes: int = 0
    packs: int = 0
    chunks: int = 0
    chunked_files: int = 0
    done: int = 0  # wanted files now in the store
    bad: tuple[Digest, ...] = ()  # refused: not their digest

    def plus(self, other: _Got) -> _Got:
        return _Got(
            self.objects + other.objects,
            self.bytes + other.bytes,
            self.packs + other.packs,
            self.chunks + other.chunks,
            self.chunked_files + other.chunked_files,
            self.done + other.done,
            self.bad + other.bad,
        )


@dataclass(frozen=True)
class _Source:
    """Where a fetch reads from (a remote, its backend and index), for whom, and how."""

    ws: Workspace
    cfg: RemoteConfig
    backend: Backend
    index: RemoteIndex
    jobs: int
    report: Reporter

    def download(self, wanted: set[Digest]) -> tuple[int, int, int, list[Digest]]:
        return _download(self.ws, self.backend, self.index, wanted, self.jobs, self.report)


def _get(src: _Source, wanted: set[Digest]) -> _Got:
    """Download ``wanted`` (all on the remote): whole blobs as they are held, files kept
    in chunks as the chunks the store lacks, then their lists once they add up."""
    whole = {d for d in wanted if d in src.index.where}
    got, nbytes, npacks, bad = src.download(whole)
    result = _Got(got, nbytes, npacks, done=got, bad=tuple(bad))
    chunked = wanted - whole
    if chunked:
        result = result.plus(_get_chunked(src, chunked))
    return result


def _get_chunked(src: _Source, wanted: set[Digest]) -> _Got:
    ws, index, jobs = src.ws, src.index, src.jobs

    def get_list(d: Digest) -> ChunkList | Digest:
        try:
            return ChunkList.parse(d, src.backend.read(f"chunklists/sha256/{d.hex}"))
        except StoreError:
            return d  # damaged on the remote: refused like a blob that is not its digest

    with ThreadPoolExecutor(jobs, thread_name_prefix="tether-fetch") as pool:
        read = list(pool.map(get_list, sorted(wanted, key=lambda d: d.hex)))
    lists = [x for x in read if isinstance(x, ChunkList)]
    bad = [x for x in read if isinstance(x, Digest)]
    need = {c for listed in lists for c, _ in listed.chunks if not ws.store.has_blob(c)}
    _refuse_absent(src.cfg, index, need)
    total = _Got()
    quarantine = ws.dot / "quarantine"
    for attempt in range(2):
        got, nbytes, npacks, refused = src.download(need)
        total = total.plus(_Got(got, nbytes, npacks, chunks=got))
        need = set()

        def adopt(listed: ChunkList) -> tuple[ChunkList, list[Digest] | None]:
            try:
                return listed, ws.store.chunks.adopt(listed)
            except ObjectCorrupted:
                return listed, None  # good chunks that are not the file: the list lies

        with ThreadPoolExecutor(jobs, thread_name_prefix="tether-adopt") as pool:
            adopted = list(pool.map(adopt, lists))
        lists = []
        for listed, absent in adopted:
            if absent is None or (absent and (attempt == 1 or set(absent) & set(refused))):
                bad.append(listed.digest)
            elif absent:
                # A chunk this store held is damaged: set it aside and fetch it again.
                for c in absent:
                    ws.store.set_aside(c, quarantine)
                need.update(c for c in absent if c in index.where)
                lists.append(listed)
            else:
                total = total.plus(_Got(chunked_files=1, done=1))
        if not lists:
            break
        ws.store.sync()
    return total.plus(_Got(bad=tuple(bad)))


def _download(
    ws: Workspace,
    backend: Backend,
    index: RemoteIndex,
    wanted: set[Digest],
    jobs: int,
    report: Reporter,
) -> tuple[int, int, int, list[Digest]]:
    by_pack: dict[str, list[tuple[Digest, _Located]]] = defaultdict(list)
    loose: list[Digest] = []
    for d in wanted:
        loc = index.where[d]
        if loc.pack is None:
            loose.append(d)
        else:
            by_pack[loc.pack].append((d, loc))
    batch = ws.store.batch()
    bad: list[Digest] = []

    def get_ranges(pack_hex: str, items: list[tuple[Digest, _Located]]) -> tuple[int, int]:
        items.sort(key=lambda x: x[1].offset)
        runs: list[list[tuple[Digest, _Located]]] = [[]]
        for item in items:
            if runs[-1]:
                last = runs[-1][-1][1]
                if item[1].offset - (last.offset + last.size) > COALESCE_GAP:
                    runs.append([])
            runs[-1].append(item)
        got = nbytes = 0
        for run in runs:
            start = run[0][1].offset
            end = run[-1][1].offset + run[-1][1].size
            data = backend.read(f"packs/{pack_hex}.pack", start, end)
            nbytes += len(data)
            for d, loc in run:
                blob = data[loc.offset - start : loc.offset - start + loc.size]
                if hashlib.sha256(blob).hexdigest() != d.hex or len(blob) != loc.size:
                    bad.append(d)
                    continue
                batch.add(blob, d)
                got += 1
            report.advance(len(data))
        batch.commit()  # per pack: an interrupted fetch keeps what arrived
        return got, nbytes

    def get_loose(d: Digest) -> tuple[int, int]:
        try:
            with (
                backend.open_read(f"blobs/sha256/{d.hex}") as src,
                ws.store.writer(expected=d, size_hint=LARGE * 64) as w,
            ):
                while chunk := src.read(4 << 20):
                    w.write(chunk)
                    report.advance(len(chunk))
        except ObjectCorrupted:
            bad.append(d)
            return 0, 0
        return 1, w.size

    got = nbytes = 0
    try:
        with ThreadPoolExecutor(jobs, thread_name_prefix="tether-fetch") as pool:
            futures = [pool.submit(get_ranges, h, items) for h, items in by_pack.items()]
            futures += [pool.submit(get_loose, d) for d in loose]
            for fut in futures:
                g, b = fut.result()
                got += g
                nbytes += b
        batch.commit()
    except BaseException:
        batch.discard()
        raise
    return got, nbytes, len(by_pack), bad


def locate(ws: Workspace, digests: Iterable[Digest]) -> tuple[dict[Digest, str], list[str]]:
    """Which configured remote (the default first) holds each of ``digests``; also the
    remotes that could not be read, as messages. Digests no remote holds are absent."""
    wanted = set(digests)
    found: dict[Digest, str] = {}
    unreachable: list[str] = []
    if not wanted:
        return found, unreachable
    first = default_remote(ws)
    remotes = sorted(list_remotes(ws), key=lambda r: r.name != first)
    for cfg in remotes:
        todo = wanted - found.keys()
        if not todo:
            break
        try:
            cfg, backend = _open(ws, cfg.name)
            index = RemoteIndex(ws, cfg, backend, _jobs(None, backend))
            index.load()
        except RemoteError as exc:
            unreachable.append(exc.message)
            continue
        for d in todo:
            if index.holds(d):
                found[d] = cfg.name
    return found, unreachable


def fetch_objects(
    ws: Workspace,
    digests: Iterable[Digest],
    *,
    remote: str,
    report: Reporter = SILENT,
) -> int:
    """Download the named blobs from one remote into the store, each verified; returns
    how many arrived. A blob that fails verification is refused (RemoteError)."""
    cfg, backend = _open(ws, remote)
    n = _jobs(None, backend)
    index = RemoteIndex(ws, cfg, backend, n)
    with ws.lock("gc", shared=True):
        wanted = {d for d in digests if not ws.store.has(d)}
        if not wanted:
            return 0
        index.load()
        _refuse_absent(cfg, index, wanted)
        got = _get(_Source(ws, cfg, backend, index, n, report), wanted)
    _refuse_corrupt(cfg, [str(d) for d in got.bad])
    return got.done


def _refuse_absent(cfg: RemoteConfig, index: RemoteIndex, wanted: set[Digest]) -> None:
    absent = sorted(d for d in wanted if not index.holds(d))
    if absent:
        raise RemoteError(
            f"{len(absent)} object(s) are not on remote {cfg.name}, e.g. {absent[0]}",
            hint="push them from the clone that added the data: tether data push",
        )


def _refuse_corrupt(cfg: RemoteConfig, failed: list[str]) -> None:
    if failed:
        raise RemoteError(
            f"{len(failed)} object(s) from remote {cfg.name} did not match their digest "
            f"and were refused, e.g. {failed[0]}",
            hint="the remote copy is corrupt: push it again from a clone that has good "
            "data, or restore it from a backup",
        )


def pull(
    ws: Workspace,
    targets: list[str | Path] | None = None,
    *,
    remote: str | None = None,
    base: Path | None = None,
    jobs: int | None = None,
    force: bool = False,
    report: Reporter = SILENT,
) -> tuple[DataTransferReport, CheckoutReport]:
    """Fetch, then check out the named pointers.

    A local blob that checkout finds corrupt is set aside (``.tether/quarantine/``) and
    fetched again from the remote, so pulling is also how rotten local data is repaired."""
    fetched = fetch(ws, targets, remote=remote, base=base, jobs=jobs, report=report)
    repaired: set[str] = set()
    while True:
        try:
            done = checkout(ws, targets, base=base, force=force, report=report)
        except ObjectCorrupted as exc:
            if exc.digest is None or exc.digest in repaired:
                raise
            repaired.add(exc.digest)
            digest = Digest.parse(exc.digest)
            ws.store.quarantine(digest, ws.dot / "quarantine")
            fetch_objects(ws, [digest], remote=fetched.remote, report=report)
            continue
        if repaired:
            fetched = replace(fetched, repaired=len(repaired))
        return fetched, done
