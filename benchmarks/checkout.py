"""Checkout with verification: `tether checkout` (every byte hashed while it is copied)
next to the machine's limit for the same bytes, measured in one run.

    python benchmarks/checkout.py [--big-mib 1024] [--small 5000] [--repeat 3]

Data (made once, kept in bench-work/checkout/): one --big-mib MiB file from os.urandom
and --small files of 4 KiB, added to a tether project. Each repetition deletes the
working copies (small: a few files, so no slow-create window follows) and times
`tether checkout` as a process. The limit is a durable, unverified copy of the same
bytes (shutil.copyfile: copy_file_range in the kernel, then one sync),
plus the start-up of `python -c pass`. Median of --repeat. Nothing here is deleted at
the end: rerun on the same data, or remove bench-work/checkout by hand.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORK = Path("bench-work") / "checkout"


def timed(fn: object) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--small", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    root = (WORK / "proj").resolve()
    tether = [sys.executable, "-m", "tether", "-C", str(root)]
    if not (root / ".tether").exists():
        (root / "data" / "small").mkdir(parents=True)
        with open(root / "data" / "big.bin", "wb") as f:
            for _ in range(args.big_mib):
                f.write(os.urandom(1 << 20))
        for i in range(args.small):
            (root / "data" / "small" / f"{i:05d}.bin").write_bytes(os.urandom(4096))
        subprocess.run([*tether, "init"], check=True, capture_output=True)
        subprocess.run([*tether, "add", "data/big.bin", "data/small"], check=True)
    start = timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))

    def limit(files: list[Path]) -> None:
        dest = WORK / "limit"
        dest.mkdir(exist_ok=True)
        for path in files:
            shutil.copyfile(path, dest / path.name)
        os.sync()

    rows = []
    for what, target in (("big file", "data/big.bin"), ("small files", "data/small")):
        ours, base = [], []
        for _ in range(args.repeat):
            p = root / target
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            ours.append(
                timed(lambda t=target: subprocess.run([*tether, "checkout", t], check=True))
            )
        p = root / target
        files = sorted(p.iterdir()) if p.is_dir() else [p]
        for _ in range(args.repeat):
            shutil.rmtree(WORK / "limit", ignore_errors=True)
            base.append(timed(lambda f=files: limit(f)) + start)
        rows.append((what, statistics.median(ours), statistics.median(base)))
    print(f"{'checkout':<12} {'tether':>9} {'limit':>9} {'ratio':>7}")
    for what, ours_s, base_s in rows:
        print(f"{what:<12} {ours_s:>8.2f}s {base_s:>8.2f}s {ours_s / base_s:>6.2f}x")


if __name__ == "__main__":
    main()
