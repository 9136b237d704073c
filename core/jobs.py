"""The job queue and its supervisor.

Jobs (train, evaluate, export) are rows in DuckDB. ``tick()`` is the supervisor's one step, safe to
call from any process at any time (the app calls it every few seconds, CLI commands that wait call
it too; a file lock keeps two ticks from overlapping):

1. ingest what running workers wrote (status, metrics, results) and settle jobs whose worker ended,
   or died without a word (failed, with its log tail);
2. start the oldest queued job on every free slot (one job per GPU; the CPU counts as one slot).

Workers run in their own process session, so they outlive an app restart; the next tick re-attaches.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from core import paths, store
from core.worker import JOB, LOG, METRICS, STATUS, TERMINAL, read_json, write_json_atomic

STATES = ("queued", "running", "succeeded", "failed", "cancelled")


class JobError(RuntimeError):
    pass


# ── slots ────────────────────────────────────────────────────────────────────


def slots() -> list[str]:
    """One slot per GPU ("gpu:0", …), or a single "cpu" slot."""
    forced = os.environ.get("VITUNE_SLOTS")
    if forced:
        return [s.strip() for s in forced.split(",") if s.strip()]
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
            gpus = [line for line in out.splitlines() if line.startswith("GPU ")]
            if gpus:
                return [f"gpu:{i}" for i in range(len(gpus))]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return ["cpu"]


def worker_python() -> str:
    """The interpreter workers run under: a setting, so a GPU host can use its own environment."""
    return os.environ.get("VITUNE_WORKER_PYTHON") or store.get_setting("worker_python") or sys.executable


# ── submitting ───────────────────────────────────────────────────────────────


def _new_id(prefix: str) -> str:
    return f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def _insert_job(kind: str, job_dir: Path, payload: dict, owner: str | None, run_id: str | None,
                dataset_version_id: str | None) -> int:
    job_dir.mkdir(parents=True, exist_ok=True)
    with store.connect() as con:
        job_id = con.execute(
            """INSERT INTO jobs (kind, owner, state, config, run_id, dataset_version_id, job_dir, created_at)
               VALUES (?, ?, 'queued', ?, ?, ?, ?, ?) RETURNING id""",
            [kind, owner, json.dumps(payload, ensure_ascii=False), run_id, dataset_version_id,
             str(job_dir), store.now()],
        ).fetchone()[0]
    write_json_atomic(job_dir / JOB, {**payload, "kind": kind, "job_id": job_id})
    store.audit(f"job.submitted", str(job_id), owner, kind=kind, run_id=run_id)
    return job_id


def submit_train(dataset_version_id: str, cfg, owner: str | None = None,
                 override_review: str | None = None) -> dict:
    """Queue a training run. The dataset version must have passed its review sample (core.review),
    unless ``override_review`` gives a reason, which the audit log records with the owner."""
    from core import datasets, review

    cfg.validate()
    version = datasets.get_version(dataset_version_id)
    try:
        verdict = review.require_reviewed(dataset_version_id, override_review, actor=owner)
    except review.ReviewError as exc:
        raise JobError(str(exc)) from None
    run_id = _new_id("run")
    run_dir = paths.runs_dir() / run_id
    payload = {
        "run_id": run_id,
        "config": cfg.to_dict(),
        "train_file": str(Path(version["path"]) / "train.parquet"),
        "test_file": str(Path(version["path"]) / "test.parquet"),
        "dataset_version_id": dataset_version_id,
        "review": {"reviewed": verdict["reviewed"], "status": verdict["reason"],
                   "override": None if verdict["reviewed"] else override_review.strip()},
    }
    job_id = _insert_job("train", run_dir, payload, owner, run_id, dataset_version_id)
    store.execute(
        """INSERT INTO runs (id, job_id, base_model, dataset_version_id, prompt_format, config, run_dir,
                             created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [run_id, job_id, cfg.resolved_base_model(), dataset_version_id, cfg.prompt_format,
         json.dumps(cfg.to_dict()), str(run_dir), owner, store.now()],
    )
    return get_job(job_id)


def submit(kind: str, payload: dict, job_dir: Path, owner: str | None = None,
           run_id: str | None = None, dataset_version_id: str | None = None) -> dict:
    """Queue an evaluate or export job (their modules build the payload)."""
    return get_job(_insert_job(kind, job_dir, payload, owner, run_id, dataset_version_id))


