"""Pack throughput against this machine's limits, measured in the same run.

    python benchmarks/pack.py [--big-mib 2048] [--files 20000] [--file-kib 4] [--repeat 3]

Generates (once, reused across runs, under ./bench-work/) a random model file and a
dataset of many small files, then times, best of --repeat:

- limit 1, read+sha256: read every byte and hash it (what pack must at least do);
- limit 2, durable copy: read, write to a new file and fsync it (what pack must at
  least do to store the bytes safely — DESIGN §3: speed never buys durability away);
- tether pack of a Kitfile holding only the model, and one holding only the dataset,
  each into a fresh store, fsync included.

It prints throughput and the ratios pack/limit. Data generation is not timed, and the
store is a handful of files (layers are tars), so no timing follows a mass delete.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

from tether.modelkit.pack import pack
from tether.oci.reference import parse_tag_list
from tether.workspace import Workspace, init_workspace

CHUNK = 4 << 20


def generate(work: Path, big_mib: int, files: int, file_kib: int) -> tuple[Path, Path]:
    model = work / "ctx" / "models" / "model.safetensors"
    data = work / "ctx" / "data"
    if not model.exists() or model.stat().st_size != big_mib << 20:
        model.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating {big_mib} MiB model file…", file=sys.stderr)
        with open(model, "wb") as f:
            block = os.urandom(CHUNK)
            for i in range(big_mib // 4):
                f.write(hashlib.sha256(block + i.to_bytes(8, "little")).digest() + block[32:])
    marker = data / f".complete-{files}-{file_kib}"
    if not marker.exists():
        print(f"generating {files} files of {file_kib} KiB…", file=sys.stderr)
        shutil.rmtree(data, ignore_errors=True)
        for i in range(files):
            sub = data / f"shard-{i // 1000:03d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"img-{i:06d}.bin").write_bytes(os.urandom(file_kib << 10))
        marker.touch()
    return model, data


def read_sha256(paths: list[Path]) -> float:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    start = time.perf_counter()
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
    return time.perf_counter() - start


def durable_copy(paths: list[Path], dest_dir: Path) -> float:
    dest_dir.mkdir(parents=True, exist_ok=True)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    start = time.perf_counter()
    # One output file, as pack writes one layer blob: this is the limit for storing bytes.
    with open(dest_dir / "copy.bin", "wb", buffering=0) as out:
        for p in paths:
            with open(p, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    out.write(view[:n])
        os.fsync(out.fileno())
    elapsed = time.perf_counter() - start
    os.unlink(dest_dir / "copy.bin")
    return elapsed


def time_pack(work: Path, kitfile: str, tag: str) -> float:
    ctx = work / "ctx"
    (ctx / "Kitfile").write_text(kitfile)
    shutil.rmtree(ctx / ".tether", ignore_errors=True)
    init_workspace(ctx, propose_kitfile=False)
    ws = Workspace.open(ctx)
    start = time.perf_counter()
    pack(ws, tags=parse_tag_list(tag))
    elapsed = time.perf_counter() - start
    ws.close()
    return elapsed


def report(
    name: str, nbytes: int, limits: dict[str, float], packed: float, nfiles: int = 0
) -> None:
    gbps = nbytes / packed / 1e9
    extra = f", {nfiles / packed:,.0f} files/s" if nfiles else ""
    print(f"\n{name}: {nbytes / 2**20:,.0f} MiB{f' in {nfiles:,} files' if nfiles else ''}")
    for label, seconds in limits.items():
        print(f"  {label:<22} {seconds:7.2f} s  {nbytes / seconds / 1e9:6.2f} GB/s")
    print(f"  {'tether pack':<22} {packed:7.2f} s  {gbps:6.2f} GB/s{extra}")
    for label, seconds in limits.items():
        print(f"  pack / {label:<15} {seconds / packed:6.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--big-mib", type=int, default=2048)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--file-kib", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("bench-work"))
    args = parser.parse_args()
    work = args.work.resolve()
    model, data = generate(work, args.big_mib, args.files, args.file_kib)
    small = sorted(p for p in data.rglob("*.bin"))
    best = lambda f: min(f() for _ in range(args.repeat))  # noqa: E731

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, best of {args.repeat}")
    big_limits = {
        "read+sha256": best(lambda: read_sha256([model])),
        "durable copy": best(lambda: durable_copy([model], work / "scratch")),
    }
    big_pack = best(
        lambda: time_pack(
            work, "manifestVersion: 1.0.0\nmodel: {path: models/model.safetensors}\n", "b:v1"
        )
    )
    report("model file", model.stat().st_size, big_limits, big_pack)

    small_bytes = sum(p.stat().st_size for p in small)
    small_limits = {
        "read+sha256": best(lambda: read_sha256(small)),
        "durable copy": best(lambda: durable_copy(small, work / "scratch")),
    }
    small_pack = best(
        lambda: time_pack(
            work, "manifestVersion: 1.0.0\ndatasets: [{name: images, path: data}]\n", "d:v1"
        )
    )
    report("dataset", small_bytes, small_limits, small_pack, len(small))


if __name__ == "__main__":
    main()
