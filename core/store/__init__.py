"""The studio's DuckDB file: the one package that opens it.

DuckDB lets one process hold a file open for writing at a time. The app, CLI commands and the
scheduler all run side by side, so a process keeps the file open only while it works and a moment
after (``LINGER_S``), and hands it over to another process that waits for it (see ``connection``).
A connection that finds the file locked by another process waits and retries. Worker processes
never come here: they write files into their run folder and the supervisor ingests them.
``counters()`` says how many file opens, connections and queries this process has made, so tests
can assert that a listing or a page run costs the same at any size of the studio.

- ``connection``: the one module that opens the file: the shared connection, waiting for the file,
  the counters, transactions, and the scratch DuckDB of bulk imports.
- ``migrations``: schema changes, numbered migrations (``_m001_…``) applied in order and recorded in
  ``schema_migrations``, in the manner of Simon Willison's ``llm``.

Here: the small helpers the core modules call (``rows``, ``one``, ``execute``, ``audit``, the settings),
and the names of both modules that callers use, so that ``from core import store`` stays all they
import. The connection's settings (``LOCK_WAIT_S``, ``LINGER_S``, ``MAX_HOLD_S``) live in
``connection``, which reads them at each use: set them there.
"""
from __future__ import annotations

import json
import os
import signal
from typing import Any

import duckdb

from core import paths
from core.store.connection import (  # noqa: F401  (the store's names, for its callers)
    StoreBusy, close_idle, connect, counted_since, counters, scratch, transaction,
)
from core.store.migrations import MIGRATIONS, _m001_initial, _migration_number, migrate, now  # noqa: F401

# Two transactions of one process that change the same row at once: the second gets this (and is rolled back).
Conflict = duckdb.TransactionException

# ── small helpers used by the core modules ───────────────────────────────────

CRASH_AT_ENV = "VITUNE_CRASH_AT"   # tests only: the process kills itself (SIGKILL) at the named point


def crash_point(name: str) -> None:
    """Where a test simulates the process dying between two statements (``VITUNE_CRASH_AT=NAME``): a real
    SIGKILL, so nothing after it runs (no rollback, no ``finally``). The points: the supervisor's ``claimed``
    and ``started`` (``core.jobs.supervisor._start``), ``ray.claimed`` (a job claimed for the Ray cluster, not
    yet submitted: ``_start_on_ray``), ``settle.ingested`` (a kind's ingest done, the job's
    state not yet written), ``evaluation.stored`` (an evaluation's row written, its examples not yet),
    ``review.completing`` (a review marked complete, its child version not yet written) and ``import.prepare``
    (an import's reading begins: in the import's own process when the caller isolated it)."""
    if os.environ.get(CRASH_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)



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


_column_types: dict[tuple[str, str], dict[str, str]] = {}


def insert_rows(con, table: str, columns: list[str] | tuple[str, ...], values: list[list], *,
                replace: bool = False) -> int:
    """Many rows in one statement, not one statement per row: each column goes in as one typed list
    (``unnest``). For 60 metric rows of 10 columns that is ~3 ms, where DuckDB's ``executemany`` takes
    ~150 ms and a VALUES list of 600 parameters ~11 ms (this machine, bench/scale.py). Returns the rows."""
    if not values:
        return 0
    raw = getattr(con, "_con", con)   # the type lookup is not the caller's query: it is not counted
    key = (str(paths.db_path()), table)
    if key not in _column_types:
        _column_types[key] = dict(raw.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?", [table]).fetchall())
    types = _column_types[key]
    picks = ", ".join(f"unnest(?::{types[c]}[])" for c in columns)
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    con.execute(f"{verb} INTO {table} ({', '.join(columns)}) SELECT {picks}",
                [list(column) for column in zip(*values)])
    return len(values)


def _who(actor: Any) -> tuple[str | None, str | None]:
    """(identity, role) of an acting principal (core.access.principal.Principal), or of a plain name."""
    return (getattr(actor, "name", actor), getattr(actor, "role", None))


def audit(action: str, subject: str | None = None, actor: Any = None, *, project: str | None = None,
          con: duckdb.DuckDBPyConnection | None = None, **detail: Any) -> None:
    """One audit row: who (the signed-in identity and its role), what, on which object, in which project."""
    name, role = _who(actor)
    row = [now(), name, role, action, subject, project, json.dumps(detail, ensure_ascii=False, default=str)]
    sql = "INSERT INTO audit_log (ts, actor, role, action, subject, project, detail) VALUES (?, ?, ?, ?, ?, ?, ?)"
    if con is not None:
        con.execute(sql, row)
    else:
        execute(sql, row)


def get_setting(key: str, default: Any = None) -> Any:
    got = one("SELECT value FROM settings WHERE key = ?", [key])
    return json.loads(got["value"]) if got else default


def get_settings(defaults: dict[str, Any]) -> dict[str, Any]:
    """Several settings in one query: each key's stored value, or its default from ``defaults``."""
    if not defaults:
        return {}
    marks = ", ".join("?" for _ in defaults)
    got = {r["key"]: json.loads(r["value"]) for r in rows(f"SELECT key, value FROM settings WHERE key IN ({marks})",
                                                          list(defaults))}
    return {key: got.get(key, default) for key, default in defaults.items()}


def set_setting(key: str, value: Any, actor: Any = None, **detail: Any) -> None:
    """Change a setting and record who did (callers check the actor's role first)."""
    old = get_setting(key)
    with connect() as con:
        con.execute(
            "INSERT OR REPLACE INTO settings VALUES (?, ?)", [key, json.dumps(value, ensure_ascii=False)]
        )
        audit("setting.changed", key, actor, con=con, old=old, new=value, **detail)
