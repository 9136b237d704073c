"""``python -m core``: every stage of the studio from the command line.

Heavy libraries (torch, transformers) are imported inside the commands that need them, so
``--help``, ``score`` and ``dataset`` start in well under a second.
"""
from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "cli"


def _print(obj, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, ensure_ascii=False, indent=2, default=str))
    else:
        for k, v in obj.items():
            print(f"{k}: {v}")


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


# ── commands ─────────────────────────────────────────────────────────────────


def cmd_models(args) -> int:
    from core import models

    if args.action == "fetch-default":
        try:
            models.fetch_default(force=args.force)
        except models.ModelError as exc:
            return _fail(str(exc))
        return 0
    for m in models.list_base_models():
        print(m)
    return 0


def cmd_dataset(args) -> int:
    from core import datasets

    try:
        if args.action == "list":
            versions = datasets.list_versions()
            if args.json:
                print(json.dumps(versions, ensure_ascii=False, indent=2, default=str))
            for v in [] if args.json else versions:
                print(f"{v['id']}  {v['name']:<28} train {v['rows_train']:>6}  test {v['rows_test']:>5}  {v['created_at']:%Y-%m-%d %H:%M}")
            return 0
        if args.action == "import-samples":
            version = datasets.import_samples(created_by=_user())
            print(f"{version['id']} {version['name']}: {version['rows_train']} train, {version['rows_test']} test")
            return 0
        version, report = datasets.import_files(
            args.paths, args.name, test_fraction=args.test_fraction, seed=args.seed,
            general_version=args.mix_general, general_ratio=args.mix_ratio, created_by=_user(),
        )
    except datasets.DatasetError as exc:
        return _fail(str(exc))
    out = report.as_dict()
    out["dataset_version"] = version["id"] if version else None
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        for key in ("rows_read", "rows_kept", "rows_rejected", "duplicates_removed", "normalized"):
            print(f"{key}: {out[key]}")
        for err in out["errors"][:50]:
            print(f"  {err['file']}:{err['line']}: {err['reason']}")
        if version:
            print(f"dataset version {version['id']} ({version['rows_train']} train, {version['rows_test']} test)")
    if not version:
        print("error: no valid rows were found; nothing was imported", file=sys.stderr)
        return 1
    return 0


def _progress_printer(label: str):
    from core import jobs

    last = {"text": None}

    def show(job) -> None:
        p = jobs.progress(job) or {}
        text = f"{label} job {job['id']}: {job['state']}"
        if p.get("total"):
            text += f"  {p['done']}/{p['total']} {p.get('label', '')}"
        if text != last["text"]:
            print(text, file=sys.stderr, flush=True)
            last["text"] = text

    return show


def cmd_train(args) -> int:
    from core import config, jobs

    try:
        cfg = config.load_file(args.config) if args.config else config.preset(args.preset)
        if args.max_steps is not None:
            cfg.max_steps = args.max_steps
        if args.base_model:
            cfg.base_model = args.base_model
        if args.prompt_format:
            cfg.prompt_format = args.prompt_format
        cfg.validate()
        job = jobs.submit_train(args.dataset, cfg, owner=_user())
    except (ValueError, jobs.JobError) as exc:
        return _fail(str(exc))
    print(f"queued job {job['id']} for run {job['run_id']}", file=sys.stderr)
    if args.no_wait:
        _print({"job": job["id"], "run": job["run_id"], "state": job["state"]}, args.json)
        return 0
    job = jobs.wait(job["id"], timeout=args.timeout, on_update=_progress_printer("train"))
    _print({"job": job["id"], "run": job["run_id"], "state": job["state"], "error": job["error"],
            "result": job["result"]}, args.json)
    return 0 if job["state"] == "succeeded" else 1


def cmd_jobs(args) -> int:
    from core import jobs

    if args.action == "cancel":
        try:
            job = jobs.cancel(args.id, actor=_user())
        except jobs.JobError as exc:
            return _fail(str(exc))
        print(f"job {job['id']}: {job['state']}")
        return 0
    if args.action == "tick":
        print(json.dumps(jobs.tick()))
        return 0
    for j in jobs.list_jobs(args.limit):
        print(f"{j['id']:>4}  {j['kind']:<9} {j['state']:<10} {j['run_id'] or '':<28} {j['owner'] or ''}")
    return 0


def cmd_evaluate(args) -> int:
    from core import evaluate, jobs
    from core.inference import Decoding

    try:
        job = evaluate.submit(
            args.run, base_model=args.base_model, dataset_version_id=args.dataset, split=args.split,
            limit=args.limit, decoding=Decoding(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size),
            owner=_user(),
        )
    except (ValueError, jobs.JobError) as exc:
        return _fail(str(exc))
    job = jobs.wait(job["id"], timeout=args.timeout, on_update=_progress_printer("evaluate"))
    if job["state"] != "succeeded":
        return _fail(f"evaluation job {job['id']} {job['state']}: {job['error']}")
    result = dict(job["result"])
    result["evaluation"] = job["config"]["evaluation_id"]
    result.pop("predictions", None)
    _print(result, args.json)
    return 0


