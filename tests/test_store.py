import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from core import store
from tests.conftest import REPO, cli, paths


def test_migrations_are_numbered_and_applied_once(home):
    with store.connect() as con:
        got = con.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
        assert got == sorted((int(fn.__name__.split("_")[1][1:]), fn.__name__) for fn in store.MIGRATIONS)
        assert (4, "_m004_evaluation_details") in got
        assert store.migrate(con) == 0
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"dataset_versions", "jobs", "runs", "metrics", "evaluations", "evaluation_examples",
            "releases", "audit_log", "settings", "votes", "conversations"} <= tables


def test_migration_004_keys_the_examples_of_an_older_database(home):
    """A database made before migration 004 gains the new columns, and its examples a pair key equal to
    the one ingest computes for new evaluations."""
    from core.evaluation import evaluations

    con = duckdb.connect(str(paths.db_path()))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMPTZ)")
    store._m001_initial(con)
    con.execute("INSERT INTO schema_migrations VALUES (1, '_m001_initial', now())")
    con.execute("INSERT INTO evaluation_examples VALUES ('eval-old', 0, 'Hỏi', '', 'Dạ, vâng ạ.', 'Dạ', 0.1, 0.5)")
    assert store.migrate(con) == len(store.MIGRATIONS) - 1
    key = con.execute("SELECT pair_key FROM evaluation_examples").fetchone()[0]
    cols = {r[0] for r in con.execute("DESCRIBE evaluations").fetchall()}
    con.close()
    assert key == evaluations.pair_key("Hỏi", "", "Dạ, vâng ạ.")
    assert {"prompt_format", "generation_s", "examples_per_s", "gate_reason", "sample_limit"} <= cols


def test_settings_changes_are_audited(home):
    store.set_setting("thresholds", {"bleu": 0.4, "rouge_l": 0.5}, actor="lan")
    assert store.get_setting("thresholds") == {"bleu": 0.4, "rouge_l": 0.5}
    audit = store.rows("SELECT actor, action, subject FROM audit_log")
    assert audit == [{"actor": "lan", "action": "setting.changed", "subject": "thresholds"}]


def _hold(db: Path, until: str) -> subprocess.Popen:
    """Another process (as the app would, mid-write) that opens the studio database and holds it: until a
    process waiting for it leaves its marker (``until="waiter"``), or until its stdin closes (``"stdin"``)."""
    code = ("import duckdb, os, sys, time\n"
            "con = duckdb.connect(sys.argv[1]); con.execute('CREATE TABLE IF NOT EXISTS t(x INT)')\n"
            "print('held', flush=True)\n"
            "if sys.argv[2] == 'waiter':\n"
            "    marker, deadline = sys.argv[1] + '.waiting', time.monotonic() + 300\n"
            "    while not os.path.exists(marker) and time.monotonic() < deadline:\n"
            "        time.sleep(0.02)\n"
            "    print('a waiter asked' if os.path.exists(marker) else 'nobody asked', flush=True)\n"
            "else:\n"
            "    sys.stdin.read()\n"
            "con.close()\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(db), until], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_cli_works_while_another_process_holds_the_database(home):
    with store.connect():
        pass  # create and migrate
    store.close_idle()  # this process would keep the file open a moment longer (store.connection.LINGER_S)
    holder = _hold(paths.db_path(), until="waiter")   # lets go only once a waiting process has asked for the file
    proc = cli("dataset", "list", home=home)
    said = holder.communicate(timeout=60)[0].strip()
    assert proc.returncode == 0
    assert said == "a waiter asked"   # the CLI met the lock, waited and asked for the file, then got it
    assert not Path(str(paths.db_path()) + ".waiting").exists()   # and took its marker away again


def test_a_database_held_past_the_lock_wait_is_store_busy(home, monkeypatch):
    with store.connect():
        pass
    store.close_idle()
    monkeypatch.setattr(store.connection, "LOCK_WAIT_S", 1.0)   # the setting, short: 60 s by default
    holder = _hold(paths.db_path(), until="stdin")   # holds the file until told to let go
    try:
        before = store.counters()
        with pytest.raises(store.StoreBusy, match=r"is held by another process for longer than 1 s"):
            store.rows("SELECT count(*) AS n FROM jobs")
        assert store.counted_since(before)["lock_conflicts"] >= 2   # it retried before giving up
        assert not Path(str(paths.db_path()) + ".waiting").exists()   # no marker left to stall the holder later
    finally:
        holder.communicate("", timeout=60)
    assert store.rows("SELECT count(*) AS n FROM jobs") == [{"n": 0}]   # once let go, the file is usable again


def test_only_core_store_opens_duckdb():
    offenders = []
    for folder in ("core", "pages"):
        for path in (REPO / folder).rglob("*.py"):
            if "duckdb.connect" in path.read_text(encoding="utf-8") and path != REPO / "core/store/connection.py":
                offenders.append(str(path))
    assert offenders == []
    assert "duckdb.connect" not in (REPO / "app.py").read_text(encoding="utf-8")


def test_threads_of_one_process_migrate_a_new_database_once(home):
    import threading

    errors = []

    def use():
        try:
            store.rows("SELECT count(*) FROM jobs")
        except Exception as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.rows("SELECT count(*) AS n FROM schema_migrations") == [{"n": len(store.MIGRATIONS)}]
