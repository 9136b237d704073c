"""Two teammates at once, with real processes: two CLI processes cancel the same job (beside a third that
ticks), two decide the same review pair and two finish a sample together, and a supervisor killed
between starting a worker and recording it does not start the job twice after a restart."""
from __future__ import annotations

import json
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


# ── issue 24, item 11: resumes, cancel and eviction racing the supervisor ─────


def _stand_in(*argv: str) -> subprocess.Popen:
    """A real process in a session of its own, as a worker runs: ``argv`` after ``python -c 'sleep'`` is what
    its command line ends with (a worker's is ``… core.worker JOB_DIR``)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", *argv], start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _running_as(job_id: int, pid: int) -> None:
    """The job's row as the supervisor leaves it once it has started the worker ``pid``."""
    store.execute("UPDATE jobs SET state = 'running', slot = 'cpu', pid = ?, started_at = ? WHERE id = ?",
                  [pid, store.now(), job_id])


def _waits_for_the_tick_lock(home: Path, pid: int) -> bool:
    """Whether process ``pid`` is blocked on the supervisor's lock file (a ``->`` line of /proc/locks)."""
    inode = (home / "data" / "scheduler.lock").stat().st_ino
    lines = Path("/proc/locks").read_text().splitlines()
    return any("->" in line and f" {pid} " in line and f":{inode} " in line for line in lines)


def test_two_resumes_at_once_queue_one_job_for_the_run(home, version, monkeypatch):
    job = _long_job(version)
    supervisor.cancel(job["id"], actor=OPERATOR)   # a cancelled training job with a checkpoint
    checkpoint = Path(job["job_dir"]) / "checkpoints" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    second: dict = {}
    real = runs.checkpoints

    def between(run_dir):
        """The first resume has checked the job; a second one, in a process of its own, runs now: until it has
        finished, or waits for the first."""
        if not second:
            second["proc"] = proc = _spawn(home, "jobs", "resume", str(job["id"]))
            deadline = time.monotonic() + 120
            while proc.poll() is None and not _waits_for_the_tick_lock(home, proc.pid):
                assert time.monotonic() < deadline, "the second resume neither finished nor waited"
                time.sleep(0.05)
        return real(run_dir)

    monkeypatch.setattr(runs, "checkpoints", between)
    try:
        first = runs.resume(job["id"], actor=OPERATOR)["id"]
    except queue.JobError as exc:
        first = str(exc)
    out, err = second["proc"].communicate(timeout=120)
    resumed = [j for j in queue.list_jobs() if j["run_id"] == job["run_id"] and j["id"] != job["id"]]
    assert len(resumed) == 1, (first, out, err)   # one worker will ever run on the run's folder
    assert runs.get_run(job["run_id"])["job_id"] == resumed[0]["id"]
    lost = err if isinstance(first, int) else first
    assert "moved on to job" in lost and "Traceback" not in err, (first, err)


def test_cancel_settles_a_job_whose_worker_has_already_succeeded(home, version):
    job = _long_job(version)
    folder = Path(job["job_dir"])
    (folder / "adapter").mkdir(parents=True)
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "loss": 2.0}\n')
    (folder / "status.json").write_text(json.dumps({"state": "succeeded",
                                                    "result": {"adapter_dir": str(folder / "adapter")}}))
    worker = _stand_in("core.worker", str(folder))   # it has written its result and not exited yet
    try:
        _running_as(job["id"], worker.pid)
        with pytest.raises(queue.JobError, match=r"already ended \(succeeded\)"):
            supervisor.cancel(job["id"], actor=OPERATOR)
        row = queue.get_job(job["id"])
        assert row["state"] == "succeeded" and row["result"] == {"adapter_dir": str(folder / "adapter")}
        assert runs.get_run(job["run_id"])["adapter_dir"] == str(folder / "adapter")   # the result is kept
        assert list(runs.run_metrics(job["run_id"])["step"]) == [1, 2]
        assert store.one("SELECT count(*) AS n FROM audit_log WHERE action = 'job.cancelled'")["n"] == 0
    finally:
        worker.kill()
        worker.wait(10)


