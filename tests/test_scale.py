"""The studio at team scale (issue 14), guarded without a clock: the store counts the connections it
gives out and the queries run on them, and every listing and every page run must cost the same
number of both whether the studio holds 20 or 200 dataset versions, runs and evaluations (a query per
row cannot creep back). Also: one file open serves a burst of work, the file is free again after it,
and a process that waits for the file is let in."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core import store
from tests.conftest import OPERATOR, REPO, grow_studio

PAGES = ["datasets", "generate", "train", "evaluate", "playground", "deploy", "admin"]
LISTINGS = {"dataset list": ["dataset", "list"], "evaluate list": ["evaluate", "list"], "jobs list": ["jobs", "list"]}


def _cost(fn) -> dict:
    before = store.counters()
    fn()
    got = store.counted_since(before)
    return {"connections": got["connections"], "queries": got["queries"]}


def test_counters_count_connections_and_queries(home):
    store.rows("SELECT 1")   # the database exists and is migrated
    cost = _cost(lambda: store.rows("SELECT count(*) FROM jobs"))
    assert cost == {"connections": 1, "queries": 1}

    def two_in_one():
        with store.connect() as con:
            con.execute("SELECT 1").fetchall()
            con.executemany("INSERT INTO settings VALUES (?, ?)", [["a", "1"], ["b", "2"]])
    assert _cost(two_in_one) == {"connections": 1, "queries": 2}

    def batch():   # inside a transaction every store call joins it: one connection in all
        with store.transaction() as con:
            store.insert_rows(con, "settings", ("key", "value"), [[f"k{i}", json.dumps(i)] for i in range(300)])
            store.set_setting("c", 3, actor="lan")
    assert _cost(batch) == {"connections": 1, "queries": 4}   # the insert; set_setting: read, write, audit
    assert store.one("SELECT count(*) AS n FROM settings WHERE key LIKE 'k%'")["n"] == 300


def test_one_open_serves_a_burst_and_the_file_is_free_after(home, monkeypatch):
    monkeypatch.setattr(store.connection, "LINGER_S", 30.0)
    store.rows("SELECT 1")
    before = store.counters()
    for _ in range(5):
        store.rows("SELECT count(*) FROM jobs")
    assert store.counted_since(before)["opens"] == 0   # the first call's open served them all
    store.close_idle()   # what the linger timer does after LINGER_S
    proc = subprocess.run([sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1]).close()",
                           str(store.paths.db_path())], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr   # no retry there: the file was free at once


def test_a_process_waiting_for_the_file_is_let_in(home, monkeypatch):
    """This process would keep the file for 30 s after its last query; another process that wants it
    marks that it waits, and this one closes the file for it at once."""
    monkeypatch.setattr(store.connection, "LINGER_S", 30.0)
    monkeypatch.setattr(store.connection, "MAX_HOLD_S", 60.0)
    store.rows("SELECT count(*) FROM jobs")
    before = store.counters()
    probe = ("import json, sys; sys.path.insert(0, sys.argv[1]); from core import store; "
             "store.rows('SELECT count(*) FROM jobs'); print(json.dumps(store.counters()))")
    proc = subprocess.run([sys.executable, "-c", probe, str(REPO)], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ})
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert theirs["lock_conflicts"] >= 1 and theirs["opens"] == 1   # it met the lock, then got in
    assert store.counted_since(before)["handoffs"] == 1             # because this process let it in
    assert not Path(str(store.paths.db_path()) + ".waiting").exists()


# ── the same cost at 20 and at 200 ───────────────────────────────────────────


def _costs(capsys) -> dict:
    from streamlit.testing.v1 import AppTest
    import streamlit as st

    from core import cli

    out = {}
    for name, argv in LISTINGS.items():
        def listing(argv=argv):
            with contextlib.redirect_stdout(io.StringIO()):
                assert cli.main(argv) == 0
        out[name] = _cost(listing)
    for page in PAGES:
        st.cache_data.clear()   # the live views' shared cache: every page run here reads the database

        def run(page=page):
            at = AppTest.from_file(str(REPO / "pages" / f"{page}.py"), default_timeout=180)
            at.session_state["principal"] = OPERATOR
            # a session reads its person's language once (pages.common.lang), not on every page run
            at.session_state["lang"], at.session_state["lang_for"] = "en", (OPERATOR.kind, OPERATOR.name)
            at.run()
            assert not at.exception, [e.value for e in at.exception]
            assert not at.error, [e.value for e in at.error]
        out[f"page {page}"] = _cost(run)
    return out


@pytest.mark.slow
def test_listings_and_page_runs_cost_the_same_at_20_and_200(home, capsys):
    from core.datasets import versions
    from core.training import runs

    grow_studio(home, 5)
    store.rows("SELECT 1")
    small = _costs(capsys)
    assert len(runs.list_runs(OPERATOR)) == 20 and len(versions.list_versions(OPERATOR)) == 26
    grow_studio(home, 45)
    large = _costs(capsys)
    assert len(runs.list_runs(OPERATOR)) == 200 and len(versions.list_versions(OPERATOR)) == 251
    assert large == small
    # and what that cost is: one connection and one query a listing, a handful a page
    assert all(small[name] == {"connections": 1, "queries": 1} for name in LISTINGS), small
    assert all(small[f"page {p}"]["queries"] <= 12 for p in PAGES), {p: small[f"page {p}"] for p in PAGES}
