"""The one module that opens the studio's DuckDB file.

DuckDB lets one process hold a file open for writing at a time. The app, CLI commands and the
scheduler all run side by side, so a process keeps the file open only while it works and a moment
after (``LINGER_S``), and hands it over to another process that waits for it (see "connections"
below). A connection that finds the file locked by another process waits and retries. Worker
processes never come here: they write files into their run folder and the supervisor ingests them.
``counters()`` says how many file opens, connections and queries this process has made, so tests
can assert that a listing or a page run costs the same at any size of the studio.

Schema changes are numbered migrations (``_m001_…``), applied in order and recorded in
``schema_migrations``, in the manner of Simon Willison's ``llm``.
"""
from __future__ import annotations

import atexit
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


def _m007_team_access(con: duckdb.DuckDBPyConnection) -> None:
    """Team access: projects (one per client; every dataset version, run, evaluation, release and job
    belongs to one, existing rows to "default"), accounts and their sign-in sessions, client demo
    links, and the role and project of every audit row."""
    con.execute(
        """
        CREATE TABLE projects (
            name          VARCHAR PRIMARY KEY,
            title         VARCHAR,
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE users (
            name          VARCHAR PRIMARY KEY,       -- a local account's name, or an OIDC account's email
            kind          VARCHAR NOT NULL,          -- local | oidc
            role          VARCHAR NOT NULL,          -- admin | engineer | reviewer | viewer
            password_hash VARCHAR,                   -- argon2id (local accounts only)
            projects      JSON,                      -- NULL: every project
            disabled      BOOLEAN NOT NULL DEFAULT false,
            failed_attempts INTEGER NOT NULL DEFAULT 0,
            locked_until  TIMESTAMPTZ,
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL,
            last_sign_in  TIMESTAMPTZ
        );
        CREATE TABLE sessions (
            token_hash    VARCHAR PRIMARY KEY,       -- sha256 of the cookie's token; the token is never stored
            user_name     VARCHAR NOT NULL,
            created_at    TIMESTAMPTZ NOT NULL,
            expires_at    TIMESTAMPTZ NOT NULL,
            revoked_at    TIMESTAMPTZ
        );
        CREATE TABLE demo_links (
            id            VARCHAR PRIMARY KEY,
            token_hash    VARCHAR NOT NULL,          -- sha256 of the link's token
            project       VARCHAR NOT NULL,
            title         VARCHAR,
            runs          JSON NOT NULL,
            releases      JSON NOT NULL,
            prompts       JSON NOT NULL,
            created_by    VARCHAR,
            created_at    TIMESTAMPTZ NOT NULL,
            expires_at    TIMESTAMPTZ NOT NULL,
            revoked_at    TIMESTAMPTZ,
            revoked_by    VARCHAR,
            last_used_at  TIMESTAMPTZ
        );
        ALTER TABLE audit_log ADD COLUMN role VARCHAR;
        ALTER TABLE audit_log ADD COLUMN project VARCHAR;
        """
    )
    con.execute("INSERT INTO projects VALUES ('default', 'Default project', 'migration 007', ?)", [now()])
    for table in ("dataset_versions", "runs", "evaluations", "releases", "jobs"):
        con.execute(f"ALTER TABLE {table} ADD COLUMN project VARCHAR DEFAULT 'default'")
        con.execute(f"UPDATE {table} SET project = 'default' WHERE project IS NULL")


def _m008_preference_votes(con: duckdb.DuckDBPyConnection) -> None:
    """Blind preference votes from the playground: a prompt, two models' answers (in the order they were
    shown), the voter's pick and who voted."""
    con.execute(
        """
        CREATE TABLE votes (
            id            VARCHAR PRIMARY KEY,
            project       VARCHAR NOT NULL DEFAULT 'default',
            prompt        VARCHAR NOT NULL,
            model_a       VARCHAR NOT NULL,          -- a playground target: run:ID, gguf:PATH, base:PATH, ollama:TAG
            model_b       VARCHAR NOT NULL,
            answer_a      VARCHAR NOT NULL,
            answer_b      VARCHAR NOT NULL,
            choice        VARCHAR NOT NULL CHECK (choice IN ('a', 'b', 'tie')),
            voter         VARCHAR NOT NULL,          -- the signed-in principal's name
            voter_role    VARCHAR,
            source        VARCHAR,                   -- typed | held-out:VERSION#IDX
            created_at    TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX votes_pair ON votes (project, model_a, model_b);
        """
    )


