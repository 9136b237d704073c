"""The supervisor: starts queued jobs in worker processes and settles them when they end.

``tick()`` is its one step, safe to call from any process at any time (the app's background thread
calls it every few seconds, ``python -m core jobs supervise`` does on a box without the web app, and
CLI commands that wait call it too; a file lock keeps two ticks from overlapping):

1. ingest what running workers wrote (each kind's app-side ``ingest_progress``), and settle jobs
   whose worker ended (the kind's ``ingest`` takes the result) or died without a word (failed, with
   its log tail);
2. start the oldest queued job on every free slot (one job per GPU; the CPU counts as one slot).

A job may need several GPU slots (a training job with ``gpus: N``, one torchrun rank a GPU: its kind's
``slots_needed``); it holds all of them ("gpu:0,gpu:1" in ``jobs.slot``, its worker sees those GPUs in
``CUDA_VISIBLE_DEVICES``). The policy is first come, first served with reservation: the oldest queued job
that needs more slots than are free reserves the free ones as they free up, and no job behind it takes
them, so a many-GPU job is never starved by 1-GPU jobs slipping past it; and since the queue is first
come, first served, it cannot starve a 1-GPU job either: the 1-GPU job behind it starts once it has
started (or ended). On a box without a GPU (the one "cpu" slot) such a job runs its N ranks on the CPU,
in that one slot. A job that needs more GPUs than the box has fails at once, with the reason, rather than
blocking the queue.

When the studio is pointed at a Ray cluster (``core.jobs.ray_cluster``: the setting ``ray_address`` or
``$VITUNE_RAY_ADDRESS``), jobs of the compute kinds go to the cluster through Ray's Job API instead of a
local process: they take no local slot, their liveness is the Ray job's status, cancel is Ray's ``stop_job``.
Without an address nothing here changes.

Workers run in their own process session, so they outlive an app restart; the next tick re-attaches.
The supervisor finds each kind's code through ``core.jobs.kinds``: it imports no job kind itself.
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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from core import paths, secrets, store
from core.access.principal import Principal, require
from core.jobs import kinds, ray_cluster
from core.jobs.files import LOG, STATUS, TERMINAL, read_json
from core.jobs.queue import JobError, get_job, log_tail


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


def visible_devices(slot: str) -> str:
    """``CUDA_VISIBLE_DEVICES`` of a job's slot: "gpu:0" → "0", "gpu:2,gpu:3" → "2,3" (a job across GPUs)."""
    return ",".join(s.split(":", 1)[1] for s in slot.split(",") if s.startswith("gpu:"))


def slots_needed(job: dict, every: list[str]) -> int:
    """How many of the box's slots ``every`` the job holds: its kind's ``slots_needed(job)`` (a training job's
    ``gpus``) on a box of GPU slots, one otherwise (N ranks of a job on a CPU share its one slot)."""
    if not any(s.startswith("gpu:") for s in every):
        return 1
    hook = getattr(kinds.app_module(job["kind"]), "slots_needed", None)
    return max(1, int(hook(job))) if hook else 1


def _take_slots(con, job: dict, every: list[str], free: list[str], reserved: dict) -> list[str] | None:
    """The slots a queued job starts on (taken out of ``free``), or None: it waits. First come, first served
    with reservation (the module's docstring): once an older job is waiting for more slots than are free
    (``reserved["by"]``), no job behind it takes any. A job that needs more slots than the box has fails."""
    need = slots_needed(job, every)
    if need > 1 and need > len(every):   # a one-slot job on a box with no slot waits, as it always has
        con.execute("UPDATE jobs SET state = 'failed', finished_at = ?, error = ? WHERE id = ? AND state = 'queued'",
                    [store.now(), f"gpus: {need}, but this box has {len(every)} GPU slot(s) ({', '.join(every)}); "
                     f"queue it again with gpus at most {len(every)}", job["id"]])
        return None
    if reserved.get("by") is not None or len(free) < need:
        reserved.setdefault("by", job["id"])   # the free slots wait for it
        return None
    taken = free[:need]
    del free[:need]
    return taken


def worker_python() -> str:
    """The interpreter workers run under: ``$VITUNE_WORKER_PYTHON``, else the one recorded by
    ``set_worker_python`` (the setup command records the GPU environment's on a CUDA host), else this one."""
    return os.environ.get("VITUNE_WORKER_PYTHON") or store.get_setting("worker_python") or sys.executable


