"""Deploy: gate check, export, Modelfile, preflight, ``ollama create``, smoke test, release record.

``prepare`` checks the gate (or records the override), exports the run (reusing an intact earlier
export) and writes the Modelfile; ``release`` runs the preflight in a worker job, then ``ollama
create`` and a smoke prompt, and records the release. ``deploy`` does both (the CLI); the page shows
the Modelfile between the two so that it can be edited. Releases can be listed, deleted (``ollama
rm``, the record stays) and rolled back to.

Ollama has one name space for the machine: a ``name:tag`` that one project's active release holds is
refused to every other project (``check_name``, under ``names_lock`` from the check to the record),
a release is recorded only when ``ollama create`` made it (or where no Ollama is installed), delete
removes a model from Ollama only when it is that release's, and a deleted release is not rolled back to.
"""
from __future__ import annotations

import fcntl
import json
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from typing import Callable

from core import labels, paths, store
from core.i18n import M
from core.access import projects
from core.access.principal import Principal, require
from core.models import load_tokenizer
from core.deploy import exporter, exports, modelfile, preflight, preflights, quant_costs
from core.deploy.ollama import ollama_binary, ollama_create, ollama_remove, ollama_smoke
from core.evaluation import evaluations, gate
from core.jobs import queue, supervisor
from core.training import runs


class DeployRefused(RuntimeError):
    pass


# ── deploy ───────────────────────────────────────────────────────────────────


def _wait(job: dict, what: str, on_progress: Callable[[str], None]) -> dict:
    last = {"label": None}

    def update(j: dict) -> None:
        p = queue.progress(j) or {}
        label = M("{what}: {done}/{total} {counted}", what=labels.JOB_KINDS.get(what, what), done=p.get("done", 0),
                  total=p.get("total", "?"), counted=labels.PROGRESS.get(p.get("label", ""), p.get("label", ""))) \
            if p else None
        if label and label != last["label"]:
            last["label"] = label
            on_progress(label)

    return supervisor.wait(job["id"], timeout=3600, on_update=update)


