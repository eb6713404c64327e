"""``tether run --metrics PATH``: a script's own metrics files (JSON, JSON Lines, CSV,
TSV, dvclive's folder) read into the run after it ends, and compared by ``reproduce``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.test_reproduce import commit, last_json, make_project
from tether.errors import RunError
from tether.runs.metric_files import read_metrics

AT = 1_700_000_000.0


def _series(points: list[tuple[str, int, float, float]]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for key, step, _, value in points:
        out.setdefault(key, []).append((step, value))
    return out


def test_each_format_reads_its_points(tmp_path: Path) -> None:
    summary = tmp_path / "metrics.json"
    summary.write_text(json.dumps({"rmse": 0.8, "eval": {"mae": 0.5, "ok": True},
                                   "curve": [1.0, 0.5, "x", 0.25], "name": "svd"}))  # fmt: skip
    assert _series(read_metrics(summary, AT)) == {
        "rmse": [(0, 0.8)], "eval.mae": [(0, 0.5)], "curve": [(0, 1.0), (1, 0.5), (3, 0.25)],
    }  # fmt: skip
    lines = tmp_path / "log.jsonl"
    lines.write_text('{"epoch": 1, "loss": 0.9, "acc": 0.5}\n\n{"epoch": 2, "loss": 0.7}\n')
    assert _series(read_metrics(lines, AT)) == {"loss": [(1, 0.9), (2, 0.7)], "acc": [(1, 0.5)]}
    table = tmp_path / "history.csv"
    table.write_text("step,loss,lr,note\n0,1.5,0.1,warm\n10,1.2,0.05,\n")
    assert _series(read_metrics(table, AT)) == {
        "loss": [(0, 1.5), (10, 1.2)], "lr": [(0, 0.1), (10, 0.05)],
    }  # fmt: skip
    pairs = tmp_path / "final.tsv"
    pairs.write_text("metric\tvalue\nauc\t0.91\nf1\tnan\n")
    assert _series(read_metrics(pairs, AT)) == {"auc": [(0, 0.91)]}
    assert all(at == AT for *_, at, _ in read_metrics(pairs, AT))


def test_dvclive_folder(tmp_path: Path) -> None:
    live = tmp_path / "dvclive"
    (live / "plots" / "metrics" / "train").mkdir(parents=True)
    (live / "plots" / "metrics" / "train" / "loss.tsv").write_text(
        "timestamp\tstep\tloss\n1\t0\t0.9\n2\t1\t0.6\n"
    )
    (live / "metrics.json").write_text(json.dumps({"train": {"loss": 0.6}, "test_acc": 0.8,
                                                   "step": 1}))  # fmt: skip
    assert _series(read_metrics(live, AT)) == {
        "train/loss": [(0, 0.9), (1, 0.6)], "test_acc": [(0, 0.8)],
    }  # fmt: skip


def test_bad_files_are_refused_with_a_hint(tmp_path: Path) -> None:
    broken = tmp_path / "m.json"
    broken.write_text("{nope")
    with pytest.raises(RunError, match="does not parse"):
        read_metrics(broken, AT)
    odd = tmp_path / "m.txt"
    odd.write_text("1")
    with pytest.raises(RunError, match="unknown metrics format"):
        read_metrics(odd, AT)
    with pytest.raises(RunError, match="cannot be read"):
        read_metrics(tmp_path / "missing.json", AT)


SCRIPT = """\
import json, random, sys
random.seed(int(sys.argv[1]))
with open("metrics.jsonl", "w") as f:
    for step in range(5):
        f.write(json.dumps({"step": step, "loss": 1 / (step + 1) + random.random()}) + "\\n")
with open("final.json", "w") as f:
    json.dump({"rmse": random.random()}, f)
"""


def test_a_script_that_never_imports_tether_gets_metrics_that_reproduce(tmp_path: Path) -> None:
    root = tmp_path / "p"
    tether = make_project(root, {"train.py": SCRIPT})
    commit(root)
    made = tether("run", "--name", "r", "--metrics", "metrics.jsonl", "--metrics",
                  "final.json", "--", sys.executable, "train.py", "7")  # fmt: skip
    assert made.exit_code == 0, made.output
    shown = json.loads(tether("runs", "show", "r", "--json").stdout)
    assert shown["metrics"]["loss"]["count"] == 5 and "rmse" in shown["metrics"]
    assert shown["capture"]["metric_files"] == ["metrics.jsonl", "final.json"]
    # The reproduction reads the same files; every step of the series compares equal.
    again = tether("reproduce", "r", "--series", "--json")
    assert again.exit_code == 0, again.output
    verdict = last_json(again)
    assert {m["key"] for m in verdict["metrics"]} == {"loss", "rmse"}
    assert all(m["status"] == "equal" for m in verdict["metrics"])
