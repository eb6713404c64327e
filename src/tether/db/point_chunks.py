"""How metric points are kept: a chunk of one series per row, its columns packed.

One row per point cost about 220 bytes and a row's overhead on every write (PostgreSQL
takes in ~50,000 such rows a second on two cores). A chunk holds the points one write
added to one series, as three little-endian arrays::

    steps   int64 × count
    ats     float64 × count     seconds since the epoch
    vals    float64 × count     NaN where the value was not a number

24 bytes a point, and one row per series per flush, whatever the batch's size. A row
also carries its series' ``ordinal`` (points logged before it) and its step range, so
reads take the chunks of a step range through the primary key.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence

CHUNK_COLUMNS = (
    "run_id",
    "key",
    "ordinal",
    "count",
    "min_step",
    "max_step",
    "steps",
    "ats",
    "vals",
)
MAX_CHUNK = 65_536  # points in one row: a migrated series is cut at this many
_SWAP = sys.byteorder == "big"


def pack(typecode: str, values: Sequence[float] | Sequence[int]) -> bytes:
    packed = array(typecode, values)
    if _SWAP:
        packed.byteswap()
    return packed.tobytes()


def unpack(typecode: str, data: bytes) -> array:  # type: ignore[type-arg]
    found = array(typecode)
    found.frombytes(data)
    if _SWAP:
        found.byteswap()
    return found


def row(
    run_id: str, key: str, ordinal: int, steps: Sequence[int], ats: Sequence[float],
    values: Sequence[float],
) -> tuple[object, ...]:  # fmt: skip
    return (
        run_id,
        key,
        ordinal,
        len(steps),
        min(steps),
        max(steps),
        pack("q", steps),
        pack("d", ats),
        pack("d", values),
    )


def points(steps: bytes, ats: bytes, vals: bytes) -> zip[tuple[int, float, float]]:
    """A chunk's (step, at, value) points, as logged."""
    return zip(unpack("q", steps), unpack("d", ats), unpack("d", vals), strict=True)