def _m009_word_scores(con: duckdb.DuckDBPyConnection) -> None:
    """Word-level BLEU and ROUGE-L (syllables joined into words by Vietnamese word segmentation,
    core.evaluation.words) beside the syllable scores, on evaluations and on every example, with the
    segmenter that made them: a second view, never gated. NULL where not computed (evaluations from
    before, or stored where the segmenter was not installed; ``evaluations.ensure_word_scores`` fills them)."""
    for column, kind in (("bleu_words", "DOUBLE"), ("rouge_l_words", "DOUBLE"), ("word_segmenter", "VARCHAR")):
        con.execute(f"ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS {column} {kind}")
    for column in ("bleu_words", "rouge_l_words"):
        con.execute(f"ALTER TABLE evaluation_examples ADD COLUMN IF NOT EXISTS {column} DOUBLE")


def _m010_saved_conversations(con: duckdb.DuckDBPyConnection) -> None:
    """Playground conversations kept as demo scripts: their turns, the model and system prompt they were had
    with; a demo link offers their questions, the playground replays them."""
    con.execute(
        """
        CREATE TABLE conversations (
            id            VARCHAR PRIMARY KEY,
            project       VARCHAR NOT NULL DEFAULT 'default',
            title         VARCHAR NOT NULL,
            model         VARCHAR,                   -- the playground target it was had with (run:ID, gguf:PATH…)
            system        VARCHAR,
            turns         JSON NOT NULL,             -- [{"role": "user"|"assistant", "content": text}, …]
            created_by    VARCHAR NOT NULL,
            created_at    TIMESTAMPTZ NOT NULL
        );
        """
    )


MIGRATIONS = [_m001_initial, _m002_reviews, _m004_evaluation_details, _m005_release_lifecycle,
              _m006_training_metrics, _m007_team_access, _m008_preference_votes, _m009_word_scores,
              _m010_saved_conversations]

# ── connections ──────────────────────────────────────────────────────────────
#
# Opening the DuckDB file costs tens of milliseconds (80 ms on the 2-core machine with a 7 MB file,
# bench/scale.py --profile), and while any connection of a process is open, no other process can
# open the file at all. So a process keeps one connection to the file (the "shared" one) and gives
# every ``connect()`` a cursor of it (a connection of its own to the same database, costing no open),
# and closes it ``LINGER_S`` after its last user is done: the queries of a page run or of a CLI command
# share one open, and the file is free again a moment later. Two rules keep other processes from
# waiting long behind a busy one: a process that finds the file locked writes its pid into
# ``studio.duckdb.waiting``, and a holder that sees another process's pid there closes the file as soon
# as its cursors are done (and lets that process in before it opens again); and a holder closes it at
# the first moment it is unused after ``MAX_HOLD_S`` of holding, whatever the linger. While another
# process waits, new work of this one waits up to ``HANDOFF_WAIT_S`` for the current work to end, so
# that overlapping page runs cannot keep the file to themselves.

LINGER_S = float(os.environ.get("VITUNE_DB_LINGER_S", "0.2"))
MAX_HOLD_S = float(os.environ.get("VITUNE_DB_MAX_HOLD_S", "5.0"))
HANDOFF_WAIT_S = 1.0          # how long a holder lets a waiting process in before it opens again

_migrated: set[str] = set()
_migrate_lock = threading.Lock()  # threads of one process share DuckDB's instance: migrate once

