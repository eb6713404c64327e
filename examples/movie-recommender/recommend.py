"""Print the top-N movies the saved model recommends for some users, as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=Path("models/model.npz"))
    parser.add_argument("--users", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("-n", type=int, default=5)
    args = parser.parse_args()

    # allow_pickle=False: the model is plain arrays; refuse anything that is not.
    with np.load(args.model, allow_pickle=False) as model:
        users, movies = model["users"], model["movies"]
        scores, rated = model["scores"], model["rated"]
        algorithm = str(model["algorithm"])
    out: dict[str, object] = {"algorithm": algorithm, "recommendations": {}}
    for user in args.users:
        row = int(np.searchsorted(users, user))
        candidates = np.where(rated[row], -np.inf, scores[row])
        top = np.argsort(-candidates, kind="stable")[: args.n]
        out["recommendations"][str(user)] = [int(movies[i]) for i in top]  # type: ignore[index]
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
