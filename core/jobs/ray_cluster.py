"""Jobs on a Ray cluster: the supervisor's second launcher (issue 25, docs/scale.md "A second box").

When the studio is pointed at a Ray cluster (the admin setting ``ray_address``, or ``$VITUNE_RAY_ADDRESS``,
which overrides it), the supervisor submits each queued job of a compute kind (``KINDS``) to the cluster
through Ray's **Job API** instead of starting a local process. The entrypoint is the same worker a local job
runs, ``python -m core.worker JOB_DIR``, its output appended to the job's ``worker.log`` as a local worker's
is; the resources it asks decide the node it runs on: ``entrypoint_num_gpus`` (its GPUs: Ray then gives the
process ``CUDA_VISIBLE_DEVICES``) on a GPU cluster, or one unit of a custom resource
(``ray_resource`` / ``$VITUNE_RAY_RESOURCE``, say ``vitune_worker``) a GPU a job would use, which the nodes
that may take the studio's jobs declare (``ray start --resources '{"vitune_worker": 1}'``): how a CPU cluster
is used, and how a team keeps the studio's jobs off some nodes.

The DuckDB queue stays the one source of truth: a job is claimed there first (``running``, its Ray
submission id recorded, ``ray_job``), then submitted; each tick asks Ray for the job's status (its liveness,
in place of a local pid), ``cancel`` is Ray's ``stop_job``. The worker writes its files into the job's folder
under the studio's home, which every node sees at the same path (a shared filesystem: NFS, or one machine's
loopback nodes); the supervisor ingests them as it does a local worker's. Where the nodes do not see the home
(the setting ``ray_ship``, ``$VITUNE_RAY_SHIP``), each job is *shipped*: its inputs go with it as Ray's
``working_dir`` (``stage``) and ``core.jobs.ray_ship`` runs the worker on the node and sends its files back.

Generation, judge and inference jobs always run locally: the first two carry an endpoint's key in their
environment, which a Ray job's runtime environment would store in the cluster's job table (readable from its
dashboard); the playground's inference worker serves on the studio's own loopback.

This module is the whole of the studio's Ray code; Ray itself (``requirements-cluster.txt``) is imported only
when an address is set. ``submit``, ``state``, ``stop`` and ``describe_end`` are what the supervisor calls.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from core import paths, secrets, store
from core.access.principal import Principal, require
from core.i18n import M
from core.jobs.files import LOG

ADDRESS_ENV = "VITUNE_RAY_ADDRESS"
RESOURCE_ENV = "VITUNE_RAY_RESOURCE"
SHIP_ENV = "VITUNE_RAY_SHIP"
ADDRESS_SETTING = "ray_address"
RESOURCE_SETTING = "ray_resource"
SHIP_SETTING = "ray_ship"   # the nodes do not see the studio's home: jobs are shipped (core.jobs.ray_ship)
KINDS = ("train", "evaluate", "export", "preflight", "quant_cost", "retention")
SLOT = "ray"            # the slot a Ray job's row records (it holds no local slot)
REQUIREMENTS = "requirements-cluster.txt"

# Ray's words for a job's status (ray.job_submission.JobStatus values)
LIVE = ("PENDING", "RUNNING")
ENDED = ("SUCCEEDED", "FAILED", "STOPPED")
MISSING = "MISSING"     # the cluster has no such job: claimed by a supervisor that died before it submitted
# Ray's error types (ray.job_submission.JobErrorType) that mean the process's node went away
NODE_LOST = ("JOB_SUPERVISOR_ACTOR_DIED",)
NOT_STARTED = ("JOB_SUPERVISOR_ACTOR_START_TIMEOUT", "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE")
# the environment a Ray job's process gets from the studio's (secrets.worker_env has taken every key out first)
PASSED_ON = ("VITUNE_", "HF_", "TRANSFORMERS_", "TORCH", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_")
NOT_PASSED = ("VITUNE_RAY_ADDRESS", "VITUNE_RAY_RESOURCE", "VITUNE_SLOTS", "VITUNE_WORKER_PYTHON", "VITUNE_SECRETS",
              "VITUNE_CRASH_AT")


class RayError(RuntimeError):
    """The cluster cannot be used now (Ray not installed, the address unreachable): one line, no traceback."""


# ── the setting ──────────────────────────────────────────────────────────────


def check_address(text: str) -> str:
    """The Ray dashboard's address as the Job API takes it: ``http://HOST:PORT`` (``HOST:PORT`` gets ``http://``).
    ValueError naming the problem otherwise."""
    text = (text or "").strip()
    if not text:
        raise ValueError("the Ray address is empty; give the head node's dashboard address, e.g. http://10.0.0.5:8265")
    if text.startswith("ray://"):
        raise ValueError(f"{text} is a Ray Client address; the studio submits through the Job API: give the head "
                         "node's dashboard address, e.g. http://10.0.0.5:8265")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{text}: a Ray address starts with http:// or https://, not {parts.scheme}://")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text}: the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"{text}: no host in the Ray address")
    if port is None:
        raise ValueError(f"{text}: give the dashboard's port too (Ray's default is 8265)")
    if parts.path.strip("/") or parts.query:
        raise ValueError(f"{text}: the address is the dashboard's host and port alone, without a path")
    return f"{parts.scheme}://{parts.netloc}"


def check_resource(text: str | None) -> str | None:
    """A custom resource's name as ``ray start --resources`` declares it (None: the jobs ask GPUs)."""
    text = (text or "").strip()
    if not text:
        return None
    if not all(c.isascii() and (c.isalnum() or c in "_-.") for c in text) or text.upper() in ("CPU", "GPU", "MEMORY"):
        raise ValueError(f"'{text}' cannot be a custom Ray resource's name: letters, digits, '_', '-' and '.' only, "
                         "and not CPU, GPU or memory")
    return text