def check_worker_python(python: str) -> tuple[bool, str]:
    """``PYTHON -m core.worker --self-check``: (every kind can run there, what it printed)."""
    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        proc = subprocess.run([python, "-m", "core.worker", "--self-check"], cwd=str(paths.REPO_ROOT), env=env,
                              capture_output=True, text=True, timeout=600)
    except OSError as exc:
        return False, f"{python} cannot be started ({exc.strerror or exc})"
    except subprocess.TimeoutExpired:
        return False, f"{python} -m core.worker --self-check did not finish in 600 s"
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def set_worker_python(python: str | None, *, actor: Principal) -> str:
    """Record the workers' interpreter after its self-check passes (``None``: back to the studio's own).
    Returns the self-check's report."""
    require(actor, "settings.workers")
    if python is None:
        store.set_setting("worker_python", None, actor)
        return f"workers run under {sys.executable} (the studio's own interpreter)"
    python = str(Path(python).expanduser().absolute())
    ok, report = check_worker_python(python)
    if not ok:
        raise JobError(f"{python} cannot run the studio's workers; nothing was recorded:\n{report}")
    store.set_setting("worker_python", python, actor)
    return report


# ── processes ────────────────────────────────────────────────────────────────


@contextmanager
def tick_lock() -> Iterator[None]:
    """The supervisor's file lock: held by every tick, by ``cancel`` and by a resume (core.training.runs), so
    that what one of them reads of a job is still so when it changes it."""
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


def _ours(pid: int | None, job_dir: str | Path) -> bool:
    """Whether ``pid`` is the job's worker: a live process whose command line runs ``core.worker JOB_DIR`` and
    leads its own process group, as ``_start`` made it. A stored pid whose worker has ended may have been given
    to another process since (another job's worker, anything): that one is not ours, and is never signalled."""
    if not pid:
        return False
    _reap(pid)
    try:
        import psutil

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return False
        return proc.cmdline()[-2:] == ["core.worker", str(job_dir)] and os.getpgid(pid) == pid
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


def _kill_group(pid: int, job_dir: str | Path) -> None:
    """SIGTERM the worker's process group, SIGKILL it after 5 s, and wait until it is gone; nothing when ``pid``
    is not the job's worker (``_ours``: it has ended, and the system may have given its pid to another process)."""
    if not _ours(pid, job_dir):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if _exited(pid):
            return
        time.sleep(0.05)
    if not _ours(pid, job_dir):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while not _exited(pid):
        time.sleep(0.05)


def cancel(job_id: int, *, actor: Principal) -> dict:
    """Stop a queued or running job. Under the tick lock, so no tick starts or settles it meanwhile: its worker
    (only when the process is still the job's own, ``_ours``) is stopped first, and then, when the worker had
    already written its end (status.json: succeeded, say), the job is settled with that result as a tick would
    (JobError: it has already ended) rather than cancelled with its result thrown away."""
    job = get_job(job_id)
    if not actor.sees(job.get("project")):
        raise JobError(f"no job {job_id}")
    # a playground's inference worker may be stopped by whoever may ask it; any other job needs an engineer
    require(actor, "playground.ask" if _resident(job) else "job.cancel", job.get("project"))
    with tick_lock():  # no tick starts or settles it meanwhile: the state read here is the state changed
        job = get_job(job_id)
        if job["state"] in TERMINAL:
            raise JobError(f"job {job_id} has already ended ({job['state']})")
        if job["state"] == "running" and job.get("ray_job"):
            try:   # Ray's stop_job: SIGTERM to the worker on its node, SIGKILL after Ray's grace time
                ray_cluster.stop(job["ray_address"], job["ray_job"])
            except ray_cluster.RayError as exc:
                raise JobError(f"job {job_id} runs on the Ray cluster, which cannot stop it now: {exc}") from None
        elif job["state"] == "running":
            pid = job["pid"] if _ours(job["pid"], job["job_dir"]) else _find_worker(job["job_dir"])
            if pid:
                _kill_group(pid, job["job_dir"])
            status = read_json(Path(job["job_dir"]) / STATUS) or {}
            if status.get("state") in TERMINAL:   # the worker had ended before the cancel: its end stands
                _settle(job, status)
                raise JobError(f"job {job_id} has already ended ({get_job(job_id)['state']})")
        with store.transaction() as con:
            changed = con.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?, error = ? "
                "WHERE id = ? AND state IN ('queued', 'running') RETURNING id",
                [store.now(), f"cancelled by {actor.name}", job_id]).fetchall()
            if not changed:
                raise JobError(f"job {job_id} has already ended ({get_job(job_id)['state']})")
            store.audit("job.cancelled", str(job_id), actor, con=con, project=job.get("project"), kind=job["kind"])
    return get_job(job_id)


