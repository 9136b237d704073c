"""The job folder: the only thing a worker and the supervisor share.

A worker reads ``job.json`` from its folder and writes only files there: ``status.json`` (state,
progress, result or error), ``metrics.jsonl`` (training), and the job's own outputs; its stdout and
stderr go to ``worker.log``. The supervisor reads these files and ingests them into the studio
database. Both sides import this module, so it imports nothing of the studio.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

STATUS = "status.json"
JOB = "job.json"
LOG = "worker.log"
METRICS = "metrics.jsonl"
TERMINAL = ("succeeded", "failed", "cancelled")


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}-{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class Status:
    """The worker's status writer: every update rewrites ``status.json`` atomically."""

    def __init__(self, job_dir: Path):
        self.path = job_dir / STATUS
        self.data = read_json(self.path) or {}

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.data["updated"] = time.time()
        write_json_atomic(self.path, self.data)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


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