def address() -> str | None:
    """The cluster the studio submits to: ``$VITUNE_RAY_ADDRESS`` over the admin setting; None: no Ray."""
    env = os.environ.get(ADDRESS_ENV)
    if env is not None:
        return check_address(env) if env.strip() else None
    return store.get_setting(ADDRESS_SETTING)


def resource() -> str | None:
    env = os.environ.get(RESOURCE_ENV)
    if env is not None:
        return check_resource(env)
    return store.get_setting(RESOURCE_SETTING)


def ship() -> bool:
    """Whether jobs are shipped to nodes that do not see the studio's home (``$VITUNE_RAY_SHIP=1`` or the setting)."""
    env = os.environ.get(SHIP_ENV)
    if env is not None:
        return env.strip().lower() in ("1", "true", "yes")
    return bool(store.get_setting(SHIP_SETTING))


def set_cluster(address_text: str | None, resource_text: str | None = None, *, actor: Principal,
                shipped: bool = False) -> M:
    """Point the studio at a Ray cluster (``None``: back to local workers alone), after checking that its Job
    API answers; audited (``setting.changed``). Returns a line saying what jobs now do."""
    require(actor, "settings.workers")
    if address_text is None:
        store.set_setting(ADDRESS_SETTING, None, actor)
        store.set_setting(RESOURCE_SETTING, None, actor)
        store.set_setting(SHIP_SETTING, None, actor)
        return describe_setting(None, None)
    addr = check_address(address_text)
    res = check_resource(resource_text)
    version = ping(addr)   # RayError: nothing recorded
    store.set_setting(ADDRESS_SETTING, addr, actor, resource=res)
    store.set_setting(RESOURCE_SETTING, res, actor)
    store.set_setting(SHIP_SETTING, True if shipped else None, actor)
    return M("{setting} (Ray {version} answered)", setting=describe_setting(addr, res, shipped), version=version)


def describe_setting(addr: str | None, res: str | None, shipped: bool = False) -> M:
    """What jobs do under the setting (an ``M``: the CLI prints its English, the Admin page shows it translated)."""
    if not addr:
        return M("jobs run in local workers (no Ray cluster)")
    if shipped:
        return M("{setting}; each job's folder is shipped to its node and its files sent back to the home on the "
                 "head node", setting=describe_setting(addr, res))
    kinds = ", ".join(KINDS)
    if res:
        return M("{kinds} jobs are submitted to the Ray cluster at {address}, each asking one '{resource}' resource "
                 "a GPU; generation, judge and playground jobs run here", kinds=kinds, address=addr, resource=res)
    return M("{kinds} jobs are submitted to the Ray cluster at {address}, each asking its GPUs; generation, judge "
             "and playground jobs run here", kinds=kinds, address=addr)


# ── the cluster ──────────────────────────────────────────────────────────────

_clients: dict[str, object] = {}


