"""The one module that opens the studio's DuckDB file.

DuckDB lets one process hold a file open for writing at a time. The app, CLI commands and the
scheduler all run side by side, so every use here is a short-lived connection: open, do the work,
close. A connection that finds the file locked by another process waits and retries. Worker
processes never come here: they write files into their run folder and the supervisor ingests them.

Schema changes are numbered migrations (``_m001_…``), applied in order and recorded in
``schema_migrations``, in the manner of Simon Willison's ``llm``.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import duckdb

from core import paths

LOCK_WAIT_S = 60.0

# ── migrations ───────────────────────────────────────────────────────────────


def _m001_initial(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE dataset_versions (
            id            VARCHAR PRIMARY KEY,
            name          VARCHAR NOT NULL,
            parent_id     VARCHAR,
            content_hash  VARCHAR NOT NULL,
            source        VARCHAR,
            rows_total    INTEGER NOT NULL,
            rows_train    INTEGER NOT NULL,
            rows_test     INTEGER NOT NULL,
            path          VARCHAR NOT NULL,
            lineage       JSON,
            report        JSON,
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL
        );
        CREATE SEQUENCE job_seq START 1;
        CREATE TABLE jobs (
            id            INTEGER PRIMARY KEY DEFAULT nextval('job_seq'),
            kind          VARCHAR NOT NULL,          -- train | evaluate | export
            owner         VARCHAR,
            state         VARCHAR NOT NULL,          -- queued | running | succeeded | failed | cancelled
            config        JSON NOT NULL,
            run_id        VARCHAR,
            dataset_version_id VARCHAR,
            slot          VARCHAR,
            pid           INTEGER,
            job_dir       VARCHAR NOT NULL,
            created_at    TIMESTAMPTZ NOT NULL,
            started_at    TIMESTAMPTZ,
            finished_at   TIMESTAMPTZ,
            error         VARCHAR,
            log_tail      VARCHAR,
            result        JSON
        );
        CREATE TABLE runs (
            id            VARCHAR PRIMARY KEY,
            job_id        INTEGER NOT NULL,
            base_model    VARCHAR NOT NULL,
            dataset_version_id VARCHAR NOT NULL,
            prompt_format VARCHAR NOT NULL,
            config        JSON NOT NULL,
            run_dir       VARCHAR NOT NULL,
            adapter_dir   VARCHAR,
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE metrics (
            run_id        VARCHAR NOT NULL,
            step          INTEGER NOT NULL,
            epoch         DOUBLE,
            loss          DOUBLE,
            learning_rate DOUBLE,
            grad_norm     DOUBLE,
            tokens_per_s  DOUBLE,
            ts            DOUBLE,
            PRIMARY KEY (run_id, step)
        );
        CREATE TABLE evaluations (
            id            VARCHAR PRIMARY KEY,
            job_id        INTEGER,
            run_id        VARCHAR,                   -- NULL: the base model alone
            base_model    VARCHAR NOT NULL,
            dataset_version_id VARCHAR NOT NULL,
            split         VARCHAR NOT NULL,
            n             INTEGER NOT NULL,
            bleu          DOUBLE NOT NULL,
            rouge_l       DOUBLE NOT NULL,
            passed        BOOLEAN NOT NULL,
            thresholds    JSON NOT NULL,
            decoding      JSON NOT NULL,
            duration_s    DOUBLE,
            created_at    TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE evaluation_examples (
            evaluation_id VARCHAR NOT NULL,
            idx           INTEGER NOT NULL,
            instruction   VARCHAR,
            input         VARCHAR,
            reference     VARCHAR,
            prediction    VARCHAR,
            bleu          DOUBLE,
            rouge_l       DOUBLE,
            PRIMARY KEY (evaluation_id, idx)
        );
        CREATE TABLE releases (
            id            VARCHAR PRIMARY KEY,
            name          VARCHAR NOT NULL,
            tag           VARCHAR NOT NULL,
            run_id        VARCHAR NOT NULL,
            dataset_version_id VARCHAR,
            evaluation_id VARCHAR,
            thresholds    JSON,
            gguf_path     VARCHAR,
            gguf_sha256   VARCHAR,
            modelfile     VARCHAR,
            ollama_status VARCHAR,
            override_reason VARCHAR,
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL
        );
        CREATE SEQUENCE audit_seq START 1;
        CREATE TABLE audit_log (
            id            INTEGER PRIMARY KEY DEFAULT nextval('audit_seq'),
            ts            TIMESTAMPTZ NOT NULL,
            actor         VARCHAR,
            action        VARCHAR NOT NULL,
            subject       VARCHAR,
            detail        JSON
        );
        CREATE TABLE settings (
            key           VARCHAR PRIMARY KEY,
            value         JSON NOT NULL
        );
        """
    )


