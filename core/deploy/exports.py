"""Exports, app side: which quantization a run gets, queueing an ``export`` job (run by
``core.deploy.exporter`` in a worker), and finding an intact earlier export to reuse.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

from core import paths
from core.access.principal import Principal, require
from core.deploy.exporter import QUANTIZATIONS, ExportError, sha256
from core.deploy import quant_costs
from core.jobs import queue
from core.jobs.queue import JobError
from core.training import runs, vram

DEFAULT_QUANT = "q4_k_m"        # the guide's default, for models of a billion parameters and more
SMALL_MODEL_QUANT = "q8_0"      # below that: q4_k_m loses a short fine-tune (measured on Gemma 3 270M, README)
SMALL_MODEL_PARAMS = 1_000_000_000


def parameter_count(base_model: str) -> int | None:
    """The base model's parameters (linear layers and embeddings) from its config.json; None if unknown."""
    shape, _ = vram.model_shape(base_model)
    if shape is None:
        return None
    hidden, inter, layers, heads, kv, head_dim, vocab = shape
    attention = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2
    return layers * (attention + 3 * hidden * inter) + vocab * hidden


def default_quant(base_model: str) -> str:
    """The quantization deploy starts from: the guide's q4_k_m, except for a model under a billion
    parameters, where q8_0. On Gemma 3 270M a 40-step LoRA run that passes the gate loses its stop and
    most of what it learned at q4_k_m (the preflight blocks it: 8/8 golden answers ran to the token limit)
    and keeps both at q8_0."""
    count = parameter_count(base_model)
    return SMALL_MODEL_QUANT if count is not None and count < SMALL_MODEL_PARAMS else DEFAULT_QUANT


def default_quant_for_run(run_id: str) -> str:
    return default_quant(runs.get_run(run_id)["base_model"])


def latest(run_id: str, quantization: str) -> dict | None:
    """The newest succeeded export of a run that has this quantization and whose files are intact."""
    for job in queue.list_jobs(200, "export"):
        if job["run_id"] != run_id or job["state"] != "succeeded" or not job.get("result"):
            continue
        result = job["result"]
        path = result.get("gguf", {}).get(quantization)
        if path and Path(path).exists() and Path(result.get("merged_dir", "")).exists():
            if sha256(Path(path)) == result["sha256"][quantization]:
                return job
    return None


def latest_recorded(run_id: str, quantization: str) -> dict | None:
    """The newest succeeded export of a run with this quantization whose file is there, its checksum as its export
    recorded it (not read again: what a page shows; deploy verifies with ``latest``)."""
    for job in queue.list_jobs(200, "export"):
        if job["run_id"] != run_id or job["state"] != "succeeded" or not job.get("result"):
            continue
        path = job["result"].get("gguf", {}).get(quantization)
        if path and Path(path).exists():
            return job
    return None


def exported(run_ids: list[str]) -> dict[str, list[str]]:
    """For each run, the quantizations whose GGUF its succeeded exports left in place (one listing of the export
    jobs): what an evaluation of the shipped artifact can be asked of."""
    wanted, found = set(run_ids), {}
    for job in queue.list_jobs(200, "export"):   # newest first
        if job.get("run_id") not in wanted or job["state"] != "succeeded" or not job.get("result"):
            continue
        mine = found.setdefault(job["run_id"], [])
        for quant, path in (job["result"].get("gguf") or {}).items():
            if quant not in mine and path and Path(path).is_file():
                mine.append(quant)
    return found


def submit(run_id: str, quantizations: list[str] | None = None, *, actor: Principal) -> dict:
    run = runs.get_run(run_id, actor)
    require(actor, "export.submit", run["project"])
    if run["state"] != "succeeded" or not run["adapter_dir"]:
        raise JobError(f"run {run_id} has not finished training ({run['state']})")
    quantizations = quantizations or [default_quant(run["base_model"])]
    for q in quantizations:
        if q not in QUANTIZATIONS:
            raise ExportError(f"unknown quantization '{q}' (one of: {', '.join(QUANTIZATIONS)})")
    out_dir = paths.exports_dir() / f"{run_id}-{datetime.now().strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
    payload = {
        "run_id": run_id,
        "base_model": run["base_model"],
        "adapter_dir": run["adapter_dir"],
        "prompt_format": run["prompt_format"],
        "quantizations": quantizations,
        "out_dir": str(out_dir),
        # the held-out pairs on which the export measures what quantization costs (core.deploy.quant_cost)
        "held_out": quant_costs.held_out_pairs(run["dataset_version_id"]),
    }
    return queue.submit("export", payload, out_dir, actor, run_id, run["dataset_version_id"], run["project"])


def ingest(con, job: dict, result: dict) -> None:
    """At the export's settle: its measured cost of quantization (``quant_cost.json``) into ``quant_costs``."""
    quant_costs.ingest_export(con, job, result)