_COUNTER_NAMES = ("opens", "connections", "queries", "lock_conflicts", "lock_wait_s", "handoffs")
_counters: dict[str, float] = dict.fromkeys(_COUNTER_NAMES, 0)
_counter_lock = threading.Lock()


def _count(name: str, by: float = 1) -> None:
    with _counter_lock:
        _counters[name] += by


def counters() -> dict[str, float]:
    """What this process has done with the studio database so far: file ``opens``, ``connections``
    (one per ``connect()``: a cursor of the shared connection), ``queries`` (statements executed),
    ``lock_conflicts`` (opens refused because another process held the file), ``lock_wait_s`` (time
    spent waiting for it) and ``handoffs`` (times this process let a waiting one in)."""
    with _counter_lock:
        return dict(_counters)


def counted_since(before: dict[str, float]) -> dict[str, float]:
    now = counters()
    return {k: now[k] - before.get(k, 0) for k in now}


class _Counted:
    """A connection whose ``execute`` and ``executemany`` are counted (everything else passes through)."""

    __slots__ = ("_con",)

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self._con = con

    def execute(self, query: str, parameters: Any = None) -> "_Counted":
        _count("queries")
        if parameters is None:
            self._con.execute(query)
        else:
            self._con.execute(query, parameters)
        return self

    def executemany(self, query: str, parameters: Any = None) -> "_Counted":
        _count("queries")
        self._con.executemany(query, parameters or [])
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text)


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".waiting")