def client(addr: str):
    """Ray's ``JobSubmissionClient`` for the address (one a process: making one asks the cluster's version)."""
    if addr in _clients:
        return _clients[addr]
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise RayError(f"Ray is not installed in {sys.executable}: `pip install -r {REQUIREMENTS}` "
                       "(or clear the Ray address: `python -m core jobs ray --clear`)") from None
    try:
        made = JobSubmissionClient(addr)
    except Exception as exc:
        raise RayError(f"the Ray cluster at {addr} does not answer ({_short(exc)})") from None
    _clients[addr] = made
    return made


def ping(addr: str) -> str:
    """The cluster's Ray version when its Job API answers; RayError otherwise."""
    c = client(addr)
    try:
        c.list_jobs()
    except Exception as exc:
        _clients.pop(addr, None)
        raise RayError(f"the Ray cluster at {addr} does not answer ({_short(exc)})") from None
    import ray

    return ray.__version__


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def new_submission_id(job: dict) -> str:
    """Unique on the cluster, which several studios (or homes) may share: the job's id and 8 random hex digits."""
    return f"vitune-{job['id']}-{uuid.uuid4().hex[:8]}"


def gpus(job: dict) -> int:
    """The GPUs a job asks: a training job's ``gpus`` setting (1 when it has none), one for every other kind."""
    cfg = job.get("config") or {}
    if isinstance(cfg, dict):
        n = (cfg.get("config") or {}).get("gpus") if job["kind"] == "train" else None
        if isinstance(n, int) and n > 0:
            return n
    return 1


def resources(job: dict, res: str | None) -> dict:
    """What the job's entrypoint asks of the cluster: its GPUs, or as many units of the custom resource."""
    if res:
        return {"entrypoint_resources": {res: float(gpus(job))}}
    return {"entrypoint_num_gpus": float(gpus(job))}


def entrypoint(job: dict, python: str) -> str:
    """``python -m core.worker JOB_DIR``, run from the checkout (the same path on every node), its output appended
    to the job's worker.log as a local worker's is. ``exec``: the process Ray watches is the worker itself."""
    job_dir = str(job["job_dir"])
    return (f"cd {shlex.quote(str(paths.REPO_ROOT))} && exec {shlex.quote(python)} -m core.worker "
            f"{shlex.quote(job_dir)} >> {shlex.quote(str(Path(job_dir) / LOG))} 2>&1")


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """The variables a Ray job's process gets (its runtime environment, which the cluster stores): the studio's
    own settings (VITUNE_*, the Hugging Face and torch ones), never a key, never the local box's GPU choice."""
    env = secrets.worker_env(dict(env))
    kept = {k: v for k, v in env.items() if k.startswith(PASSED_ON) and k not in NOT_PASSED}
    kept["VITUNE_HOME"] = str(paths.home())
    kept["PYTHONUNBUFFERED"] = "1"
    kept["PYTHONPATH"] = str(paths.REPO_ROOT)
    return kept


def submit(addr: str, res: str | None, job: dict, submission_id: str, python: str, shipped: bool = False) -> None:
    """Submit the job's worker to the cluster under ``submission_id``. RayError when the cluster refuses it.
    ``shipped``: the node does not see the home; the job's inputs go with it (``stage``, Ray's ``working_dir``,
    uploaded by ``submit_job`` itself) and ``core.jobs.ray_ship`` sends its files back."""
    c = client(addr)
    env = worker_env(dict(os.environ))
    runtime_env: dict = {"env_vars": env}
    command = entrypoint(job, python)
    staged = None
    if shipped:
        staged = stage(job, submission_id)
        runtime_env["working_dir"] = str(staged)
        env["VITUNE_SHIP_PYTHON"] = python
        command = f"exec {shlex.quote(sys.executable)} -m core.jobs.ray_ship {shlex.quote(str(job['job_dir']))}"
    try:
        c.submit_job(entrypoint=command, submission_id=submission_id, runtime_env=runtime_env,
                     metadata={"studio_job": str(job["id"]), "kind": job["kind"], "job_dir": str(job["job_dir"])},
                     **resources(job, res))
    except Exception as exc:
        raise RayError(f"the Ray cluster at {addr} refused job {job['id']} ({_short(exc)})") from None
    finally:
        if staged is not None:
            import shutil

            shutil.rmtree(staged, ignore_errors=True)


