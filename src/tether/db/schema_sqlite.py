"""SQLite's schema, as the ordered migrations that built it.

SQLite has no time or JSON types: times are REAL seconds since the epoch, JSON
documents TEXT. Tables whose rows are found by their primary key are ``WITHOUT
ROWID``. A migration runs inside the runner's transaction (``migrations.py``).
"""

from __future__ import annotations

from tether.db import backfill
from tether.db.connection import Connection
from tether.db.migrations import Migration


def _script(conn: Connection, script: str) -> None:
    # Not executescript(): it COMMITs first, which would end the migration's transaction.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _0001_tag_history(conn: Connection) -> None:
    # Every tag move, so that "where did v1.0.0 point before --force?" has an answer.
    conn.execute(
        """CREATE TABLE tag_events (
               id INTEGER PRIMARY KEY,
               repository TEXT NOT NULL,
               tag TEXT NOT NULL,
               action TEXT NOT NULL CHECK (action IN ('set', 'move', 'remove')),
               old_digest TEXT,
               new_digest TEXT,
               at REAL NOT NULL,
               user TEXT NOT NULL
           )"""
    )
    conn.execute("CREATE INDEX tag_events_by_tag ON tag_events (repository, tag, id)")


def _0002_layer_files(conn: Connection) -> None:
    # File listings of layers (path, size, digest, mode), computed once per layer digest
    # for 'tether diff'; derivable from the blobs, so safe to drop.
    conn.execute(
        """CREATE TABLE layer_files (
               layer_digest TEXT PRIMARY KEY,
               files_json TEXT NOT NULL
           )"""
    )


def _0003_runs(conn: Connection) -> None:
    # Runs and what they captured. Times are Unix seconds (REAL). Params and tags keep
    # the text the user logged plus `num`, its value when it reads as a finite number, so
    # a filter can compare numerically without CAST turning 'abc' into 0.
    _script(
        conn,
        """
        CREATE TABLE environments (
            digest TEXT PRIMARY KEY,
            body TEXT NOT NULL,
            created REAL NOT NULL
        );
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            name TEXT,
            status TEXT NOT NULL
                CHECK (status IN ('running', 'finished', 'failed', 'killed')),
            command TEXT NOT NULL,
            cwd TEXT NOT NULL,
            started REAL NOT NULL,
            ended REAL,
            exit_code INTEGER,
            reason TEXT,
            host TEXT NOT NULL,
            user TEXT NOT NULL,
            pid INTEGER NOT NULL,
            pid_started TEXT,
            seed INTEGER,
            env_digest TEXT REFERENCES environments (digest),
            code TEXT,
            log_digest TEXT,
            capture TEXT
        );
        CREATE INDEX runs_by_started ON runs (started);
        CREATE INDEX runs_by_name ON runs (name, started);
        CREATE INDEX runs_running ON runs (status) WHERE status = 'running';
        CREATE TABLE run_params (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            num REAL,
            PRIMARY KEY (run_id, key)
        ) WITHOUT ROWID;
        CREATE INDEX run_params_by_key ON run_params (key, value);
        CREATE TABLE run_tags (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            num REAL,
            PRIMARY KEY (run_id, key)
        ) WITHOUT ROWID;
        CREATE INDEX run_tags_by_key ON run_tags (key, value);
        -- The series: no primary key, so a batch insert touches one index only.
        CREATE TABLE run_metrics (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            step INTEGER NOT NULL,
            at REAL NOT NULL,
            value REAL
        );
        CREATE INDEX run_metrics_series ON run_metrics (run_id, key, step);
        -- One row per (run, metric), maintained per batch: what filters and lists read.
        CREATE TABLE run_metric_summary (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            last REAL,
            last_step INTEGER NOT NULL,
            last_at REAL NOT NULL,
            min REAL,
            max REAL,
            count INTEGER NOT NULL,
            PRIMARY KEY (run_id, key)
        ) WITHOUT ROWID;
        CREATE INDEX run_metric_summary_by_key ON run_metric_summary (key, last);
        CREATE TABLE run_files (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('input', 'output', 'artifact')),
            path TEXT NOT NULL,
            digest TEXT,
            size INTEGER,
            source TEXT NOT NULL,
            stored INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (run_id, role, path)
        ) WITHOUT ROWID;
        CREATE INDEX run_files_by_digest ON run_files (digest);
        -- Every blob a run keeps alive (log, code diff, source snapshot, lock files,
        -- stored outputs): gc reads blob_refs and never needs to know about runs.
        CREATE TABLE run_blobs (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            digest TEXT NOT NULL,
            purpose TEXT NOT NULL,
            PRIMARY KEY (run_id, digest, purpose)
        ) WITHOUT ROWID;
        CREATE VIEW blob_refs AS SELECT DISTINCT digest FROM run_blobs;
        """,
    )


