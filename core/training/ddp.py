"""One training job across several GPUs, through torch's own launcher (worker side).

A training job with ``gpus: N`` (N > 1) still runs in its worker (``python -m core.worker JOB_DIR``, as
the supervisor starts every job: its pid, its process group, its cancel stay as they are). The trainer
(``core.training.trainer.run``) sees ``gpus > 1`` outside a rank and calls ``launch``, which runs

    python -m torch.distributed.run --standalone --nproc_per_node N -m core.training.ddp JOB_DIR

as its child, in the worker's own process group, so a cancel's ``killpg`` reaches torchrun, and torchrun
stops its ranks (each rank also dies with torchrun: ``PR_SET_PDEATHSIG``). Each rank (``main`` below)
joins the process group (nccl on CUDA, one GPU a rank: ``cuda:LOCAL_RANK`` of the GPUs the supervisor
gave the job in ``CUDA_VISIBLE_DEVICES``; gloo on a CPU) and runs the same ``trainer.run``: transformers'
Trainer (TRL's SFTTrainer) and PEFT pick the ranks up from torchrun's environment and wrap the model in
DistributedDataParallel, each rank reading its own share of every step's rows.

Rank 0 alone writes what a job writes: ``status.json``'s progress, ``metrics.jsonl`` (the loss a step,
averaged over the ranks by the Trainer), the checkpoints (the Trainer saves the model, optimizer and state
once, and each rank's RNG state beside them, so a resume restores every rank), the adapter, and its
result (``ddp_result.json``). When torchrun ends, the worker's parent re-reads the status, and returns
rank 0's result (the worker writes status.json's end as for any job), or fails with the error of the
first rank that failed (``rank-R.error.json``, its traceback in the log).

Worker side: imports nothing of the app side.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from core import errors, paths
from core.jobs.files import JOB, Status, log as log_line, read_json, write_json_atomic

RANK_MODULE = "core.training.ddp"
RESULT = "ddp_result.json"           # rank 0's result, read by the worker's parent
ERROR = "rank-{rank}.error.json"     # a failed rank's error, the first of them is the job's
STOP_WAIT_S = 4.0                    # on SIGTERM the worker waits this long for torchrun to stop its ranks
                                     # (the supervisor SIGKILLs the group after 5 s)


class RankFailed(RuntimeError):
    """A rank (or torchrun) failed: the job's error, in the studio's words."""


def world_size() -> int:
    """The ranks of this process's job (torchrun's ``WORLD_SIZE``): 1 outside torchrun."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def local_rank() -> int:
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def in_rank() -> bool:
    """Whether this process is one of torchrun's ranks of a job (a job of one GPU never is)."""
    return world_size() > 1 and "LOCAL_RANK" in os.environ


def backend(cuda: bool) -> str:
    return "nccl" if cuda else "gloo"