def cmd_gate(args) -> int:
    from core import evaluate, jobs

    try:
        jobs.get_run(args.run)
    except jobs.JobError as exc:
        return _fail(str(exc), 2)
    verdict = evaluate.verdict(args.run)
    e = verdict["evaluation"]
    print(json.dumps({"run": args.run, "releasable": verdict["releasable"], "reason": verdict["reason"],
                      "evaluation": e["id"] if e else None}, ensure_ascii=False))
    return 0 if verdict["releasable"] else 1


def cmd_score(args) -> int:
    from core import scoring

    thresholds = {"bleu": args.bleu, "rouge_l": args.rouge_l}
    try:
        refs, preds = scoring.read_pairs(Path(args.input))
    except scoring.ScoreFileError as exc:
        return _fail(str(exc))
    result = scoring.score(refs, preds, thresholds)
    if args.json:
        print(json.dumps(result.summary(), ensure_ascii=False))
    else:
        print(f"n={result.n}  BLEU={result.bleu:.4f}  ROUGE-L={result.rouge_l:.4f}  "
              f"{'PASS' if result.passed else 'FAIL'} (BLEU > {args.bleu}, ROUGE-L > {args.rouge_l})")
    return 0


def cmd_export(args) -> int:
    from core import export, jobs

    try:
        job = export.submit(args.run, args.quant, owner=_user())
    except (export.ExportError, jobs.JobError) as exc:
        return _fail(str(exc))
    job = jobs.wait(job["id"], timeout=args.timeout, on_update=_progress_printer("export"))
    if job["state"] != "succeeded":
        return _fail(f"export job {job['id']} {job['state']}: {job['error']}")
    _print(job["result"], args.json)
    return 0


def cmd_modelfile(args) -> int:
    from core import modelfile, prompt_format

    try:
        if args.name:
            modelfile.check_name(args.name)
        if not Path(args.gguf).exists():
            return _fail(f"{args.gguf}: no such file")
        print(modelfile.build(args.gguf, args.format, system=args.system), end="")
    except (modelfile.ModelfileError, prompt_format.FormatError) as exc:
        return _fail(str(exc))
    return 0