def test_cancel_does_not_kill_a_process_that_took_over_the_workers_pid(home, version):
    job = _long_job(version)
    other = _stand_in()   # the worker is long gone; the system gave its pid to this process
    try:
        _running_as(job["id"], other.pid)
        assert supervisor.cancel(job["id"], actor=OPERATOR)["state"] == "cancelled"
        assert other.poll() is None, "cancel killed a process that is not the job's worker"
    finally:
        other.kill()
        other.wait(10)


def test_eviction_does_not_kill_another_jobs_worker_that_took_over_the_pid(home, version):
    with store.connect() as con:   # a playground's inference worker, recorded as running on the CPU slot
        resident = queue.insert(con, "inference", home / "data" / "inference-1", {"base_model": "x"}, OPERATOR.name)
    other = _stand_in("core.worker", str(home / "data" / "runs" / "another-job"))   # a worker of another job
    job = None
    try:
        _running_as(resident, other.pid)
        job = _long_job(version)   # it needs the slot: the resident would be evicted
        supervisor.tick()
        assert other.poll() is None, "the eviction killed another job's worker"
        assert queue.get_job(resident)["state"] in ("failed", "cancelled")
        assert queue.get_job(job["id"])["state"] == "running"
    finally:
        other.kill()
        other.wait(10)
        if job:
            supervisor.cancel(job["id"], actor=OPERATOR)


# ── issue 24, item 10: a supervisor (or a reviewer's process) killed between two statements ──


def _killed(home: Path, point: str, *args: str) -> None:
    """``python -m core ARGS`` (default: one supervisor tick) killed by SIGKILL at the named point."""
    proc = _spawn(home, *(args or ("jobs", "tick")), VITUNE_CRASH_AT=point)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, out, err[-2000:])


def _finished(job: dict, result: dict) -> None:
    """The job's worker has ended and written its result (status.json); the supervisor has not settled it."""
    (Path(job["job_dir"]) / "status.json").write_text(json.dumps({"state": "succeeded", "result": result}))
    store.execute("UPDATE jobs SET state = 'running', slot = 'cpu', started_at = ? WHERE id = ?",
                  [store.now(), job["id"]])


def test_a_training_settle_killed_midway_is_all_or_nothing(home, version):
    job = _long_job(version)
    folder = Path(job["job_dir"])
    (folder / "adapter").mkdir(parents=True)
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "loss": 2.0}\n')
    _finished(job, {"adapter_dir": str(folder / "adapter")})
    _killed(home, "settle.ingested")
    run = runs.get_run(job["run_id"])
    assert (run["state"], run["adapter_dir"]) == ("running", None)   # no adapter on a run whose job still runs
    supervisor.tick()   # the supervisor started again
    run = runs.get_run(job["run_id"])
    assert (run["state"], run["adapter_dir"]) == ("succeeded", str(folder / "adapter"))
    assert list(runs.run_metrics(job["run_id"])["step"]) == [1, 2]


def test_an_evaluation_ingest_killed_midway_is_all_or_nothing(home, version, default_model):
    """Killed between storing the evaluation's row and its examples (``settle.ingested``, after the whole ingest,
    is the training and generation tests' point)."""
    from core.evaluation import evaluations, gate, scoring

    ev = evaluations.submit(base_model=str(default_model), dataset_version_id=version, limit=4, actor=OPERATOR)
    pairs = versions.load_rows(version, "test")[:4]
    refs = [p["output"] for p in pairs]
    scores = scoring.score(refs, refs, ev["config"]["thresholds"])
    out = Path(ev["job_dir"]) / "predictions.jsonl"
    out.write_text("".join(json.dumps({"idx": i, "instruction": p["instruction"], "input": p["input"], "reference": r,
                                       "prediction": r, **per}, ensure_ascii=False) + "\n"
                           for i, (p, r, per) in enumerate(zip(pairs, refs, scores.per_example))), encoding="utf-8")
    _finished(ev, {**scores.summary(), "prompt_format": "chat", "predictions": str(out)})
    _killed(home, "evaluation.stored")
    # nothing of it is visible: no evaluation whose n is set and whose examples are missing, none to gate on
    assert store.one("SELECT count(*) AS n FROM evaluations")["n"] == 0
    assert store.one("SELECT count(*) AS n FROM evaluation_examples")["n"] == 0
    assert queue.get_job(ev["id"])["state"] == "running"
    supervisor.tick()   # the supervisor started again: nothing is lost
    assert queue.get_job(ev["id"])["state"] == "succeeded", queue.get_job(ev["id"])["error"]
    stored = evaluations.get_evaluation(ev["config"]["evaluation_id"])
    assert stored["n"] == len(pairs) == len(evaluations.examples(stored["id"]))
    with store.transaction() as con:   # an ingest run again (idempotent) changes nothing
        evaluations.ingest(con, queue.get_job(ev["id"]), queue.get_job(ev["id"])["result"])
    assert store.one("SELECT count(*) AS n FROM evaluation_examples")["n"] == len(pairs)