# ── the tick ─────────────────────────────────────────────────────────────────


class _NotOpen(Exception):
    """The job had been settled or cancelled already: the settle's transaction is rolled back."""


class _IngestFailed(Exception):
    """The kind's ingest raised (its ``__cause__``): its statements are rolled back, the job fails."""


def _finish(con, job: dict, state: str, error: str | None, result: Any) -> None:
    changed = con.execute(
        "UPDATE jobs SET state = ?, finished_at = ?, error = ?, log_tail = ?, result = ? "
        "WHERE id = ? AND state IN ('queued', 'running') RETURNING id",
        [state, store.now(), error, log_tail(job) if state == "failed" else None,
         json.dumps(result, ensure_ascii=False) if result is not None else None, job["id"]],
    ).fetchall()
    if not changed:
        raise _NotOpen()


def _settle(job: dict, status: dict) -> bool:
    """Settle a job whose worker has ended, in one transaction: the kind's ``ingest`` of its result and the
    job's final state commit together, or nothing does. A supervisor killed in between leaves the job running
    with its status.json, and the next tick settles it again (each kind's ingest is idempotent too). A result
    the studio cannot take fails the job (its ingest's statements rolled back), never the tick. Conditional: a
    job already settled or cancelled is left alone. Returns whether this call settled it."""
    state = status.get("state")
    result = status.get("result")
    error = status.get("error")
    try:
        with store.transaction() as con:
            if state == "succeeded":
                ingest = getattr(kinds.app_module(job["kind"]), "ingest", None)
                try:
                    if ingest:
                        ingest(con, job, result or {})
                    for module in kinds.then_modules(job["kind"]):
                        module.after_ingest(con, job, result or {})
                except Exception as exc:
                    raise _IngestFailed() from exc
                _crash_point("settle.ingested")
            _finish(con, job, state, error, result)
        return True
    except _NotOpen:
        return False
    except _IngestFailed as failed:
        state, error = "failed", f"could not ingest the result: {failed.__cause__}"
    try:
        with store.transaction() as con:
            _finish(con, job, state, error, result)
        return True
    except _NotOpen:
        return False


def _ingest_progress(con, job: dict) -> None:
    hook = getattr(kinds.app_module(job["kind"]), "ingest_progress", None)
    if hook:
        hook(con, job)


CRASH_AT_ENV = store.CRASH_AT_ENV   # tests only: the tick kills itself (SIGKILL) at a named point
_crash_point = store.crash_point


def _find_worker(job_dir: str | Path) -> int | None:
    """The pid of a live worker process running ``job_dir`` (``python -m core.worker JOB_DIR``), found by
    its command line: how a tick finds the worker of a job whose starter died before recording its pid."""
    import psutil

    target = str(job_dir)
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = proc.info.get("cmdline") or []
        if len(cmd) >= 2 and cmd[-2] == "core.worker" and cmd[-1] == target \
                and proc.info.get("status") != psutil.STATUS_ZOMBIE:
            return proc.info["pid"]
    return None