def prepare(run_id: str, name: str, *, system: str | None = None, quantization: str | None = None,
            override_reason: str | None = None, actor: Principal,
            on_progress: Callable[[str], None] = print, evaluate_gguf: bool = True) -> dict:
    """Gate (or override), export (or reuse), Modelfile. Nothing reaches Ollama yet. Without a
    quantization, the run's default (``exports.default_quant``: q8_0 under a billion parameters).
    An override is recorded with the actor's identity, who must be allowed to override.

    The gate judges the file that ships (``gate.record``): the merged model's evaluation and the GGUF's own, at
    this quantization, matched by its sha256. Where the GGUF has no evaluation of the gate's share of the split
    yet (and ``evaluate_gguf``), deploy evaluates it on the whole held-out split with the run's own decoding
    before judging."""
    modelfile.check_name(name)   # the arguments first: a bad name is said so whatever the run
    if system:
        system = modelfile.check_system(system)
    run = runs.get_run(run_id, actor)
    require(actor, "deploy.release", run["project"])
    check_name(name, run["project"])   # another project's name: said before any export
    quantization = quantization or exports.default_quant_for_run(run_id)
    if quantization not in exporter.QUANTIZATIONS:
        raise exporter.ExportError(f"unknown quantization '{quantization}' (one of: {', '.join(exporter.QUANTIZATIONS)})")
    if run["state"] != "succeeded" or not run["adapter_dir"]:
        raise DeployRefused(f"run {run_id} has not finished training ({run['state']})")
    verdict = gate.verdict(run_id)
    overriding = bool(override_reason and override_reason.strip())
    if not verdict["releasable"] and not overriding:
        raise DeployRefused(M("run {run} is not releasable: {reason}. Give an override reason to deploy anyway (it is "
                              "recorded).", run=run_id, reason=verdict["reason"]))
    if overriding:
        require(actor, "gate.override", run["project"])
    job = exports.latest(run_id, quantization)
    if job:
        on_progress(M("reusing export job {job} ({quantization}, checksum verified)", job=job["id"],
                      quantization=quantization))
    else:
        on_progress(M("exporting {run} to GGUF ({quantization})", run=run_id, quantization=quantization))
        job = _wait(exports.submit(run_id, [quantization], actor=actor), "export", on_progress)
        if job["state"] != "succeeded":
            raise exporter.ExportError(f"export job {job['id']} {job['state']}: {job.get('error')}")
    # the cost of quantization against the admin's KL bound (core.deploy.quant_costs); an override is audited
    cost = quant_costs.check(job["id"], quantization, actor=actor, on_progress=on_progress)
    if not cost[1]:
        if not (override_reason and override_reason.strip()):
            raise DeployRefused(M("{reason}. Give an override reason to deploy anyway (it is recorded).", reason=cost[3]))
        require(actor, "gate.override", run["project"])
        store.audit("quant_cost.override", run_id, actor, project=run["project"], reason=override_reason,
                    check=str(cost[3]), numbers=cost[2], name=name)
    result = job["result"]
    gguf = Path(result["gguf"][quantization])
    sha = result["sha256"][quantization]
    # the shipped file is judged too: its own evaluation on the held-out split (deploy runs it where it has none)
    rec = gate.record(run_id, quantization, sha, actor=actor, verdict_of_run=verdict)
    artifact = next(c for c in rec["checks"] if c["name"] == "gguf")
    nums = artifact["numbers"]
    uncovered = artifact["evaluation"] is None or (nums.get("n") or 0) < (nums.get("need") or 1)
    if evaluate_gguf and uncovered and verdict["releasable"]:   # none yet, or one of too few examples
        on_progress(M("evaluating the {quantization} GGUF itself on the held-out split (llama.cpp)",
                      quantization=quantization))
        ev = _wait(evaluations.submit(run_id, gguf=quantization, actor=actor), "evaluate", on_progress)
        if ev["state"] != "succeeded":
            raise DeployRefused(M("the evaluation of the {quantization} GGUF (job {job}) {state}: {error}",
                                  quantization=quantization, job=ev["id"], state=ev["state"], error=ev.get("error")))
        rec = gate.record(run_id, quantization, sha, actor=actor, verdict_of_run=verdict)
    for c in rec["checks"]:
        if c["name"] == "gguf":
            on_progress(M("gate, {artifact}: {reason}", artifact=c["artifact"], reason=c["message"]))
    if not rec["releasable"]:
        if not overriding:
            raise DeployRefused(M("the {quantization} release of run {run} is refused: {reasons}. Give an override "
                                  "reason to deploy anyway (it is recorded).", quantization=quantization, run=run_id,
                                  reasons=gate.failing_message(rec)))
        require(actor, "gate.override", run["project"])
        store.audit("gate.override", run_id, actor, project=run["project"], reason=override_reason,
                    verdict=verdict["reason"], failing=gate.failing(rec), quantization=quantization, name=name)
    # the cost of quantization, checked above against the admin's KL bound, is part of what the release was judged on
    rec["checks"].append(gate.check("quant_cost", cost[1], cost[3], artifact=f"{run_id} · {quantization}",
                                    numbers=cost[2]))
    rec["releasable"] = bool(rec["releasable"] and cost[1])
    rec["override"] = ({"reason": override_reason.strip(), "by": actor.name}
                       if not (rec["releasable"] and cost[1]) else None)
    rec = gate.stored(rec)
    text = modelfile.build(gguf, run["prompt_format"], load_tokenizer(result["merged_dir"]), system)
    # a draft to read and edit; each release writes its own Modelfile.<release id> next to it
    mf_path = gguf.parent / f"Modelfile.draft-{uuid.uuid4().hex[:8]}"
    mf_path.write_text(text, encoding="utf-8")
    on_progress(M("Modelfile written to {path}", path=str(mf_path)))
    return {"run_id": run_id, "name": name, "quantization": quantization, "export_job": job["id"],
            "gguf": str(gguf), "merged_dir": result["merged_dir"], "gguf_sha256": result["sha256"][quantization],
            "modelfile": text, "modelfile_path": str(mf_path), "verdict": verdict, "gate_record": rec,
            "override_reason": None if rec["releasable"] else override_reason,
            "quant_cost": {"passed": cost[1], "reason": cost[3], **cost[2]}}