def _0004_run_links(conn: Connection) -> None:
    # Edges between runs (kind 'reproduces': the run re-ran the target), indexed both
    # ways so "was this run ever reproduced?" is one lookup.
    _script(
        conn,
        """
        CREATE TABLE run_links (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            target_id TEXT NOT NULL,
            detail TEXT,
            PRIMARY KEY (run_id, kind, target_id)
        ) WITHOUT ROWID;
        CREATE INDEX run_links_by_target ON run_links (target_id, kind)
        """,
    )


def _0005_registry_blobs(conn: Connection) -> None:
    # Which repositories of which registry are known to hold a blob (seen on push or
    # pull), so a push to another repository of the same registry can mount it instead
    # of uploading it again.
    _script(
        conn,
        """
        CREATE TABLE registry_blobs (
            registry TEXT NOT NULL,
            digest TEXT NOT NULL,
            repository TEXT NOT NULL,
            seen_at REAL NOT NULL,
            PRIMARY KEY (registry, digest, repository)
        ) WITHOUT ROWID
        """,
    )


def _0006_models(conn: Connection) -> None:
    # The model registry and the edges lineage walks that runs do not already hold.
    # Versions are never deleted, only archived, so lineage can always name them;
    # every alias move is an event with a reason, and a `uid` so that histories read
    # back from a registry merge without duplicates.
    _script(
        conn,
        """
        CREATE TABLE models (
            name TEXT PRIMARY KEY,
            created REAL NOT NULL,
            user TEXT NOT NULL,
            remote TEXT
        );
        CREATE TABLE model_versions (
            model TEXT NOT NULL REFERENCES models (name),
            version INTEGER NOT NULL CHECK (version > 0),
            digest TEXT NOT NULL,
            run_id TEXT,
            source TEXT NOT NULL,
            created REAL NOT NULL,
            user TEXT NOT NULL,
            description TEXT,
            archived REAL,
            PRIMARY KEY (model, version)
        ) WITHOUT ROWID;
        CREATE INDEX model_versions_by_digest ON model_versions (digest);
        CREATE INDEX model_versions_by_run ON model_versions (run_id);
        CREATE TABLE model_aliases (
            model TEXT NOT NULL,
            alias TEXT NOT NULL,
            version INTEGER NOT NULL,
            PRIMARY KEY (model, alias),
            FOREIGN KEY (model, version) REFERENCES model_versions (model, version)
        ) WITHOUT ROWID;
        CREATE INDEX model_aliases_by_version ON model_aliases (model, version);
        CREATE TABLE model_events (
            id INTEGER PRIMARY KEY,
            uid TEXT NOT NULL UNIQUE,
            model TEXT NOT NULL,
            alias TEXT,
            action TEXT NOT NULL
                CHECK (action IN ('register', 'archive', 'set', 'move', 'rollback', 'remove')),
            old_version INTEGER,
            new_version INTEGER,
            at REAL NOT NULL,
            user TEXT NOT NULL,
            reason TEXT
        );
        CREATE INDEX model_events_by_model ON model_events (model, alias, id);
        -- Which run made a ModelKit: named at pack time (--from-run), detected from the
        -- model files' digests, or read from the kit's provenance document.
        CREATE TABLE kit_runs (
            kit_digest TEXT NOT NULL,
            run_id TEXT NOT NULL,
            how TEXT NOT NULL CHECK (how IN ('from-run', 'detected', 'provenance')),
            PRIMARY KEY (kit_digest, run_id)
        ) WITHOUT ROWID;
        CREATE INDEX kit_runs_by_run ON kit_runs (run_id)
        """,
    )


def _0007_side_effects(conn: Connection) -> None:
    # A run's writes outside its project that nobody declared (library caches, font
    # caches, temp files) are side effects: recorded and shown, not results to verify.
    # SQLite cannot change a CHECK constraint in place, so the table is rebuilt.
    _script(
        conn,
        """
        CREATE TABLE run_files_new (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('input', 'output', 'artifact', 'side-effect')),
            path TEXT NOT NULL,
            digest TEXT,
            size INTEGER,
            source TEXT NOT NULL,
            stored INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (run_id, role, path)
        ) WITHOUT ROWID;
        INSERT INTO run_files_new SELECT run_id, role, path, digest, size, source, stored
            FROM run_files;
        DROP TABLE run_files;
        ALTER TABLE run_files_new RENAME TO run_files;
        CREATE INDEX run_files_by_digest ON run_files (digest)
        """,
    )


