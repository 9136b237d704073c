"""Deploy: gate check, export, Modelfile, preflight, ``ollama create``, smoke test, release record.

``prepare`` checks the gate (or records the override), exports the run (reusing an intact earlier
export) and writes the Modelfile; ``release`` runs the preflight in a worker job, then ``ollama
create`` and a smoke prompt, and records the release. ``deploy`` does both (the CLI); the page shows
the Modelfile between the two so that it can be edited.

Commands run as argument lists, never through a shell. Where no ``ollama`` binary is on PATH the
release is still recorded with its GGUF, Modelfile and preflight report, ready to carry to a machine
that has one.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Callable

from core import evaluate, export, jobs, modelfile, preflight, store

OLLAMA_HOST = "http://127.0.0.1:11434"
NO_BINARY = ("ollama is not installed on this machine: download the Modelfile and GGUF and run "
             "`ollama create` where it is")
SMOKE_PROMPT = "Xin chào, bạn có thể giúp gì cho tôi?"


class DeployRefused(RuntimeError):
    pass


class OllamaError(RuntimeError):
    pass


# ── ollama ───────────────────────────────────────────────────────────────────


def ollama_binary() -> str | None:
    return shutil.which("ollama")


def create_command(binary: str, name: str, modelfile_path: Path, gguf_quantization: str,
                   ollama_quantize: str | None = None) -> list[str]:
    """``ollama create NAME -f Modelfile [--quantize Q]``; ``--quantize`` only from an f16 GGUF."""
    modelfile.check_name(name)
    cmd = [binary, "create", name, "-f", str(modelfile_path)]
    if ollama_quantize:
        if gguf_quantization != "f16":
            raise DeployRefused(f"Ollama can only quantize an f16 GGUF; this one is already {gguf_quantization}")
        if ollama_quantize not in ("q4_K_M", "q4_K_S", "q8_0"):
            raise DeployRefused(f"unknown Ollama quantization '{ollama_quantize}' (q4_K_M, q4_K_S or q8_0)")
        cmd += ["--quantize", ollama_quantize]
    return cmd


def _client():
    import ollama

    return ollama.Client(host=OLLAMA_HOST, timeout=30)


def server_problem() -> str | None:
    """None when the Ollama server answers; otherwise what is wrong, in plain words."""
    try:
        _client().list()
        return None
    except Exception as exc:  # httpx.ConnectError, ConnectionError, …
        return (f"the Ollama server is not running at {OLLAMA_HOST} (start it with `ollama serve`, "
                f"then try again) [{type(exc).__name__}]")


def model_exists(name: str) -> bool:
    import ollama

    try:
        _client().show(name if ":" in name else f"{name}:latest")
        return True
    except ollama.ResponseError as exc:
        if exc.status_code == 404:
            return False
        raise


def explain(output: str) -> str:
    low = output.lower()
    if "could not connect" in low or "connection refused" in low or "is ollama running" in low:
        return f"the Ollama server is not running (start it with `ollama serve`): {output}"
    if "no such file" in low or "invalid model" in low or "unsupported" in low:
        return f"Ollama could not read the GGUF or the Modelfile: {output}"
    if "command must be one of" in low or "unknown parameter" in low:
        return f"Ollama refused a line of the Modelfile: {output}"
    return f"ollama create failed: {output}"


def ollama_create(name: str, modelfile_path: Path, on_line: Callable[[str], None] = print, *,
                  gguf_quantization: str = "q4_k_m", ollama_quantize: str | None = None,
                  replace: bool = False) -> tuple[bool, str]:
    """Run ``ollama create``, streaming its output lines to ``on_line``. Returns (created, message)."""
    modelfile.check_name(name)
    binary = ollama_binary()
    if not binary:
        return False, NO_BINARY
    cmd = create_command(binary, name, modelfile_path, gguf_quantization, ollama_quantize)
    problem = server_problem()
    if problem:
        return False, problem
    if not replace and model_exists(name):
        return False, (f"a model named {name} already exists in Ollama: choose another tag, or delete or roll "
                       "back the existing release in Releases")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        on_line(line.rstrip())
    rc = proc.wait()
    if rc != 0:
        return False, explain(" | ".join(x for x in lines[-5:] if x.strip()))
    return True, "created"


def ollama_smoke(name: str, prompt: str = SMOKE_PROMPT) -> str:
    reply = _client().generate(model=name, prompt=prompt, options={"temperature": 0, "num_predict": 64})
    return reply["response"]


def ollama_remove(name: str) -> tuple[bool, str]:
    binary = ollama_binary()
    if not binary:
        return False, "ollama is not installed on this machine: nothing to remove there"
    modelfile.check_name(name)
    problem = server_problem()
    if problem:
        return False, problem
    proc = subprocess.run([binary, "rm", name], capture_output=True, text=True)
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).strip()
        if "not found" in out.lower():
            return True, f"{name} was no longer in Ollama"
        return False, f"ollama rm failed: {out}"
    return True, f"removed {name} from Ollama"


# ── deploy ───────────────────────────────────────────────────────────────────


def _wait(job: dict, what: str, on_progress: Callable[[str], None]) -> dict:
    last = {"label": None}

    def update(j: dict) -> None:
        p = jobs.progress(j) or {}
        label = f"{what}: {p.get('done', 0)}/{p.get('total', '?')} {p.get('label', '')}" if p else None
        if label and label != last["label"]:
            last["label"] = label
            on_progress(label)

    return jobs.wait(job["id"], timeout=3600, on_update=update)


def prepare(run_id: str, name: str, *, system: str | None = None, quantization: str | None = None,
            override_reason: str | None = None, actor: str | None = None,
            on_progress: Callable[[str], None] = print) -> dict:
    """Gate (or override), export (or reuse), Modelfile. Nothing reaches Ollama yet. Without a
    quantization, the run's default (``export.default_quant``: q8_0 under a billion parameters)."""
    modelfile.check_name(name)
    if system:
        system = modelfile.check_system(system)
    quantization = quantization or export.default_quant_for_run(run_id)
    if quantization not in export.QUANTIZATIONS:
        raise export.ExportError(f"unknown quantization '{quantization}' (one of: {', '.join(export.QUANTIZATIONS)})")
    run = jobs.get_run(run_id)
    verdict = evaluate.verdict(run_id)
    if not verdict["releasable"]:
        if not (override_reason and override_reason.strip()):
            raise DeployRefused(f"run {run_id} is not releasable: {verdict['reason']}. "
                                "Give an override reason to deploy anyway (it is recorded).")
        store.audit("gate.override", run_id, actor, reason=override_reason, verdict=verdict["reason"], name=name)
    job = export.latest(run_id, quantization)
    if job:
        on_progress(f"reusing export job {job['id']} ({quantization}, checksum verified)")
    else:
        on_progress(f"exporting {run_id} to GGUF ({quantization})")
        job = _wait(export.submit(run_id, [quantization], owner=actor), "export", on_progress)
        if job["state"] != "succeeded":
            raise export.ExportError(f"export job {job['id']} {job['state']}: {job.get('error')}")
    result = job["result"]
    gguf = Path(result["gguf"][quantization])
    from core.models import load_tokenizer

    text = modelfile.build(gguf, run["prompt_format"], load_tokenizer(result["merged_dir"]), system)
    mf_path = gguf.parent / "Modelfile"
    mf_path.write_text(text, encoding="utf-8")
    on_progress(f"Modelfile written to {mf_path}")
    return {"run_id": run_id, "name": name, "quantization": quantization, "export_job": job["id"],
            "gguf": str(gguf), "merged_dir": result["merged_dir"], "gguf_sha256": result["sha256"][quantization],
            "modelfile": text, "modelfile_path": str(mf_path), "verdict": verdict,
            "override_reason": None if verdict["releasable"] else override_reason}