def held_out_lines(report: dict, quantization: str | None = None) -> list[M]:
    """What the preflight's scores against the held-out answers say, for the progress log and the page; the
    warning names q8_0 only for a q4_k_m GGUF (a q8_0 or f16 one has nothing finer to go to)."""
    held = report.get("held_out")
    if not held:   # a report from before these scores
        return []
    g, m, t = held["gguf"], held["merged"], held["gguf"]["thresholds"]
    lines = [M("preflight, against the held-out answers of the same prompts (cut at {max_tokens} tokens): GGUF BLEU "
               "{gguf_bleu:.3f}, ROUGE-L {gguf_rouge:.3f}; merged model BLEU {merged_bleu:.3f}, ROUGE-L "
               "{merged_rouge:.3f}; the gate asks BLEU > {bleu:.2f} and ROUGE-L > {rouge:.2f}",
               max_tokens=report["max_tokens"], gguf_bleu=g["bleu"], gguf_rouge=g["rouge_l"], merged_bleu=m["bleu"],
               merged_rouge=m["rouge_l"], bleu=t["bleu"], rouge=t["rouge_l"])]
    if held["gguf_below_gate_where_merged_passes"] and quantization == "q4_k_m":
        lines.append(M("warning: on these prompts the merged model passes the gate and the GGUF does not: the "
                       "quantization costs this run its gate; q8_0 keeps more of a fine-tune (--quant q8_0, or "
                       "q8_0 on the Deploy page)"))
    elif held["gguf_below_gate_where_merged_passes"]:
        lines.append(M("warning: on these prompts the merged model passes the gate and the GGUF does not: the "
                       "quantization costs this run its gate"))
    return lines


def release(prepared: dict, *, modelfile_text: str | None = None, ollama_quantize: str | None = None,
            actor: Principal, golden: int = preflight.GOLDEN_SIZE,
            on_progress: Callable[[str], None] = print) -> dict:
    """Preflight (worker job) → ``ollama create`` → smoke test → release record."""
    name = modelfile.check_name(prepared["name"])
    gguf = Path(prepared["gguf"])
    # what the preflight checks is exactly what ``ollama create`` gets: the edited text read as Ollama reads
    # it, its SYSTEM and PARAMETER lines kept, FROM and TEMPLATE the studio's own
    text = modelfile.finalize(modelfile_text if modelfile_text is not None else prepared["modelfile"],
                              prepared["modelfile"])
    release_id = "rel-" + uuid.uuid4().hex[:10]
    check_name(name, runs.get_run(prepared["run_id"], actor)["project"])   # before the preflight's minutes
    on_progress(M("preflight: {n} held-out prompts through llama.cpp and transformers", n=golden))
    job = preflights.submit(prepared["run_id"], gguf, prepared["merged_dir"], text, actor=actor, n=golden,
                           out_dir=gguf.parent)
    job = _wait(job, "preflight", on_progress)
    if job["state"] != "succeeded":
        raise preflight.PreflightError(f"preflight job {job['id']} {job['state']}: {job.get('error')}")
    report = job["result"]
    on_progress(M("preflight: exact match {exact:.0%}, ROUGE-L {rouge_l:.3f} against the merged model; {reason}",
                  exact=report["exact_match_rate"], rouge_l=report["rouge_l"], reason=report["reason"]))
    for line in held_out_lines(report, prepared["quantization"]):
        on_progress(line)
    if not report["passed"]:
        hint = ""
        if report.get("runaway_answers") and prepared["quantization"] == "q4_k_m":
            hint = (f"; to check the same run at q8_0: python -m core deploy --run {prepared['run_id']} "
                    f"--name {name} --quant q8_0 (or choose q8_0 on the Deploy page)")
        raise DeployRefused(f"preflight blocked the release: {report['reason']} "
                            f"(report: {Path(job['job_dir']) / preflight.REPORT}){hint}")
    return create_and_record(prepared, text, report, actor=actor, release_id=release_id,
                             ollama_quantize=ollama_quantize, on_progress=on_progress)


