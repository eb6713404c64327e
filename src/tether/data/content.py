"""What content a pointer needs, and which of it the local store lacks."""

from __future__ import annotations

import os
from collections.abc import Iterator

from tether.data import tree
from tether.data.pointer import Pointer
from tether.errors import ObjectNotFound
from tether.hashing import Digest
from tether.store.objects import ContentStore
from tether.store.statcache import StatCache


def store_reader(store: ContentStore) -> tree.TreeReader:
    return tree.TreeReader(lambda d: store.read_bytes(d, max_size=tree.MAX_TREE_BYTES))


def objects(reader: tree.TreeReader, ptr: Pointer) -> Iterator[tuple[Digest, int | None]]:
    """Every object of ``ptr`` as (digest, size): a file blob's size comes from its tree
    entry, a tree object's is None (unknown until stored). File blobs may repeat."""
    if ptr.type == "file":
        yield ptr.digest, ptr.size
        return
    yield from _tree_objects(reader, ptr.digest)


def _tree_objects(reader: tree.TreeReader, digest: Digest) -> Iterator[tuple[Digest, int | None]]:
    yield digest, None
    entries = reader.entries(digest)
    for part in reader.parts(digest):
        yield part, None
    for e in entries:
        if e.type == "dir":
            yield from _tree_objects(reader, e.digest)
        else:
            yield e.digest, e.size


def missing_locally(store: ContentStore, cache: StatCache, ptr: Pointer) -> list[Digest]:
    """Objects of ``ptr`` absent from the store. A missing tree object hides what is
    below it, so it is reported alone (fetching it reveals the rest)."""
    stamp = os.stat(store.blobs_dir).st_mtime_ns
    if cache.is_complete(ptr.digest, stamp):
        return []
    missing: set[Digest] = set()
    reader = store_reader(store)
    if ptr.type == "file":
        if not store.has(ptr.digest):
            missing.add(ptr.digest)
    else:
        _walk_missing(store, reader, ptr.digest, missing)
    if not missing:
        cache.mark_complete(ptr.digest, stamp)
    return sorted(missing, key=lambda d: d.hex)


def _walk_missing(
    store: ContentStore, reader: tree.TreeReader, digest: Digest, missing: set[Digest]
) -> None:
    try:
        data = reader.load(digest)
    except ObjectNotFound:
        missing.add(digest)
        return
    _, parts = tree.parse(data, digest)
    absent = [p for p in parts if not store.has(p)]
    if absent:
        missing.update(absent)
        return
    for e in reader.entries(digest):
        if e.type == "dir":
            _walk_missing(store, reader, e.digest, missing)
        elif not store.has(e.digest):
            missing.add(e.digest)