def release(prepared: dict, *, modelfile_text: str | None = None, ollama_quantize: str | None = None,
            actor: str | None = None, golden: int = preflight.GOLDEN_SIZE,
            on_progress: Callable[[str], None] = print) -> dict:
    """Preflight (worker job) → ``ollama create`` → smoke test → release record."""
    name = modelfile.check_name(prepared["name"])
    gguf = Path(prepared["gguf"])
    text = modelfile_text if modelfile_text is not None else prepared["modelfile"]
    modelfile.check_text(text, gguf)
    system = preflight.system_of(text)
    if system:
        modelfile.check_system(system)
    on_progress(f"preflight: {golden} held-out prompts through llama.cpp and transformers")
    job = preflight.submit(prepared["run_id"], gguf, prepared["merged_dir"], text, owner=actor, n=golden,
                           out_dir=gguf.parent)
    job = _wait(job, "preflight", on_progress)
    if job["state"] != "succeeded":
        raise preflight.PreflightError(f"preflight job {job['id']} {job['state']}: {job.get('error')}")
    report = job["result"]
    on_progress(f"preflight: exact match {report['exact_match_rate']:.0%}, ROUGE-L {report['rouge_l']:.3f} "
                f"against the merged model; {report['reason']}")
    if not report["passed"]:
        hint = ""
        if report.get("runaway_answers") and prepared["quantization"] == "q4_k_m":
            hint = (f"; to check the same run at q8_0: python -m core deploy --run {prepared['run_id']} "
                    f"--name {name} --quant q8_0 (or choose q8_0 on the Deploy page)")
        raise DeployRefused(f"preflight blocked the release: {report['reason']} "
                            f"(report: {Path(job['job_dir']) / preflight.REPORT}){hint}")
    mf_path = Path(prepared["modelfile_path"])
    mf_path.write_text(text, encoding="utf-8")
    created, message = ollama_create(name, mf_path, on_progress, gguf_quantization=prepared["quantization"],
                                     ollama_quantize=ollama_quantize)
    if created:
        try:
            smoke = ollama_smoke(name)
            message = f"created; smoke test answered: {smoke[:80]}"
        except Exception as exc:
            message = f"created, but the smoke prompt got no answer ({type(exc).__name__}: {exc})"
    rec = _record(prepared, text, report, message, actor)
    on_progress(message)
    return {**rec, "modelfile_path": str(mf_path), "ollama_created": created}