def _other_waiter(path: Path) -> bool:
    """Whether another live process waits for the file (its pid in the waiting marker)."""
    marker = _marker(path)
    try:
        pid = int(marker.read_text(encoding="utf-8").split()[0])
    except (FileNotFoundError, ValueError, IndexError, OSError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:   # a waiter that died: its marker means nothing
        marker.unlink(missing_ok=True)
        return False
    except PermissionError:
        pass
    try:
        age = time.time() - marker.stat().st_mtime
    except FileNotFoundError:   # the waiter got in and took its marker away meanwhile
        return False
    return age <= LOCK_WAIT_S + 5


def _open(path: Path) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + LOCK_WAIT_S
    t0 = time.monotonic()
    marked = False
    try:
        while True:
            try:
                con = duckdb.connect(str(path))
                _count("opens")
                return con
            except duckdb.IOException as exc:
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    raise StoreBusy(
                        f"The studio database {path} is held by another process for longer than "
                        f"{LOCK_WAIT_S:.0f} s: {exc}"
                    ) from exc
                _count("lock_conflicts")
                if not marked:  # ask the holder to let this process in
                    tmp = path.with_name(f"{path.name}.waiting.{os.getpid()}")
                    tmp.write_text(f"{os.getpid()}\n", encoding="utf-8")
                    os.replace(tmp, _marker(path))
                    marked = True
                time.sleep(0.02 + random.random() * 0.03)
    finally:
        waited = time.monotonic() - t0
        if marked:
            _count("lock_wait_s", waited)
            try:
                if int(_marker(path).read_text(encoding="utf-8").split()[0]) == os.getpid():
                    _marker(path).unlink()
            except (FileNotFoundError, ValueError, IndexError, OSError):
                pass


class StoreBusy(RuntimeError):
    pass


class _Shared:
    """The process's connection to one database file, and who uses it."""

    def __init__(self, path: Path):
        self.path = path
        self.cond = threading.Condition()
        self.con: duckdb.DuckDBPyConnection | None = None
        self.users = 0
        self.opened = 0.0      # monotonic time of the open
        self.last = 0.0        # monotonic time its last user finished
        self.timer: threading.Timer | None = None

    def acquire(self, nested: bool) -> duckdb.DuckDBPyConnection:
        with self.cond:
            if self.con is not None and self.users and not nested and _other_waiter(self.path):
                # another process waits: new work waits (a moment) for the current work to end
                until = time.monotonic() + HANDOFF_WAIT_S
                while self.con is not None and self.users and time.monotonic() < until:
                    self.cond.wait(0.01)
            if self.con is not None and self.users == 0 and (
                    time.monotonic() - self.opened > MAX_HOLD_S or _other_waiter(self.path)):
                self._close()
            if self.con is None:
                until = time.monotonic() + HANDOFF_WAIT_S
                while _other_waiter(self.path) and time.monotonic() < until:
                    time.sleep(0.01)   # let the waiting process in before opening again
                self.con = _open(self.path)
                self.opened = time.monotonic()
            self.users += 1
            try:
                cursor = self.con.cursor()
            except BaseException:
                self.users -= 1
                raise
        _count("connections")
        return cursor

    def release(self) -> None:
        with self.cond:
            self.users -= 1
            self.last = time.monotonic()
            if self.users:
                return
            waiter = _other_waiter(self.path)
            if waiter or LINGER_S <= 0 or self.last - self.opened > MAX_HOLD_S:
                if waiter:
                    _count("handoffs")
                self._close()
            elif self.timer is None:
                self._schedule(LINGER_S)

    def _schedule(self, delay: float) -> None:
        # the timer looks for a waiting process while it lingers, so that one gets in at once
        self.timer = threading.Timer(min(delay, 0.05), self._linger)
        self.timer.daemon = True
        self.timer.start()

    def _linger(self) -> None:
        with self.cond:
            self.timer = None
            if self.con is None or self.users:
                return
            left = self.last + LINGER_S - time.monotonic()
            waiter = left > 0 and _other_waiter(self.path)
            if left <= 0 or waiter:
                if waiter:
                    _count("handoffs")
                self._close()
            else:
                self._schedule(left)

    def _close(self) -> None:
        if self.con is not None:
            con, self.con = self.con, None
            con.close()
            self.cond.notify_all()

    def close_if_idle(self) -> None:
        with self.cond:
            if not self.users:
                self._close()


_shared: dict[str, _Shared] = {}
_shared_lock = threading.Lock()


def _shared_for(path: Path) -> _Shared:
    key = str(path)
    with _shared_lock:
        got = _shared.get(key)
        if got is None:
            got = _shared[key] = _Shared(path)
        return got


def close_idle() -> None:
    """Close every shared connection no one is using now (another process may open the file at once)."""
    with _shared_lock:
        every = list(_shared.values())
    for shared in every:
        shared.close_if_idle()


atexit.register(close_idle)


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


_local = threading.local()   # per thread: how many connections it holds, and its open transaction


@contextmanager
def connect() -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the studio database for one piece of work (a cursor of the process's shared
    connection; see above), migrated on first use in this process. Inside a ``transaction()`` block of
    the same thread it is that transaction's connection, so that a batch of calls commits once."""
    path = paths.db_path()
    joined = getattr(_local, "tx", None)
    if joined is not None and joined[0] == str(path):
        yield joined[1]
        return
    shared = _shared_for(path)
    depth = getattr(_local, "depth", 0)
    cursor = shared.acquire(nested=depth > 0)
    _local.depth = depth + 1
    try:
        key = str(path)
        if key not in _migrated:
            with _migrate_lock:
                if key not in _migrated:
                    migrate(cursor)
                    _migrated.add(key)
        yield _Counted(cursor)
    finally:
        _local.depth = depth
        try:
            cursor.close()
        finally:
            shared.release()


@contextmanager
def transaction() -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection whose statements commit together when the block ends, or not at all. Every store
    call of this thread inside the block (a nested ``transaction()`` too) joins it: wrapping a loop of
    studio calls in one block writes them in one commit (bench/scale.py seeds a home that way)."""
    joined = getattr(_local, "tx", None)
    if joined is not None and joined[0] == str(paths.db_path()):
        yield joined[1]
        return
    with connect() as con:
        con.begin()
        _local.tx = (str(paths.db_path()), con)
        try:
            yield con
        except BaseException:
            _local.tx = None
            con.rollback()
            raise
        _local.tx = None
        con.commit()


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