def _start(con, job: dict, slot: str) -> bool:
    """Start the job's worker. The job is claimed first (``running`` with no pid, a conditional update that
    commits at once), then the worker starts, then its pid is recorded: a supervisor that dies in between
    leaves a claimed job, which the next tick (``_recover``) attaches to the worker it finds, or queues
    again when none started, and never starts twice. Returns whether the job was claimed."""
    claimed = con.execute(
        "UPDATE jobs SET state = 'running', slot = ?, pid = NULL, started_at = ? WHERE id = ? AND state = 'queued' "
        "RETURNING id", [slot, store.now(), job["id"]]).fetchall()
    if not claimed:
        return False
    _crash_point("claimed")
    job_dir = Path(job["job_dir"])
    env = secrets.worker_env(dict(os.environ))        # no endpoint key, unless the job's kind adds its own
    env.pop(CRASH_AT_ENV, None)
    hook = getattr(kinds.app_module(job["kind"]), "worker_env", None)
    if hook:
        env = hook(job, env)
    cfg = job["config"] if isinstance(job["config"], dict) else json.loads(job["config"])
    for field in kinds.get(job["kind"]).secret:   # kept out of job.json: through the environment alone
        env[kinds.env_var(field)] = str(cfg.get(field) or "")
    env["VITUNE_HOME"] = str(paths.home())
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(paths.REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if slot.startswith("gpu:"):
        env["CUDA_VISIBLE_DEVICES"] = visible_devices(slot)
    python = worker_python()
    with open(job_dir / LOG, "ab") as log:
        try:
            proc = subprocess.Popen(
                [python, "-m", "core.worker", str(job_dir)],
                cwd=str(paths.REPO_ROOT),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:  # a recorded worker interpreter that is gone: the job fails, the tick goes on
            con.execute("UPDATE jobs SET state = 'failed', finished_at = ?, error = ? WHERE id = ? AND state = 'running'",
                        [store.now(), f"the worker interpreter {python} cannot be started ({exc.strerror or exc}); "
                         "run the setup command again, or set it with `python -m core jobs worker-python`",
                         job["id"]])
            return True
    _crash_point("started")
    con.execute("UPDATE jobs SET pid = ? WHERE id = ? AND state = 'running'", [proc.pid, job["id"]])
    return True


def _recover(con, job: dict) -> None:
    """A running job without a pid was claimed by a supervisor that died before it recorded the worker
    (ticks hold the lock, so no live one is in the middle of it): attach the worker when one runs or
    has run (its status.json), else queue the job again, since no worker ever started it."""
    status = read_json(Path(job["job_dir"]) / STATUS) or {}
    pid = _find_worker(job["job_dir"])
    if pid is None and status.get("pid") and _ours(status["pid"], job["job_dir"]):
        pid = status["pid"]
    if pid is not None or status:
        job["pid"] = pid or status.get("pid")
        con.execute("UPDATE jobs SET pid = ? WHERE id = ? AND pid IS NULL", [job["pid"], job["id"]])
        return
    con.execute("UPDATE jobs SET state = 'queued', slot = NULL, started_at = NULL WHERE id = ? AND state = 'running' "
                "AND pid IS NULL", [job["id"]])
    job["state"] = "queued"


def _resident(job: dict) -> bool:
    try:
        return kinds.get(job["kind"]).resident
    except kinds.UnknownKind:
        return False


def gpu_free_gib(slot: str) -> float | None:
    """Free memory of a GPU slot by ``nvidia-smi`` (None for the CPU slot or when it cannot say)."""
    if not slot.startswith("gpu:"):
        return None
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i",
                              slot.split(":", 1)[1]], capture_output=True, text=True, timeout=10).stdout
        return float(out.strip().splitlines()[0]) / 1024
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def _model_gib(job: dict) -> float:
    """About what serving a model takes: its weight files (16-bit on a GPU), and 1 GiB of working memory."""
    cfg = job["config"] if isinstance(job["config"], dict) else json.loads(job["config"])
    if cfg.get("gguf") and Path(cfg["gguf"]).is_file():   # llama.cpp serves the GGUF as it is
        return Path(cfg["gguf"]).stat().st_size / 2**30 + 1.0
    size = sum(f.stat().st_size for f in Path(cfg.get("base_model") or ".").glob("*.safetensors"))
    return size / 2**30 + 1.0


def _slot_for_resident(con, job: dict, every: list[str], busy: set[str], residents: dict) -> str | None:
    """A slot for an inference worker: one with no job if there is one (fewest workers first), else any
    whose GPU has the memory for it; a GPU without the memory fails the worker with the reason."""
    order = sorted(every, key=lambda s: (s in busy, len(residents.get(s, []))))
    need = _model_gib(job)
    for slot in order:
        free = gpu_free_gib(slot)
        if free is None or free >= need:
            return slot
    con.execute("UPDATE jobs SET state = 'failed', finished_at = ?, error = ? WHERE id = ? AND state = 'queued'",
                [store.now(), f"no GPU has the {need:.1f} GiB this model needs free "
                 f"({', '.join(f'{s}: {gpu_free_gib(s) or 0:.1f} GiB' for s in every)}); a training job holds it, "
                 "try again when it has finished", job["id"]])
    return None


def _evict(con, resident: dict, job: dict) -> None:
    pid = resident.get("pid") if _ours(resident.get("pid"), resident["job_dir"]) else _find_worker(resident["job_dir"])
    if pid:
        _kill_group(pid, resident["job_dir"])
    con.execute("UPDATE jobs SET state = 'cancelled', finished_at = ?, error = ? WHERE id = ? AND state = 'running'",
                [store.now(), f"evicted: {job['kind']} job {job['id']} needed slot {resident['slot']}",
                 resident["id"]])


