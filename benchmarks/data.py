"""Data versioning: tether next to DVC on the same generated data, measured in one run.

    python benchmarks/data.py [--big-mib 2048] [--small 50000 | --many 500000]
                              [--repeat 1] [--skip-dvc]

Data (made once, kept in bench-work/data/source): one file of --big-mib MiB from
os.urandom, and --small random files of 4 KiB in folders of 1,000. Each tool works in
a fresh git project per repetition, with the data copied in beforehand (timestamps
kept, not timed). Every command runs as a separate process, so start-up is included
for both tools. DVC 3.67.1 lives in its own virtualenv (bench-work/dvc-venv, created
with pip on first use); its cache type is its default (reflink,copy: copies on ext4).

Scenarios: add of the big file (tether also with chunking off, `add big (whole)`, the
way it stored big files before chunking, in a project of its own); add of the
small-file folder; status with nothing changed (both); push of the small-file folder,
then of the big file, to a local-directory remote; checkout of the small-file folder
(moved away first); re-add after changing 1 MiB in the
middle of the big file, with the bytes the store/cache grew by; push of that second
version, with the bytes the remote grew by. ``--many N`` is ``--small N`` (the
million-files rows: add, no-op status and push of N small files).

Limits, measured in the same run: read+sha256 of the big file and of the small files
(Python, hashlib), a durable copy of the big file (write + fsync), a stat walk of the
small folder in a fresh interpreter (start-up included, as for the tools), and creating
the small files durably (write each, one syncfs). Start-up is what `python -c pass`
costs here (site-packages' .pth files included), since both tools pay it. Old runs are
deleted at the end, never before a timing (file creation on this disk is slow for
minutes after a mass delete).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORK = Path("bench-work") / "data"
SOURCE = WORK / "source"
VENV = Path("bench-work") / "dvc-venv"
DVC_VERSION = "3.67.1"
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x",
       "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}  # fmt: skip
TETHER = [sys.executable, "-m", "tether"]


# Peak memory is measured by a small launcher: a child forked from this process would
# report this process's size (Linux keeps the high-water mark across exec).
LAUNCH = (
    "import os, sys\n"
    "pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> int:
    """Run ``cmd``; exit on failure. Returns its peak resident memory in KiB."""
    with tempfile.NamedTemporaryFile() as rss:
        launch = [sys.executable, "-c", LAUNCH, rss.name, *cmd]
        env = {**ENV, **(env or {})}
        out = subprocess.run(launch, cwd=cwd, env=env, capture_output=True, check=False)
        if out.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{out.stderr.decode()[-2000:]}")
        return int(Path(rss.name).read_text() or 0)


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    return timed_rss(cmd, cwd, env)[0]


def timed_rss(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, int]:
    """Seconds, and the command's peak resident memory in KiB."""
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    rss = sh(cmd, cwd, env)
    return time.perf_counter() - start, rss


def make_source(big_mib: int, small: int) -> None:
    marker = SOURCE / f".done-{big_mib}-{small}"
    if marker.exists():
        return
    print(f"generating data in {SOURCE} (once)…", flush=True)
    SOURCE.mkdir(parents=True, exist_ok=True)
    with open(SOURCE / "big.bin", "wb") as f:
        for _ in range(big_mib):
            f.write(os.urandom(1 << 20))
    for i in range(small):
        d = SOURCE / "small" / f"d{i // 1000:03}"
        if i % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06}.bin").write_bytes(os.urandom(4096))
    past = time.time() - 3600  # as data usually is: not written a moment ago
    for p in (SOURCE / "small").rglob("*"):
        os.utime(p, (past, past))
    os.utime(SOURCE / "big.bin", (past, past))
    marker.touch()


def ensure_dvc() -> Path:
    dvc = VENV / "bin" / "dvc"
    if not dvc.exists():
        print(f"installing DVC {DVC_VERSION} into {VENV}…", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", f"dvc=={DVC_VERSION}"],
                       check=True)  # fmt: skip
    return dvc.resolve()


def project(base: Path, tool: str, dvc: Path | None) -> Path:
    root = base / tool
    root.mkdir(parents=True)
    sh(["git", "init", "-q"], root)
    if tool == "dvc":
        assert dvc is not None
        sh([str(dvc), "init", "-q"], root)
        sh([str(dvc), "config", "core.analytics", "false"], root)
    else:
        sh([*TETHER, "init", "--no-kitfile"], root)
    sh(["cp", "-a", str((SOURCE / "big.bin").resolve()), "big.bin"], root)
    sh(["cp", "-a", str((SOURCE / "small").resolve()), "small"], root)
    return root


