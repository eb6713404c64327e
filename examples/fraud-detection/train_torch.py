"""Train a small fraud classifier with PyTorch (CPU), reproducible bit for bit.

``tether.seed_everything(seed, deterministic=True)`` seeds Python, NumPy and torch and
switches torch to deterministic algorithms; one thread keeps the sums in one order.
Logs the loss of every epoch and the held-out recall; saves the weights as one NumPy
array (models/mlp.npy: no pickle, no zip timestamps).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

import tether


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/transactions.csv"))
    parser.add_argument("--out", type=Path, default=Path("models/mlp.npy"))
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    seed = int(os.environ.get("TETHER_SEED", "0"))
    tether.seed_everything(seed, deterministic=True)
    torch.set_num_threads(1)

    table = np.loadtxt(args.data, delimiter=",", skiprows=1, dtype=np.float32)
    x = torch.from_numpy(table[:, :4].copy())
    x[:, 0] = torch.log1p(x[:, 0])
    x = (x - x.mean(0)) / x.std(0)
    y = torch.from_numpy(table[:, 4:5].copy())
    order = torch.randperm(len(x))
    test, train = order[: len(x) // 4], order[len(x) // 4 :]
    positive_weight = (y[train] == 0).sum() / (y[train] == 1).sum()
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=positive_weight)
    with tether.start_run(params={"model": "mlp-16", "epochs": args.epochs}) as run:
        for epoch in range(args.epochs):
            for batch in train[torch.randperm(len(train))].split(512):
                optimiser.zero_grad()
                loss = loss_fn(model(x[batch]), y[batch])
                loss.backward()
                optimiser.step()
            run.log_metric("loss", loss.item(), step=epoch)
        with torch.no_grad():
            predicted = (model(x[test]) > 0).float()
        caught = float((predicted * y[test]).sum())
        recall = caught / float(y[test].sum())
        run.log_metric("recall", recall)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    weights = torch.cat([p.detach().flatten() for p in model.parameters()]).numpy()
    np.save(args.out, weights)
    print(f"recall {recall:.4f}, final loss {loss.item():.4f} -> {args.out}")


if __name__ == "__main__":
    main()
