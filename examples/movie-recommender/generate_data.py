"""Generate a small MovieLens-shaped data set: data/movies.csv and data/ratings.csv.

Users have hidden taste vectors over genres, so that both a neighbourhood model and
a matrix factorization find real structure. A fixed seed makes the files identical
on every run and machine.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Animation"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--movies", type=int, default=400)
    parser.add_argument("--ratings-per-user", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("data"))
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    movie_genres = rng.random((args.movies, len(GENRES))) < 0.25
    movie_genres[np.arange(args.movies), rng.integers(0, len(GENRES), args.movies)] = True
    with open(args.out / "movies.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["movieId", "title", "genres"])
        for m in range(args.movies):
            genres = "|".join(g for g, on in zip(GENRES, movie_genres[m], strict=True) if on)
            w.writerow([m + 1, f"Movie {m + 1} ({1970 + m % 50})", genres])

    taste = rng.normal(0, 1, (args.users, len(GENRES)))
    with open(args.out / "ratings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["userId", "movieId", "rating", "timestamp"])
        for u in range(args.users):
            seen = rng.choice(args.movies, size=args.ratings_per_user, replace=False)
            for m in sorted(seen):
                affinity = taste[u] @ movie_genres[m] / max(1, movie_genres[m].sum())
                score = 3.0 + 1.5 * affinity + rng.normal(0, 0.5)
                rating = float(np.clip(np.round(score * 2) / 2, 0.5, 5.0))
                w.writerow([u + 1, m + 1, rating, 946684800 + int(rng.integers(0, 10**8))])
    print(
        f"wrote {args.out}/movies.csv ({args.movies} movies) and {args.out}/ratings.csv "
        f"({args.users * args.ratings_per_user} ratings)"
    )


if __name__ == "__main__":
    main()