def create_and_record(prepared: dict, text: str, report: dict | None, *, actor: Principal,
                      release_id: str | None = None, ollama_quantize: str | None = None,
                      on_progress: Callable[[str], None] = print) -> dict:
    """The end of a release, once its preflight passed: the Modelfile, ``ollama create`` and the smoke prompt,
    the record. Under ``names_lock``, from the name's check to the record."""
    name = modelfile.check_name(prepared["name"])
    release_id = release_id or "rel-" + uuid.uuid4().hex[:10]
    # one file per release: two releases of the same export never write each other's Modelfile
    mf_path = Path(prepared["gguf"]).parent / f"Modelfile.{release_id}"
    mf_path.write_text(text, encoding="utf-8")
    project = runs.get_run(prepared["run_id"], actor)["project"]
    with names_lock():   # the name's check, ``ollama create`` and the record: nobody else's in between
        check_name(name, project)
        created, message = ollama_create(name, mf_path, on_progress, gguf_quantization=prepared["quantization"],
                                         ollama_quantize=ollama_quantize)
        _refuse_unless_created(name, created, message)
        if created:
            try:
                smoke = ollama_smoke(name)
                message = f"created; smoke test answered: {smoke[:80]}"
            except Exception as exc:
                message = f"created, but the smoke prompt got no answer ({type(exc).__name__}: {exc})"
        rec = _record(prepared, text, report, message, actor, release_id=release_id)
    on_progress(message)
    return {**rec, "modelfile_path": str(mf_path), "ollama_created": created}


def deploy(run_id: str, name: str, *, system: str | None = None, quantization: str | None = None,
           override_reason: str | None = None, actor: Principal, ollama_quantize: str | None = None,
           golden: int = preflight.GOLDEN_SIZE, on_progress: Callable[[str], None] = print) -> dict:
    prepared = prepare(run_id, name, system=system, quantization=quantization, override_reason=override_reason,
                       actor=actor, on_progress=on_progress)
    return release(prepared, ollama_quantize=ollama_quantize, actor=actor, golden=golden, on_progress=on_progress)


# ── names: one Ollama server, one name space for every project ──────────────