def cancel(job_id: int, actor: str | None = None) -> dict:
    job = get_job(job_id)
    if job["state"] in TERMINAL:
        raise JobError(f"job {job_id} has already ended ({job['state']})")
    with _tick_lock():
        if job["state"] == "running" and job["pid"]:
            _kill_group(job["pid"])
        store.execute(
            "UPDATE jobs SET state = 'cancelled', finished_at = ?, error = ? WHERE id = ?",
            [store.now(), f"cancelled by {actor or 'a user'}", job_id],
        )
    store.audit("job.cancelled", str(job_id), actor)
    return get_job(job_id)


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The run's saved checkpoints as (step, folder), oldest first."""
    found = []
    for path in (Path(run_dir) / "checkpoints").glob("checkpoint-*"):
        step = path.name.rsplit("-", 1)[-1]
        if step.isdigit() and (path / "trainer_state.json").exists():
            found.append((int(step), path))
    return sorted(found)


def resume(job_id: int, actor: str | None = None) -> dict:
    """Queue a failed or cancelled training job again, from its run's last checkpoint.

    The run keeps its id and folder; its loss curve is cut back to the checkpoint's step so the
    resumed steps replace the lost ones.
    """
    job = get_job(job_id)
    if job["kind"] != "train":
        raise JobError(f"job {job_id} is a {job['kind']} job; only training resumes from a checkpoint")
    if job["state"] not in ("failed", "cancelled"):
        raise JobError(f"job {job_id} is {job['state']}; only a failed or cancelled job can be resumed")
    run = get_run(job["run_id"])
    if run["job_id"] != job_id:
        raise JobError(f"run {run['id']} has moved on to job {run['job_id']}; resume that one")
    found = checkpoints(Path(run["run_dir"]))
    if not found:
        raise JobError(f"run {run['id']} saved no checkpoint before it stopped (one is saved every "
                       f"{run['config'].get('save_steps')} steps); start a new run instead")
    step, path = found[-1]
    run_dir = Path(run["run_dir"])
    metrics_file = run_dir / METRICS
    kept = [json.dumps({"step": s, **rec}) for s, rec in sorted(read_metrics_file(metrics_file).items()) if s <= step]
    metrics_file.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    old_payload = {k: v for k, v in job["config"].items() if k not in ("kind", "job_id")}
    payload = {**old_payload, "resume_from": str(path), "resumed_job": job_id}
    for stale in (STATUS,):
        (run_dir / stale).unlink(missing_ok=True)
    new_id = _insert_job("train", run_dir, payload, actor or job["owner"], run["id"], job["dataset_version_id"])
    with store.connect() as con:
        con.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", [run["id"], step])
        con.execute("UPDATE runs SET job_id = ? WHERE id = ?", [new_id, run["id"]])
    store.audit("job.resumed", str(new_id), actor, from_job=job_id, checkpoint=str(path), step=step)
    return get_job(new_id)


# ── reading ──────────────────────────────────────────────────────────────────


def _decode(job: dict | None) -> dict | None:
    if job is None:
        return None
    for key in ("config", "result"):
        if isinstance(job.get(key), str):
            job[key] = json.loads(job[key])
    return job


def get_job(job_id: int) -> dict:
    job = _decode(store.one("SELECT * FROM jobs WHERE id = ?", [job_id]))
    if job is None:
        raise JobError(f"no job {job_id}")
    return job


def list_jobs(limit: int = 100, kind: str | None = None) -> list[dict]:
    if kind:
        got = store.rows("SELECT * FROM jobs WHERE kind = ? ORDER BY id DESC LIMIT ?", [kind, limit])
    else:
        got = store.rows("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", [limit])
    return [_decode(j) for j in got]


def progress(job: dict) -> dict | None:
    status = read_json(Path(job["job_dir"]) / STATUS) or {}
    return status.get("progress")


def eta_seconds(job: dict) -> float | None:
    """Seconds left for a running job, from its progress and pace."""
    p = progress(job) or {}
    done, total, pace = p.get("done") or 0, p.get("total") or 0, p.get("per_s")
    if job["state"] != "running" or not pace or not total or done >= total:
        return None
    return (total - done) / pace


def log_tail(job: dict, lines: int = 30) -> str:
    path = Path(job["job_dir"]) / LOG
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64_000))
            text = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# ── the supervisor ───────────────────────────────────────────────────────────