def deploy(run_id: str, name: str, *, system: str | None = None, quantization: str | None = None,
           override_reason: str | None = None, actor: str | None = None, ollama_quantize: str | None = None,
           golden: int = preflight.GOLDEN_SIZE, on_progress: Callable[[str], None] = print) -> dict:
    prepared = prepare(run_id, name, system=system, quantization=quantization, override_reason=override_reason,
                       actor=actor, on_progress=on_progress)
    return release(prepared, ollama_quantize=ollama_quantize, actor=actor, golden=golden, on_progress=on_progress)


def _record(prepared: dict, text: str, report: dict | None, status: str, actor: str | None,
            rollback_of: str | None = None) -> dict:
    run = jobs.get_run(prepared["run_id"])
    evaluation = (prepared.get("verdict") or {}).get("evaluation") or {}
    model, _, tag = prepared["name"].partition(":")
    rec = {
        "id": "rel-" + uuid.uuid4().hex[:10],
        "name": model,
        "tag": tag or "latest",
        "run_id": prepared["run_id"],
        "dataset_version_id": run["dataset_version_id"],
        "evaluation_id": prepared.get("evaluation_id") or evaluation.get("id"),
        "thresholds": prepared.get("thresholds") or evaluation.get("thresholds"),
        "gguf_path": str(prepared["gguf"]),
        "gguf_sha256": prepared["gguf_sha256"],
        "quantization": prepared["quantization"],
        "modelfile": text,
        "preflight": json.dumps(report, ensure_ascii=False) if report is not None else None,
        "ollama_status": status,
        "override_reason": prepared.get("override_reason"),
        "state": "active",
        "rollback_of": rollback_of,
        "created_by": actor,
        "created_at": store.now(),
    }
    with store.connect() as con:
        con.execute("UPDATE releases SET state = 'replaced' WHERE name = ? AND tag = ? AND state = 'active'",
                    [rec["name"], rec["tag"]])
        con.execute(f"INSERT INTO releases ({', '.join(rec)}) VALUES ({', '.join('?' * len(rec))})",
                    list(rec.values()))
    store.audit("release.rollback" if rollback_of else "release.created", rec["id"], actor,
                name=f"{model}:{rec['tag']}", run_id=prepared["run_id"], rollback_of=rollback_of)
    return rec


