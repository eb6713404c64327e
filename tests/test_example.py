from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

STORY = Path(__file__).parent.parent / "examples" / "movie-recommender" / "story.py"


@pytest.mark.slow
def test_movie_recommender_story(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    r = subprocess.run(
        [sys.executable, str(STORY), "--workdir", str(tmp_path / "w"), "--users", "120"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: after rollback the recommendations equal v1's" in r.stdout
    assert "~ model.parameters.algorithm: user-cosine -> truncated-svd" in r.stdout
    # tether run saw the data and the model without the script declaring them
    assert "#   input  data/ratings.csv  sha256:" in r.stdout
    assert "#   input  data/movies.csv  sha256:" in r.stdout
    assert "#   output models/model.npz  sha256:" in r.stdout
    # v1 reproduces, and explain ranks the changed argument first
    assert "$ tether reproduce v1 --tolerance rmse=0.1%" in r.stdout
    explained = r.stdout[r.stdout.index("$ tether explain v1 v2") :]
    assert "1. [command] the command's arguments differ" in explained
    assert "--algorithm truncated-svd" in explained


@pytest.mark.slow
def test_fraud_detection_story(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    story = STORY.parent.parent / "fraud-detection" / "story.py"
    r = subprocess.run(
        [sys.executable, str(story), "--workdir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: each model reproduced; explain blamed the relabelled data" in r.stdout
    assert (tmp_path / "w" / "reports" / "sk-v1.xml").is_file()
    if "PyTorch part skipped" not in r.stdout:
        assert "REPRODUCED: 1 output(s) bit-identical and 2 metric(s) equal" in r.stdout
