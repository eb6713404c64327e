"""``tether.autolog()`` with the real scikit-learn: a fit's params, training metrics, a
search's candidates, and the model in skops' safe format; with no code under
``tether run --autolog``."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tether.repositories import metrics as metrics_repo
from tether.repositories import runs as runs_repo
from tether.runs.launch import RunSpec, run_command
from tether.workspace import Workspace

GRID = """
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
rng = np.random.RandomState(0)
X = rng.rand(80, 3)
y = (X[:, 0] + X[:, 1] > 1).astype(int)
search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression()),
                      {"logisticregression__C": [0.1, 1.0, 10.0]}, cv=3)
search.fit(X, y)
np.save("X.npy", X)
np.save("pred.npy", search.predict(X))
"""


def _run(project: Workspace, script: str, **spec: object) -> str:
    path = project.root / "train.py"
    path.write_text(textwrap.dedent(script))
    result = run_command(project, RunSpec([sys.executable, str(path)], cwd=project.root,
                                          **spec))  # type: ignore[arg-type]  # fmt: skip
    assert result.status == "finished", result.reason
    return result.run_id


def test_a_grid_search_is_recorded_with_no_code(project: Workspace) -> None:
    (run,) = runs_repo.load_runs(project.db, [_run(project, GRID, autolog=True)])
    assert run.params["best_logisticregression__C"] in ("0.1", "1.0", "10.0")
    assert run.params["cv"] == "3" and run.params["estimator"] == "Pipeline"
    assert run.tags["estimator_name"] == "GridSearchCV"
    assert {"best_cv_score", "training_score", "training_accuracy", "training_f1"} <= set(
        run.metrics
    )
    assert run.metrics["cv_mean_test_score"].count == 3  # one point per candidate
    artifacts = {f.path: f for f in run.files if f.role == "artifact"}
    assert set(artifacts) == {"cv_results.csv", "model.skops"}
    table = project.store.read_bytes(_digest(artifacts["cv_results.csv"].digest)).decode()
    assert table.count("\n") == 4 and "mean_test_score" in table.splitlines()[0]
    # The model loads back (skops, no pickle) and predicts what the script predicted.
    import skops.io

    data = project.store.read_bytes(_digest(artifacts["model.skops"].digest))
    model = skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))
    X = np.load(project.root / "X.npy")
    assert (model.predict(X) == np.load(project.root / "pred.npy")).all()


def test_start_run_under_tether_run_turns_it_on_and_off(project: Workspace) -> None:
    script = "import tether\nwith tether.start_run():\n    pass\n" + GRID
    (on,) = runs_repo.load_runs(project.db, [_run(project, script)])
    assert "best_cv_score" in on.metrics
    (off,) = runs_repo.load_runs(project.db, [_run(project, script, autolog=False)])
    assert "best_cv_score" not in off.metrics and "estimator_name" not in off.tags


def test_autolog_outside_tether_run_makes_a_run_per_fit(project: Workspace) -> None:
    script = textwrap.dedent("""
        import tether
        tether.autolog()
        from sklearn.linear_model import Ridge
        Ridge(alpha=0.5).fit([[0.0], [1.0], [2.0]], [0.0, 1.0, 2.1])
        Ridge(alpha=2.0).fit([[0.0], [1.0], [2.0]], [0.0, 1.0, 2.1])
    """)  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], cwd=project.root,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = runs_repo.load_runs(project.db, [r.id for r in _all(project)])
    alphas = sorted(r.params["alpha"] for r in runs if r.name == "Ridge")
    assert alphas == ["0.5", "2.0"]
    assert all("training_r2" in r.metrics for r in runs if r.name == "Ridge")


def test_a_second_fit_in_the_same_run_warns_once_not_per_param(project: Workspace) -> None:
    (project.root / "two.py").write_text(textwrap.dedent("""
        from sklearn.linear_model import Ridge
        Ridge(alpha=0.5).fit([[0.0], [1.0], [2.0]], [0.0, 1.0, 2.1])
        Ridge(alpha=2.0, tol=0.01).fit([[0.0], [1.0], [2.0]], [0.0, 1.0, 2.1])
    """))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "tether", "run", "--autolog", "--", sys.executable, "two.py"],
        cwd=project.root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "other values" in line]
    assert len(warned) == 1 and "'alpha', 'tol'" in warned[0], done.stderr
    (run,) = runs_repo.load_runs(project.db, [r.id for r in _all(project)])
    assert run.params["alpha"] == "0.5" and run.tags["tether.param_conflict.alpha"] == "2.0"


def _all(project: Workspace) -> list:  # type: ignore[type-arg]
    from tether.repositories.run_filter import list_runs

    return list_runs(project.db, limit=None).runs


def _digest(text: str | None):  # type: ignore[no-untyped-def]
    from tether.hashing import Digest

    assert text is not None
    return Digest.parse(text)


@pytest.mark.torch
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="pip install torch==2.13.0")
def test_watch_logs_a_plain_pytorch_loop_with_one_line(project: Workspace) -> None:
    import torch

    import tether
    from tether.runs.api import start_run

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    X, y = torch.randn(32, 4), torch.randn(32, 1)
    with start_run(project=project.root, watch_files=False) as run:
        watched = tether.watch(model, optimizer)
        for step in range(12):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(X), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            run.log_metric("loss", loss.item(), step=step)
        watched.remove()
        optimizer.step()  # no longer watched
    series = metrics_repo.metric_series(project.db, run.id)
    assert [v for _, _, v in series["lr"]] == [0.1] * 5 + [0.05] * 5 + [0.025] * 2
    assert len(series["grad_norm"]) == 12 and all(v > 0 for _, _, v in series["grad_norm"])
    assert [s for s, _, _ in series["step_time"]] == list(range(12))
    assert len(series["loss"]) == 12


def test_watch_needs_a_run(project: Workspace) -> None:
    pytest.importorskip("torch")
    import torch

    import tether
    from tether.errors import UsageError

    with pytest.raises(UsageError, match="needs an open run"):
        tether.watch(torch.nn.Linear(1, 1), torch.optim.SGD(torch.nn.Linear(1, 1).parameters()))


LIGHTNING = """\
import lightning as L
import torch

