"""Params with no code: what a script's argparse parser or click command parsed, and the
config Hydra composed, recorded by ``tether run`` as the run's params."""

from __future__ import annotations

import sys
import textwrap

from tether.repositories import runs as runs_repo
from tether.runs.launch import RunSpec, run_command
from tether.workspace import Workspace

ARGPARSE = """
import argparse
import tether
parser = argparse.ArgumentParser()
parser.add_argument("--alpha", type=float, default=0.5)
parser.add_argument("--layers", type=int, default=2)
parser.add_argument("--model", default="svd")
parser.add_argument("--api-key", default=None)
parser.add_argument("--tags", nargs="*", default=[])
sub = parser.add_subparsers(dest="command")
fit = sub.add_parser("fit")
fit.add_argument("--epochs", type=int, default=1)
args = parser.parse_args()
with tether.start_run(params={"model": "als"}):  # the script's own value wins
    pass
"""

CLICK = """
import click

@click.command()
@click.option("--lr", type=float, default=0.1)
@click.option("--depth", type=int, default=3)
@click.argument("data")
def train(lr, depth, data):
    pass

train()
"""

HYDRA = """
import hydra
from omegaconf import DictConfig

@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    print("lr", cfg.optimizer.lr)

main()
"""


def _run(project: Workspace, script: str, *args: str, **spec: object) -> dict[str, str]:
    path = project.root / "script.py"
    path.write_text(textwrap.dedent(script))
    result = run_command(
        project,
        RunSpec([sys.executable, str(path), *args], cwd=project.root, **spec),  # type: ignore[arg-type]
    )
    assert result.status == "finished", result.reason
    (run,) = runs_repo.load_runs(project.db, [result.run_id])
    return {**run.params, "_tag": run.tags.get("tether.autoparams", "")}


def test_argparse_params_are_recorded_without_code(project: Workspace) -> None:
    params = _run(
        project, ARGPARSE, "--tags", "a", "b", "--alpha", "1000", "--api-key", "s3cr3t",
        "fit", "--epochs", "4", params={"alpha": "1000"},
    )  # fmt: skip
    assert params["alpha"] == "1000"  # -p alpha=1000 and the parsed 1000.0 agree
    assert params["layers"] == "2" and params["epochs"] == "4" and params["command"] == "fit"
    assert params["model"] == "als"  # start_run(params=...) won over the parsed "svd"
    assert params["api_key"] == "***"  # a secret-named param is withheld
    assert params["tags"] == '["a", "b"]'
    assert params["_tag"] == "argparse"


def test_click_params_are_recorded_without_code(project: Workspace) -> None:
    params = _run(project, CLICK, "--lr", "0.01", "train.csv")
    assert params == {"lr": "0.01", "depth": "3", "data": "train.csv", "_tag": "click"}


def test_hydra_config_is_recorded_flattened(project: Workspace) -> None:
    conf = project.root / "conf"
    (conf / "optimizer").mkdir(parents=True)
    (conf / "config.yaml").write_text(
        "defaults:\n  - optimizer: adam\n  - _self_\nmodel:\n  name: svd\n  layers: [64, 32]\n"
    )
    (conf / "optimizer" / "adam.yaml").write_text("lr: 0.001\nbetas:\n  b1: 0.9\n")
    params = _run(project, HYDRA, "optimizer.lr=0.01", "+seed=7")
    assert params["optimizer.lr"] == "0.01" and params["optimizer.betas.b1"] == "0.9"
    assert params["model.name"] == "svd" and params["model.layers"] == "[64, 32]"
    assert params["seed"] == "7" and params["_tag"] == "hydra"
    assert not any(k.startswith("hydra.") for k in params)


def test_no_autoparams_records_none(project: Workspace) -> None:
    params = _run(project, CLICK, "--lr", "0.01", "x", autoparams=False)
    assert params == {"_tag": ""}


def test_a_library_parsing_its_own_arguments_is_not_the_script(project: Workspace) -> None:
    """argparse called inside an installed module (the standard library's calendar
    parses its own arguments) is not the script's command line."""
    script = "import calendar\ncalendar.main(['calendar', '2024'])\n"
    assert _run(project, script) == {"_tag": ""}