@contextmanager
def _tick_lock() -> Iterator[None]:
    lock_path = paths.data_dir() / "scheduler.lock"
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _reap(pid: int) -> None:
    """Collect a finished worker that this process started, so that it leaves no zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except OSError:
        pass  # not our child (started by another process) or already collected


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    _reap(pid)
    try:
        import psutil

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return False
        return "core.worker" in " ".join(proc.cmdline())
    except Exception:
        return False


def _exited(pid: int) -> bool:
    """True once the worker is gone; reaps it when this process started it."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:  # started by another process: ask the system
        import psutil

        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True


def _kill_group(pid: int) -> None:
    """SIGTERM the worker's process group, SIGKILL it after 5 s, and wait until it is gone."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if _exited(pid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while not _exited(pid):
        time.sleep(0.05)


_METRIC_COLUMNS = ("epoch", "loss", "learning_rate", "grad_norm", "tokens_per_s", "ts", "eval_loss", "gpu_mem_gib")


def read_metrics_file(path: Path) -> dict[int, dict]:
    """metrics.jsonl folded into one record per step (a step's eval loss arrives on a line of its own)."""
    steps: dict[int, dict] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return steps
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line still being written
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            steps.setdefault(rec["step"], {}).update({k: v for k, v in rec.items() if v is not None})
    return steps


def _ingest_metrics(con, job: dict) -> None:
    if job["kind"] != "train":
        return
    steps = read_metrics_file(Path(job["job_dir"]) / METRICS)
    if not steps:
        return
    # the last stored step is taken again: its eval loss may have come after its training loss
    last = con.execute("SELECT coalesce(max(step), -1) FROM metrics WHERE run_id = ?", [job["run_id"]]).fetchone()[0]
    new = [[job["run_id"], step, *(rec.get(c) for c in _METRIC_COLUMNS)]
           for step, rec in sorted(steps.items()) if step >= last]
    if new:
        cols = ", ".join(("run_id", "step", *_METRIC_COLUMNS))
        con.executemany(f"INSERT OR REPLACE INTO metrics ({cols}) VALUES ({', '.join('?' * (len(_METRIC_COLUMNS) + 2))})",
                        new)


def _settle(con, job: dict, status: dict) -> None:
    state = status.get("state")
    result = status.get("result")
    error = status.get("error")
    if state == "succeeded":
        try:
            _ingest_result(con, job, result or {})
        except Exception as exc:  # a result the studio cannot take is a failed job, not a crashed tick
            state, error = "failed", f"could not ingest the result: {exc}"
    con.execute(
        "UPDATE jobs SET state = ?, finished_at = ?, error = ?, log_tail = ?, result = ? WHERE id = ?",
        [state, store.now(), error, log_tail(job) if state == "failed" else None,
         json.dumps(result, ensure_ascii=False) if result is not None else None, job["id"]],
    )


def _ingest_result(con, job: dict, result: dict) -> None:
    if job["kind"] == "train":
        con.execute("UPDATE runs SET adapter_dir = ? WHERE id = ?", [result.get("adapter_dir"), job["run_id"]])
    elif job["kind"] == "evaluate":
        from core import evaluate

        evaluate.ingest(con, job, result)
    elif job["kind"] == "generate":
        from core import generate

        generate.ingest(con, job, result)


def _start(con, job: dict, slot: str) -> None:
    job_dir = Path(job["job_dir"])
    env = dict(os.environ)
    env["VITUNE_HOME"] = str(paths.home())
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(paths.REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if slot.startswith("gpu:"):
        env["CUDA_VISIBLE_DEVICES"] = slot.split(":", 1)[1]
    with open(job_dir / LOG, "ab") as log:
        proc = subprocess.Popen(
            [worker_python(), "-m", "core.worker", str(job_dir)],
            cwd=str(paths.REPO_ROOT),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    con.execute(
        "UPDATE jobs SET state = 'running', slot = ?, pid = ?, started_at = ? WHERE id = ?",
        [slot, proc.pid, store.now(), job["id"]],
    )


def tick() -> dict[str, Any]:
    """One supervisor step. Returns what it did."""
    done: dict[str, list] = {"settled": [], "started": []}
    with _tick_lock():
        with store.connect() as con:
            cur = con.execute("SELECT * FROM jobs WHERE state = 'running' ORDER BY id")
            cols = [d[0] for d in cur.description]
            running = [dict(zip(cols, r)) for r in cur.fetchall()]
            busy = set()
            for job in running:
                _ingest_metrics(con, job)
                status = read_json(Path(job["job_dir"]) / STATUS) or {}
                if status.get("state") in TERMINAL:
                    _settle(con, job, status)
                    done["settled"].append(job["id"])
                elif not _alive(job["pid"]):
                    status = read_json(Path(job["job_dir"]) / STATUS) or {}
                    if status.get("state") not in TERMINAL:
                        status = {"state": "failed", "error": "the worker process died without finishing "
                                  "(killed, out of memory or crashed); see the log tail"}
                    _settle(con, job, status)
                    done["settled"].append(job["id"])
                else:
                    busy.add(job["slot"])
            free = [s for s in slots() if s not in busy]
            if free:
                queued = con.execute(
                    "SELECT * FROM jobs WHERE state = 'queued' ORDER BY created_at, id LIMIT ?", [len(free)]
                )
                cols = [d[0] for d in queued.description]
                for slot, row in zip(free, queued.fetchall()):
                    job = dict(zip(cols, row))
                    _start(con, job, slot)
                    done["started"].append(job["id"])
    return done


def wait(job_id: int, timeout: float = 3600, poll: float = 1.0,
         on_update: Callable[[dict], None] | None = None) -> dict:
    """Tick until the job ends (used by the CLI and tests)."""
    deadline = time.monotonic() + timeout
    while True:
        tick()
        job = get_job(job_id)
        if on_update:
            on_update(job)
        if job["state"] in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise JobError(f"job {job_id} still {job['state']} after {timeout:.0f} s")
        time.sleep(poll)


def run_metrics(run_id: str):
    return store.frame("SELECT * FROM metrics WHERE run_id = ? ORDER BY step", [run_id])


def list_runs() -> list[dict]:
    return store.rows(
        """SELECT r.*, j.state, j.finished_at FROM runs r JOIN jobs j ON j.id = r.job_id
           ORDER BY r.created_at DESC"""
    )


def get_run(run_id: str) -> dict:
    got = store.one(
        "SELECT r.*, j.state FROM runs r JOIN jobs j ON j.id = r.job_id WHERE r.id = ?", [run_id]
    )
    if not got:
        raise JobError(f"no run '{run_id}'")
    got["config"] = json.loads(got["config"]) if isinstance(got["config"], str) else got["config"]
    return got


_background: dict[str, Any] = {}


def start_background(interval: float = 2.0):
    """Tick every ``interval`` seconds in a daemon thread (one per process): the app's supervisor."""
    import threading

    if _background.get("thread") and _background["thread"].is_alive():
        return _background["thread"]
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                tick()
                _background.pop("error", None)
            except Exception as exc:  # keep supervising; the pages show the last error
                _background["error"] = f"{type(exc).__name__}: {exc}"
            stop.wait(interval)

    thread = threading.Thread(target=loop, name="vitune-supervisor", daemon=True)
    thread.start()
    _background.update(thread=thread, stop=stop)
    return thread


def supervise(interval: float = 2.0, until_idle: bool = False,
              on_event: Callable[[dict], None] | None = None) -> int:
    """The supervisor in the foreground (``python -m core jobs supervise``): tick every ``interval``
    seconds, for a GPU box where jobs must run on after a restart although nobody opens the app.
    Safe beside the app's own supervisor thread (ticks take a file lock). With ``until_idle`` it
    returns once nothing is queued or running. Returns the number of ticks made."""
    ticks = 0
    while True:
        done = tick()
        ticks += 1
        if on_event and (done["settled"] or done["started"]):
            on_event(done)
        if until_idle:
            busy = store.one("SELECT count(*) AS n FROM jobs WHERE state IN ('queued', 'running')")
            if not busy["n"]:
                return ticks
        time.sleep(interval)


def stop_background(timeout: float = 30) -> None:
    """Stop this process's supervisor thread (tests that run app.py in-process; the app never stops it)."""
    if _background.get("stop"):
        _background["stop"].set()
    if _background.get("thread"):
        _background["thread"].join(timeout)
    _background.pop("thread", None)


def supervisor_error() -> str | None:
    return _background.get("error")