L.seed_everything(42, workers=True)


class Tiny(L.LightningModule):
    def __init__(self, lr=0.05, hidden=8):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, 1))

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True)
model = Tiny()
trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False,
                    accelerator="cpu", deterministic=True, log_every_n_steps=1)
trainer.fit(model, loader)
torch.save(model.state_dict(), "model.pt")
"""


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("lightning") is None, reason="pip install lightning")
def test_a_lightning_fit_is_logged_and_reproduces(tmp_path: Path) -> None:
    from tests.test_reproduce import commit, make_project

    root = tmp_path / "p"
    tether = make_project(root, {"train.py": LIGHTNING})
    commit(root)
    made = tether("run", "--name", "tiny", "--autolog", "--", sys.executable, "train.py")
    assert made.exit_code == 0, made.output
    shown = json.loads(tether("runs", "show", "tiny", "--json").stdout)
    assert shown["params"]["lr"] == "0.05" and shown["params"]["hidden"] == "8"
    assert shown["params"]["max_epochs"] == "3" and shown["params"]["optimizer_name"] == "SGD"
    assert shown["metrics"]["train_loss"]["count"] == 12  # 4 batches x 3 epochs
    assert any(f["path"] == "model.pt" for f in shown["files"] if f["role"] == "output")
    again = tether("reproduce", "tiny")
    assert again.exit_code == 0, again.output
    assert "REPRODUCED" in again.stdout


def _artifact(project: Workspace, run, name: str) -> bytes:  # type: ignore[no-untyped-def]
    (file,) = [f for f in run.files if f.role == "artifact" and f.path == name]
    return project.store.read_bytes(_digest(file.digest))


@pytest.mark.torch
@pytest.mark.skipif(
    importlib.util.find_spec("pytorch_lightning") is None, reason="pip install pytorch-lightning"
)
def test_the_standalone_pytorch_lightning_package_is_logged_too(project: Workspace) -> None:
    script = LIGHTNING.replace("import lightning as L", "import pytorch_lightning as L")
    (run,) = runs_repo.load_runs(project.db, [_run(project, script, autolog=True)])
    assert run.params["lr"] == "0.05" and run.params["max_epochs"] == "3"
    assert run.metrics["train_loss"].count == 12
    assert run.metrics["epoch"].count == 3  # where it changes, not at every step


XGBOOST = """
import numpy as np
import xgboost as xgb
rng = np.random.RandomState(0)
X = rng.rand(200, 4)
y = (X[:, 0] + X[:, 1] > 1).astype(int)
model = xgb.XGBClassifier(n_estimators=8, max_depth=2, learning_rate=0.3)
model.fit(X[:150], y[:150], eval_set=[(X[150:], y[150:])], verbose=False)
np.save("X.npy", X)
np.save("pred.npy", model.predict_proba(X)[:, 1])
"""


@pytest.mark.skipif(importlib.util.find_spec("xgboost") is None, reason="pip install xgboost-cpu")
def test_an_xgboost_fit_records_params_every_round_and_the_booster(project: Workspace) -> None:
    import xgboost as xgb

    (run,) = runs_repo.load_runs(project.db, [_run(project, XGBOOST, autolog=True)])
    assert run.params["max_depth"] == "2" and run.params["num_boost_round"] == "8"
    assert run.metrics["validation_0-logloss"].count == 8  # one point per round
    # Its scikit-learn wrapper is XGBoost's to record, not scikit-learn's.
    assert "estimator_name" not in run.tags and "training_score" not in run.metrics
    artifacts = {f.path for f in run.files if f.role == "artifact"}
    assert artifacts == {"model.ubj", "feature_importance_gain.json"}
    booster = xgb.Booster()
    booster.load_model(bytearray(_artifact(project, run, "model.ubj")))
    X = np.load(project.root / "X.npy")
    assert np.allclose(booster.predict(xgb.DMatrix(X)), np.load(project.root / "pred.npy"))


LIGHTGBM = """
import lightgbm as lgb
import numpy as np
rng = np.random.RandomState(0)
X = rng.rand(300, 4)
y = X[:, 0] * 2 + X[:, 1] + rng.rand(300) * 0.1
train = lgb.Dataset(X[:200], y[:200])
valid = lgb.Dataset(X[200:], y[200:], reference=train)
params = {"objective": "regression", "learning_rate": 0.3, "num_leaves": 7, "verbose": -1,
          "seed": 0, "deterministic": True}
