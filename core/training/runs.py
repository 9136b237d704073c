"""Training runs, app side: queue a run, resume it from a checkpoint, read runs and their metrics,
and ingest what the trainer (``core.training.trainer``, in a worker) writes: its loss curve on every
supervisor tick, its adapter when it ends.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from core import base_models, paths, store
from core.access import projects
from core.access.principal import Principal, require
from core.datasets import review, versions
from core.jobs import queue
from core.jobs.files import METRICS, STATUS, read_metrics_file
from core.jobs.queue import JobError


def submit_train(dataset_version_id: str, cfg, *, actor: Principal, override_review: str | None = None) -> dict:
    """Queue a training run, in the dataset version's project. The version must have passed its review
    sample (core.datasets.review), unless ``override_review`` gives a reason, which the audit log records
    with the actor's identity."""
    base_models.check(cfg.base_model)   # before anything of it is looked at on disk
    cfg.validate()
    check_gpus(cfg.gpus)
    version = versions.get_version(dataset_version_id, actor)
    project = version["project"]
    require(actor, "train.submit", project)
    try:
        verdict = review.require_reviewed(dataset_version_id, override_review, actor=actor)
    except review.ReviewError as exc:
        raise JobError(str(exc)) from None
    run_id = queue.new_id("run")
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
    with store.transaction() as con:  # the job and its run land together, or neither does
        job_id = queue.insert(con, "train", run_dir, payload, actor.name, run_id, dataset_version_id, project)
        con.execute(
            """INSERT INTO runs (id, job_id, base_model, dataset_version_id, prompt_format, config, run_dir,
                                 created_by, created_at, project) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [run_id, job_id, cfg.resolved_base_model(), dataset_version_id, cfg.prompt_format,
             json.dumps(cfg.to_dict()), str(run_dir), actor.name, store.now(), project],
        )
        store.audit("job.submitted", str(job_id), actor, con=con, project=project, kind="train", run_id=run_id)
    return queue.get_job(job_id)


def check_gpus(gpus: int) -> None:
    """``gpus: N`` that this box can give one job: N GPU slots (the supervisor's), or on a box without a GPU N
    ranks on its CPU cores (gloo, in the one CPU slot). JobError naming the setting."""
    from core.jobs import supervisor

    if gpus <= 1:
        return
    every = supervisor.slots()
    gpu_slots = [s for s in every if s.startswith("gpu:")]
    if gpu_slots and gpus > len(gpu_slots):
        raise JobError(f"gpus: {gpus} is more than this box's {len(gpu_slots)} GPU slot(s) ({', '.join(gpu_slots)}); "
                       f"give at most {len(gpu_slots)}")
    cores = os.cpu_count() or 1
    if not gpu_slots and gpus > cores:
        raise JobError(f"gpus: {gpus} is more than this box's {cores} CPU cores (it has no GPU: each of the "
                       f"{gpus} ranks would run on the CPU); give at most {cores}")


def slots_needed(job: dict) -> int:
    """The supervisor's question (core.jobs.supervisor.slots_needed): the GPUs a training job trains on."""
    cfg = job["config"] if isinstance(job["config"], dict) else json.loads(job["config"])
    try:
        return max(1, int((cfg.get("config") or {}).get("gpus") or 1))
    except (TypeError, ValueError):
        return 1


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The run's saved checkpoints as (step, folder), oldest first."""
    found = []
    for path in (Path(run_dir) / "checkpoints").glob("checkpoint-*"):
        step = path.name.rsplit("-", 1)[-1]
        if step.isdigit() and (path / "trainer_state.json").exists():
            found.append((int(step), path))
    return sorted(found)


def resume(job_id: int, *, actor: Principal) -> dict:
    """Queue a failed or cancelled training job again, from its run's last checkpoint.

    The run keeps its id and folder; its loss curve is cut back to the checkpoint's step so the
    resumed steps replace the lost ones. Under the supervisor's tick lock, and the run moves on to the new
    job by a conditional update: of two resumes at once, one queues a job, the other is refused (two workers
    never run in one run folder).
    """
    from core.jobs import supervisor

    with supervisor.tick_lock():
        return _resume(job_id, actor)


def _resume(job_id: int, actor: Principal, extra: dict | None = None) -> dict:
    job = queue.get_job(job_id)
    if not actor.sees(job.get("project")):
        raise JobError(f"no job {job_id}")
    require(actor, "job.resume", job.get("project"))
    if job["kind"] != "train":
        raise JobError(f"job {job_id} is a {job['kind']} job; only training resumes from a checkpoint")
    if job["state"] not in ("failed", "cancelled"):
        raise JobError(f"job {job_id} is {job['state']}; only a failed or cancelled job can be resumed")
    run = get_run(job["run_id"])
    if run["job_id"] != job_id:
        raise JobError(f"run {run['id']} has moved on to job {run['job_id']}; resume that one")
    found = checkpoints(Path(run["run_dir"]))
    if not found:
        from core.training.config import TrainConfig

        every = TrainConfig.from_dict(run["config"]).checkpoint_steps()
        raise JobError(f"run {run['id']} saved no checkpoint before it stopped (one is saved every {every} "
                       "steps); start a new run instead")
    step, path = found[-1]
    run_dir = Path(run["run_dir"])
    metrics_file = run_dir / METRICS
    kept = [json.dumps({"step": s, **rec}) for s, rec in sorted(read_metrics_file(metrics_file).items()) if s <= step]
    tmp = metrics_file.with_suffix(".jsonl.tmp")  # a crash here leaves the old file whole
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, metrics_file)
    old_payload = {k: v for k, v in job["config"].items() if k not in ("kind", "job_id")}
    payload = {**old_payload, "resume_from": str(path), "resumed_job": job_id, **(extra or {})}
    for stale in (STATUS,):
        (run_dir / stale).unlink(missing_ok=True)
    with store.transaction() as con:
        new_id = queue.insert(con, "train", run_dir, payload, actor.name, run["id"], job["dataset_version_id"],
                              job.get("project"))
        con.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", [run["id"], step])
        moved = con.execute("UPDATE runs SET job_id = ? WHERE id = ? AND job_id = ? RETURNING id",
                            [new_id, run["id"], job_id]).fetchall()
        if not moved:   # another resume got there first: this one's job is rolled back
            raise JobError(f"run {run['id']} has moved on to job {get_run(run['id'])['job_id']}; resume that one")
    store.audit("job.resumed", str(new_id), actor, project=job.get("project"), from_job=job_id,
                checkpoint=str(path), step=step)
    return queue.get_job(new_id)


NODE_LOST_RESUMES = 3   # a run resumed this many times after a lost node is not resumed again by itself


def on_node_lost(job: dict) -> dict | None:
    """The supervisor's call when the Ray node running a training job was lost (core.jobs.supervisor, under its
    tick lock; the job is failed already): queue the run again from its last checkpoint that reached the studio's
    home, as a resume by hand does, acting as the supervisor (audited ``job.resumed``). Not when the run saved no
    checkpoint, has moved on to another job, or was resumed ``NODE_LOST_RESUMES`` times after lost nodes already;
    the failed job's error says which. Returns the new job, or None."""
    from core.access.principal import system

    count = int((job.get("config") or {}).get("node_lost_resumes") or 0)
    run = get_run(job["run_id"])
    found = checkpoints(Path(run["run_dir"]))
    if run["job_id"] != job["id"]:
        return None
    if not found:
        note = "; the run had saved no checkpoint: train it again"
    elif count >= NODE_LOST_RESUMES:
        note = (f"; not resumed by itself: its run was resumed after a lost node {count} times already "
                f"(`python -m core jobs resume {job['id']}` resumes it)")
    else:
        again = _resume(job["id"], system("supervisor", "engineer", job.get("project")),
                        extra={"node_lost_resumes": count + 1})
        note = f"; resumed from its checkpoint at step {found[-1][0]} as job {again['id']}"
    store.execute("UPDATE jobs SET error = error || ? WHERE id = ?", [note, job["id"]])
    return again if found and count < NODE_LOST_RESUMES else None


# ── reading ──────────────────────────────────────────────────────────────────


def run_metrics(run_id: str):
    return store.frame("SELECT * FROM metrics WHERE run_id = ? ORDER BY step", [run_id])


def list_runs(actor: Principal, project: str | None = None, *, state: str | None = None,
              limit: int | None = None) -> list[dict]:
    """The runs of ``project`` (or of every project the actor sees), newest first; only those whose
    job is in ``state`` (e.g. "succeeded"), and only the ``limit`` newest, when given."""
    cond, params = projects.where(actor, project, "r.project")
    if state:
        cond, params = cond + " AND j.state = ?", params + [state]
    tail = ""
    if limit is not None:
        tail, params = " LIMIT ?", params + [int(limit)]
    return store.rows(
        f"""SELECT r.*, j.state, j.finished_at FROM runs r JOIN jobs j ON j.id = r.job_id WHERE {cond}
            ORDER BY r.created_at DESC{tail}""", params)


def get_run(run_id: str, actor: Principal | None = None) -> dict:
    """A run by id. With ``actor``, one of another project is no run at all."""
    got = store.one(
        "SELECT r.*, j.state FROM runs r JOIN jobs j ON j.id = r.job_id WHERE r.id = ?", [run_id]
    )
    if not got or (actor is not None and not actor.sees(got["project"])):
        raise JobError(f"no run '{run_id}'")
    got["config"] = json.loads(got["config"]) if isinstance(got["config"], str) else got["config"]
    return got


# ── the supervisor's side ────────────────────────────────────────────────────

_METRIC_COLUMNS = ("epoch", "loss", "learning_rate", "grad_norm", "tokens_per_s", "ts", "eval_loss", "gpu_mem_gib")


def ingest_progress(con, job: dict) -> None:
    """The run's new metrics.jsonl lines into the metrics table (every supervisor tick)."""
    steps = read_metrics_file(Path(job["job_dir"]) / METRICS)
    if not steps:
        return
    # the last stored step is taken again: its eval loss may have come after its training loss
    last = con.execute("SELECT coalesce(max(step), -1) FROM metrics WHERE run_id = ?", [job["run_id"]]).fetchone()[0]
    new = [[job["run_id"], step, *(rec.get(c) for c in _METRIC_COLUMNS)]
           for step, rec in sorted(steps.items()) if step >= last]
    # replacing costs a key check per row: only needed when the run has stored steps already
    store.insert_rows(con, "metrics", ("run_id", "step", *_METRIC_COLUMNS), new, replace=last >= 0)


def ingest(con, job: dict, result: dict) -> None:
    """The finished run's adapter folder."""
    ingest_progress(con, job)
    con.execute("UPDATE runs SET adapter_dir = ? WHERE id = ?", [result.get("adapter_dir"), job["run_id"]])
    # a sweep's run has its evaluation queued in this same transaction: core.training.sweeps.after_ingest,
    # which the train kind names (core.jobs.kinds), so that runs never imports the sweeps above it