def _m002_reviews(con: duckdb.DuckDBPyConnection) -> None:
    """Review samples of dataset versions (the guide's 10–15 % manual check) and their decisions."""
    con.execute(
        """
        CREATE TABLE reviews (
            id            VARCHAR PRIMARY KEY,
            dataset_version_id VARCHAR NOT NULL,
            kind          VARCHAR NOT NULL,          -- sample | bundled | inherited
            fraction      DOUBLE NOT NULL,
            seed          INTEGER NOT NULL,
            threshold     DOUBLE NOT NULL,
            sample_size   INTEGER NOT NULL,
            inherited_from VARCHAR,                  -- kind inherited: the parent version's review
            child_version_id VARCHAR,                -- the version made from this review's edits
            note          VARCHAR,
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL,
            completed_at  TIMESTAMPTZ
        );
        CREATE TABLE review_items (
            review_id     VARCHAR NOT NULL,
            idx           INTEGER NOT NULL,          -- position in the sample, from 1
            split         VARCHAR NOT NULL,          -- train | test
            row_index     INTEGER NOT NULL,          -- row in that split's Parquet file, from 0
            instruction   VARCHAR NOT NULL,
            input         VARCHAR NOT NULL,
            output        VARCHAR NOT NULL,
            decision      VARCHAR,                   -- approved | edited | rejected; NULL while pending
            edited        JSON,                      -- the pair as edited
            reviewer      VARCHAR,
            decided_at    TIMESTAMPTZ,
            PRIMARY KEY (review_id, idx)
        );
        """
    )


def _m004_evaluation_details(con: duckdb.DuckDBPyConnection) -> None:
    """Evaluations keep what a client asks about later: how they were produced, how fast, by whom,
    and the verdict's reason; examples keep a key that matches the same pair across evaluations."""
    for column, kind in (("prompt_format", "VARCHAR"), ("adapter_dir", "VARCHAR"), ("sample_limit", "INTEGER"),
                         ("generation_s", "DOUBLE"), ("scoring_s", "DOUBLE"), ("examples_per_s", "DOUBLE"),
                         ("gate_reason", "VARCHAR"), ("created_by", "VARCHAR")):
        con.execute(f"ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS {column} {kind}")
    con.execute("ALTER TABLE evaluation_examples ADD COLUMN IF NOT EXISTS pair_key VARCHAR")
    con.execute(
        """UPDATE evaluation_examples SET pair_key =
               md5(coalesce(instruction, '') || chr(31) || coalesce(input, '') || chr(31) || coalesce(reference, ''))
           WHERE pair_key IS NULL"""
    )


def _m005_release_lifecycle(con: duckdb.DuckDBPyConnection) -> None:
    """Releases keep their preflight report and quantization, and live on after delete or rollback."""
    con.execute(
        """
        ALTER TABLE releases ADD COLUMN quantization VARCHAR;
        ALTER TABLE releases ADD COLUMN preflight JSON;
        ALTER TABLE releases ADD COLUMN state VARCHAR DEFAULT 'active';   -- active | replaced | deleted
        ALTER TABLE releases ADD COLUMN rollback_of VARCHAR;
        ALTER TABLE releases ADD COLUMN deleted_by VARCHAR;
        ALTER TABLE releases ADD COLUMN deleted_at TIMESTAMPTZ;
        """
    )


def _m006_training_metrics(con: duckdb.DuckDBPyConnection) -> None:
    """Eval loss (on the test split) and peak GPU memory beside each training step."""
    con.execute("ALTER TABLE metrics ADD COLUMN IF NOT EXISTS eval_loss DOUBLE")
    con.execute("ALTER TABLE metrics ADD COLUMN IF NOT EXISTS gpu_mem_gib DOUBLE")