def cmd_deploy(args) -> int:
    from core import deploy, export, jobs, modelfile, preflight, prompt_format

    try:
        release = deploy.deploy(args.run, args.name, system=args.system, quantization=args.quant,
                                override_reason=args.override_reason, actor=_user(),
                                ollama_quantize=args.ollama_quantize, golden=args.golden,
                                on_progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (deploy.DeployRefused, modelfile.ModelfileError, export.ExportError, jobs.JobError,
            preflight.PreflightError, prompt_format.FormatError) as exc:
        return _fail(str(exc).replace("\n", " | "))
    pf = release["preflight"] if isinstance(release["preflight"], dict) else json.loads(release["preflight"])
    out = {k: release[k] for k in ("id", "name", "tag", "run_id", "quantization", "gguf_path", "gguf_sha256",
                                   "modelfile_path", "ollama_status")}
    out["preflight"] = {k: pf[k] for k in ("passed", "reason", "n", "exact_match_rate", "rouge_l")}
    _print(out, args.json)
    return 0


def cmd_releases(args) -> int:
    from core import deploy

    try:
        if args.action == "list":
            rows = deploy.list_releases()
            if args.json:
                print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
                return 0
            for r in rows:
                pf = r.get("preflight") or {}
                print(f"{r['id']}  {r['name'] + ':' + r['tag']:<28} {r['state'] or 'active':<8} {r['run_id']}  "
                      f"{r['quantization'] or '':<6} preflight "
                      f"{'-' if not pf else ('pass' if pf.get('passed') else 'BLOCK')}  "
                      f"{r['created_by'] or ''}  {r['created_at']:%Y-%m-%d %H:%M}"
                      + (f"  rollback of {r['rollback_of']}" if r.get("rollback_of") else "")
                      + (f"  override: {r['override_reason']}" if r.get("override_reason") else ""))
            return 0
        if not args.id:
            return _fail(f"releases {args.action} needs a release id (see `python -m core releases list`)", 2)
        if args.action == "delete":
            rel = deploy.delete_release(args.id, actor=_user())
        else:
            rel = deploy.rollback(args.id, actor=_user(), on_progress=lambda m: print(m, file=sys.stderr))
    except deploy.DeployRefused as exc:
        return _fail(str(exc))
    _print({k: rel[k] for k in ("id", "name", "tag", "state", "rollback_of", "ollama_status")}, args.json)
    return 0


# ── parser ───────────────────────────────────────────────────────────────────


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core", description="ViTune Studio from the command line.")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("models", help="prepare and list base models")
    m.add_argument("action", choices=["fetch-default", "list"])
    m.add_argument("--force", action="store_true", help="prepare the default model again")
    m.set_defaults(fn=cmd_models)

    d = sub.add_parser("dataset", help="import and list dataset versions")
    d.add_argument("action", choices=["import", "list", "import-samples"])
    d.add_argument("paths", nargs="*", help="JSONL, JSON, CSV or Parquet files (import)")
    d.add_argument("--name", help="name of the new dataset version")
    d.add_argument("--test-fraction", type=float, default=0.1)
    d.add_argument("--seed", type=int, default=42)
    d.add_argument("--mix-general", metavar="VERSION", help="mix in general Vietnamese pairs from this version")
    d.add_argument("--mix-ratio", type=float, default=0.05, help="share of general pairs in train (0.05–0.10)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_dataset)

    t = sub.add_parser("train", help="queue a training job and wait for it")
    t.add_argument("--dataset", required=True, metavar="VERSION")
    t.add_argument("--config", help="YAML training config")
    t.add_argument("--preset", default="guide (r=16)", help="preset when no --config is given")
    t.add_argument("--max-steps", type=int)
    t.add_argument("--base-model")
    t.add_argument("--prompt-format", choices=["chat", "alpaca-vi"])
    t.add_argument("--no-wait", action="store_true")
    t.add_argument("--timeout", type=float, default=24 * 3600)
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_train)

    j = sub.add_parser("jobs", help="list or cancel jobs; run one supervisor tick")
    j.add_argument("action", choices=["list", "cancel", "tick"])
    j.add_argument("id", nargs="?", type=int)
    j.add_argument("--limit", type=int, default=30)
    j.set_defaults(fn=cmd_jobs)

    e = sub.add_parser("evaluate", help="evaluate a run (or a base model) on a held-out split")
    e.add_argument("--run")
    e.add_argument("--base-model")
    e.add_argument("--dataset", metavar="VERSION")
    e.add_argument("--split", default="test", choices=["test", "train"])
    e.add_argument("--limit", type=int)
    e.add_argument("--max-new-tokens", type=int, default=128)
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--timeout", type=float, default=6 * 3600)
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_evaluate)

    g = sub.add_parser("gate", help="exit 0 only when the run is releasable")
    g.add_argument("--run", required=True)
    g.set_defaults(fn=cmd_gate)

    s = sub.add_parser("score", help="BLEU and ROUGE-L of a JSONL of {reference, prediction}")
    s.add_argument("--input", required=True)
    s.add_argument("--bleu", type=float, default=0.35, help="BLEU threshold")
    s.add_argument("--rouge-l", type=float, default=0.45, help="ROUGE-L threshold")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_score)

    x = sub.add_parser("export", help="merge a run and export GGUF with llama.cpp")
    x.add_argument("--run", required=True)
    x.add_argument("--quant", nargs="+", default=["q4_k_m"], choices=["f16", "q8_0", "q4_k_m"])
    x.add_argument("--timeout", type=float, default=3600)
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_export)

    mf = sub.add_parser("modelfile", help="print an Ollama Modelfile for a GGUF")
    mf.add_argument("--gguf", required=True)
    mf.add_argument("--system", default=None)
    mf.add_argument("--format", default="chat", choices=["chat", "alpaca-vi"])
    mf.add_argument("--name")
    mf.set_defaults(fn=cmd_modelfile)

    dp = sub.add_parser("deploy", help="export, write the Modelfile, ollama create, record the release")
    dp.add_argument("--run", required=True)
    dp.add_argument("--name", required=True, help="Ollama model name, e.g. gemma3-vi-cskh:v1")
    dp.add_argument("--system")
    dp.add_argument("--quant", default="q4_k_m", choices=["f16", "q8_0", "q4_k_m"])
    dp.add_argument("--override-reason", help="deploy a run that has not passed the gate, recording why")
    dp.add_argument("--ollama-quantize", choices=["q4_K_M", "q4_K_S", "q8_0"],
                    help="let `ollama create --quantize` quantize (only with --quant f16)")
    dp.add_argument("--golden", type=int, default=8, help="held-out prompts in the preflight")
    dp.add_argument("--json", action="store_true")
    dp.set_defaults(fn=cmd_deploy)

    rl = sub.add_parser("releases", help="list releases, delete one (ollama rm) or roll back to one")
    rl.add_argument("action", choices=["list", "delete", "rollback"])
    rl.add_argument("id", nargs="?", help="release id (delete, rollback)")
    rl.add_argument("--json", action="store_true")
    rl.set_defaults(fn=cmd_releases)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "dataset" and args.action == "import" and (not args.paths or not args.name):
        return _fail("dataset import needs at least one PATH and --name", 2)
    from core.store import StoreBusy

    try:
        return args.fn(args)
    except StoreBusy as exc:
        return _fail(str(exc))