def _0008_metric_buckets(conn: Connection) -> None:
    # Min/max buckets of 64 and 4,096 points per series (repositories/metrics.py): a
    # chart of a million points reads a few thousand rows instead of the series.
    _script(
        conn,
        """
        CREATE TABLE run_metric_buckets (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            width INTEGER NOT NULL,
            bucket INTEGER NOT NULL,
            count INTEGER NOT NULL,
            finite INTEGER NOT NULL,
            min_step INTEGER NOT NULL,
            max_step INTEGER NOT NULL,
            min_at REAL NOT NULL,
            max_at REAL NOT NULL,
            min REAL,
            max REAL,
            sum REAL,
            last REAL,
            PRIMARY KEY (run_id, key, width, bucket)
        ) WITHOUT ROWID
        """,
    )
    backfill.metric_buckets(conn, "rowid")


def _0009_metric_chunks(conn: Connection) -> None:
    # Points in chunks, one row per series per write (db/point_chunks.py), instead of
    # one row per point.
    _script(
        conn,
        """
        CREATE TABLE run_metric_chunks (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            ordinal INTEGER NOT NULL,
            count INTEGER NOT NULL,
            min_step INTEGER NOT NULL,
            max_step INTEGER NOT NULL,
            steps BLOB NOT NULL,
            ats BLOB NOT NULL,
            vals BLOB NOT NULL,
            PRIMARY KEY (run_id, key, ordinal)
        )
        """,
    )
    backfill.metric_chunks(conn, "rowid")


def _0010_experiments(conn: Connection) -> None:
    # MLflow's experiments (repositories/experiments.py): a run belongs to one through
    # its tag mlflow.experiment_id; runs without it are in experiment 0, "Default".
    _script(
        conn,
        """
        CREATE TABLE experiments (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            artifact_location TEXT,
            lifecycle TEXT NOT NULL CHECK (lifecycle IN ('active', 'deleted')),
            created REAL NOT NULL,
            updated REAL NOT NULL
        );
        CREATE TABLE experiment_tags (
            experiment_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (experiment_id, key)
        ) WITHOUT ROWID
        """,
    )


def _0011_mlflow_models(conn: Connection) -> None:
    # MLflow 3's logged models (a run's model files before any registration) and what
    # MLflow knows of a registered model that tether's registry does not: the name as
    # the client spelled it, a description, tags (repositories/logged_models.py, models.py).
    _script(
        conn,
        """
        CREATE TABLE logged_models (
            id TEXT PRIMARY KEY,
            experiment_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            run_id TEXT,
            status TEXT NOT NULL CHECK (status IN ('pending', 'ready', 'failed')),
            model_type TEXT,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            user TEXT NOT NULL
        );
        CREATE INDEX logged_models_by_run ON logged_models (run_id);
        CREATE TABLE logged_model_values (
            model_id TEXT NOT NULL REFERENCES logged_models (id) ON DELETE CASCADE,
            kind TEXT NOT NULL CHECK (kind IN ('tag', 'param')),
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (model_id, kind, key)
        ) WITHOUT ROWID;
        CREATE TABLE logged_model_files (
            model_id TEXT NOT NULL REFERENCES logged_models (id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            digest TEXT NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (model_id, path)
        ) WITHOUT ROWID;
        CREATE TABLE model_labels (
            model TEXT PRIMARY KEY REFERENCES models (name),
            label TEXT UNIQUE,
            description TEXT
        ) WITHOUT ROWID;
        CREATE TABLE model_tags (
            model TEXT NOT NULL REFERENCES models (name),
            version INTEGER NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (model, version, key)
        ) WITHOUT ROWID;
        DROP VIEW blob_refs;
        CREATE VIEW blob_refs AS
            SELECT digest FROM run_blobs UNION SELECT digest FROM logged_model_files;
        """,
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration("0001_tag_history", _0001_tag_history),
    Migration("0002_layer_files", _0002_layer_files),
    Migration("0003_runs", _0003_runs),
    Migration("0004_run_links", _0004_run_links),
    Migration("0005_registry_blobs", _0005_registry_blobs),
    Migration("0006_models", _0006_models),
    Migration("0007_side_effects", _0007_side_effects),
    Migration("0008_metric_buckets", _0008_metric_buckets),
    Migration("0009_metric_chunks", _0009_metric_chunks),
    Migration("0010_experiments", _0010_experiments),
    Migration("0011_mlflow_models", _0011_mlflow_models),
)