booster = lgb.train(params, train, 200, valid_sets=[valid], valid_names=["valid"],
                    callbacks=[lgb.early_stopping(3, verbose=False)])
np.save("X.npy", X)
np.save("pred.npy", booster.predict(X))
"""


@pytest.mark.skipif(importlib.util.find_spec("lightgbm") is None, reason="pip install lightgbm")
def test_a_lightgbm_training_records_params_every_round_and_the_booster(
    project: Workspace,
) -> None:
    import lightgbm as lgb

    (run,) = runs_repo.load_runs(project.db, [_run(project, LIGHTGBM, autolog=True)])
    assert run.params["num_leaves"] == "7" and run.params["num_boost_round"] == "200"
    rounds = run.metrics["valid-l2"].count
    best = int(run.tags["lightgbm.best_iteration"])
    assert 3 < rounds < 200 and best == rounds - 3  # stopped early, 3 rounds after its best
    booster = lgb.Booster(model_str=_artifact(project, run, "model.txt").decode())
    X = np.load(project.root / "X.npy")
    assert np.allclose(booster.predict(X), np.load(project.root / "pred.npy"))


TRANSFORMERS = """
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
torch.manual_seed(0)
config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=16, num_labels=2)
model = BertForSequenceClassification(config)
ids = torch.randint(0, 64, (32, 8))
data = [{"input_ids": ids[i], "labels": int(ids[i].sum() % 2)} for i in range(32)]
args = TrainingArguments(output_dir="out", max_steps=6, per_device_train_batch_size=8,
                         logging_steps=1, save_steps=3, report_to="none", use_cpu=True,
                         learning_rate=1e-3, seed=0)
Trainer(model=model, args=args, train_dataset=data).train()
"""


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="pip install transformers accelerate"
)
def test_a_transformers_trainer_records_args_every_log_and_its_checkpoints(
    project: Workspace,
) -> None:
    (run,) = runs_repo.load_runs(project.db, [_run(project, TRANSFORMERS, autolog=True)])
    assert run.params["learning_rate"] == "0.001" and run.params["max_steps"] == "6"
    assert run.params["model.hidden_size"] == "16"
    assert run.metrics["loss"].count == 6 and run.metrics["learning_rate"].count == 6
    assert "train_runtime" in run.metrics
    assert run.tags["transformers.last_checkpoint"].endswith("checkpoint-6")
    outputs = {f.path for f in run.files if f.role == "output"}
    assert {"out/checkpoint-3/model.safetensors", "out/checkpoint-6/model.safetensors"} <= outputs


KERAS = """
import numpy as np
import keras
keras.utils.set_random_seed(0)
X = np.random.rand(64, 4).astype("float32")
y = (X[:, 0] > 0.5).astype("float32")
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy",
              metrics=["accuracy"])
model.fit(X, y, batch_size=16, epochs=3, validation_split=0.25, verbose=0)
np.save("X.npy", X)
np.save("pred.npy", model.predict(X, verbose=0))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_a_keras_fit_records_params_every_epoch_and_the_model(
    project: Workspace, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("keras") is None:
        pytest.skip("pip install keras")  # found, not imported: TensorFlow's import is slow
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"Keras' {backend} backend is not installed")
    monkeypatch.setenv("KERAS_BACKEND", backend)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    (run,) = runs_repo.load_runs(project.db, [_run(project, KERAS, autolog=True)])
    assert run.params["epochs"] == "3" and run.params["batch_size"] == "16"
    assert run.params["optimizer_name"] == "Adam" and run.params["total_params"] == "49"
    assert float(run.params["optimizer.learning_rate"]) == pytest.approx(0.01)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert run.metrics[key].count == 3  # one point per epoch
    path = project.root / "model.keras"
    path.write_bytes(_artifact(project, run, "model.keras"))
    done = subprocess.run(
        [sys.executable, "-c", "import keras, numpy as np; m = keras.saving.load_model("
         "'model.keras'); print(np.abs(m.predict(np.load('X.npy'), verbose=0)"
         " - np.load('pred.npy')).max())"],
        cwd=project.root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split()[-1]) < 1e-6


def test_autolog_never_imports_a_framework_the_script_does_not_use(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import sys
        import tether
        tether.autolog()
        tether.autolog(frameworks=["xgboost", "keras"], disable=True)
        tether.autolog(disable=True)
        heavy = ("sklearn", "lightning", "transformers", "keras", "xgboost", "lightgbm", "torch")
        print(sorted(name for name in heavy if name in sys.modules))
    """)  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