def _start_on_ray(con, job: dict, addr: str, res: str | None, done: dict) -> bool:
    """Claim the job (``running``, its Ray submission id recorded, committed at once), then submit it to the
    cluster. A supervisor that dies in between leaves a claimed job whose id the cluster does not know: the next
    tick queues it again (``_tick_ray``). A cluster that refuses it or does not answer: back to the queue."""
    sid = ray_cluster.new_submission_id(job)
    claimed = con.execute(
        "UPDATE jobs SET state = 'running', slot = ?, pid = NULL, started_at = ?, ray_job = ?, ray_address = ?, "
        "ray_node = NULL WHERE id = ? AND state = 'queued' RETURNING id",
        [ray_cluster.SLOT, store.now(), sid, addr, job["id"]]).fetchall()
    if not claimed:
        return False
    _crash_point("ray.claimed")
    job["config"] = job["config"] if isinstance(job["config"], dict) else json.loads(job["config"])
    try:
        ray_cluster.submit(addr, res, job, sid, worker_python(), shipped=ray_cluster.ship())
    except ray_cluster.RayError as exc:
        _requeue(con, job)
        done["ray_error"] = str(exc)
        return False
    return True


def _requeue(con, job: dict) -> None:
    con.execute("UPDATE jobs SET state = 'queued', slot = NULL, started_at = NULL, ray_job = NULL, ray_address = NULL, "
                "ray_node = NULL WHERE id = ? AND state = 'running'", [job["id"]])


def _tick_ray(con, job: dict, done: dict, waiting: list[str]) -> None:
    """A running job on the Ray cluster: ingest what its worker wrote (the job folder is in the shared home),
    settle it when its status.json says it ended; else ask Ray. Alive (PENDING or RUNNING): nothing to do. Never
    started (Ray does not know the id, or gave up placing it): back to the queue. Ended without a word: failed,
    and when its node was lost, the kind's ``on_node_lost`` (a training run resumes from its last checkpoint)."""
    _ingest_progress(con, job)
    status = read_json(Path(job["job_dir"]) / STATUS) or {}
    if status.get("state") in TERMINAL:
        if _settle(job, status):
            done["settled"].append(job["id"])
        return
    try:
        got = ray_cluster.state(job["ray_address"], job["ray_job"])
    except ray_cluster.RayError as exc:   # the job's fate is unknown: it stays running, nothing new is sent
        done["ray_error"] = str(exc)
        waiting.append("UNKNOWN")
        return
    if got.node and got.node != job.get("ray_node"):
        con.execute("UPDATE jobs SET ray_node = ? WHERE id = ?", [got.node, job["id"]])
    if got.status in ray_cluster.LIVE:
        if got.status == "PENDING":
            waiting.append(got.status)
        return
    status = read_json(Path(job["job_dir"]) / STATUS) or {}   # written as the worker ended, since the first read
    if status.get("state") in TERMINAL:
        if _settle(job, status):
            done["settled"].append(job["id"])
        return
    if not status and (got.status == ray_cluster.MISSING or ray_cluster.not_started(got)):
        _requeue(con, job)   # no worker ever ran it
        return
    error = ray_cluster.describe_end(got, job["ray_job"])
    if not status and not ray_cluster.node_lost(got):   # the worker never started: Ray's own log says why
        said = ray_cluster.log_tail(job["ray_address"], job["ray_job"])
        error += f"; Ray's log: {said}" if said else ""
    if not _settle(job, {"state": "failed", "error": error}):
        return
    done["settled"].append(job["id"])
    if ray_cluster.node_lost(got):
        hook = getattr(kinds.app_module(job["kind"]), "on_node_lost", None)
        again = hook(get_job(job["id"])) if hook else None
        if again:
            done.setdefault("resumed", []).append(again["id"])


_ticks = {"n": 0}


def ticks() -> int:
    """How many ticks this process has made (a wait that ticks for nothing shows in it)."""
    return _ticks["n"]


def worker_alive(job: dict) -> bool:
    """Whether the job's recorded worker still runs (the check a tick makes, without the tick)."""
    if job.get("ray_job"):
        try:
            return ray_cluster.state(job["ray_address"], job["ray_job"]).status in ray_cluster.LIVE
        except ray_cluster.RayError:
            return True   # unknown: the cluster does not answer, the job is not taken for dead
    return _ours(job.get("pid"), job["job_dir"])