# ── releases ─────────────────────────────────────────────────────────────────


def _decode(r: dict | None) -> dict | None:
    if r and isinstance(r.get("preflight"), str):
        r["preflight"] = json.loads(r["preflight"])
    return r


def list_releases(include_deleted: bool = True) -> list[dict]:
    where = "" if include_deleted else "WHERE coalesce(state, 'active') <> 'deleted'"
    return [_decode(r) for r in store.rows(f"SELECT * FROM releases {where} ORDER BY created_at DESC")]


def get_release(release_id: str) -> dict:
    got = _decode(store.one("SELECT * FROM releases WHERE id = ?", [release_id]))
    if not got:
        raise DeployRefused(f"no release '{release_id}'")
    return got


def delete_release(release_id: str, actor: str | None = None) -> dict:
    """``ollama rm`` the release's model (when Ollama is here); the record stays, marked deleted."""
    rel = get_release(release_id)
    if rel["state"] == "deleted":
        raise DeployRefused(f"release {release_id} is already deleted")
    removed, message = ollama_remove(f"{rel['name']}:{rel['tag']}")
    if not removed and ollama_binary() and "not running" in message:
        raise DeployRefused(f"could not delete {rel['name']}:{rel['tag']}: {message}")
    store.execute("UPDATE releases SET state = 'deleted', deleted_by = ?, deleted_at = ?, ollama_status = ? "
                  "WHERE id = ?", [actor, store.now(), message, release_id])
    store.audit("release.deleted", release_id, actor, name=f"{rel['name']}:{rel['tag']}", ollama=message)
    return get_release(release_id)


def rollback(release_id: str, actor: str | None = None, on_progress: Callable[[str], None] = print) -> dict:
    """Re-create the release's name from its own GGUF and Modelfile (checksum verified); recorded as a
    new release that rolls back to ``release_id``."""
    rel = get_release(release_id)
    gguf = Path(rel["gguf_path"] or "")
    if not gguf.exists():
        raise DeployRefused(f"release {release_id}: its GGUF {gguf} is gone; it cannot be rolled back to")
    if export.sha256(gguf) != rel["gguf_sha256"]:
        raise DeployRefused(f"release {release_id}: {gguf} no longer matches its recorded sha256; refusing to roll back")
    name = f"{rel['name']}:{rel['tag']}"
    mf_path = gguf.parent / f"Modelfile.{release_id}"
    mf_path.write_text(rel["modelfile"], encoding="utf-8")
    on_progress(f"re-creating {name} from {gguf.name} and the Modelfile of {release_id}")
    created, message = ollama_create(name, mf_path, on_progress, gguf_quantization=rel["quantization"] or "",
                                     replace=True)
    prepared = {"run_id": rel["run_id"], "name": name, "quantization": rel["quantization"], "gguf": str(gguf),
                "gguf_sha256": rel["gguf_sha256"], "evaluation_id": rel["evaluation_id"],
                "thresholds": rel["thresholds"], "override_reason": rel["override_reason"]}
    rec = _record(prepared, rel["modelfile"], rel["preflight"], message, actor, rollback_of=release_id)
    on_progress(message)
    return {**rec, "modelfile_path": str(mf_path), "ollama_created": created}
