"""The jobs from the command line: ``jobs`` (list, cancel, resume; the supervisor, one tick or on and on;
the interpreter workers run under).

``core/cli.py`` adds each command's parser (``add_…(sub)``: its arguments and their checks) in the order
``python -m core --help`` lists them; heavy libraries are imported inside the commands.
"""
from __future__ import annotations

import json
import os

from core.cli_common import _actor, _count, _fail, _seconds


def _job_id(text) -> int | None:
    """A job id as typed: ASCII digits only (``str.isdigit`` also takes '²' and '٣')."""
    text = str(text)
    return int(text) if text.isascii() and text.isdigit() else None


def cmd_jobs(args) -> int:
    from core.jobs import queue, supervisor
    from core.training import runs

    if args.action in ("cancel", "resume") and args.id is not None and _job_id(args.id) is None:
        return _fail(f"jobs {args.action}: the job id must be a number, not '{args.id}'", 2)
    if args.action == "cancel":
        if args.id is None:
            return _fail("jobs cancel needs a job id (see `python -m core jobs list`)", 2)
        try:
            job = supervisor.cancel(_job_id(args.id), actor=_actor())
        except queue.JobError as exc:
            return _fail(str(exc))
        print(f"job {job['id']}: {job['state']}")
        return 0
    if args.action == "tick":
        print(json.dumps(supervisor.tick()))
        return 0
    if args.action == "worker-python":
        try:
            if args.clear or args.id:
                print(supervisor.set_worker_python(None if args.clear else args.id, actor=_actor()))
        except queue.JobError as exc:
            return _fail(str(exc))
        python = supervisor.worker_python()
        print(f"workers run under {python}"
              + (" ($VITUNE_WORKER_PYTHON)" if os.environ.get("VITUNE_WORKER_PYTHON") else ""))
        return 0
    if args.action == "ray":
        from core.jobs import ray_cluster

        try:
            if args.clear or args.id:
                print(ray_cluster.set_cluster(None if args.clear else args.id, args.resource, actor=_actor(),
                                              shipped=args.ship))
            else:
                env = " ($VITUNE_RAY_ADDRESS)" if os.environ.get(ray_cluster.ADDRESS_ENV) is not None else ""
                addr = ray_cluster.address()
                print(ray_cluster.describe_setting(addr, ray_cluster.resource(), bool(addr) and ray_cluster.ship())
                      + env)
        except (ValueError, ray_cluster.RayError) as exc:
            return _fail(f"jobs ray: {exc}; nothing was recorded" if (args.clear or args.id) else f"jobs ray: {exc}")
        return 0
    if args.resource or args.ship:
        return _fail("jobs: --resource and --ship go with `jobs ray ADDRESS`", 2)
    if args.id is not None and _job_id(args.id) is None:
        return _fail(f"jobs {args.action}: the job id must be a number, not '{args.id}'", 2)
    args.id = _job_id(args.id) if args.id is not None else None
    if args.action in ("cancel", "resume") and args.id is None:
        return _fail(f"jobs {args.action} needs a job id (see `python -m core jobs list`)", 2)
    if args.action == "supervise":
        def event(done: dict) -> None:
            for job_id in done["settled"]:
                j = queue.get_job(job_id)
                print(f"job {job_id} ({j['kind']}): {j['state']}" + (f" — {j['error']}" if j["error"] else ""),
                      flush=True)
            for job_id in done["started"]:
                print(f"job {job_id} ({queue.get_job(job_id)['kind']}): started", flush=True)

        try:
            supervisor.supervise(args.interval, until_idle=args.until_idle, on_event=event)
        except KeyboardInterrupt:
            pass
        return 0
    if args.action == "resume":
        try:
            job = runs.resume(args.id, actor=_actor())
        except queue.JobError as exc:
            return _fail(str(exc))
        print(f"queued job {job['id']} for run {job['run_id']}, from {job['config']['resume_from']}")
        return 0
    for j in queue.list_jobs(args.limit, actor=_actor(), project=args.project):
        print(f"{j['id']:>4}  {j['kind']:<9} {j['state']:<10} {j['run_id'] or '':<28} {j['owner'] or ''}")
    return 0


# ── parsers ──────────────────────────────────────────────────────────────────


def add_jobs(sub) -> None:
    j = sub.add_parser("jobs", help="list, cancel or resume jobs; run the supervisor (one tick, or on and on)")
    j.add_argument("action", choices=["list", "cancel", "resume", "tick", "supervise", "worker-python", "ray"],
                   help="resume: queue a failed or cancelled training job again from its last checkpoint; "
                        "supervise: start queued jobs and ingest finished ones until stopped (Ctrl-C); "
                        "worker-python [PYTHON]: show, or check and record, the interpreter workers run under; "
                        "ray [ADDRESS]: show, or check and record, the Ray cluster jobs are submitted to "
                        "(its dashboard, http://HOST:8265; docs/scale.md)")
    j.add_argument("id", nargs="?", help="job id (cancel, resume); interpreter path (worker-python); "
                                         "the Ray dashboard's address (ray)")
    j.add_argument("--clear", action="store_true", help="worker-python: back to the studio's own interpreter; "
                                                         "ray: back to local workers alone")
    j.add_argument("--resource", metavar="NAME", help="ray: the custom resource each job asks one unit of a GPU "
                                                       "(nodes declare it: ray start --resources '{\"NAME\": 1}'); "
                                                       "without it jobs ask GPUs")
    j.add_argument("--ship", action="store_true", help="ray: the nodes do not see the studio's home: each job's "
                                                       "folder is shipped to its node and its files sent back to the "
                                                       "home, which must be on the Ray head node (docs/scale.md)")
    j.add_argument("--limit", type=_count, default=30)
    j.add_argument("--interval", type=_seconds, default=2.0, help="seconds between supervisor ticks (supervise)")
    j.add_argument("--until-idle", action="store_true", help="supervise: stop once nothing is queued or running")
    j.set_defaults(fn=cmd_jobs)