def tick() -> dict[str, Any]:
    """One supervisor step. Returns what it did."""
    _ticks["n"] += 1
    done: dict[str, Any] = {"settled": [], "started": [], "evicted": []}
    with tick_lock():
        try:
            cluster = ray_cluster.address()
            cluster_resource = ray_cluster.resource() if cluster else None
        except ValueError as exc:   # a bad $VITUNE_RAY_ADDRESS: local jobs go on, the pages show why
            cluster, done["ray_error"] = None, f"{ray_cluster.ADDRESS_ENV}: {exc}"
        ray_waiting: list[str] = []   # Ray jobs not yet running on a node (PENDING, or the cluster silent)
        with store.connect() as con:
            cur = con.execute("SELECT * FROM jobs WHERE state = 'running' ORDER BY id")
            cols = [d[0] for d in cur.description]
            running = [dict(zip(cols, r)) for r in cur.fetchall()]
            busy: set[str] = set()
            residents: dict[str, list[dict]] = {}
            for job in running:
                if job.get("ray_job"):
                    _tick_ray(con, job, done, ray_waiting)
                    continue
                if job["pid"] is None:
                    _recover(con, job)
                    if job["state"] == "queued":
                        continue  # no worker ever started it: it waits in the queue below
                _ingest_progress(con, job)
                status = read_json(Path(job["job_dir"]) / STATUS) or {}
                if status.get("state") in TERMINAL:
                    if _settle(job, status):
                        done["settled"].append(job["id"])
                elif not _ours(job["pid"], job["job_dir"]):
                    status = read_json(Path(job["job_dir"]) / STATUS) or {}
                    if status.get("state") not in TERMINAL:
                        status = {"state": "failed", "error": "the worker process died without finishing "
                                  "(killed, out of memory or crashed); see the log tail"}
                    if _settle(job, status):
                        done["settled"].append(job["id"])
                elif _resident(job):
                    residents.setdefault(job["slot"], []).append(job)
                else:
                    busy.update((job["slot"] or "").split(","))
            every = slots()
            free = [s for s in every if s not in busy]
            reserved: dict = {}   # the oldest job waiting for more slots than are free
            cur = con.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY created_at, id")
            cols = [d[0] for d in cur.description]
            for row in cur.fetchall():
                job = dict(zip(cols, row))
                if cluster and job["kind"] in ray_cluster.KINDS:
                    # to the Ray cluster, which queues it until a node has its resources; one at a time waits
                    # there (Ray fails a job that waits past its start timeout), the rest wait here
                    if not ray_waiting and _start_on_ray(con, job, cluster, cluster_resource, done):
                        ray_waiting.append("PENDING")
                        done["started"].append(job["id"])
                    continue
                if _resident(job):  # an inference worker starts at once, beside whatever runs
                    slot = _slot_for_resident(con, job, every, busy, residents)
                    if slot and _start(con, job, slot):
                        residents.setdefault(slot, []).append(job)
                        done["started"].append(job["id"])
                    continue
                taken = _take_slots(con, job, every, free, reserved)
                if not taken:
                    continue  # first come, first served: it waits for its slots
                for slot in taken:
                    for resident in residents.pop(slot, []):  # the job needs the slot's memory
                        _evict(con, resident, job)
                        done["evicted"].append(resident["id"])
                if _start(con, job, ",".join(taken)):
                    done["started"].append(job["id"])
                else:
                    free[:0] = taken
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
            raise JobError(f"job {job_id} still {job['state']} after {timeout:g} s; it goes on (`python -m core "
                           f"jobs list` shows it, `python -m core jobs cancel {job_id}` stops it)")
        time.sleep(poll)


# ── running it ───────────────────────────────────────────────────────────────


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
                done = tick()
                if done.get("ray_error"):   # the Ray cluster did not answer or refused a job: the pages say so
                    _background["error"] = f"Ray: {done['ray_error']}"
                else:
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
        if until_idle:  # inference workers (resident) end on their own when idle: they do not count
            resident = [k.name for k in kinds.KINDS.values() if k.resident] or [""]
            busy = store.one("SELECT count(*) AS n FROM jobs WHERE state IN ('queued', 'running') AND kind NOT IN "
                             f"({', '.join('?' * len(resident))})", resident)
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

