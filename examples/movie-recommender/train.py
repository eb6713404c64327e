"""Train a recommender on data/ratings.csv and save it to models/model.npz.

v1, ``--algorithm user-cosine``: user-based collaborative filtering with cosine
similarity between users' centred rating vectors (k nearest neighbours).
v2, ``--algorithm truncated-svd``: a low-rank factorization of the centred rating
matrix with scikit-learn's TruncatedSVD.

Both save plain NumPy arrays (no pickle), so the model can be loaded without
executing anything. Ratings of movies missing from data/movies.csv are dropped; a
seeded 10% of the ratings is held out, and the RMSE on them is logged to the tether
run (under ``tether run`` it joins that run; alone it records one).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.metrics.pairwise import cosine_similarity

import tether


def load_ratings(path: Path, catalog: Path) -> np.ndarray:
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    known = np.loadtxt(catalog, delimiter=",", skiprows=1, usecols=0, dtype=int)
    return data[np.isin(data[:, 1].astype(int), known)]


def to_matrix(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    parser.add_argument("--movies", type=Path, default=Path("data/movies.csv"))
    parser.add_argument("--out", type=Path, default=Path("models/model.npz"))
    args = parser.parse_args()

    data = load_ratings(args.data, args.movies)
    users, movies, matrix = to_matrix(data)
    rng = np.random.default_rng(args.seed)
    held_out = np.argwhere(matrix > 0)
    held_out = held_out[rng.random(len(held_out)) < 0.1]
    truth = matrix[held_out[:, 0], held_out[:, 1]]
    matrix[held_out[:, 0], held_out[:, 1]] = 0.0
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
    rmse = float(np.sqrt(np.mean((scores[held_out[:, 0], held_out[:, 1]] - truth) ** 2)))
    with tether.start_run(params={"algorithm": args.algorithm, "k": args.k}) as run:
        run.log_metric("rmse", rmse)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.out,
        algorithm=np.array(args.algorithm),
        users=users,
        movies=movies,
        scores=scores.astype(np.float32),
        rated=matrix > 0,
    )
    print(
        f"trained {args.algorithm} on {int((matrix > 0).sum())} ratings -> {args.out}; "
        f"held-out RMSE {rmse:.4f}"
    )


if __name__ == "__main__":
    main()
