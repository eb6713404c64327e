"""Train a recommender on data/ratings.csv and save it to models/model.npz.

v1, ``--algorithm user-cosine``: user-based collaborative filtering with cosine
similarity between users' centred rating vectors (k nearest neighbours).
v2, ``--algorithm truncated-svd``: a low-rank factorization of the centred rating
matrix with scikit-learn's TruncatedSVD.

Both save plain NumPy arrays (no pickle), so the model can be loaded without
executing anything.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.metrics.pairwise import cosine_similarity


def load_matrix(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    users = np.unique(data[:, 0]).astype(int)
    movies = np.unique(data[:, 1]).astype(int)
    matrix = np.zeros((users.size, movies.size))
    matrix[np.searchsorted(users, data[:, 0]), np.searchsorted(movies, data[:, 1])] = data[:, 2]
    return users, movies, matrix


def centred(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rated = matrix > 0
    means = matrix.sum(1) / np.maximum(rated.sum(1), 1)
    return np.where(rated, matrix - means[:, None], 0.0), means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--algorithm", choices=["user-cosine", "truncated-svd"], required=True)
    parser.add_argument("--k", type=int, default=20, help="neighbours or SVD components")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data", type=Path, default=Path("data/ratings.csv"))
    parser.add_argument("--out", type=Path, default=Path("models/model.npz"))
    args = parser.parse_args()

    users, movies, matrix = load_matrix(args.data)
    residual, means = centred(matrix)
    if args.algorithm == "user-cosine":
        sim = cosine_similarity(residual)
        np.fill_diagonal(sim, 0.0)
        # Keep each user's k most similar neighbours.
        drop = np.argsort(-sim, axis=1)[:, args.k :]
        np.put_along_axis(sim, drop, 0.0, axis=1)
        weights = np.abs(sim).sum(1, keepdims=True)
        scores = means[:, None] + sim @ residual / np.maximum(weights, 1e-9)
    else:
        svd = TruncatedSVD(n_components=args.k, random_state=args.seed, algorithm="arpack")
        factors = svd.fit_transform(residual)
        scores = means[:, None] + factors @ svd.components_
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.out,
        algorithm=np.array(args.algorithm),
        users=users,
        movies=movies,
        scores=scores.astype(np.float32),
        rated=matrix > 0,
    )
    print(f"trained {args.algorithm} on {int((matrix > 0).sum())} ratings -> {args.out}")


if __name__ == "__main__":
    main()