@contextmanager
def names_lock() -> Iterator[None]:
    """A file lock held from a name's check to its release's record (through ``ollama create``), and by a
    delete: two deploys of one name, from two processes or two sessions, cannot both find it free."""
    with open(paths.data_dir() / "ollama-names.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _split(name: str) -> tuple[str, str]:
    model, _, tag = name.partition(":")
    return model, tag or "latest"


def holder(name: str, project: str) -> dict | None:
    """Another project's active release of ``name`` (``model:tag``), or None: Ollama has one name space for
    the whole machine, so a name one project released is not another's to replace, delete or roll back."""
    model, tag = _split(name)
    return store.one("SELECT id, project FROM releases WHERE name = ? AND tag = ? AND state = 'active' "
                     "AND project <> ? ORDER BY created_at DESC LIMIT 1", [model, tag, project])


def check_name(name: str, project: str) -> None:
    """DeployRefused when another project's active release holds ``name`` (its project is not named: a
    member of this one may not know it)."""
    model, tag = _split(modelfile.check_name(name))
    if holder(name, project):
        raise DeployRefused(f"{model}:{tag} is the name of another project's active release; Ollama has one "
                            "name space for every project: choose another name or tag")


def _refuse_unless_created(name: str, created: bool, message: str) -> None:
    """Where Ollama is installed, a release is recorded only when ``ollama create`` made it: a failed create
    (the server down, the name taken in Ollama, a Modelfile it refused) records nothing. Without Ollama on
    this machine the release is recorded with its GGUF and Modelfile, to be created where Ollama is."""
    if not created and ollama_binary():
        raise DeployRefused(f"{name} was not released, nothing is recorded: {message}")


def _in_ollama(rel: dict) -> bool:
    """Whether this release's ``ollama create`` made its model (what the record says of it)."""
    return str(rel.get("ollama_status") or "").startswith("created")


def _record(prepared: dict, text: str, report: dict | None, status: str, actor: Principal,
            rollback_of: str | None = None, release_id: str | None = None) -> dict:
    run = runs.get_run(prepared["run_id"], actor)
    evaluation = (prepared.get("verdict") or {}).get("evaluation") or {}
    model, _, tag = prepared["name"].partition(":")
    rec = {
        "id": release_id or "rel-" + uuid.uuid4().hex[:10],
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
        "gate_record": json.dumps(prepared["gate_record"], ensure_ascii=False, default=str)
        if prepared.get("gate_record") else None,
        "state": "active",
        "rollback_of": rollback_of,
        "created_by": actor.name,
        "created_at": store.now(),
        "project": run["project"],
    }
    with store.transaction() as con:
        # this project's earlier release of the name gives way; another project's is never touched (none is
        # active: ``check_name`` ran under ``names_lock``)
        con.execute("UPDATE releases SET state = 'replaced' WHERE name = ? AND tag = ? AND state = 'active' "
                    "AND project = ?", [rec["name"], rec["tag"], rec["project"]])
        con.execute(f"INSERT INTO releases ({', '.join(rec)}) VALUES ({', '.join('?' * len(rec))})",
                    list(rec.values()))
        store.audit("release.rollback" if rollback_of else "release.created", rec["id"], actor, con=con,
                    project=run["project"], name=f"{model}:{rec['tag']}", run_id=prepared["run_id"],
                    rollback_of=rollback_of)
    return rec


# ── releases ─────────────────────────────────────────────────────────────────


def _decode(r: dict | None) -> dict | None:
    for key in ("preflight", "gate_record"):
        if r and isinstance(r.get(key), str):
            r[key] = json.loads(r[key])
    return r


def record_lines(rec: dict | None, lang: str = "en") -> list[str]:
    """A release's gate record in lines of text: each check, passed or not, and its reason (``lang``)."""
    if not rec:
        return []
    out = []
    for c in rec.get("checks") or []:
        mark = "PASS" if c["passed"] else ("–" if c["passed"] is None else "FAIL")
        out.append(f"{c['name']} [{mark}{'' if c['gates'] else ', not gating'}] "
                   f"{c['reason'].get(lang) or c['reason'].get('en')}")
    if rec.get("override"):
        out.append(f"override by {rec['override']['by']}: {rec['override']['reason']}")
    return out


def list_releases(actor: Principal, project: str | None = None, include_deleted: bool = True,
                  limit: int | None = None) -> list[dict]:
    """Newest first (the ``limit`` newest, when given)."""
    cond, params = projects.where(actor, project)
    if not include_deleted:
        cond += " AND coalesce(state, 'active') <> 'deleted'"
    tail = ""
    if limit is not None:
        tail, params = " LIMIT ?", params + [int(limit)]
    return [_decode(r) for r in store.rows(f"SELECT * FROM releases WHERE {cond} ORDER BY created_at DESC{tail}",
                                           params)]


def get_release(release_id: str, actor: Principal | None = None) -> dict:
    """A release by id. With ``actor``, one of another project is no release at all."""
    got = _decode(store.one("SELECT * FROM releases WHERE id = ?", [release_id]))
    if not got or (actor is not None and not actor.sees(got["project"])):
        raise DeployRefused(f"no release '{release_id}'")
    return got


def delete_release(release_id: str, *, actor: Principal) -> dict:
    """``ollama rm`` the release's model (when Ollama is here, and the model in Ollama under its name is this
    release's: its project's active release, which ``ollama create`` made); the record stays, marked deleted.
    A replaced release, one that never reached Ollama, or a name another project's active release holds is
    only marked: Ollama's model of that name is someone else's."""
    rel = get_release(release_id, actor)
    require(actor, "release.delete", rel["project"])
    if rel["state"] == "deleted":
        raise DeployRefused(f"release {release_id} is already deleted")
    name = f"{rel['name']}:{rel['tag']}"
    with names_lock():
        if holder(name, rel["project"]):   # recorded before names were checked: Ollama's model is the other's
            message = f"Ollama's {name} is another project's release: the record is marked deleted, Ollama is left alone"
        elif rel["state"] != "active":
            message = f"Ollama's {name} is a later release's: the record is marked deleted, Ollama is left alone"
        elif not _in_ollama(rel):
            message = "this release never reached Ollama: the record is marked deleted, Ollama is left alone"
        else:
            removed, message = ollama_remove(name)
            if not removed and ollama_binary() and "not running" in message:
                raise DeployRefused(f"could not delete {name}: {message}")
        _mark_deleted(release_id, rel, message, actor)
    return get_release(release_id)


def _mark_deleted(release_id: str, rel: dict, message: str, actor: Principal) -> None:
    store.execute("UPDATE releases SET state = 'deleted', deleted_by = ?, deleted_at = ?, ollama_status = ? "
                  "WHERE id = ?", [actor.name, store.now(), message, release_id])
    store.audit("release.deleted", release_id, actor, project=rel["project"], name=f"{rel['name']}:{rel['tag']}",
                ollama=message)


def rollback(release_id: str, *, actor: Principal, on_progress: Callable[[str], None] = print) -> dict:
    """Re-create the release's name from its own GGUF and Modelfile (checksum verified); recorded as a
    new release that rolls back to ``release_id``."""
    rel = get_release(release_id, actor)
    require(actor, "release.rollback", rel["project"])
    if rel["state"] == "deleted":
        raise DeployRefused(f"release {release_id} was deleted: a deleted release is not brought back (deploy "
                            "its run again to release it anew)")
    check_name(f"{rel['name']}:{rel['tag']}", rel["project"])
    gguf = Path(rel["gguf_path"] or "")
    if not gguf.exists():
        raise DeployRefused(f"release {release_id}: its GGUF {gguf} is gone; it cannot be rolled back to")
    if exporter.sha256(gguf) != rel["gguf_sha256"]:
        raise DeployRefused(f"release {release_id}: {gguf} no longer matches its recorded sha256; refusing to roll back")
    name = f"{rel['name']}:{rel['tag']}"
    new_id = "rel-" + uuid.uuid4().hex[:10]   # the new release writes its own Modelfile, leaving the old one be
    mf_path = gguf.parent / f"Modelfile.{new_id}"
    mf_path.write_text(rel["modelfile"], encoding="utf-8")
    on_progress(M("re-creating {name} from {gguf} and the Modelfile of {release}", name=name, gguf=gguf.name,
                  release=release_id))
    prepared = {"run_id": rel["run_id"], "name": name, "quantization": rel["quantization"], "gguf": str(gguf),
                "gguf_sha256": rel["gguf_sha256"], "evaluation_id": rel["evaluation_id"],
                "thresholds": rel["thresholds"], "override_reason": rel["override_reason"],
                "gate_record": rel.get("gate_record")}
    with names_lock():
        check_name(name, rel["project"])
        created, message = ollama_create(name, mf_path, on_progress, gguf_quantization=rel["quantization"] or "",
                                         replace=True)
        _refuse_unless_created(name, created, message)
        rec = _record(prepared, rel["modelfile"], rel["preflight"], message, actor, rollback_of=release_id,
                      release_id=new_id)
    on_progress(message)
    return {**rec, "modelfile_path": str(mf_path), "ollama_created": created}
