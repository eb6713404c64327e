"""Tracked data over sync: the content behind a checkout's pointers and its runs' inputs.

Pointer files travel with git; sync moves what they point at (file blobs, and the tree
objects of tracked folders), so a teammate who pulls the commit can check the data out,
and one who pulls a run can reproduce it from the inputs it read.

- Pushing offers the content of every pointer in the working tree that the local store
  holds whole, plus the input files of the runs being sent that the store holds.
- Pulling wants what the working tree's pointers need and the store lacks. A missing
  tree object hides the blobs below it, so pulling goes a level at a time until nothing
  more arrives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tether.data import content, paths
from tether.hashing import Digest
from tether.runs.record import RunRecord
from tether.workspace import Workspace


@dataclass(frozen=True)
class DataOffer:
    sizes: dict[str, int]  # digest → size of everything on offer
    incomplete: tuple[str, ...]  # tracked paths whose content this store lacks in part


def offer(ws: Workspace, runs: Iterable[RunRecord]) -> DataOffer:
    """What this checkout can send of its tracked data and its runs' inputs."""
    reader = content.store_reader(ws.store)
    sizes: dict[str, int] = {}
    incomplete: list[str] = []
    with ws.lock("data", shared=True):
        for ptr in paths.select_pointers(ws.root, None):
            if content.missing_locally(ws.store, ws.stat_cache, ptr):
                incomplete.append(ptr.path)
                continue
            for d, size in content.objects(reader, ptr):
                if str(d) not in sizes:
                    sizes[str(d)] = size if size is not None else ws.store.size(d)
    for run in runs:
        for f in run.files:
            if f.role == "input" and f.digest and f.digest not in sizes:
                d = Digest.parse(f.digest)
                if ws.store.has(d):
                    sizes[f.digest] = ws.store.size(d)
    return DataOffer(sizes, tuple(incomplete))


def wanted(ws: Workspace) -> list[str]:
    """What the working tree's pointers need and the store lacks (this level of it)."""
    missing: set[Digest] = set()
    for ptr in paths.select_pointers(ws.root, None):
        missing.update(content.missing_locally(ws.store, ws.stat_cache, ptr))
    return sorted(str(d) for d in missing)