def test_a_generation_ingest_killed_midway_lands_one_version(home):
    from core.datasets.generation import generations

    doc = home / "quy_che.md"
    doc.write_text("Quy chế đổi trả hàng trong 7 ngày.\n", encoding="utf-8")
    job = generations.submit([doc], "sinh-cskh", local=True, actor=OPERATOR)
    pairs = write_jsonl(Path(job["job_dir"]) / "generated.jsonl", tiny_pairs(12))
    _finished(job, {"pairs": 12, "chunks_done": 1, "chunks_available": 1, "model": "local", "stopped": None,
                    "pairs_file": str(pairs), "rejects_file": str(Path(job["job_dir"]) / "rejects.jsonl")})
    _killed(home, "settle.ingested")
    assert [v for v in versions.list_versions(OPERATOR) if v["name"] == "sinh-cskh"] == []
    assert queue.get_job(job["id"])["state"] == "running"
    supervisor.tick()   # the supervisor started again: the pairs land once
    landed = [v for v in versions.list_versions(OPERATOR) if v["name"] == "sinh-cskh"]
    assert len(landed) == 1 and landed[0]["rows_total"] == 12
    done = queue.get_job(job["id"])
    assert (done["state"], done["dataset_version_id"]) == ("succeeded", landed[0]["id"])
    assert done["result"]["dataset_version"] == landed[0]["id"]
    again = dict(done["result"])
    with store.transaction() as con:   # an ingest run again (idempotent) lands nothing more
        generations.ingest(con, done, again)
    assert again["dataset_version"] == landed[0]["id"]
    assert len([v for v in versions.list_versions(OPERATOR) if v["name"] == "sinh-cskh"]) == 1


def test_a_review_completion_killed_midway_loses_no_decision(home):
    v, _ = importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(30))], "cskh", actor=OPERATOR)
    vid = v["id"]
    assert review.start(vid, actor=OPERATOR)["sample_size"] == 3
    first = review.next_item(vid)
    review.decide(vid, 1, "edited", actor=OPERATOR, edited={"output": "Dạ, em xin lỗi quý khách."})
    review.decide(vid, 2, "rejected", actor=OPERATOR)
    _killed(home, "review.completing", "review", "decide", vid, "--item", "3", "--approve")
    # nothing partial: the review is not complete without its child version; the last pair waits again
    st = review.status(vid)
    assert (st["complete"], st["child_version"], st["done"]) == (False, None, 2)
    assert review.current(vid)["completed_at"] is None and review.next_item(vid)["idx"] == 3
    after = review.decide(vid, 3, "approved", actor=OPERATOR)
    assert after["complete"] and after["child_version"]
    child = versions.get_version(after["child_version"])
    assert child["rows_total"] == 29   # the rejected pair removed, the edit kept
    rows = versions.load_rows(child["id"], first["split"])
    assert rows[first["row_index"]]["output"] == "Dạ, em xin lỗi quý khách."
    assert len([x for x in versions.list_versions(OPERATOR) if x["parent_id"] == vid]) == 1