def command(job_dir: Path, n: int) -> list[str]:
    """torchrun's command line for a job of ``n`` ranks on this box."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
            "-m", RANK_MODULE, str(job_dir)]


# ── the worker's side: torchrun as its child ─────────────────────────────────


def launch(job: dict, job_dir: Path, n: int, status, log: Callable[[str], None]) -> dict:
    """Run the job under torchrun with ``n`` ranks and wait for it; rank 0's result, or RankFailed."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda and torch.cuda.device_count() < n:
        raise RankFailed(f"gpus: {n}, but this worker sees {torch.cuda.device_count()} GPU(s) "
                         f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    for stale in [job_dir / RESULT, *job_dir.glob(ERROR.format(rank="*"))]:
        stale.unlink(missing_ok=True)
    env = dict(os.environ)
    env["VITUNE_DDP_BACKEND"] = backend(cuda)
    if not cuda:   # the ranks share the CPU: each its part of the cores (torchrun would give each one thread)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    cmd = command(job_dir, n)
    log(f"{n} ranks under torchrun ({backend(cuda)}, {'one GPU a rank: ' + os.environ.get('CUDA_VISIBLE_DEVICES', '') if cuda else 'on the CPU'})")
    log(" ".join(cmd))
    status.update(ranks=n, ddp_backend=backend(cuda))
    stopping: dict[str, float] = {}

    def on_term(signum, frame):   # a cancel: torchrun (same process group) has the signal too, and stops its ranks
        stopping.setdefault("at", time.monotonic())

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        # stdout and stderr are the worker's own: the job's log. Not a new session: a killpg of the worker's
        # group reaches torchrun
        proc = subprocess.Popen(cmd, env=env, cwd=str(paths.REPO_ROOT), stdin=subprocess.DEVNULL)
        while proc.poll() is None:
            if "at" in stopping and time.monotonic() - stopping["at"] > STOP_WAIT_S:
                break
            time.sleep(0.1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if "at" in stopping:   # cancelled: end as the signal would have ended the worker, writing nothing
        if proc.poll() is None:   # torchrun has not stopped its ranks in time: it goes, and they with it (PDEATHSIG)
            proc.kill()
        sys.stdout.flush()
        os._exit(128 + signal.SIGTERM)
    status.data.update(read_json(status.path) or {})   # rank 0's progress, fit, phase: kept in the end's status
    if proc.returncode != 0:
        raise RankFailed(first_error(job_dir, n, proc.returncode))
    result = read_json(job_dir / RESULT)
    if result is None:
        raise RankFailed(f"torchrun ended, but rank 0 wrote no result ({RESULT}); see the log tail")
    return result


def first_error(job_dir: Path, n: int, returncode: int) -> str:
    """The error of the rank that failed first, or what torchrun's exit says when none wrote one."""
    found = []
    for path in job_dir.glob(ERROR.format(rank="*")):
        got = read_json(path)
        if got and got.get("error"):
            found.append((got.get("at") or path.stat().st_mtime, got))
    if found:
        first = min(found, key=lambda f: f[0])[1]
        return f"rank {first.get('rank')} of {n} failed: {first['error']}"
    return (f"torchrun exited with code {returncode}: a rank ended without a word (killed, or out of memory); "
            "see the log tail")


# ── a rank ───────────────────────────────────────────────────────────────────


class _Quiet:
    """The status writer of a rank other than 0: it writes nothing."""

    def __init__(self):
        self.data: dict = {}

    def update(self, **fields) -> None:
        self.data.update(fields)


def _die_with_parent() -> None:
    """Linux: this rank gets SIGKILL when torchrun (its parent) dies, however it dies, so that a worker
    killed outright (the supervisor's SIGKILL after its SIGTERM) leaves no rank behind."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)   # PR_SET_PDEATHSIG
        if os.getppid() == 1:   # torchrun died before the line above: go now
            os._exit(1)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """One rank: ``python -m core.training.ddp JOB_DIR`` under torchrun."""
    paths.private_files()
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not in_rank():
        print("usage: torchrun --nproc_per_node N -m core.training.ddp JOB_DIR (the training worker starts it)",
              file=sys.stderr)
        return 2
    _die_with_parent()
    job_dir = Path(argv[0]).resolve()
    me, n = rank(), world_size()
    status = Status(job_dir) if me == 0 else _Quiet()
    log = log_line if me == 0 else (lambda message: None)
    try:
        job = read_json(job_dir / JOB)
        if job is None:
            raise RankFailed(f"{job_dir / JOB}: missing or not JSON")
        import torch
        import torch.distributed as dist

        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend=os.environ.get("VITUNE_DDP_BACKEND") or backend(cuda))
        from core.jobs import kinds   # the train kind's worker side (core.training.trainer), as the worker finds it

        result = kinds.worker_module("train").run(job, job_dir, status, log)
        if me == 0:
            write_json_atomic(job_dir / RESULT, result)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException as exc:   # every failure is reported, the first one is the job's error
        print(f"[rank {me}] " + traceback.format_exc(), end="", file=sys.stderr, flush=True)
        try:
            write_json_atomic(job_dir / ERROR.format(rank=me), {"rank": me, "error": errors.describe(exc),
                                                                 "at": time.time()})
        except OSError:
            pass
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
