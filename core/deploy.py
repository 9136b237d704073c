"""Deploy: gate check, export, Modelfile, ``ollama create``, smoke test, release record.

Commands run as argument lists, never through a shell. Where no ``ollama`` binary is on PATH the
release is still recorded with its GGUF and Modelfile, ready to carry to a machine that has one.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Callable

from core import evaluate, export, jobs, modelfile, store


class DeployRefused(RuntimeError):
    pass


def ollama_binary() -> str | None:
    return shutil.which("ollama")


def ollama_create(name: str, modelfile_path: Path, on_line: Callable[[str], None] = print) -> tuple[bool, str]:
    binary = ollama_binary()
    if not binary:
        return False, "ollama is not installed on this machine: download the Modelfile and GGUF and run `ollama create` where it is"
    modelfile.check_name(name)
    proc = subprocess.Popen([binary, "create", name, "-f", str(modelfile_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        on_line(line.rstrip())
    rc = proc.wait()
    text = "\n".join(lines[-5:])
    if rc != 0:
        if "connect" in text.lower() or "could not" in text.lower():
            return False, f"the Ollama server is not running (start it with `ollama serve`): {text}"
        return False, f"ollama create failed: {text}"
    return True, "created"


def ollama_smoke(name: str, prompt: str) -> str:
    import ollama

    reply = ollama.generate(model=name, prompt=prompt, options={"temperature": 0, "num_predict": 64})
    return reply["response"]


def deploy(run_id: str, name: str, *, system: str | None = None, quantization: str = export.DEFAULT_QUANT,
           override_reason: str | None = None, actor: str | None = None,
           on_progress: Callable[[str], None] = print) -> dict:
    modelfile.check_name(name)
    if system:
        modelfile.check_system(system)
    run = jobs.get_run(run_id)
    verdict = evaluate.verdict(run_id)
    if not verdict["releasable"]:
        if not (override_reason and override_reason.strip()):
            raise DeployRefused(f"run {run_id} is not releasable: {verdict['reason']}. "
                                "Give an override reason to deploy anyway (it is recorded).")
        store.audit("gate.override", run_id, actor, reason=override_reason, verdict=verdict["reason"])
    on_progress(f"exporting {run_id} to GGUF ({quantization})")
    job = export.submit(run_id, [quantization], owner=actor)
    job = jobs.wait(job["id"], timeout=3600, on_update=lambda j: None)
    if job["state"] != "succeeded":
        raise export.ExportError(f"export job {job['id']} {job['state']}: {job.get('error')}")
    result = job["result"]
    gguf = Path(result["gguf"][quantization])
    from core.models import load_tokenizer

    text = modelfile.build(gguf, run["prompt_format"], load_tokenizer(result["merged_dir"]), system)
    mf_path = gguf.parent / "Modelfile"
    mf_path.write_text(text, encoding="utf-8")
    on_progress(f"Modelfile written to {mf_path}")
    created, message = ollama_create(name, mf_path, on_progress)
    smoke = None
    if created:
        try:
            smoke = ollama_smoke(name, "Xin chào, bạn có thể giúp gì cho tôi?")
            message = f"created; smoke test answered: {smoke[:80]}"
        except Exception as exc:
            message = f"created, but the smoke test failed: {exc}"
    model, _, tag = name.partition(":")
    evaluation = verdict.get("evaluation") or {}
    release = {
        "id": "rel-" + uuid.uuid4().hex[:10],
        "name": model,
        "tag": tag or "latest",
        "run_id": run_id,
        "dataset_version_id": run["dataset_version_id"],
        "evaluation_id": evaluation.get("id"),
        "thresholds": evaluation.get("thresholds"),
        "gguf_path": str(gguf),
        "gguf_sha256": result["sha256"][quantization],
        "modelfile": text,
        "ollama_status": message,
        "override_reason": override_reason if not verdict["releasable"] else None,
        "created_by": actor,
        "created_at": store.now(),
    }
    with store.connect() as con:
        con.execute(f"INSERT INTO releases ({', '.join(release)}) VALUES ({', '.join('?' * len(release))})",
                    list(release.values()))
    store.audit("release.created", release["id"], actor, name=name, run_id=run_id)
    on_progress(message)
    return {**release, "modelfile_path": str(mf_path), "ollama_created": created}


def list_releases() -> list[dict]:
    return store.rows("SELECT * FROM releases ORDER BY created_at DESC")