def stage(job: dict, submission_id: str) -> Path:
    """The inputs a shipped job needs, each under ``root/`` at its absolute path: its job folder (a resumed run's
    checkpoints and curve included) and every file or folder under the studio's data folder that its payload
    names (a version's parquet files, the adapter an evaluation loads). Base models are not shipped: each node
    has its own (``scripts/setup.sh`` prepares the default model; a hub model is fetched or cached there)."""
    import shutil

    data = paths.data_dir().resolve()
    staging = data / "ray-ship" / submission_id
    root = staging / "root"
    wanted = {Path(job["job_dir"]).resolve()}

    def walk(value) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and value.startswith("/") and "\n" not in value and len(value) < 4096:
            p = Path(value)
            try:
                if str(p.resolve()).startswith(str(data) + os.sep) and p.exists():
                    wanted.add(p.resolve())
            except OSError:
                pass

    walk(job.get("config") or {})
    for src in sorted(wanted):
        if "ray-ship" in src.parts:
            continue
        dest = root / str(src).lstrip("/")
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("ray-ship"))
        elif src.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    return staging


@dataclass
class RayState:
    status: str                     # PENDING | RUNNING | SUCCEEDED | FAILED | STOPPED | MISSING
    message: str = ""
    error_type: str | None = None
    node: str | None = None         # the node whose process runs (ran) the job
    exit_code: int | None = None


def state(addr: str, submission_id: str) -> RayState:
    """What the cluster says of the job. RayError when it cannot be asked (the job's own fate is then unknown)."""
    c = client(addr)
    try:
        info = c.get_job_info(submission_id)
    except Exception as exc:
        if "does not exist" in str(exc) or "404" in str(exc):
            return RayState(MISSING)
        _clients.pop(addr, None)
        raise RayError(f"the Ray cluster at {addr} does not answer ({_short(exc)})") from None
    status = getattr(info.status, "value", str(info.status))
    error_type = getattr(info, "error_type", None)
    return RayState(status=str(status), message=(info.message or "").strip(),
                    error_type=getattr(error_type, "value", error_type) if error_type else None,
                    node=getattr(info, "driver_node_id", None) or None,
                    exit_code=getattr(info, "driver_exit_code", None))


def stop(addr: str, submission_id: str, wait_s: float = 30) -> RayState:
    """Ray's ``stop_job`` (SIGTERM to the worker, SIGKILL after Ray's grace time), then wait until Ray says it
    has ended (or ``wait_s``). Returns the last state seen."""
    c = client(addr)
    try:
        c.stop_job(submission_id)
    except Exception as exc:
        if "does not exist" not in str(exc):
            raise RayError(f"the Ray cluster at {addr} could not stop {submission_id} ({_short(exc)})") from None
    deadline = time.monotonic() + wait_s
    while True:
        got = state(addr, submission_id)
        if got.status not in LIVE or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def log_tail(addr: str, submission_id: str, lines: int = 5) -> str:
    """The last lines of what Ray logged of the job (its entrypoint's own output goes to the job's worker.log;
    this is where a node that cannot run the entrypoint at all says why, e.g. a job folder it does not see)."""
    try:
        text = client(addr).get_job_logs(submission_id)
    except Exception:
        return ""
    return " / ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


def node_lost(got: RayState) -> bool:
    return got.error_type in NODE_LOST


def not_started(got: RayState) -> bool:
    """Ray gave up before the worker started (no node had the resources in Ray's start timeout): the job goes
    back to the studio's queue, where it waits as any queued job does."""
    return got.error_type in NOT_STARTED


def _gist(message: str, limit: int = 300) -> str:
    """Ray's message in one line: its lines about the node when it has any (a lost node's message is a dozen
    lines of actor ids), else its first line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    about_node = [line for line in lines[1:] if "node" in line.lower()]
    text = " — ".join(about_node) if about_node else (lines[0] if lines else "")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def describe_end(got: RayState, submission_id: str) -> str:
    """The failed job's error when its worker ended without writing its end (status.json)."""
    node = f"node {got.node[:12]}…" if got.node else "its node"
    said = f" (Ray: {_gist(got.message)})" if got.message else ""
    if node_lost(got):
        return f"the Ray node running it was lost ({node}, Ray job {submission_id}){said}"
    if got.status == "STOPPED":
        return f"stopped on the Ray cluster (Ray job {submission_id}), not by the studio{said}"
    code = f", exit code {got.exit_code}" if got.exit_code is not None else ""
    return (f"the worker on the Ray cluster ended without finishing ({node}, Ray job {submission_id}{code}){said}; "
            "see the log tail")
