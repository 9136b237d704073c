"""The job queue: jobs are rows in DuckDB, each with a folder (``core.jobs.files``).

``submit`` writes a queued job; the supervisor (``core.jobs.supervisor``) starts it in a worker and
settles it. This module reads and writes job rows only: it imports no job kind (each kind's app-side
module calls ``submit`` with its own payload) and starts no process.
"""
from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from pathlib import Path

from core import store
from core.access import projects
from core.access.principal import DEFAULT_PROJECT
from core.jobs import kinds
from core.jobs.files import JOB, LOG, STATUS, read_json, write_json_atomic

STATES = ("queued", "running", "succeeded", "failed", "cancelled")


class JobError(RuntimeError):
    pass


def new_id(prefix: str) -> str:
    """A readable, sortable id: the second it was made and 8 random hex digits (4 collided when a bench
    seeded hundreds of runs a second: ~100 ids in one second share 4 hex digits about 7 % of the time)."""
    return f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


def insert(con, kind: str, job_dir: Path, payload: dict, owner: str | None, run_id: str | None = None,
           dataset_version_id: str | None = None, project: str | None = None) -> int:
    """The job's row, on an open connection (so that a kind can write its own rows in the same
    transaction), and its ``job.json`` (without the kind's secret fields: the worker gets those in its
    environment). Returns the job id. (The kind's app side has checked the submitter's role; ``owner`` is
    its identity.)"""
    secret = kinds.get(kind).secret
    job_dir.mkdir(parents=True, exist_ok=True)
    job_id = con.execute(
        """INSERT INTO jobs (kind, owner, state, config, run_id, dataset_version_id, job_dir, created_at, project)
           VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?) RETURNING id""",
        [kind, owner, json.dumps(payload, ensure_ascii=False), run_id, dataset_version_id,
         str(job_dir), store.now(), project or DEFAULT_PROJECT],
    ).fetchone()[0]
    write_json_atomic(job_dir / JOB, {**{k: v for k, v in payload.items() if k not in secret}, "kind": kind,
                                      "job_id": job_id})
    return job_id


def submit(kind: str, payload: dict, job_dir: Path, actor, run_id: str | None = None,
           dataset_version_id: str | None = None, project: str | None = None) -> dict:
    """Queue a job of ``kind`` for ``actor`` (its app-side module builds the payload and checks the
    actor's role). Returns the job."""
    with store.connect() as con:
        job_id = insert(con, kind, job_dir, payload, getattr(actor, "name", actor), run_id, dataset_version_id,
                        project)
        store.audit("job.submitted", str(job_id), actor, con=con, project=project or DEFAULT_PROJECT, kind=kind,
                    run_id=run_id)
    return get_job(job_id)


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


def list_jobs(limit: int = 100, kind: str | None = None, *, actor=None, project: str | None = None) -> list[dict]:
    """The newest jobs (of ``kind``). With ``actor``: only the projects it sees (``project``: only that one)."""
    where, params = [], []
    if kind:
        where.append("kind = ?")
        params.append(kind)
    if actor is not None:
        cond, more = projects.where(actor, project)
        where.append(cond)
        params += more
    sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
    return [_decode(j) for j in store.rows(sql, params + [limit])]


def status(job: dict) -> dict:
    """What the job's worker last wrote of itself (``status.json``): state, progress, phase…"""
    return read_json(Path(job["job_dir"]) / STATUS) or {}


def progress(job: dict) -> dict | None:
    return status(job).get("progress")


WARMING = ("compiling", "first step")   # phases before any pace: the first step (or batch) compiles on CUDA


def phase(job: dict, known: dict | None = None, now: float | None = None) -> dict | None:
    """``{"phase": "compiling", "elapsed_s": 34.2}`` while a running job is in a phase before its pace
    is known (the first training step, the first batch of an evaluation); None otherwise."""
    st = known if known is not None else status(job)
    if job["state"] != "running" or st.get("phase") not in WARMING or not st.get("phase_started"):
        return None
    import time

    return {"phase": st["phase"], "elapsed_s": max(0.0, (now or time.time()) - float(st["phase_started"]))}


def describe(job: dict, known: dict | None = None, now: float | None = None, every_s: int = 1, tr=None) -> str:
    """One line on a job for the pages and the CLI: state, then the warm-up phase with its time, or
    progress, pace and what is left (the pace and the ETA never count a compile). ``every_s`` rounds
    the phase's time down (the CLI prints a line only when the text changes); ``tr``: a page's ``_``
    (the line in the reader's language; the CLI's is English)."""
    from core import labels
    from core.i18n import M, render

    say = (lambda m: render(m, tr)) if tr else str
    st = known if known is not None else status(job)
    kind = labels.JOB_KINDS.get(job["kind"], job["kind"]) if tr else job["kind"]   # the CLI names the kind as stored
    parts = [M("{kind} job {job}: {state}", kind=kind, job=job["id"], state=labels.JOB_STATES.get(job["state"], job["state"]))]
    warm = phase(job, st, now)
    p = st.get("progress") or {}
    if warm:
        seconds = int(warm["elapsed_s"]) // every_s * every_s
        if warm["phase"] != "compiling":
            parts.append(M(" — first step, {seconds} s so far", seconds=seconds))
        elif job["kind"] == "train":
            parts.append(M(" — compiling (the first step), {seconds} s so far", seconds=seconds))
        else:
            parts.append(M(" — compiling (the first batch), {seconds} s so far", seconds=seconds))
    elif p.get("total"):
        parts.append(M(" — {done}/{total} {what}", done=p.get("done") or 0, total=p["total"],
                       what=labels.PROGRESS.get(p.get("label", ""), p.get("label", ""))))
        if p.get("per_s"):
            parts.append(f" ({p['per_s']:.2f}/s)")
        eta = eta_seconds(job, p)
        if eta is not None:
            parts.append(M(", about {minutes} min {seconds:02d} s left", minutes=int(eta // 60), seconds=int(eta % 60)))
    if st.get("compile_s") and not warm:
        parts.append(M("; compile {seconds:.0f} s", seconds=st["compile_s"]))
    return "".join(say(x) if isinstance(x, M) else x for x in parts)


def eta_seconds(job: dict, known: dict | None = None) -> float | None:
    """Seconds left for a running job, from its progress (read again unless ``known``) and pace."""
    p = (known if known is not None else progress(job)) or {}
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

