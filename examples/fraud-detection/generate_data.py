"""Write data/transactions.csv: synthetic card transactions, about 2% fraud.

Fixed seed, so the same data comes out on every machine. Fraud is rarer and differs
from normal traffic in amount, hour, distance from home and merchant risk, with
overlap, so a classifier can find most of it but not all.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--fraud-rate", type=float, default=0.02)
    parser.add_argument(
        "--flip-labels",
        type=float,
        default=0.0,
        help="mislabel this fraction of frauds as normal (a data bug)",
    )
    parser.add_argument("--out", type=Path, default=Path("data/transactions.csv"))
    args = parser.parse_args()

    rng = np.random.default_rng(2026)
    fraud = rng.random(args.rows) < args.fraud_rate
    amount = np.where(fraud, rng.lognormal(5.0, 1.0, args.rows), rng.lognormal(3.5, 1.0, args.rows))
    hour = np.where(fraud, rng.normal(3, 3, args.rows), rng.normal(14, 4, args.rows)) % 24
    distance = np.where(fraud, rng.exponential(80, args.rows), rng.exponential(10, args.rows))
    risk = np.clip(
        np.where(fraud, rng.normal(0.6, 0.2, args.rows), rng.normal(0.3, 0.2, args.rows)), 0, 1
    )
    label = fraud.astype(int)
    if args.flip_labels:
        frauds = np.flatnonzero(label)
        flipped = frauds[: int(len(frauds) * args.flip_labels)]
        label[flipped] = 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = np.column_stack([amount, hour, distance, risk, label])
    np.savetxt(
        args.out,
        table,
        delimiter=",",
        fmt=["%.2f", "%.3f", "%.3f", "%.4f", "%d"],
        header="amount,hour,distance,merchant_risk,fraud",
        comments="",
    )
    print(f"wrote {args.rows} transactions ({label.sum()} labelled fraud) -> {args.out}")


if __name__ == "__main__":
    main()
