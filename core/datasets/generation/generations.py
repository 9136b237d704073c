"""Pair generation, app side: the endpoint settings, queueing a ``generate`` job, stopping it, and
landing what the worker (``core.datasets.generation.generator``) made as a dataset version through
``core.datasets.importer.import_files``, with the prompt template (saved as ``prompt.txt`` beside
the pairs) and its hash in the version's lineage.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path

from core import paths, secrets, store
from core.access import principal as access
from core.access import projects
from core.access.principal import Principal, require
from core.datasets import importer
from core.datasets.generation.answers import DEFAULT_PROMPT, check_template
from core.datasets.generation.documents import GenerateError, check_document, chunk_text
from core.datasets.generation import endpoints
from core.datasets.generation.endpoint import Backend
from core.datasets.generation.generator import PAIRS_FILE, PROMPT_FILE, REJECTS_FILE, STOP_FILE
from core.jobs import queue
from core.jobs.files import STATUS, read_json

def generations_dir() -> Path:
    d = paths.data_dir() / "generations"
    d.mkdir(parents=True, exist_ok=True)
    return d


def submit(docs: list[str | Path], name: str, *, endpoint: str | None = None, local: bool = False,
           max_tokens: int | None = None, temperature: float | None = None, prompt: str | None = None, n_pairs: int = 3, max_chunks: int | None = None,
           chunk_chars: int = 1500, overlap: int = 200, max_retries: int = 2,
           test_fraction: float = 0.1, seed: int = 42, actor: Principal, project: str | None = None) -> dict:
    """Check the request and queue a ``generate`` job (its pairs land in ``project``). Returns the job.

    The LLM is the default model (``local``) or a configured endpoint, by name (``endpoints``); the job
    records the endpoint's address and model, never its key."""
    project = projects.check(actor, project)
    require(actor, "dataset.generate", project)
    if not name or not name.strip():
        raise GenerateError("the generated dataset version needs a name")
    if not docs:
        raise GenerateError("give at least one document (txt, md, docx or pdf)")
    checked = [str(check_document(d).resolve()) for d in docs]
    template = check_template(prompt if prompt is not None else DEFAULT_PROMPT)
    if not 1 <= n_pairs <= 20:
        raise GenerateError("pairs per chunk must be between 1 and 20")
    if max_chunks is not None and max_chunks < 1:
        raise GenerateError("max chunks must be at least 1")
    if not 0 <= max_retries <= 5:
        raise GenerateError("retries must be between 0 and 5")
    chunk_text("x", chunk_chars, overlap)  # validates the sizes
    if max_tokens is not None and max_tokens < 16:
        raise GenerateError("max tokens per answer must be at least 16")
    if local:
        backend = Backend(base_url="http://127.0.0.1/v1", model="local", api_key_env="",
                          temperature=0.7 if temperature is None else temperature,
                          max_tokens=max_tokens or 768, structured=True)
    elif not endpoint:
        raise GenerateError("choose the default model (local) or a configured endpoint by name")
    else:
        backend = endpoints.backend_of(endpoints.get(endpoint), max_tokens=max_tokens, temperature=temperature)
    gen_id = "gen-" + time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    job_dir = generations_dir() / gen_id
    job_dir.mkdir(parents=True)
    (job_dir / PROMPT_FILE).write_text(template, encoding="utf-8")
    payload = {
        "generation_id": gen_id,
        "name": name.strip(),
        "docs": checked,
        "local": local,
        "endpoint": None if local else endpoint,
        "backend": backend.to_dict(),
        "prompt_file": str(job_dir / PROMPT_FILE),
        "prompt_sha256": hashlib.sha256(template.encode()).hexdigest(),
        "n_pairs": n_pairs,
        "max_chunks": max_chunks,
        "chunk_chars": chunk_chars,
        "overlap": overlap,
        "max_retries": max_retries,
        "test_fraction": test_fraction,
        "seed": seed,
        "owner": actor.name,
        "project": project,
    }
    return queue.submit("generate", payload, job_dir, actor, project=project)


