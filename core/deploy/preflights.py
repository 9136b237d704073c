"""Preflights, app side: the golden prompts (the run's held-out pairs) and queueing a ``preflight``
job, which ``core.deploy.preflight`` runs in a worker."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

from core import paths
from core.access.principal import Principal, require
from core.datasets import versions
from core.deploy.preflight import GOLDEN_SIZE, MAX_TOKENS, PreflightError
from core.evaluation import gate
from core.jobs import queue
from core.training import runs

def golden_pairs(dataset_version_id: str, n: int = GOLDEN_SIZE) -> list[dict]:
    """The first ``n`` held-out (test split) pairs of the run's dataset version (only those are read)."""
    version = versions.get_version(dataset_version_id)
    rows = versions.head_rows(version, "test", n)
    if not rows:
        raise PreflightError(f"dataset version {dataset_version_id} has no held-out pairs for a preflight")
    return [{"instruction": r.get("instruction") or "", "input": r.get("input") or "",
             "output": r.get("output") or ""} for r in rows]


def submit(run_id: str, gguf: str | Path, merged_dir: str | Path, modelfile_text: str,
           actor: Principal, n: int = GOLDEN_SIZE, max_tokens: int = MAX_TOKENS,
           out_dir: Path | None = None) -> dict:
    run = runs.get_run(run_id, actor)
    require(actor, "deploy.release", run["project"])
    payload = {
        "run_id": run_id,
        "gguf": str(gguf),
        "merged_dir": str(merged_dir),
        "prompt_format": run["prompt_format"],
        "modelfile": modelfile_text,
        "pairs": golden_pairs(run["dataset_version_id"], n),
        "max_tokens": max_tokens,
        "thresholds": gate.thresholds(),   # the worker scores both models against the held-out answers by these
    }
    where = out_dir or paths.exports_dir() / "preflight"
    job_dir = where / f"preflight-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
    return queue.submit("preflight", payload, job_dir, actor, run_id, run["dataset_version_id"], run["project"])
