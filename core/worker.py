"""The worker: ``python -m core.worker JOB_DIR`` runs one job outside the app.

It reads ``job.json`` from its folder and writes only files there: ``status.json`` (state,
progress, result or error), ``metrics.jsonl`` (training), and the job's own outputs. Its stdout and
stderr go to ``worker.log``. It never opens the studio database: the supervisor ingests these files.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

STATUS = "status.json"
JOB = "job.json"
LOG = "worker.log"
METRICS = "metrics.jsonl"
TERMINAL = ("succeeded", "failed", "cancelled")


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class Status:
    def __init__(self, job_dir: Path):
        self.path = job_dir / STATUS
        self.data = read_json(self.path) or {}

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.data["updated"] = time.time()
        write_json_atomic(self.path, self.data)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m core.worker JOB_DIR", file=sys.stderr)
        return 2
    job_dir = Path(argv[0]).resolve()
    job = read_json(job_dir / JOB)
    if job is None:
        print(f"{job_dir / JOB}: missing or not JSON", file=sys.stderr)
        return 2
    status = Status(job_dir)
    status.update(state="running", pid=os.getpid(), started=time.time(), kind=job["kind"])
    log(f"job {job.get('job_id')} ({job['kind']}) started in {job_dir}")
    try:
        if job["kind"] == "train":
            from core import train as task
        elif job["kind"] == "evaluate":
            from core import evaluate as task
        elif job["kind"] == "export":
            from core import export as task
        elif job["kind"] == "generate":
            from core import generate as task
        elif job["kind"] == "preflight":
            from core import preflight as task
        else:
            raise ValueError(f"unknown job kind '{job['kind']}'")
        result = task.run(job, job_dir, status, log)
    except BaseException as exc:  # a worker reports every failure, KeyboardInterrupt included
        traceback.print_exc()
        status.update(state="failed", finished=time.time(), error=f"{type(exc).__name__}: {exc}")
        log("job failed")
        return 1
    status.update(state="succeeded", finished=time.time(), result=result)
    log("job succeeded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
