import os
import subprocess
import sys
import time

import duckdb

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
            "releases", "audit_log", "settings"} <= tables


def test_migration_004_keys_the_examples_of_an_older_database(home):
    """A database made before migration 004 gains the new columns, and its examples a pair key equal to
    the one ingest computes for new evaluations."""
    from core import evaluate

    con = duckdb.connect(str(paths.db_path()))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMPTZ)")
    store._m001_initial(con)
    con.execute("INSERT INTO schema_migrations VALUES (1, '_m001_initial', now())")
    con.execute("INSERT INTO evaluation_examples VALUES ('eval-old', 0, 'Hỏi', '', 'Dạ, vâng ạ.', 'Dạ', 0.1, 0.5)")
    assert store.migrate(con) == len(store.MIGRATIONS) - 1
    key = con.execute("SELECT pair_key FROM evaluation_examples").fetchone()[0]
    cols = {r[0] for r in con.execute("DESCRIBE evaluations").fetchall()}
    con.close()
    assert key == evaluate.pair_key("Hỏi", "", "Dạ, vâng ạ.")
    assert {"prompt_format", "generation_s", "examples_per_s", "gate_reason", "sample_limit"} <= cols


def test_settings_changes_are_audited(home):
    store.set_setting("thresholds", {"bleu": 0.4, "rouge_l": 0.5}, actor="lan")
    assert store.get_setting("thresholds") == {"bleu": 0.4, "rouge_l": 0.5}
    audit = store.rows("SELECT actor, action, subject FROM audit_log")
    assert audit == [{"actor": "lan", "action": "setting.changed", "subject": "thresholds"}]


def test_cli_works_while_another_process_holds_the_database(home):
    with store.connect():
        pass  # create and migrate
    # another process (as the app would, mid-write) holds the file for two seconds
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('held', flush=True); "
         "con.execute('CREATE TABLE IF NOT EXISTS t(x INT)'); time.sleep(2); con.close()",
         str(paths.db_path())], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    t0 = time.monotonic()
    proc = cli("dataset", "list", home=home)
    holder.wait(10)
    assert proc.returncode == 0
    assert time.monotonic() - t0 >= 1.0  # it waited for the holder instead of failing


def test_only_core_store_opens_duckdb():
    offenders = []
    for folder in ("core", "pages"):
        for path in (REPO / folder).rglob("*.py"):
            if "duckdb.connect" in path.read_text(encoding="utf-8") and path.name != "store.py":
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
