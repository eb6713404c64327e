"""Push and pull against a real registry, next to skopeo doing the same copies.

    python benchmarks/registry.py [--big-mib 2048] [--files 20000] [--file-kib 4] [--repeat 2]

Needs Debian's docker-registry and skopeo. Generates (once, reused, under
./bench-work/) a random model file and a dataset of many small files, packs one
ModelKit of each, then times, best of --repeat, each against a fresh registry on
127.0.0.1 (so no run benefits from blobs an earlier one left there):

- push:  ``tether push`` from the store   vs  ``skopeo copy oci:STORE:REF docker://…``
- pull:  ``tether pull`` into a new store vs  ``skopeo copy docker://… oci:DIR``

Both sides verify digests and fsync nothing more than they normally do; both run as
separate processes, so start-up is included for both. Ratios below 1.00 mean tether is
faster. The registry's own disk writes are part of every push; a pull's are the
client's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from pack import generate  # noqa: E402  (the pack benchmark's data generator)
from tests.registry import Registry, start_registry  # noqa: E402

KITFILES = {
    "big": "manifestVersion: 1.0.0\npackage: {name: big}\n"
    "model: {name: big, path: models/model.safetensors}\n",
    "files": "manifestVersion: 1.0.0\npackage: {name: files}\ndatasets:\n"
    "  - {name: images, path: data}\n",
}


def tether(*args: str, cwd: Path) -> float:
    return run(["tether", *args], cwd=cwd)


def run(argv: list[str], cwd: Path | None = None) -> float:
    """Run a command to completion; its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def prepare(work: Path, big_mib: int, files: int, file_kib: int) -> Path:
    generate(work, big_mib, files, file_kib)
    proj = work / "registry-proj"
    if not (proj / ".tether").exists():
        proj.mkdir(parents=True, exist_ok=True)
        # Hard links: the pack benchmark's files, as regular files of this project.
        for name in ("models", "data"):
            subprocess.run(["cp", "-al", str(work / "ctx" / name), str(proj / name)], check=True)
        tether("init", "--no-kitfile", cwd=proj)
    for kind, kitfile in KITFILES.items():
        (proj / f"Kitfile.{kind}").write_text(kitfile)
        tether("pack", "-f", f"Kitfile.{kind}", "-t", f"{kind}:v1", cwd=proj)
    return proj


def fresh_registry(root: Path) -> Registry:
    shutil.rmtree(root, ignore_errors=True)
    return start_registry(root)


def measure(work: Path, proj: Path, kind: str, repeat: int) -> dict[str, float]:
    best: dict[str, float] = {}
    store = proj / ".tether" / "store"
    for i in range(repeat):
        for tool in ("tether", "skopeo"):
            reg = fresh_registry(work / "registry-data")
            ref = f"{reg.host}/bench/{kind}:v1"
            target = work / f"pull-{tool}-{i}"
            shutil.rmtree(target, ignore_errors=True)
            try:
                if tool == "tether":
                    push = tether("push", f"{kind}:v1", ref, "--plain-http", cwd=proj)
                    target.mkdir()
                    tether("init", "--no-kitfile", cwd=target)
                    pull = tether("pull", ref, "--plain-http", cwd=target)
                else:
                    push = run(
                        [
                            "skopeo",
                            "copy",
                            "--quiet",
                            "--dest-tls-verify=false",
                            f"oci:{store}:{kind}:v1",
                            f"docker://{ref}",
                        ]
                    )
                    pull = run(
                        [
                            "skopeo",
                            "copy",
                            "--quiet",
                            "--src-tls-verify=false",
                            f"docker://{ref}",
                            f"oci:{target}:{kind}:v1",
                        ]
                    )
            finally:
                reg.stop()
            shutil.rmtree(target, ignore_errors=True)
            for op, seconds in (("push", push), ("pull", pull)):
                key = f"{tool} {op}"
                best[key] = min(best.get(key, float("inf")), seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big-mib", type=int, default=2048)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--file-kib", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("bench-work"))
    args = parser.parse_args()
    for tool in ("skopeo", "tether"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    work = args.work.resolve()
    proj = prepare(work, args.big_mib, args.files, args.file_kib)
    os.environ.setdefault("DOCKER_CONFIG", str(work / "docker-config"))
    sizes = {"big": args.big_mib << 20, "files": args.files * (args.file_kib << 10)}
    print(f"registry push/pull, best of {args.repeat}, fresh registry each time")
    head = ("artifact", "op", "tether", "skopeo", "ratio", "tether MiB/s")
    print(f"{head[0]:<26} {head[1]:<5} {head[2]:>9} {head[3]:>9} {head[4]:>7} {head[5]:>13}")
    for kind, label in (
        ("big", f"{args.big_mib} MiB model"),
        ("files", f"{args.files} files x {args.file_kib} KiB"),
    ):
        best = measure(work, proj, kind, args.repeat)
        for op in ("push", "pull"):
            t, s = best[f"tether {op}"], best[f"skopeo {op}"]
            rate = sizes[kind] / t / (1 << 20)
            print(f"{label:<26} {op:<5} {t:>8.2f}s {s:>8.2f}s {t / s:>6.2f}x {rate:>13.0f}")


if __name__ == "__main__":
    main()