def change_one_mib(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(os.urandom(1 << 20))


def tree_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (apparent sizes: what was stored or sent)."""
    total = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def store_of(tool: str, root: Path) -> Path:
    return root / (".dvc/cache" if tool == "dvc" else ".tether/store")


def add_whole(base: Path) -> float:
    """tether's add of the big file as it was before chunking (one whole blob)."""
    root = base / "tether-whole"
    root.mkdir(parents=True)
    sh(["git", "init", "-q"], root)
    sh([*TETHER, "init", "--no-kitfile"], root)
    sh(["cp", "-a", str((SOURCE / "big.bin").resolve()), "big.bin"], root)
    return timed([*TETHER, "add", "big.bin"], root, {"TETHER_DATA_CHUNK_MIN_MB": "0"})


def run_tool(tool: str, base: Path, dvc: Path | None) -> dict[str, float]:
    root = project(base, tool, dvc)
    cli = [str(dvc)] if tool == "dvc" else TETHER
    remote = base / f"{tool}-remote"
    out: dict[str, float] = {}

    def small(key: str, cmd: list[str]) -> None:
        # The many-files rows also keep the command's peak memory (MiB).
        out[key], out[f"{key}: peak MiB"] = timed_rss(cmd, root)
        out[f"{key}: peak MiB"] /= 1024

    out["add big"] = timed([*cli, "add", "big.bin"], root)
    small("add small", [*cli, "add", "small"])
    time.sleep(1.1)  # both tools distrust files modified in the last instant
    out["status big"] = timed([*cli, "status", "big.bin.dvc" if tool == "dvc" else "big.bin"], root)
    small("status small", [*cli, "status", "small.dvc" if tool == "dvc" else "small"])
    if tool == "dvc":
        sh([*cli, "remote", "add", "-d", "local", str(remote.resolve())], root)
        small("push small", [*cli, "push", "small.dvc"])
    else:
        sh([*cli, "remote", "add", "local", str(remote.resolve()), "--default"], root)
        small("push small", [*cli, "data", "push", "small"])
    # Moved away, not deleted: creating files right after a mass delete is slow here.
    (root / "small").rename(root / "small.moved")
    small("checkout small", [*cli, "checkout", "small.dvc" if tool == "dvc" else "small"])
    push_big = [*cli, "push", "big.bin.dvc"] if tool == "dvc" else [*cli, "data", "push", "big.bin"]
    out["push big"] = timed(push_big, root)
    change_one_mib(root / "big.bin")
    stored = tree_bytes(store_of(tool, root))
    out["re-add big"] = timed([*cli, "add", "big.bin"], root)
    out["re-add big: stored bytes"] = tree_bytes(store_of(tool, root)) - stored
    sent = tree_bytes(remote)
    out["push big v2"] = timed(push_big, root)
    out["push big v2: sent bytes"] = tree_bytes(remote) - sent
    return out


# -- limits ------------------------------------------------------------------------------


def read_sha256(paths: list[Path]) -> float:
    from tether.hashing import hash_file  # a bare 4 MiB readinto + hashlib loop

    start = time.perf_counter()
    for p in paths:
        hash_file(p)
    return time.perf_counter() - start


def durable_copy(src: Path, dst: Path) -> float:
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    with open(src, "rb", buffering=0) as s, open(dst, "wb", buffering=0) as d:
        buf = bytearray(4 << 20)
        view = memoryview(buf)
        while n := s.readinto(buf):
            d.write(view[:n])
        os.fsync(d.fileno())
    return time.perf_counter() - start


def stat_walk(folder: Path) -> float:
    script = (
        "import os, sys\n"
        "stack = [sys.argv[1]]\n"
        "while stack:\n"
        "    for e in os.scandir(stack.pop()):\n"
        "        e.stat(follow_symlinks=False)\n"
        "        if e.is_dir(follow_symlinks=False): stack.append(e.path)\n"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", script, str(folder)], check=True)
    return time.perf_counter() - start


def start_up() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


def create_small(n: int, target: Path) -> float:
    from tether.store.objects import syncfs

    data = [os.urandom(4096) for _ in range(1000)]
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    for i in range(n):
        d = target / f"d{i // 1000:03}"
        if i % 1000 == 0:
            d.mkdir(parents=True)
        fd = os.open(d / f"f{i:06}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data[i % 1000])
        os.close(fd)
    syncfs(target)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--big-mib", type=int, default=2048)
    ap.add_argument("--small", type=int, default=50_000)
    ap.add_argument("--many", type=int, help="the same as --small (e.g. --many 500000)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-dvc", action="store_true")
    args = ap.parse_args()
    if args.many:
        args.small = args.many

    make_source(args.big_mib, args.small)
    dvc = None if args.skip_dvc else ensure_dvc()
    # pip compiled DVC's bytecode when it installed it; give tether the same (an
    # editable install under PYTHONDONTWRITEBYTECODE=1 would compile on every start).
    import compileall

    import tether

    compileall.compile_dir(Path(tether.__file__).parent, quiet=1)
    stale = [p for p in WORK.glob("run-*") if p.is_dir()]
    run_dir = WORK / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    small_files = sorted((SOURCE / "small").rglob("*.bin"))

    results: dict[str, dict[str, list[float]]] = {"tether": {}, "dvc": {}}
    limits: dict[str, list[float]] = {}

    def note(bucket: dict[str, list[float]], key: str, value: float) -> None:
        bucket.setdefault(key, []).append(value)

    for rep in range(args.repeat):
        base = run_dir / f"rep{rep}"
        base.mkdir(parents=True)
        note(limits, "read+sha256 big", read_sha256([SOURCE / "big.bin"]))
        note(limits, "durable copy big", durable_copy(SOURCE / "big.bin", base / "copy.bin"))
        note(limits, "read+sha256 small", read_sha256(small_files))
        note(limits, "stat walk small", stat_walk(SOURCE / "small"))
        note(limits, "start-up", start_up())
        note(limits, "create small", create_small(args.small, base / "created"))
        for tool in ("tether", "dvc"):
            if tool == "dvc" and dvc is None:
                continue
            print(f"rep {rep + 1}/{args.repeat}: {tool}…", flush=True)
            for key, value in run_tool(tool, base, dvc).items():
                note(results[tool], key, value)
            if tool == "tether":
                note(results[tool], "add big (whole)", add_whole(base))

    lim = {k: median(v) for k, v in limits.items()}
    big_bytes = (SOURCE / "big.bin").stat().st_size
    small_bytes = sum(p.stat().st_size for p in small_files)
    print()
    print(f"machine limits (median of {args.repeat}):")
    print(
        f"  read+sha256, big file     {big_bytes / lim['read+sha256 big'] / 1e9:6.2f} GB/s"
        f"  ({lim['read+sha256 big']:.2f} s)"
    )
    print(
        f"  durable copy, big file    {big_bytes / lim['durable copy big'] / 1e9:6.2f} GB/s"
        f"  ({lim['durable copy big']:.2f} s)"
    )
    print(
        f"  read+sha256, small files  {len(small_files) / lim['read+sha256 small']:8.0f} files/s"
        f"  ({lim['read+sha256 small']:.2f} s)"
    )
    print(
        f"  stat walk (new process)   {lim['stat walk small'] * 1000:8.0f} ms"
        f"  (interpreter start-up {lim['start-up'] * 1000:.0f} ms)"
    )
    print(
        f"  create small, durable     {len(small_files) / lim['create small']:8.0f} files/s"
        f"  ({lim['create small']:.2f} s)"
    )
    print()
    t = {k: median(v) for k, v in results["tether"].items()}
    d = {k: median(v) for k, v in results["dvc"].items()}
    limit_for: dict[str, tuple[float, str]] = {
        "add big": (lim["read+sha256 big"], "read+sha256"),
        "add small": (lim["read+sha256 small"] + lim["create small"], "read+sha256 + create"),
        "status big": (lim["start-up"], "start-up"),
        "status small": (lim["stat walk small"], "stat walk"),
        "re-add big": (lim["read+sha256 big"], "read+sha256"),
        "push small": (lim["create small"], "create files"),
        "checkout small": (lim["create small"], "create files"),
        "push big": (lim["durable copy big"], "durable copy"),
        "push big v2": (lim["read+sha256 big"], "read+sha256"),
    }
    print(
        f"{'scenario':14} {'tether':>9} {'dvc':>9} {'dvc/tether':>11} {'limit':>9}  tether vs limit"
    )
    for key, (limit, what) in limit_for.items():
        dv = d.get(key)
        dvc_txt = f"{dv:8.2f}s" if dv is not None else "        -"
        ratio = f"{dv / t[key]:10.1f}×" if dv is not None else "          -"
        print(
            f"{key:14} {t[key]:8.2f}s {dvc_txt} {ratio} {limit:8.2f}s  "
            f"{limit / t[key] * 100:5.0f}% of {what}"
        )
    print()
    print(f"peak memory (MiB), {len(small_files)} small files:  tether      dvc")
    for key in ("add small", "status small", "push small", "checkout small"):
        dv = d.get(f"{key}: peak MiB", float("nan"))
        print(f"  {key:16} {t[key + ': peak MiB']:28.0f} {dv:8.0f}")
    print()
    for key in ("re-add big: stored bytes", "push big v2: sent bytes"):
        dv = d.get(key)
        dvc_txt = f"{dv / 2**20:8.1f} MiB ({dv / big_bytes * 100:5.1f}%)" if dv is not None else "-"
        print(
            f"{key:26} tether {t[key] / 2**20:8.1f} MiB ({t[key] / big_bytes * 100:5.2f}% of "
            f"the file)   dvc {dvc_txt}"
        )
    whole = t["add big (whole)"]
    print(
        f"add big in chunks {t['add big']:.2f}s vs whole {whole:.2f}s (chunking off, same run): "
        f"{t['add big'] / whole:.2f}×"
    )
    print(
        f"\nbig file {big_bytes / 2**30:.2f} GiB; small files {len(small_files)} "
        f"({small_bytes / 2**20:.0f} MiB). tether add big: "
        f"{big_bytes / t['add big'] / 1e9:.2f} GB/s."
    )
    for p in stale:  # only now: deleting trees slows file creation for minutes
        shutil.rmtree(p, ignore_errors=True)


if __name__ == "__main__":
    main()
