"""The connection to the studio's DuckDB file: the one module that opens it (``duckdb.connect``), for
the studio database (``connect``, ``transaction``) and for heavy SQL over files (``scratch``).

Opening the DuckDB file costs tens of milliseconds (80 ms on the 2-core machine with a 7 MB file,
bench/scale.py --profile), and while any connection of a process is open, no other process can
open the file at all. So a process keeps one connection to the file (the "shared" one) and gives
every ``connect()`` a cursor of it (a connection of its own to the same database, costing no open),
and closes it ``LINGER_S`` after its last user is done: the queries of a page run or of a CLI command
share one open, and the file is free again a moment later. Two rules keep other processes from
waiting long behind a busy one: a process that finds the file locked writes its pid into
``studio.duckdb.waiting``, and a holder that sees another process's pid there closes the file as soon
as its cursors are done (and lets that process in before it opens again); and a holder closes it at
the first moment it is unused after ``MAX_HOLD_S`` of holding, whatever the linger. While another
process waits, new work of this one waits up to ``HANDOFF_WAIT_S`` for the current work to end, so
that overlapping page runs cannot keep the file to themselves.

A connection that finds the file locked by another process waits and retries, up to ``LOCK_WAIT_S``
(then ``StoreBusy``). ``counters()`` says how many file opens, connections and queries this process has
made. The settings are read here at each use: a test that changes one sets it on this module.
"""
from __future__ import annotations

import atexit
import os
import random
import shutil
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import duckdb

from core import paths
from core.store.migrations import migrate

LOCK_WAIT_S = 60.0
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
    """Spill folders (``scratch-PID-…``) and import-process folders (``import-PID-…``, core.datasets.importer)
    left by a process that died mid-import (they can hold gigabytes)."""
    for folder in [*root.glob("scratch-*"), *root.glob("import-*")] if root.exists() else []:
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