MIGRATIONS = [_m001_initial, _m002_reviews, _m004_evaluation_details, _m005_release_lifecycle,
              _m006_training_metrics]

# ── connections ──────────────────────────────────────────────────────────────

_migrated: set[str] = set()
_migrate_lock = threading.Lock()  # threads of one process share DuckDB's instance: migrate once


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text)


def _open(path: Path) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + LOCK_WAIT_S
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if not _is_lock_error(exc) or time.monotonic() > deadline:
                raise StoreBusy(
                    f"The studio database {path} is held by another process for longer than "
                    f"{LOCK_WAIT_S:.0f} s: {exc}"
                ) from exc
            time.sleep(delay + random.random() * delay)
            delay = min(delay * 2, 0.5)


class StoreBusy(RuntimeError):
    pass


def _migration_number(fn) -> int:
    """``_m004_name`` is migration 4: numbers come from the names, so branches can leave gaps."""
    return int(fn.__name__.split("_")[1].lstrip("m"))


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMPTZ)"
    )
    done = {r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()}
    applied = 0
    for number, fn in sorted((_migration_number(fn), fn) for fn in MIGRATIONS):
        if number in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            fn(con)
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)", [number, fn.__name__, now()]
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        applied += 1
    return applied


@contextmanager
def connect() -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection to the studio database, migrated on first use in this process."""
    path = paths.db_path()
    con = _open(path)
    try:
        key = str(path)
        if key not in _migrated:
            with _migrate_lock:
                if key not in _migrated:
                    migrate(con)
                    _migrated.add(key)
        yield con
    finally:
        con.close()


def _remove_stale_scratch(root: Path) -> None:
    """Spill folders left by a process that died mid-import (they can hold gigabytes)."""
    for folder in root.glob("scratch-*") if root.exists() else []:
        try:
            pid = int(folder.name.split("-")[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


@contextmanager
def scratch(memory_limit: str = "1GB", threads: int | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB for heavy SQL over files (bulk import), never the studio database.

    ``memory_limit`` bounds DuckDB's buffer manager: large sorts, joins and aggregates spill to a
    private ``temp_directory`` under data/tmp/, which is removed when the block ends. Holding it
    does not lock the studio database, so the app and other commands carry on meanwhile."""
    root = paths.data_dir() / "tmp"
    _remove_stale_scratch(root)
    tmp = root / f"scratch-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    config = {"memory_limit": memory_limit, "threads": int(threads or os.cpu_count() or 1),
              "temp_directory": str(tmp)}
    con = duckdb.connect(":memory:", config=config)
    try:
        yield con
    finally:
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)


# ── small helpers used by the core modules ───────────────────────────────────


def now() -> datetime:
    return datetime.now(timezone.utc)


def rows(sql: str, params: list | tuple | None = None) -> list[dict[str, Any]]:
    with connect() as con:
        cur = con.execute(sql, params or [])
        cols = [d[0] for d in cur.description] if cur.description else []
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def one(sql: str, params: list | tuple | None = None) -> dict[str, Any] | None:
    got = rows(sql, params)
    return got[0] if got else None


def execute(sql: str, params: list | tuple | None = None) -> None:
    with connect() as con:
        con.execute(sql, params or [])


def frame(sql: str, params: list | tuple | None = None):
    with connect() as con:
        return con.execute(sql, params or []).df()


def audit(action: str, subject: str | None = None, actor: str | None = None, **detail: Any) -> None:
    execute(
        "INSERT INTO audit_log (ts, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
        [now(), actor, action, subject, json.dumps(detail, ensure_ascii=False, default=str)],
    )


def get_setting(key: str, default: Any = None) -> Any:
    got = one("SELECT value FROM settings WHERE key = ?", [key])
    return json.loads(got["value"]) if got else default


def set_setting(key: str, value: Any, actor: str | None = None) -> None:
    old = get_setting(key)
    with connect() as con:
        con.execute(
            "INSERT OR REPLACE INTO settings VALUES (?, ?)", [key, json.dumps(value, ensure_ascii=False)]
        )
        con.execute(
            "INSERT INTO audit_log (ts, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
            [now(), actor, "setting.changed", key, json.dumps({"old": old, "new": value}, ensure_ascii=False)],
        )
