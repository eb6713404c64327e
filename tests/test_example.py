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
