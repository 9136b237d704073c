"""Two teammates at once, with real processes: two CLI processes cancel the same job (beside a third that
ticks), two decide the same review pair and two finish a sample together, and a supervisor killed
between starting a worker and recording it does not start the job twice after a restart."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import store
from core.datasets import importer, review, versions
from core.jobs import queue, supervisor
from core.training import presets, runs
from tests.conftest import OPERATOR, REPO, approve_review, tiny_pairs, write_jsonl


def _spawn(home: Path, *args: str, **env: str) -> subprocess.Popen:
    """``python -m core ARGS`` started now (not waited for), against ``home``."""
    return subprocess.Popen([sys.executable, "-m", "core", *args], cwd=REPO,
                            env=dict(os.environ, VITUNE_HOME=str(home), PYTHONUNBUFFERED="1", **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _together(home: Path, *commands: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """Start every command before waiting for any: (exit code, stdout, stderr) of each, in order."""
    procs = [_spawn(home, *c) for c in commands]
    return [(p.returncode, out, err) for p in procs for out, err in [p.communicate(timeout=300)]]


def _workers(job_dir: str) -> list[int]:
    """Every live worker process whose command line runs ``job_dir``."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = proc.info.get("cmdline") or []
        if cmd[-2:] == ["core.worker", str(job_dir)] and proc.info.get("status") != psutil.STATUS_ZOMBIE:
            found.append(proc.info["pid"])
    return found


def _long_job(version_id: str) -> dict:
    cfg = presets.preset("quick test (CPU, 20 steps)", max_steps=500, max_seq_length=128)
    return runs.submit_train(version_id, cfg, actor=OPERATOR)


@pytest.fixture
def version(home, default_model):
    v, _ = importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(16))], "tiny", actor=OPERATOR)
    assert approve_review(v["id"])["reviewed"]
    return v["id"]


def _gone(job_dir: str) -> bool:
    deadline = time.monotonic() + 30   # a bound on waiting, not an assertion on speed
    while _workers(job_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not _workers(job_dir)


def test_two_processes_cancel_a_running_job_beside_a_tick_and_one_wins(home, version):
    job = _long_job(version)
    supervisor.tick()
    assert queue.get_job(job["id"])["state"] == "running"
    results = _together(home, ("jobs", "cancel", str(job["id"])), ("jobs", "cancel", str(job["id"])), ("jobs", "tick"))
    codes = sorted(code for code, _, _ in results[:2])
    assert codes == [0, 1], results
    won = next(r for r in results[:2] if r[0] == 0)
    lost = next(r for r in results[:2] if r[0] == 1)
    assert won[1].strip() == f"job {job['id']}: cancelled"
    assert lost[2].strip() == f"error: job {job['id']} has already ended (cancelled)"
    assert all("Traceback" not in err for _, _, err in results)
    assert queue.get_job(job["id"])["state"] == "cancelled"
    assert store.one("SELECT count(*) AS n FROM audit_log WHERE action = 'job.cancelled'")["n"] == 1
    assert _gone(job["job_dir"])


def test_a_cancel_racing_the_tick_that_starts_the_job_leaves_no_worker_running(home, version):
    job = _long_job(version)   # queued: the tick process may start it before or after the cancel lands
    results = _together(home, ("jobs", "tick"), ("jobs", "cancel", str(job["id"])))
    assert [code for code, _, _ in results] == [0, 0], results
    assert queue.get_job(job["id"])["state"] == "cancelled"
    assert _gone(job["job_dir"])   # whichever came first, nothing runs on the slot the scheduler thinks free
    supervisor.tick()
    assert queue.get_job(job["id"])["state"] == "cancelled"   # a cancelled job never turns into anything else


def test_two_processes_decide_the_same_pair_and_two_finish_the_sample_once(home):
    v, _ = importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(30))], "cskh", actor=OPERATOR)
    vid = v["id"]
    assert review.start(vid, actor=OPERATOR)["sample_size"] == 3
    first = _together(home, ("review", "decide", vid, "--item", "1", "--approve"),
                      ("review", "decide", vid, "--item", "1", "--reject"))
    assert sorted(code for code, _, _ in first) == [0, 1], first
    winner = "approved" if first[0][0] == 0 else "rejected"
    loser_err = first[1][2] if first[0][0] == 0 else first[0][2]
    rid = review.current(vid)["id"]
    assert loser_err.strip() == f"error: pair 1 of review {rid} is already decided ({winner} by {OPERATOR.name})"
    assert review.items(rid)[0]["decision"] == winner
    # the last two pairs decided at once: each process may see the sample complete; one child version results
    last = _together(home, ("review", "decide", vid, "--item", "2", "--reject"),
                     ("review", "decide", vid, "--item", "3", "--reject"))
    assert [code for code, _, _ in last] == [0, 0], last
    children = [x for x in versions.list_versions(OPERATOR) if x["parent_id"] == vid]
    assert len(children) == 1 and children[0]["rows_total"] == 30 - (3 if winner == "rejected" else 2)
    assert review.status(vid)["child_version"] == children[0]["id"]
    assert store.one("SELECT count(*) AS n FROM audit_log WHERE action = 'review.completed'")["n"] == 1
    assert store.one("SELECT count(*) AS n FROM audit_log WHERE action = 'review.decided'")["n"] == 3


@pytest.mark.parametrize("point", ["started", "claimed"])
def test_a_supervisor_killed_between_starting_a_worker_and_recording_it_starts_the_job_once(home, version, point):
    job = _long_job(version)
    crashed = _spawn(home, "jobs", "tick", VITUNE_CRASH_AT=point)
    crashed.communicate(timeout=120)
    assert crashed.returncode == -signal.SIGKILL   # the tick died for real, holding nothing
    row = queue.get_job(job["id"])
    assert (row["state"], row["pid"]) == ("running", None)   # claimed, its worker never recorded
    orphans = _workers(job["job_dir"])
    assert len(orphans) == (1 if point == "started" else 0)
    try:
        proc = _spawn(home, "jobs", "tick")   # the restarted supervisor
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        for _ in range(2):
            supervisor.tick()
        row = queue.get_job(job["id"])
        workers = _workers(job["job_dir"])
        assert row["state"] == "running" and len(workers) == 1 and row["pid"] == workers[0]
        if point == "started":
            assert workers == orphans   # the worker that was started is adopted, not started again
        log = Path(job["job_dir"], "worker.log").read_text(errors="replace")
        assert log.count(f"job {job['id']} (train) started") <= 1
    finally:
        supervisor.cancel(job["id"], actor=OPERATOR)
    assert _gone(job["job_dir"])