def request_stop(job: dict, *, actor: Principal) -> None:
    """Ask a running generation to stop after its current request and keep what it made."""
    require(actor, "dataset.generate", job.get("project"))
    Path(job["job_dir"], STOP_FILE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"), encoding="utf-8")


# ── the supervisor side ──────────────────────────────────────────────────────


def worker_env(job: dict, env: dict[str, str]) -> dict[str, str]:
    """The job's endpoint key, for this worker alone (the supervisor has removed every other key). When it
    cannot be found the worker is told why, and fails with that reason."""
    cfg = job["config"] if isinstance(job["config"], dict) else json.loads(job["config"])
    if cfg.get("local") or not cfg.get("endpoint"):
        return env
    try:
        key = endpoints.key_of(endpoints.get(cfg["endpoint"]))
    except GenerateError as exc:
        return {**env, secrets.JOB_KEY_VAR + "_ERROR": str(exc)}
    return {**env, secrets.JOB_KEY_VAR: key} if key else env


def ingest(con, job: dict, result: dict) -> None:
    """Land generated.jsonl as a dataset version (none when no pair was made), in the settle's transaction: the
    version's record and the job's state commit together. Idempotent: when the generation's version is recorded
    already, it is that one."""
    cfg = job["config"] if isinstance(job["config"], dict) else json.loads(job["config"])
    landed = con.execute("SELECT id FROM dataset_versions WHERE source = 'generate' AND "
                         "json_extract_string(lineage, '$.generation.generation_id') = ?",
                         [cfg["generation_id"]]).fetchall()
    if landed:
        result["dataset_version"] = landed[0][0]
        con.execute("UPDATE jobs SET dataset_version_id = ? WHERE id = ?", [landed[0][0], job["id"]])
        return
    result["dataset_version"] = None
    pairs_file = Path(result["pairs_file"])
    if result.get("pairs", 0) == 0 or not pairs_file.exists():
        result["note"] = "no valid pair came back; every malformed answer is listed in rejects.jsonl"
        return
    template = Path(cfg["prompt_file"]).read_text(encoding="utf-8")
    lineage = {"generation": {
        "job_id": job["id"], "generation_id": cfg["generation_id"], "docs": cfg["docs"],
        "local": cfg["local"], "model": result.get("model"), "base_url": None if cfg["local"] else cfg["backend"]["base_url"],
        "prompt_file": cfg["prompt_file"], "prompt_sha256": cfg["prompt_sha256"], "prompt": template,
        "n_pairs": cfg["n_pairs"], "chunk_chars": cfg["chunk_chars"], "overlap": cfg["overlap"],
        "chunks_done": result["chunks_done"], "chunks_available": result.get("chunks_available"),
        "stopped": result.get("stopped"),
    }}
    # the supervisor lands the pairs on behalf of the job's owner, in the job's project
    owner = access.system(cfg.get("owner") or job.get("owner") or "generation", project=cfg.get("project"))
    version, report = importer.import_files(
        [pairs_file], cfg["name"], test_fraction=cfg["test_fraction"], seed=cfg["seed"],
        actor=owner, project=cfg.get("project"), source="generate", extra_lineage=lineage)
    result["import_report"] = {k: v for k, v in report.as_dict().items() if k != "errors"}
    if version:
        result["dataset_version"] = version["id"]
        con.execute("UPDATE jobs SET dataset_version_id = ? WHERE id = ?", [version["id"], job["id"]])


def list_generations(limit: int = 20, *, actor: Principal, project: str | None = None) -> list[dict]:
    return queue.list_jobs(limit, "generate", actor=actor, project=project)


def live(job: dict) -> dict:
    """The running numbers a worker reports: chunks, pairs, rejects, tokens, time, cost."""
    return (read_json(Path(job["job_dir"]) / STATUS) or {}).get("generation") or {}


def rejects(job: dict) -> list[dict]:
    path = Path(job["job_dir"]) / REJECTS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def prompt_of(job: dict) -> str:
    try:
        return Path(job["job_dir"], PROMPT_FILE).read_text(encoding="utf-8")
    except OSError:
        return ""


def generated_pairs(job: dict, limit: int = 200) -> list[dict]:
    path = Path(job["job_dir"]) / PAIRS_FILE
    if not path.exists():
        return []
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
            if len(out) >= limit:
                break
    return out
