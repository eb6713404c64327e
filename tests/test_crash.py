from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tether.modelkit.pack import pack
from tether.oci.reference import parse_tag_list
from tether.workspace import Workspace


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.05, 0.3, 0.8])
def test_kill_9_during_pack_leaves_a_consistent_store(project: Workspace, delay: float) -> None:
    (project.root / "models" / "model.pkl").write_bytes(os.urandom(1 << 20) * 150)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether", "-C", str(project.root), "pack", "-t", "demo:v1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Invariants: every blob hashes to its name; index.json parses and names only
    # manifests that exist; partial data lives only in tmp/.
    for digest in project.store:
        assert project.store.verify(digest), f"{digest} is torn"
    index = json.loads((project.store.root / "index.json").read_text())
    for entry in project.index.entries():
        assert project.store.has(entry.digest)
    assert isinstance(index["manifests"], list)
    # The project keeps working: the same pack now succeeds and verifies.
    result = pack(Workspace.open(project.root), tags=parse_tag_list("demo:v1"))
    assert all(project.store.verify(layer.digest) for layer in result.manifest.layers)
