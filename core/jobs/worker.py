"""The worker: ``python -m core.worker JOB_DIR`` runs one job outside the app.

It reads ``job.json`` from the folder, finds the kind's worker-side module in ``core.jobs.kinds``,
and runs it; the job writes only files in its folder (``core.jobs.files``), and the supervisor
ingests them. It never opens the studio database and imports nothing of the app side, so on a GPU
host it runs under the GPU environment alone.

``python -m core.worker --self-check`` imports every kind's worker-side code and the packages the
kind needs, checks that nothing of the app side came along, and prints the kinds it can run.
"""
from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from pathlib import Path

from core import errors, paths, secrets
from core.jobs import compile_cache, kinds
from core.jobs.files import JOB, Status, log, read_json

# what a worker must never import: the app side (a GPU environment does not have these)
APP_SIDE = ("duckdb", "streamlit", "plotly", "core.store", "core.cli", "core.charts")


def app_side_loaded() -> list[str]:
    return sorted(m for m in sys.modules if any(m == a or m.startswith(a + ".") for a in APP_SIDE))


def self_check(out=print) -> int:
    """Import every kind's worker-side module and required packages. Exit code 0 when every kind can
    run here and nothing of the app side was imported."""
    import platform

    out(f"worker interpreter: {sys.executable} (Python {platform.python_version()})")
    failed = 0
    for kind in kinds.KINDS.values():
        problems = []
        try:
            importlib.import_module(kind.worker)
        except Exception as exc:
            problems.append(f"{kind.worker}: {type(exc).__name__}: {exc}")
        for package in kind.requires:
            try:
                importlib.import_module(package)
            except Exception as exc:
                problems.append(f"{package} cannot be imported ({type(exc).__name__}: {exc})")
        missing_optional = []
        for package in kind.optional:
            try:
                importlib.import_module(package)
            except Exception:
                missing_optional.append(package)
        if problems:
            failed += 1
            out(f"  {kind.name:<10} CANNOT RUN: " + "; ".join(problems))
        else:
            note = f" (without {', '.join(missing_optional)})" if missing_optional else ""
            out(f"  {kind.name:<10} ok{note}: {kind.what}")
    leaked = app_side_loaded()
    if leaked:
        out("app-side modules were imported by worker code: " + ", ".join(leaked))
        failed += 1
    out(("kinds: " + " ".join(kinds.KINDS)) if not failed else f"{failed} problem(s)")
    return 0 if not failed else 1


def main(argv: list[str] | None = None) -> int:
    paths.private_files()   # status, logs, checkpoints, exports: this user's alone, whoever started the worker
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--self-check"]:
        return self_check()
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m core.worker JOB_DIR | --self-check", file=sys.stderr)
        return 2
    job_dir = Path(argv[0]).resolve()
    job = read_json(job_dir / JOB)
    if job is None:
        print(f"{job_dir / JOB}: missing or not JSON", file=sys.stderr)
        return 2
    status = Status(job_dir)
    status.update(state="running", pid=os.getpid(), started=time.time(), kind=job.get("kind"))
    log(f"job {job.get('job_id')} ({job.get('kind')}) started in {job_dir} under {sys.executable}")
    try:
        base = (job.get("base_model") or (job.get("config") or {}).get("base_model")
                or str(paths.default_base_model_dir()))
        cached = compile_cache.use(base)   # before torch is imported: the next job of this model reuses it
        if cached:
            log(f"compile caches under {compile_cache.folder(base)}")
        task = kinds.worker_module(job.get("kind") or "")
        result = task.run(job, job_dir, status, log)
    except BaseException as exc:  # a worker reports every failure, KeyboardInterrupt included
        key = os.environ.get(secrets.JOB_KEY_VAR)   # a generation job's endpoint key never reaches a file
        print(secrets.scrub(traceback.format_exc(), key), end="", file=sys.stderr)
        # the studio's own errors (a bad document, a bad config) are recorded as their text, others with their type
        status.update(state="failed", finished=time.time(), error=secrets.scrub(errors.describe(exc), key))
        log("job failed")
        return 1
    status.update(state="succeeded", finished=time.time(), result=result)
    log("job succeeded")
    return 0
