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
        assert got == [(i, fn.__name__) for i, fn in enumerate(store.MIGRATIONS, start=1)]
        assert store.migrate(con) == 0
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"dataset_versions", "jobs", "runs", "metrics", "evaluations", "evaluation_examples",
            "releases", "audit_log", "settings"} <= tables


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
